// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Whole-model quantization of a LibTorch module tree in one call: the C++ form of the Python
// front ends' quantize / prepare_qat / convert, reading the same ModelQuantizationConfig.
//
// LibTorch has no graph to rewrite: a module's forward is compiled code that calls its member
// layers directly. What qi can re-route is a torch::nn::Sequential, whose entries it replaces in
// place (wherever that Sequential sits in the tree, a member of a custom module included). So:
// - every Conv1d/2d/3d, ConvTranspose1d/2d/3d, Linear and Embedding that is an entry of a
//   Sequential is wrapped (QuantizationWrapper) with its weight quantizer;
// - its output quantizer goes after the element-wise activation modules that follow it in the
//   Sequential (ReLU, ReLU6, Hardtanh, LeakyReLU, SiLU, GELU, Sigmoid, Tanh; the quantized value
//   is the activation's output, as deployed kernels fuse them): into the layer's wrapper, or a
//   wrapper around the last of those activations;
// - a BatchNorm1d/2d/3d entry right after a convolution or Linear is folded into it (its
//   running statistics become the layer's weight and bias) and replaced by an Identity;
// - a quantizable layer held directly by a custom module is left as it is and listed in the
//   report's notes (build that part as a Sequential, or wrap it by hand).
// The model is changed in place (LibTorch modules cannot in general be copied); the report
// says what was done. Errors are qi::Error.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <torch/nn/module.h>

#include "qi/model_config.h"

namespace qi::torch {

// One quantized layer (or activation site) of the model.
struct LayerReport {
  std::string name;         // qualified module name ("features.0")
  std::string type;         // "Conv2d", "Linear", ...; an activation site: its module ("ReLU")
  std::string weights;      // the weight quantizer's class, "" when none
  std::string activations;  // the output quantizer's class, "" when none
  std::optional<double> weight_sqnr_db;  // 10 log10(|W|^2 / |W - Q(W)|^2) (eval-mode Q)
};

// What quantize / prepare_qat did: the quantized layers, the folds, the notes, calibration.
struct ModelReport {
  std::vector<LayerReport> layers;  // in model order
  std::vector<std::string> folded;  // "features.1 into features.0"
  std::vector<std::string> notes;   // what was skipped or left unquantized, and why
  int64_t calibration_calls = 0;    // forward calls the calibration saw (first site's)
  double calibration_seconds = 0;

  int64_t num_wrapped() const;              // layers with a weight quantizer
  int64_t num_activation_quantizers() const;
  // The per-layer table, then the counts and the notes.
  std::string to_string() const;
};

// Runs the model over the calibration data, e.g.
//   [&](torch::nn::Module&) { for (auto& x : batches) model->forward(x); }
// qi calls it once, in eval mode under NoGradGuard, with observers in place.
using ForwardLoop = std::function<void(::torch::nn::Module& model)>;

// Post-training quantization in place: weights calibrated from themselves, activations over
// `calibrate` (required when the config quantizes activations), inferable quantizers (a spec's
// "training" is ignored). Returns in eval mode.
ModelReport quantize(::torch::nn::Module& model,
                     const ModelQuantizationConfig& config = ModelQuantizationConfig::preset("w8a8"),
                     const ForwardLoop& calibrate = {});

// Quantization-aware training, step 1, in place: as quantize, but trainable quantizers (STE,
// LSQ) where the spec has "training", started from the calibrated parameters. Returns in train
// mode; the model's parameters() then hold the float weights and the quantizers' variables.
ModelReport prepare_qat(::torch::nn::Module& model,
                        const ModelQuantizationConfig& config =
                            ModelQuantizationConfig::preset("w4a8_lsq"),
                        const ForwardLoop& calibrate = {});

// Quantization-aware training, step 2: every trainable quantizer of every wrapper and holder
// replaced by its inferable conversion, in place; returns in eval mode.
void convert(::torch::nn::Module& model);

}  // namespace qi::torch
