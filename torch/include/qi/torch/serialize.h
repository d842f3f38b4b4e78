// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// One file holds a model's parameters and buffers and the quantizers of every wrapper and
// holder in it (as JSON), so that reloading gives bit-identical outputs.
#pragma once

#include <string>

#include <torch/nn/module.h>

namespace qi::torch {

// Writes `model` to `path` atomically: to a temporary file beside it, renamed on success (a
// failed save leaves no partial file and keeps an existing file intact). Throws qi::Error.
void save(::torch::nn::Module& model, const std::string& path);

// Loads `path` into `model`, which must have the same architecture (the same wrappers and
// holders by name, the same parameters): each wrapper's quantizers are rebuilt from the file,
// then parameters and buffers are read. Missing, truncated or corrupt files and mismatched
// architectures throw qi::Error.
void load(::torch::nn::Module& model, const std::string& path);

}  // namespace qi::torch
