// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include "qi/trainable_math.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <utility>

#include "core/param_rules.h"
#include "core/trainable_call.h"
#include "kernels/iterate.h"
#include "kernels/plan.h"
#include "kernels/row_kernels.h"
#include "kernels/scalar_ops.h"
#include "qi/error.h"
#include "qi/parallel.h"

namespace qi::trainable {
namespace {

constexpr int64_t kGrain = 1 << 15;
// At most this many reduction blocks (their partials are blocks x channels doubles).
constexpr int64_t kMaxBlocks = 256;
// And at most this many partials per gradient (blocks x channels): with many parameters (one per
// (channel, group of 16)) zeroing and adding more partials costs more than the blocks save
// (LSQ NVFP4 on a 1024x4096 weight, 262,144 block scales: 86 ms per step with 16 blocks, 39 ms
// with one, on one thread).
constexpr int64_t kMaxPartials = int64_t{1} << 16;

using kernels::coalesce_dims;
using kernels::iterate_rows;
using kernels::total_elements;

}  // namespace

double power_of_two_ceil(double t, double min_threshold) {
  const double x = std::max(t, min_threshold);
  // Exact for every finite x > 0 (the CUDA layer computes the same on the device); the rest
  // fails the threshold checks that follow.
  return x > 0 && std::isfinite(x) ? kernels::scalar::pow2_ceil(x)
                                   : std::exp2(std::ceil(std::log2(x)));
}

namespace {

// Runs block(b, d_scale, d_offset) for the fixed blocks b in [0, blocks), in parallel, each into
// its own partial sums (`channels` of each), and adds the blocks' partials in order: the
// gradients are the same bits whatever the thread count or scheduling.
template <typename BlockFn>
AffineParamGrads sum_in_blocks(int64_t blocks, size_t channels, BlockFn&& block) {
  std::vector<double> partial(static_cast<size_t>(blocks) * channels * 2, 0.0);
  parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      double* d_scale = partial.data() + static_cast<size_t>(b) * channels * 2;
      block(b, d_scale, d_scale + channels);
    }
  });
  AffineParamGrads grads{std::vector<double>(channels, 0.0), std::vector<double>(channels, 0.0)};
  for (int64_t b = 0; b < blocks; ++b) {
    const double* d_scale = partial.data() + static_cast<size_t>(b) * channels * 2;
    for (size_t c = 0; c < channels; ++c) {
      grads.d_scale[c] += d_scale[c];
      grads.d_offset[c] += d_scale[channels + c];
    }
  }
  return grads;
}

// The per-parameter backward loops, shared by the affine and the format ops. `Elem` computes one
// element's gradient terms: row(x, dy, dx, n, c, &a, &b) over n contiguous elements of parameter
// c and one(x, g, dx, c, &a, &b) for one element (dx written unless null), adding to the
// parameter's two sums a and b.
//
// A grouped layout: every line along the group axis (one per index of the other dimensions),
// group by group, each group with its parameter set c * G + g (the forward's layout,
// kernels::GroupLayout), in fixed blocks of lines (sum_in_blocks). The partials take blocks x
// channels doubles, so the block count also shrinks as the parameter count grows.
template <typename Elem>
AffineParamGrads grouped_param_backward(const Elem& elem, size_t channels,
                                        const kernels::GroupLayout& layout, ConstTensorView x,
                                        ConstTensorView dy, TensorView dx,
                                        std::optional<int64_t> channel_axis) {
  const bool write_dx = dx.data != nullptr;
  const Shape& dx_strides = write_dx ? dx.strides : x.strides;
  const kernels::GroupGeometry geometry = kernels::group_geometry(layout, x.sizes);
  const int64_t k = geometry.group_size, ga = geometry.axis, size = geometry.extent,
                groups = geometry.count;
  const auto dims =
      kernels::coalesce_lines<3>(x.sizes, {&x.strides, &dy.strides, &dx_strides}, ga, channel_axis);
  const int64_t lines = total_elements(dims);
  if (lines == 0 || size == 0)
    return {std::vector<double>(channels, 0.0), std::vector<double>(channels, 0.0)};
  const int64_t x_step = x.strides[static_cast<size_t>(ga)];
  const int64_t g_step = dy.strides[static_cast<size_t>(ga)];
  const int64_t d_step = dx_strides[static_cast<size_t>(ga)];
  const int64_t max_blocks = std::max<int64_t>(
      1, std::min<int64_t>(kMaxBlocks, kMaxPartials / static_cast<int64_t>(channels)));
  const int64_t wanted = std::min(lines, (lines * size + kGrain - 1) / kGrain);
  const int64_t want_blocks = std::clamp<int64_t>(wanted, 1, max_blocks);
  const int64_t block_lines = (lines + want_blocks - 1) / want_blocks;
  const int64_t blocks = (lines + block_lines - 1) / block_lines;
  return sum_in_blocks(blocks, channels, [&](int64_t b, double* d_a, double* d_b) {
    iterate_rows(dims, b * block_lines, std::min(lines, (b + 1) * block_lines),
                 [&](const std::array<int64_t, 3>& off, const std::array<int64_t, 3>& st,
                     int64_t n, int64_t c0, bool vary) {
                   for (int64_t j = 0; j < n; ++j) {
                     const float* xp = x.data + off[0] + j * st[0];
                     const float* gp = dy.data + off[1] + j * st[1];
                     float* dxp = write_dx ? dx.data + off[2] + j * st[2] : nullptr;
                     const int64_t first = (vary ? c0 + j : c0) * groups;
                     for (int64_t g = 0; g < groups; ++g) {
                       const int64_t c = first + g, i0 = g * k, m = std::min(k, size - i0);
                       if (x_step == 1 && g_step == 1 && (!dxp || d_step == 1)) {
                         elem.row(xp + i0, gp + i0, dxp ? dxp + i0 : nullptr, m, c, &d_a[c],
                                  &d_b[c]);
                         continue;
                       }
                       for (int64_t i = i0; i < i0 + m; ++i)
                         elem.one(xp[i * x_step], gp[i * g_step],
                                  dxp ? dxp + i * d_step : nullptr, c, &d_a[c], &d_b[c]);
                     }
                   }
                 });
  });
}

// The same per tensor or per channel (no groups).
template <typename Elem>
AffineParamGrads param_backward(const Elem& elem, size_t channels,
                                const kernels::GroupLayout& layout, ConstTensorView x,
                                ConstTensorView dy, TensorView dx,
                                std::optional<int64_t> channel_axis) {
  if (layout.group_size > 0)
    return grouped_param_backward(elem, channels, layout, x, dy, dx, channel_axis);
  const bool write_dx = dx.data != nullptr;
  const Shape& dx_strides = write_dx ? dx.strides : x.strides;
  const auto dims = coalesce_dims<3>(x.sizes, {&x.strides, &dy.strides, &dx_strides}, channel_axis);
  const int64_t total = total_elements(dims);
  if (total == 0) return {std::vector<double>(channels, 0.0), std::vector<double>(channels, 0.0)};
  // Fixed blocks whose boundaries depend only on the element count (sum_in_blocks).
  const int64_t blocks = std::min<int64_t>(kMaxBlocks, (total + kGrain - 1) / kGrain);
  const int64_t block = (total + blocks - 1) / blocks;
  return sum_in_blocks(blocks, channels, [&](int64_t b, double* d_a, double* d_b) {
    iterate_rows(dims, b * block, std::min(total, (b + 1) * block),
                 [&](const std::array<int64_t, 3>& off, const std::array<int64_t, 3>& st,
                     int64_t n, int64_t c0, bool vary) {
                   const float* xp = x.data + off[0];
                   const float* gp = dy.data + off[1];
                   float* dxp = write_dx ? dx.data + off[2] : nullptr;
                   if (!vary && st[0] == 1 && st[1] == 1 && (!dxp || st[2] == 1)) {
                     elem.row(xp, gp, dxp, n, c0, &d_a[c0], &d_b[c0]);
                     return;
                   }
                   for (int64_t i = 0; i < n; ++i) {
                     const int64_t c = vary ? c0 + i : c0;
                     elem.one(xp[i * st[0]], gp[i * st[1]], dxp ? dxp + i * st[2] : nullptr, c,
                              &d_a[c], &d_b[c]);
                   }
                 });
  });
}

// The affine fake quantizer's terms (kernels::affine_backward_row / _one): a = dscale, b = doffset.
struct AffineElem {
  const kernels::AffineTorchPlan& plan;
  bool lsq;
  void row(const float* x, const float* dy, float* dx, int64_t n, int64_t c, double* a,
           double* b) const {
    kernels::affine_backward_row(x, dy, dx, n, plan, c, lsq, a, b);
  }
  void one(float x, float g, float* dx, int64_t c, double* a, double* b) const {
    kernels::affine_backward_one(x, g, dx, plan, c, lsq, a, b);
  }
};

}  // namespace

AffineParamGrads affine_backward(const kernels::AffineTorchPlan& plan, ConstTensorView x,
                                 ConstTensorView dy, TensorView dx,
                                 std::optional<int64_t> channel_axis, GradMode mode) {
  return param_backward(AffineElem{plan, mode == GradMode::kLsq}, plan.scale.size(), plan.groups,
                        x, dy, dx, channel_axis);
}

RangeGrads adjust_range_backward(float min, float max, int64_t num_bits, double d_min_adj,
                                 double d_max_adj) {
  RangeGrads g;
  kernels::scalar::adjust_range_backward(min, max, std::ldexp(1.0, static_cast<int>(num_bits)) - 1,
                                         d_min_adj, d_max_adj, &g.d_min, &g.d_max);
  return g;
}

// ---- the trainable ops ------------------------------------------------------------------------

namespace {

// The normalized axis of `count` parameter values over a tensor of sizes x; nullopt when one
// value covers the whole tensor.
std::optional<int64_t> resolve_axis(const char* op, const Shape& x, std::optional<int64_t> axis,
                                    size_t count, const char* arg) {
  QI_CHECK(count >= 1, op, ": ", arg, " must hold at least one value, got none");
  if (!axis) {
    QI_CHECK(count == 1, op, ": ", arg, " must hold one value when channel_axis is None, got ",
             count);
    return std::nullopt;
  }
  const int64_t r = static_cast<int64_t>(x.size());
  QI_CHECK(*axis >= -r && *axis < r, op, ": channel_axis must be in [", -r, ", ", r,
           ") for a tensor of rank ", r, ", got ", *axis);
  const int64_t a = *axis < 0 ? *axis + r : *axis;
  QI_CHECK(count == 1 || static_cast<int64_t>(count) == x[static_cast<size_t>(a)], op, ": ", arg,
           " holds ", count, " values but the tensor has ", x[static_cast<size_t>(a)],
           " channels along channel_axis ", *axis);
  return count == 1 ? std::nullopt : std::optional<int64_t>(a);
}

double effective_grad_scale(const char* op, const Shape& x, double grad_scale,
                            std::optional<int64_t> axis, const char* name = "grad_scale") {
  QI_CHECK(std::isfinite(grad_scale), op, ": ", name, " must be finite, got ", grad_scale);
  const int64_t r = static_cast<int64_t>(x.size());
  if (!axis || r < 2) return grad_scale;
  QI_CHECK(*axis >= -r && *axis < r, op, ": grad_scale_axis must be in [", -r, ", ", r,
           ") for a tensor of rank ", r, ", got ", *axis);
  const int64_t channels = x[static_cast<size_t>(*axis < 0 ? *axis + r : *axis)];
  return channels > 0 ? grad_scale / std::sqrt(static_cast<double>(channels)) : grad_scale;
}

GradMode checked_mode(const char* op, GradMode mode) {
  QI_CHECK(mode == GradMode::kSte || mode == GradMode::kLsq, op, ": invalid gradient mode ",
           static_cast<int>(mode));
  return mode;
}

// The effective thresholds of the symmetric op (see SymmetricQuantArgs), checked.
std::vector<double> effective_thresholds(const char* op, const std::vector<double>& threshold,
                                         int64_t steps_log2, double min_threshold,
                                         bool power_of_two) {
  std::vector<double> t(threshold.size());
  for (size_t i = 0; i < t.size(); ++i) {
    QI_CHECK(std::isfinite(threshold[i]), op, ": threshold must be finite, got ", threshold[i],
             " at index ", i);
    t[i] = power_of_two ? power_of_two_ceil(threshold[i], min_threshold)
                        : std::max(threshold[i], min_threshold);
    QI_CHECK(t[i] > 0, op, ": threshold must be > 0, got ", threshold[i], " at index ", i);
    rules::threshold(op, t[i], steps_log2, i);
  }
  return t;
}

int64_t steps_log2(int64_t num_bits, bool is_signed) { return num_bits - (is_signed ? 1 : 0); }

// Places `count` parameter values on x: per tensor or per channel (resolve_axis), or with
// group_size one per (channel, group) (the count, the axes and their distinctness are checked as
// the inferable per-group quantizers check them). Sets *axis; returns the plan's groups.
kernels::GroupLayout place_params(const char* op, const Shape& x,
                                  std::optional<int64_t> channel_axis,
                                  std::optional<int64_t> group_size, int64_t group_axis,
                                  size_t count, const char* arg,
                                  std::optional<int64_t>* axis) {
  if (!group_size) {
    *axis = resolve_axis(op, x, channel_axis, count, arg);
    return {};
  }
  QI_CHECK(*group_size >= 1, op, ": group_size must be >= 1 (or None: no groups), got ",
           *group_size);
  kernels::AffineTorchPlan layout;  // only its sizes: one value per (channel, group)
  layout.scale.resize(count);
  layout.groups = {*group_size, group_axis};
  *axis = kernels::check_plan_fits(op, layout, channel_axis, std::nullopt, x);
  return layout.groups;
}

}  // namespace

AffineCall symmetric_quant_shape(const char* op, const Shape& x_sizes, size_t count,
                                 const SymmetricQuantArgs& args) {
  rules::num_bits(op, args.num_bits, 2, 16);
  checked_mode(op, args.mode);
  QI_CHECK(std::isfinite(args.min_threshold) && args.min_threshold >= 0, op,
           ": min_threshold must be finite and >= 0, got ", args.min_threshold);
  AffineCall call;
  call.plan.groups = place_params(op, x_sizes, args.channel_axis, args.group_size,
                                  args.group_axis, count, "threshold", &call.axis);
  call.grad_scale = effective_grad_scale(op, x_sizes, args.grad_scale, args.grad_scale_axis);
  return call;
}

AffineCall symmetric_quant_call(const char* op, const Shape& x_sizes,
                                const std::vector<double>& threshold,
                                const SymmetricQuantArgs& args) {
  AffineCall call = symmetric_quant_shape(op, x_sizes, threshold.size(), args);
  const kernels::GroupLayout groups = call.plan.groups;
  call.plan = kernels::symmetric_torch_plan(
      effective_thresholds(op, threshold, steps_log2(args.num_bits, args.is_signed),
                           args.min_threshold, args.power_of_two),
      args.num_bits, args.is_signed);
  call.plan.groups = groups;
  return call;
}

AffineCall uniform_quant_shape(const char* op, const Shape& x_sizes, size_t min_count,
                               size_t max_count, const UniformQuantArgs& args) {
  rules::num_bits(op, args.num_bits, 2, 16);
  checked_mode(op, args.mode);
  QI_CHECK(min_count == max_count, op,
           ": min_range and max_range must have the same size, got ", min_count, " and ",
           max_count);
  AffineCall call;
  call.plan.groups = place_params(op, x_sizes, args.channel_axis, args.group_size,
                                  args.group_axis, min_count, "min_range", &call.axis);
  call.grad_scale = effective_grad_scale(op, x_sizes, args.grad_scale, args.grad_scale_axis);
  return call;
}

AffineCall uniform_quant_call(const char* op, const Shape& x_sizes,
                              const std::vector<double>& min_range,
                              const std::vector<double>& max_range, const UniformQuantArgs& args) {
  AffineCall call = uniform_quant_shape(op, x_sizes, min_range.size(), max_range.size(), args);
  const kernels::GroupLayout groups = call.plan.groups;
  std::vector<double> lo(min_range.size()), hi(max_range.size());
  for (size_t i = 0; i < min_range.size(); ++i) {
    QI_CHECK(!(min_range[i] == max_range[i]), op,
             ": min_range and max_range must differ, got both ", min_range[i], " at index ", i);
    std::tie(lo[i], hi[i]) = rules::trained_range(min_range[i], max_range[i]);
    rules::range(op, lo[i], hi[i], args.num_bits, i);
  }
  call.plan = kernels::uniform_torch_plan(lo, hi, args.num_bits, args.activation);
  call.plan.groups = groups;
  return call;
}

void affine_quant_forward(const AffineCall& call, ConstTensorView x, TensorView y) {
  kernels::fake_quant_forward(call.plan, x, y, call.axis);
}

std::vector<double> symmetric_quant_backward(const AffineCall& call,
                                             const std::vector<double>& threshold,
                                             const SymmetricQuantArgs& args, ConstTensorView x,
                                             ConstTensorView dy, TensorView dx) {
  const auto g = affine_backward(call.plan, x, dy, dx, call.axis, args.mode);
  // delta = t' / 2^(n - s): dL/dt = g * dL/ddelta / 2^(n - s), where t passes the clamp.
  const double steps = std::ldexp(1.0, static_cast<int>(steps_log2(args.num_bits, args.is_signed)));
  std::vector<double> out(threshold.size());
  for (size_t c = 0; c < out.size(); ++c)
    out[c] = threshold[c] < args.min_threshold ? 0.0 : call.grad_scale * g.d_scale[c] / steps;
  return out;
}

std::vector<RangeGrads> uniform_quant_backward(const AffineCall& call,
                                               const std::vector<double>& min_range,
                                               const std::vector<double>& max_range,
                                               const UniformQuantArgs& args, ConstTensorView x,
                                               ConstTensorView dy, TensorView dx) {
  const auto g = affine_backward(call.plan, x, dy, dx, call.axis, args.mode);
  // scale = (max_adj - min_adj) / (2^n - 1) (grad-scaled) and offset = min_adj, then back
  // through the range adjustment to dL/dmin and dL/dmax.
  const double levels = std::ldexp(1.0, static_cast<int>(args.num_bits)) - 1;
  std::vector<RangeGrads> out;
  for (size_t c = 0; c < min_range.size(); ++c) {
    const double ds = call.grad_scale * g.d_scale[c];
    const auto [lo, hi] = rules::trained_range(min_range[c], max_range[c]);
    RangeGrads d = adjust_range_backward(static_cast<float>(lo), static_cast<float>(hi),
                                         args.num_bits, g.d_offset[c] - ds / levels, ds / levels);
    if (min_range[c] > max_range[c]) std::swap(d.d_min, d.d_max);  // crossed: swap back
    out.push_back(d);
  }
  return out;
}

// ---- the formats ---------------------------------------------------------------------------

std::string to_string(FormatScaling s) {
  switch (s) {
    case FormatScaling::kScale: return "scale";
    case FormatScaling::kFp8Scale: return "fp8_scale";
    case FormatScaling::kMx: return "mx";
    case FormatScaling::kNvfp4: return "nvfp4";
  }
  throw Error(str_cat("FormatScaling: invalid value ", static_cast<int>(s)));
}

FormatScaling parse_format_scaling(const char* op, const std::string& name) {
  for (auto s : {FormatScaling::kScale, FormatScaling::kFp8Scale, FormatScaling::kMx,
                 FormatScaling::kNvfp4})
    if (to_string(s) == name) return s;
  throw Error(str_cat(op, ": scaling must be one of scale, fp8_scale, mx, nvfp4, got \"", name,
                      "\""));
}

namespace {

// The element format's rounding constants.
struct ElementFormat {
  float max;
  int32_t mbits, emin;
};

// One element of the format op's backward, u = x / E already divided (float32, as the forward):
// adds dy * dy/dE in element units to *d (times `weight`, MX's multiplier) and returns dx.
// (The contiguous rows run kernels::format_backward_row, the same terms in SIMD lanes.)
// (weight is 1 or MX's power-of-two multiplier: scaling the term by it afterwards is exact.)
inline float format_terms(float u, float g, const ElementFormat& f, bool lsq, double weight,
                          double* d) {
  double term = 0.0;
  const float r = kernels::format_backward_one(u, g, f.max, f.mbits, f.emin, lsq, &term);
  *d += weight * term;
  return r;
}

// The FLOAT plan's terms (per channel or group): a = dL/dE summed.
struct FloatElem {
  const kernels::FloatPlan& plan;
  ElementFormat f;
  bool lsq;
  void one(float x, float g, float* dx, int64_t c, double* a, double*) const {
    const float r = format_terms(x / plan.scale[static_cast<size_t>(c)], g, f, lsq, 1.0, a);
    if (dx) *dx = r;
  }
  void row(const float* x, const float* dy, float* dx, int64_t n, int64_t c, double* a,
           double*) const {
    *a += kernels::format_backward_row(x, dy, dx, n, plan, c, lsq);
  }
};

// The blocks of a data-scaled plan (MX, NVFP4): every line along the block axis, block by
// block, in fixed blocks of lines; returns dL/dp summed (MX; NVFP4: 0).
double block_backward(const FormatCall& call, ConstTensorView x, ConstTensorView dy,
                      TensorView dx) {
  const kernels::GroupLayout& layout = kernels::plan_groups(call.plan);
  const auto* mx = std::get_if<kernels::MxPlan>(&call.plan);
  const auto* nv = std::get_if<kernels::Nvfp4Plan>(&call.plan);
  const ElementFormat f = mx ? ElementFormat{mx->max, mx->mbits,
                                             kernels::scalar::float_format_emin_biased(mx->ebits)}
                             : ElementFormat{6.f, 1, kernels::scalar::float_format_emin_biased(2)};
  const float p = mx && mx->tensor_scale > 0 ? mx->tensor_scale : 1.f;
  const bool lsq = call.mode == GradMode::kLsq;
  const bool write_dx = dx.data != nullptr;
  const Shape& dx_strides = write_dx ? dx.strides : x.strides;
  const kernels::GroupGeometry geometry = kernels::group_geometry(layout, x.sizes);
  const int64_t k = geometry.group_size, ga = geometry.axis, size = geometry.extent;
  const auto dims =
      kernels::coalesce_lines<3>(x.sizes, {&x.strides, &dy.strides, &dx_strides}, ga, std::nullopt);
  const int64_t lines = total_elements(dims);
  if (lines == 0 || size == 0) return 0.0;
  const int64_t x_step = x.strides[static_cast<size_t>(ga)];
  const int64_t g_step = dy.strides[static_cast<size_t>(ga)];
  const int64_t d_step = dx_strides[static_cast<size_t>(ga)];
  const int64_t want = std::clamp<int64_t>((lines * size + kGrain - 1) / kGrain, 1, kMaxBlocks);
  const int64_t block_lines = (lines + want - 1) / want;
  const int64_t blocks = (lines + block_lines - 1) / block_lines;
  const auto sums = sum_in_blocks(blocks, 1, [&](int64_t b, double* d_p, double*) {
    std::vector<float> u(static_cast<size_t>(k));
    iterate_rows(dims, b * block_lines, std::min(lines, (b + 1) * block_lines),
                 [&](const std::array<int64_t, 3>& off, const std::array<int64_t, 3>& st,
                     int64_t n, int64_t, bool) {
                   for (int64_t j = 0; j < n; ++j) {
                     const float* xp = x.data + off[0] + j * st[0];
                     const float* gp = dy.data + off[1] + j * st[1];
                     float* dxp = write_dx ? dx.data + off[2] + j * st[2] : nullptr;
                     if (x_step == 1 && g_step == 1 && (!dxp || d_step == 1)) {
                       // Contiguous lines: the SIMD rows.
                       *d_p += mx ? kernels::mx_backward_row(xp, gp, dxp, size, *mx, lsq)
                                  : kernels::nvfp4_backward_row(xp, gp, dxp, size, *nv, lsq);
                       continue;
                     }
                     for (int64_t i0 = 0; i0 + k <= size; i0 += k) {
                       // The block's scales, as the forward kernel computes them.
                       bool nan = false;
                       float amax = 0.f;
                       for (int64_t i = 0; i < k; ++i) {
                         u[static_cast<size_t>(i)] = xp[(i0 + i) * x_step] / p;
                         const float a = std::fabs(u[static_cast<size_t>(i)]);
                         nan = nan || std::isnan(a);
                         amax = std::fmax(amax, a);
                       }
                       float divisor = 1.f, multiplier = 1.f;
                       if (!nan) {
                         if (mx)
                           nan = !kernels::scalar::mx_scales(amax, mx->emax, &divisor,
                                                             &multiplier);
                         else
                           divisor = multiplier =
                               kernels::scalar::nvfp4_total_scale(amax, nv->tensor_scale);
                       }
                       for (int64_t i = 0; i < k; ++i) {
                         const float g = gp[(i0 + i) * g_step];
                         const float w = nan ? std::numeric_limits<float>::quiet_NaN()
                                             : u[static_cast<size_t>(i)] / divisor;
                         const float r = format_terms(w, g, f, lsq, multiplier, d_p);
                         if (dxp) dxp[(i0 + i) * d_step] = r;
                       }
                     }
                   }
                 });
  });
  return nv ? 0.0 : sums.d_scale[0];
}

void positive_scales(const char* op, const char* arg, const std::vector<double>& values) {
  for (size_t i = 0; i < values.size(); ++i) rules::scale(op, values[i], i, arg);
}

}  // namespace

FormatCall format_quant_call(const char* op, const Shape& x_sizes,
                             const std::vector<double>& scale,
                             const std::vector<double>& tensor_scale,
                             const FormatQuantArgs& args) {
  FormatCall call;
  call.scaling = args.scaling;
  call.mode = checked_mode(op, args.mode);
  call.grad_scale = effective_grad_scale(op, x_sizes, args.grad_scale, args.grad_scale_axis);
  call.tensor_grad_scale =
      args.tensor_grad_scale
          ? effective_grad_scale(op, x_sizes, *args.tensor_grad_scale, args.grad_scale_axis,
                                 "tensor_grad_scale")
          : call.grad_scale;
  const bool mx = args.scaling == FormatScaling::kMx;
  const kernels::FloatFormat* format =
      mx ? kernels::find_mx_format(args.format) : kernels::find_float_format(args.format);
  QI_CHECK(format != nullptr, op, ": format must be one of ",
           mx ? kernels::mx_format_names() : kernels::float_format_names(), ", got \"",
           args.format, "\"");
  const bool nvfp4 =
      args.scaling == FormatScaling::kFp8Scale || args.scaling == FormatScaling::kNvfp4;
  QI_CHECK(!nvfp4 || args.format == "E2M1", op, ": scaling \"", to_string(args.scaling),
           "\" is NVFP4's and takes format \"E2M1\", got \"", args.format, "\"");
  QI_CHECK(!nvfp4 || !args.group_size || *args.group_size == kernels::kNvfp4BlockSize, op,
           ": NVFP4 blocks hold ", kernels::kNvfp4BlockSize, " elements, got group_size ",
           args.group_size.value_or(0));
  const bool block_scaled = mx || args.scaling == FormatScaling::kNvfp4;
  QI_CHECK(!block_scaled || !args.channel_axis, op, ": scaling \"", to_string(args.scaling),
           "\" computes its scales per block from the data and takes no channel_axis, got ",
           args.channel_axis.value_or(0));
  QI_CHECK(!args.tensor_grad_scale || args.scaling == FormatScaling::kFp8Scale, op,
           ": tensor_grad_scale applies to scaling \"fp8_scale\" (a learned tensor scale) only, "
           "got scaling \"", to_string(args.scaling), "\"");
  const bool takes_tensor_scale = nvfp4;
  QI_CHECK(takes_tensor_scale || tensor_scale.empty(), op, ": tensor_scale must be empty for "
           "scaling \"", to_string(args.scaling), "\", got size ", tensor_scale.size());
  QI_CHECK(tensor_scale.size() <= 1, op, ": tensor_scale must hold at most one value, got ",
           tensor_scale.size());
  positive_scales(op, "tensor_scale", tensor_scale);
  const float t = tensor_scale.empty() ? 0.f : static_cast<float>(tensor_scale[0]);
  call.tensor_scale = t;
  switch (args.scaling) {
    case FormatScaling::kScale:
    case FormatScaling::kFp8Scale: {
      const std::optional<int64_t> groups =
          nvfp4 ? std::optional<int64_t>(kernels::kNvfp4BlockSize) : args.group_size;
      const kernels::GroupLayout layout = place_params(
          op, x_sizes, args.channel_axis, groups, args.group_axis, scale.size(),
          nvfp4 ? "scale (the block scales)" : "scale", &call.axis);
      kernels::FloatPlan plan = kernels::float_plan(*format, {});
      plan.groups = layout;
      if (nvfp4) {
        rules::finite(op, "scale", scale);
        for (double b : scale) {
          const float v = static_cast<float>(b);
          call.b.push_back(v);
          call.block_scale.push_back(kernels::scalar::nvfp4_block_scale(v));
          plan.scale.push_back(kernels::scalar::nvfp4_total(call.block_scale.back(), t));
        }
      } else {
        positive_scales(op, "scale", scale);
        for (double v : scale) plan.scale.push_back(static_cast<float>(v));
      }
      call.plan = std::move(plan);
      return call;
    }
    case FormatScaling::kMx:
    case FormatScaling::kNvfp4: {
      const int64_t bs = args.group_size.value_or(mx ? 32 : kernels::kNvfp4BlockSize);
      QI_CHECK(bs >= 1 && bs <= INT32_MAX, op, ": group_size (the block size) must be in [1, ",
               INT32_MAX, "], got ", bs);
      if (mx) {
        QI_CHECK(scale.size() == 1, op, ": scale (the MX pre-scale) must hold one value, got ",
                 scale.size());
        positive_scales(op, "scale", scale);
        kernels::MxPlan plan = kernels::mx_plan(*format, bs, args.group_axis);
        const float p = static_cast<float>(scale[0]);
        plan.tensor_scale = p == 1.f ? 0.f : p;
        call.plan = plan;
      } else {
        QI_CHECK(scale.empty(), op, ": scale must be empty for scaling \"nvfp4\" (its block "
                 "scales follow the data), got size ", scale.size());
        call.plan = kernels::nvfp4_plan(tensor_scale.empty() ? std::nullopt
                                                             : std::optional<double>(t),
                                        args.group_axis);
      }
      call.axis = kernels::check_plan_fits(op, call.plan, std::nullopt, std::nullopt, x_sizes);
      return call;
    }
  }
  throw Error(str_cat(op, ": invalid scaling ", static_cast<int>(args.scaling)));
}

void format_quant_forward(const FormatCall& call, ConstTensorView x, TensorView y) {
  kernels::fake_quant_forward(call.plan, x, y, call.axis);
}

FormatGrads format_quant_backward(const FormatCall& call, ConstTensorView x, ConstTensorView dy,
                                  TensorView dx) {
  FormatGrads out;
  const bool lsq = call.mode == GradMode::kLsq;
  if (const auto* plan = std::get_if<kernels::FloatPlan>(&call.plan)) {
    const ElementFormat f{plan->max, plan->mbits,
                          kernels::scalar::float_format_emin_biased(plan->ebits)};
    const auto g = param_backward(FloatElem{*plan, f, lsq}, plan->scale.size(), plan->groups, x,
                                  dy, dx, call.axis);
    if (call.scaling == FormatScaling::kScale) {
      for (double d : g.d_scale) out.d_scale.push_back(call.grad_scale * d);
      return out;
    }
    // NVFP4's learned block scales: E = t * e4m3(clamp(b)), straight through the rounding.
    const double t = call.tensor_scale > 0 ? call.tensor_scale : 1.0;
    double d_t = 0.0;
    for (size_t c = 0; c < g.d_scale.size(); ++c) {
      const float s = call.block_scale[c];
      // A b outside [2^-6, 448] is clamped: no gradient (a b that rounds to 2^-6 still learns).
      const bool clamped = !(call.b[c] >= 0.015625f && call.b[c] <= 448.f);
      out.d_scale.push_back(clamped ? 0.0 : call.grad_scale * g.d_scale[c] * t);
      d_t += g.d_scale[c] * s;
    }
    if (call.tensor_scale > 0) out.d_tensor_scale.push_back(call.tensor_grad_scale * d_t);
    return out;
  }
  const double d_p = block_backward(call, x, dy, dx);
  if (call.scaling == FormatScaling::kMx) out.d_scale.push_back(call.grad_scale * d_p);
  else if (call.tensor_scale > 0) out.d_tensor_scale.push_back(0.0);
  return out;
}

// ---- soft rounding ---------------------------------------------------------------------------

SoftRoundCall soft_round_call(const char* op, const Shape& w_sizes,
                              const std::vector<double>& threshold_or_min,
                              const std::optional<std::vector<double>>& max_range,
                              const SoftRoundArgs& args) {
  rules::num_bits(op, args.num_bits, 2, 16);
  const int64_t n = args.num_bits;
  SoftRoundCall call;
  call.axis = resolve_axis(op, w_sizes, args.channel_axis, threshold_or_min.size(),
                           max_range ? "min_range" : "threshold");
  SoftRoundingPlan& p = call.plan;
  if (max_range) {
    const auto& lo = threshold_or_min;
    const auto& hi = *max_range;
    QI_CHECK(lo.size() == hi.size(), op, ": min_range and max_range must have the same size, got ",
             lo.size(), " and ", hi.size());
    for (size_t i = 0; i < lo.size(); ++i) rules::range(op, lo[i], hi[i], n, i);
    // The inferable quantizer's own grid: the same scale and zero point bits.
    const auto plan = kernels::uniform_torch_plan(lo, hi, n, false);
    p.delta = plan.scale;
    p.zero_point = plan.zero_point;
    for (size_t c = 0; c < lo.size(); ++c) {
      float a = 0, b = 0;
      kernels::adjust_range_float(static_cast<float>(lo[c]), static_cast<float>(hi[c]), n, &a, &b);
      p.offset.push_back(a);
    }
    p.qmin = plan.qmin;
    p.qmax = plan.qmax;
  } else {
    const auto t =
        effective_thresholds(op, threshold_or_min, n - 1, kMinThreshold, args.power_of_two);
    const auto plan = kernels::symmetric_torch_plan(t, n, true);
    p.delta = plan.scale;
    p.offset.assign(t.size(), 0.f);
    p.zero_point.assign(t.size(), 0.f);
    p.qmin = plan.qmin;
    p.qmax = plan.qmax;
  }
  return call;
}

SoftRoundingPlan soft_rounding_init_plan(const std::vector<double>& threshold_or_min,
                                         const std::optional<std::vector<double>>& max_range,
                                         int64_t num_bits) {
  SoftRoundingPlan p;
  if (max_range) {
    p.qmin = 0.f;
    p.qmax = static_cast<float>(std::ldexp(1.0, static_cast<int>(num_bits)) - 1);
    for (size_t c = 0; c < threshold_or_min.size(); ++c) {
      p.delta.push_back(static_cast<float>(((*max_range)[c] - threshold_or_min[c]) / p.qmax));
      p.offset.push_back(static_cast<float>(threshold_or_min[c]));
      p.zero_point.push_back(0.f);
    }
    return p;
  }
  const auto plan = kernels::symmetric_torch_plan(threshold_or_min, num_bits, true);
  p.delta = plan.scale;
  p.offset.assign(threshold_or_min.size(), 0.f);
  p.zero_point.assign(threshold_or_min.size(), 0.f);
  p.qmin = plan.qmin;
  p.qmax = plan.qmax;
  return p;
}

float rectified_sigmoid(float alpha) {
  const double s = 1.0 / (1.0 + std::exp(-static_cast<double>(alpha)));
  const double h = s * (kSoftRoundingZeta - kSoftRoundingGamma) + kSoftRoundingGamma;
  return static_cast<float>(std::clamp(h, 0.0, 1.0));
}

float rectified_sigmoid_grad(float alpha) {
  const double s = 1.0 / (1.0 + std::exp(-static_cast<double>(alpha)));
  const double h = s * (kSoftRoundingZeta - kSoftRoundingGamma) + kSoftRoundingGamma;
  if (h <= 0.0 || h >= 1.0) return 0.f;  // the clip stops the gradient
  return static_cast<float>(s * (1.0 - s) * (kSoftRoundingZeta - kSoftRoundingGamma));
}

float rectified_sigmoid_inverse(float r) {
  return static_cast<float>(
      -std::log((kSoftRoundingZeta - kSoftRoundingGamma) / (r - kSoftRoundingGamma) - 1.0));
}

namespace {

// Serial elementwise walk over up to 3 views with the channel of each element.
template <size_t K, typename Fn>
void for_each_element(const Shape& sizes, const std::array<const Shape*, K>& strides,
                      std::optional<int64_t> channel_axis, Fn&& fn) {
  const auto dims = coalesce_dims<K>(sizes, strides, channel_axis);
  const int64_t total = total_elements(dims);
  if (total == 0) return;
  parallel_for(0, total, kGrain, [&](int64_t begin, int64_t end) {
    iterate_rows(dims, begin, end,
                 [&](const std::array<int64_t, K>& off, const std::array<int64_t, K>& st,
                     int64_t n, int64_t c0, bool vary) {
                   for (int64_t i = 0; i < n; ++i) {
                     std::array<int64_t, K> o;
                     for (size_t v = 0; v < K; ++v) o[v] = off[v] + i * st[v];
                     fn(o, vary ? c0 + i : c0);
                   }
                 });
  });
}

}  // namespace

namespace {

// h(alpha) and dh/dalpha in double, for either element type.
double rect_h(double alpha) {
  const double s = 1.0 / (1.0 + std::exp(-alpha));
  return std::clamp(s * (kSoftRoundingZeta - kSoftRoundingGamma) + kSoftRoundingGamma, 0.0, 1.0);
}
double rect_dh(double alpha) {
  const double s = 1.0 / (1.0 + std::exp(-alpha));
  const double h = s * (kSoftRoundingZeta - kSoftRoundingGamma) + kSoftRoundingGamma;
  if (h <= 0.0 || h >= 1.0) return 0.0;  // the clip stops the gradient
  return s * (1.0 - s) * (kSoftRoundingZeta - kSoftRoundingGamma);
}

// T = float: the arithmetic of the torch layer's kernels (float32 steps); T = double: the same
// formulas in double, for gradient checks in float64.
template <typename T>
void soft_forward(const SoftRoundingPlan& plan, BasicTensorView<const T> w,
                  BasicTensorView<const T> alpha, BasicTensorView<T> q,
                  std::optional<int64_t> channel_axis, bool training) {
  for_each_element<3>(w.sizes, {&w.strides, &alpha.strides, &q.strides}, channel_axis,
                      [&](const std::array<int64_t, 3>& o, int64_t c) {
                        const T d = plan.delta[c];
                        const T off = plan.offset[c];
                        T a = static_cast<T>(rect_h(alpha.data[o[1]]));
                        if (!training) a = a >= T(0.5) ? T(1) : T(0);
                        const T w_int = std::floor((w.data[o[0]] - off) / d);
                        const T v = std::fmin(std::fmax(w_int + a, T(plan.qmin)), T(plan.qmax));
                        q.data[o[2]] = (v - T(plan.zero_point[c])) * d;
                      });
}

template <typename T>
void soft_backward(const SoftRoundingPlan& plan, BasicTensorView<const T> alpha,
                   BasicTensorView<const T> dq, BasicTensorView<T> d_alpha,
                   std::optional<int64_t> channel_axis) {
  for_each_element<3>(alpha.sizes, {&alpha.strides, &dq.strides, &d_alpha.strides}, channel_axis,
                      [&](const std::array<int64_t, 3>& o, int64_t c) {
                        d_alpha.data[o[2]] = static_cast<T>(
                            dq.data[o[1]] * static_cast<double>(plan.delta[c]) *
                            static_cast<T>(rect_dh(alpha.data[o[0]])));
                      });
}

template <typename T>
double soft_regularization(BasicTensorView<const T> alpha, double beta) {
  const auto dims = coalesce_dims<1>(alpha.sizes, {&alpha.strides}, std::nullopt);
  double total = 0;
  iterate_rows(dims, 0, total_elements(dims),
               [&](const std::array<int64_t, 1>& off, const std::array<int64_t, 1>& st, int64_t n,
                   int64_t, bool) {
                 for (int64_t i = 0; i < n; ++i) {
                   const double h = rect_h(alpha.data[off[0] + i * st[0]]);
                   total += 1.0 - std::pow(std::fabs(2.0 * (h - 0.5)), beta);
                 }
               });
  return total;
}

template <typename T>
void soft_regularization_backward(BasicTensorView<const T> alpha, double beta, double d_reg,
                                  BasicTensorView<T> d_alpha) {
  for_each_element<2>(alpha.sizes, {&alpha.strides, &d_alpha.strides}, std::nullopt,
                      [&](const std::array<int64_t, 2>& o, int64_t) {
                        const double a = alpha.data[o[0]];
                        const double z = 2.0 * (rect_h(a) - 0.5);
                        const double az = std::fabs(z);
                        // d/dh (1 - |z|^beta) = -beta |z|^(beta-1) sign(z) * 2
                        const double dh = az == 0.0 ? 0.0
                                                    : -beta * std::pow(az, beta - 1.0) *
                                                          (z > 0 ? 1.0 : -1.0) * 2.0;
                        d_alpha.data[o[1]] = static_cast<T>(d_reg * dh * rect_dh(a));
                      });
}

}  // namespace

void soft_rounding_forward(const SoftRoundingPlan& plan, ConstTensorView w, ConstTensorView alpha,
                           TensorView q, std::optional<int64_t> channel_axis, bool training) {
  soft_forward<float>(plan, w, alpha, q, channel_axis, training);
}
void soft_rounding_forward(const SoftRoundingPlan& plan, BasicTensorView<const double> w,
                           BasicTensorView<const double> alpha, BasicTensorView<double> q,
                           std::optional<int64_t> channel_axis, bool training) {
  soft_forward<double>(plan, w, alpha, q, channel_axis, training);
}

void soft_rounding_backward(const SoftRoundingPlan& plan, ConstTensorView alpha,
                            ConstTensorView dq, TensorView d_alpha,
                            std::optional<int64_t> channel_axis) {
  soft_backward<float>(plan, alpha, dq, d_alpha, channel_axis);
}
void soft_rounding_backward(const SoftRoundingPlan& plan, BasicTensorView<const double> alpha,
                            BasicTensorView<const double> dq, BasicTensorView<double> d_alpha,
                            std::optional<int64_t> channel_axis) {
  soft_backward<double>(plan, alpha, dq, d_alpha, channel_axis);
}

void soft_rounding_init_alpha(const SoftRoundingPlan& plan, ConstTensorView w, TensorView alpha,
                              std::optional<int64_t> channel_axis) {
  for_each_element<2>(w.sizes, {&w.strides, &alpha.strides}, channel_axis,
                      [&](const std::array<int64_t, 2>& o, int64_t c) {
                        float v = (w.data[o[0]] - plan.offset[c]) / plan.delta[c];
                        v = std::fmin(std::fmax(v, plan.qmin), plan.qmax);
                        alpha.data[o[1]] = rectified_sigmoid_inverse(v - std::floor(v));
                      });
}

void check_soft_rounding_beta(double beta, const char* op) {
  QI_CHECK(std::isfinite(beta), op, ": beta must be finite, got ", beta);
}

double soft_rounding_regularization(ConstTensorView alpha, double beta) {
  return soft_regularization<float>(alpha, beta);
}
double soft_rounding_regularization(BasicTensorView<const double> alpha, double beta) {
  return soft_regularization<double>(alpha, beta);
}

void soft_rounding_regularization_backward(ConstTensorView alpha, double beta, double d_reg,
                                           TensorView d_alpha) {
  soft_regularization_backward<float>(alpha, beta, d_reg, d_alpha);
}
void soft_rounding_regularization_backward(BasicTensorView<const double> alpha, double beta,
                                           double d_reg, BasicTensorView<double> d_alpha) {
  soft_regularization_backward<double>(alpha, beta, d_reg, d_alpha);
}

LinearAnnealing::LinearAnnealing(int64_t t_start, int64_t t_end, double initial_value,
                                 double target_value)
    : t_start_(t_start), t_end_(t_end), initial_(initial_value), target_(target_value) {
  QI_CHECK(t_start >= 0 && t_start < t_end,
           "LinearAnnealing: expected 0 <= t_start < t_end, got t_start=", t_start,
           " and t_end=", t_end);
}

double LinearAnnealing::operator()(int64_t t) const {
  const double f = std::clamp(static_cast<double>(t - t_start_) / static_cast<double>(t_end_ - t_start_),
                              0.0, 1.0);
  return initial_ + f * (target_ - initial_);
}

namespace {
LinearAnnealing schedule_annealing(int64_t total_steps, double warmup_fraction, double beta_start,
                                   double beta_end) {
  QI_CHECK(total_steps > 0, "SoftRoundingRegularization: total_steps must be > 0, got ",
           total_steps);
  QI_CHECK(warmup_fraction >= 0 && warmup_fraction < 1,
           "SoftRoundingRegularization: warmup_fraction must be in [0, 1), got ", warmup_fraction);
  QI_CHECK(std::isfinite(beta_start) && std::isfinite(beta_end),
           "SoftRoundingRegularization: beta_start and beta_end must be finite, got ", beta_start,
           " and ", beta_end);
  return LinearAnnealing(static_cast<int64_t>(warmup_fraction * static_cast<double>(total_steps)),
                         total_steps, beta_start, beta_end);
}
}  // namespace

SoftRoundingSchedule::SoftRoundingSchedule(int64_t total_steps, double warmup_fraction,
                                           double beta_start, double beta_end)
    : annealing_(schedule_annealing(total_steps, warmup_fraction, beta_start, beta_end)) {}

double SoftRoundingSchedule::beta(int64_t step) const { return annealing_(step); }

}  // namespace qi::trainable
