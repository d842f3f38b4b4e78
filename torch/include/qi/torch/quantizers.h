// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The C++ front end's quantizers: running any quantizer on a tensor, and the trainable
// quantizers (STE, LSQ, soft rounding, as MCT defines them) with their learnable variables.
#pragma once

#include <array>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "qi/base_quantizer.h"
#include "qi/configs.h"
#include "qi/inferable_quantizers.h"
#include "qi/trainable_quantizers.h"

namespace qi::torch {

// Q(x) for any quantizer a dispatcher holds: inferable quantizers run the qi::fake_quant op,
// trainable ones their own forward (training selects the training-time behaviour).
at::Tensor quantize(BaseQuantizer& quantizer, const at::Tensor& x, bool training);

// A trainable quantizer of the C++ front end: the core's policy (qi::TrainableQuantizer: which
// variables, what forward, how it converts) bound to a module's parameters. Its variables are
// registered on the module that wraps the layer (initialize_quantization); its forward calls the
// qi op the policy names with them; it converts to the inferable quantizer whose output equals
// its eval-mode output bit for bit.
class TrainableQuantizer : public BaseQuantizer {
 public:
  // A learnable variable of the quantizer and the group it trains in.
  struct Variable {
    at::Tensor tensor;
    VariableGroup group;
  };

  explicit TrainableQuantizer(std::shared_ptr<const qi::TrainableQuantizer> policy);

  const qi::TrainableQuantizer& policy() const { return *policy_; }
  bool is_trainable() const override { return true; }
  QuantizationTarget quantization_target() const override { return policy_->quantization_target(); }
  QuantizationMethod quantization_method() const override { return policy_->quantization_method(); }
  std::string identifier() const override { return policy_->identifier(); }
  const char* class_name() const override { return policy_->class_name(); }
  std::string to_json() const override { return policy_->to_json(); }
  TrainingMethod training_method() const { return policy_->training_method(); }
  bool freeze_quant_params() const { return policy_->freeze_quant_params(); }
  bool replaces_weight() const { return policy_->replaces_weight(); }

  // Creates the variables for a tensor of `shape` (weights; soft rounding reads the weight
  // registered on `module` under `name`) or for layer outputs (activations: shape may be empty),
  // registers them on `module` as "<name>_<variable>", and fixes the forward for that shape.
  void initialize_quantization(at::IntArrayRef shape, const std::string& name,
                               ::torch::nn::Module& module);
  // Quantizes x (NCHW activations: channels on axis 1). Requires initialize_quantization.
  at::Tensor forward(const at::Tensor& x, bool training);
  // The inferable quantizer with the current parameters.
  std::shared_ptr<BaseInferableQuantizer> convert_to_inferable() const;

  // Variables of a group that require grad. With freeze_quant_params, asking for QPARAMS when
  // some would train is an error (qi::Error), as in MCT.
  std::vector<at::Tensor> get_trainable_variables(VariableGroup group) const;
  // Stops training the quantization parameters (QPARAMS): requires_grad = false.
  void freeze_quant_params_now();
  const std::map<std::string, Variable>& variables() const { return variables_; }
  // The module-level names of the registered variables (for unregistering on conversion).
  const std::vector<std::string>& registered_names() const { return registered_; }

 private:
  std::shared_ptr<const qi::TrainableQuantizer> policy_;
  std::map<std::string, Variable> variables_;
  std::vector<std::string> registered_;
  std::array<qi::TrainableQuantizer::Forward, 2> forward_;
  bool initialized_ = false;
};
// The seed's name of the trainable quantizers' class.
using BaseTrainableQuantizer = TrainableQuantizer;

// The class the registry holds for the config's method and the training method (qi::Error
// unless exactly one matches), bound to no module yet.
std::shared_ptr<TrainableQuantizer> make_trainable_quantizer(
    TrainingMethod training_method, const TrainableQuantizerWeightsConfig& config,
    bool freeze_quant_params = false);
std::shared_ptr<TrainableQuantizer> make_trainable_quantizer(
    TrainingMethod training_method, const TrainableQuantizerActivationConfig& config,
    bool freeze_quant_params = false);
// A trainable quantizer of this front end for `quantizer`: itself when it already is one, a new
// one over the policy of a core qi::TrainableQuantizer (e.g. read from JSON); null for inferable
// quantizers.
std::shared_ptr<TrainableQuantizer> as_trainable(const std::shared_ptr<BaseQuantizer>& quantizer);

// ---- soft rounding regularization ----

// beta anneals linearly from beta_start to beta_end between warmup_fraction * total_steps and
// total_steps; each call is one step.
class SoftRoundingRegularization {
 public:
  explicit SoftRoundingRegularization(int64_t total_steps, double warmup_fraction = 0.2,
                                      double beta_start = 20.0, double beta_end = 2.0);
  // entropy_reg * sum_l layer_weights[l] * sum(1 - |2 (h_l - 0.5)|^beta) / max(layer_weights),
  // over the soft rounding quantizers given (layer_weights empty: all ones).
  at::Tensor operator()(const std::vector<std::shared_ptr<TrainableQuantizer>>& quantizers,
                        double entropy_reg, const std::vector<double>& layer_weights = {});
  double beta() const;
  int64_t step() const { return step_; }

 private:
  trainable::SoftRoundingSchedule schedule_;
  int64_t step_ = 0;
};

}  // namespace qi::torch
