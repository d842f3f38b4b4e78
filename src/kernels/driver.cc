// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The generic driver: strided n-d iteration, per-tensor/per-channel parameter selection and
// threading, written once for every kernel family. Rows (the innermost dimension) go to the
// SIMD kernels; the odometer below only ever increments indices, so there is no per-element
// division or modulo.

#include <algorithm>
#include <array>
#include <type_traits>
#include <variant>
#include <vector>

#include "kernels/row_kernels.h"
#include "qi/parallel.h"

namespace qi::kernels {
namespace {

constexpr int64_t kGrain = 1 << 15;      // elements per parallel chunk, at least
constexpr int64_t kStridedBlock = 512;   // elements gathered per block for strided rows

struct Dim {
  int64_t size;
  int64_t in_stride;
  int64_t out_stride;
  bool channel;
};

// Drops size-1 dims, merges adjacent dims that are contiguous in both views (never the channel
// dim), outermost first.
std::vector<Dim> coalesce(const ConstTensorView& in, const TensorView& out,
                          std::optional<int64_t> channel_axis) {
  std::vector<Dim> dims;
  for (int64_t k = 0; k < in.dim(); ++k) {
    const bool is_channel = channel_axis && *channel_axis == k;
    if (in.sizes[k] == 1 && !is_channel) continue;
    Dim cur{in.sizes[k], in.strides[k], out.strides[k], is_channel};
    if (!dims.empty()) {
      Dim& prev = dims.back();
      if (!prev.channel && !cur.channel && prev.in_stride == cur.size * cur.in_stride &&
          prev.out_stride == cur.size * cur.out_stride) {
        prev.size *= cur.size;
        prev.in_stride = cur.in_stride;
        prev.out_stride = cur.out_stride;
        continue;
      }
    }
    dims.push_back(cur);
  }
  if (dims.empty()) dims.push_back(Dim{1, 1, 1, false});
  return dims;
}

template <typename PlanT>
void call_row(const PlanT& plan, const float* in, float* out, int64_t n, int64_t c0, bool vary) {
  if constexpr (std::is_same_v<PlanT, AffineTorchPlan>) {
    affine_torch_row(in, out, n, plan, c0, vary);
  } else if constexpr (std::is_same_v<PlanT, AffineTfPlan>) {
    affine_tf_row(in, out, n, plan, c0, vary);
  } else {
    lut_row(in, out, n, plan, c0, vary);
  }
}

// One row of `n` elements with element strides; contiguous rows go straight to the SIMD kernel,
// others through a small stack buffer.
template <typename PlanT>
void run_row(const PlanT& plan, const float* in, int64_t in_stride, float* out,
             int64_t out_stride, int64_t n, int64_t c0, bool vary) {
  if (in_stride == 1 && out_stride == 1) {
    call_row(plan, in, out, n, c0, vary);
    return;
  }
  std::array<float, kStridedBlock> buf_in, buf_out;
  for (int64_t b = 0; b < n; b += kStridedBlock) {
    const int64_t m = std::min(kStridedBlock, n - b);
    for (int64_t i = 0; i < m; ++i) buf_in[i] = in[(b + i) * in_stride];
    call_row(plan, buf_in.data(), buf_out.data(), m, vary ? c0 + b : c0, vary);
    for (int64_t i = 0; i < m; ++i) out[(b + i) * out_stride] = buf_out[i];
  }
}

template <typename PlanT>
void run(const PlanT& plan, const ConstTensorView& in, const TensorView& out,
         std::optional<int64_t> channel_axis) {
  const std::vector<Dim> dims = coalesce(in, out, channel_axis);
  const int64_t nd = static_cast<int64_t>(dims.size());
  const Dim& inner = dims.back();
  int64_t total = 1;
  for (const Dim& d : dims) total *= d.size;
  if (total == 0) return;

  parallel_for(0, total, kGrain, [&](int64_t begin, int64_t end) {
    // Multi-index of `begin` (the one division per chunk), then an odometer.
    std::vector<int64_t> idx(nd, 0);
    int64_t rem = begin;
    for (int64_t k = nd - 1; k >= 0; --k) {
      idx[k] = rem % dims[k].size;
      rem /= dims[k].size;
    }
    int64_t in_off = 0, out_off = 0, channel = 0;
    for (int64_t k = 0; k < nd; ++k) {
      in_off += idx[k] * dims[k].in_stride;
      out_off += idx[k] * dims[k].out_stride;
      if (dims[k].channel) channel = idx[k];
    }
    int64_t pos = begin;
    while (pos < end) {
      const int64_t n = std::min(inner.size - idx[nd - 1], end - pos);
      const int64_t c0 = inner.channel ? idx[nd - 1] : channel;
      run_row(plan, in.data + in_off, inner.in_stride, out.data + out_off, inner.out_stride, n,
              c0, inner.channel);
      pos += n;
      // Advance the odometer by n along the innermost dim, carrying outward.
      idx[nd - 1] += n;
      in_off += n * inner.in_stride;
      out_off += n * inner.out_stride;
      for (int64_t k = nd - 1; k > 0 && idx[k] == dims[k].size; --k) {
        idx[k] = 0;
        if (dims[k].channel) channel = 0;
        in_off -= dims[k].size * dims[k].in_stride;
        out_off -= dims[k].size * dims[k].out_stride;
        ++idx[k - 1];
        in_off += dims[k - 1].in_stride;
        out_off += dims[k - 1].out_stride;
        if (dims[k - 1].channel) channel = idx[k - 1];
      }
    }
  });
}

}  // namespace

void fake_quant_forward(const Plan& plan, ConstTensorView in, TensorView out,
                        std::optional<int64_t> channel_axis) {
  std::visit([&](const auto& p) { run(p, in, out, channel_axis); }, plan);
}

}  // namespace qi::kernels
