// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Forward and backward math of the trainable quantizers (REFERENCE.md 7.4, 8, 9), framework
// free: the torch and TF layers only wire these into their autograd engines.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "qi/kernels.h"
#include "qi/tensor_view.h"

namespace qi::trainable {

// MCT's MIN_THRESHOLD (2^-16).
inline constexpr double kMinThreshold = 1.0 / 65536.0;

// 2^ceil(log2(max(t, min_threshold))): how POT trainable quantizers force their thresholds.
double power_of_two_ceil(double t, double min_threshold = 0.0);

// How the gradient passes the rounding and the clip of an affine fake quantizer
//   q = scale * (clamp(round(x / scale) + zp, qmin, qmax) - zp)   (offset a = -zp * scale)
//  kSte: ste_round and ste_clip: dq/dx = 1 everywhere; dq/dscale = c - u - zp; dq/da = 0.
//  kLsq: ste_round and a hard clip: dq/dx = 1 inside the grid, 0 outside;
//        dq/dscale = round(u) - u inside, c outside; dq/da = 0 inside, 1 outside.
// (u = x / scale, c = clamp(round(u) + zp, qmin, qmax).)
enum class GradMode { kSte, kLsq };

// Per-channel sums of dy * dq/dscale and dy * dq/da (double accumulation).
struct AffineParamGrads {
  std::vector<double> d_scale;
  std::vector<double> d_offset;
};

// Fused backward of the affine fake quantizer of `plan` (the torch profile plan, which is also
// the forward). Writes dx (skipped when dx.data is null) and returns the parameter sums.
// x, dy, dx: same sizes; channel_axis as in kernels::fake_quant_forward.
AffineParamGrads affine_backward(const kernels::AffineTorchPlan& plan, ConstTensorView x,
                                 ConstTensorView dy, TensorView dx,
                                 std::optional<int64_t> channel_axis, GradMode mode);

// The torch range adjustment (REFERENCE.md 2.1, non-clamping, float32) and its gradient, as
// MCT's differentiable version computes it (torch.round has a zero gradient).
struct RangeGrads {
  double d_min = 0, d_max = 0;
};
RangeGrads adjust_range_backward(float min, float max, int64_t num_bits, double d_min_adj,
                                 double d_max_adj);

// The forward plans of the symmetric and uniform trainable ops (torch-profile grids), after
// checking their parameters, which training may have moved anywhere: thresholds finite and
// > 0; ranges of equal length, finite, min < max. qi::Error messages start with `op`.
kernels::AffineTorchPlan checked_symmetric_plan(const char* op,
                                                const std::vector<double>& threshold,
                                                int64_t num_bits, bool is_signed);
kernels::AffineTorchPlan checked_uniform_plan(const char* op, const std::vector<double>& min_range,
                                              const std::vector<double>& max_range,
                                              int64_t num_bits, bool activation);

// The parameter gradients of the symmetric and uniform trainable ops, from affine_backward's
// per-channel sums (one place for both framework layers):
// delta = t / 2^(n - s), so dL/dt = grad_scale * dL/ddelta / 2^(n - s);
std::vector<double> symmetric_threshold_grad(const AffineParamGrads& grads, int64_t num_bits,
                                             bool is_signed, double grad_scale);
// scale = (max_adj - min_adj) / (2^n - 1) (grad-scaled) and offset = min_adj, then back through
// the range adjustment to dL/dmin and dL/dmax.
std::vector<RangeGrads> uniform_range_grads(const AffineParamGrads& grads,
                                            const std::vector<double>& min_range,
                                            const std::vector<double>& max_range,
                                            int64_t num_bits, double grad_scale);

// ---- soft rounding (REFERENCE.md 9.2, 9.3) ----

inline constexpr double kSoftRoundingGamma = -0.1;
inline constexpr double kSoftRoundingZeta = 1.1;

// h(alpha) = clip(sigmoid(alpha) * (zeta - gamma) + gamma, 0, 1) and dh/dalpha.
float rectified_sigmoid(float alpha);
float rectified_sigmoid_grad(float alpha);
// alpha with h(alpha) = r (for the fractional part r of w / delta at initialization).
float rectified_sigmoid_inverse(float r);

// Soft rounding, per channel c:
//   a = training ? h(alpha) : (h(alpha) >= 0.5)
//   v = clip(floor((w - offset) / delta) + a, qmin, qmax)
//   q = delta * (v - zero_point)
// Symmetric: delta = t / 2^(n-1), offset = zero_point = 0, [qmin, qmax] = [-2^(n-1), 2^(n-1)-1].
// Uniform: offset = the adjusted min, zero_point = -nearbyint(offset / delta), [0, 2^n - 1]; the
// output form (v - zp) * delta is the inferable quantizer's, so the hard-rounded weights are
// fixed points of the converted quantizer, bit for bit.
struct SoftRoundingPlan {
  std::vector<float> delta, offset, zero_point;
  float qmin = 0, qmax = 0;
};
// The plan for per-channel delta and offset (empty offset: 0), with the zero point rounded and
// kept on the grid as kernels::uniform_torch_plan does. Throws qi::Error for a non-positive or
// non-finite delta, an offset count that differs from delta's, or qmin >= qmax.
SoftRoundingPlan soft_rounding_plan(const std::vector<double>& delta,
                                    const std::vector<double>& offset, double qmin, double qmax);
void soft_rounding_forward(const SoftRoundingPlan& plan, ConstTensorView w, ConstTensorView alpha,
                           TensorView q, std::optional<int64_t> channel_axis, bool training);
// The same in float64 (for gradient checks; float32 is what the layers train with).
void soft_rounding_forward(const SoftRoundingPlan& plan, BasicTensorView<const double> w,
                           BasicTensorView<const double> alpha, BasicTensorView<double> q,
                           std::optional<int64_t> channel_axis, bool training);
// d alpha = dq * delta * dh/dalpha (ste_clip: the clip passes the gradient).
void soft_rounding_backward(const SoftRoundingPlan& plan, ConstTensorView alpha,
                            ConstTensorView dq, TensorView d_alpha,
                            std::optional<int64_t> channel_axis);
void soft_rounding_backward(const SoftRoundingPlan& plan, BasicTensorView<const double> alpha,
                            BasicTensorView<const double> dq, BasicTensorView<double> d_alpha,
                            std::optional<int64_t> channel_axis);
// alpha such that h(alpha) = frac(clip((w - offset) / delta, qmin, qmax)).
void soft_rounding_init_alpha(const SoftRoundingPlan& plan, ConstTensorView w, TensorView alpha,
                              std::optional<int64_t> channel_axis);

// Regularizer sum(1 - |2 (h(alpha) - 0.5)|^beta) over all elements, and its gradient.
double soft_rounding_regularization(ConstTensorView alpha, double beta);
double soft_rounding_regularization(BasicTensorView<const double> alpha, double beta);
void soft_rounding_regularization_backward(ConstTensorView alpha, double beta, double d_reg,
                                           TensorView d_alpha);
void soft_rounding_regularization_backward(BasicTensorView<const double> alpha, double beta,
                                           double d_reg, BasicTensorView<double> d_alpha);

// MCT's linear annealing: initial + clip((t - t_start) / (t_end - t_start), 0, 1) * (target -
// initial). Requires 0 <= t_start < t_end (qi::Error otherwise).
class LinearAnnealing {
 public:
  LinearAnnealing(int64_t t_start, int64_t t_end, double initial_value, double target_value);
  double operator()(int64_t t) const;

 private:
  int64_t t_start_, t_end_;
  double initial_, target_;
};

}  // namespace qi::trainable
