// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The policy of every trainable quantizer (the behaviour of MCT's STE, LSQ and soft
// rounding quantizers, with qi's fixes), in one place for all front ends.
#include "qi/trainable_quantizers.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>

#include "core/group_views.h"
#include "core/json_util.h"
#include "core/param_rules.h"
#include "kernels/plan.h"
#include "kernels/scalar_ops.h"
#include "qi/error.h"

namespace qi {
namespace {

namespace ju = json_util;
using Json = ju::Json;
using trainable::GradMode;
using trainable::kMinThreshold;
using trainable::power_of_two_ceil;

std::vector<double> param_values(const QuantizationParams& params, const char* key,
                                 const char* cls) {
  auto it = params.find(key);
  QI_CHECK(it != params.end(), cls, ": quantization params must hold \"", key, "\"");
  if (const auto* d = std::get_if<double>(&it->second)) return {*d};
  if (const auto* a = std::get_if<ParamArray>(&it->second)) {
    QI_CHECK(!a->values.empty(), cls, ": \"", key, "\" must hold at least one value");
    return a->values;
  }
  throw Error(str_cat(cls, ": \"", key, "\" must be a number or an array, got a boolean"));
}

// An integer parameter (a number without fraction); nullopt when absent.
std::optional<int64_t> param_int(const QuantizationParams& params, const char* key,
                                 const char* cls) {
  auto it = params.find(key);
  if (it == params.end()) return std::nullopt;
  const auto* d = std::get_if<double>(&it->second);
  QI_CHECK(d != nullptr && std::abs(*d) < 1e15 && *d == std::floor(*d), cls,
           ": quantization params: \"", key, "\" must be an integer",
           d ? str_cat(", got ", *d) : std::string());
  return static_cast<int64_t>(*d);
}

bool param_bool(const QuantizationParams& params, const char* key, bool fallback,
                const char* cls) {
  auto it = params.find(key);
  if (it == params.end()) return fallback;
  if (const auto* b = std::get_if<bool>(&it->second)) return *b;
  throw Error(str_cat(cls, ": quantization params: \"", key, "\" must be a boolean"));
}

// NVFP4 LSQ weights learn their tensor scale only when the config asks ("learn_tensor_scale":
// true; checked when the config is parsed): a tensor scale is about max|w| / 2688, and optimizers
// that normalize the step (Adam) would move it by about its own size at each step.
bool learns_tensor_scale(const TrainableQuantizerWeightsConfig* w) {
  return w != nullptr &&
         param_bool(w->weights_quantization_params, "learn_tensor_scale", false, "");
}

// `v` for `channels` channels: one value broadcasts.
std::vector<double> per_channel(std::vector<double> v, int64_t channels, const char* cls,
                                const char* what, const char* unit = "channels") {
  if (v.size() == 1 && channels > 1) v.assign(static_cast<size_t>(channels), v[0]);
  QI_CHECK(static_cast<int64_t>(v.size()) == channels, cls, ": ", what, " holds ", v.size(),
           " values but the tensor has ", channels, " ", unit);
  return v;
}

std::vector<float> to_float(const std::vector<double>& v) { return {v.begin(), v.end()}; }

// A variable's value for convert (qi::Error naming the variable when it is missing or empty).
const std::vector<float>& variable_value(const TrainableQuantizer::VariableValues& values,
                                         const char* name, const char* cls) {
  auto it = values.find(name);
  QI_CHECK(it != values.end(), cls, ": convert needs the value of variable \"", name, "\"");
  QI_CHECK(!it->second.empty(), cls, ": variable \"", name, "\" holds no values");
  return it->second;
}

double levels(int64_t bits) { return std::ldexp(1.0, static_cast<int>(bits)) - 1; }

// The element formats by (n_bits, ebits): FLOAT's and MX's (MX also INT8: 8 bits, ebits 0).
struct FormatName {
  int64_t n_bits, ebits;
  const char* name;
};
constexpr FormatName kFormatNames[] = {{8, 4, "E4M3"}, {8, 5, "E5M2"}, {6, 3, "E3M2"},
                                       {6, 2, "E2M3"}, {4, 2, "E2M1"}, {8, 0, "INT8"}};

// The number of positive values of an element format, for LSQ's gradient scale (2^(e+m) - 1;
// MX's INT8: 127).
double format_levels(const std::string& name) {
  const kernels::FloatFormat* f = kernels::find_mx_format(name);
  return f->ebits == 0 ? 127.0 : levels(f->ebits + f->mbits);
}

// The thresholds the eval forward and the converted quantizer use (as the symmetric op computes
// them with min_threshold = kMinThreshold), through float32.
std::vector<double> eval_thresholds(const std::vector<float>& t, bool pot) {
  std::vector<double> out;
  for (float v : t)
    out.push_back(static_cast<float>(pot ? power_of_two_ceil(v, kMinThreshold)
                                         : std::max<double>(v, kMinThreshold)));
  return out;
}

}  // namespace

// ---- registry ----------------------------------------------------------------------------------

std::vector<QuantizationMethod> TrainableQuantizerInfo::methods() const {
  if (family == TrainableFamily::kUniform) return {QuantizationMethod::UNIFORM};
  if (family == TrainableFamily::kFormat)
    return {QuantizationMethod::FLOAT, QuantizationMethod::MX, QuantizationMethod::NVFP4};
  return {QuantizationMethod::POWER_OF_TWO, QuantizationMethod::SYMMETRIC};
}

bool TrainableQuantizerInfo::serves(QuantizationMethod method) const {
  const auto m = methods();
  return std::find(m.begin(), m.end(), method) != m.end();
}

const TrainableQuantizerInfo& get_trainable_quantizer_class(QuantizationTarget target,
                                                            QuantizationMethod method,
                                                            TrainingMethod training_method) {
  const TrainableQuantizerInfo* found = nullptr;
  int count = 0;
  for (const auto& info : kTrainableQuantizers)
    if (info.target == target && info.training_method == training_method && info.serves(method)) {
      found = &info;
      ++count;
    }
  QI_CHECK(count == 1, "get_trainable_quantizer_class: found ", count,
           " trainable quantizers for target ", to_string(target), ", method ", to_string(method),
           " and training method ", to_string(training_method), "; expected exactly one");
  return *found;
}

bool is_trainable_quantizer_class(const std::string& class_name) {
  for (const auto& info : kTrainableQuantizers)
    if (class_name == info.class_name) return true;
  return false;
}

const TrainableQuantizerInfo& trainable_quantizer_info(const std::string& class_name) {
  for (const auto& info : kTrainableQuantizers)
    if (class_name == info.class_name) return info;
  std::string names;
  for (const auto& info : kTrainableQuantizers)
    names += str_cat(names.empty() ? "" : ", ", info.class_name);
  throw Error(str_cat("class_name: unknown trainable quantizer \"", class_name,
                      "\"; expected one of ", names));
}

const TrainableQuantizerInfo& trainable_quantizer_info(TrainableQuantizerKind kind) {
  const auto i = static_cast<size_t>(kind);
  QI_CHECK(i < kTrainableQuantizers.size(), "TrainableQuantizerKind: invalid value ", i);
  return kTrainableQuantizers[i];
}

std::string to_string(TrainableOp op) {
  switch (op) {
    case TrainableOp::kSymmetricQuant: return "symmetric_quant";
    case TrainableOp::kUniformQuant: return "uniform_quant";
    case TrainableOp::kSoftRound: return "soft_round";
    case TrainableOp::kFormatQuant: return "format_quant";
  }
  throw Error(str_cat("TrainableOp: invalid value ", static_cast<int>(op)));
}

// ---- construction ------------------------------------------------------------------------------

TrainableQuantizer::TrainableQuantizer(TrainableQuantizerKind kind,
                                       const TrainableQuantizerWeightsConfig& config,
                                       bool freeze_quant_params)
    : info_(&trainable_quantizer_info(kind)),
      method_(config.weights_quantization_method),
      wcfg_(config),
      freeze_(freeze_quant_params) {
  QI_CHECK(info_->target == QuantizationTarget::Weights, info_->class_name,
           ": expected activation quantization configuration; received weight quantization "
           "instead.");
  config.validate();
  parse(config.weights_quantization_params);
}

TrainableQuantizer::TrainableQuantizer(TrainableQuantizerKind kind,
                                       const TrainableQuantizerActivationConfig& config,
                                       bool freeze_quant_params)
    : info_(&trainable_quantizer_info(kind)),
      method_(config.activation_quantization_method),
      acfg_(config),
      freeze_(freeze_quant_params) {
  QI_CHECK(info_->target == QuantizationTarget::Activation, info_->class_name,
           ": expected weight quantization configuration; received activation quantization "
           "instead.");
  config.validate();
  parse(config.activation_quantization_params);
}

void TrainableQuantizer::parse(const QuantizationParams& params) {
  const char* cls = info_->class_name;
  if (!info_->serves(method_)) {
    std::string expected;
    for (auto m : info_->methods()) expected += (expected.empty() ? "" : ", ") + to_string(m);
    throw Error(str_cat(cls, ": Quantization method mismatch: expected one of [", expected,
                        "], received ", to_string(method_)));
  }
  const bool activation = info_->target == QuantizationTarget::Activation;
  if (info_->family == TrainableFamily::kFormat) {
    parse_format(params);
    return;
  }
  group_size_ = param_int(params, "group_size", cls);
  if (group_size_) {
    QI_CHECK(!activation && info_->training_method != TrainingMethod::SoftRounding, cls,
             ": \"group_size\" is taken by the weights STE and LSQ quantizers only");
    QI_CHECK(*group_size_ >= 1 && *group_size_ <= INT32_MAX, cls, ": \"group_size\" must be in "
             "[1, ", INT32_MAX, "], got ", *group_size_);
    group_axis_ = param_int(params, "group_axis", cls).value_or(-1);
  } else {
    QI_CHECK(params.find("group_axis") == params.end(), cls,
             ": \"group_axis\" is given without \"group_size\"");
  }
  if (info_->family == TrainableFamily::kUniform) {
    min_ = param_values(params, "range_min", cls);
    max_ = param_values(params, "range_max", cls);
    QI_CHECK(min_.size() == max_.size(), cls, ": \"range_min\" and \"range_max\" must hold as "
             "many values, got ", min_.size(), " and ", max_.size());
    QI_CHECK(!activation || min_.size() == 1, cls,
             ": activation \"range_min\"/\"range_max\" must hold one value each, got ",
             min_.size());
    return;
  }
  threshold_ = param_values(params, "threshold", cls);
  if (activation) {
    QI_CHECK(threshold_.size() == 1, cls, ": activation \"threshold\" must hold one value, got ",
             threshold_.size());
    signed_ = param_bool(params, "is_signed", true, cls);
  } else if (method_ == QuantizationMethod::POWER_OF_TWO &&
             info_->training_method != TrainingMethod::SoftRounding) {
    // QAT thresholds start as powers of two (MCT); soft rounding keeps them as given.
    for (double& t : threshold_) t = power_of_two_ceil(t, kMinThreshold);
  }
}

std::shared_ptr<TrainableQuantizer> TrainableQuantizer::from_config(TrainableQuantizerKind kind,
                                                                    const std::string& text) {
  const char* cls = trainable_quantizer_info(kind).class_name;
  const Json j = ju::parse(text, cls);
  QI_CHECK(j.is_object() && j.contains("quantization_config") &&
               j["quantization_config"].is_object(),
           cls, ": config must be an object with \"quantization_config\", got ", j.dump());
  static const char* const kKeys[] = {"quantization_config", "freeze_quant_params"};
  ju::reject_unknown_keys(j, kKeys, cls);
  bool freeze = false;
  if (auto it = j.find("freeze_quant_params"); it != j.end())
    freeze = ju::get_bool(*it, "freeze_quant_params", cls);
  const Json& cfg = j["quantization_config"];
  const std::string cfg_text = cfg.dump();
  // The config's own flag says which kind it is; a mismatch with the class is then reported
  // as MCT words it.
  if (cfg.contains("is_weights") && cfg["is_weights"].is_boolean() &&
      cfg["is_weights"].get<bool>())
    return std::make_shared<TrainableQuantizer>(
        kind, TrainableQuantizerWeightsConfig::from_config(cfg_text), freeze);
  return std::make_shared<TrainableQuantizer>(
      kind, TrainableQuantizerActivationConfig::from_config(cfg_text), freeze);
}

std::shared_ptr<TrainableQuantizer> TrainableQuantizer::from_json(const std::string& text) {
  const char* what = "trainable quantizer";
  const Json j = ju::parse(text, what);
  ju::require_object(j, what);
  static const char* const kKeys[] = {"class_name", "config"};
  ju::reject_unknown_keys(j, kKeys, what);
  const std::string name = ju::get_string(ju::get(j, "class_name", what), "class_name", what);
  return from_config(trainable_quantizer_info(name).kind, ju::get(j, "config", what).dump());
}

std::shared_ptr<TrainableQuantizer> TrainableQuantizer::frozen() const {
  auto copy = std::make_shared<TrainableQuantizer>(*this);
  copy->freeze_ = true;
  return copy;
}

int64_t TrainableQuantizer::num_bits() const {
  return wcfg_ ? wcfg_->weights_n_bits : acfg_->activation_n_bits;
}

std::string TrainableQuantizer::config_json() const {
  Json j = Json::object();
  j["quantization_config"] =
      ju::parse(wcfg_ ? wcfg_->get_config() : acfg_->get_config(), info_->class_name);
  j["freeze_quant_params"] = freeze_;
  return j.dump();
}

std::string TrainableQuantizer::to_json() const {
  Json j = Json::object();
  j["class_name"] = info_->class_name;
  j["config"] = ju::parse(config_json(), info_->class_name);
  return j.dump();
}

void TrainableQuantizer::check_frozen(size_t trainable_qparams) const {
  QI_CHECK(!(freeze_ && trainable_qparams > 0), info_->class_name,
           ": quantization parameters were created trainable although freeze_quant_params is "
           "set");
}

// ---- variables, forward, conversion ------------------------------------------------------------

int64_t TrainableQuantizer::channels(const Shape& shape) const {
  const char* cls = info_->class_name;
  const int64_t r = static_cast<int64_t>(shape.size());
  int64_t c = 1;
  std::optional<int64_t> axis;
  if (wcfg_ && wcfg_->weights_per_channel_threshold) {
    const int64_t a = wcfg_->weights_channels_axis;
    QI_CHECK(a >= -r && a < r, cls, ": weights_channels_axis must be in [", -r, ", ", r,
             ") for a weight of rank ", r, ", got ", a);
    axis = a < 0 ? a + r : a;
    c = shape[static_cast<size_t>(*axis)];
  }
  if (!group_size_) return c;
  // Groups: one value per (channel, group), the last group possibly shorter (as inferred).
  QI_CHECK(group_axis_ >= -r && group_axis_ < r, cls, ": \"group_axis\" must be in [", -r, ", ",
           r, ") for a weight of rank ", r, ", got ", group_axis_);
  const int64_t ga = group_axis_ < 0 ? group_axis_ + r : group_axis_;
  QI_CHECK(!axis || *axis != ga, cls, ": weights_channels_axis ", wcfg_->weights_channels_axis,
           " and \"group_axis\" ", group_axis_, " are the same axis of a weight of rank ", r,
           "; groups must lie along another axis than the channels");
  return c * ((shape[static_cast<size_t>(ga)] + *group_size_ - 1) / *group_size_);
}

std::optional<int64_t> TrainableQuantizer::weight_axis() const {
  if (!wcfg_ || !wcfg_->weights_per_channel_threshold) return std::nullopt;
  return wcfg_->weights_channels_axis;
}

std::vector<TrainableQuantizer::Variable> TrainableQuantizer::variables(
    const Shape& weight_shape, const float* weight) const {
  const char* cls = info_->class_name;
  const bool uniform = info_->family == TrainableFamily::kUniform;
  const bool soft = info_->training_method == TrainingMethod::SoftRounding;
  const bool lsq = info_->training_method == TrainingMethod::LSQ;
  std::vector<Variable> out;
  if (info_->family == TrainableFamily::kFormat) return format_variables(weight_shape, weight);
  if (acfg_) {
    if (uniform) {
      out.push_back({kMin, {1}, to_float(min_), !freeze_, VariableGroup::QPARAMS});
      out.push_back({kMax, {1}, to_float(max_), !freeze_, VariableGroup::QPARAMS});
    } else {
      out.push_back({kThreshold, {1}, to_float(threshold_), !freeze_, VariableGroup::QPARAMS});
    }
    return out;
  }
  const int64_t c = channels(weight_shape);
  const bool learn = lsq && !freeze_;
  if (!soft) {
    // Grouped: c counts (channel, group) pairs, which the messages then name.
    const char* what = group_size_ ? "(channel, group) pairs" : "channels";
    if (uniform) {
      out.push_back({kMin, {c}, to_float(per_channel(min_, c, cls, "range_min", what)), learn,
                     VariableGroup::QPARAMS});
      out.push_back({kMax, {c}, to_float(per_channel(max_, c, cls, "range_max", what)), learn,
                     VariableGroup::QPARAMS});
    } else {
      out.push_back({kThreshold, {c},
                     to_float(per_channel(threshold_, c, cls, "threshold", what)), learn,
                     VariableGroup::QPARAMS});
    }
    return out;
  }
  QI_CHECK(weight != nullptr, cls, ": soft rounding initializes its variables from the weight's "
           "values; none were given");
  std::optional<std::vector<double>> hi;
  std::vector<double> lo_or_t;
  if (uniform) {
    lo_or_t = per_channel(min_, c, cls, "range_min");
    hi = per_channel(max_, c, cls, "range_max");
    out.push_back({kMin, {c}, to_float(lo_or_t), false, VariableGroup::QPARAMS});
    out.push_back({kMax, {c}, to_float(*hi), false, VariableGroup::QPARAMS});
  } else {
    lo_or_t = per_channel(threshold_, c, cls, "threshold");
    out.push_back({kSoftThreshold, {c}, to_float(lo_or_t), false, VariableGroup::QPARAMS});
  }
  Variable alpha{kAuxvar, weight_shape, {}, true, VariableGroup::WEIGHTS};
  const ConstTensorView w(weight, weight_shape);
  alpha.initial.resize(static_cast<size_t>(w.numel()));
  std::optional<int64_t> axis;
  if (c > 1) {
    const int64_t a = *weight_axis();
    axis = a < 0 ? a + static_cast<int64_t>(weight_shape.size()) : a;
  }
  trainable::soft_rounding_init_alpha(trainable::soft_rounding_init_plan(lo_or_t, hi, num_bits()),
                                      w, TensorView(alpha.initial.data(), weight_shape), axis);
  out.push_back(std::move(alpha));
  return out;
}

TrainableQuantizer::Forward TrainableQuantizer::forward(bool training, const Shape& weight_shape,
                                                        int64_t activation_channel_axis) const {
  const int64_t n = num_bits();
  const bool uniform = info_->family == TrainableFamily::kUniform;
  const bool lsq = training && info_->training_method == TrainingMethod::LSQ;
  const bool pot = method_ == QuantizationMethod::POWER_OF_TWO;
  if (info_->family == TrainableFamily::kFormat)
    return format_forward(training, weight_shape, activation_channel_axis);
  Forward f;
  f.training = training;
  if (info_->training_method == TrainingMethod::SoftRounding) {
    const int64_t c = channels(weight_shape);
    f.op = TrainableOp::kSoftRound;
    f.inputs = {{"alpha", kAuxvar}, {"threshold_or_min", uniform ? kMin : kSoftThreshold}};
    if (uniform) f.inputs.push_back({"max_range", kMax});
    f.variables_require_grad = training;
    f.soft_round = {n, pot, c > 1 ? weight_axis() : std::nullopt};
    return f;
  }
  if (wcfg_) {
    // c: the parameter count (channels, or (channel, group) pairs); LSQ's gradient scale counts
    // them alike. Grouped ops take the channel axis whenever the config is per channel.
    const int64_t c = channels(weight_shape);
    const auto axis = c > 1 || group_size_ ? weight_axis() : std::nullopt;
    f.variables_require_grad = lsq;
    if (uniform) {
      f.op = TrainableOp::kUniformQuant;
      f.inputs = {{"min_range", kMin}, {"max_range", kMax}};
      f.uniform = {n, axis, lsq ? GradMode::kLsq : GradMode::kSte,
                   lsq ? 1.0 / std::sqrt(levels(n) * static_cast<double>(c)) : 1.0,
                   std::nullopt, false, group_size_, group_axis_};
    } else {
      f.op = TrainableOp::kSymmetricQuant;
      f.inputs = {{"threshold", kThreshold}};
      // Training LSQ learns the raw threshold; otherwise the POT rounding applies.
      f.symmetric = {n, true, axis, lsq ? GradMode::kLsq : GradMode::kSte,
                     lsq ? 1.0 / std::sqrt(levels(n - 1) * static_cast<double>(c)) : 1.0,
                     std::nullopt, kMinThreshold, pot && !lsq, group_size_, group_axis_};
    }
    return f;
  }
  // Activations: the variables learn in training (unless frozen); LSQ scales the gradient by
  // the input's channel count, known only at the call.
  f.variables_require_grad = training;
  const std::optional<int64_t> g_axis =
      lsq ? std::optional<int64_t>(activation_channel_axis) : std::nullopt;
  if (uniform) {
    f.op = TrainableOp::kUniformQuant;
    f.inputs = {{"min_range", kMin}, {"max_range", kMax}};
    f.uniform = {n, std::nullopt, lsq ? GradMode::kLsq : GradMode::kSte,
                 lsq ? 1.0 / std::sqrt(levels(n)) : 1.0, g_axis, true, std::nullopt, -1};
  } else {
    f.op = TrainableOp::kSymmetricQuant;
    f.inputs = {{"threshold", kThreshold}};
    f.symmetric = {n, signed_, std::nullopt, lsq ? GradMode::kLsq : GradMode::kSte,
                   lsq ? 1.0 / std::sqrt(levels(n - (signed_ ? 1 : 0))) : 1.0,
                   g_axis, kMinThreshold, pot && !training, std::nullopt, -1};
  }
  return f;
}

std::shared_ptr<BaseInferableQuantizer> TrainableQuantizer::convert(
    const VariableValues& values) const {
  const char* cls = info_->class_name;
  auto get = [&](const char* name) { return variable_value(values, name, cls); };
  if (info_->family == TrainableFamily::kFormat) return format_convert(values);
  const int64_t n = num_bits();
  const bool pot = method_ == QuantizationMethod::POWER_OF_TWO;
  if (info_->family == TrainableFamily::kUniform) {
    const auto& lo = get(kMin);
    const auto& hi = get(kMax);
    QI_CHECK(lo.size() == hi.size(), cls, ": \"", kMin, "\" and \"", kMax,
             "\" must hold as many values, got ", lo.size(), " and ", hi.size());
    std::vector<double> l(lo.size()), h(hi.size());
    for (size_t i = 0; i < lo.size(); ++i)
      std::tie(l[i], h[i]) = rules::trained_range(lo[i], hi[i]);  // as the op uses them
    if (acfg_) return std::make_shared<ActivationUniformInferableQuantizer>(n, l, h);
    if (group_size_) {
      QuantizerParams p = grouped_params(n);
      p.min_range = l;
      p.max_range = h;
      return std::make_shared<WeightsUniformInferableQuantizer>(p);
    }
    return std::make_shared<WeightsUniformInferableQuantizer>(
        n, l, h, wcfg_->weights_per_channel_threshold, weight_axis());
  }
  const bool soft = info_->training_method == TrainingMethod::SoftRounding;
  const auto t = eval_thresholds(get(soft ? kSoftThreshold : kThreshold), pot);
  if (acfg_) {
    if (pot) return std::make_shared<ActivationPOTInferableQuantizer>(n, t, signed_);
    return std::make_shared<ActivationSymmetricInferableQuantizer>(n, t, signed_);
  }
  if (group_size_) {
    QuantizerParams p = grouped_params(n);
    p.threshold = t;
    if (pot) return std::make_shared<WeightsPOTInferableQuantizer>(p);
    return std::make_shared<WeightsSymmetricInferableQuantizer>(p);
  }
  const bool pc = wcfg_->weights_per_channel_threshold;
  if (pot) return std::make_shared<WeightsPOTInferableQuantizer>(n, t, pc, weight_axis());
  return std::make_shared<WeightsSymmetricInferableQuantizer>(n, t, pc, weight_axis());
}

bool TrainableQuantizer::needs_weight() const {
  return replaces_weight() || (info_->family == TrainableFamily::kFormat && wcfg_ &&
                               method_ == QuantizationMethod::NVFP4 &&
                               info_->training_method == TrainingMethod::LSQ && !block_scale_);
}

// ---- the formats (FLOAT, MX, NVFP4) ----------------------------------------------------------

void TrainableQuantizer::parse_format(const QuantizationParams& params) {
  const char* cls = info_->class_name;
  const int64_t n = num_bits();
  const bool activation = info_->target == QuantizationTarget::Activation;
  const bool lsq = info_->training_method == TrainingMethod::LSQ;
  const auto ebits_given = param_int(params, "ebits", cls);
  const int64_t ebits = ebits_given.value_or(n == 8 ? 4 : n == 6 ? 3 : 2);
  for (const auto& f : kFormatNames)
    if (f.n_bits == n && f.ebits == ebits) format_ = f.name;
  QI_CHECK(!format_.empty() && (format_ != "INT8" || method_ == QuantizationMethod::MX), cls,
           ": no ", to_string(method_), " element format has ", n, " bits and \"ebits\" ", ebits,
           "; expected E4M3 (8, 4), E5M2 (8, 5), E3M2 (6, 3), E2M3 (6, 2), E2M1 (4, 2)",
           method_ == QuantizationMethod::MX ? " or INT8 (8, 0)" : "");
  auto known = [&](std::initializer_list<const char*> keys) {
    for (const auto& [key, value] : params) {
      bool ok = key == "ebits";
      for (const char* k : keys) ok = ok || key == k;
      QI_CHECK(ok, cls, ": ", to_string(method_), " quantization params take ",
               str_cat("\"ebits\"", [&] {
                 std::string out;
                 for (const char* k : keys) out += str_cat(", \"", k, "\"");
                 return out;
               }()),
               "; got \"", key, "\"");
    }
  };
  auto positive = [&](const char* key, double v) {
    QI_CHECK(std::isfinite(v) && v > 0, cls, ": \"", key, "\" must be finite and > 0, got ", v);
  };
  switch (method_) {
    case QuantizationMethod::FLOAT: {
      known({"scale", "group_size", "group_axis"});
      scale_ = param_values(params, "scale", cls);
      for (double v : scale_) positive("scale", v);
      QI_CHECK(!activation || scale_.size() == 1, cls,
               ": activation \"scale\" must hold one value, got ", scale_.size());
      group_size_ = param_int(params, "group_size", cls);
      QI_CHECK(!group_size_ || !activation, cls, ": \"group_size\" is taken by weights only");
      QI_CHECK(!group_size_ || (*group_size_ >= 1 && *group_size_ <= INT32_MAX), cls,
               ": \"group_size\" must be in [1, ", INT32_MAX, "], got ", group_size_.value_or(0));
      QI_CHECK(group_size_ || params.find("group_axis") == params.end(), cls,
               ": \"group_axis\" is given without \"group_size\"");
      group_axis_ = param_int(params, "group_axis", cls).value_or(-1);
      return;
    }
    case QuantizationMethod::MX: {
      known({"block_size", "block_axis", "pre_scale"});
      block_size_ = param_int(params, "block_size", cls).value_or(32);
      QI_CHECK(block_size_ >= 1 && block_size_ <= INT32_MAX, cls, ": \"block_size\" must be in "
               "[1, ", INT32_MAX, "], got ", block_size_);
      block_axis_ = param_int(params, "block_axis", cls).value_or(-1);
      if (params.count("pre_scale")) pre_scale_ = param_values(params, "pre_scale", cls).at(0);
      positive("pre_scale", pre_scale_);
      return;
    }
    case QuantizationMethod::NVFP4: {
      known({"block_axis", "tensor_scale", "block_scale", "learn_tensor_scale"});
      QI_CHECK(format_ == "E2M1", cls, ": NVFP4 elements are E2M1 (4 bits, \"ebits\" 2), got ",
               format_);
      QI_CHECK(!(activation && lsq), cls, ": LSQ is not available for NVFP4 activations: their "
               "block scales follow the data, so nothing is left to learn; use STE");
      block_axis_ = param_int(params, "block_axis", cls).value_or(-1);
      if (!activation && lsq) {  // learned block scales: the per-group layout
        QI_CHECK(wcfg_->weights_per_channel_threshold, cls, ": NVFP4 LSQ weights learn one "
                 "block scale per (channel, block of 16); set weights_per_channel_threshold "
                 "(the channels along weights_channels_axis)");
        group_size_ = kernels::kNvfp4BlockSize;
        group_axis_ = block_axis_;
      }
      if (params.count("tensor_scale")) {
        tensor_scale_ = param_values(params, "tensor_scale", cls).at(0);
        positive("tensor_scale", *tensor_scale_);
      }
      if (param_bool(params, "learn_tensor_scale", false, cls))
        QI_CHECK(!activation && lsq && tensor_scale_, cls, ": \"learn_tensor_scale\" is for "
                 "NVFP4 LSQ weights with a \"tensor_scale\" (",
                 activation ? "activations keep theirs fixed"
                            : lsq ? "no tensor_scale was given" : "STE keeps its scales",
                 ")");
      if (params.count("block_scale")) {
        QI_CHECK(!activation && lsq, cls, ": \"block_scale\" is learned by NVFP4 LSQ weights "
                 "only (STE computes the block scales from the data)");
        block_scale_ = param_values(params, "block_scale", cls);
        for (double v : *block_scale_) positive("block_scale", v);
      }
      return;
    }
    default:
      break;
  }
  throw Error(str_cat(cls, ": unexpected method ", to_string(method_)));
}

std::vector<TrainableQuantizer::Variable> TrainableQuantizer::format_variables(
    const Shape& weight_shape, const float* weight) const {
  const char* cls = info_->class_name;
  const bool lsq = info_->training_method == TrainingMethod::LSQ;
  // Weights learn with LSQ; activations learn unless frozen (as the integer quantizers).
  const bool learn = !freeze_ && (acfg_ || lsq);
  std::vector<Variable> out;
  auto tensor_scale = [&](bool trainable) {
    if (tensor_scale_)
      out.push_back({kTensorScale, {1}, {static_cast<float>(*tensor_scale_)}, trainable,
                     VariableGroup::QPARAMS});
  };
  switch (method_) {
    case QuantizationMethod::FLOAT: {
      const int64_t c = acfg_ ? 1 : channels(weight_shape);
      const char* what = group_size_ ? "(channel, group) pairs" : "channels";
      out.push_back({kScale, {c}, to_float(per_channel(scale_, c, cls, "scale", what)), learn,
                     VariableGroup::QPARAMS});
      return out;
    }
    case QuantizationMethod::MX:
      out.push_back({kPreScale, {1}, {static_cast<float>(pre_scale_)}, learn,
                     VariableGroup::QPARAMS});
      return out;
    case QuantizationMethod::NVFP4: {
      if (acfg_ || !lsq) {
        tensor_scale(false);
        return out;
      }
      // One learned block scale per (channel, block of 16 along block_axis).
      const int64_t count = channels(weight_shape);  // (channel, block) pairs
      const int64_t r = static_cast<int64_t>(weight_shape.size());
      const int64_t extent = weight_shape[static_cast<size_t>(group_axis_ < 0 ? group_axis_ + r
                                                                             : group_axis_)];
      QI_CHECK(extent % kernels::kNvfp4BlockSize == 0, cls, ": NVFP4 blocks hold ",
               kernels::kNvfp4BlockSize, " elements, but the weight has ", extent,
               " elements along block_axis ", block_axis_);
      std::vector<float> init;
      if (block_scale_) {
        init = to_float(per_channel(*block_scale_, count, cls, "block_scale",
                                    "(channel, block) pairs"));
      } else {
        QI_CHECK(weight != nullptr, cls, ": NVFP4 LSQ initializes its block scales from the "
                 "weight's values; none were given (or give \"block_scale\")");
        // amax / 6 / tensor_scale of each block (at least E4M3's smallest normal).
        const int64_t ga = group_axis_ < 0 ? group_axis_ + r : group_axis_;
        const auto axis = weight_axis();
        const std::optional<int64_t> ca =
            axis ? std::optional<int64_t>(*axis < 0 ? *axis + r : *axis) : std::nullopt;
        const std::vector<double> amax = detail::group_max(
            ConstTensorView(weight, weight_shape), ca, ga, kernels::kNvfp4BlockSize, 0.0);
        // In float32 as the data-scaled NVFP4 computes them: at first the learned quantizer
        // equals WeightsNVFP4InferableQuantizer bit for bit.
        for (double m : amax) {
          float s = static_cast<float>(m) / 6.f;
          if (tensor_scale_) s = s / static_cast<float>(*tensor_scale_);
          init.push_back(std::max(s, 0.015625f));
        }
      }
      out.push_back({kBlockScale, {count}, std::move(init), learn, VariableGroup::QPARAMS});
      tensor_scale(learn && learns_tensor_scale(wcfg_ ? &*wcfg_ : nullptr));
      return out;
    }
    default:
      break;
  }
  throw Error(str_cat(cls, ": unexpected method ", to_string(method_)));
}


TrainableQuantizer::Forward TrainableQuantizer::format_forward(
    bool training, const Shape& weight_shape, int64_t activation_channel_axis) const {
  const bool lsq = training && info_->training_method == TrainingMethod::LSQ;
  const double L = format_levels(format_);
  Forward f;
  f.training = training;
  f.op = TrainableOp::kFormatQuant;
  f.variables_require_grad = acfg_ ? training : lsq;
  trainable::FormatQuantArgs& a = f.format;
  a.format = format_;
  a.mode = lsq ? GradMode::kLsq : GradMode::kSte;
  // LSQ's gradient scale 1 / sqrt(L * count), count the elements one parameter value scales;
  // activations count the input's channels at the call (grad_scale_axis).
  if (acfg_ && lsq) a.grad_scale_axis = activation_channel_axis;
  auto lsq_scale = [&](int64_t count) {
    return lsq ? 1.0 / std::sqrt(L * static_cast<double>(std::max<int64_t>(count, 1))) : 1.0;
  };
  int64_t numel = 1;
  for (int64_t v : weight_shape) numel *= v;
  switch (method_) {
    case QuantizationMethod::FLOAT: {
      // The scales are small (max|x| / the format's max M): their gradient is the one a range
      // r = M * scale would get, expressed on the scale (dL/dscale / M^2), so that SGD moves a
      // scale as it moves an integer quantizer's threshold.
      const double m = kernels::find_float_format(format_)->max;
      const int64_t c = acfg_ ? 1 : channels(weight_shape);
      a.grad_scale = lsq_scale(c) / (m * m);
      a.scaling = trainable::FormatScaling::kScale;
      f.inputs = {{"scale", kScale}};
      if (wcfg_) {
        a.channel_axis = c > 1 || group_size_ ? weight_axis() : std::nullopt;
        a.group_size = group_size_;
        a.group_axis = group_axis_;
      }
      return f;
    }
    case QuantizationMethod::MX:
      // One pre-scale for the whole tensor: LSQ counts its elements (weights).
      a.grad_scale = lsq_scale(acfg_ ? 1 : numel);
      a.scaling = trainable::FormatScaling::kMx;
      f.inputs = {{"scale", kPreScale}};
      a.group_size = block_size_;
      a.group_axis = block_axis_;
      return f;
    case QuantizationMethod::NVFP4:
      a.group_size = kernels::kNvfp4BlockSize;
      a.group_axis = block_axis_;
      if (wcfg_ && info_->training_method == TrainingMethod::LSQ) {
        // Learned block scales b (in eval too: the converted quantizer holds them) and, when
        // the config asks, tensor scale t. As for FLOAT, each gets the gradient of the range it
        // sets, expressed on itself: a block's range 6 t b (so dL/db / (6 t)^2, t at its
        // configured value) and the tensor's largest range 6 * 448 * t (dL/dt / 2688^2); LSQ
        // counts a block's 16 elements for b and the whole weight for t.
        const double t = tensor_scale_.value_or(1.0);
        const double t_range = 6.0 * kernels::find_float_format("E4M3")->max;
        a.scaling = trainable::FormatScaling::kFp8Scale;
        a.channel_axis = weight_axis();
        a.grad_scale = lsq_scale(channels(weight_shape)) / (36.0 * t * t);
        if (learns_tensor_scale(wcfg_ ? &*wcfg_ : nullptr))
          a.tensor_grad_scale = lsq_scale(numel) / (t_range * t_range);
        f.inputs.push_back({"scale", kBlockScale});
      } else {
        a.scaling = trainable::FormatScaling::kNvfp4;
        f.variables_require_grad = false;  // the tensor scale is fixed
      }
      if (tensor_scale_) f.inputs.push_back({"tensor_scale", kTensorScale});
      return f;
    default:
      break;
  }
  throw Error(str_cat(info_->class_name, ": unexpected method ", to_string(method_)));
}

std::shared_ptr<BaseInferableQuantizer> TrainableQuantizer::format_convert(
    const VariableValues& values) const {
  const char* cls = info_->class_name;
  auto get = [&](const char* name) { return variable_value(values, name, cls); };
  QuantizerParams p;
  p.num_bits = num_bits();
  p.format = format_;
  if (wcfg_) {
    p.per_channel = wcfg_->weights_per_channel_threshold;
    p.channel_axis = weight_axis();
  }
  if (tensor_scale_) p.tensor_scale = get(kTensorScale)[0];
  switch (method_) {
    case QuantizationMethod::FLOAT: {
      for (float v : get(kScale)) p.scale.push_back(v);
      if (acfg_) return std::make_shared<ActivationFloatInferableQuantizer>(p);
      p.group_size = group_size_;
      p.group_axis = group_axis_;
      return std::make_shared<WeightsFloatInferableQuantizer>(p);
    }
    case QuantizationMethod::MX: {
      p.block_size = block_size_;
      p.block_axis = block_axis_;
      const float pre = get(kPreScale)[0];
      if (pre != 1.f) p.tensor_scale = pre;
      if (acfg_) return std::make_shared<ActivationMXInferableQuantizer>(p);
      return std::make_shared<WeightsMXInferableQuantizer>(p);
    }
    case QuantizationMethod::NVFP4: {
      p.block_axis = block_axis_;
      if (acfg_) return std::make_shared<ActivationNVFP4InferableQuantizer>(p);
      if (info_->training_method == TrainingMethod::LSQ) {
        // The E4M3 values the forward uses.
        std::vector<double> b;
        for (float v : get(kBlockScale)) b.push_back(kernels::scalar::nvfp4_block_scale(v));
        p.block_scales = b;
        if (!p.channel_axis) p.channel_axis = 0;  // one (channel, block) layout: channel 0
      }
      return std::make_shared<WeightsNVFP4InferableQuantizer>(p);
    }
    default:
      break;
  }
  throw Error(str_cat(cls, ": unexpected method ", to_string(method_)));
}

QuantizerParams TrainableQuantizer::grouped_params(int64_t num_bits) const {
  QuantizerParams p;
  p.num_bits = num_bits;
  p.per_channel = wcfg_->weights_per_channel_threshold;
  p.channel_axis = weight_axis();
  p.group_size = group_size_;
  p.group_axis = group_axis_;
  return p;
}

void check_fits_weight(const BaseQuantizer& q, const Shape& shape, const float* weight) {
  const auto rank = static_cast<int64_t>(shape.size());
  if (const auto* inf = dynamic_cast<const BaseInferableQuantizer*>(&q)) {
    const QuantizerParams& p = inf->params();
    if (p.input_rank)
      QI_CHECK(*p.input_rank == rank, inf->class_name(), ": input_rank is ", *p.input_rank,
               " but the weight has rank ", rank);
    if (p.per_channel && p.channel_axis) inf->resolve_channel_axis(rank);  // even for one value
    // The rules apply() enforces on a tensor of this shape (channels, groups).
    kernels::check_plan_fits(inf->class_name(), inf->plan(),
                             p.per_channel ? p.channel_axis : std::nullopt, p.input_rank, shape);
    return;
  }
  if (const auto* policy = dynamic_cast<const TrainableQuantizer*>(&q)) {
    policy->variables(shape, weight);  // the same checks as at initialization
    return;
  }
  QI_CHECK(false, q.class_name(), ": not a quantizer of qi's core (no weight rules to check)");
}

}  // namespace qi
