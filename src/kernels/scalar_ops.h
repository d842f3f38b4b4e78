// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Internal: the per-element formulas in plain float32 C++, used for the tails of SIMD rows and
// for strided fallbacks. Each mirrors its SIMD twin operation by operation, so both give the
// same bits (compiled with -ffp-contract=off: no silent FMA).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

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

// The biased float32 exponent of a float format's smallest normal value: 127 + 1 - bias with
// bias 2^(ebits-1) - 1. ebits 0 (MX's INT8): 127, so that the spacing is 2^-mbits everywhere.
inline int32_t float_format_emin_biased(int32_t ebits) {
  return ebits == 0 ? 127 : 128 - ((1 << (ebits - 1)) - 1);
}

// v (not NaN, |v| at most the format's max) rounded to the float format of `mbits` mantissa bits
// and smallest normal exponent emin, half to even, subnormals included. Its spacing at |v| is
// q = 2^(E - mbits) with E = max(exponent(|v|), emin); float32's spacing at M = 2^23 * q is q,
// so the float32 sum |v| + M rounds |v| to a multiple of q (half to even, as M is an even
// multiple) and subtracting M again is exact. The sign (of zero too) is v's.
inline float float_format_round(float v, int32_t mbits, int32_t emin_biased) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  const uint32_t magnitude = bits & 0x7fffffffu;
  const int32_t e = std::max(static_cast<int32_t>(magnitude >> 23), emin_biased);
  const uint32_t m_bits = static_cast<uint32_t>(e - mbits + 23) << 23;
  float a, m;
  std::memcpy(&a, &magnitude, 4);
  std::memcpy(&m, &m_bits, 4);
  const float r = (a + m) - m;
  uint32_t r_bits;
  std::memcpy(&r_bits, &r, 4);
  r_bits |= bits & 0x80000000u;
  float out;
  std::memcpy(&out, &r_bits, 4);
  return out;
}

// The FLOAT quantizer (FloatPlan): clamp(x / divisor, -max, max) rounded to the format, times
// multiplier (both the scale, except in MX's smallest blocks).
inline float float_quant(float x, float divisor, float multiplier, float max, int32_t mbits,
                         int32_t emin_biased) {
  if (std::isnan(x)) return x;
  const float v = std::fmin(std::fmax(x / divisor, -max), max);
  return float_format_round(v, mbits, emin_biased) * multiplier;
}

// MX's shared scale of a block whose largest magnitude is amax (not NaN): the divisor
// max(2^e, 2^-126) and the multiplier 2^e of MxPlan; false when e is E8M0's NaN (128).
inline bool mx_scales(float amax, int32_t emax, float* divisor, float* multiplier) {
  uint32_t bits;
  std::memcpy(&bits, &amax, 4);
  const int32_t exponent = amax == 0.f ? -126 : static_cast<int32_t>(bits >> 23) - 127;
  const int32_t e = std::min(std::max(exponent - emax, -127), 128);
  if (e == 128) return false;
  *multiplier = std::ldexp(1.f, e);  // 2^-127 is a float32 subnormal, exactly
  *divisor = std::ldexp(1.f, std::max(e, -126));
  return true;
}

// NVFP4's block scale (Nvfp4Plan) for the block's largest magnitude amax (not NaN): the float32
// `total` the block is divided and multiplied by.
inline float nvfp4_total_scale(float amax, float tensor_scale) {
  float s = amax / 6.f;
  if (tensor_scale > 0) s = s / tensor_scale;
  s = std::fmin(std::fmax(s, 0.015625f), 448.f);     // E4M3's smallest normal and largest
  s = float_format_round(s, 3, float_format_emin_biased(4));  // to E4M3
  return tensor_scale > 0 ? tensor_scale * s : s;
}

}  // namespace qi::kernels::scalar
