// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// JSON configs of inferable quantizers: exactly the keys of each class, strict on input.

#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/json_util.h"
#include "qi/inferable_quantizers.h"
#include "qi/trainable_quantizers.h"
#include "qi/version.h"

namespace qi {
namespace {

using json_util::Json;
using Kind = InferableQuantizerKind;

// The JSON keys of a class: its constructor arguments (registry.h).
const std::vector<std::string>& keys_of(Kind kind) {
  static const auto keys = [] {
    std::vector<std::vector<std::string>> out;
    for (const auto& info : kInferableQuantizers) {
      std::vector<std::string> k;
      for (const auto& spec : inferable_param_specs(info.kind)) k.push_back(spec.key);
      out.push_back(std::move(k));
    }
    return out;
  }();
  const auto i = static_cast<size_t>(kind);
  QI_CHECK(i < keys.size(), "inferable_quantizer_config_keys: invalid kind ", i);
  return keys[i];
}

bool has_key(const std::vector<std::string>& keys, const char* k) {
  for (const auto& key : keys)
    if (key == k) return true;
  return false;
}

Json to_json_value(const std::optional<int64_t>& v) { return v ? Json(*v) : Json(nullptr); }

// Lists accept a bare number too (the seed writes threshold=2).
std::vector<double> read_list(const Json& v, const std::string& key, const char* what) {
  if (v.is_number()) return {json_util::get_double(v, key, what)};
  return json_util::get_double_list(v, key, what);
}

std::optional<int64_t> read_optional_int(const Json& v, const std::string& key, const char* what) {
  if (v.is_null()) return std::nullopt;
  return json_util::get_int(v, key, what);
}

}  // namespace

const std::vector<std::string>& inferable_quantizer_config_keys(InferableQuantizerKind kind) {
  return keys_of(kind);
}

std::string BaseInferableQuantizer::get_config() const {
  const auto& keys = keys_of(info().kind);
  const QuantizerParams& p = params();
  Json j = Json::object();
  for (const auto& k : keys) {
    if (k == "num_bits") j[k] = p.num_bits;
    else if (k == "threshold") j[k] = p.threshold;
    else if (k == "min_range") j[k] = p.min_range;
    else if (k == "max_range") j[k] = p.max_range;
    else if (k == "lut_values") j[k] = p.lut_values;
    else if (k == "per_channel") j[k] = p.per_channel;
    else if (k == "channel_axis") j[k] = to_json_value(p.channel_axis);
    else if (k == "input_rank") j[k] = to_json_value(p.input_rank);
    else if (k == "signed") j[k] = p.is_signed;
    else if (k == "lut_values_bitwidth") j[k] = p.lut_values_bitwidth;
    else if (k == "eps") j[k] = p.eps;
    else if (k == "profile") j[k] = to_string(p.profile);
    else if (k == "format") j[k] = p.format;
    else if (k == "scale") j[k] = p.scale;
    else if (k == "group_size") j[k] = to_json_value(p.group_size);
    else if (k == "group_axis") j[k] = p.group_axis;
    else if (k == "block_size") j[k] = p.block_size;
    else if (k == "block_axis") j[k] = p.block_axis;
    else if (k == "tensor_scale") j[k] = p.tensor_scale ? Json(*p.tensor_scale) : Json(nullptr);
    else if (k == "block_scales")
      j[k] = p.block_scales.empty() ? Json(nullptr) : Json(p.block_scales);
  }
  j["qi_version"] = kVersion;
  return j.dump();
}

std::string BaseInferableQuantizer::to_json() const {
  Json j = Json::object();
  j["class_name"] = class_name();
  j["config"] = json_util::parse(get_config(), class_name());
  return j.dump();
}

namespace {

std::unique_ptr<BaseInferableQuantizer> from_config_json(Kind kind, const Json& j) {
  const auto& info = inferable_quantizer_info(kind);
  const char* what = info.class_name;
  json_util::require_object(j, what);
  std::vector<std::string> allowed = keys_of(kind);
  allowed.push_back("qi_version");
  json_util::reject_unknown_keys(j, allowed, what);
  if (j.contains("qi_version")) json_util::get_string(j["qi_version"], "qi_version", what);

  const auto& keys = keys_of(kind);
  QuantizerParams p;
  if (has_key(keys, "num_bits"))
    p.num_bits = json_util::get_int(json_util::get(j, "num_bits", what), "num_bits", what);
  if (has_key(keys, "format"))
    p.format = json_util::get_string(json_util::get(j, "format", what), "format", what);
  for (const char* list : {"threshold", "min_range", "max_range", "lut_values", "scale"})
    if (has_key(keys, list)) {
      auto values = read_list(json_util::get(j, list, what), list, what);
      if (std::string(list) == "threshold") p.threshold = std::move(values);
      else if (std::string(list) == "min_range") p.min_range = std::move(values);
      else if (std::string(list) == "max_range") p.max_range = std::move(values);
      else if (std::string(list) == "scale") p.scale = std::move(values);
      else p.lut_values = std::move(values);
    }
  if (has_key(keys, "per_channel"))
    p.per_channel = json_util::get_bool(json_util::get(j, "per_channel", what), "per_channel", what);
  if (j.contains("channel_axis"))
    p.channel_axis = read_optional_int(j["channel_axis"], "channel_axis", what);
  if (j.contains("input_rank"))
    p.input_rank = read_optional_int(j["input_rank"], "input_rank", what);
  if (j.contains("group_size"))
    p.group_size = read_optional_int(j["group_size"], "group_size", what);
  if (j.contains("group_axis"))
    p.group_axis = json_util::get_int(j["group_axis"], "group_axis", what);
  if (j.contains("block_size"))
    p.block_size = json_util::get_int(j["block_size"], "block_size", what);
  if (j.contains("block_axis"))
    p.block_axis = json_util::get_int(j["block_axis"], "block_axis", what);
  if (j.contains("tensor_scale") && !j["tensor_scale"].is_null())
    p.tensor_scale = json_util::get_double(j["tensor_scale"], "tensor_scale", what);
  if (j.contains("block_scales") && !j["block_scales"].is_null()) {
    p.block_scales = read_list(j["block_scales"], "block_scales", what);
    QI_CHECK(!p.block_scales.empty(), what,
             ": block_scales must hold at least one value (or be null), got []");
  }
  if (has_key(keys, "signed")) {
    // Weights quantizers default to signed; activation quantizers must say.
    if (info.target == QuantizationTarget::Activation || j.contains("signed"))
      p.is_signed = json_util::get_bool(json_util::get(j, "signed", what), "signed", what);
  }
  if (j.contains("lut_values_bitwidth"))
    p.lut_values_bitwidth =
        json_util::get_int(j["lut_values_bitwidth"], "lut_values_bitwidth", what);
  if (j.contains("eps")) p.eps = json_util::get_double(j["eps"], "eps", what);
  if (j.contains("profile")) {
    const std::string name = json_util::get_string(j["profile"], "profile", what);
    try {
      p.profile = numeric_profile_from_string(name);
    } catch (const Error& e) {
      throw Error(str_cat(what, ": profile: ", e.what()));
    }
  }
  return make_inferable_quantizer(kind, p);
}

}  // namespace

std::unique_ptr<BaseInferableQuantizer> inferable_quantizer_from_config(
    InferableQuantizerKind kind, const std::string& config_json) {
  const auto& info = inferable_quantizer_info(kind);
  return from_config_json(kind, json_util::parse(config_json, info.class_name));
}

std::unique_ptr<BaseInferableQuantizer> inferable_quantizer_from_json(const std::string& text) {
  const char* what = "inferable_quantizer_from_json";
  const Json j = json_util::parse(text, what);
  json_util::require_object(j, what);
  json_util::reject_unknown_keys(j, std::vector<std::string>{"class_name", "config"}, what);
  const std::string name =
      json_util::get_string(json_util::get(j, "class_name", what), "class_name", what);
  const auto& info = inferable_quantizer_info(name.c_str());
  return from_config_json(info.kind, json_util::get(j, "config", what));
}

std::shared_ptr<const BaseInferableQuantizer> cached_inferable_quantizer(const std::string& json) {
  static std::mutex mutex;
  static std::unordered_map<std::string, std::shared_ptr<const BaseInferableQuantizer>> cache;
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (auto it = cache.find(json); it != cache.end()) return it->second;
  }
  std::shared_ptr<const BaseInferableQuantizer> q = inferable_quantizer_from_json(json);
  std::lock_guard<std::mutex> lock(mutex);
  if (cache.size() >= 4096) cache.clear();  // bounds memory for programs that make many
  cache.emplace(json, q);
  return q;
}

// ---- quantizers of any kind by class name ------------------------------------------------------

std::shared_ptr<BaseQuantizer> quantizer_from_json(const std::string& text) {
  const char* what = "quantizer_from_json";
  const json_util::Json j = json_util::parse(text, what);
  json_util::require_object(j, what);
  json_util::reject_unknown_keys(j, std::vector<std::string>{"class_name", "config"}, what);
  const std::string name =
      json_util::get_string(json_util::get(j, "class_name", what), "class_name", what);
  if (is_trainable_quantizer_class(name)) return TrainableQuantizer::from_json(text);
  bool inferable = false;
  for (const auto& info : kInferableQuantizers) inferable = inferable || name == info.class_name;
  if (!inferable) {
    std::string names;
    for (const auto& info : kInferableQuantizers) names += str_cat(", ", info.class_name);
    for (const auto& info : kTrainableQuantizers) names += str_cat(", ", info.class_name);
    throw Error(str_cat("class_name: unknown quantizer class \"", name, "\"; expected one of ",
                        names.substr(2)));
  }
  return inferable_quantizer_from_json(text);
}

}  // namespace qi
