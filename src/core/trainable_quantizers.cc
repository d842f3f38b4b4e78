// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The policy of every trainable quantizer (the behaviour of MCT's STE, LSQ and soft
// rounding quantizers, with qi's fixes), in one place for all front ends.
#include "qi/trainable_quantizers.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>

#include "core/json_util.h"
#include "core/param_rules.h"
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

// `v` for `channels` channels: one value broadcasts.
std::vector<double> per_channel(std::vector<double> v, int64_t channels, const char* cls,
                                const char* what, const char* unit = "channels") {
  if (v.size() == 1 && channels > 1) v.assign(static_cast<size_t>(channels), v[0]);
  QI_CHECK(static_cast<int64_t>(v.size()) == channels, cls, ": ", what, " holds ", v.size(),
           " values but the tensor has ", channels, " ", unit);
  return v;
}

std::vector<float> to_float(const std::vector<double>& v) { return {v.begin(), v.end()}; }

double levels(int64_t bits) { return std::ldexp(1.0, static_cast<int>(bits)) - 1; }

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
  auto get = [&](const char* name) -> const std::vector<float>& {
    auto it = values.find(name);
    QI_CHECK(it != values.end(), cls, ": convert needs the value of variable \"", name, "\"");
    QI_CHECK(!it->second.empty(), cls, ": variable \"", name, "\" holds no values");
    return it->second;
  };
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

bool TrainableQuantizer::needs_weight() const { return replaces_weight(); }

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
