// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Internal: the per-element formulas in plain float32 C++, used for the tails of SIMD rows, for
// strided fallbacks and by the CUDA kernels (torch/csrc/cuda), which compile this very header
// for the device. Each mirrors its SIMD twin operation by operation, so all give the same bits:
// only correctly rounded IEEE operations (+, -, *, /, nearbyint, floor, fmin, fmax), compiled
// without contraction into FMA (-ffp-contract=off on the host, -fmad=false for the device).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

// Functions callable from host and device code (nvcc); plain inline functions elsewhere.
#if defined(__CUDACC__)
#define QI_HOST_DEVICE __host__ __device__
#else
#define QI_HOST_DEVICE
#endif

namespace qi::kernels::scalar {

QI_HOST_DEVICE inline uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
#endif
}

QI_HOST_DEVICE inline float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}

QI_HOST_DEVICE inline bool is_nan(float x) { return x != x; }
// The quiet bit of a float32 NaN (the mantissa's top bit).
constexpr uint32_t kQuietNaNBit = 0x00400000u;
// A NaN x made quiet, its sign and payload kept: what IEEE arithmetic on x returns on the CPUs
// qi targets (an operation quiets a signalling NaN operand and passes a quiet one through).
QI_HOST_DEVICE inline float quiet_nan(float x) {
  return bits_float(float_bits(x) | kQuietNaNBit);
}
QI_HOST_DEVICE inline int32_t max_i32(int32_t a, int32_t b) { return a > b ? a : b; }
QI_HOST_DEVICE inline int32_t min_i32(int32_t a, int32_t b) { return a < b ? a : b; }

// 2^e as a float32 for e in [-149, 127], exactly (subnormal powers included).
QI_HOST_DEVICE inline float exp2_int(int32_t e) {
  return e >= -126 ? bits_float(static_cast<uint32_t>(e + 127) << 23)
                   : bits_float(uint32_t{1} << (e + 149));
}

QI_HOST_DEVICE inline float affine_torch(float x, float scale, float inv_scale, float zp,
                                         float qmin, float qmax) {
  if (is_nan(x)) return quiet_nan(x);  // as the SIMD rows' arithmetic returns it
  float q = nearbyintf(x * inv_scale) + zp;  // round half to even (default FP mode)
  q = fminf(fmaxf(q, qmin), qmax);
  return (q - zp) * scale;
}

QI_HOST_DEVICE inline float affine_tf(float x, float scale, float inv_scale, float nmin,
                                      float nmax, float quant_zero, bool use_division) {
  if (is_nan(x)) return quiet_nan(x);
  const float c = fmaxf(fminf(x, nmax), nmin) - nmin;
  const float v = use_division ? c / scale : c * inv_scale;
  return floorf(v - quant_zero + 0.5f) * scale;  // round half up, as TF
}

// Index of the first LUT entry nearest to v (the brute force the LUT plan's boundaries encode).
QI_HOST_DEVICE inline size_t lut_index_of_value(float v, const float* lut, size_t n) {
  size_t best = 0;
  float best_d = fabsf(v - lut[0]);
  for (size_t j = 1; j < n; ++j) {
    const float d = fabsf(v - lut[j]);
    if (d < best_d) {
      best_d = d;
      best = j;
    }
  }
  return best;
}

// The LUT plan's int-domain value of x: clamp((x / divisor) * multiplier, lo, hi).
QI_HOST_DEVICE inline float lut_value(float x, float divisor, float multiplier, float lo,
                                      float hi) {
  return fminf(fmaxf((x / divisor) * multiplier, lo), hi);
}

// Number of boundaries <= v: the position of the picked value among the distinct LUT values.
QI_HOST_DEVICE inline size_t lut_step(float v, const float* boundaries, size_t n) {
  size_t k = 0;
  for (size_t j = 0; j < n; ++j) k += v >= boundaries[j] ? 1 : 0;
  return k;
}

// The biased float32 exponent of a float format's smallest normal value: 127 + 1 - bias with
// bias 2^(ebits-1) - 1. ebits 0 (MX's INT8): 127, so that the spacing is 2^-mbits everywhere.
QI_HOST_DEVICE inline int32_t float_format_emin_biased(int32_t ebits) {
  return ebits == 0 ? 127 : 128 - ((1 << (ebits - 1)) - 1);
}

// v (not NaN, |v| at most the format's max) rounded to the float format of `mbits` mantissa bits
// and smallest normal exponent emin, half to even, subnormals included. Its spacing at |v| is
// q = 2^(E - mbits) with E = max(exponent(|v|), emin); float32's spacing at M = 2^23 * q is q,
// so the float32 sum |v| + M rounds |v| to a multiple of q (half to even, as M is an even
// multiple) and subtracting M again is exact. The sign (of zero too) is v's.
QI_HOST_DEVICE inline float float_format_round(float v, int32_t mbits, int32_t emin_biased) {
  const uint32_t bits = float_bits(v);
  const uint32_t magnitude = bits & 0x7fffffffu;
  const int32_t e = max_i32(static_cast<int32_t>(magnitude >> 23), emin_biased);
  const float a = bits_float(magnitude);
  const float m = bits_float(static_cast<uint32_t>(e - mbits + 23) << 23);
  const float r = (a + m) - m;
  return bits_float(float_bits(r) | (bits & 0x80000000u));
}

// The FLOAT quantizer (FloatPlan): clamp(x / divisor, -max, max) rounded to the format, times
// multiplier (both the scale, except in MX's smallest blocks).
QI_HOST_DEVICE inline float float_quant(float x, float divisor, float multiplier, float max,
                                        int32_t mbits, int32_t emin_biased) {
  if (is_nan(x)) return x;
  const float v = fminf(fmaxf(x / divisor, -max), max);
  return float_format_round(v, mbits, emin_biased) * multiplier;
}

// MX's shared scale of a block whose largest magnitude is amax (not NaN): the divisor
// max(2^e, 2^-126) and the multiplier 2^e of MxPlan; false when e is E8M0's NaN (128).
QI_HOST_DEVICE inline bool mx_scales(float amax, int32_t emax, float* divisor,
                                     float* multiplier) {
  const uint32_t bits = float_bits(amax);
  const int32_t exponent = amax == 0.f ? -126 : static_cast<int32_t>(bits >> 23) - 127;
  const int32_t e = min_i32(max_i32(exponent - emax, -127), 128);
  if (e == 128) return false;
  *multiplier = exp2_int(e);  // 2^-127 is a float32 subnormal, exactly
  *divisor = exp2_int(max_i32(e, -126));
  return true;
}

// An MX element under the pre-scale p (MxPlan::tensor_scale; p <= 0: none): float_quant of
// u = x / p (float32) with the scales of u's block, times p. Those scales come from the block's
// max |u|, which is (max |x|) / p rounded once: float32 division by p > 0 is monotone.
QI_HOST_DEVICE inline float mx_prescaled_quant(float x, float pre, float divisor,
                                               float multiplier, float max, int32_t mbits,
                                               int32_t emin_biased) {
  if (pre <= 0) return float_quant(x, divisor, multiplier, max, mbits, emin_biased);
  return float_quant(x / pre, divisor, multiplier, max, mbits, emin_biased) * pre;
}

// NVFP4's FP8 E4M3 block scale of a (computed, learned or stored) value b: e4m3(clamp(b, 2^-6,
// 448)), E4M3's smallest normal and largest value.
QI_HOST_DEVICE inline float nvfp4_block_scale(float b) {
  return float_format_round(fminf(fmaxf(b, 0.015625f), 448.f), 3, float_format_emin_biased(4));
}

// The total scale of a block whose E4M3 scale is s: tensor_scale * s (without a tensor scale,
// tensor_scale <= 0: s).
QI_HOST_DEVICE inline float nvfp4_total(float s, float tensor_scale) {
  return tensor_scale > 0 ? tensor_scale * s : s;
}

// NVFP4's block scale (Nvfp4Plan) for the block's largest magnitude amax (not NaN): the float32
// `total` the block is divided and multiplied by.
QI_HOST_DEVICE inline float nvfp4_total_scale(float amax, float tensor_scale) {
  float s = amax / 6.f;
  if (tensor_scale > 0) s = s / tensor_scale;
  return nvfp4_total(nvfp4_block_scale(s), tensor_scale);
}

// ---- the trainable ops' grids (plan.cc builds them on the host, the CUDA layer on the device) --

// The integer grid [qmin, qmax] of the symmetric quantizers: [-2^(n-1), 2^(n-1) - 1] when
// signed, else [0, 2^n - 1] (num_bits n in [1, 30]).
QI_HOST_DEVICE inline void symmetric_grid(int32_t num_bits, bool is_signed, float* qmin,
                                          float* qmax) {
  const int64_t half = int64_t{1} << (num_bits - 1);
  *qmin = is_signed ? static_cast<float>(-half) : 0.f;
  *qmax = static_cast<float>(is_signed ? half - 1 : 2 * half - 1);
}

// 2^ceil(log2(t)) for a finite t > 0, exactly (frexp: t = m * 2^e with m in [0.5, 1)).
QI_HOST_DEVICE inline double pow2_ceil(double t) {
  int e = 0;
  const double m = frexp(t, &e);
  return ldexp(1.0, m == 0.5 ? e - 1 : e);
}

// The symmetric grid's float32 step for an effective threshold t and 2^(n - s) = steps:
// t / steps is exact in double (a power of two); one rounding to float32.
QI_HOST_DEVICE inline float symmetric_scale(double t, double steps) {
  return static_cast<float>(t / steps);
}

// The torch profile's range adjustment in float32, without clamping (as mct_quantizers' torch
// quantizers), for levels = 2^n - 1.
QI_HOST_DEVICE inline void adjust_range_float(float min, float max, float levels, float* min_adj,
                                              float* max_adj) {
  const float scale = (max - min) / levels;
  const float shifted_min = scale * nearbyintf(min / scale);
  const float shifted_max = (max - min) + shifted_min;
  if (min > 0) {
    *min_adj = 0.f;
    *max_adj = max;
  } else if (max < 0) {
    *min_adj = min;
    *max_adj = 0.f;
  } else {
    *min_adj = shifted_min;
    *max_adj = shifted_max;
  }
}

// The uniform grid's scale and zero point over the adjusted range [lo, hi] with levels_d = 2^n - 1
// (the grid [0, levels]). scale_in_double: the activation quantizer computes the scale in double
// from the float32 ends and rounds it once. The zero point is -nearbyint(lo / scale), kept inside
// the grid (float error can push it one step out), +0 rather than -0.
QI_HOST_DEVICE inline void uniform_scale_zero_point(float lo, float hi, double levels_d,
                                                    bool scale_in_double, float* scale,
                                                    float* zero_point) {
  float zp;
  if (scale_in_double) {
    const double s = (static_cast<double>(hi) - static_cast<double>(lo)) / levels_d;
    *scale = static_cast<float>(s);
    zp = static_cast<float>(-nearbyint(static_cast<double>(lo) / s));
  } else {
    *scale = (hi - lo) / static_cast<float>(levels_d);
    zp = -nearbyintf(lo / *scale);
  }
  *zero_point = fminf(fmaxf(zp, 0.f), static_cast<float>(levels_d)) + 0.f;
}

// The gradient of adjust_range_float as MCT's differentiable version computes it (torch.round has
// a zero gradient): d_min and d_max from the gradients of the adjusted ends, levels = 2^n - 1.
QI_HOST_DEVICE inline void adjust_range_backward(float min, float max, double levels,
                                                 double d_min_adj, double d_max_adj,
                                                 double* d_min, double* d_max) {
  if (min > 0) {  // (0, max)
    *d_min = 0;
    *d_max = d_max_adj;
    return;
  }
  if (max < 0) {  // (min, 0)
    *d_min = d_min_adj;
    *d_max = 0;
    return;
  }
  // min_adj = s * R with s = (max - min) / L and R = round(min / s) held constant;
  // max_adj = max - min + min_adj.
  const float s = (max - min) / static_cast<float>(levels);
  const double r = nearbyintf(min / s);
  const double dmin_adj_dmax = r / levels, dmin_adj_dmin = -r / levels;
  *d_min = d_min_adj * dmin_adj_dmin + d_max_adj * (-1.0 + dmin_adj_dmin);
  *d_max = d_min_adj * dmin_adj_dmax + d_max_adj * (1.0 + dmin_adj_dmax);
}

// One element of the affine fake quantizer's backward (torch profile, trainable_math.h): the
// forward's own arithmetic u = x * (1/scale). LSQ inside the grid: d(scale * round(u))/dscale =
// round(u) - u; outside the clip holds q = scale * c + a, so dq/dscale = c and dq/da = 1. STE:
// dq/dscale = c - zp - u. Adds g times those to *d_scale and *d_offset (double) and returns dx
// (LSQ: g inside the grid, 0 outside; STE: g). A NaN input makes both parameter gradients NaN,
// as autograd through the reference's ops does.
QI_HOST_DEVICE inline float affine_backward_terms(float xv, float g, float inv_scale, float zp,
                                                  float qmin, float qmax, bool lsq,
                                                  double* d_scale, double* d_offset) {
  const float u = xv * inv_scale;
  const float r = nearbyintf(u);
  const float q = r + zp;
  const bool inside = q >= qmin && q <= qmax;
  const float cl = fminf(fmaxf(q, qmin), qmax);
  if (lsq) {
    const bool nan = is_nan(u);
    *d_scale += g * (inside ? static_cast<double>(r) - u : nan ? u : static_cast<double>(cl));
    if (!inside) *d_offset += nan ? u : g;
    return inside ? g : 0.f;
  }
  *d_scale += g * (static_cast<double>(cl) - zp - u);
  return g;
}

}  // namespace qi::kernels::scalar
