// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Forward and backward math of the trainable quantizers, framework
// free: the torch and TF layers only wire these into their autograd engines.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
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
// the forward). Writes dx (skipped when dx.data is null) and returns the parameter sums, one per
// plan channel (a grouped plan: one per (channel, group), summed over its group's elements).
// x, dy, dx: same sizes; channel_axis as in kernels::fake_quant_forward.
AffineParamGrads affine_backward(const kernels::AffineTorchPlan& plan, ConstTensorView x,
                                 ConstTensorView dy, TensorView dx,
                                 std::optional<int64_t> channel_axis, GradMode mode);

// The torch range adjustment (non-clamping, float32; docs/numerics.md) and its gradient, as
// MCT's differentiable version computes it (torch.round has a zero gradient).
struct RangeGrads {
  double d_min = 0, d_max = 0;
};
RangeGrads adjust_range_backward(float min, float max, int64_t num_bits, double d_min_adj,
                                 double d_max_adj);

// ---- the trainable ops, as the framework layers call them ----------------------------------
// qi::symmetric_quant / uniform_quant / soft_round (torch) and QiSymmetricQuant / QiUniformQuant
// / QiSoftRound (TensorFlow) are thin bindings of the functions below. Training may move the
// parameters anywhere, so every call checks them (finite, normal float32 step, distinct range
// ends) with a qi::Error whose message starts with `op`; a range whose ends crossed is used in
// order (docs/numerics.md).

// Static arguments of the symmetric op: y = delta * clamp(nearbyint(x / delta), qmin, qmax),
// delta = t' / 2^(n - s) with the effective threshold
//   t' = power_of_two ? 2^ceil(log2(max(t, min_threshold))) : max(t, min_threshold).
// LSQ's gradient scale: g = grad_scale, divided by sqrt(x.size(grad_scale_axis)) when that axis
// is given (the channel count of an activation, known only at the call).
// group_size (>= 1; nullopt: no groups): one threshold per (channel, group) of group_size
// elements along group_axis, laid out as kernels::GroupLayout says (the last group may be
// shorter), the inferable per-group quantizers' layout; the gradient of each is summed over its
// group.
struct SymmetricQuantArgs {
  int64_t num_bits = 8;
  bool is_signed = true;
  std::optional<int64_t> channel_axis;
  GradMode mode = GradMode::kSte;
  double grad_scale = 1.0;
  std::optional<int64_t> grad_scale_axis;
  double min_threshold = 0.0;
  bool power_of_two = false;
  std::optional<int64_t> group_size;
  int64_t group_axis = -1;
};

// Static arguments of the uniform op: the torch-profile grid over [min, max] adjusted so that 0
// is on the grid (float32, not clamped; rounded zero point). activation: the scale is computed as
// ActivationUniformInferableQuantizer does (double, then float). group_size, group_axis: as for
// the symmetric op (one range per (channel, group)).
struct UniformQuantArgs {
  int64_t num_bits = 8;
  std::optional<int64_t> channel_axis;
  GradMode mode = GradMode::kSte;
  double grad_scale = 1.0;
  std::optional<int64_t> grad_scale_axis;
  bool activation = false;
  std::optional<int64_t> group_size;
  int64_t group_axis = -1;
};

// A checked call of an affine op on an input of given sizes: the forward plan, the normalized
// channel axis (nullopt: per tensor, also when one value covers every channel) and the effective
// LSQ gradient scale.
struct AffineCall {
  kernels::AffineTorchPlan plan;
  std::optional<int64_t> axis;
  double grad_scale = 1.0;
};

// threshold: one value, or one per slice of x along channel_axis; with groups, one per (channel,
// group) (qi::Error naming the channels, groups and sizes otherwise).
AffineCall symmetric_quant_call(const char* op, const Shape& x_sizes,
                                const std::vector<double>& threshold,
                                const SymmetricQuantArgs& args);
// min_range, max_range: one value each, or one per slice of x along channel_axis.
AffineCall uniform_quant_call(const char* op, const Shape& x_sizes,
                              const std::vector<double>& min_range,
                              const std::vector<double>& max_range, const UniformQuantArgs& args);
// y = Q(x) (y may be x itself).
void affine_quant_forward(const AffineCall& call, ConstTensorView x, TensorView y);

// The fused backwards: dx is written unless dx.data is null (kSte: dx = dy, which callers may
// alias instead); the returned values are dL/dthreshold (zero where t < min_threshold; the
// power-of-two rounding passes the gradient straight through) or dL/dmin and dL/dmax, one per
// parameter value.
std::vector<double> symmetric_quant_backward(const AffineCall& call,
                                             const std::vector<double>& threshold,
                                             const SymmetricQuantArgs& args, ConstTensorView x,
                                             ConstTensorView dy, TensorView dx);
std::vector<RangeGrads> uniform_quant_backward(const AffineCall& call,
                                               const std::vector<double>& min_range,
                                               const std::vector<double>& max_range,
                                               const UniformQuantArgs& args, ConstTensorView x,
                                               ConstTensorView dy, TensorView dx);

// ---- the formats: low-precision floats, MX and NVFP4 (qi::format_quant, QiFormatQuant) ----

// Where the format op's scale comes from.
//  kScale:    scale holds the scales themselves (one, one per channel, or one per (channel,
//             group) with group_size); tensor_scale is empty. The FLOAT quantizers.
//  kFp8Scale: NVFP4 with learned block scales: scale holds one value b per (channel, block of
//             group_size elements along group_axis) and tensor_scale none or one value t; the
//             block's total scale is t * e4m3(clamp(b, 2^-6, 448)) (without t: the E4M3 value).
//  kMx:       MX blocks of group_size elements along group_axis (the axis holds whole blocks),
//             their E8M0 scales from the data (kernels::MxPlan), after a pre-scale p: scale
//             holds p (one value); y = p * MX(x / p), exactly as WeightsMXInferableQuantizer
//             with tensor_scale p computes it. tensor_scale is empty.
//  kNvfp4:    NVFP4 blocks of 16 along group_axis with their scales from the data
//             (kernels::Nvfp4Plan); scale is empty, tensor_scale none or one fixed value.
enum class FormatScaling : int { kScale, kFp8Scale, kMx, kNvfp4 };
std::string to_string(FormatScaling s);                       // "scale", "fp8_scale", "mx", "nvfp4"
FormatScaling parse_format_scaling(const char* op, const std::string& name);  // qi::Error

// Static arguments of the format op. y = E * F(clamp(x / E, -max, max)) with F the element
// format's rounding (kernels::FloatPlan) and E the element's effective scale (above). Gradients,
// with u = x / E and q = F(clamp(u, -max, max)):
//  kSte: dy/dx = 1;                         dy/dE = q - u
//  kLsq: dy/dx = 1 inside [-max, max], else 0; dy/dE = q - u inside, q outside
// and through E to the parameters, straight through every rounding: kScale dE/ds = 1; kFp8Scale
// dE/db = t (1 without t; zero where b is clamped), dE/dt = e4m3(clamp(b)); kMx dE/dp = the
// block's E8M0 scale. Each parameter's gradient is summed over its elements (float64, in a fixed
// order) and multiplied by its gradient scale: grad_scale for scale, tensor_grad_scale (when
// given, else grad_scale) for tensor_scale, each divided by sqrt(x.size(grad_scale_axis)) when
// that axis is given. kNvfp4 has no parameter gradient (its tensor_scale is fixed).
// format: a FLOAT format name (kernels::kFloatFormats; "E2M1" for kFp8Scale and kNvfp4) or, for
// kMx, an MX element format (also "INT8").
struct FormatQuantArgs {
  std::string format = "E4M3";
  FormatScaling scaling = FormatScaling::kScale;
  std::optional<int64_t> channel_axis;
  GradMode mode = GradMode::kSte;
  double grad_scale = 1.0;
  std::optional<int64_t> grad_scale_axis;
  std::optional<int64_t> group_size;  // kScale: groups (None: none); kFp8Scale/kNvfp4: 16; kMx: the block size
  std::optional<double> tensor_grad_scale;  // kFp8Scale: tensor_scale's (None: grad_scale)
  int64_t group_axis = -1;           // also the block axis
};

// A checked call: the forward plan (FloatPlan for kScale and kFp8Scale, MxPlan, Nvfp4Plan), the
// normalized channel axis, the effective gradient scale and the parameters as the op uses them.
struct FormatCall {
  kernels::Plan plan;
  std::optional<int64_t> axis;
  double grad_scale = 1.0;
  double tensor_grad_scale = 1.0;
  FormatScaling scaling = FormatScaling::kScale;
  GradMode mode = GradMode::kSte;
  float tensor_scale = 0.f;        // kFp8Scale, kNvfp4: t (0: none); MX's p is in its MxPlan
  std::vector<float> b;            // kFp8Scale: the block scales as given, in float32
  std::vector<float> block_scale;  // kFp8Scale: e4m3(clamp(b, 2^-6, 448)), one per parameter
};
// Checks the arguments and the parameters (finite; scales > 0 as float32 normals; counts that fit
// x) with a qi::Error whose message starts with `op`.
FormatCall format_quant_call(const char* op, const Shape& x_sizes,
                             const std::vector<double>& scale,
                             const std::vector<double>& tensor_scale, const FormatQuantArgs& args);
// y = Q(x) (y may be x itself).
void format_quant_forward(const FormatCall& call, ConstTensorView x, TensorView y);
// The fused backward: dx is written unless dx.data is null; returns dL/dscale (one per scale
// value) and dL/dtensor_scale (one per tensor_scale value).
struct FormatGrads {
  std::vector<double> d_scale, d_tensor_scale;
};
FormatGrads format_quant_backward(const FormatCall& call, ConstTensorView x, ConstTensorView dy,
                                  TensorView dx);

// ---- soft rounding ----

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

// Static arguments of the soft rounding op. The grid comes from the quantizer's parameters:
//  symmetric (threshold t): delta = t' / 2^(n-1) with t' = max(t, kMinThreshold), rounded up
//    to a power of two when power_of_two; offset 0, [qmin, qmax] = [-2^(n-1), 2^(n-1)-1];
//  uniform (min_range, max_range): the grid of WeightsUniformInferableQuantizer: delta its
//    scale, offset the zero-adjusted min, its zero point, [0, 2^n - 1].
struct SoftRoundArgs {
  int64_t num_bits = 8;
  bool power_of_two = false;
  std::optional<int64_t> channel_axis;
};
// A checked soft rounding call: its plan and the normalized channel axis.
struct SoftRoundCall {
  SoftRoundingPlan plan;
  std::optional<int64_t> axis;  // normalized; nullopt when one value covers the tensor
};
// The checked call on a weight of sizes w_sizes: max_range empty means symmetric with
// `threshold_or_min` the thresholds, else uniform with `threshold_or_min` the minimums.
SoftRoundCall soft_round_call(const char* op, const Shape& w_sizes,
                              const std::vector<double>& threshold_or_min,
                              const std::optional<std::vector<double>>& max_range,
                              const SoftRoundArgs& args);
// The grid alpha is initialized on (as MCT): the thresholds as given (no power-of-two rounding),
// or the un-adjusted range with delta = (max - min) / (2^n - 1), offset = min, zero point 0.
SoftRoundingPlan soft_rounding_init_plan(const std::vector<double>& threshold_or_min,
                                         const std::optional<std::vector<double>>& max_range,
                                         int64_t num_bits);
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

// Regularizer sum(1 - |2 (h(alpha) - 0.5)|^beta) over all elements, and its gradient. The ops
// check beta first (op names the caller in the message): it must be finite.
void check_soft_rounding_beta(double beta, const char* op);
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

// The soft rounding regularizer's beta schedule (MCT's): beta anneals linearly from beta_start
// to beta_end between int(warmup_fraction * total_steps) and total_steps. Requires
// total_steps > 0, 0 <= warmup_fraction < 1 and finite betas (qi::Error otherwise).
class SoftRoundingSchedule {
 public:
  explicit SoftRoundingSchedule(int64_t total_steps, double warmup_fraction = 0.2,
                                double beta_start = 20.0, double beta_end = 2.0);
  double beta(int64_t step) const;

 private:
  LinearAnnealing annealing_;
};

}  // namespace qi::trainable
