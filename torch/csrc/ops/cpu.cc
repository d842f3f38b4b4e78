// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// CPU kernels of the qi ops: check arguments, build the core plan, call the core.
#include <cmath>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include <ATen/ATen.h>
#include <torch/library.h>

#include "kernels/plan.h"
#include "ops/common.h"
#include "qi/inferable_quantizers.h"

namespace qi::torch {
namespace {

using namespace detail;

// Parsed quantizers by their JSON text: parsing happens once per distinct quantizer.
std::shared_ptr<const BaseInferableQuantizer> cached_quantizer(const std::string& json) {
  static std::mutex mutex;
  static std::unordered_map<std::string, std::shared_ptr<const BaseInferableQuantizer>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(json);
  if (it != cache.end()) return it->second;
  std::shared_ptr<const BaseInferableQuantizer> q =
      translate_errors([&] { return inferable_quantizer_from_json(json); });
  if (cache.size() > 4096) cache.clear();  // bound memory for programs that make many
  cache.emplace(json, q);
  return q;
}

at::Tensor fake_quant_cpu(const at::Tensor& x, c10::string_view quantizer) {
  check_float_cpu(x, "qi::fake_quant", "x");
  const auto q = cached_quantizer(std::string(quantizer));
  at::Tensor y = at::empty(x.sizes(), x.options());
  translate_errors([&] { q->apply(const_view(x), mutable_view(y)); });
  return y;
}

at::Tensor& fake_quant_out_cpu(const at::Tensor& x, c10::string_view quantizer, at::Tensor& out) {
  check_float_cpu(x, "qi::fake_quant.out", "x");
  check_float_cpu(out, "qi::fake_quant.out", "out");
  TORCH_CHECK(out.sizes() == x.sizes(), "qi::fake_quant.out: out sizes ", out.sizes(),
              " must equal x sizes ", x.sizes());
  const auto q = cached_quantizer(std::string(quantizer));
  translate_errors([&] { q->apply(const_view(x), mutable_view(out)); });
  return out;
}

void check_bits(int64_t n, const char* op) {
  TORCH_CHECK(n >= 2 && n <= 16, op, ": num_bits must be in [2, 16], got ", n);
}

kernels::AffineTorchPlan symmetric_plan(const std::vector<double>& t, int64_t n, bool s,
                                        const char* op) {
  return translate_errors([&] { return trainable::checked_symmetric_plan(op, t, n, s); });
}

kernels::AffineTorchPlan uniform_plan(const std::vector<double>& lo, const std::vector<double>& hi,
                                      int64_t n, bool activation, const char* op) {
  return translate_errors([&] { return trainable::checked_uniform_plan(op, lo, hi, n, activation); });
}

at::Tensor run_affine(const at::Tensor& x, const kernels::AffineTorchPlan& plan,
                      std::optional<int64_t> axis) {
  at::Tensor y = at::empty(x.sizes(), x.options());
  kernels::fake_quant_forward(plan, const_view(x), mutable_view(y), axis);
  return y;
}

at::Tensor symmetric_quant_cpu(const at::Tensor& x, const at::Tensor& threshold, int64_t n,
                               bool is_signed, std::optional<int64_t> channel_axis,
                               c10::string_view mode, double grad_scale) {
  const char* op = "qi::symmetric_quant";
  check_float_cpu(x, op, "x");
  check_bits(n, op);
  grad_mode_of(std::string(mode), op);
  const auto t = values_of(threshold, op, "threshold");
  const auto axis = resolve_axis(x, channel_axis, static_cast<int64_t>(t.size()), op, "threshold");
  return run_affine(x, symmetric_plan(t, n, is_signed, op), axis);
}

std::tuple<at::Tensor, at::Tensor> symmetric_quant_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& threshold, int64_t n,
    bool is_signed, std::optional<int64_t> channel_axis, c10::string_view mode, double grad_scale,
    bool need_x, bool need_threshold) {
  const char* op = "qi::_symmetric_quant_backward";
  check_float_cpu(grad, op, "grad");
  check_float_cpu(x, op, "x");
  TORCH_CHECK(grad.sizes() == x.sizes(), op, ": grad sizes ", grad.sizes(), " must equal x sizes ",
              x.sizes());
  const auto t = values_of(threshold, op, "threshold");
  const auto axis = resolve_axis(x, channel_axis, static_cast<int64_t>(t.size()), op, "threshold");
  const auto plan = symmetric_plan(t, n, is_signed, op);
  const auto grad_mode = grad_mode_of(std::string(mode), op);
  // STE passes dy through unchanged: no pass over x unless the threshold needs its gradient.
  const bool ste = grad_mode == trainable::GradMode::kSte;
  at::Tensor dx = need_x ? (ste ? grad : at::empty(x.sizes(), x.options())) : at::Tensor();
  if (ste && !need_threshold) return {dx, at::Tensor()};
  TensorView dx_view = need_x && !ste ? mutable_view(dx) : TensorView();
  const auto g = trainable::affine_backward(plan, const_view(x), const_view(grad), dx_view, axis,
                                            grad_mode);
  at::Tensor dt;
  if (need_threshold) {
    const auto dts = trainable::symmetric_threshold_grad(g, n, is_signed, grad_scale);
    dt = at::empty({static_cast<int64_t>(dts.size())}, threshold.options().dtype(at::kDouble));
    std::copy(dts.begin(), dts.end(), dt.mutable_data_ptr<double>());
    dt = dt.to(threshold.scalar_type()).reshape(threshold.sizes());
  }
  return {dx, dt};
}

at::Tensor uniform_quant_cpu(const at::Tensor& x, const at::Tensor& min_range,
                             const at::Tensor& max_range, int64_t n,
                             std::optional<int64_t> channel_axis, c10::string_view mode,
                             double grad_scale, bool activation) {
  const char* op = "qi::uniform_quant";
  check_float_cpu(x, op, "x");
  check_bits(n, op);
  grad_mode_of(std::string(mode), op);
  const auto lo = values_of(min_range, op, "min_range");
  const auto hi = values_of(max_range, op, "max_range");
  const auto axis = resolve_axis(x, channel_axis, static_cast<int64_t>(lo.size()), op, "min_range");
  return run_affine(x, uniform_plan(lo, hi, n, activation, op), axis);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> uniform_quant_backward_cpu(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& min_range,
    const at::Tensor& max_range, int64_t n, std::optional<int64_t> channel_axis,
    c10::string_view mode, double grad_scale, bool activation, bool need_x, bool need_range) {
  const char* op = "qi::_uniform_quant_backward";
  check_float_cpu(grad, op, "grad");
  check_float_cpu(x, op, "x");
  TORCH_CHECK(grad.sizes() == x.sizes(), op, ": grad sizes ", grad.sizes(), " must equal x sizes ",
              x.sizes());
  const auto lo = values_of(min_range, op, "min_range");
  const auto hi = values_of(max_range, op, "max_range");
  const auto axis = resolve_axis(x, channel_axis, static_cast<int64_t>(lo.size()), op, "min_range");
  const auto plan = uniform_plan(lo, hi, n, activation, op);
  const auto grad_mode = grad_mode_of(std::string(mode), op);
  const bool ste = grad_mode == trainable::GradMode::kSte;
  at::Tensor dx = need_x ? (ste ? grad : at::empty(x.sizes(), x.options())) : at::Tensor();
  if (ste && !need_range) return {dx, at::Tensor(), at::Tensor()};
  TensorView dx_view = need_x && !ste ? mutable_view(dx) : TensorView();
  const auto g = trainable::affine_backward(plan, const_view(x), const_view(grad), dx_view, axis,
                                            grad_mode);
  at::Tensor dmin, dmax;
  if (need_range) {
    const auto r = trainable::uniform_range_grads(g, lo, hi, n, grad_scale);
    const int64_t c_count = static_cast<int64_t>(r.size());
    at::Tensor a = at::empty({c_count}, min_range.options().dtype(at::kDouble));
    at::Tensor b = at::empty({c_count}, max_range.options().dtype(at::kDouble));
    for (int64_t c = 0; c < c_count; ++c) {
      a.mutable_data_ptr<double>()[c] = r[c].d_min;
      b.mutable_data_ptr<double>()[c] = r[c].d_max;
    }
    dmin = a.to(min_range.scalar_type()).reshape(min_range.sizes());
    dmax = b.to(max_range.scalar_type()).reshape(max_range.sizes());
  }
  return {dx, dmin, dmax};
}

trainable::SoftRoundingPlan soft_plan(const at::Tensor& delta, const at::Tensor& offset,
                                      double qmin, double qmax, const char* op) {
  const auto d = values_of(delta, op, "delta");
  const auto o = offset.defined() && offset.numel() > 0 ? values_of(offset, op, "offset")
                                                        : std::vector<double>{};
  return translate_errors([&] { return trainable::soft_rounding_plan(d, o, qmin, qmax); });
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

at::Tensor soft_round_cpu(const at::Tensor& w, const at::Tensor& alpha, const at::Tensor& delta,
                          const at::Tensor& offset, double qmin, double qmax,
                          std::optional<int64_t> channel_axis, bool training) {
  const char* op = "qi::soft_round";
  check_soft_dtype(w, w, op, "w");
  check_soft_dtype(alpha, w, op, "alpha");
  TORCH_CHECK(alpha.sizes() == w.sizes(), op, ": alpha sizes ", alpha.sizes(),
              " must equal w sizes ", w.sizes());
  const auto plan = soft_plan(delta, offset, qmin, qmax, op);
  const auto axis =
      resolve_axis(w, channel_axis, static_cast<int64_t>(plan.delta.size()), op, "delta");
  at::Tensor q = at::empty(w.sizes(), w.options());
  if (w.scalar_type() == at::kDouble)
    trainable::soft_rounding_forward(plan, cview<double>(w), cview<double>(alpha),
                                     mview<double>(q), axis, training);
  else
    trainable::soft_rounding_forward(plan, const_view(w), const_view(alpha), mutable_view(q),
                                     axis, training);
  return q;
}

at::Tensor soft_round_backward_cpu(const at::Tensor& grad, const at::Tensor& alpha,
                                   const at::Tensor& delta, std::optional<int64_t> channel_axis) {
  const char* op = "qi::_soft_round_backward";
  check_soft_dtype(alpha, alpha, op, "alpha");
  const at::Tensor g = grad.to(alpha.scalar_type());
  const auto plan = soft_plan(delta, at::Tensor(), 0, 1, op);
  const auto axis =
      resolve_axis(alpha, channel_axis, static_cast<int64_t>(plan.delta.size()), op, "delta");
  at::Tensor d = at::empty(alpha.sizes(), alpha.options());
  if (alpha.scalar_type() == at::kDouble)
    trainable::soft_rounding_backward(plan, cview<double>(alpha), cview<double>(g),
                                      mview<double>(d), axis);
  else
    trainable::soft_rounding_backward(plan, const_view(alpha), const_view(g), mutable_view(d),
                                      axis);
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
