// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include "qi/torch/quantizers.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "qi/error.h"
#include "qi/torch/ops.h"
#include "qi/version.h"

namespace qi::torch {

at::Tensor quantize(BaseQuantizer& quantizer, const at::Tensor& x, bool training) {
  if (quantizer.is_trainable()) {
    auto* t = dynamic_cast<BaseTrainableQuantizer*>(&quantizer);
    QI_CHECK(t != nullptr, quantizer.class_name(),
             ": trainable quantizer is not a qi::torch::BaseTrainableQuantizer");
    return t->forward(x, training);
  }
  auto* inf = dynamic_cast<BaseInferableQuantizer*>(&quantizer);
  QI_CHECK(inf != nullptr, quantizer.class_name(), ": not an inferable quantizer");
  return fake_quant(x, inf->to_json());
}

BaseTrainableQuantizer::BaseTrainableQuantizer(QuantizationTarget target, QuantizationMethod method,
                                               TrainingMethod training_method,
                                               bool freeze_quant_params)
    : target_(target),
      method_(method),
      training_method_(training_method),
      freeze_quant_params_(freeze_quant_params) {}

at::Tensor BaseTrainableQuantizer::add_quantizer_variable(::torch::nn::Module& module,
                                                          const std::string& name,
                                                          const std::string& suffix,
                                                          at::Tensor value, bool trainable,
                                                          VariableGroup group) {
  const std::string full = name + "_" + suffix;
  at::Tensor p = module.register_parameter(full, value.detach().clone(), trainable);
  variables_[suffix] = Variable{p, group};
  registered_.push_back(full);
  return p;
}

const at::Tensor& BaseTrainableQuantizer::variable(const std::string& suffix) const {
  auto it = variables_.find(suffix);
  QI_CHECK(it != variables_.end(), class_name(), ": variable \"", suffix,
           "\" does not exist; call initialize_quantization first");
  return it->second.tensor;
}

std::vector<at::Tensor> BaseTrainableQuantizer::get_trainable_variables(VariableGroup group) const {
  std::vector<at::Tensor> out;
  for (const auto& [name, v] : variables_)
    if (v.group == group && v.tensor.requires_grad()) out.push_back(v.tensor);
  QI_CHECK(!(freeze_quant_params_ && group == VariableGroup::QPARAMS && !out.empty()),
           class_name(),
           ": quantization parameters were created trainable although freeze_quant_params is set");
  return out;
}

void BaseTrainableQuantizer::freeze_quant_params_now() {
  for (auto& [name, v] : variables_)
    if (v.group == VariableGroup::QPARAMS) v.tensor.set_requires_grad(false);
  freeze_quant_params_ = true;
}

std::string BaseTrainableQuantizer::to_json() const {
  nlohmann::json j;
  j["class_name"] = class_name();
  j["config"] = nlohmann::json::parse(config_json());
  return j.dump();
}

// ---- registry ----------------------------------------------------------------------------------

const TrainableQuantizerClass& get_trainable_quantizer_class(QuantizationTarget target,
                                                             QuantizationMethod method,
                                                             TrainingMethod training_method) {
  const TrainableQuantizerClass* found = nullptr;
  int count = 0;
  for (const auto& c : trainable_quantizer_classes()) {
    if (c.target != target || c.training_method != training_method) continue;
    if (std::find(c.methods.begin(), c.methods.end(), method) == c.methods.end()) continue;
    found = &c;
    ++count;
  }
  QI_CHECK(count == 1, "get_trainable_quantizer_class: found ", count,
           " trainable quantizers for target ", to_string(target), ", method ",
           to_string(method), " and training method ", to_string(training_method),
           "; expected exactly one");
  return *found;
}

std::shared_ptr<BaseTrainableQuantizer> make_trainable_quantizer(
    TrainingMethod training_method, const TrainableQuantizerWeightsConfig& config,
    bool freeze_quant_params) {
  const auto& c = get_trainable_quantizer_class(QuantizationTarget::Weights,
                                                config.weights_quantization_method,
                                                training_method);
  return c.make_weights(config, freeze_quant_params);
}

std::shared_ptr<BaseTrainableQuantizer> make_trainable_quantizer(
    TrainingMethod training_method, const TrainableQuantizerActivationConfig& config,
    bool freeze_quant_params) {
  const auto& c = get_trainable_quantizer_class(QuantizationTarget::Activation,
                                                config.activation_quantization_method,
                                                training_method);
  return c.make_activation(config, freeze_quant_params);
}

// ---- soft rounding regularization ---------------------------------------------------------------

SoftRoundingRegularization::SoftRoundingRegularization(int64_t total_steps, double warmup_fraction,
                                                       double beta_start, double beta_end)
    : total_steps_(total_steps),
      start_(static_cast<int64_t>(warmup_fraction * static_cast<double>(total_steps))),
      beta_start_(beta_start),
      beta_end_(beta_end) {
  QI_CHECK(total_steps > 0, "SoftRoundingRegularization: total_steps must be > 0, got ",
           total_steps);
  QI_CHECK(warmup_fraction >= 0 && warmup_fraction < 1,
           "SoftRoundingRegularization: warmup_fraction must be in [0, 1), got ", warmup_fraction);
}

double SoftRoundingRegularization::beta() const {
  return trainable::LinearAnnealing(start_, total_steps_, beta_start_, beta_end_)(step_);
}

at::Tensor SoftRoundingRegularization::operator()(
    const std::vector<std::shared_ptr<BaseTrainableQuantizer>>& quantizers, double entropy_reg,
    const std::vector<double>& layer_weights) {
  std::vector<std::shared_ptr<BaseTrainableQuantizer>> soft;
  for (const auto& q : quantizers)
    if (q && q->training_method() == TrainingMethod::SoftRounding) soft.push_back(q);
  QI_CHECK(layer_weights.empty() || layer_weights.size() == soft.size(),
           "SoftRoundingRegularization: layer_weights must have one entry per soft rounding "
           "quantizer (",
           soft.size(), "), got ", layer_weights.size());
  const double b = beta();
  ++step_;
  at::Tensor reg = ::torch::zeros({});
  if (soft.empty()) return reg;
  double max_w = 1.0;
  if (!layer_weights.empty()) max_w = *std::max_element(layer_weights.begin(), layer_weights.end());
  for (size_t l = 0; l < soft.size(); ++l) {
    const double w = layer_weights.empty() ? 1.0 : layer_weights[l];
    for (const auto& [name, v] : soft[l]->variables())
      if (name == "auxvar_tensor") reg = reg + w * soft_round_regularization(v.tensor, b);
  }
  return entropy_reg * reg / max_w;
}

}  // namespace qi::torch
