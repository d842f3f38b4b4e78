// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The trainable quantizers of the torch layer (REFERENCE.md 8, 9.2). Each keeps its parameters
// as module parameters, runs its forward through the qi ops, and converts to an inferable
// quantizer whose output equals its eval-mode output bit for bit.
#include <algorithm>
#include <cmath>
#include <variant>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "kernels/plan.h"
#include "qi/error.h"
#include "qi/torch/ops.h"
#include "qi/torch/quantizers.h"
#include "qi/trainable_math.h"

namespace qi::torch {
namespace {

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

bool param_bool(const QuantizationParams& params, const char* key, bool fallback,
                const char* cls) {
  auto it = params.find(key);
  if (it == params.end()) return fallback;
  if (const auto* b = std::get_if<bool>(&it->second)) return *b;
  throw Error(str_cat(cls, ": quantization params: \"", key, "\" must be a boolean"));
}

at::Tensor to_tensor(const std::vector<double>& v) {
  at::Tensor t = ::torch::empty({static_cast<int64_t>(v.size())}, ::torch::kFloat);
  for (size_t i = 0; i < v.size(); ++i) t[i] = static_cast<float>(v[i]);
  return t;
}

std::vector<double> to_values(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(::torch::kFloat).reshape({-1}).contiguous();
  const float* p = c.const_data_ptr<float>();
  return std::vector<double>(p, p + c.numel());
}

// Per-channel values for `channels` channels (one value broadcasts).
std::vector<double> per_channel(std::vector<double> v, int64_t channels, const char* cls,
                                const char* what) {
  if (v.size() == 1 && channels > 1) v.assign(channels, v[0]);
  QI_CHECK(static_cast<int64_t>(v.size()) == channels, cls, ": ", what, " holds ", v.size(),
           " values but the tensor has ", channels, " channels");
  return v;
}

int64_t channel_count(at::IntArrayRef shape, bool per_ch, int64_t axis, const char* cls) {
  if (!per_ch) return 1;
  const int64_t r = static_cast<int64_t>(shape.size());
  QI_CHECK(axis >= -r && axis < r, cls, ": weights_channels_axis must be in [", -r, ", ", r,
           ") for a weight of rank ", r, ", got ", axis);
  return shape[axis < 0 ? axis + r : axis];
}

std::string weights_config_json(const TrainableQuantizerWeightsConfig& cfg, bool freeze) {
  nlohmann::json j;
  j["quantization_config"] = nlohmann::json::parse(cfg.get_config());
  j["freeze_quant_params"] = freeze;
  return j.dump();
}

std::string activation_config_json(const TrainableQuantizerActivationConfig& cfg, bool freeze) {
  nlohmann::json j;
  j["quantization_config"] = nlohmann::json::parse(cfg.get_config());
  j["freeze_quant_params"] = freeze;
  return j.dump();
}

// ---- weights: symmetric / POT (STE, LSQ) -----------------------------------------------------

class SymmetricWeightQuantizer : public BaseTrainableQuantizer {
 public:
  SymmetricWeightQuantizer(const char* cls, TrainingMethod tm,
                           const TrainableQuantizerWeightsConfig& cfg, bool freeze)
      : BaseTrainableQuantizer(QuantizationTarget::Weights, cfg.weights_quantization_method, tm,
                               freeze),
        cls_(cls),
        cfg_(cfg) {
    cfg.validate();
    pot_ = cfg.weights_quantization_method == QuantizationMethod::POWER_OF_TWO;
    threshold_ = param_values(cfg.weights_quantization_params, "threshold", cls);
    // POT thresholds start as powers of two (MCT "POT-ify" at init).
    if (pot_)
      for (double& t : threshold_) t = power_of_two_ceil(t, kMinThreshold);
  }
  const char* class_name() const override { return cls_; }

  void initialize_quantization(at::IntArrayRef shape, const std::string& name,
                               ::torch::nn::Module& module) override {
    const int64_t channels = channel_count(shape, cfg_.weights_per_channel_threshold,
                                           cfg_.weights_channels_axis, cls_);
    const auto t = per_channel(threshold_, channels, cls_, "threshold");
    const bool learn = training_method() == TrainingMethod::LSQ && !freeze_quant_params();
    add_quantizer_variable(module, name, "ptq_threshold_tensor", to_tensor(t), learn,
                           VariableGroup::QPARAMS);
    channels_ = channels;
  }

  at::Tensor forward(const at::Tensor& x, bool training) override {
    const int64_t n = cfg_.weights_n_bits;
    if (training && training_method() == TrainingMethod::LSQ) {
      const double max_int = std::ldexp(1.0, static_cast<int>(n - 1)) - 1;
      const double g = 1.0 / std::sqrt(max_int * static_cast<double>(channels_));
      return symmetric_quant(x, at::clamp_min(variable("ptq_threshold_tensor"), kMinThreshold),
                             n, true, axis(), "lsq", g);
    }
    return symmetric_quant(x, to_tensor(eval_threshold()), n, true, axis(), "ste", 1.0);
  }

  std::shared_ptr<BaseInferableQuantizer> convert_to_inferable() const override {
    const auto ax = cfg_.weights_per_channel_threshold
                        ? std::optional<int64_t>(cfg_.weights_channels_axis)
                        : std::nullopt;
    if (pot_)
      return std::make_shared<WeightsPOTInferableQuantizer>(
          cfg_.weights_n_bits, eval_threshold(), cfg_.weights_per_channel_threshold, ax);
    return std::make_shared<WeightsSymmetricInferableQuantizer>(
        cfg_.weights_n_bits, eval_threshold(), cfg_.weights_per_channel_threshold, ax);
  }

 protected:
  std::string config_json() const override { return weights_config_json(cfg_, freeze_quant_params()); }

 private:
  std::optional<int64_t> axis() const {
    return cfg_.weights_per_channel_threshold && channels_ > 1
               ? std::optional<int64_t>(cfg_.weights_channels_axis)
               : std::nullopt;
  }
  // The thresholds the eval forward and the converted quantizer use.
  std::vector<double> eval_threshold() const {
    std::vector<double> t = to_values(variable("ptq_threshold_tensor"));
    for (double& v : t) v = pot_ ? power_of_two_ceil(v, kMinThreshold) : std::max(v, kMinThreshold);
    // Through float32, as the training forward sees it.
    for (double& v : t) v = static_cast<float>(v);
    return t;
  }

  const char* cls_;
  TrainableQuantizerWeightsConfig cfg_;
  bool pot_ = false;
  std::vector<double> threshold_;
  int64_t channels_ = 1;
};

// ---- weights: uniform (STE, LSQ) ---------------------------------------------------------------

class UniformWeightQuantizer : public BaseTrainableQuantizer {
 public:
  UniformWeightQuantizer(const char* cls, TrainingMethod tm,
                         const TrainableQuantizerWeightsConfig& cfg, bool freeze)
      : BaseTrainableQuantizer(QuantizationTarget::Weights, cfg.weights_quantization_method, tm,
                               freeze),
        cls_(cls),
        cfg_(cfg) {
    cfg.validate();
    min_ = param_values(cfg.weights_quantization_params, "range_min", cls);
    max_ = param_values(cfg.weights_quantization_params, "range_max", cls);
  }
  const char* class_name() const override { return cls_; }

  void initialize_quantization(at::IntArrayRef shape, const std::string& name,
                               ::torch::nn::Module& module) override {
    channels_ = channel_count(shape, cfg_.weights_per_channel_threshold,
                              cfg_.weights_channels_axis, cls_);
    const bool learn = training_method() == TrainingMethod::LSQ && !freeze_quant_params();
    add_quantizer_variable(module, name, "min", to_tensor(per_channel(min_, channels_, cls_, "range_min")),
                           learn, VariableGroup::QPARAMS);
    add_quantizer_variable(module, name, "max", to_tensor(per_channel(max_, channels_, cls_, "range_max")),
                           learn, VariableGroup::QPARAMS);
  }

  at::Tensor forward(const at::Tensor& x, bool training) override {
    const int64_t n = cfg_.weights_n_bits;
    const bool lsq = training && training_method() == TrainingMethod::LSQ;
    const double levels = std::ldexp(1.0, static_cast<int>(n)) - 1;
    const double g = lsq ? 1.0 / std::sqrt(levels * static_cast<double>(channels_)) : 1.0;
    const at::Tensor& lo = variable("min");
    const at::Tensor& hi = variable("max");
    return uniform_quant(x, training ? lo : lo.detach(), training ? hi : hi.detach(), n, axis(),
                         lsq ? "lsq" : "ste", g, false);
  }

  std::shared_ptr<BaseInferableQuantizer> convert_to_inferable() const override {
    const auto ax = cfg_.weights_per_channel_threshold
                        ? std::optional<int64_t>(cfg_.weights_channels_axis)
                        : std::nullopt;
    return std::make_shared<WeightsUniformInferableQuantizer>(
        cfg_.weights_n_bits, to_values(variable("min")), to_values(variable("max")),
        cfg_.weights_per_channel_threshold, ax);
  }

 protected:
  std::string config_json() const override { return weights_config_json(cfg_, freeze_quant_params()); }

 private:
  std::optional<int64_t> axis() const {
    return cfg_.weights_per_channel_threshold && channels_ > 1
               ? std::optional<int64_t>(cfg_.weights_channels_axis)
               : std::nullopt;
  }
  const char* cls_;
  TrainableQuantizerWeightsConfig cfg_;
  std::vector<double> min_, max_;
  int64_t channels_ = 1;
};

// ---- activations: symmetric / POT (STE, LSQ) ---------------------------------------------------

class SymmetricActivationQuantizer : public BaseTrainableQuantizer {
 public:
  SymmetricActivationQuantizer(const char* cls, TrainingMethod tm,
                               const TrainableQuantizerActivationConfig& cfg, bool freeze)
      : BaseTrainableQuantizer(QuantizationTarget::Activation,
                               cfg.activation_quantization_method, tm, freeze),
        cls_(cls),
        cfg_(cfg) {
    cfg.validate();
    pot_ = cfg.activation_quantization_method == QuantizationMethod::POWER_OF_TWO;
    const auto t = param_values(cfg.activation_quantization_params, "threshold", cls);
    QI_CHECK(t.size() == 1, cls, ": activation \"threshold\" must hold one value, got ", t.size());
    threshold_ = t[0];
    signed_ = param_bool(cfg.activation_quantization_params, "is_signed", true, cls);
  }
  const char* class_name() const override { return cls_; }

  void initialize_quantization(at::IntArrayRef, const std::string& name,
                               ::torch::nn::Module& module) override {
    add_quantizer_variable(module, name, "threshold", to_tensor({threshold_}),
                           !freeze_quant_params(), VariableGroup::QPARAMS);
  }

  at::Tensor forward(const at::Tensor& x, bool training) override {
    const int64_t n = cfg_.activation_n_bits;
    if (training) {
      const bool lsq = training_method() == TrainingMethod::LSQ;
      double g = 1.0;
      if (lsq) {
        const double max_int = std::ldexp(1.0, static_cast<int>(n - (signed_ ? 1 : 0))) - 1;
        const double channels = x.dim() >= 2 ? static_cast<double>(x.size(1)) : 1.0;
        g = 1.0 / std::sqrt(max_int * channels);
      }
      return symmetric_quant(x, at::clamp_min(variable("threshold"), kMinThreshold), n, signed_,
                             std::nullopt, lsq ? "lsq" : "ste", g);
    }
    return symmetric_quant(x, to_tensor({eval_threshold()}), n, signed_, std::nullopt, "ste", 1.0);
  }

  std::shared_ptr<BaseInferableQuantizer> convert_to_inferable() const override {
    if (pot_)
      return std::make_shared<ActivationPOTInferableQuantizer>(cfg_.activation_n_bits,
                                                               std::vector<double>{eval_threshold()},
                                                               signed_);
    return std::make_shared<ActivationSymmetricInferableQuantizer>(
        cfg_.activation_n_bits, std::vector<double>{eval_threshold()}, signed_);
  }

 protected:
  std::string config_json() const override {
    return activation_config_json(cfg_, freeze_quant_params());
  }

 private:
  double eval_threshold() const {
    const double t = to_values(variable("threshold"))[0];
    return static_cast<float>(pot_ ? power_of_two_ceil(t, kMinThreshold) : std::max(t, kMinThreshold));
  }
  const char* cls_;
  TrainableQuantizerActivationConfig cfg_;
  bool pot_ = false, signed_ = true;
  double threshold_ = 1.0;
};

// ---- activations: uniform (STE, LSQ) -----------------------------------------------------------

class UniformActivationQuantizer : public BaseTrainableQuantizer {
 public:
  UniformActivationQuantizer(const char* cls, TrainingMethod tm,
                             const TrainableQuantizerActivationConfig& cfg, bool freeze)
      : BaseTrainableQuantizer(QuantizationTarget::Activation,
                               cfg.activation_quantization_method, tm, freeze),
        cls_(cls),
        cfg_(cfg) {
    cfg.validate();
    const auto lo = param_values(cfg.activation_quantization_params, "range_min", cls);
    const auto hi = param_values(cfg.activation_quantization_params, "range_max", cls);
    QI_CHECK(lo.size() == 1 && hi.size() == 1, cls,
             ": activation \"range_min\"/\"range_max\" must hold one value each");
    min_ = lo[0];
    max_ = hi[0];
  }
  const char* class_name() const override { return cls_; }

  void initialize_quantization(at::IntArrayRef, const std::string& name,
                               ::torch::nn::Module& module) override {
    add_quantizer_variable(module, name, "min", to_tensor({min_}), !freeze_quant_params(),
                           VariableGroup::QPARAMS);
    add_quantizer_variable(module, name, "max", to_tensor({max_}), !freeze_quant_params(),
                           VariableGroup::QPARAMS);
  }

  at::Tensor forward(const at::Tensor& x, bool training) override {
    const int64_t n = cfg_.activation_n_bits;
    const bool lsq = training && training_method() == TrainingMethod::LSQ;
    double g = 1.0;
    if (lsq) {
      const double channels = x.dim() >= 2 ? static_cast<double>(x.size(1)) : 1.0;
      g = 1.0 / std::sqrt((std::ldexp(1.0, static_cast<int>(n)) - 1) * channels);
    }
    const at::Tensor& lo = variable("min");
    const at::Tensor& hi = variable("max");
    return uniform_quant(x, training ? lo : lo.detach(), training ? hi : hi.detach(), n,
                         std::nullopt, lsq ? "lsq" : "ste", g, true);
  }

  std::shared_ptr<BaseInferableQuantizer> convert_to_inferable() const override {
    return std::make_shared<ActivationUniformInferableQuantizer>(
        cfg_.activation_n_bits, to_values(variable("min")), to_values(variable("max")));
  }

 protected:
  std::string config_json() const override {
    return activation_config_json(cfg_, freeze_quant_params());
  }

 private:
  const char* cls_;
  TrainableQuantizerActivationConfig cfg_;
  double min_ = 0, max_ = 1;
};

// ---- soft rounding (GPTQ) ----------------------------------------------------------------------

// Finds the float weight the wrapper registered under `name`.
at::Tensor weight_of(::torch::nn::Module& module, const std::string& name, const char* cls) {
  for (const auto& item : module.named_parameters(/*recurse=*/false))
    if (item.key() == name) return item.value();
  throw Error(str_cat(cls, ": initialize_quantization needs the weight \"", name,
                      "\" registered on the module"));
}

class SoftRoundingQuantizer : public BaseTrainableQuantizer {
 public:
  SoftRoundingQuantizer(const char* cls, const TrainableQuantizerWeightsConfig& cfg, bool freeze)
      : BaseTrainableQuantizer(QuantizationTarget::Weights, cfg.weights_quantization_method,
                               TrainingMethod::SoftRounding, freeze),
        cls_(cls),
        cfg_(cfg) {
    cfg.validate();
    uniform_ = cfg.weights_quantization_method == QuantizationMethod::UNIFORM;
    pot_ = cfg.weights_quantization_method == QuantizationMethod::POWER_OF_TWO;
    if (uniform_) {
      min_ = param_values(cfg.weights_quantization_params, "range_min", cls);
      max_ = param_values(cfg.weights_quantization_params, "range_max", cls);
    } else {
      threshold_ = param_values(cfg.weights_quantization_params, "threshold", cls);
    }
  }
  const char* class_name() const override { return cls_; }
  bool replaces_weight() const override { return true; }

  void initialize_quantization(at::IntArrayRef shape, const std::string& name,
                               ::torch::nn::Module& module) override {
    channels_ = channel_count(shape, cfg_.weights_per_channel_threshold,
                              cfg_.weights_channels_axis, cls_);
    const at::Tensor w = weight_of(module, name, cls_);
    const auto plan = make_plan(/*for_init=*/true);
    at::Tensor alpha = ::torch::empty(w.sizes(), ::torch::kFloat);
    {
      const at::Tensor wc = w.detach().contiguous();
      trainable::soft_rounding_init_alpha(
          plan, ConstTensorView(wc.const_data_ptr<float>(), wc.sizes().vec()),
          TensorView(alpha.mutable_data_ptr<float>(), alpha.sizes().vec()), axis_index(w.dim()));
    }
    if (uniform_) {
      add_quantizer_variable(module, name, "min", to_tensor(per_channel(min_, channels_, cls_, "range_min")),
                             false, VariableGroup::QPARAMS);
      add_quantizer_variable(module, name, "max", to_tensor(per_channel(max_, channels_, cls_, "range_max")),
                             false, VariableGroup::QPARAMS);
    } else {
      add_quantizer_variable(module, name, "ptq_threshold",
                             to_tensor(per_channel(threshold_, channels_, cls_, "threshold")), false,
                             VariableGroup::QPARAMS);
    }
    add_quantizer_variable(module, name, "auxvar_tensor", alpha, true, VariableGroup::WEIGHTS);
  }

  at::Tensor forward(const at::Tensor& w, bool training) override {
    const auto plan = make_plan(/*for_init=*/false);
    std::vector<double> delta(plan.delta.begin(), plan.delta.end());
    std::vector<double> offset(plan.offset.begin(), plan.offset.end());
    const auto ax = channels_ > 1 ? std::optional<int64_t>(cfg_.weights_channels_axis) : std::nullopt;
    return soft_round(w, variable("auxvar_tensor"), to_tensor(delta), to_tensor(offset), plan.qmin,
                      plan.qmax, ax, training);
  }

  std::shared_ptr<BaseInferableQuantizer> convert_to_inferable() const override {
    const auto ax = cfg_.weights_per_channel_threshold
                        ? std::optional<int64_t>(cfg_.weights_channels_axis)
                        : std::nullopt;
    const int64_t n = cfg_.weights_n_bits;
    if (uniform_)
      return std::make_shared<WeightsUniformInferableQuantizer>(
          n, to_values(variable("min")), to_values(variable("max")),
          cfg_.weights_per_channel_threshold, ax);
    if (pot_)
      return std::make_shared<WeightsPOTInferableQuantizer>(n, thresholds(), cfg_.weights_per_channel_threshold, ax);
    return std::make_shared<WeightsSymmetricInferableQuantizer>(n, thresholds(),
                                                                cfg_.weights_per_channel_threshold, ax);
  }

 protected:
  std::string config_json() const override { return weights_config_json(cfg_, freeze_quant_params()); }

 private:
  std::optional<int64_t> axis_index(int64_t rank) const {
    if (channels_ <= 1) return std::nullopt;
    const int64_t a = cfg_.weights_channels_axis;
    return a < 0 ? a + rank : a;
  }
  std::vector<double> thresholds() const {
    std::vector<double> t = to_values(variable("ptq_threshold"));
    for (double& v : t) v = static_cast<float>(pot_ ? power_of_two_ceil(v, kMinThreshold) : v);
    return t;
  }
  // Init uses the thresholds as stored (MCT) and, for uniform, the un-adjusted range.
  trainable::SoftRoundingPlan make_plan(bool for_init) const {
    trainable::SoftRoundingPlan p;
    const int64_t n = cfg_.weights_n_bits;
    if (uniform_) {
      const auto lo = for_init ? per_channel(min_, channels_, cls_, "range_min") : to_values(variable("min"));
      const auto hi = for_init ? per_channel(max_, channels_, cls_, "range_max") : to_values(variable("max"));
      p.qmin = 0.f;
      p.qmax = static_cast<float>(std::ldexp(1.0, static_cast<int>(n)) - 1);
      if (for_init) {
        for (size_t c = 0; c < lo.size(); ++c) {
          p.delta.push_back(static_cast<float>((hi[c] - lo[c]) / p.qmax));
          p.offset.push_back(static_cast<float>(lo[c]));
          p.zero_point.push_back(0.f);
        }
      } else {
        // The inferable quantizer's own grid: same scale and zero point bits.
        const auto plan = kernels::uniform_torch_plan(lo, hi, n, false);
        for (size_t c = 0; c < lo.size(); ++c) {
          float a, b;
          kernels::adjust_range_float(static_cast<float>(lo[c]), static_cast<float>(hi[c]), n, &a, &b);
          p.delta.push_back(plan.scale[c]);
          p.offset.push_back(a);
          p.zero_point.push_back(plan.zero_point[c]);
        }
      }
    } else {
      const auto t = for_init ? per_channel(threshold_, channels_, cls_, "threshold") : thresholds();
      const auto plan = kernels::symmetric_torch_plan(t, n, true);
      p.qmin = plan.qmin;
      p.qmax = plan.qmax;
      p.delta = plan.scale;
      p.offset.assign(t.size(), 0.f);
      p.zero_point.assign(t.size(), 0.f);
    }
    return p;
  }

  const char* cls_;
  TrainableQuantizerWeightsConfig cfg_;
  bool uniform_ = false, pot_ = false;
  std::vector<double> threshold_, min_, max_;
  int64_t channels_ = 1;
};

// ---- registry ----------------------------------------------------------------------------------

#define QI_WEIGHTS_CLASS(Name, Impl, TM, ...)                                                  \
  TrainableQuantizerClass {                                                                    \
    #Name, QuantizationTarget::Weights, TrainingMethod::TM, {__VA_ARGS__},                     \
        [](const TrainableQuantizerWeightsConfig& c, bool f)                                   \
            -> std::shared_ptr<BaseTrainableQuantizer> {                                       \
          return std::make_shared<Impl>(#Name, TrainingMethod::TM, c, f);                      \
        },                                                                                     \
        [](const TrainableQuantizerActivationConfig&, bool)                                    \
            -> std::shared_ptr<BaseTrainableQuantizer> {                                       \
          throw Error(#Name ": expected weight quantization configuration; received "          \
                            "activation quantization instead.");                              \
        }                                                                                      \
  }
#define QI_ACTIVATION_CLASS(Name, Impl, TM, ...)                                               \
  TrainableQuantizerClass {                                                                    \
    #Name, QuantizationTarget::Activation, TrainingMethod::TM, {__VA_ARGS__},                  \
        [](const TrainableQuantizerWeightsConfig&, bool)                                       \
            -> std::shared_ptr<BaseTrainableQuantizer> {                                       \
          throw Error(#Name ": expected activation quantization configuration; received "      \
                            "weight quantization instead.");                                   \
        },                                                                                     \
        [](const TrainableQuantizerActivationConfig& c, bool f)                                \
            -> std::shared_ptr<BaseTrainableQuantizer> {                                       \
          return std::make_shared<Impl>(#Name, TrainingMethod::TM, c, f);                      \
        }                                                                                      \
  }

class SoftRoundingAdapter : public SoftRoundingQuantizer {
 public:
  SoftRoundingAdapter(const char* cls, TrainingMethod, const TrainableQuantizerWeightsConfig& c,
                      bool f)
      : SoftRoundingQuantizer(cls, c, f) {}
};

constexpr auto kPot = QuantizationMethod::POWER_OF_TWO;
constexpr auto kSym = QuantizationMethod::SYMMETRIC;
constexpr auto kUni = QuantizationMethod::UNIFORM;

// Rebuilds a trainable quantizer from the "config" object of its to_json().
std::shared_ptr<BaseQuantizer> from_config(const TrainableQuantizerClass& cls,
                                           const std::string& config_text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(config_text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(str_cat(cls.class_name, ": malformed JSON: ", e.what()));
  }
  QI_CHECK(j.is_object() && j.contains("quantization_config") &&
               j["quantization_config"].is_object(),
           cls.class_name, ": config must be an object with \"quantization_config\"");
  QI_CHECK(!j.contains("freeze_quant_params") || j["freeze_quant_params"].is_boolean(),
           cls.class_name, ": \"freeze_quant_params\" must be a boolean");
  const bool freeze = j.value("freeze_quant_params", false);
  const std::string cfg = j["quantization_config"].dump();
  // The class must serve the config's method (REFERENCE.md 4.5).
  auto check_method = [&](QuantizationMethod m) {
    std::string expected;
    for (auto e : cls.methods) expected += (expected.empty() ? "" : ", ") + to_string(e);
    QI_CHECK(std::find(cls.methods.begin(), cls.methods.end(), m) != cls.methods.end(),
             cls.class_name, ": quantization method mismatch: expected one of [", expected,
             "], received ", to_string(m));
  };
  if (cls.target == QuantizationTarget::Weights) {
    const auto c = TrainableQuantizerWeightsConfig::from_config(cfg);
    check_method(c.weights_quantization_method);
    return cls.make_weights(c, freeze);
  }
  const auto c = TrainableQuantizerActivationConfig::from_config(cfg);
  check_method(c.activation_quantization_method);
  return cls.make_activation(c, freeze);
}

}  // namespace

const std::vector<TrainableQuantizerClass>& trainable_quantizer_classes() {
  static const std::vector<TrainableQuantizerClass> classes = [] {
    std::vector<TrainableQuantizerClass> v = {
        QI_WEIGHTS_CLASS(STEWeightQATQuantizer, SymmetricWeightQuantizer, STE, kPot, kSym),
        QI_WEIGHTS_CLASS(STEUniformWeightQATQuantizer, UniformWeightQuantizer, STE, kUni),
        QI_WEIGHTS_CLASS(LSQWeightQATQuantizer, SymmetricWeightQuantizer, LSQ, kPot, kSym),
        QI_WEIGHTS_CLASS(LSQUniformWeightQATQuantizer, UniformWeightQuantizer, LSQ, kUni),
        QI_ACTIVATION_CLASS(STESymmetricActivationTrainableQuantizer, SymmetricActivationQuantizer,
                            STE, kPot, kSym),
        QI_ACTIVATION_CLASS(STEUniformActivationTrainableQuantizer, UniformActivationQuantizer,
                            STE, kUni),
        QI_ACTIVATION_CLASS(LSQSymmetricActivationTrainableQuantizer, SymmetricActivationQuantizer,
                            LSQ, kPot, kSym),
        QI_ACTIVATION_CLASS(LSQUniformActivationTrainableQuantizer, UniformActivationQuantizer,
                            LSQ, kUni),
        QI_WEIGHTS_CLASS(SymmetricSoftRoundingGPTQ, SoftRoundingAdapter, SoftRounding, kPot, kSym),
        QI_WEIGHTS_CLASS(UniformSoftRoundingGPTQ, SoftRoundingAdapter, SoftRounding, kUni),
    };
    return v;
  }();
  static const bool registered = [] {
    for (const auto& c : classes) {
      const TrainableQuantizerClass* cls = &c;
      register_quantizer_class(c.class_name, [cls](const std::string& config) {
        return from_config(*cls, config);
      });
    }
    return true;
  }();
  (void)registered;
  return classes;
}

// Registers the classes for quantizer_from_json as soon as the library loads.
static const bool kTrainableClassesRegistered = (trainable_quantizer_classes(), true);

}  // namespace qi::torch
