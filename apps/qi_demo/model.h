// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The qi-demo CNN in float and quantized form (shared by qi-demo and the QAT-step benchmark).
// The quantized form comes from the library's whole-model call, qi::torch::quantize /
// prepare_qat, on a copy of the float model.
#pragma once

#include <string>

#include <torch/torch.h>

#include "fashion_mnist.h"
#include "qi/torch/qi_torch.h"

namespace qi_demo {

namespace nn = torch::nn;

// conv(1->16) relu pool, conv(16->32) relu pool, fc(1568->128) relu, fc(128->10): a Sequential,
// so that qi's whole-model call reaches every layer.
nn::Sequential make_net();

// A copy of `net` (a make_net() model) quantized by `config`: post-training quantization (inferable quantizers), or
// with `qat` the config's trainable quantizers, ready to train. Activations are calibrated on
// the first 512 training images. The report is printed unless `quiet`.
nn::Sequential quantized_copy(const nn::Sequential& net, const qi::ModelQuantizationConfig& config,
                              bool qat, const torch::Tensor& calibration_images, bool quiet = false);

}  // namespace qi_demo
