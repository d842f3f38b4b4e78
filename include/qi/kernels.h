// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Low-level fake-quantization kernels: per-channel float parameters ("plans") and the drivers
// that apply them to strided views with SIMD (Highway, ISA chosen at run time) and threads
// (qi::parallel_for). Quantizer classes build plans; most users never call this directly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "qi/tensor_view.h"

namespace qi::kernels {

// torch profile, per channel c:
//   q = zero_point[c] + nearbyint(x * inv_scale[c])      (float32, round half to even)
//   y = (clamp(q, qmin, qmax) - zero_point[c]) * scale[c]
// inv_scale is 1.0f / scale computed in float32, as ATen does.
struct AffineTorchPlan {
  std::vector<float> scale, inv_scale, zero_point;
  float qmin = 0.f, qmax = 0.f;
};

// tf profile (TensorFlow fake_quant_with_min_max_vars), per channel c:
//   c = clamp(x, nudged_min, nudged_max) - nudged_min
//   v = use_division ? c / scale : c * inv_scale      (TF divides per tensor, multiplies per channel)
//   y = floor(v - quant_zero + 0.5f) * scale
struct AffineTfPlan {
  std::vector<float> scale, inv_scale, nudged_min, nudged_max, quant_zero;
  bool use_division = true;
};

// LUT (non-uniform) quantizer, per channel c (REFERENCE.md 2.4):
//   v = clamp((x / divisor[c]) * multiplier, lo, hi)      divisor = threshold + eps
//   j = first argmin_j |v - lut[j]|   (float32 distances, ties to the first entry)
//   y = (lut[j] / multiplier) * threshold[c]
// The argmin is a monotone step function of v, so it is evaluated as k = the number of
// `boundaries` <= v, an index into the distinct LUT values in ascending order; the boundaries
// are found once, by bisection over float32 values with the brute-force search itself, so the
// result is the brute force's bit for bit. table[c * (boundaries.size() + 1) + k] is the output.
struct LutPlan {
  std::vector<float> divisor;
  std::vector<float> lut;         // as given
  std::vector<float> boundaries;  // ascending
  std::vector<float> table;
  float multiplier = 1.f, lo = 0.f, hi = 0.f;
};

using Plan = std::variant<AffineTorchPlan, AffineTfPlan, LutPlan>;

// Number of channels a plan holds (1 for a per-tensor plan).
int64_t plan_channels(const Plan& plan);

// Applies `plan` to `in`, writing `out` (same sizes; may be the very same view for in-place
// operation, but must not otherwise overlap). channel_axis: std::nullopt for per-tensor, else a
// normalized axis in [0, in.dim()) with in.sizes[axis] == plan_channels(plan).
// Preconditions are checked by the caller (the quantizer classes); violating them is undefined.
// NaN inputs stay NaN; +/-Inf clamp to the ends of the grid.
void fake_quant_forward(const Plan& plan, ConstTensorView in, TensorView out,
                        std::optional<int64_t> channel_axis);

// Name of the SIMD target the dispatcher picked on this machine (e.g. "AVX3", "AVX2").
std::string simd_target_name();

// Restricts dynamic dispatch to one compiled target, for conformance tests on every ISA.
// Returns the list of targets compiled in and supported here.
std::vector<std::string> supported_simd_targets();
// Forces the named target ("" restores the best). Throws qi::Error for an unknown name.
void force_simd_target(const std::string& name);

}  // namespace qi::kernels
