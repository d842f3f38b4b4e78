// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The qi operators (TORCH_LIBRARY(qi, ...)), callable from C++ and, after
// torch.ops.load_library(<libqi_torch.so>), from Python as torch.ops.qi.<name>.
// All take CPU tensors of any strides in float32, float16, bfloat16 or float64, compute on qi's
// float32 grids and return a new tensor in the input's dtype and memory format. Bad arguments
// throw c10::ValueError (ValueError in Python) with the core's message.
#pragma once

#include <optional>
#include <string>

#include <ATen/core/Tensor.h>

#include "qi/inferable_quantizers.h"
#include "qi/kernels.h"
#include "qi/trainable_math.h"

namespace qi::torch {

// qi::fake_quant(Tensor x, str quantizer) -> Tensor
// Applies the inferable quantizer whose to_json() text is `quantizer` (parsed once and cached).
// Gradient: straight through (identity) with respect to x.
at::Tensor fake_quant(const at::Tensor& x, const std::string& quantizer_json);
at::Tensor fake_quant(const at::Tensor& x, const BaseInferableQuantizer& quantizer);

// qi::quantize(Tensor x, Tensor plan, int? channel_axis, int? input_rank) -> Tensor
// The inferable quantizer whose packed plan (BaseInferableQuantizer::packed_plan(), an int32
// tensor) is `plan`, without parsing anything per call; channel_axis and input_rank as the
// quantizer's config holds them. Gradient: straight through.
at::Tensor quantize(const at::Tensor& x, const at::Tensor& plan,
                    std::optional<int64_t> channel_axis, std::optional<int64_t> input_rank);
// The packed plan of `quantizer` as an int32 CPU tensor.
at::Tensor packed_plan(const BaseInferableQuantizer& quantizer);

// qi::symmetric_quant(Tensor x, Tensor threshold, int num_bits, bool is_signed,
//     int? channel_axis, str mode, float grad_scale, int? grad_scale_axis=None,
//     float min_threshold=0., bool power_of_two=False, int? group_size=None,
//     int group_axis=-1) -> Tensor
// y = delta * clamp(nearbyint(x / delta), qmin, qmax), delta = t' / 2^(n - s), the torch profile
// of WeightsSymmetric/ActivationSymmetric, with t' = max(threshold, min_threshold), rounded up to
// a power of two when power_of_two. threshold: one value, or one per channel along channel_axis.
// mode "ste" or "lsq" (trainable_math.h GradMode); LSQ scales the threshold gradient by
// grad_scale, divided by sqrt(x.size(grad_scale_axis)) when that axis is given. group_size: one
// threshold per (channel, group) of group_size elements along group_axis (the inferable
// per-group layout; gradients summed per group).
at::Tensor symmetric_quant(const at::Tensor& x, const at::Tensor& threshold, int64_t num_bits,
                           bool is_signed, std::optional<int64_t> channel_axis,
                           const std::string& mode, double grad_scale,
                           std::optional<int64_t> grad_scale_axis = std::nullopt,
                           double min_threshold = 0.0, bool power_of_two = false,
                           std::optional<int64_t> group_size = std::nullopt,
                           int64_t group_axis = -1);

// qi::uniform_quant(Tensor x, Tensor min_range, Tensor max_range, int num_bits,
//     int? channel_axis, str mode, float grad_scale, bool activation,
//     int? grad_scale_axis=None, int? group_size=None, int group_axis=-1) -> Tensor
// The torch-profile uniform grid over the zero-adjusted [min, max] (activation: the scale is
// computed as ActivationUniformInferableQuantizer does). Gradients for x, min_range, max_range.
// group_size, group_axis: one range per (channel, group), as for symmetric_quant.
at::Tensor uniform_quant(const at::Tensor& x, const at::Tensor& min_range,
                         const at::Tensor& max_range, int64_t num_bits,
                         std::optional<int64_t> channel_axis, const std::string& mode,
                         double grad_scale, bool activation,
                         std::optional<int64_t> grad_scale_axis = std::nullopt,
                         std::optional<int64_t> group_size = std::nullopt,
                         int64_t group_axis = -1);

// qi::format_quant(Tensor x, Tensor scale, Tensor tensor_scale, str format, str scaling,
//     int? channel_axis, str mode, float grad_scale, int? grad_scale_axis=None,
//     int? group_size=None, int group_axis=-1, float? tensor_grad_scale=None) -> Tensor
// The formats' trainable op (trainable_math.h FormatQuantArgs): y = E * F(clamp(x / E, -max,
// max)) with F the rounding of `format` (a FLOAT format, "E2M1" for NVFP4, or an MX element
// format) and E the element's scale as `scaling` says: "scale" (scale holds it: one value, one
// per channel or one per (channel, group)), "fp8_scale" (NVFP4 blocks with learned scales:
// scale holds the block scales, tensor_scale none or one value), "mx" (MX blocks after a
// pre-scale, one value in scale) or "nvfp4" (NVFP4 from the data, tensor_scale none or one
// fixed value). A tensor the scaling does not use is empty (0 elements). Gradients for x, scale
// and tensor_scale, straight through every rounding; mode "ste" or "lsq" and grad_scale,
// grad_scale_axis as for symmetric_quant; tensor_grad_scale (fp8_scale only) scales
// tensor_scale's gradient instead of grad_scale.
at::Tensor format_quant(const at::Tensor& x, const at::Tensor& scale,
                        const at::Tensor& tensor_scale, const std::string& format,
                        const std::string& scaling, std::optional<int64_t> channel_axis,
                        const std::string& mode, double grad_scale,
                        std::optional<int64_t> grad_scale_axis = std::nullopt,
                        std::optional<int64_t> group_size = std::nullopt,
                        int64_t group_axis = -1,
                        std::optional<double> tensor_grad_scale = std::nullopt);

// qi::soft_round(Tensor w, Tensor alpha, Tensor threshold_or_min, int num_bits,
//     bool power_of_two, int? channel_axis, bool training, Tensor? max_range=None) -> Tensor
// q = delta * (clamp(floor((w - offset) / delta) + h(alpha), qmin, qmax) - zero_point) on the
// grid of the symmetric (max_range undefined: threshold_or_min holds thresholds) or uniform
// (threshold_or_min and max_range hold the range) inferable quantizer, h(alpha) hardened to
// {0, 1} when not training (trainable_math.h SoftRoundArgs). Gradient for alpha only.
at::Tensor soft_round(const at::Tensor& w, const at::Tensor& alpha,
                      const at::Tensor& threshold_or_min, int64_t num_bits, bool power_of_two,
                      std::optional<int64_t> channel_axis, bool training,
                      const at::Tensor& max_range = at::Tensor());

// qi::soft_round_regularization(Tensor alpha, float beta) -> Tensor (a 0-d tensor)
// sum(1 - |2 (h(alpha) - 0.5)|^beta); differentiable in alpha.
at::Tensor soft_round_regularization(const at::Tensor& alpha, double beta);

// The eager fast path of an inferable quantizer's call (Python's q(x) and the wrappers): qi::quantize
// with an already unpacked plan, straight to the CPU kernel, skipping the dispatcher. Returns an
// undefined tensor when the call must go through the dispatcher instead: x is not a plain CPU
// floating tensor, autograd must record it (grad mode on and x requires grad, or a forward-mode
// tangent), or a tracer, a Python mode, functorch or functionalization is active. Outputs are
// those of qi::quantize, bit for bit; errors are the same c10::ValueError.
at::Tensor quantize_eager(const at::Tensor& x, const kernels::Plan& plan,
                          std::optional<int64_t> channel_axis, std::optional<int64_t> input_rank);

// Makes sure the op library is linked in and qi's parallel_for uses at::parallel_for.
void init();

}  // namespace qi::torch
