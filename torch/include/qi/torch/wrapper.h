// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// QuantizationWrapper: any torch::nn::Module with named parameters, quantizing its weights
// before it runs and its output after, as a NodeQuantizationDispatcher says.
#pragma once

#include <map>
#include <string>

#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/pimpl.h>

#include "qi/dispatcher.h"

// TORCH_MODULE spells torch::nn unqualified, which inside namespace qi::torch means
// qi::torch::nn; this is the same holder with a fully qualified base.
#define QI_TORCH_MODULE(Name)                                              \
  class Name : public ::torch::nn::ModuleHolder<Name##Impl> {              \
   public:                                                                 \
    using ::torch::nn::ModuleHolder<Name##Impl>::ModuleHolder;             \
    using Impl = Name##Impl;                                               \
  }

namespace qi::torch {

// A module wrapped with its quantizers (use it as QuantizationWrapper, LibTorch's module
// holder): weights quantized before the layer runs, its output after.
class QuantizationWrapperImpl : public ::torch::nn::Module {
 public:
  // `layer`: any module whose forward takes and returns one tensor. Each weight quantizer of
  // `dispatcher` names a parameter of the layer ("weight", "bias", or a dotted path); the
  // wrapper keeps that parameter's float values as its own parameter (named with '.' -> '_')
  // and feeds the layer the quantized values at each forward, gradients flowing to the float
  // values and to the quantizers' variables. The layer's own tensor stays what its forward
  // reads but is no longer one of its parameters (as in MCT). Throws qi::Error for unknown
  // parameter names and more than one activation quantizer.
  QuantizationWrapperImpl(::torch::nn::AnyModule layer, NodeQuantizationDispatcher dispatcher);

  // y = A(layer(x; W_q)) with W_q = Q_w(W): training-time quantizers in train() mode.
  at::Tensor forward(const at::Tensor& x);

  // Replaces every trainable quantizer by its inferable conversion (soft rounding also writes
  // its hard-rounded weights into the float weight) and drops the trainable variables.
  void convert_to_inferable_quantizers();
  // Quantized values of each quantized weight, by attribute name (eval-mode quantizers).
  std::map<std::string, at::Tensor> get_quantized_weights();

  const NodeQuantizationDispatcher& dispatcher() const { return dispatcher_; }
  // Swaps in another dispatcher for the same attributes (used by conversion and load).
  void set_dispatcher(NodeQuantizationDispatcher dispatcher);
  ::torch::nn::AnyModule& layer() { return layer_; }
  // The float weight kept for an attribute.
  at::Tensor float_weight(const std::string& attribute) const;

 private:
  void initialize_quantizers();
  void drop_quantizer_variables();

  ::torch::nn::AnyModule layer_;
  NodeQuantizationDispatcher dispatcher_;
  std::map<std::string, at::Tensor> float_weights_;    // attribute -> wrapper parameter
  std::map<std::string, at::Tensor> layer_params_;     // attribute -> the layer's own tensor
  std::vector<std::string> quantizer_variables_;
};
QI_TORCH_MODULE(QuantizationWrapper);

// A lone activation quantizer as a module (MCT's activation holder).
class ActivationQuantizationHolderImpl : public ::torch::nn::Module {
 public:
  explicit ActivationQuantizationHolderImpl(std::shared_ptr<BaseQuantizer> quantizer);
  at::Tensor forward(const at::Tensor& x);
  void convert_to_inferable_quantizers();
  const std::shared_ptr<BaseQuantizer>& quantizer() const { return quantizer_; }
  void set_quantizer(std::shared_ptr<BaseQuantizer> quantizer);

 private:
  std::shared_ptr<BaseQuantizer> quantizer_;
  std::vector<std::string> quantizer_variables_;
};
QI_TORCH_MODULE(ActivationQuantizationHolder);

// ---- layer knowledge, in one place ----

// The output-channel axis of a layer's weight: 1 for ConvTranspose (weight [in, out/groups,
// ...]), 0 otherwise (Conv, Linear, Embedding rows, BatchNorm/LayerNorm vectors).
int64_t weight_channel_axis(const ::torch::nn::Module& layer, const std::string& attribute = "weight");

// Every QuantizationWrapper inside `model`, by qualified name.
std::vector<std::pair<std::string, QuantizationWrapper>> find_wrappers(::torch::nn::Module& model);
std::vector<std::pair<std::string, ActivationQuantizationHolder>> find_holders(
    ::torch::nn::Module& model);

}  // namespace qi::torch
