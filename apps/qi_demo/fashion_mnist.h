// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <string>

#include <ATen/core/Tensor.h>

namespace qi_demo {

struct Dataset {
  at::Tensor images;  // [N, 1, 28, 28] float32, normalized
  at::Tensor labels;  // [N] int64
};

// Reads the gzipped IDX files of Fashion-MNIST (Debian's dataset-fashion-mnist installs them in
// /usr/share/datasets/fashion-mnist). split: "train" or "t10k". Throws std::runtime_error with
// the path and the problem when a file is missing or malformed.
Dataset load_fashion_mnist(const std::string& dir, const std::string& split);

}  // namespace qi_demo
