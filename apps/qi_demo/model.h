// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The qi-demo CNN in float and quantized form (shared by qi-demo and the QAT-step benchmark).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "fashion_mnist.h"
#include "qi/torch/qi_torch.h"

namespace qi_demo {

namespace nn = torch::nn;
using qi::torch::ActivationQuantizationHolder;
using qi::torch::QuantizationWrapper;

// ---- the float model ---------------------------------------------------------------------------

struct NetImpl : nn::Module {
  NetImpl() {
    conv1 = register_module("conv1", nn::Conv2d(nn::Conv2dOptions(1, 16, 3).padding(1)));
    conv2 = register_module("conv2", nn::Conv2d(nn::Conv2dOptions(16, 32, 3).padding(1)));
    fc1 = register_module("fc1", nn::Linear(32 * 7 * 7, 128));
    fc2 = register_module("fc2", nn::Linear(128, 10));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::max_pool2d(torch::relu(conv1(x)), 2);
    x = torch::max_pool2d(torch::relu(conv2(x)), 2);
    x = torch::relu(fc1(x.flatten(1)));
    return fc2(x);
  }
  // Inputs of the points where the quantized model quantizes activations.
  std::vector<torch::Tensor> activations(torch::Tensor x) {
    std::vector<torch::Tensor> out{x};
    x = torch::max_pool2d(torch::relu(conv1(x)), 2);
    out.push_back(x);
    x = torch::max_pool2d(torch::relu(conv2(x)), 2);
    out.push_back(x);
    x = torch::relu(fc1(x.flatten(1)));
    out.push_back(x);
    return out;
  }
  nn::Conv2d conv1{nullptr}, conv2{nullptr};
  nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Net);

// ---- the quantized model: same graph, layers wrapped, activations held --------------------------

struct QuantSpec {
  std::string name;
  int64_t weight_bits;
  int64_t act_bits;
  // empty: inferable (PTQ); else the trainable method
  std::optional<qi::TrainingMethod> method;
};

struct Calibration {
  std::map<std::string, std::vector<double>> weight_thresholds;  // per layer, per channel
  std::vector<double> act_thresholds;                            // per activation point
};

struct QNetImpl : nn::Module {
  QNetImpl(Net& net, const QuantSpec& spec, const Calibration& cal) {
    const char* names[] = {"conv1", "conv2", "fc1", "fc2"};
    std::vector<std::shared_ptr<nn::Module>> layers = {net->conv1.ptr(), net->conv2.ptr(),
                                                       net->fc1.ptr(), net->fc2.ptr()};
    for (int i = 0; i < 4; ++i) {
      auto w = make_weights_quantizer(*layers[i], names[i], spec, cal);
      qi::NodeQuantizationDispatcher d({{"weight", w}}, {});
      nn::AnyModule any = i < 2 ? nn::AnyModule(nn::Conv2d(std::dynamic_pointer_cast<nn::Conv2dImpl>(layers[i]->clone())))
                                : nn::AnyModule(nn::Linear(std::dynamic_pointer_cast<nn::LinearImpl>(layers[i]->clone())));
      wrappers.push_back(register_module(names[i], QuantizationWrapper(std::move(any), d)));
    }
    const char* act_names[] = {"input_q", "act1_q", "act2_q", "act3_q"};
    for (int i = 0; i < 4; ++i)
      holders.push_back(register_module(
          act_names[i], ActivationQuantizationHolder(make_activation_quantizer(i, spec, cal))));
  }

  torch::Tensor forward(torch::Tensor x) {
    x = holders[0](x);
    x = holders[1](torch::max_pool2d(torch::relu(wrappers[0](x)), 2));
    x = holders[2](torch::max_pool2d(torch::relu(wrappers[1](x)), 2));
    x = holders[3](torch::relu(wrappers[2](x.flatten(1))));
    return wrappers[3](x);
  }

  void convert_to_inferable_quantizers() {
    for (auto& w : wrappers) w->convert_to_inferable_quantizers();
    for (auto& h : holders) h->convert_to_inferable_quantizers();
  }

  static std::shared_ptr<qi::BaseQuantizer> make_weights_quantizer(nn::Module& layer,
                                                                   const std::string& name,
                                                                   const QuantSpec& spec,
                                                                   const Calibration& cal) {
    const int64_t axis = qi::torch::weight_channel_axis(layer);
    const auto& t = cal.weight_thresholds.at(name);
    if (!spec.method)
      return std::make_shared<qi::WeightsSymmetricInferableQuantizer>(spec.weight_bits, t, true, axis);
    qi::TrainableQuantizerWeightsConfig cfg;
    cfg.weights_quantization_method = qi::QuantizationMethod::SYMMETRIC;
    cfg.weights_n_bits = spec.weight_bits;
    cfg.weights_quantization_params["threshold"] = qi::ParamArray{{static_cast<int64_t>(t.size())}, t};
    cfg.weights_channels_axis = axis;
    cfg.weights_per_channel_threshold = true;
    return qi::torch::make_trainable_quantizer(*spec.method, cfg);
  }

  static std::shared_ptr<qi::BaseQuantizer> make_activation_quantizer(int point,
                                                                      const QuantSpec& spec,
                                                                      const Calibration& cal) {
    const bool is_signed = point == 0;  // the normalized input; the others follow a ReLU
    const double t = cal.act_thresholds.at(point);
    if (!spec.method)
      return std::make_shared<qi::ActivationSymmetricInferableQuantizer>(spec.act_bits,
                                                                         std::vector<double>{t},
                                                                         is_signed);
    qi::TrainableQuantizerActivationConfig cfg;
    cfg.activation_quantization_method = qi::QuantizationMethod::SYMMETRIC;
    cfg.activation_n_bits = spec.act_bits;
    cfg.activation_quantization_params["threshold"] = t;
    cfg.activation_quantization_params["is_signed"] = is_signed;
    return qi::torch::make_trainable_quantizer(*spec.method, cfg);
  }

  std::vector<QuantizationWrapper> wrappers;
  std::vector<ActivationQuantizationHolder> holders;
};
TORCH_MODULE(QNet);


// Weight thresholds minimize the weight quantization MSE per output channel; activation
// thresholds minimize it per tensor over 512 training images (cached by activation bits).
Calibration calibrate(Net& net, const Dataset& train_set, int64_t weight_bits, int64_t act_bits);

}  // namespace qi_demo
