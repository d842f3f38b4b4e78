// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// CPU kernels of the qi ops: check the tensors, call the core, return tensors in the input's
// dtype and memory format. Every rule and formula is the core's; this file only binds.
#include <algorithm>
#include <memory>
#include <string>
#include <tuple>

#include <ATen/ATen.h>
#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/record_function.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include "ops/common.h"
#include "qi/inferable_quantizers.h"
#include "qi/kernels.h"

namespace qi::torch {
namespace {

using namespace detail;

// ---- inferable quantizers ----------------------------------------------------------------------

// Q(x) into out (float32 of x's sizes), by `apply`, then in x's dtype.
template <typename Apply>
at::Tensor apply_float(const at::Tensor& x, Apply&& apply) {
  const at::Tensor x32 = as_float(x);
  at::Tensor y = empty_float_like(x32);
  translate_errors([&] { apply(const_view(x32), mutable_view(y)); });
  return in_dtype_of(y, x);
}

// The same into a preallocated `out` (may be x itself).
template <typename Apply>
at::Tensor& apply_float_out(const at::Tensor& x, at::Tensor& out, const char* op, Apply&& apply) {
  check_floating_cpu(out, op, "out");
  QI_TORCH_CHECK(out.sizes() == x.sizes(), op, ": out sizes ", out.sizes(), " must equal x sizes ",
                 x.sizes());
  QI_TORCH_CHECK(out.scalar_type() == x.scalar_type(), op, ": out dtype ", out.scalar_type(),
                 " must equal x dtype ", x.scalar_type());
  if (x.scalar_type() == at::kFloat) {
    translate_errors([&] { apply(const_view(x), mutable_view(out)); });
  } else {
    out.copy_(apply_float(x, apply));
  }
  return out;
}

std::shared_ptr<const BaseInferableQuantizer> quantizer_of(c10::string_view json) {
  return translate_errors([&] { return cached_inferable_quantizer(std::string(json)); });
}

at::Tensor fake_quant_cpu(const at::Tensor& x, c10::string_view quantizer) {
  check_floating_cpu(x, "qi::fake_quant", "x");
  const auto q = quantizer_of(quantizer);
  return apply_float(x, [&](ConstTensorView in, TensorView out) { q->apply(in, out); });
}

void fake_quant_out_cpu(const at::Tensor& x, c10::string_view quantizer, at::Tensor& out) {
  check_floating_cpu(x, "qi::fake_quant.out", "x");
  const auto q = quantizer_of(quantizer);
  apply_float_out(x, out, "qi::fake_quant.out",
                  [&](ConstTensorView in, TensorView o) { q->apply(in, o); });
}

// The packed plan of an int32 tensor (kernels::pack_plan's words).
kernels::Plan plan_of(const at::Tensor& plan, const char* op) {
  QI_TORCH_CHECK(plan.defined() && plan.device().is_cpu() && plan.scalar_type() == at::kInt &&
                     plan.dim() == 1,
                 op, ": plan must be a 1-D int32 CPU tensor (a quantizer's packed plan), got ",
                 plan.defined() ? plan.toString() : "undefined", " of sizes ",
                 plan.defined() ? plan.sizes() : at::IntArrayRef{});
  const at::Tensor c = plan.contiguous();
  return translate_errors(
      [&] { return kernels::unpack_plan(c.const_data_ptr<int32_t>(), c.numel()); });
}

at::Tensor quantize_with(const at::Tensor& x, const kernels::Plan& p,
                         std::optional<int64_t> channel_axis, std::optional<int64_t> input_rank) {
  return apply_float(x, [&](ConstTensorView in, TensorView out) {
    kernels::checked_fake_quant("qi::quantize", p, channel_axis, input_rank, in, out);
  });
}

at::Tensor quantize_cpu(const at::Tensor& x, const at::Tensor& plan,
                        std::optional<int64_t> channel_axis, std::optional<int64_t> input_rank) {
  const char* op = "qi::quantize";
  check_floating_cpu(x, op, "x");
  return quantize_with(x, plan_of(plan, op), channel_axis, input_rank);
}

void quantize_out_cpu(const at::Tensor& x, const at::Tensor& plan,
                      std::optional<int64_t> channel_axis, std::optional<int64_t> input_rank,
                      at::Tensor& out) {
  const char* op = "qi::quantize.out";
  check_floating_cpu(x, op, "x");
  const auto p = plan_of(plan, op);
  apply_float_out(x, out, op, [&](ConstTensorView in, TensorView o) {
    kernels::checked_fake_quant(op, p, channel_axis, input_rank, in, o);
  });
}

// ---- trainable quantizers ----------------------------------------------------------------------

at::Tensor run_affine(const at::Tensor& x, const trainable::AffineCall& call) {
  return apply_float(x, [&](ConstTensorView in, TensorView out) {
    trainable::affine_quant_forward(call, in, out);
  });
}

// Per-parameter gradients (double) as a tensor shaped and typed like the parameter.
at::Tensor param_grad(const std::vector<double>& g, const at::Tensor& like) {
  TORCH_INTERNAL_ASSERT(static_cast<int64_t>(g.size()) == like.numel(), "qi: ", g.size(),
                        " parameter gradients for a parameter of ", like.numel(), " values");
  at::Tensor t = at::empty({static_cast<int64_t>(g.size())}, like.options().dtype(at::kDouble));
  std::copy(g.begin(), g.end(), t.mutable_data_ptr<double>());
  return t.to(like.scalar_type()).reshape(like.sizes());
}

// What a backward op returns for a gradient nobody asked for.
at::Tensor not_needed(const at::Tensor& like) { return at::empty({0}, like.options()); }

void check_grad(const at::Tensor& grad, const at::Tensor& x, const char* op) {
  check_floating_cpu(grad, op, "grad");
  check_floating_cpu(x, op, "x");
  QI_TORCH_CHECK(grad.sizes() == x.sizes(), op, ": grad sizes ", grad.sizes(),
                 " must equal x sizes ", x.sizes());
}

// The shared backward of the trainable ops (affine and formats): dx (LSQ masks it; STE passes
// dy) in x's dtype and the parameter sums the core returns. The sums run over row-major
// (contiguous) copies of x and dy when they are laid out otherwise, so a gradient has the same
// bits in every layout (eager, channels_last, or the strides a compiler picks).
template <typename Backward>
at::Tensor fused_backward(const at::Tensor& grad, const at::Tensor& x, trainable::GradMode mode,
                          bool need_x, bool need_params, Backward&& backward) {
  if (!need_params && mode == trainable::GradMode::kSte)
    return need_x ? grad.to(x.scalar_type(), /*non_blocking=*/false, /*copy=*/true)
                  : not_needed(x);
  const at::Tensor x32 = as_float(x).contiguous(), g32 = as_float(grad).contiguous();
  at::Tensor dx;
  TensorView dx_view;
  if (need_x && mode == trainable::GradMode::kLsq) {
    dx = empty_float_like(x32);
    dx_view = mutable_view(dx);
  }
  translate_errors([&] { backward(const_view(x32), const_view(g32), dx_view); });
  if (!need_x) return not_needed(x);
  if (mode == trainable::GradMode::kSte)
    return grad.to(x.scalar_type(), /*non_blocking=*/false, /*copy=*/true);
  if (dx.strides() == x.strides()) return in_dtype_of(dx, x);
  at::Tensor laid_out = at::empty_like(x);  // dx in x's own layout, as the fake kernel says
  laid_out.copy_(dx);
  return laid_out;
}

at::Tensor symmetric_quant_cpu(const at::Tensor& x, const at::Tensor& threshold, int64_t n,
                               bool is_signed, std::optional<int64_t> channel_axis,
                               c10::string_view mode, double grad_scale,
                               std::optional<int64_t> grad_scale_axis, double min_threshold,
                               bool power_of_two, std::optional<int64_t> group_size,
                               int64_t group_axis) {
  const char* op = "qi::symmetric_quant";
  check_floating_cpu(x, op, "x");
  const auto args = symmetric_args(n, is_signed, channel_axis, mode, grad_scale, grad_scale_axis,
                                   min_threshold, power_of_two, group_size, group_axis, op);
  const auto t = values_of(threshold, op, "threshold");
  return run_affine(x, translate_errors([&] {
                      return trainable::symmetric_quant_call(op, x.sizes().vec(), t, args);
                    }));
}

std::tuple<at::Tensor, at::Tensor> symmetric_quant_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& threshold, int64_t n,
    bool is_signed, std::optional<int64_t> channel_axis, c10::string_view mode, double grad_scale,
    std::optional<int64_t> grad_scale_axis, double min_threshold, bool power_of_two, bool need_x,
    bool need_threshold, std::optional<int64_t> group_size, int64_t group_axis) {
  const char* op = "qi::_symmetric_quant_backward";
  check_grad(grad, x, op);
  const auto args = symmetric_args(n, is_signed, channel_axis, mode, grad_scale, grad_scale_axis,
                                   min_threshold, power_of_two, group_size, group_axis, op);
  const auto t = values_of(threshold, op, "threshold");
  const auto call = translate_errors(
      [&] { return trainable::symmetric_quant_call(op, x.sizes().vec(), t, args); });
  std::vector<double> dt;
  at::Tensor dx = fused_backward(
      grad, x, args.mode, need_x, need_threshold,
      [&](ConstTensorView xv, ConstTensorView gv, TensorView dxv) {
        dt = trainable::symmetric_quant_backward(call, t, args, xv, gv, dxv);
      });
  return {dx, need_threshold ? param_grad(dt, threshold) : not_needed(threshold)};
}

at::Tensor uniform_quant_cpu(const at::Tensor& x, const at::Tensor& min_range,
                             const at::Tensor& max_range, int64_t n,
                             std::optional<int64_t> channel_axis, c10::string_view mode,
                             double grad_scale, bool activation,
                             std::optional<int64_t> grad_scale_axis,
                             std::optional<int64_t> group_size, int64_t group_axis) {
  const char* op = "qi::uniform_quant";
  check_floating_cpu(x, op, "x");
  const auto args = uniform_args(n, channel_axis, mode, grad_scale, activation, grad_scale_axis,
                                 group_size, group_axis, op);
  const auto lo = values_of(min_range, op, "min_range");
  const auto hi = values_of(max_range, op, "max_range");
  return run_affine(x, translate_errors([&] {
                      return trainable::uniform_quant_call(op, x.sizes().vec(), lo, hi, args);
                    }));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> uniform_quant_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& min_range,
    const at::Tensor& max_range, int64_t n, std::optional<int64_t> channel_axis,
    c10::string_view mode, double grad_scale, bool activation,
    std::optional<int64_t> grad_scale_axis, bool need_x, bool need_range,
    std::optional<int64_t> group_size, int64_t group_axis) {
  const char* op = "qi::_uniform_quant_backward";
  check_grad(grad, x, op);
  const auto args = uniform_args(n, channel_axis, mode, grad_scale, activation, grad_scale_axis,
                                 group_size, group_axis, op);
  const auto lo = values_of(min_range, op, "min_range");
  const auto hi = values_of(max_range, op, "max_range");
  const auto call = translate_errors(
      [&] { return trainable::uniform_quant_call(op, x.sizes().vec(), lo, hi, args); });
  std::vector<trainable::RangeGrads> r;
  at::Tensor dx = fused_backward(
      grad, x, args.mode, need_x, need_range,
      [&](ConstTensorView xv, ConstTensorView gv, TensorView dxv) {
        r = trainable::uniform_quant_backward(call, lo, hi, args, xv, gv, dxv);
      });
  if (!need_range) return {dx, not_needed(min_range), not_needed(max_range)};
  std::vector<double> dmin, dmax;
  for (const auto& g : r) {
    dmin.push_back(g.d_min);
    dmax.push_back(g.d_max);
  }
  return {dx, param_grad(dmin, min_range), param_grad(dmax, max_range)};
}

// ---- the formats: low-precision floats, MX and NVFP4 -------------------------------------------

// The checked call of the formats op: the parameters as doubles (an unused one is empty).
struct FormatOpCall {
  std::vector<double> scale, tensor_scale;
  trainable::FormatCall call;
};
FormatOpCall format_call(const at::Tensor& x, const at::Tensor& scale,
                         const at::Tensor& tensor_scale, const trainable::FormatQuantArgs& args,
                         const char* op) {
  FormatOpCall c{values_of(scale, op, "scale"), values_of(tensor_scale, op, "tensor_scale"), {}};
  c.call = translate_errors([&] {
    return trainable::format_quant_call(op, x.sizes().vec(), c.scale, c.tensor_scale, args);
  });
  return c;
}

at::Tensor format_quant_cpu(const at::Tensor& x, const at::Tensor& scale,
                            const at::Tensor& tensor_scale, c10::string_view format,
                            c10::string_view scaling, std::optional<int64_t> channel_axis,
                            c10::string_view mode, double grad_scale,
                            std::optional<int64_t> grad_scale_axis,
                            std::optional<int64_t> group_size, int64_t group_axis,
                            std::optional<double> tensor_grad_scale) {
  const char* op = "qi::format_quant";
  check_floating_cpu(x, op, "x");
  const auto args = format_args(format, scaling, channel_axis, mode, grad_scale, grad_scale_axis,
                                group_size, group_axis, tensor_grad_scale, op);
  const auto c = format_call(x, scale, tensor_scale, args, op);
  return apply_float(x, [&](ConstTensorView in, TensorView out) {
    trainable::format_quant_forward(c.call, in, out);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> format_quant_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& scale,
    const at::Tensor& tensor_scale, c10::string_view format, c10::string_view scaling,
    std::optional<int64_t> channel_axis, c10::string_view mode, double grad_scale,
    std::optional<int64_t> grad_scale_axis, std::optional<int64_t> group_size,
    int64_t group_axis, bool need_x, bool need_scale, std::optional<double> tensor_grad_scale) {
  const char* op = "qi::_format_quant_backward";
  check_grad(grad, x, op);
  const auto args = format_args(format, scaling, channel_axis, mode, grad_scale, grad_scale_axis,
                                group_size, group_axis, tensor_grad_scale, op);
  const auto c = format_call(x, scale, tensor_scale, args, op);
  trainable::FormatGrads g;
  at::Tensor dx = fused_backward(grad, x, args.mode, need_x, need_scale,
                                 [&](ConstTensorView xv, ConstTensorView gv, TensorView dxv) {
                                   g = trainable::format_quant_backward(c.call, xv, gv, dxv);
                                 });
  if (!need_scale) return {dx, not_needed(scale), not_needed(tensor_scale)};
  return {dx, param_grad(g.d_scale, scale), param_grad(g.d_tensor_scale, tensor_scale)};
}

// ---- soft rounding -----------------------------------------------------------------------------
// Runs in float64 when w is float64 (gradient checks), else in float32 (other dtypes convert).

trainable::SoftRoundCall soft_call(const at::Tensor& w, const at::Tensor& threshold_or_min,
                                   const std::optional<at::Tensor>& max_range, int64_t n,
                                   bool power_of_two, std::optional<int64_t> channel_axis,
                                   const char* op) {
  const bool uniform = max_range.has_value() && max_range->defined();
  const auto p = values_of(threshold_or_min, op, uniform ? "min_range" : "threshold");
  std::optional<std::vector<double>> hi;
  if (uniform) hi = values_of(*max_range, op, "max_range");
  return translate_errors([&] {
    return trainable::soft_round_call(op, w.sizes().vec(), p, hi, {n, power_of_two, channel_axis});
  });
}

void check_same_dtype(const at::Tensor& t, const at::Tensor& like, const char* op,
                      const char* arg) {
  check_floating_cpu(t, op, arg);
  QI_TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", arg, " must have dtype ",
                 like.scalar_type(), ", got ", t.scalar_type());
}

template <typename T>
BasicTensorView<const T> cview(const at::Tensor& t) {
  return BasicTensorView<const T>(t.const_data_ptr<T>(), t.sizes().vec(), t.strides().vec());
}
template <typename T>
BasicTensorView<T> mview(at::Tensor& t) {
  return BasicTensorView<T>(t.mutable_data_ptr<T>(), t.sizes().vec(), t.strides().vec());
}

// fn.template operator()<T>(tensors converted to T...) with T = double for float64, else float;
// the result converted back to `like`'s dtype.
template <typename Fn>
at::Tensor in_compute_dtype(const at::Tensor& like, Fn&& fn) {
  if (like.scalar_type() == at::kDouble) return fn(double{}, at::kDouble);
  return in_dtype_of(fn(float{}, at::kFloat), like);
}

at::Tensor soft_round_cpu(const at::Tensor& w, const at::Tensor& alpha,
                          const at::Tensor& threshold_or_min, int64_t n, bool power_of_two,
                          std::optional<int64_t> channel_axis, bool training,
                          const std::optional<at::Tensor>& max_range) {
  const char* op = "qi::soft_round";
  check_floating_cpu(w, op, "w");
  check_same_dtype(alpha, w, op, "alpha");
  QI_TORCH_CHECK(alpha.sizes() == w.sizes(), op, ": alpha sizes ", alpha.sizes(),
                 " must equal w sizes ", w.sizes());
  const auto call = soft_call(w, threshold_or_min, max_range, n, power_of_two, channel_axis, op);
  return in_compute_dtype(w, [&](auto zero, at::ScalarType st) {
    using T = decltype(zero);
    const at::Tensor wt = w.to(st), at_ = alpha.to(st);
    at::Tensor q = at::empty_like(wt);
    trainable::soft_rounding_forward(call.plan, cview<T>(wt), cview<T>(at_), mview<T>(q),
                                     call.axis, training);
    return q;
  });
}

at::Tensor soft_round_backward_cpu(const at::Tensor& grad, const at::Tensor& alpha,
                                   const at::Tensor& threshold_or_min, int64_t n,
                                   bool power_of_two, std::optional<int64_t> channel_axis,
                                   const std::optional<at::Tensor>& max_range) {
  const char* op = "qi::_soft_round_backward";
  check_grad(grad, alpha, op);
  const auto call =
      soft_call(alpha, threshold_or_min, max_range, n, power_of_two, channel_axis, op);
  return in_compute_dtype(alpha, [&](auto zero, at::ScalarType st) {
    using T = decltype(zero);
    const at::Tensor a = alpha.to(st), g = grad.to(st);
    at::Tensor d = at::empty_like(a);
    trainable::soft_rounding_backward(call.plan, cview<T>(a), cview<T>(g), mview<T>(d), call.axis);
    return d;
  });
}

void check_beta(double beta, const char* op) {
  translate_errors([&] { trainable::check_soft_rounding_beta(beta, op); });
}

at::Tensor soft_round_regularization_cpu(const at::Tensor& alpha, double beta) {
  const char* op = "qi::soft_round_regularization";
  check_floating_cpu(alpha, op, "alpha");
  check_beta(beta, op);
  const double r = alpha.scalar_type() == at::kDouble
                       ? trainable::soft_rounding_regularization(cview<double>(alpha), beta)
                       : trainable::soft_rounding_regularization(
                             cview<float>(as_float(alpha).contiguous()), beta);
  return at::scalar_tensor(r, alpha.options());
}

at::Tensor soft_round_regularization_backward_cpu(const at::Tensor& grad, const at::Tensor& alpha,
                                                  double beta) {
  const char* op = "qi::_soft_round_regularization_backward";
  check_floating_cpu(alpha, op, "alpha");
  check_beta(beta, op);
  QI_TORCH_CHECK(grad.numel() == 1, op, ": grad must hold one value, got ", grad.numel());
  const double g = grad.item<double>();
  return in_compute_dtype(alpha, [&](auto zero, at::ScalarType st) {
    using T = decltype(zero);
    const at::Tensor a = alpha.to(st);
    at::Tensor d = at::empty_like(a);
    trainable::soft_rounding_regularization_backward(cview<T>(a), beta, g, mview<T>(d));
    return d;
  });
}

}  // namespace

at::Tensor quantize_eager(const at::Tensor& x, const kernels::Plan& plan,
                          std::optional<int64_t> channel_axis, std::optional<int64_t> input_rank) {
  if (!x.defined() || !x.is_cpu() || x.layout() != at::kStrided || !x.is_floating_point() ||
      x.is_neg() || x.is_conj())
    return {};
  const auto s = x.scalar_type();
  if (s != at::kFloat && s != at::kHalf && s != at::kBFloat16 && s != at::kDouble) return {};
  if (at::GradMode::is_enabled() && x.requires_grad()) return {};
  if (x._fw_grad(/*level=*/0).defined()) return {};
  // Anything that would intercept the call in the dispatcher: tracers, Python modes and tensor
  // subclasses, functorch transforms, functionalization (their keys, on the tensor or in the
  // thread's included set), and the JIT tracer.
  const auto local = c10::impl::tls_local_dispatch_key_set();
  const c10::DispatchKeySet keys = (x.key_set() | local.included_) - local.excluded_;
  constexpr c10::DispatchKey kIntercepting[] = {
      c10::DispatchKey::Python,        c10::DispatchKey::PythonTLSSnapshot,
      c10::DispatchKey::PreDispatch,   c10::DispatchKey::FuncTorchDynamicLayerFrontMode,
      c10::DispatchKey::FuncTorchDynamicLayerBackMode, c10::DispatchKey::FuncTorchBatched,
      c10::DispatchKey::FuncTorchGradWrapper, c10::DispatchKey::FuncTorchVmapMode,
      c10::DispatchKey::Functionalize, c10::DispatchKey::Tracer,
      c10::DispatchKey::BatchedNestedTensor, c10::DispatchKey::Meta};
  for (const auto k : kIntercepting)
    if (keys.has(k)) return {};
  if (at::impl::torch_function_mode_enabled()) return {};
  RECORD_FUNCTION("qi::quantize", std::vector<c10::IValue>());
  return quantize_with(x, plan, channel_axis, input_rank);
}
}  // namespace qi::torch

TORCH_LIBRARY_IMPL(qi, CPU, m) {
  m.impl("fake_quant", &qi::torch::fake_quant_cpu);
  m.impl("fake_quant.out", &qi::torch::fake_quant_out_cpu);
  m.impl("quantize", &qi::torch::quantize_cpu);
  m.impl("quantize.out", &qi::torch::quantize_out_cpu);
  m.impl("symmetric_quant", &qi::torch::symmetric_quant_cpu);
  m.impl("_symmetric_quant_backward", &qi::torch::symmetric_quant_backward_cpu);
  m.impl("uniform_quant", &qi::torch::uniform_quant_cpu);
  m.impl("_uniform_quant_backward", &qi::torch::uniform_quant_backward_cpu);
  m.impl("format_quant", &qi::torch::format_quant_cpu);
  m.impl("_format_quant_backward", &qi::torch::format_quant_backward_cpu);
  m.impl("soft_round", &qi::torch::soft_round_cpu);
  m.impl("_soft_round_backward", &qi::torch::soft_round_backward_cpu);
  m.impl("soft_round_regularization", &qi::torch::soft_round_regularization_cpu);
  m.impl("_soft_round_regularization_backward", &qi::torch::soft_round_regularization_backward_cpu);
}
