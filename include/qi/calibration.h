// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Post-training calibration: quantization parameters from data (per tensor or per channel).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "qi/tensor_view.h"

namespace qi::calibration {

// max |x| over the tensor or over each slice along channel_axis (normalized axis or nullopt).
// A slice that is all zero (or empty) gets `floor` so the result is always a valid threshold.
std::vector<double> threshold_max(ConstTensorView x, std::optional<int64_t> channel_axis,
                                  double floor = 1.0 / 65536.0);

// The threshold that minimizes sum((Q_t(x) - x)^2) for the symmetric grid of `num_bits` (torch
// profile numerics), searched per channel among `num_candidates` fractions of the max
// (max * k / num_candidates, k = 1..num_candidates) or, when power_of_two, among the powers of
// two from 2^ceil(log2(max)) down by 1..8 octaves.
std::vector<double> threshold_mse(ConstTensorView x, std::optional<int64_t> channel_axis,
                                  int64_t num_bits, bool is_signed, bool power_of_two,
                                  int64_t num_candidates = 100);

// Per-tensor or per-channel min and max (NaN ignored). Ranges of zero width are widened by
// `floor` on each side so that they are valid uniform ranges.
struct Range {
  std::vector<double> min, max;
};
Range range_min_max(ConstTensorView x, std::optional<int64_t> channel_axis,
                    double floor = 1.0 / 65536.0);

}  // namespace qi::calibration
