// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Internal: dynamically dispatched SIMD rows (fake_quant.cc), called by the driver (driver.cc).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "qi/error.h"
#include "kernels/scalar_ops.h"
#include "qi/kernels.h"

namespace qi::kernels {

// out[i] = Q(in[i]) for i in [0, n); channel c0 for every element, or c0 + i when `vary`.
// `stream`: non-temporal stores for outputs too large to stay in cache.
void affine_torch_row(const float* in, float* out, int64_t n, const AffineTorchPlan& p,
                      int64_t c0, bool vary, bool stream);
void affine_tf_row(const float* in, float* out, int64_t n, const AffineTfPlan& p, int64_t c0,
                   bool vary, bool stream);
void lut_row(const float* in, float* out, int64_t n, const LutPlan& p, int64_t c0, bool vary,
             bool stream);
void float_row(const float* in, float* out, int64_t n, const FloatPlan& p, int64_t c0, bool vary,
               bool stream);
// n contiguous elements, whole blocks of the plan's block size.
void mx_row(const float* in, float* out, int64_t n, const MxPlan& p);
void nvfp4_row(const float* in, float* out, int64_t n, const Nvfp4Plan& p);

// Backward of the affine fake quantizer over n contiguous elements of channel c: writes dx
// (unless null) and adds the row's sums of dy * dq/dscale and dy * dq/da (trainable_math.h).
void affine_backward_row(const float* x, const float* dy, float* dx, int64_t n,
                         const AffineTorchPlan& p, int64_t c, bool lsq, double* d_scale,
                         double* d_offset);

// Backward of the formats' op (trainable_math.h FormatQuantArgs) over n contiguous elements:
// dx (unless null) and the sum of dy * dq/dE in element units, E the element's scale. One
// FLOAT scale (channel or group c of the plan); mx_/nvfp4_backward_row: whole blocks, each with
// its scales from the data, the sum weighted by each block's multiplier (MX: the E8M0 scale).
double format_backward_row(const float* x, const float* dy, float* dx, int64_t n,
                           const FloatPlan& p, int64_t c, bool lsq);
double mx_backward_row(const float* x, const float* dy, float* dx, int64_t n, const MxPlan& p,
                       bool lsq);
double nvfp4_backward_row(const float* x, const float* dy, float* dx, int64_t n,
                          const Nvfp4Plan& p, bool lsq);

// One element of the formats' backward (the rows' tails and trainable_math.cc's strided path):
// with u = x / E already divided and q = F(clamp(u, -max, max)), adds dy * dq/dE in element
// units to *sum (float64: q - u for STE and inside the range with LSQ, q outside, NaN for a NaN
// u) and returns dx (dy; LSQ: 0 outside the range).
inline float format_backward_one(float u, float g, float max, int32_t mbits, int32_t emin_biased,
                                 bool lsq, double* sum) {
  const float q =
      scalar::float_format_round(std::fmin(std::fmax(u, -max), max), mbits, emin_biased);
  const bool inside = std::fabs(u) <= max;  // false for NaN
  const bool passes = !lsq || inside;
  const double a = passes ? static_cast<double>(q) - u : std::isnan(u) ? u : q;
  *sum += static_cast<double>(g) * a;
  return passes ? g : 0.f;
}

// One element of affine_backward_row (the strided path and the rows' tails):
// scalar::affine_backward_terms of channel c, dx written unless null.
inline void affine_backward_one(float xv, float g, float* dx, const AffineTorchPlan& p, int64_t c,
                                bool lsq, double* d_scale, double* d_offset) {
  const float d = scalar::affine_backward_terms(xv, g, p.inv_scale[c], p.zero_point[c], p.qmin,
                                                p.qmax, lsq, d_scale, d_offset);
  if (dx) *dx = d;
}

}  // namespace qi::kernels
