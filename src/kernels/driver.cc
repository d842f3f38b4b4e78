// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The generic forward driver: strided n-d iteration (iterate.h), per-tensor/per-channel
// parameter selection and threading, written once for every kernel family. Rows go to the SIMD
// kernels; strided rows pass through a small contiguous buffer.

#include <algorithm>
#include <array>
#include <type_traits>
#include <variant>

#include <hwy/cache_control.h>

#include "kernels/iterate.h"
#include "kernels/row_kernels.h"
#include "qi/parallel.h"

namespace qi::kernels {
namespace {

constexpr int64_t kGrain = 1 << 15;     // elements per parallel chunk, at least
constexpr int64_t kStridedBlock = 512;  // elements gathered per block for strided rows
// Outputs at least this large are written with non-temporal stores: they cannot stay in cache,
// and skipping the read-for-ownership of each line saves a third of the memory traffic.
// Short rows (per-channel activations with small spatial sizes) keep regular stores: their
// unaligned heads and partial lines would cost more than the traffic saved.
constexpr int64_t kStreamBytes = int64_t{16} << 20;
constexpr int64_t kStreamMinRow = 4096;

template <typename PlanT>
void call_row(const PlanT& plan, const float* in, float* out, int64_t n, int64_t c0, bool vary,
              bool stream) {
  if constexpr (std::is_same_v<PlanT, AffineTorchPlan>) {
    affine_torch_row(in, out, n, plan, c0, vary, stream);
  } else if constexpr (std::is_same_v<PlanT, AffineTfPlan>) {
    affine_tf_row(in, out, n, plan, c0, vary, stream);
  } else {
    lut_row(in, out, n, plan, c0, vary, stream);
  }
}

template <typename PlanT>
void run_row(const PlanT& plan, const float* in, int64_t in_stride, float* out,
             int64_t out_stride, int64_t n, int64_t c0, bool vary, bool stream) {
  if (in_stride == 1 && out_stride == 1) {
    call_row(plan, in, out, n, c0, vary, stream && in != out);
    return;
  }
  std::array<float, kStridedBlock> buf_in, buf_out;
  for (int64_t b = 0; b < n; b += kStridedBlock) {
    const int64_t m = std::min(kStridedBlock, n - b);
    for (int64_t i = 0; i < m; ++i) buf_in[i] = in[(b + i) * in_stride];
    call_row(plan, buf_in.data(), buf_out.data(), m, vary ? c0 + b : c0, vary, false);
    for (int64_t i = 0; i < m; ++i) out[(b + i) * out_stride] = buf_out[i];
  }
}

}  // namespace

void fake_quant_forward(const Plan& plan, ConstTensorView in, TensorView out,
                        std::optional<int64_t> channel_axis) {
  const auto dims = coalesce_dims<2>(in.sizes, {&in.strides, &out.strides}, channel_axis);
  const int64_t total = total_elements(dims);
  if (total == 0) return;
  const bool stream = total * static_cast<int64_t>(sizeof(float)) >= kStreamBytes &&
                      dims.back().size >= kStreamMinRow;
  std::visit(
      [&](const auto& p) {
        parallel_for(0, total, kGrain, [&](int64_t begin, int64_t end) {
          iterate_rows(dims, begin, end,
                       [&](const std::array<int64_t, 2>& off, const std::array<int64_t, 2>& st,
                           int64_t n, int64_t c0, bool vary) {
                         run_row(p, in.data + off[0], st[0], out.data + off[1], st[1], n, c0,
                                 vary, stream);
                       });
          if (stream) hwy::FlushStream();  // order the non-temporal stores before the join
        });
      },
      plan);
}

}  // namespace qi::kernels
