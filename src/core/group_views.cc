// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include "core/group_views.h"

#include <algorithm>
#include <utility>

#include "qi/calibration.h"

namespace qi::detail {

std::vector<ConstTensorView> group_views(ConstTensorView w, int64_t axis, int64_t k) {
  const size_t a = static_cast<size_t>(axis);
  const int64_t size = w.sizes[a];
  std::vector<ConstTensorView> out;
  for (int64_t start = 0; start < size; start += k) {
    ConstTensorView part = w;
    part.data += start * w.strides[a];
    part.sizes[a] = std::min(k, size - start);
    out.push_back(std::move(part));
  }
  return out;
}

std::vector<double> interleave(const std::vector<std::vector<double>>& parts) {
  if (parts.empty() || parts[0].empty()) return {};
  const size_t groups = parts.size(), channels = parts[0].size();
  std::vector<double> out(groups * channels);
  for (size_t g = 0; g < groups; ++g)
    for (size_t c = 0; c < channels; ++c) out[c * groups + g] = parts[g][c];
  return out;
}

std::vector<double> group_max(ConstTensorView w, std::optional<int64_t> channel_axis,
                              int64_t axis, int64_t k, double floor) {
  std::vector<std::vector<double>> parts;
  for (const ConstTensorView& part : group_views(w, axis, k))
    parts.push_back(calibration::threshold_max(part, channel_axis, floor));
  return interleave(parts);
}

}  // namespace qi::detail
