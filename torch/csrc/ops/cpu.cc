// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// CPU kernels of the qi ops: check arguments, build the core plan, call the core.
#include <algorithm>
#include <memory>
#include <string>

#include <ATen/ATen.h>
#include <torch/library.h>

#include "ops/common.h"
#include "qi/inferable_quantizers.h"

namespace qi::torch {
namespace {

using namespace detail;


at::Tensor fake_quant_cpu(const at::Tensor& x, c10::string_view quantizer) {
  check_float_cpu(x, "qi::fake_quant", "x");
  const auto q = translate_errors([&] { return cached_inferable_quantizer(std::string(quantizer)); });
  at::Tensor y = at::empty(x.sizes(), x.options());
  translate_errors([&] { q->apply(const_view(x), mutable_view(y)); });
  return y;
}

at::Tensor& fake_quant_out_cpu(const at::Tensor& x, c10::string_view quantizer, at::Tensor& out) {
  check_float_cpu(x, "qi::fake_quant.out", "x");
  check_float_cpu(out, "qi::fake_quant.out", "out");
  TORCH_CHECK(out.sizes() == x.sizes(), "qi::fake_quant.out: out sizes ", out.sizes(),
              " must equal x sizes ", x.sizes());
  const auto q = translate_errors([&] { return cached_inferable_quantizer(std::string(quantizer)); });
  translate_errors([&] { q->apply(const_view(x), mutable_view(out)); });
  return out;
}

trainable::SymmetricQuantArgs symmetric_args(int64_t n, bool is_signed,
                                              std::optional<int64_t> channel_axis,
                                              c10::string_view mode, double grad_scale,
                                              std::optional<int64_t> grad_scale_axis,
                                              double min_threshold, bool power_of_two,
                                              const char* op) {
  return {n,          is_signed,          channel_axis, grad_mode_of(std::string(mode), op),
          grad_scale, grad_scale_axis, min_threshold, power_of_two};
}

trainable::UniformQuantArgs uniform_args(int64_t n, std::optional<int64_t> channel_axis,
                                         c10::string_view mode, double grad_scale,
                                         bool activation, std::optional<int64_t> grad_scale_axis,
                                         const char* op) {
  return {n, channel_axis, grad_mode_of(std::string(mode), op), grad_scale, grad_scale_axis,
          activation};
}

at::Tensor run_affine(const at::Tensor& x, const trainable::AffineCall& call) {
  at::Tensor y = at::empty(x.sizes(), x.options());
  trainable::affine_quant_forward(call, const_view(x), mutable_view(y));
  return y;
}

// Per-parameter gradients (double) as a tensor shaped and typed like the parameter.
at::Tensor param_grad(const std::vector<double>& g, const at::Tensor& like) {
  at::Tensor t = at::empty({static_cast<int64_t>(g.size())}, like.options().dtype(at::kDouble));
  std::copy(g.begin(), g.end(), t.mutable_data_ptr<double>());
  return t.to(like.scalar_type()).reshape(like.sizes());
}

at::Tensor symmetric_quant_cpu(const at::Tensor& x, const at::Tensor& threshold, int64_t n,
                               bool is_signed, std::optional<int64_t> channel_axis,
                               c10::string_view mode, double grad_scale,
                               std::optional<int64_t> grad_scale_axis, double min_threshold,
                               bool power_of_two) {
  const char* op = "qi::symmetric_quant";
  check_float_cpu(x, op, "x");
  const auto args = symmetric_args(n, is_signed, channel_axis, mode, grad_scale, grad_scale_axis,
                                   min_threshold, power_of_two, op);
  const auto t = values_of(threshold, op, "threshold");
  return translate_errors(
      [&] { return run_affine(x, trainable::symmetric_quant_call(op, x.sizes().vec(), t, args)); });
}

std::tuple<at::Tensor, at::Tensor> symmetric_quant_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& threshold, int64_t n,
    bool is_signed, std::optional<int64_t> channel_axis, c10::string_view mode, double grad_scale,
    std::optional<int64_t> grad_scale_axis, double min_threshold, bool power_of_two, bool need_x,
    bool need_threshold) {
  const char* op = "qi::_symmetric_quant_backward";
  check_float_cpu(grad, op, "grad");
  check_float_cpu(x, op, "x");
  TORCH_CHECK(grad.sizes() == x.sizes(), op, ": grad sizes ", grad.sizes(), " must equal x sizes ",
              x.sizes());
  const auto args = symmetric_args(n, is_signed, channel_axis, mode, grad_scale, grad_scale_axis,
                                   min_threshold, power_of_two, op);
  const auto t = values_of(threshold, op, "threshold");
  return translate_errors([&]() -> std::tuple<at::Tensor, at::Tensor> {
    const auto call = trainable::symmetric_quant_call(op, x.sizes().vec(), t, args);
    // STE passes dy through unchanged: no pass over x unless the threshold needs its gradient.
    const bool ste = args.mode == trainable::GradMode::kSte;
    at::Tensor dx = need_x ? (ste ? grad : at::empty(x.sizes(), x.options())) : at::Tensor();
    if (ste && !need_threshold) return {dx, at::Tensor()};
    TensorView dx_view = need_x && !ste ? mutable_view(dx) : TensorView();
    const auto dt =
        trainable::symmetric_quant_backward(call, t, args, const_view(x), const_view(grad), dx_view);
    return {dx, need_threshold ? param_grad(dt, threshold) : at::Tensor()};
  });
}

at::Tensor uniform_quant_cpu(const at::Tensor& x, const at::Tensor& min_range,
                             const at::Tensor& max_range, int64_t n,
                             std::optional<int64_t> channel_axis, c10::string_view mode,
                             double grad_scale, bool activation,
                             std::optional<int64_t> grad_scale_axis) {
  const char* op = "qi::uniform_quant";
  check_float_cpu(x, op, "x");
  const auto args =
      uniform_args(n, channel_axis, mode, grad_scale, activation, grad_scale_axis, op);
  const auto lo = values_of(min_range, op, "min_range");
  const auto hi = values_of(max_range, op, "max_range");
  return translate_errors([&] {
    return run_affine(x, trainable::uniform_quant_call(op, x.sizes().vec(), lo, hi, args));
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> uniform_quant_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& min_range,
    const at::Tensor& max_range, int64_t n, std::optional<int64_t> channel_axis,
    c10::string_view mode, double grad_scale, bool activation,
    std::optional<int64_t> grad_scale_axis, bool need_x, bool need_range) {
  const char* op = "qi::_uniform_quant_backward";
  check_float_cpu(grad, op, "grad");
  check_float_cpu(x, op, "x");
  TORCH_CHECK(grad.sizes() == x.sizes(), op, ": grad sizes ", grad.sizes(), " must equal x sizes ",
              x.sizes());
  const auto args =
      uniform_args(n, channel_axis, mode, grad_scale, activation, grad_scale_axis, op);
  const auto lo = values_of(min_range, op, "min_range");
  const auto hi = values_of(max_range, op, "max_range");
  return translate_errors([&]() -> std::tuple<at::Tensor, at::Tensor, at::Tensor> {
    const auto call = trainable::uniform_quant_call(op, x.sizes().vec(), lo, hi, args);
    const bool ste = args.mode == trainable::GradMode::kSte;
    at::Tensor dx = need_x ? (ste ? grad : at::empty(x.sizes(), x.options())) : at::Tensor();
    if (ste && !need_range) return {dx, at::Tensor(), at::Tensor()};
    TensorView dx_view = need_x && !ste ? mutable_view(dx) : TensorView();
    const auto r = trainable::uniform_quant_backward(call, lo, hi, args, const_view(x),
                                                     const_view(grad), dx_view);
    if (!need_range) return {dx, at::Tensor(), at::Tensor()};
    std::vector<double> dmin, dmax;
    for (const auto& g : r) {
      dmin.push_back(g.d_min);
      dmax.push_back(g.d_max);
    }
    return {dx, param_grad(dmin, min_range), param_grad(dmax, max_range)};
  });
}

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

// Soft rounding runs in float32 (training) or float64 (gradient checks); w, alpha and the
// gradient share one dtype.
void check_soft_dtype(const at::Tensor& t, const at::Tensor& like, const char* op,
                      const char* arg) {
  TORCH_CHECK(t.defined() && t.device().is_cpu(), op, ": ", arg, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op, ": ", arg,
              " must be float32 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", arg, " must have dtype ",
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

at::Tensor soft_round_cpu(const at::Tensor& w, const at::Tensor& alpha,
                          const at::Tensor& threshold_or_min, int64_t n, bool power_of_two,
                          std::optional<int64_t> channel_axis, bool training,
                          const std::optional<at::Tensor>& max_range) {
  const char* op = "qi::soft_round";
  check_soft_dtype(w, w, op, "w");
  check_soft_dtype(alpha, w, op, "alpha");
  TORCH_CHECK(alpha.sizes() == w.sizes(), op, ": alpha sizes ", alpha.sizes(),
              " must equal w sizes ", w.sizes());
  const auto call = soft_call(w, threshold_or_min, max_range, n, power_of_two, channel_axis, op);
  at::Tensor q = at::empty(w.sizes(), w.options());
  if (w.scalar_type() == at::kDouble)
    trainable::soft_rounding_forward(call.plan, cview<double>(w), cview<double>(alpha),
                                     mview<double>(q), call.axis, training);
  else
    trainable::soft_rounding_forward(call.plan, const_view(w), const_view(alpha),
                                     mutable_view(q), call.axis, training);
  return q;
}

at::Tensor soft_round_backward_cpu(const at::Tensor& grad, const at::Tensor& alpha,
                                   const at::Tensor& threshold_or_min, int64_t n,
                                   bool power_of_two, std::optional<int64_t> channel_axis,
                                   const std::optional<at::Tensor>& max_range) {
  const char* op = "qi::_soft_round_backward";
  check_soft_dtype(alpha, alpha, op, "alpha");
  const at::Tensor g = grad.to(alpha.scalar_type());
  const auto call =
      soft_call(alpha, threshold_or_min, max_range, n, power_of_two, channel_axis, op);
  at::Tensor d = at::empty(alpha.sizes(), alpha.options());
  if (alpha.scalar_type() == at::kDouble)
    trainable::soft_rounding_backward(call.plan, cview<double>(alpha), cview<double>(g),
                                      mview<double>(d), call.axis);
  else
    trainable::soft_rounding_backward(call.plan, const_view(alpha), const_view(g),
                                      mutable_view(d), call.axis);
  return d;
}

at::Tensor soft_round_regularization_cpu(const at::Tensor& alpha, double beta) {
  const char* op = "qi::soft_round_regularization";
  check_soft_dtype(alpha, alpha, op, "alpha");
  const double r = alpha.scalar_type() == at::kDouble
                       ? trainable::soft_rounding_regularization(cview<double>(alpha), beta)
                       : trainable::soft_rounding_regularization(const_view(alpha), beta);
  return at::scalar_tensor(r, alpha.options());
}

at::Tensor soft_round_regularization_backward_cpu(const at::Tensor& grad, const at::Tensor& alpha,
                                                  double beta) {
  const char* op = "qi::_soft_round_regularization_backward";
  check_soft_dtype(alpha, alpha, op, "alpha");
  at::Tensor d = at::empty(alpha.sizes(), alpha.options());
  if (alpha.scalar_type() == at::kDouble)
    trainable::soft_rounding_regularization_backward(cview<double>(alpha), beta,
                                                     grad.item<double>(), mview<double>(d));
  else
    trainable::soft_rounding_regularization_backward(const_view(alpha), beta,
                                                     grad.item<double>(), mutable_view(d));
  return d;
}

}  // namespace


}  // namespace qi::torch

TORCH_LIBRARY_IMPL(qi, CPU, m) {
  m.impl("fake_quant", &qi::torch::fake_quant_cpu);
  m.impl("fake_quant.out", &qi::torch::fake_quant_out_cpu);
  m.impl("symmetric_quant", &qi::torch::symmetric_quant_cpu);
  m.impl("_symmetric_quant_backward", &qi::torch::symmetric_quant_backward_cpu);
  m.impl("uniform_quant", &qi::torch::uniform_quant_cpu);
  m.impl("_uniform_quant_backward", &qi::torch::uniform_quant_backward_cpu);
  m.impl("soft_round", &qi::torch::soft_round_cpu);
  m.impl("_soft_round_backward", &qi::torch::soft_round_backward_cpu);
  m.impl("soft_round_regularization", &qi::torch::soft_round_regularization_cpu);
  m.impl("_soft_round_regularization_backward", &qi::torch::soft_round_regularization_backward_cpu);
}
