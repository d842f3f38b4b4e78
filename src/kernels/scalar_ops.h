// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Internal: the per-element formulas in plain float32 C++, used for the tails of SIMD rows and
// for strided fallbacks. Each mirrors its SIMD twin operation by operation, so both give the
// same bits (compiled with -ffp-contract=off: no silent FMA).
#pragma once

#include <cmath>
#include <cstddef>

namespace qi::kernels::scalar {

inline float affine_torch(float x, float scale, float inv_scale, float zp, float qmin,
                          float qmax) {
  if (std::isnan(x)) return x;
  float q = std::nearbyint(x * inv_scale) + zp;  // round half to even (default FP mode)
  q = std::fmin(std::fmax(q, qmin), qmax);
  return (q - zp) * scale;
}

inline float affine_tf(float x, float scale, float inv_scale, float nmin, float nmax,
                       float quant_zero, bool use_division) {
  if (std::isnan(x)) return x;
  const float c = std::fmax(std::fmin(x, nmax), nmin) - nmin;
  const float v = use_division ? c / scale : c * inv_scale;
  return std::floor(v - quant_zero + 0.5f) * scale;  // round half up, as TF
}

// Index of the first LUT entry nearest to v (the brute force the LUT plan's boundaries encode).
inline size_t lut_index_of_value(float v, const float* lut, size_t n) {
  size_t best = 0;
  float best_d = std::fabs(v - lut[0]);
  for (size_t j = 1; j < n; ++j) {
    const float d = std::fabs(v - lut[j]);
    if (d < best_d) {
      best_d = d;
      best = j;
    }
  }
  return best;
}

// The LUT plan's int-domain value of x: clamp((x / divisor) * multiplier, lo, hi).
inline float lut_value(float x, float divisor, float multiplier, float lo, float hi) {
  return std::fmin(std::fmax((x / divisor) * multiplier, lo), hi);
}

// Number of boundaries <= v: the position of the picked value among the distinct LUT values.
inline size_t lut_step(float v, const float* boundaries, size_t n) {
  size_t k = 0;
  for (size_t j = 0; j < n; ++j) k += v >= boundaries[j] ? 1 : 0;
  return k;
}

}  // namespace qi::kernels::scalar
