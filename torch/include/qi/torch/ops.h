// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The qi operators (TORCH_LIBRARY(qi, ...)), callable from C++ and, after
// torch.ops.load_library(<libqi_torch.so>), from Python as torch.ops.qi.<name>.
// All take float32 CPU tensors of any strides and return a new contiguous tensor.
#pragma once

#include <optional>
#include <string>

#include <ATen/core/Tensor.h>

#include "qi/inferable_quantizers.h"
#include "qi/trainable_math.h"

namespace qi::torch {

// qi::fake_quant(Tensor x, str quantizer) -> Tensor
// Applies the inferable quantizer whose to_json() text is `quantizer` (parsed once and cached).
// Gradient: straight through (identity) with respect to x.
at::Tensor fake_quant(const at::Tensor& x, const std::string& quantizer_json);
at::Tensor fake_quant(const at::Tensor& x, const BaseInferableQuantizer& quantizer);

// qi::symmetric_quant(Tensor x, Tensor threshold, int num_bits, bool is_signed,
//                     int? channel_axis, str mode, float grad_scale) -> Tensor
// y = delta * (clamp(nearbyint(x / delta), qmin, qmax)), delta = threshold / 2^(n - s), the torch
// profile of WeightsSymmetric/ActivationSymmetric. threshold: 1-D, one value per channel along
// channel_axis (or one value). mode "ste" or "lsq" (trainable_math.h GradMode); the threshold
// gradient is multiplied by grad_scale (LSQ's g).
at::Tensor symmetric_quant(const at::Tensor& x, const at::Tensor& threshold, int64_t num_bits,
                           bool is_signed, std::optional<int64_t> channel_axis,
                           const std::string& mode, double grad_scale);

// qi::uniform_quant(Tensor x, Tensor min_range, Tensor max_range, int num_bits,
//                   int? channel_axis, str mode, float grad_scale, bool activation) -> Tensor
// The torch-profile uniform grid over the zero-adjusted [min, max] (activation: the scale is
// computed as ActivationUniformInferableQuantizer does). Gradients for x, min_range, max_range.
at::Tensor uniform_quant(const at::Tensor& x, const at::Tensor& min_range,
                         const at::Tensor& max_range, int64_t num_bits,
                         std::optional<int64_t> channel_axis, const std::string& mode,
                         double grad_scale, bool activation);

// qi::soft_round(Tensor w, Tensor alpha, Tensor delta, Tensor offset, float qmin, float qmax,
//                int? channel_axis, bool training) -> Tensor
// q = delta * clamp(floor((w - offset) / delta) + h(alpha), qmin, qmax) + offset, with
// h(alpha) hardened to {0, 1} when not training. Gradient for alpha only. An undefined or empty
// offset means 0.
at::Tensor soft_round(const at::Tensor& w, const at::Tensor& alpha, const at::Tensor& delta,
                      const at::Tensor& offset, double qmin, double qmax,
                      std::optional<int64_t> channel_axis, bool training);

// qi::soft_round_regularization(Tensor alpha, float beta) -> Tensor (a 0-d tensor)
// sum(1 - |2 (h(alpha) - 0.5)|^beta); differentiable in alpha.
at::Tensor soft_round_regularization(const at::Tensor& alpha, double beta);

// Makes sure the op library is linked in and qi's parallel_for uses at::parallel_for.
void init();

}  // namespace qi::torch
