// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include "qi/configs.h"

#include <cmath>
#include <utility>

#include "core/json_util.h"
#include "qi/error.h"
#include "qi/version.h"

namespace qi {
namespace {

namespace ju = json_util;
using Json = ju::Json;

constexpr const char* kWeightsWhat = "TrainableQuantizerWeightsConfig";
constexpr const char* kActivationWhat = "TrainableQuantizerActivationConfig";

// ---- validation -------------------------------------------------------------------------------

// The bit widths the quantizers of `method` take: LUT quantizers 1..16, the others 2..16.
void check_n_bits(QuantizationMethod method, int64_t n_bits, const std::string& name,
                  const char* what) {
  const bool lut = method == QuantizationMethod::LUT_POT_QUANTIZER ||
                   method == QuantizationMethod::LUT_SYM_QUANTIZER;
  const int64_t lo = lut ? 1 : 2, hi = 16;
  QI_CHECK(n_bits >= lo && n_bits <= hi, what, ": ", name, " must be in [", lo, ", ", hi,
           "] for ", to_string(method), " quantization, got ", n_bits);
}

void check_min_threshold(double min_threshold, const char* what) {
  QI_CHECK(std::isfinite(min_threshold) && min_threshold >= 0, what,
           ": min_threshold must be finite and >= 0, got ", min_threshold);
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) out += (i > 0 ? ", " : "") + std::to_string(shape[i]);
  return out + "]";
}

void check_param_array(const ParamArray& a, const std::string& name, const char* what) {
  // The product is only compared with values.size(), so it saturates instead of overflowing.
  const int64_t size = static_cast<int64_t>(a.values.size());
  int64_t product = 1;
  bool has_zero = false;
  for (size_t i = 0; i < a.shape.size(); ++i) {
    const int64_t d = a.shape[i];
    QI_CHECK(d >= 0, what, ": ", name, ".shape[", i, "] must be >= 0, got ", d);
    if (d == 0) {
      has_zero = true;
    } else if (product > size / d) {
      product = size + 1;
    } else {
      product *= d;
    }
  }
  if (has_zero) product = 0;
  QI_CHECK(product == size, what, ": ", name,
           " must hold product(shape) values, got ", size, " values for shape ",
           shape_string(a.shape));
  for (size_t i = 0; i < a.values.size(); ++i)
    QI_CHECK(std::isfinite(a.values[i]), what, ": ", name, ".values[", i,
             "] must be finite, got ", a.values[i]);
}

void check_params(const QuantizationParams& params, const std::string& name, const char* what) {
  for (const auto& [key, value] : params) {
    const std::string entry = str_cat(name, "[\"", key, "\"]");
    if (const double* d = std::get_if<double>(&value)) {
      QI_CHECK(std::isfinite(*d), what, ": ", entry, " must be finite, got ", *d);
    } else if (const ParamArray* a = std::get_if<ParamArray>(&value)) {
      check_param_array(*a, entry, what);
    }
  }
}

void check_candidates(QuantizationMethod method,
                      const std::optional<std::vector<TrainableQuantizerCandidateConfig>>& cands,
                      const std::string& name, const char* what) {
  if (!cands) return;
  for (size_t i = 0; i < cands->size(); ++i) {
    const std::string entry = str_cat(name, "[", i, "]");
    check_n_bits(method, (*cands)[i].n_bits, entry + ".n_bits", what);
    check_params((*cands)[i].quantization_params, entry + ".quantization_params", what);
  }
}

// ---- to JSON ----------------------------------------------------------------------------------

Json params_to_json(const QuantizationParams& params) {
  Json out = Json::object();
  for (const auto& [key, value] : params) {
    if (const bool* b = std::get_if<bool>(&value)) {
      out[key] = *b;
    } else if (const double* d = std::get_if<double>(&value)) {
      out[key] = *d;
    } else {
      const auto& a = std::get<ParamArray>(value);
      out[key] = Json{{"shape", a.shape}, {"values", a.values}};
    }
  }
  return out;
}

Json candidates_to_json(
    const std::optional<std::vector<TrainableQuantizerCandidateConfig>>& cands) {
  if (!cands) return nullptr;
  Json out = Json::array();
  for (const auto& c : *cands)
    out.push_back({{"n_bits", c.n_bits},
                   {"quantization_params", params_to_json(c.quantization_params)}});
  return out;
}

// ---- from JSON --------------------------------------------------------------------------------

// A nested JSON list of numbers (MCT's np.array.tolist()) into shape + row-major values.
void read_nested_list(const Json& v, size_t depth, ParamArray& out, const std::string& name,
                      const char* what) {
  if (!v.is_array()) {
    QI_CHECK(depth == out.shape.size(), what, ": ", name,
             " must be a rectangular list of numbers, got a ragged list");
    out.values.push_back(ju::get_double(v, name, what));
    return;
  }
  const int64_t n = static_cast<int64_t>(v.size());
  if (depth == out.shape.size()) {
    QI_CHECK(out.values.empty(), what, ": ", name,
             " must be a rectangular list of numbers, got a ragged list");
    out.shape.push_back(n);
  } else {
    QI_CHECK(out.shape[depth] == n, what, ": ", name,
             " must be a rectangular list of numbers, got lengths ", out.shape[depth], " and ",
             n, " at depth ", depth);
  }
  for (const auto& e : v) read_nested_list(e, depth + 1, out, name, what);
}

QuantizationParam param_from_json(const Json& v, const std::string& name, const char* what) {
  if (v.is_boolean()) return v.get<bool>();
  if (v.is_number()) return ju::get_double(v, name, what);
  if (v.is_array()) {
    ParamArray a;
    read_nested_list(v, 0, a, name, what);
    return a;
  }
  QI_CHECK(v.is_object(), what, ": ", name,
           " must be a boolean, a number, a list of numbers or {\"shape\", \"values\"}, got ",
           ju::type_name(v), " ", v.dump());
  static const char* const kKeys[] = {"shape", "values"};
  ju::reject_unknown_keys(v, kKeys, str_cat(what, ": ", name).c_str());
  ParamArray a;
  const Json& shape = ju::get(v, "shape", str_cat(what, ": ", name).c_str());
  QI_CHECK(shape.is_array(), what, ": ", name, ".shape must be a list of integers, got ",
           ju::type_name(shape), " ", shape.dump());
  for (size_t i = 0; i < shape.size(); ++i)
    a.shape.push_back(ju::get_int(shape[i], str_cat(name, ".shape[", i, "]"), what));
  a.values = ju::get_double_list(ju::get(v, "values", str_cat(what, ": ", name).c_str()),
                                 name + ".values", what);
  return a;
}

QuantizationParams params_from_json(const Json& v, const std::string& name, const char* what) {
  QI_CHECK(v.is_object(), what, ": \"", name, "\" must be a JSON object, got ", ju::type_name(v),
           " ", v.dump());
  QuantizationParams out;
  for (auto it = v.begin(); it != v.end(); ++it)
    out.emplace(it.key(), param_from_json(it.value(), str_cat(name, "[\"", it.key(), "\"]"), what));
  return out;
}

std::optional<std::vector<TrainableQuantizerCandidateConfig>> candidates_from_json(
    const Json& v, const std::string& name, const char* what) {
  if (v.is_null()) return std::nullopt;
  QI_CHECK(v.is_array(), what, ": \"", name, "\" must be a list or null, got ", ju::type_name(v),
           " ", v.dump());
  static const char* const kKeys[] = {"n_bits", "quantization_params"};
  std::vector<TrainableQuantizerCandidateConfig> out;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string entry = str_cat(name, "[", i, "]");
    const std::string entry_what = str_cat(what, ": ", entry);
    QI_CHECK(v[i].is_object(), entry_what, " must be a JSON object, got ", ju::type_name(v[i]),
             " ", v[i].dump());
    ju::reject_unknown_keys(v[i], kKeys, entry_what.c_str());
    TrainableQuantizerCandidateConfig c;
    c.n_bits = ju::get_int(ju::get(v[i], "n_bits", entry_what.c_str()), entry + ".n_bits", what);
    c.quantization_params =
        params_from_json(ju::get(v[i], "quantization_params", entry_what.c_str()),
                         entry + ".quantization_params", what);
    out.push_back(std::move(c));
  }
  return out;
}

// MCT serializes the method by its integer value, qi by name; both are read.
QuantizationMethod method_from_json(const Json& v, const std::string& name, const char* what) {
  QI_CHECK(v.is_string() || v.is_number_integer(), what, ": \"", name,
           "\" must be a method name or MCT's integer value, got ", ju::type_name(v), " ",
           v.dump());
  const int64_t value = v.is_number_integer() ? ju::get_int(v, name, what) : 0;
  try {
    if (v.is_number_integer()) return quantization_method_from_value(value);
    return quantization_method_from_string(v.get<std::string>());
  } catch (const Error& e) {
    throw Error(str_cat(what, ": \"", name, "\": ", e.what()));
  }
}

// Parses the text, checks the kind flags and the key set, and returns the object. The flags come
// first so that a config of the other kind gets a message saying so, not a list of wrong keys.
Json open_config(const std::string& text, bool is_weights, const std::vector<std::string>& keys,
                 const char* what) {
  Json j = ju::parse(text, what);
  ju::require_object(j, what);
  const char* kind = is_weights ? "a weights" : "an activation";
  using Flag = std::pair<const char*, bool>;
  for (const auto& [flag, expected] : {Flag{"is_weights", is_weights},
                                       Flag{"is_activations", !is_weights}}) {
    const bool value = ju::get_bool(ju::get(j, flag, what), flag, what);
    QI_CHECK(value == expected, what, ": \"", flag, "\" must be ", expected ? "true" : "false",
             " in ", kind, " quantization config, got ", value ? "true" : "false");
  }
  std::vector<std::string> allowed = keys;
  for (const char* extra : {"is_weights", "is_activations", "qi_version"}) allowed.push_back(extra);
  ju::reject_unknown_keys(j, allowed, what);
  if (auto it = j.find("qi_version"); it != j.end()) ju::get_string(*it, "qi_version", what);
  return j;
}

Json finish_config(Json j, bool is_weights) {
  j["is_weights"] = is_weights;
  j["is_activations"] = !is_weights;
  j["qi_version"] = kVersion;
  return j;
}

// Any nlohmann exception left (it should not happen) still leaves as qi::Error.
template <typename F>
auto guard_json(const char* what, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Json::exception& e) {
    throw Error(str_cat(what, ": malformed config: ", e.what()));
  }
}

}  // namespace

// ---- weights ----------------------------------------------------------------------------------

bool TrainableQuantizerWeightsConfig::operator==(const TrainableQuantizerWeightsConfig& o) const {
  return weights_quantization_method == o.weights_quantization_method &&
         weights_n_bits == o.weights_n_bits &&
         weights_quantization_params == o.weights_quantization_params &&
         enable_weights_quantization == o.enable_weights_quantization &&
         weights_channels_axis == o.weights_channels_axis &&
         weights_per_channel_threshold == o.weights_per_channel_threshold &&
         min_threshold == o.min_threshold && weights_bits_candidates == o.weights_bits_candidates;
}

void TrainableQuantizerWeightsConfig::validate() const {
  to_string(weights_quantization_method);  // throws for a value outside the enum
  check_n_bits(weights_quantization_method, weights_n_bits, "weights_n_bits", kWeightsWhat);
  check_min_threshold(min_threshold, kWeightsWhat);
  check_params(weights_quantization_params, "weights_quantization_params", kWeightsWhat);
  check_candidates(weights_quantization_method, weights_bits_candidates, "weights_bits_candidates",
                   kWeightsWhat);
}

std::string TrainableQuantizerWeightsConfig::get_config() const {
  // Invalid values (NaN, ...) have no faithful JSON form; refuse rather than write null.
  validate();
  return guard_json(kWeightsWhat, [&] {
    Json j = {
        {"weights_quantization_method", to_string(weights_quantization_method)},
        {"weights_n_bits", weights_n_bits},
        {"weights_quantization_params", params_to_json(weights_quantization_params)},
        {"enable_weights_quantization", enable_weights_quantization},
        {"weights_channels_axis", weights_channels_axis},
        {"weights_per_channel_threshold", weights_per_channel_threshold},
        {"min_threshold", min_threshold},
        {"weights_bits_candidates", candidates_to_json(weights_bits_candidates)},
    };
    return finish_config(std::move(j), true).dump();
  });
}

TrainableQuantizerWeightsConfig TrainableQuantizerWeightsConfig::from_config(
    const std::string& json) {
  static const std::vector<std::string> kKeys = {
      "weights_quantization_method", "weights_n_bits",       "weights_quantization_params",
      "enable_weights_quantization", "weights_channels_axis", "weights_per_channel_threshold",
      "min_threshold",               "weights_bits_candidates"};
  const char* what = kWeightsWhat;
  return guard_json(what, [&] {
    const Json j = open_config(json, true, kKeys, what);
    auto field = [&](const char* key) -> const Json& { return ju::get(j, key, what); };
    TrainableQuantizerWeightsConfig c;
    c.weights_quantization_method =
        method_from_json(field("weights_quantization_method"), "weights_quantization_method", what);
    c.weights_n_bits = ju::get_int(field("weights_n_bits"), "weights_n_bits", what);
    c.weights_quantization_params = params_from_json(field("weights_quantization_params"),
                                                     "weights_quantization_params", what);
    c.enable_weights_quantization =
        ju::get_bool(field("enable_weights_quantization"), "enable_weights_quantization", what);
    c.weights_channels_axis =
        ju::get_int(field("weights_channels_axis"), "weights_channels_axis", what);
    c.weights_per_channel_threshold = ju::get_bool(field("weights_per_channel_threshold"),
                                                   "weights_per_channel_threshold", what);
    c.min_threshold = ju::get_double(field("min_threshold"), "min_threshold", what);
    // Optional: MCT-written configs and those without candidates may leave it out.
    if (auto it = j.find("weights_bits_candidates"); it != j.end())
      c.weights_bits_candidates = candidates_from_json(*it, "weights_bits_candidates", what);
    c.validate();
    return c;
  });
}

// ---- activation -------------------------------------------------------------------------------

bool TrainableQuantizerActivationConfig::operator==(
    const TrainableQuantizerActivationConfig& o) const {
  return activation_quantization_method == o.activation_quantization_method &&
         activation_n_bits == o.activation_n_bits &&
         activation_quantization_params == o.activation_quantization_params &&
         enable_activation_quantization == o.enable_activation_quantization &&
         min_threshold == o.min_threshold &&
         activation_bits_candidates == o.activation_bits_candidates;
}

void TrainableQuantizerActivationConfig::validate() const {
  to_string(activation_quantization_method);
  check_n_bits(activation_quantization_method, activation_n_bits, "activation_n_bits",
               kActivationWhat);
  check_min_threshold(min_threshold, kActivationWhat);
  check_params(activation_quantization_params, "activation_quantization_params", kActivationWhat);
  check_candidates(activation_quantization_method, activation_bits_candidates,
                   "activation_bits_candidates", kActivationWhat);
}

std::string TrainableQuantizerActivationConfig::get_config() const {
  validate();
  return guard_json(kActivationWhat, [&] {
    Json j = {
        {"activation_quantization_method", to_string(activation_quantization_method)},
        {"activation_n_bits", activation_n_bits},
        {"activation_quantization_params", params_to_json(activation_quantization_params)},
        {"enable_activation_quantization", enable_activation_quantization},
        {"min_threshold", min_threshold},
        {"activation_bits_candidates", candidates_to_json(activation_bits_candidates)},
    };
    return finish_config(std::move(j), false).dump();
  });
}

TrainableQuantizerActivationConfig TrainableQuantizerActivationConfig::from_config(
    const std::string& json) {
  static const std::vector<std::string> kKeys = {
      "activation_quantization_method", "activation_n_bits", "activation_quantization_params",
      "enable_activation_quantization", "min_threshold",     "activation_bits_candidates"};
  const char* what = kActivationWhat;
  return guard_json(what, [&] {
    const Json j = open_config(json, false, kKeys, what);
    auto field = [&](const char* key) -> const Json& { return ju::get(j, key, what); };
    TrainableQuantizerActivationConfig c;
    c.activation_quantization_method = method_from_json(
        field("activation_quantization_method"), "activation_quantization_method", what);
    c.activation_n_bits = ju::get_int(field("activation_n_bits"), "activation_n_bits", what);
    c.activation_quantization_params = params_from_json(field("activation_quantization_params"),
                                                        "activation_quantization_params", what);
    c.enable_activation_quantization = ju::get_bool(field("enable_activation_quantization"),
                                                    "enable_activation_quantization", what);
    c.min_threshold = ju::get_double(field("min_threshold"), "min_threshold", what);
    if (auto it = j.find("activation_bits_candidates"); it != j.end())
      c.activation_bits_candidates = candidates_from_json(*it, "activation_bits_candidates", what);
    c.validate();
    return c;
  });
}

}  // namespace qi
