// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The README's LibTorch snippet as a program: a Conv2d with 4-bit LSQ weights, a few training
// steps, conversion to inferable quantizers, save and reload with identical outputs.
#include <cstdio>

#include <torch/torch.h>

#include "qi/torch/qi_torch.h"

int main() {
  torch::manual_seed(0);
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(1, 16, 3));
  qi::TrainableQuantizerWeightsConfig cfg;  // 4-bit LSQ, per output channel
  cfg.weights_quantization_method = qi::QuantizationMethod::SYMMETRIC;
  cfg.weights_n_bits = 4;
  cfg.weights_quantization_params["threshold"] = 0.5;  // initial threshold of every channel
  cfg.weights_channels_axis = qi::torch::weight_channel_axis(*conv);
  auto lsq = qi::torch::make_trainable_quantizer(qi::TrainingMethod::LSQ, cfg);
  qi::torch::QuantizationWrapper layer(torch::nn::AnyModule(conv),
                                       qi::NodeQuantizationDispatcher({{"weight", lsq}}, {}));

  // Learn to reproduce the float layer's output.
  const auto x = torch::randn({32, 1, 12, 12});
  const auto target = conv->forward(x).detach();
  torch::optim::Adam opt(layer->parameters(), torch::optim::AdamOptions(1e-2));
  for (int step = 0; step < 50; ++step) {
    opt.zero_grad();
    const auto loss = torch::mse_loss(layer->forward(x), target);
    loss.backward();
    opt.step();
    if (step % 10 == 0) std::printf("step %2d  loss %.5f\n", step, loss.item<float>());
  }
  layer->eval();
  const auto before = layer->forward(x).detach();
  layer->convert_to_inferable_quantizers();  // same eval outputs, bit for bit
  const auto after = layer->forward(x).detach();
  qi::torch::save(*layer, "qi_torch_example.pt");  // qi::torch::load restores it exactly
  qi::torch::QuantizationWrapper fresh(
      torch::nn::AnyModule(torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 16, 3))),
      qi::NodeQuantizationDispatcher(
          {{"weight", std::make_shared<qi::WeightsSymmetricInferableQuantizer>(
                          8, std::vector<double>{1.0}, false)}},
          {}));
  qi::torch::load(*fresh, "qi_torch_example.pt");
  fresh->eval();
  const bool converted_same = torch::equal(before, after);
  const bool reloaded_same = torch::equal(after, fresh->forward(x));
  std::printf("conversion identical: %s, reload identical: %s\nquantizers: %s\n",
              converted_same ? "true" : "false", reloaded_same ? "true" : "false",
              fresh->dispatcher().get_config().c_str());
  return converted_same && reloaded_same ? 0 : 1;
}
