// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Internal: strict readers over nlohmann::json that turn every malformed input into qi::Error.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "qi/error.h"

namespace qi::json_util {

using Json = nlohmann::json;

// Deeper documents are rejected: dump() and other readers recurse once per level, so a few
// hundred thousand '[' would overflow the stack. Real configs nest a handful of levels.
inline constexpr int kMaxDepth = 256;

// Parses text; malformed, truncated or too deeply nested text throws qi::Error naming `what`.
inline Json parse(const std::string& text, const char* what) {
  try {
    return Json::parse(text, [what](int depth, Json::parse_event_t, Json&) {
      QI_CHECK(depth < kMaxDepth, what, ": JSON nested deeper than ", kMaxDepth, " levels");
      return true;
    });
  } catch (const Json::exception& e) {
    throw Error(str_cat(what, ": malformed JSON: ", e.what()));
  }
}

inline const char* type_name(const Json& j) { return j.type_name(); }

inline const Json& require_object(const Json& j, const char* what) {
  QI_CHECK(j.is_object(), what, ": expected a JSON object, got ", type_name(j));
  return j;
}

inline const Json& get(const Json& obj, const std::string& key, const char* what) {
  auto it = obj.find(key);
  QI_CHECK(it != obj.end(), what, ": missing key \"", key, "\"");
  return *it;
}

inline bool get_bool(const Json& v, const std::string& key, const char* what) {
  QI_CHECK(v.is_boolean(), what, ": \"", key, "\" must be a boolean, got ", type_name(v), " ",
           v.dump());
  return v.get<bool>();
}

// Integers only (1.0 is rejected); out-of-int64 values are rejected.
inline int64_t get_int(const Json& v, const std::string& key, const char* what) {
  QI_CHECK(v.is_number_integer(), what, ": \"", key, "\" must be an integer, got ",
           type_name(v), " ", v.dump());
  if (v.is_number_unsigned()) {
    auto u = v.get<uint64_t>();
    QI_CHECK(u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), what, ": \"", key,
             "\" is out of the int64 range, got ", v.dump());
  }
  return v.get<int64_t>();
}

// Any finite JSON number.
inline double get_double(const Json& v, const std::string& key, const char* what) {
  QI_CHECK(v.is_number(), what, ": \"", key, "\" must be a number, got ", type_name(v), " ",
           v.dump());
  double d = v.get<double>();
  QI_CHECK(std::isfinite(d), what, ": \"", key, "\" must be finite, got ", v.dump());
  return d;
}

inline std::string get_string(const Json& v, const std::string& key, const char* what) {
  QI_CHECK(v.is_string(), what, ": \"", key, "\" must be a string, got ", type_name(v), " ",
           v.dump());
  return v.get<std::string>();
}

inline std::vector<double> get_double_list(const Json& v, const std::string& key,
                                           const char* what) {
  QI_CHECK(v.is_array(), what, ": \"", key, "\" must be a list of numbers, got ", type_name(v),
           " ", v.dump());
  std::vector<double> out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    out.push_back(get_double(v[i], str_cat(key, "[", i, "]"), what));
  return out;
}

// Rejects keys other than `allowed` (typos must not be silently ignored).
template <typename Keys>
void reject_unknown_keys(const Json& obj, const Keys& allowed, const char* what) {
  for (auto it = obj.begin(); it != obj.end(); ++it) {
    bool ok = false;
    for (const auto& k : allowed) ok = ok || it.key() == k;
    QI_CHECK(ok, what, ": unknown key \"", it.key(), "\"");
  }
}

}  // namespace qi::json_util
