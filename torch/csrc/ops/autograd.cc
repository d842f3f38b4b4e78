// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Autograd kernels of the qi ops: each forward redispatches below autograd to the CPU kernel and
// each backward calls the fused backward op, whose math lives in the core (trainable_math.h).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>

namespace qi::torch {
namespace {

using ::torch::autograd::AutogradContext;
using ::torch::autograd::variable_list;

template <typename Sig>
c10::TypedOperatorHandle<Sig> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// True when autograd must record the call: grad mode is on and an input requires grad. Otherwise
// (inference, eval, frozen quantizers) the op calls its kernel directly below autograd, with no
// graph node and no saved state: that is most of a small tensor's per-call cost.
bool recorded(std::initializer_list<const at::Tensor*> inputs) {
  for (const at::Tensor* t : inputs) {
    if (!t->defined()) continue;
    if (at::GradMode::is_enabled() && t->requires_grad()) return true;
    // Forward-mode AD goes through the Function, which says it has no jvp (never a silent drop).
    if (t->_fw_grad(/*level=*/0).defined()) return true;
  }
  return false;
}

// Runs the kernel of `handle` below autograd.
template <typename Sig, typename... Args>
auto below_autograd(const c10::TypedOperatorHandle<Sig>& handle, Args&&... args) {
  at::AutoDispatchBelowADInplaceOrView guard;
  return handle.call(std::forward<Args>(args)...);
}

// STE's dx: the upstream gradient `grad` itself. When the backward made `dy`, a contiguous copy
// of a gradient laid out otherwise (the expanded gradient of sum() or mean()), and x has dy's
// strides, dx is that copy: autograd keeps it as x.grad instead of copying the view once more.
// `saved` is the backward's saved variables (x first), fetched only when it made dy.
at::Tensor ste_dx(const at::Tensor& grad, const at::Tensor& dy,
                  const std::vector<at::Tensor>& saved) {
  return dy.defined() && !dy.is_same(grad) && dy.strides() == saved[0].strides() ? dy : grad;
}

using FakeQuantSig = at::Tensor(const at::Tensor&, c10::string_view);
const c10::TypedOperatorHandle<FakeQuantSig>& fake_quant_op() {
  static const auto handle = op<FakeQuantSig>("qi::fake_quant");
  return handle;
}

class FakeQuantFunction : public ::torch::autograd::Function<FakeQuantFunction> {
 public:
  static at::Tensor forward(AutogradContext*, const at::Tensor& x, c10::string_view quantizer) {
    return below_autograd(fake_quant_op(), x, quantizer);
  }
  static variable_list backward(AutogradContext*, variable_list grads) {
    return {grads[0], at::Tensor()};  // straight through
  }
};

using QuantizeSig = at::Tensor(const at::Tensor&, const at::Tensor&, std::optional<int64_t>,
                               std::optional<int64_t>);
const c10::TypedOperatorHandle<QuantizeSig>& quantize_op() {
  static const auto handle = op<QuantizeSig>("qi::quantize");
  return handle;
}

class QuantizeFunction : public ::torch::autograd::Function<QuantizeFunction> {
 public:
  static at::Tensor forward(AutogradContext*, const at::Tensor& x, const at::Tensor& plan,
                            std::optional<int64_t> channel_axis,
                            std::optional<int64_t> input_rank) {
    return below_autograd(quantize_op(), x, plan, channel_axis, input_rank);
  }
  static variable_list backward(AutogradContext*, variable_list grads) {
    return {grads[0], at::Tensor(), at::Tensor(), at::Tensor()};  // straight through
  }
};

using SymSig = at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, bool,
                          std::optional<int64_t>, c10::string_view, double, std::optional<int64_t>,
                          double, bool, std::optional<int64_t>, int64_t);
using SymBwdSig = std::tuple<at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, bool,
    std::optional<int64_t>, c10::string_view, double, std::optional<int64_t>, double, bool, bool,
    bool, std::optional<int64_t>, int64_t);

const c10::TypedOperatorHandle<SymSig>& symmetric_quant_op() {
  static const auto handle = op<SymSig>("qi::symmetric_quant");
  return handle;
}

class SymmetricQuantFunction : public ::torch::autograd::Function<SymmetricQuantFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& threshold,
                            int64_t num_bits, bool is_signed, std::optional<int64_t> channel_axis,
                            c10::string_view mode, double grad_scale,
                            std::optional<int64_t> grad_scale_axis, double min_threshold,
                            bool power_of_two, std::optional<int64_t> group_size,
                            int64_t group_axis) {
    ctx->save_for_backward({x, threshold});
    ctx->saved_data["group_size"] = group_size;
    ctx->saved_data["group_axis"] = group_axis;
    ctx->saved_data["num_bits"] = num_bits;
    ctx->saved_data["is_signed"] = is_signed;
    ctx->saved_data["channel_axis"] = channel_axis;
    ctx->saved_data["mode"] = std::string(mode);
    ctx->saved_data["grad_scale"] = grad_scale;
    ctx->saved_data["grad_scale_axis"] = grad_scale_axis;
    ctx->saved_data["min_threshold"] = min_threshold;
    ctx->saved_data["power_of_two"] = power_of_two;
    return below_autograd(symmetric_quant_op(), x, threshold, num_bits, is_signed, channel_axis,
                          mode, grad_scale, grad_scale_axis, min_threshold, power_of_two,
                          group_size, group_axis);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto& d = ctx->saved_data;
    const std::string mode = d["mode"].toStringRef();
    const bool ste = mode == "ste";
    at::Tensor dx, dt, dy;
    std::vector<at::Tensor> saved;  // fetched only when the backward kernel runs
    if (ctx->needs_input_grad(1) || (!ste && ctx->needs_input_grad(0))) {
      saved = ctx->get_saved_variables();
      static auto bwd = op<SymBwdSig>("qi::_symmetric_quant_backward");
      dy = grads[0].contiguous();
      std::tie(dx, dt) = bwd.call(
          dy, saved[0], saved[1], d["num_bits"].toInt(),
          d["is_signed"].toBool(), d["channel_axis"].toOptional<int64_t>(), mode,
          d["grad_scale"].toDouble(), d["grad_scale_axis"].toOptional<int64_t>(),
          d["min_threshold"].toDouble(), d["power_of_two"].toBool(),
          !ste && ctx->needs_input_grad(0), ctx->needs_input_grad(1),
          d["group_size"].toOptional<int64_t>(), d["group_axis"].toInt());
    }
    // STE passes dy through unchanged (ste_round and ste_clip).
    if (ctx->needs_input_grad(0)) dx = ste ? ste_dx(grads[0], dy, saved) : dx;
    else dx = at::Tensor();
    if (!ctx->needs_input_grad(1)) dt = at::Tensor();
    return {dx,           dt,           at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

using UniSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                          std::optional<int64_t>, c10::string_view, double, bool,
                          std::optional<int64_t>, std::optional<int64_t>, int64_t);
using UniBwdSig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
    std::optional<int64_t>, c10::string_view, double, bool, std::optional<int64_t>, bool, bool,
    std::optional<int64_t>, int64_t);

const c10::TypedOperatorHandle<UniSig>& uniform_quant_op() {
  static const auto handle = op<UniSig>("qi::uniform_quant");
  return handle;
}

class UniformQuantFunction : public ::torch::autograd::Function<UniformQuantFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& min_range,
                            const at::Tensor& max_range, int64_t num_bits,
                            std::optional<int64_t> channel_axis, c10::string_view mode,
                            double grad_scale, bool activation,
                            std::optional<int64_t> grad_scale_axis,
                            std::optional<int64_t> group_size, int64_t group_axis) {
    ctx->save_for_backward({x, min_range, max_range});
    ctx->saved_data["group_size"] = group_size;
    ctx->saved_data["group_axis"] = group_axis;
    ctx->saved_data["num_bits"] = num_bits;
    ctx->saved_data["channel_axis"] = channel_axis;
    ctx->saved_data["mode"] = std::string(mode);
    ctx->saved_data["grad_scale"] = grad_scale;
    ctx->saved_data["activation"] = activation;
    ctx->saved_data["grad_scale_axis"] = grad_scale_axis;
    return below_autograd(uniform_quant_op(), x, min_range, max_range, num_bits, channel_axis,
                          mode, grad_scale, activation, grad_scale_axis, group_size, group_axis);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto& d = ctx->saved_data;
    const std::string mode = d["mode"].toStringRef();
    const bool ste = mode == "ste";
    const bool need_range = ctx->needs_input_grad(1) || ctx->needs_input_grad(2);
    at::Tensor dx, dmin, dmax, dy;
    std::vector<at::Tensor> saved;  // fetched only when the backward kernel runs
    if (need_range || (!ste && ctx->needs_input_grad(0))) {
      saved = ctx->get_saved_variables();
      static auto bwd = op<UniBwdSig>("qi::_uniform_quant_backward");
      dy = grads[0].contiguous();
      std::tie(dx, dmin, dmax) =
          bwd.call(dy, saved[0], saved[1], saved[2], d["num_bits"].toInt(),
                   d["channel_axis"].toOptional<int64_t>(), mode, d["grad_scale"].toDouble(),
                   d["activation"].toBool(), d["grad_scale_axis"].toOptional<int64_t>(),
                   !ste && ctx->needs_input_grad(0), need_range,
                   d["group_size"].toOptional<int64_t>(), d["group_axis"].toInt());
    }
    if (ctx->needs_input_grad(0)) dx = ste ? ste_dx(grads[0], dy, saved) : dx;
    else dx = at::Tensor();
    if (!ctx->needs_input_grad(1)) dmin = at::Tensor();
    if (!ctx->needs_input_grad(2)) dmax = at::Tensor();
    return {dx,           dmin,         dmax,         at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

using FormatSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             c10::string_view, c10::string_view, std::optional<int64_t>,
                             c10::string_view, double, std::optional<int64_t>,
                             std::optional<int64_t>, int64_t, std::optional<double>);
using FormatBwdSig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, c10::string_view,
    c10::string_view, std::optional<int64_t>, c10::string_view, double, std::optional<int64_t>,
    std::optional<int64_t>, int64_t, bool, bool, std::optional<double>);

const c10::TypedOperatorHandle<FormatSig>& format_quant_op() {
  static const auto handle = op<FormatSig>("qi::format_quant");
  return handle;
}

class FormatQuantFunction : public ::torch::autograd::Function<FormatQuantFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& scale,
                            const at::Tensor& tensor_scale, c10::string_view format,
                            c10::string_view scaling, std::optional<int64_t> channel_axis,
                            c10::string_view mode, double grad_scale,
                            std::optional<int64_t> grad_scale_axis,
                            std::optional<int64_t> group_size, int64_t group_axis,
                            std::optional<double> tensor_grad_scale) {
    ctx->save_for_backward({x, scale, tensor_scale});
    ctx->saved_data["tensor_grad_scale"] = tensor_grad_scale;
    ctx->saved_data["format"] = std::string(format);
    ctx->saved_data["scaling"] = std::string(scaling);
    ctx->saved_data["channel_axis"] = channel_axis;
    ctx->saved_data["mode"] = std::string(mode);
    ctx->saved_data["grad_scale"] = grad_scale;
    ctx->saved_data["grad_scale_axis"] = grad_scale_axis;
    ctx->saved_data["group_size"] = group_size;
    ctx->saved_data["group_axis"] = group_axis;
    return below_autograd(format_quant_op(), x, scale, tensor_scale, format, scaling,
                          channel_axis, mode, grad_scale, grad_scale_axis, group_size,
                          group_axis, tensor_grad_scale);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto& d = ctx->saved_data;
    const std::string mode = d["mode"].toStringRef();
    const bool ste = mode == "ste";
    const bool need_scale = ctx->needs_input_grad(1) || ctx->needs_input_grad(2);
    at::Tensor dx, ds, dt, dy;
    std::vector<at::Tensor> saved;  // fetched only when the backward kernel runs
    if (need_scale || (!ste && ctx->needs_input_grad(0))) {
      saved = ctx->get_saved_variables();
      static auto bwd = op<FormatBwdSig>("qi::_format_quant_backward");
      dy = grads[0].contiguous();
      std::tie(dx, ds, dt) =
          bwd.call(dy, saved[0], saved[1], saved[2],
                   d["format"].toStringRef(), d["scaling"].toStringRef(),
                   d["channel_axis"].toOptional<int64_t>(), mode, d["grad_scale"].toDouble(),
                   d["grad_scale_axis"].toOptional<int64_t>(),
                   d["group_size"].toOptional<int64_t>(), d["group_axis"].toInt(),
                   !ste && ctx->needs_input_grad(0), need_scale,
                   d["tensor_grad_scale"].toOptional<double>());
    }
    // STE passes dy through unchanged (straight through the rounding and the clip).
    if (ctx->needs_input_grad(0)) dx = ste ? ste_dx(grads[0], dy, saved) : dx;
    else dx = at::Tensor();
    if (!ctx->needs_input_grad(1)) ds = at::Tensor();
    if (!ctx->needs_input_grad(2)) dt = at::Tensor();
    return {dx,           ds,           dt,           at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

using SoftSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, bool,
                           std::optional<int64_t>, bool, const std::optional<at::Tensor>&);
using SoftBwdSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                              bool, std::optional<int64_t>, const std::optional<at::Tensor>&);

const c10::TypedOperatorHandle<SoftSig>& soft_round_op() {
  static const auto handle = op<SoftSig>("qi::soft_round");
  return handle;
}

class SoftRoundFunction : public ::torch::autograd::Function<SoftRoundFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& w, const at::Tensor& alpha,
                            const at::Tensor& threshold_or_min, int64_t num_bits,
                            bool power_of_two, std::optional<int64_t> channel_axis, bool training,
                            const std::optional<at::Tensor>& max_range) {
    // An undefined tensor stands for None (saved tensors may be undefined).
    ctx->save_for_backward({alpha, threshold_or_min, max_range.value_or(at::Tensor())});
    ctx->saved_data["num_bits"] = num_bits;
    ctx->saved_data["power_of_two"] = power_of_two;
    ctx->saved_data["channel_axis"] = channel_axis;
    return below_autograd(soft_round_op(), w, alpha, threshold_or_min, num_bits, power_of_two,
                          channel_axis, training, max_range);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    static auto bwd = op<SoftBwdSig>("qi::_soft_round_backward");
    auto& d = ctx->saved_data;
    at::Tensor da;
    if (ctx->needs_input_grad(1))
      da = bwd.call(grads[0].contiguous(), saved[0], saved[1], d["num_bits"].toInt(),
                    d["power_of_two"].toBool(), d["channel_axis"].toOptional<int64_t>(),
                    saved[2].defined() ? std::optional<at::Tensor>(saved[2]) : std::nullopt);
    // w: floor(w / delta) carries no gradient (MCT computes it under no_grad); the grid's
    // parameters are not learned by soft rounding.
    return {at::Tensor(), da, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

using SoftRegSig = at::Tensor(const at::Tensor&, double);
const c10::TypedOperatorHandle<SoftRegSig>& soft_round_regularization_op() {
  static const auto handle = op<SoftRegSig>("qi::soft_round_regularization");
  return handle;
}

class SoftRoundRegFunction : public ::torch::autograd::Function<SoftRoundRegFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& alpha, double beta) {
    ctx->save_for_backward({alpha});
    ctx->saved_data["beta"] = beta;
    return below_autograd(soft_round_regularization_op(), alpha, beta);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto bwd = op<at::Tensor(const at::Tensor&, const at::Tensor&, double)>(
        "qi::_soft_round_regularization_backward");
    const auto saved = ctx->get_saved_variables();
    return {bwd.call(grads[0], saved[0], ctx->saved_data["beta"].toDouble()), at::Tensor()};
  }
};

at::Tensor fake_quant_autograd(const at::Tensor& x, c10::string_view quantizer) {
  if (!recorded({&x})) return below_autograd(fake_quant_op(), x, quantizer);
  return FakeQuantFunction::apply(x, quantizer);
}
at::Tensor quantize_autograd(const at::Tensor& x, const at::Tensor& plan,
                             std::optional<int64_t> channel_axis,
                             std::optional<int64_t> input_rank) {
  if (!recorded({&x})) return below_autograd(quantize_op(), x, plan, channel_axis, input_rank);
  return QuantizeFunction::apply(x, plan, channel_axis, input_rank);
}
at::Tensor symmetric_quant_autograd(const at::Tensor& x, const at::Tensor& threshold,
                                    int64_t num_bits, bool is_signed,
                                    std::optional<int64_t> channel_axis, c10::string_view mode,
                                    double grad_scale, std::optional<int64_t> grad_scale_axis,
                                    double min_threshold, bool power_of_two,
                                    std::optional<int64_t> group_size, int64_t group_axis) {
  if (!recorded({&x, &threshold}))
    return below_autograd(symmetric_quant_op(), x, threshold, num_bits, is_signed, channel_axis,
                          mode, grad_scale, grad_scale_axis, min_threshold, power_of_two,
                          group_size, group_axis);
  return SymmetricQuantFunction::apply(x, threshold, num_bits, is_signed, channel_axis, mode,
                                       grad_scale, grad_scale_axis, min_threshold, power_of_two,
                                       group_size, group_axis);
}
at::Tensor uniform_quant_autograd(const at::Tensor& x, const at::Tensor& min_range,
                                  const at::Tensor& max_range, int64_t num_bits,
                                  std::optional<int64_t> channel_axis, c10::string_view mode,
                                  double grad_scale, bool activation,
                                  std::optional<int64_t> grad_scale_axis,
                                  std::optional<int64_t> group_size, int64_t group_axis) {
  if (!recorded({&x, &min_range, &max_range}))
    return below_autograd(uniform_quant_op(), x, min_range, max_range, num_bits, channel_axis,
                          mode, grad_scale, activation, grad_scale_axis, group_size, group_axis);
  return UniformQuantFunction::apply(x, min_range, max_range, num_bits, channel_axis, mode,
                                     grad_scale, activation, grad_scale_axis, group_size,
                                     group_axis);
}
at::Tensor format_quant_autograd(const at::Tensor& x, const at::Tensor& scale,
                                 const at::Tensor& tensor_scale, c10::string_view format,
                                 c10::string_view scaling, std::optional<int64_t> channel_axis,
                                 c10::string_view mode, double grad_scale,
                                 std::optional<int64_t> grad_scale_axis,
                                 std::optional<int64_t> group_size, int64_t group_axis,
                                 std::optional<double> tensor_grad_scale) {
  if (!recorded({&x, &scale, &tensor_scale}))
    return below_autograd(format_quant_op(), x, scale, tensor_scale, format, scaling,
                          channel_axis, mode, grad_scale, grad_scale_axis, group_size,
                          group_axis, tensor_grad_scale);
  return FormatQuantFunction::apply(x, scale, tensor_scale, format, scaling, channel_axis, mode,
                                    grad_scale, grad_scale_axis, group_size, group_axis,
                                    tensor_grad_scale);
}
at::Tensor soft_round_autograd(const at::Tensor& w, const at::Tensor& alpha,
                               const at::Tensor& threshold_or_min, int64_t num_bits,
                               bool power_of_two, std::optional<int64_t> channel_axis,
                               bool training, const std::optional<at::Tensor>& max_range) {
  const at::Tensor none;
  if (!recorded({&w, &alpha, &threshold_or_min, max_range ? &*max_range : &none}))
    return below_autograd(soft_round_op(), w, alpha, threshold_or_min, num_bits, power_of_two,
                          channel_axis, training, max_range);
  return SoftRoundFunction::apply(w, alpha, threshold_or_min, num_bits, power_of_two,
                                  channel_axis, training, max_range);
}
at::Tensor soft_round_regularization_autograd(const at::Tensor& alpha, double beta) {
  if (!recorded({&alpha})) return below_autograd(soft_round_regularization_op(), alpha, beta);
  return SoftRoundRegFunction::apply(alpha, beta);
}

}  // namespace


}  // namespace qi::torch

TORCH_LIBRARY_IMPL(qi, Autograd, m) {
  m.impl("fake_quant", &qi::torch::fake_quant_autograd);
  m.impl("quantize", &qi::torch::quantize_autograd);
  m.impl("symmetric_quant", &qi::torch::symmetric_quant_autograd);
  m.impl("uniform_quant", &qi::torch::uniform_quant_autograd);
  m.impl("format_quant", &qi::torch::format_quant_autograd);
  m.impl("soft_round", &qi::torch::soft_round_autograd);
  m.impl("soft_round_regularization", &qi::torch::soft_round_regularization_autograd);
}
