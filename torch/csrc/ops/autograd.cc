// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Autograd kernels of the qi ops: each forward redispatches below autograd to the CPU kernel and
// each backward calls the fused backward op, whose math lives in the core (trainable_math.h).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace qi::torch {
namespace {

using ::torch::autograd::AutogradContext;
using ::torch::autograd::variable_list;

template <typename Sig>
c10::TypedOperatorHandle<Sig> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

class FakeQuantFunction : public ::torch::autograd::Function<FakeQuantFunction> {
 public:
  static at::Tensor forward(AutogradContext*, const at::Tensor& x, c10::string_view quantizer) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto fq = op<at::Tensor(const at::Tensor&, c10::string_view)>("qi::fake_quant");
    return fq.call(x, quantizer);
  }
  static variable_list backward(AutogradContext*, variable_list grads) {
    return {grads[0], at::Tensor()};  // straight through
  }
};

using SymSig = at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, bool,
                          std::optional<int64_t>, c10::string_view, double);
using SymBwdSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                     const at::Tensor&, int64_t, bool,
                                                     std::optional<int64_t>, c10::string_view,
                                                     double, bool, bool);

class SymmetricQuantFunction : public ::torch::autograd::Function<SymmetricQuantFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& threshold,
                            int64_t num_bits, bool is_signed, std::optional<int64_t> channel_axis,
                            c10::string_view mode, double grad_scale) {
    ctx->save_for_backward({x, threshold});
    ctx->saved_data["num_bits"] = num_bits;
    ctx->saved_data["is_signed"] = is_signed;
    ctx->saved_data["channel_axis"] = channel_axis;
    ctx->saved_data["mode"] = std::string(mode);
    ctx->saved_data["grad_scale"] = grad_scale;
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto fwd = op<SymSig>("qi::symmetric_quant");
    return fwd.call(x, threshold, num_bits, is_signed, channel_axis, mode, grad_scale);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    static auto bwd = op<SymBwdSig>("qi::_symmetric_quant_backward");
    const std::string mode = ctx->saved_data["mode"].toStringRef();
    auto [dx, dt] = bwd.call(grads[0].contiguous(), saved[0], saved[1],
                             ctx->saved_data["num_bits"].toInt(),
                             ctx->saved_data["is_signed"].toBool(),
                             ctx->saved_data["channel_axis"].toOptional<int64_t>(), mode,
                             ctx->saved_data["grad_scale"].toDouble(),
                             ctx->needs_input_grad(0), ctx->needs_input_grad(1));
    return {dx, dt, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

using UniSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                          std::optional<int64_t>, c10::string_view, double, bool);
using UniBwdSig = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
    std::optional<int64_t>, c10::string_view, double, bool, bool, bool);

class UniformQuantFunction : public ::torch::autograd::Function<UniformQuantFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& min_range,
                            const at::Tensor& max_range, int64_t num_bits,
                            std::optional<int64_t> channel_axis, c10::string_view mode,
                            double grad_scale, bool activation) {
    ctx->save_for_backward({x, min_range, max_range});
    ctx->saved_data["num_bits"] = num_bits;
    ctx->saved_data["channel_axis"] = channel_axis;
    ctx->saved_data["mode"] = std::string(mode);
    ctx->saved_data["grad_scale"] = grad_scale;
    ctx->saved_data["activation"] = activation;
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto fwd = op<UniSig>("qi::uniform_quant");
    return fwd.call(x, min_range, max_range, num_bits, channel_axis, mode, grad_scale, activation);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    static auto bwd = op<UniBwdSig>("qi::_uniform_quant_backward");
    const std::string mode = ctx->saved_data["mode"].toStringRef();
    auto [dx, dmin, dmax] =
        bwd.call(grads[0].contiguous(), saved[0], saved[1], saved[2],
                 ctx->saved_data["num_bits"].toInt(),
                 ctx->saved_data["channel_axis"].toOptional<int64_t>(), mode,
                 ctx->saved_data["grad_scale"].toDouble(), ctx->saved_data["activation"].toBool(),
                 ctx->needs_input_grad(0), ctx->needs_input_grad(1) || ctx->needs_input_grad(2));
    return {dx, dmin, dmax, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

using SoftSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const at::Tensor&, double, double, std::optional<int64_t>, bool);
using SoftBwdSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              std::optional<int64_t>);

class SoftRoundFunction : public ::torch::autograd::Function<SoftRoundFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& w, const at::Tensor& alpha,
                            const at::Tensor& delta, const at::Tensor& offset, double qmin,
                            double qmax, std::optional<int64_t> channel_axis, bool training) {
    ctx->save_for_backward({alpha, delta});
    ctx->saved_data["channel_axis"] = channel_axis;
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto fwd = op<SoftSig>("qi::soft_round");
    return fwd.call(w, alpha, delta, offset, qmin, qmax, channel_axis, training);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    static auto bwd = op<SoftBwdSig>("qi::_soft_round_backward");
    at::Tensor da;
    if (ctx->needs_input_grad(1))
      da = bwd.call(grads[0].contiguous(), saved[0], saved[1],
                    ctx->saved_data["channel_axis"].toOptional<int64_t>());
    // w: floor(w / delta) carries no gradient (MCT computes it under no_grad).
    return {at::Tensor(), da, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
            at::Tensor(), at::Tensor()};
  }
};

class SoftRoundRegFunction : public ::torch::autograd::Function<SoftRoundRegFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& alpha, double beta) {
    ctx->save_for_backward({alpha});
    ctx->saved_data["beta"] = beta;
    at::AutoDispatchBelowADInplaceOrView guard;
    static auto fwd =
        op<at::Tensor(const at::Tensor&, double)>("qi::soft_round_regularization");
    return fwd.call(alpha, beta);
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto bwd = op<at::Tensor(const at::Tensor&, const at::Tensor&, double)>(
        "qi::_soft_round_regularization_backward");
    const auto saved = ctx->get_saved_variables();
    return {bwd.call(grads[0], saved[0], ctx->saved_data["beta"].toDouble()), at::Tensor()};
  }
};

at::Tensor fake_quant_autograd(const at::Tensor& x, c10::string_view quantizer) {
  return FakeQuantFunction::apply(x, quantizer);
}
at::Tensor symmetric_quant_autograd(const at::Tensor& x, const at::Tensor& threshold,
                                    int64_t num_bits, bool is_signed,
                                    std::optional<int64_t> channel_axis, c10::string_view mode,
                                    double grad_scale) {
  return SymmetricQuantFunction::apply(x, threshold, num_bits, is_signed, channel_axis, mode,
                                       grad_scale);
}
at::Tensor uniform_quant_autograd(const at::Tensor& x, const at::Tensor& min_range,
                                  const at::Tensor& max_range, int64_t num_bits,
                                  std::optional<int64_t> channel_axis, c10::string_view mode,
                                  double grad_scale, bool activation) {
  return UniformQuantFunction::apply(x, min_range, max_range, num_bits, channel_axis, mode,
                                     grad_scale, activation);
}
at::Tensor soft_round_autograd(const at::Tensor& w, const at::Tensor& alpha,
                               const at::Tensor& delta, const at::Tensor& offset, double qmin,
                               double qmax, std::optional<int64_t> channel_axis, bool training) {
  // The CPU kernel reads an undefined or empty offset as 0, but autograd::Function records every
  // tensor input and cannot take an undefined one: pass an empty tensor instead.
  const at::Tensor off = offset.defined() ? offset : at::empty({0}, delta.options());
  return SoftRoundFunction::apply(w, alpha, delta, off, qmin, qmax, channel_axis, training);
}
at::Tensor soft_round_regularization_autograd(const at::Tensor& alpha, double beta) {
  return SoftRoundRegFunction::apply(alpha, beta);
}

}  // namespace


}  // namespace qi::torch

TORCH_LIBRARY_IMPL(qi, Autograd, m) {
  m.impl("fake_quant", &qi::torch::fake_quant_autograd);
  m.impl("symmetric_quant", &qi::torch::symmetric_quant_autograd);
  m.impl("uniform_quant", &qi::torch::uniform_quant_autograd);
  m.impl("soft_round", &qi::torch::soft_round_autograd);
  m.impl("soft_round_regularization", &qi::torch::soft_round_regularization_autograd);
}
