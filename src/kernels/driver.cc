// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The generic forward driver: strided n-d iteration (iterate.h), per-tensor/per-channel
// parameter selection and threading, written once for every kernel family. Rows go to the SIMD
// kernels; strided rows pass through a small contiguous buffer.

#include <algorithm>
#include <array>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include <hwy/cache_control.h>

#include "kernels/iterate.h"
#include "kernels/row_kernels.h"
#include "qi/error.h"
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
  } else if constexpr (std::is_same_v<PlanT, FloatPlan>) {
    float_row(in, out, n, plan, c0, vary, stream);
  } else if constexpr (std::is_same_v<PlanT, MxPlan>) {
    mx_row(in, out, n, plan);
  } else if constexpr (std::is_same_v<PlanT, Nvfp4Plan>) {
    nvfp4_row(in, out, n, plan);
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

// Whether a view with these sizes and strides is dense in row-major order (sizes of 1 and empty
// views take any stride).
bool row_major_dense(const Shape& sizes, const Shape& strides) {
  int64_t expected = 1;
  for (size_t k = sizes.size(); k-- > 0;) {
    if (sizes[k] != 1 && strides[k] != expected) return false;
    expected *= sizes[k];
  }
  return true;
}

template <typename PlanT>
constexpr bool kBlockScaled = std::is_same_v<PlanT, MxPlan> || std::is_same_v<PlanT, Nvfp4Plan>;

// A line of `size` elements (whole blocks) of a block-scaled plan: in one call when contiguous,
// else block by block through `buf`.
template <typename PlanT>
void run_blocks(const PlanT& plan, const float* in, int64_t in_step, float* out,
                int64_t out_step, int64_t size, std::vector<float>& buf) {
  if (in_step == 1 && out_step == 1) {
    call_row(plan, in, out, size, 0, false, false);
    return;
  }
  const int64_t k = plan.groups.group_size;
  buf.resize(static_cast<size_t>(2 * k));
  for (int64_t b = 0; b < size; b += k) {
    for (int64_t i = 0; i < k; ++i) buf[i] = in[(b + i) * in_step];
    call_row(plan, buf.data(), buf.data() + k, k, 0, false, false);
    for (int64_t i = 0; i < k; ++i) out[(b + i) * out_step] = buf[k + i];
  }
}

// Grouped plans: every line along the group axis (one per index of the other dimensions, in
// parallel) in groups of group_size elements, each with its fixed parameter set c * G + g, or
// (block-scaled plans) with the scales of its block.
template <typename PlanT>
void grouped_forward(const PlanT& plan, ConstTensorView in, TensorView out,
                     std::optional<int64_t> channel_axis) {
  const GroupGeometry geometry = group_geometry(plan.groups, in.sizes);
  const int64_t k = geometry.group_size, ga = geometry.axis, size = geometry.extent,
                groups = geometry.count;
  const auto dims = coalesce_lines<2>(in.sizes, {&in.strides, &out.strides}, ga, channel_axis);
  const int64_t lines = total_elements(dims);
  const int64_t in_step = in.strides[static_cast<size_t>(ga)];
  const int64_t out_step = out.strides[static_cast<size_t>(ga)];
  parallel_for(0, lines, std::max<int64_t>(1, kGrain / std::max<int64_t>(size, 1)),
               [&](int64_t begin, int64_t end) {
                 std::vector<float> buf;
                 iterate_rows(dims, begin, end,
                              [&](const std::array<int64_t, 2>& off,
                                  const std::array<int64_t, 2>& st, int64_t n, int64_t c0,
                                  bool vary) {
                                for (int64_t j = 0; j < n; ++j) {
                                  const float* line_in = in.data + off[0] + j * st[0];
                                  float* line_out = out.data + off[1] + j * st[1];
                                  if constexpr (kBlockScaled<PlanT>) {
                                    run_blocks(plan, line_in, in_step, line_out, out_step, size,
                                               buf);
                                    continue;
                                  }
                                  const int64_t first = (vary ? c0 + j : c0) * groups;
                                  for (int64_t g = 0; g < groups; ++g)
                                    run_row(plan, line_in + g * k * in_step, in_step,
                                            line_out + g * k * out_step, out_step,
                                            std::min(k, size - g * k), first + g, false, false);
                                }
                              });
               });
}

}  // namespace

void fake_quant_forward(const Plan& plan, ConstTensorView in, TensorView out,
                        std::optional<int64_t> channel_axis) {
  if (plan_groups(plan).group_size > 0) {
    if (in.numel() > 0)
      std::visit([&](const auto& p) { grouped_forward(p, in, out, channel_axis); }, plan);
    return;
  }
  // A small dense per-tensor call (one parallel chunk) is one row: no iteration plan, no
  // parallel_for, which would cost more than the kernel at a few thousand elements.
  if (!channel_axis && in.numel() <= kGrain && row_major_dense(in.sizes, in.strides) &&
      row_major_dense(out.sizes, out.strides)) {
    const int64_t n = in.numel();
    if (n > 0)
      std::visit([&](const auto& p) { run_row(p, in.data, 1, out.data, 1, n, 0, false, false); },
                 plan);
    return;
  }
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

namespace {
std::string fmt_shape(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}
}  // namespace

std::optional<int64_t> check_plan_fits(const char* what, const Plan& plan,
                                       std::optional<int64_t> channel_axis,
                                       std::optional<int64_t> input_rank, const Shape& sizes) {
  const int64_t rank = static_cast<int64_t>(sizes.size());
  if (input_rank)
    QI_CHECK(rank == *input_rank, what, ": tensor rank must equal input_rank ", *input_rank,
             ", got rank ", rank, " (sizes ", fmt_shape(sizes), ")");
  const int64_t channels = plan_channels(plan);
  const GroupLayout& groups = plan_groups(plan);
  std::optional<int64_t> axis;
  // A single per-channel value broadcasts over every channel: per-tensor arithmetic.
  if (channels != 1 || (groups.group_size > 0 && channel_axis)) {
    QI_CHECK(channel_axis.has_value() || groups.group_size > 0, what, ": a plan of ", channels,
             " channels needs a channel_axis");
    if (channel_axis) {
      QI_CHECK(*channel_axis >= -rank && *channel_axis < rank, what,
               ": channel_axis must be in [", -rank, ", ", rank, ") for a tensor of rank ", rank,
               ", got ", *channel_axis);
      axis = *channel_axis < 0 ? *channel_axis + rank : *channel_axis;
    }
  }
  if (groups.group_size == 0) {
    if (axis)
      QI_CHECK(sizes[static_cast<size_t>(*axis)] == channels, what, ": the quantizer holds ",
               channels, " per-channel values but the tensor has ",
               sizes[static_cast<size_t>(*axis)], " channels along channel_axis ",
               *channel_axis, " (sizes ", fmt_shape(sizes), ")");
    return axis;
  }
  const int64_t ga_given = groups.group_axis;
  const bool blocks = plan_is_block_scaled(plan);
  const char* axis_name = blocks ? "block_axis" : "group_axis";
  QI_CHECK(ga_given >= -rank && ga_given < rank, what, ": ", axis_name, " must be in [", -rank,
           ", ", rank, ") for a tensor of rank ", rank, ", got ", ga_given);
  const int64_t ga = ga_given < 0 ? ga_given + rank : ga_given;
  if (blocks || groups.whole) {  // whole blocks (NVFP4's stored block scales too)
    const int64_t size = sizes[static_cast<size_t>(ga)];
    QI_CHECK(size % groups.group_size == 0, what, ": the size along block_axis ", ga_given, " (",
             size, ") must be a multiple of block_size ", groups.group_size, " (sizes ",
             fmt_shape(sizes), ")");
    if (blocks) return std::nullopt;
  }
  QI_CHECK(!axis || *axis != ga, what, ": channel_axis ", *channel_axis, " and group_axis ",
           ga_given, " are the same axis of a tensor of rank ", rank,
           "; groups must lie along another axis than the channels");
  const int64_t k = groups.group_size;
  const int64_t count = (sizes[static_cast<size_t>(ga)] + k - 1) / k;
  const int64_t rows = axis ? sizes[static_cast<size_t>(*axis)] : 1;
  QI_CHECK(channels == rows * count, what, ": the quantizer holds ", channels,
           " values (one per channel and group) but the tensor has ", rows,
           axis ? str_cat(" channels along channel_axis ", *channel_axis) : std::string(" row"),
           " x ", count, " groups of up to ", k, " along group_axis ", ga_given, " = ",
           rows * count, " (sizes ", fmt_shape(sizes), ")");
  return axis;
}

void checked_fake_quant(const char* what, const Plan& plan, std::optional<int64_t> channel_axis,
                        std::optional<int64_t> input_rank, ConstTensorView in, TensorView out) {
  QI_CHECK(in.strides.size() == in.sizes.size(), what, ": input has ", in.sizes.size(),
           " sizes but ", in.strides.size(), " strides");
  QI_CHECK(out.strides.size() == out.sizes.size(), what, ": output has ", out.sizes.size(),
           " sizes but ", out.strides.size(), " strides");
  QI_CHECK(in.sizes == out.sizes, what, ": output sizes must equal input sizes ",
           fmt_shape(in.sizes), ", got ", fmt_shape(out.sizes));
  const std::optional<int64_t> axis =
      check_plan_fits(what, plan, channel_axis, input_rank, in.sizes);
  const int64_t n = in.numel();
  if (n == 0) return;  // nothing to read or write; strides of empty tensors carry no meaning
  for (size_t k = 0; k < in.sizes.size(); ++k) {
    QI_CHECK(in.sizes[k] >= 0, what, ": tensor sizes must be >= 0, got ", fmt_shape(in.sizes));
    QI_CHECK(in.strides[k] >= 0 && out.strides[k] >= 0, what,
             ": strides must be >= 0, got input ", fmt_shape(in.strides), " and output ",
             fmt_shape(out.strides));
    QI_CHECK(out.strides[k] > 0 || out.sizes[k] <= 1, what,
             ": output must not have stride 0 in a dimension of size > 1, got strides ",
             fmt_shape(out.strides));
  }
  QI_CHECK(in.data != nullptr && out.data != nullptr, what,
           ": tensor data must not be null for ", n, " elements");
  // In place means exactly the same view; any other overlap would read already written values.
  const bool same_view = static_cast<const void*>(in.data) == static_cast<const void*>(out.data) &&
                         in.strides == out.strides;
  if (!same_view) {
    int64_t in_span = 0, out_span = 0;
    for (size_t k = 0; k < in.sizes.size(); ++k) {
      in_span += (in.sizes[k] - 1) * in.strides[k];
      out_span += (out.sizes[k] - 1) * out.strides[k];
    }
    QI_CHECK(in.data + in_span < out.data || out.data + out_span < in.data, what,
             ": output must be the input view itself (in place) or must not overlap it");
  }
  fake_quant_forward(plan, in, out, axis);
}

}  // namespace qi::kernels
