// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The C++ front end's quantizers: running any quantizer on a tensor, and the trainable
// quantizers (STE, LSQ, soft rounding; REFERENCE.md 7, 8, 9) with their learnable variables.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "qi/base_quantizer.h"
#include "qi/configs.h"
#include "qi/inferable_quantizers.h"

namespace qi::torch {

// Q(x) for any quantizer a dispatcher holds: inferable quantizers run the qi::fake_quant op,
// trainable ones their own forward (training selects the training-time behaviour).
at::Tensor quantize(BaseQuantizer& quantizer, const at::Tensor& x, bool training);

// Base of the trainable quantizers. A trainable quantizer owns learnable variables that it
// registers on the module that wraps the layer (initialize_quantization), computes its forward
// through the qi ops (gradients from the core's fused backward), and converts to the inferable
// quantizer whose output equals its eval-mode output bit for bit.
class BaseTrainableQuantizer : public BaseQuantizer {
 public:
  struct Variable {
    at::Tensor tensor;
    VariableGroup group;
  };

  bool is_trainable() const override { return true; }
  QuantizationTarget quantization_target() const override { return target_; }
  QuantizationMethod quantization_method() const override { return method_; }
  std::string identifier() const override { return to_string(training_method_); }
  TrainingMethod training_method() const { return training_method_; }
  bool freeze_quant_params() const { return freeze_quant_params_; }

  // Creates the variables for a tensor of `shape` (weights) or for layer outputs (activations:
  // shape may be empty), named "<name>_<suffix>", and registers them on `module`.
  virtual void initialize_quantization(at::IntArrayRef shape, const std::string& name,
                                       ::torch::nn::Module& module) = 0;
  // Quantizes x. Requires initialize_quantization first.
  virtual at::Tensor forward(const at::Tensor& x, bool training) = 0;
  // The inferable quantizer with the current parameters (POT thresholds forced to powers of
  // two); its output equals forward(x, /*training=*/false) bit for bit.
  virtual std::shared_ptr<BaseInferableQuantizer> convert_to_inferable() const = 0;
  // True for quantizers whose eval output is not a function of the float weight through an
  // inferable quantizer alone (soft rounding): conversion then also replaces the weight by
  // forward(weight, false).
  virtual bool replaces_weight() const { return false; }

  // Variables of a group that require grad. With freeze_quant_params, asking for QPARAMS when
  // some would train is an error (qi::Error), as in MCT.
  std::vector<at::Tensor> get_trainable_variables(VariableGroup group) const;
  // Stops training the quantization parameters (QPARAMS): requires_grad = false.
  void freeze_quant_params_now();
  const std::map<std::string, Variable>& variables() const { return variables_; }
  // The module-level names of the registered variables (for unregistering on conversion).
  const std::vector<std::string>& registered_names() const { return registered_; }

  std::string to_json() const override;

 protected:
  BaseTrainableQuantizer(QuantizationTarget target, QuantizationMethod method,
                         TrainingMethod training_method, bool freeze_quant_params);
  // Registers `value` on `module` as parameter "<name>_<suffix>" and records it as `suffix`.
  at::Tensor add_quantizer_variable(::torch::nn::Module& module, const std::string& name,
                                    const std::string& suffix, at::Tensor value, bool trainable,
                                    VariableGroup group);
  const at::Tensor& variable(const std::string& suffix) const;
  // The "config" object of to_json(), as text.
  virtual std::string config_json() const = 0;

 private:
  QuantizationTarget target_;
  QuantizationMethod method_;
  TrainingMethod training_method_;
  bool freeze_quant_params_;
  std::map<std::string, Variable> variables_;
  std::vector<std::string> registered_;
};

// X(ClassName, Target, TrainingMethod): the trainable quantizers of the torch layer.
#define QI_FOR_EACH_TORCH_TRAINABLE_QUANTIZER(X)                  \
  X(STEWeightQATQuantizer, Weights, STE)                          \
  X(STEUniformWeightQATQuantizer, Weights, STE)                   \
  X(LSQWeightQATQuantizer, Weights, LSQ)                          \
  X(LSQUniformWeightQATQuantizer, Weights, LSQ)                   \
  X(STESymmetricActivationTrainableQuantizer, Activation, STE)    \
  X(STEUniformActivationTrainableQuantizer, Activation, STE)      \
  X(LSQSymmetricActivationTrainableQuantizer, Activation, LSQ)    \
  X(LSQUniformActivationTrainableQuantizer, Activation, LSQ)      \
  X(SymmetricSoftRoundingGPTQ, Weights, SoftRounding)             \
  X(UniformSoftRoundingGPTQ, Weights, SoftRounding)

// The registry entry of a trainable class: which methods it serves and how to build it.
struct TrainableQuantizerClass {
  const char* class_name;
  QuantizationTarget target;
  TrainingMethod training_method;
  std::vector<QuantizationMethod> methods;
  std::shared_ptr<BaseTrainableQuantizer> (*make_weights)(const TrainableQuantizerWeightsConfig&,
                                                          bool freeze_quant_params);
  std::shared_ptr<BaseTrainableQuantizer> (*make_activation)(
      const TrainableQuantizerActivationConfig&, bool freeze_quant_params);
};

const std::vector<TrainableQuantizerClass>& trainable_quantizer_classes();
// REFERENCE.md 7.3: exactly one class must match, else qi::Error.
const TrainableQuantizerClass& get_trainable_quantizer_class(QuantizationTarget target,
                                                             QuantizationMethod method,
                                                             TrainingMethod training_method);
// Builds the class that serves the config's method for the training method.
std::shared_ptr<BaseTrainableQuantizer> make_trainable_quantizer(
    TrainingMethod training_method, const TrainableQuantizerWeightsConfig& config,
    bool freeze_quant_params = false);
std::shared_ptr<BaseTrainableQuantizer> make_trainable_quantizer(
    TrainingMethod training_method, const TrainableQuantizerActivationConfig& config,
    bool freeze_quant_params = false);

// ---- soft rounding regularization (REFERENCE.md 9.3) ----

// beta anneals linearly from beta_start to beta_end between warmup_fraction * total_steps and
// total_steps; each call is one step.
class SoftRoundingRegularization {
 public:
  explicit SoftRoundingRegularization(int64_t total_steps, double warmup_fraction = 0.2,
                                      double beta_start = 20.0, double beta_end = 2.0);
  // entropy_reg * sum_l layer_weights[l] * sum(1 - |2 (h_l - 0.5)|^beta) / max(layer_weights),
  // over the soft rounding quantizers given (layer_weights empty: all ones).
  at::Tensor operator()(const std::vector<std::shared_ptr<BaseTrainableQuantizer>>& quantizers,
                        double entropy_reg, const std::vector<double>& layer_weights = {});
  double beta() const;
  int64_t step() const { return step_; }

 private:
  int64_t total_steps_, start_;
  double beta_start_, beta_end_;
  int64_t step_ = 0;
};

}  // namespace qi::torch
