// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// A LibTorch program built against an installed qi (find_package(qi COMPONENTS torch)) by
// tests/install_consumer/run_test.cmake: wraps a Linear layer with an 8-bit weights quantizer,
// checks its output against the layer with hand-quantized weights, saves it and reloads it into
// a differently configured wrapper.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>
#include <torch/version.h>

#include "qi/torch/qi_torch.h"

namespace {

qi::torch::QuantizationWrapper wrap_linear(int bits) {
  // Signed symmetric per tensor, threshold 1: step 2^(1-bits).
  auto q = std::make_shared<qi::WeightsSymmetricInferableQuantizer>(bits, std::vector<double>{1.0},
                                                                    /*per_channel=*/false);
  return qi::torch::QuantizationWrapper(torch::nn::AnyModule(torch::nn::Linear(16, 4)),
                                        qi::NodeQuantizationDispatcher({{"weight", q}}, {}));
}

}  // namespace

int main(int argc, char** argv) {
  const std::string path = argc > 1 ? argv[1] : "qi_install_consumer_linear.pt";
  torch::manual_seed(0);
  torch::nn::Linear fc(16, 4);
  auto q = std::make_shared<qi::WeightsSymmetricInferableQuantizer>(8, std::vector<double>{1.0},
                                                                    /*per_channel=*/false);
  qi::torch::QuantizationWrapper layer(torch::nn::AnyModule(fc),
                                       qi::NodeQuantizationDispatcher({{"weight", q}}, {}));
  layer->eval();
  const auto x = torch::randn({8, 16});
  const auto y = layer->forward(x).detach();

  // The same layer with its weights put on the 8-bit grid by hand: step 1/128, integers
  // [-128, 127], round half to even.
  torch::NoGradGuard no_grad;
  const auto w = torch::clamp(torch::round(fc->weight * 128), -128, 127) / 128;
  const auto expected = torch::nn::functional::linear(x, w, fc->bias);
  const bool quantized = torch::equal(y, expected);

  qi::torch::save(*layer, path);
  auto fresh = wrap_linear(4);  // other weights and another quantizer, until load replaces them
  qi::torch::load(*fresh, path);
  fresh->eval();
  const bool reloaded = torch::equal(fresh->forward(x), y);
  std::printf("qi %s torch %s: wrapped Linear equals hand-quantized: %s, reload identical: %s\n",
              qi::kVersion, TORCH_VERSION, quantized ? "true" : "false",
              reloaded ? "true" : "false");
  return quantized && reloaded ? 0 : 1;
}
