// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Internal: the one strided n-d iteration of qi's kernels. K views of equal sizes are walked
// row by row (a row = a run along the innermost coalesced dimension), with the channel index of
// each row (or of its first element, when the channel is the innermost dimension). Indices only
// ever increment: one division per chunk, none per element.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "qi/kernels.h"
#include "qi/tensor_view.h"

namespace qi::kernels {

template <size_t K>
struct IterDim {
  int64_t size;
  std::array<int64_t, K> stride;
  bool channel;
};

// Drops size-1 dims and merges neighbours that are contiguous in every view (never the channel
// dim). Always returns at least one dim.
template <size_t K>
std::vector<IterDim<K>> coalesce_dims(const Shape& sizes, const std::array<const Shape*, K>& strides,
                                      std::optional<int64_t> channel_axis) {
  std::vector<IterDim<K>> dims;
  for (size_t k = 0; k < sizes.size(); ++k) {
    const bool is_channel = channel_axis && *channel_axis == static_cast<int64_t>(k);
    if (sizes[k] == 1 && !is_channel) continue;
    IterDim<K> cur{sizes[k], {}, is_channel};
    for (size_t v = 0; v < K; ++v) cur.stride[v] = (*strides[v])[k];
    if (!dims.empty() && !dims.back().channel && !cur.channel) {
      IterDim<K>& prev = dims.back();
      bool mergeable = true;
      for (size_t v = 0; v < K; ++v)
        mergeable = mergeable && prev.stride[v] == cur.size * cur.stride[v];
      if (mergeable) {
        prev.size *= cur.size;
        prev.stride = cur.stride;
        continue;
      }
    }
    dims.push_back(cur);
  }
  if (dims.empty()) dims.push_back(IterDim<K>{1, {}, false});
  return dims;
}

// The lines along dimension `line_axis` of K views of equal sizes, for drivers that walk each
// line whole (groups, blocks): the other dimensions, coalesced, with channel_axis renumbered
// among them (it must not be line_axis).
// Where a grouped plan's groups lie in a tensor of `sizes`: the group axis (normalized), its
// extent, the group size and the number of groups along it (the last one may be shorter).
struct GroupGeometry {
  int64_t axis, extent, group_size, count;
};
inline GroupGeometry group_geometry(const GroupLayout& groups, const Shape& sizes) {
  const int64_t rank = static_cast<int64_t>(sizes.size());
  const int64_t axis = groups.group_axis < 0 ? groups.group_axis + rank : groups.group_axis;
  const int64_t extent = sizes[static_cast<size_t>(axis)];
  return {axis, extent, groups.group_size, (extent + groups.group_size - 1) / groups.group_size};
}

template <size_t K>
std::vector<IterDim<K>> coalesce_lines(const Shape& sizes,
                                       const std::array<const Shape*, K>& strides,
                                       int64_t line_axis, std::optional<int64_t> channel_axis) {
  Shape rest;
  std::array<Shape, K> rest_strides;
  std::optional<int64_t> axis;
  for (size_t d = 0; d < sizes.size(); ++d) {
    if (static_cast<int64_t>(d) == line_axis) continue;
    if (channel_axis && *channel_axis == static_cast<int64_t>(d))
      axis = static_cast<int64_t>(rest.size());
    rest.push_back(sizes[d]);
    for (size_t v = 0; v < K; ++v) rest_strides[v].push_back((*strides[v])[d]);
  }
  std::array<const Shape*, K> views;
  for (size_t v = 0; v < K; ++v) views[v] = &rest_strides[v];
  return coalesce_dims<K>(rest, views, axis);
}

template <size_t K>
int64_t total_elements(const std::vector<IterDim<K>>& dims) {
  int64_t total = 1;
  for (const auto& d : dims) total *= d.size;
  return total;
}

// Calls row(offsets, inner_strides, n, c0, vary) for the rows covering linear elements
// [begin, end) of the coalesced iteration space. vary: the channel advances with the element
// (c0 is the channel of the first element); otherwise every element has channel c0.
template <size_t K, typename RowFn>
void iterate_rows(const std::vector<IterDim<K>>& dims, int64_t begin, int64_t end, RowFn&& row) {
  const int64_t nd = static_cast<int64_t>(dims.size());
  const IterDim<K>& inner = dims.back();
  std::vector<int64_t> idx(nd, 0);
  int64_t rem = begin;
  for (int64_t k = nd - 1; k >= 0; --k) {
    idx[k] = rem % dims[k].size;
    rem /= dims[k].size;
  }
  std::array<int64_t, K> off{};
  int64_t channel = 0;
  for (int64_t k = 0; k < nd; ++k) {
    for (size_t v = 0; v < K; ++v) off[v] += idx[k] * dims[k].stride[v];
    if (dims[k].channel) channel = idx[k];
  }
  int64_t pos = begin;
  while (pos < end) {
    const int64_t n = std::min(inner.size - idx[nd - 1], end - pos);
    row(off, inner.stride, n, inner.channel ? idx[nd - 1] : channel, inner.channel);
    pos += n;
    idx[nd - 1] += n;
    for (size_t v = 0; v < K; ++v) off[v] += n * inner.stride[v];
    for (int64_t k = nd - 1; k > 0 && idx[k] == dims[k].size; --k) {
      idx[k] = 0;
      if (dims[k].channel) channel = 0;
      ++idx[k - 1];
      for (size_t v = 0; v < K; ++v)
        off[v] += dims[k - 1].stride[v] - dims[k].size * dims[k].stride[v];
      if (dims[k - 1].channel) channel = idx[k - 1];
    }
  }
}

}  // namespace qi::kernels
