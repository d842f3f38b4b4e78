// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Internal: dynamically dispatched SIMD rows (fake_quant.cc), called by the driver (driver.cc).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qi/error.h"
#include "qi/kernels.h"

namespace qi::kernels {

// out[i] = Q(in[i]) for i in [0, n); channel c0 for every element, or c0 + i when `vary`.
void affine_torch_row(const float* in, float* out, int64_t n, const AffineTorchPlan& p,
                      int64_t c0, bool vary);
void affine_tf_row(const float* in, float* out, int64_t n, const AffineTfPlan& p, int64_t c0,
                   bool vary);
void lut_row(const float* in, float* out, int64_t n, const LutPlan& p, int64_t c0, bool vary);

}  // namespace qi::kernels
