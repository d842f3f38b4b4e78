// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include "model.h"

#include <cstdio>

namespace qi_demo {

nn::Sequential make_net() {
  torch::OrderedDict<std::string, nn::AnyModule> layers;
  layers.insert("conv1", nn::AnyModule(nn::Conv2d(nn::Conv2dOptions(1, 16, 3).padding(1))));
  layers.insert("relu1", nn::AnyModule(nn::ReLU()));
  layers.insert("pool1", nn::AnyModule(nn::MaxPool2d(2)));
  layers.insert("conv2", nn::AnyModule(nn::Conv2d(nn::Conv2dOptions(16, 32, 3).padding(1))));
  layers.insert("relu2", nn::AnyModule(nn::ReLU()));
  layers.insert("pool2", nn::AnyModule(nn::MaxPool2d(2)));
  layers.insert("flatten", nn::AnyModule(nn::Flatten()));
  layers.insert("fc1", nn::AnyModule(nn::Linear(32 * 7 * 7, 128)));
  layers.insert("relu3", nn::AnyModule(nn::ReLU()));
  layers.insert("fc2", nn::AnyModule(nn::Linear(128, 10)));
  return nn::Sequential(std::move(layers));
}

nn::Sequential quantized_copy(const nn::Sequential& net, const qi::ModelQuantizationConfig& config,
                              bool qat, const torch::Tensor& calibration_images, bool quiet) {
  // A copy with the same entry names (Sequential::clone numbers them instead).
  nn::Sequential q = make_net();
  {
    torch::NoGradGuard no_grad;
    const auto params = net->named_parameters();
    for (auto& p : q->named_parameters()) p.value().copy_(params[p.key()]);
    const auto buffers = net->named_buffers();
    for (auto& b : q->named_buffers()) b.value().copy_(buffers[b.key()]);
  }
  auto loop = [&](nn::Module&) {
    for (int64_t b = 0; b < calibration_images.size(0); b += 128)
      q->forward(calibration_images.slice(0, b, std::min(calibration_images.size(0), b + 128)));
  };
  const qi::torch::ModelReport report =
      qat ? qi::torch::prepare_qat(*q, config, loop) : qi::torch::quantize(*q, config, loop);
  if (!quiet) std::printf("%s", report.to_string().c_str());
  return q;
}

}  // namespace qi_demo
