// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The C++ front end's trainable quantizer: binds the core's policy (qi::TrainableQuantizer) to
// module parameters and the qi ops. No policy lives here.
#include <torch/torch.h>

#include "qi/error.h"
#include "qi/torch/ops.h"
#include "qi/torch/quantizers.h"

namespace qi::torch {
namespace {

// Where the C++ front end keeps activation channels (NCHW).
constexpr int64_t kActivationChannelAxis = 1;

at::Tensor weight_of(::torch::nn::Module& module, const std::string& name, const char* cls) {
  for (const auto& item : module.named_parameters(/*recurse=*/false))
    if (item.key() == name) return item.value();
  throw Error(str_cat(cls, ": initialize_quantization needs the weight \"", name,
                      "\" registered on the module"));
}

std::string mode_name(trainable::GradMode mode) {
  return mode == trainable::GradMode::kLsq ? "lsq" : "ste";
}

}  // namespace

TrainableQuantizer::TrainableQuantizer(std::shared_ptr<const qi::TrainableQuantizer> policy)
    : policy_(std::move(policy)) {
  QI_CHECK(policy_ != nullptr, "TrainableQuantizer: policy must not be null");
}

void TrainableQuantizer::initialize_quantization(at::IntArrayRef shape, const std::string& name,
                                                 ::torch::nn::Module& module) {
  const char* cls = class_name();
  at::Tensor weight;
  if (policy_->needs_weight())
    weight = weight_of(module, name, cls).detach().to(at::kFloat).contiguous();
  const auto vars = policy_->variables(shape.vec(), weight.defined() ? weight.const_data_ptr<float>()
                                                                     : nullptr);
  for (const auto& v : vars) {
    at::Tensor value = ::torch::tensor(v.initial, ::torch::kFloat).reshape(v.shape);
    const std::string full = name + "_" + v.name;
    at::Tensor p = module.register_parameter(full, value, v.trainable);
    variables_[v.name] = Variable{p, v.group};
    registered_.push_back(full);
  }
  // The forward depends only on the shape: fixed once, for eval (0) and training (1).
  for (bool training : {false, true})
    forward_[training] = policy_->forward(training, shape.vec(), kActivationChannelAxis);
  initialized_ = true;
}

at::Tensor TrainableQuantizer::forward(const at::Tensor& x, bool training) {
  QI_CHECK(initialized_, class_name(), ": call initialize_quantization before the forward");
  const auto& f = forward_[training];
  std::vector<at::Tensor> in;
  for (const auto& [argument, name] : f.inputs) {
    const at::Tensor& v = variables_.at(name).tensor;
    in.push_back(f.variables_require_grad ? v : v.detach());
  }
  switch (f.op) {
    case TrainableOp::kSymmetricQuant: {
      const auto& a = f.symmetric;
      return symmetric_quant(x, in[0], a.num_bits, a.is_signed, a.channel_axis,
                             mode_name(a.mode), a.grad_scale, a.grad_scale_axis, a.min_threshold,
                             a.power_of_two, a.group_size, a.group_axis);
    }
    case TrainableOp::kUniformQuant: {
      const auto& a = f.uniform;
      return uniform_quant(x, in[0], in[1], a.num_bits, a.channel_axis, mode_name(a.mode),
                           a.grad_scale, a.activation, a.grad_scale_axis, a.group_size,
                           a.group_axis);
    }
    case TrainableOp::kSoftRound: {
      const auto& a = f.soft_round;
      return soft_round(x, in[0], in[1], a.num_bits, a.power_of_two, a.channel_axis, f.training,
                        in.size() > 2 ? in[2] : at::Tensor());
    }
    case TrainableOp::kFormatQuant: {
      // The policy lists the parameters its scaling uses; the others are empty tensors.
      at::Tensor scale = at::empty({0}, x.options().dtype(at::kFloat)), tensor_scale = scale;
      for (size_t i = 0; i < f.inputs.size(); ++i) {
        const std::string& argument = f.inputs[i].first;
        if (argument == "scale") scale = in[i];
        else if (argument == "tensor_scale") tensor_scale = in[i];
        else
          throw Error(
              str_cat(class_name(), ": format_quant has no argument \"", argument, "\""));
      }
      const auto& a = f.format;
      return format_quant(x, scale, tensor_scale, a.format, trainable::to_string(a.scaling),
                          a.channel_axis, mode_name(a.mode), a.grad_scale, a.grad_scale_axis,
                          a.group_size, a.group_axis, a.tensor_grad_scale);
    }
  }
  throw Error(str_cat(class_name(), ": unknown op"));
}

std::shared_ptr<BaseInferableQuantizer> TrainableQuantizer::convert_to_inferable() const {
  qi::TrainableQuantizer::VariableValues values;
  for (const auto& [name, v] : variables_) {
    const at::Tensor c = v.tensor.detach().to(at::kFloat).reshape({-1}).contiguous();
    values[name].assign(c.const_data_ptr<float>(), c.const_data_ptr<float>() + c.numel());
  }
  return policy_->convert(values);
}

std::vector<at::Tensor> TrainableQuantizer::get_trainable_variables(VariableGroup group) const {
  std::vector<at::Tensor> out;
  for (const auto& [name, v] : variables_)
    if (v.group == group && v.tensor.requires_grad()) out.push_back(v.tensor);
  if (group == VariableGroup::QPARAMS) policy_->check_frozen(out.size());
  return out;
}

void TrainableQuantizer::freeze_quant_params_now() {
  for (auto& [name, v] : variables_)
    if (v.group == VariableGroup::QPARAMS) v.tensor.set_requires_grad(false);
  policy_ = policy_->frozen();
}

std::shared_ptr<TrainableQuantizer> make_trainable_quantizer(
    TrainingMethod training_method, const TrainableQuantizerWeightsConfig& config,
    bool freeze_quant_params) {
  const auto& info = get_trainable_quantizer_class(
      QuantizationTarget::Weights, config.weights_quantization_method, training_method);
  return std::make_shared<TrainableQuantizer>(
      std::make_shared<qi::TrainableQuantizer>(info.kind, config, freeze_quant_params));
}

std::shared_ptr<TrainableQuantizer> make_trainable_quantizer(
    TrainingMethod training_method, const TrainableQuantizerActivationConfig& config,
    bool freeze_quant_params) {
  const auto& info = get_trainable_quantizer_class(
      QuantizationTarget::Activation, config.activation_quantization_method, training_method);
  return std::make_shared<TrainableQuantizer>(
      std::make_shared<qi::TrainableQuantizer>(info.kind, config, freeze_quant_params));
}

std::shared_ptr<TrainableQuantizer> as_trainable(const std::shared_ptr<BaseQuantizer>& quantizer) {
  if (!quantizer || !quantizer->is_trainable()) return nullptr;
  if (auto t = std::dynamic_pointer_cast<TrainableQuantizer>(quantizer)) return t;
  if (auto policy = std::dynamic_pointer_cast<const qi::TrainableQuantizer>(quantizer))
    return std::make_shared<TrainableQuantizer>(policy);
  throw Error(str_cat(quantizer->class_name(),
                      ": not a trainable quantizer of qi's registry or of qi::torch"));
}

}  // namespace qi::torch
