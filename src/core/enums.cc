// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include "qi/enums.h"

#include <cstddef>
#include <limits>
#include <optional>

#include "qi/error.h"

namespace qi {
namespace {

template <typename E>
struct NamedValue {
  E value;
  const char* name;
};

constexpr NamedValue<QuantizationMethod> kMethods[] = {
#define QI_METHOD_NAME(Name, Value) {QuantizationMethod::Name, #Name},
    QI_FOR_EACH_QUANTIZATION_METHOD(QI_METHOD_NAME)
#undef QI_METHOD_NAME
};
constexpr NamedValue<QuantizationTarget> kTargets[] = {
    {QuantizationTarget::Activation, "Activation"},
    {QuantizationTarget::Weights, "Weights"},
};
constexpr NamedValue<TrainingMethod> kTrainingMethods[] = {
    {TrainingMethod::STE, "STE"},
    {TrainingMethod::DQA, "DQA"},
    {TrainingMethod::LSQ, "LSQ"},
    {TrainingMethod::SoftRounding, "SoftRounding"},
};
constexpr NamedValue<VariableGroup> kVariableGroups[] = {
    {VariableGroup::WEIGHTS, "WEIGHTS"},
    {VariableGroup::QPARAMS, "QPARAMS"},
};
constexpr NamedValue<NumericProfile> kProfiles[] = {
    {NumericProfile::kTorch, "torch"},
    {NumericProfile::kTf, "tf"},
};

template <typename E, size_t N>
std::string name_of(const NamedValue<E> (&table)[N], E value, const char* enum_name) {
  for (const auto& entry : table)
    if (entry.value == value) return entry.name;
  throw Error(str_cat(enum_name, ": invalid enum value ", static_cast<int>(value)));
}

template <typename E, size_t N>
std::string choices(const NamedValue<E> (&table)[N]) {
  std::string out;
  for (size_t i = 0; i < N; ++i) {
    if (i > 0) out += ", ";
    out += table[i].name;
  }
  return out;
}

template <typename E, size_t N>
std::optional<E> find_name(const NamedValue<E> (&table)[N], const std::string& s) {
  for (const auto& entry : table)
    if (s == entry.name) return entry.value;
  return std::nullopt;
}

template <typename E, size_t N>
E parse_name(const NamedValue<E> (&table)[N], const std::string& s, const char* enum_name) {
  if (auto found = find_name(table, s)) return *found;
  throw Error(str_cat(enum_name, ": unknown name \"", s, "\"; expected one of ", choices(table)));
}

// MCT's integer values also travel as decimal strings (e.g. from Keras configs); only an optional
// '-' followed by digits qualifies, so " 2" or "2.0" stay unknown names.
bool is_decimal(const std::string& s) {
  size_t start = (!s.empty() && s[0] == '-') ? 1 : 0;
  if (start == s.size()) return false;
  for (size_t i = start; i < s.size(); ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}

// The value of a decimal string, or nullopt when it is beyond int64.
std::optional<int64_t> decimal_value(const std::string& s) {
  bool negative = s[0] == '-';
  uint64_t limit = static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) + (negative ? 1 : 0);
  uint64_t magnitude = 0;
  for (size_t i = negative ? 1 : 0; i < s.size(); ++i) {
    uint64_t digit = static_cast<uint64_t>(s[i] - '0');
    if (magnitude > (limit - digit) / 10) return std::nullopt;
    magnitude = magnitude * 10 + digit;
  }
  if (!negative) return static_cast<int64_t>(magnitude);
  return magnitude == limit ? std::numeric_limits<int64_t>::min()
                            : -static_cast<int64_t>(magnitude);
}

// "expected 0 (POWER_OF_TWO), 1 (LUT_POT_QUANTIZER), ... or 4 (LUT_SYM_QUANTIZER)".
std::string method_values() {
  std::string out = "expected ";
  const size_t n = std::size(kMethods);
  for (size_t i = 0; i < n; ++i)
    out += str_cat(i == 0 ? "" : (i + 1 == n ? " or " : ", "), static_cast<int>(kMethods[i].value),
                   " (", kMethods[i].name, ")");
  return out;
}
constexpr const char* kTargetValues = "expected 0 (Activation) or 1 (Weights)";

}  // namespace

std::string to_string(QuantizationMethod m) { return name_of(kMethods, m, "QuantizationMethod"); }
std::string to_string(QuantizationTarget t) { return name_of(kTargets, t, "QuantizationTarget"); }
std::string to_string(TrainingMethod t) { return name_of(kTrainingMethods, t, "TrainingMethod"); }
std::string to_string(VariableGroup g) { return name_of(kVariableGroups, g, "VariableGroup"); }
std::string to_string(NumericProfile p) { return name_of(kProfiles, p, "NumericProfile"); }

QuantizationMethod quantization_method_from_value(int64_t value) {
  for (const auto& entry : kMethods)
    if (static_cast<int64_t>(entry.value) == value) return entry.value;
  throw Error(str_cat("QuantizationMethod: unknown MCT value ", value, "; ", method_values()));
}

QuantizationMethod quantization_method_from_string(const std::string& s) {
  if (auto found = find_name(kMethods, s)) return *found;
  if (is_decimal(s)) {
    auto value = decimal_value(s);
    QI_CHECK(value, "QuantizationMethod: unknown MCT value ", s, "; ", method_values());
    return quantization_method_from_value(*value);
  }
  throw Error(str_cat("QuantizationMethod: unknown name \"", s, "\"; expected one of ",
                      choices(kMethods), " (or MCT's integer value)"));
}

QuantizationTarget quantization_target_from_string(const std::string& s) {
  if (auto found = find_name(kTargets, s)) return *found;
  if (is_decimal(s)) {
    auto value = decimal_value(s);
    QI_CHECK(value && (*value == 0 || *value == 1), "QuantizationTarget: unknown value ", s, "; ",
             kTargetValues);
    return static_cast<QuantizationTarget>(*value);
  }
  throw Error(str_cat("QuantizationTarget: unknown name \"", s, "\"; expected one of ",
                      choices(kTargets), " (or 0, 1)"));
}

TrainingMethod training_method_from_string(const std::string& s) {
  return parse_name(kTrainingMethods, s, "TrainingMethod");
}

VariableGroup variable_group_from_string(const std::string& s) {
  return parse_name(kVariableGroups, s, "VariableGroup");
}

NumericProfile numeric_profile_from_string(const std::string& s) {
  return parse_name(kProfiles, s, "NumericProfile");
}

}  // namespace qi
