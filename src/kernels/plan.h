// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Internal: turns quantizer parameters into kernel plans, mirroring the precision of the
// framework each profile emulates (docs/numerics.md).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "qi/kernels.h"

namespace qi::kernels {

// Symmetric/POT grid for the torch profile: scale = float(t / 2^(n - s)), zero point 0,
// integers [-2^(n-1), 2^(n-1)-1] (signed) or [0, 2^n - 1].
AffineTorchPlan symmetric_torch_plan(const std::vector<double>& threshold, int64_t num_bits,
                                     bool is_signed);

// Uniform grid for the torch profile. Range adjustment in float32 without clamping (as
// mct_quantizers' torch quantizers); zero point = -nearbyint(min_adj / scale) (rounded, not
// truncated). scale_in_double: the activation quantizer computes the scale in double from the
// float32 adjusted range and rounds it to float once.
AffineTorchPlan uniform_torch_plan(const std::vector<double>& min_range,
                                   const std::vector<double>& max_range, int64_t num_bits,
                                   bool scale_in_double);

// The float32 range adjustment of the torch profile, for one channel.
void adjust_range_float(float min, float max, int64_t num_bits, float* min_adj, float* max_adj);
// The float64 range adjustment with clamping of the tf profile (Keras quantizers).
void adjust_range_double(double min, double max, int64_t num_bits, double* min_adj,
                         double* max_adj);

// TensorFlow fake quant over [min, max] per channel (already zero-adjusted in double, then cast
// to float as Keras passes them), with TF's nudging in float32.
AffineTfPlan tf_plan_from_ranges(const std::vector<double>& min_range,
                                 const std::vector<double>& max_range, int64_t num_bits,
                                 bool per_channel);
// Keras symmetric/POT: min = -t (signed) or 0, max = t - t / 2^(n - s), then tf_plan_from_ranges.
AffineTfPlan symmetric_tf_plan(const std::vector<double>& threshold, int64_t num_bits,
                               bool is_signed, bool per_channel);
AffineTfPlan uniform_tf_plan(const std::vector<double>& min_range,
                             const std::vector<double>& max_range, int64_t num_bits,
                             bool per_channel);

// LUT plan. divisor_in_double: activation quantizers add eps to the threshold in double (a
// Python float) and round once; weights add in float32 (a float32 tensor plus eps).
LutPlan lut_plan(const std::vector<double>& lut_values, const std::vector<double>& threshold,
                 bool is_signed, int64_t lut_values_bitwidth, double eps, bool divisor_in_double);

// Scaled low-precision float: the scales rounded to float32 once.
FloatPlan float_plan(const FloatFormat& format, const std::vector<double>& scale);

// floor(log2(max)) of an MX element format.
int32_t mx_emax(const FloatFormat& format);
// tensor_scale: the pre-scale (none: none).
MxPlan mx_plan(const FloatFormat& format, int64_t block_size, int64_t block_axis,
               std::optional<double> tensor_scale = std::nullopt);
// tensor_scale: none for single-level scaling.
Nvfp4Plan nvfp4_plan(std::optional<double> tensor_scale, int64_t block_axis);
// NVFP4 with stored E4M3 block scales s (one per channel and block of 16 along block_axis): the
// E2M1 FloatPlan of the scales nvfp4_total(s, t) in groups of 16.
FloatPlan nvfp4_stored_plan(const std::vector<double>& block_scales,
                            std::optional<double> tensor_scale, int64_t block_axis);

}  // namespace qi::kernels
