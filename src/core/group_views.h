// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Internal: a weight's groups along one axis, for the calibrations that run per (channel, group)
// (model_config.cc's grouped calibration, the NVFP4 LSQ block scales' initial values).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "qi/tensor_view.h"

namespace qi::detail {

// The views of w's groups of k elements along `axis` (normalized), in order; the last one is
// shorter when the axis size is not a multiple of k.
std::vector<ConstTensorView> group_views(ConstTensorView w, int64_t axis, int64_t k);

// Per-group values parts[g][c] (group g, channel c) in the parameters' order c * groups + g.
std::vector<double> interleave(const std::vector<std::vector<double>>& parts);

// max |x| of each (channel, group) in that order (calibration::threshold_max of each group's view,
// at least `floor`); one value per group when channel_axis is nullopt.
std::vector<double> group_max(ConstTensorView w, std::optional<int64_t> channel_axis,
                              int64_t axis, int64_t k, double floor);

}  // namespace qi::detail
