// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// How the wrapper feeds quantized weights to a layer it knows nothing about: the layer keeps
// its own parameter tensor P (its forward reads that very tensor object); before each forward
// P takes the values of Q(W) (set_data) and Q(W)'s autograd edge, so the layer's backward flows
// into the quantizer and on to the float weight W that the wrapper owns. P keeps that edge
// until the next forward, which is what a saved tensor of the layer's graph expects. P is no
// longer registered as a parameter of the layer (it is not a leaf once it carries that edge).
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include "module_access.h"
#include "qi/error.h"
#include "qi/torch/ops.h"
#include "qi/torch/quantizers.h"
#include "qi/torch/wrapper.h"

namespace qi::torch {
namespace {

std::string param_key(const std::string& attribute) {
  std::string s = attribute;
  for (char& c : s)
    if (c == '.') c = '_';
  return s;
}

// Takes the layer's tensor `attribute` ("weight", "sub.weight") off the layer's parameter list:
// it becomes a plain tensor that the layer still reads (as MCT's wrapper makes it), so
// that the model's parameters are the wrapper's float weights, all of them leaves that
// optimizers can take, and a saved model holds each weight once.
void unregister_layer_parameter(::torch::nn::Module& layer, const std::string& attribute) {
  const size_t dot = attribute.rfind('.');
  ::torch::nn::Module* owner = &layer;
  std::shared_ptr<::torch::nn::Module> holder;
  if (dot != std::string::npos) {
    holder = layer.named_modules("", /*include_self=*/false)[attribute.substr(0, dot)];
    owner = holder.get();
  }
  detail::ParameterDict::of(*owner).erase(dot == std::string::npos ? attribute : attribute.substr(dot + 1));
}

// Points the layer's tensor at `value`: same values, same autograd edge.
void inject(at::Tensor& layer_param, const at::Tensor& value) {
  {
    at::NoGradGuard guard;
    layer_param.set_data(value.detach());
  }
  if (value.requires_grad())
    ::torch::autograd::impl::set_gradient_edge(layer_param,
                                               {value.grad_fn(), static_cast<uint32_t>(value.output_nr())});
  else
    ::torch::autograd::impl::set_gradient_edge(layer_param, {});
}

// Trainable quantizers of the core's registry (e.g. read from JSON) become this front end's.
NodeQuantizationDispatcher bind_trainable(const NodeQuantizationDispatcher& d) {
  auto bind = [](const NodeQuantizationDispatcher::QuantizerPtr& q) {
    return q->is_trainable() ? NodeQuantizationDispatcher::QuantizerPtr(as_trainable(q)) : q;
  };
  std::map<std::string, NodeQuantizationDispatcher::QuantizerPtr> weights;
  for (const auto& [attribute, q] : d.weight_quantizers()) weights[attribute] = bind(q);
  std::vector<NodeQuantizationDispatcher::QuantizerPtr> activations;
  for (const auto& q : d.activation_quantizers()) activations.push_back(bind(q));
  return NodeQuantizationDispatcher(std::move(weights), std::move(activations));
}

}  // namespace

QuantizationWrapperImpl::QuantizationWrapperImpl(::torch::nn::AnyModule layer,
                                                 NodeQuantizationDispatcher dispatcher)
    : layer_(std::move(layer)), dispatcher_(std::move(dispatcher)) {
  QI_CHECK(!layer_.is_empty(), "QuantizationWrapper: layer must not be empty");
  register_module("layer", layer_.ptr());
  initialize_quantizers();
}

void QuantizationWrapperImpl::initialize_quantizers() {
  dispatcher_ = bind_trainable(dispatcher_);
  QI_CHECK(dispatcher_.num_act_quantizers() <= 1,
           "QuantizationWrapper: the layer returns one tensor, so at most one activation "
           "quantizer can apply, got ",
           dispatcher_.num_act_quantizers());
  const auto layer_params = layer_.ptr()->named_parameters(/*recurse=*/true);
  for (const auto& [attribute, quantizer] : dispatcher_.weight_quantizers()) {
    // Attributes already wrapped are no longer parameters of the layer.
    const at::Tensor* p = layer_params.find(attribute);
    if (p == nullptr && !float_weights_.count(attribute)) {
      std::string names;
      for (const auto& [a, w] : float_weights_) names += (names.empty() ? "" : ", ") + a;
      for (const auto& item : layer_params) names += (names.empty() ? "" : ", ") + item.key();
      throw Error(str_cat("QuantizationWrapper: the layer has no parameter \"", attribute,
                          "\"; it has: ", names.empty() ? "(none)" : names));
    }
    QI_CHECK(quantizer->quantization_target() == QuantizationTarget::Weights,
             "QuantizationWrapper: the quantizer of \"", attribute, "\" is an ",
             to_string(quantizer->quantization_target()), " quantizer, expected Weights");
    const std::string key = param_key(attribute);
    if (!float_weights_.count(attribute)) {
      at::Tensor layer_param = *p;
      float_weights_[attribute] =
          register_parameter(key, layer_param.detach().clone(), layer_param.requires_grad());
      layer_param.set_requires_grad(false);
      layer_params_[attribute] = layer_param;
      unregister_layer_parameter(*layer_.ptr(), attribute);
    }
    if (quantizer->is_trainable()) {
      auto& t = *as_trainable(quantizer);
      t.initialize_quantization(float_weights_[attribute].sizes(), key, *this);
      quantizer_variables_.insert(quantizer_variables_.end(), t.registered_names().begin(),
                                  t.registered_names().end());
    }
  }
  for (int64_t i = 0; i < dispatcher_.num_act_quantizers(); ++i) {
    auto& q = dispatcher_.activation_quantizers()[i];
    QI_CHECK(q->quantization_target() == QuantizationTarget::Activation,
             "QuantizationWrapper: activation quantizer ", i, " is a Weights quantizer");
    if (q->is_trainable()) {
      auto& t = *as_trainable(q);
      t.initialize_quantization({}, str_cat("tensor", i), *this);
      quantizer_variables_.insert(quantizer_variables_.end(), t.registered_names().begin(),
                                  t.registered_names().end());
    }
  }
}

at::Tensor QuantizationWrapperImpl::forward(const at::Tensor& x) {
  const bool training = is_training();
  for (const auto& [attribute, quantizer] : dispatcher_.weight_quantizers())
    inject(layer_params_.at(attribute), quantize(*quantizer, float_weights_.at(attribute), training));
  at::Tensor y = layer_.forward<at::Tensor>(x);
  for (const auto& q : dispatcher_.activation_quantizers()) y = quantize(*q, y, training);
  return y;
}

void QuantizationWrapperImpl::drop_quantizer_variables() {
  for (const auto& name : quantizer_variables_)
    if (parameters_.contains(name)) parameters_.erase(name);
  quantizer_variables_.clear();
}

void QuantizationWrapperImpl::set_dispatcher(NodeQuantizationDispatcher dispatcher) {
  for (const auto& [attribute, q] : dispatcher.weight_quantizers())
    QI_CHECK(float_weights_.count(attribute) || layer_.ptr()->named_parameters().find(attribute),
             "QuantizationWrapper: the layer has no parameter \"", attribute, "\"");
  drop_quantizer_variables();
  dispatcher_ = std::move(dispatcher);
  initialize_quantizers();
}

void QuantizationWrapperImpl::convert_to_inferable_quantizers() {
  std::map<std::string, NodeQuantizationDispatcher::QuantizerPtr> weights;
  for (const auto& [attribute, q] : dispatcher_.weight_quantizers()) {
    if (!q->is_trainable()) {
      weights[attribute] = q;
      continue;
    }
    auto& t = *as_trainable(q);
    if (t.replaces_weight()) {
      at::NoGradGuard guard;
      at::Tensor& w = float_weights_.at(attribute);
      w.copy_(t.forward(w, /*training=*/false));
    }
    weights[attribute] = t.convert_to_inferable();
  }
  std::vector<NodeQuantizationDispatcher::QuantizerPtr> activations;
  for (const auto& q : dispatcher_.activation_quantizers())
    activations.push_back(q->is_trainable()
                              ? as_trainable(q)->convert_to_inferable()
                              : q);
  set_dispatcher(NodeQuantizationDispatcher(std::move(weights), std::move(activations)));
}

std::map<std::string, at::Tensor> QuantizationWrapperImpl::get_quantized_weights() {
  at::NoGradGuard guard;
  std::map<std::string, at::Tensor> out;
  for (const auto& [attribute, q] : dispatcher_.weight_quantizers())
    out[attribute] = quantize(*q, float_weights_.at(attribute), /*training=*/false);
  return out;
}

at::Tensor QuantizationWrapperImpl::float_weight(const std::string& attribute) const {
  auto it = float_weights_.find(attribute);
  QI_CHECK(it != float_weights_.end(), "QuantizationWrapper: no quantized weight \"", attribute,
           "\"");
  return it->second;
}

// ---- activation holder -------------------------------------------------------------------------

ActivationQuantizationHolderImpl::ActivationQuantizationHolderImpl(
    std::shared_ptr<BaseQuantizer> quantizer) {
  set_quantizer(std::move(quantizer));
}

void ActivationQuantizationHolderImpl::set_quantizer(std::shared_ptr<BaseQuantizer> quantizer) {
  QI_CHECK(quantizer != nullptr, "ActivationQuantizationHolder: quantizer must not be null");
  QI_CHECK(quantizer->quantization_target() == QuantizationTarget::Activation,
           "ActivationQuantizationHolder: expected an Activation quantizer, got ",
           quantizer->class_name());
  for (const auto& name : quantizer_variables_)
    if (parameters_.contains(name)) parameters_.erase(name);
  quantizer_variables_.clear();
  quantizer_ = quantizer->is_trainable() ? as_trainable(quantizer) : std::move(quantizer);
  if (quantizer_->is_trainable()) {
    auto& t = *as_trainable(quantizer_);
    t.initialize_quantization({}, "activation_holder_quantizer", *this);
    quantizer_variables_ = t.registered_names();
  }
}

at::Tensor ActivationQuantizationHolderImpl::forward(const at::Tensor& x) {
  return quantize(*quantizer_, x, is_training());
}

void ActivationQuantizationHolderImpl::convert_to_inferable_quantizers() {
  if (quantizer_->is_trainable())
    set_quantizer(as_trainable(quantizer_)->convert_to_inferable());
}

}  // namespace qi::torch
