// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Test-only: a slow, independent reference of every inferable quantizer, written from the
// numerics contract (docs/numerics.md) with no SIMD, no plan sharing and naive
// indexing. Arithmetic is double with an explicit rounding to float32 after each operation the
// contract performs in float32 (for + - * / this equals the float32 result exactly, since
// 53 >= 2 * 24 + 2).
#pragma once

#include <vector>

#include "qi/inferable_quantizers.h"

namespace qi::reference {

// Q(x) for every element of `in`, in row-major order of in's logical indices.
std::vector<float> fake_quant(InferableQuantizerKind kind, const QuantizerParams& params,
                              ConstTensorView in);

}  // namespace qi::reference
