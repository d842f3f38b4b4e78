// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Internal: the checks of the trainable affine ops that need no parameter value, for the CUDA
// layer (torch/csrc/cuda), whose parameters stay on the device: the static arguments, the
// parameter counts against the input's sizes, the channel axis and the LSQ gradient scale.
#pragma once

#include <cstddef>

#include "qi/trainable_math.h"

namespace qi::trainable {

// symmetric_quant_call without the thresholds' values: `count` thresholds. The plan is empty.
AffineCall symmetric_quant_shape(const char* op, const Shape& x_sizes, size_t count,
                                 const SymmetricQuantArgs& args);
// uniform_quant_call without the range's values: min_count and max_count ends. The plan is empty.
AffineCall uniform_quant_shape(const char* op, const Shape& x_sizes, size_t min_count,
                               size_t max_count, const UniformQuantArgs& args);

}  // namespace qi::trainable
