// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The qi ops (ops.h): forward parity with the core quantizers and with ATen's fake quantizers,
// gradients against references built from plain torch ops, and finite differences where the
// gradient is defined.
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "qi/inferable_quantizers.h"
#include "qi/registry.h"
#include "qi/torch/ops.h"
#include "torch_test_util.h"

namespace {

using qi::InferableQuantizerKind;
using qi::NumericProfile;
using qi::QuantizerParams;
using qi_torch_test::all_close;
using qi_torch_test::bit_equal;
using qi_torch_test::expect_c10_error;
using qi_torch_test::values;

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// ---- forward: fake_quant equals the core quantizer -------------------------------------------

// Parameters for every registered inferable class: per-channel weights on axis 1 of a
// [4, 3, 9] tensor (3 channels), per-tensor activations.
QuantizerParams params_for(InferableQuantizerKind kind) {
  QuantizerParams p;
  switch (kind) {
    case InferableQuantizerKind::WeightsSymmetricInferableQuantizer:
      p.num_bits = 8;
      p.threshold = {0.5, 1.3, 2.7};
      p.per_channel = true;
      p.channel_axis = 1;
      break;
    case InferableQuantizerKind::WeightsPOTInferableQuantizer:
      p.num_bits = 4;
      p.threshold = {0.5, 1.0, 2.0};
      p.per_channel = true;
      p.channel_axis = -2;
      break;
    case InferableQuantizerKind::WeightsUniformInferableQuantizer:
      p.num_bits = 6;
      p.min_range = {-1.0, 0.2, -2.0};
      p.max_range = {1.1, 1.5, -0.3};
      p.per_channel = true;
      p.channel_axis = 1;
      break;
    case InferableQuantizerKind::WeightsLUTSymmetricInferableQuantizer:
      p.num_bits = 3;
      p.lut_values = {-100, -50, -10, 0, 10, 50, 100, 127};
      p.threshold = {0.5, 1.3, 2.7};
      p.per_channel = true;
      p.channel_axis = 1;
      break;
    case InferableQuantizerKind::WeightsLUTPOTInferableQuantizer:
      p.num_bits = 3;
      p.lut_values = {-128, -40, -3, 0, 7, 90, 127};
      p.threshold = {0.5, 1.0, 2.0};
      p.per_channel = true;
      p.channel_axis = 1;
      break;
    case InferableQuantizerKind::ActivationSymmetricInferableQuantizer:
      p.num_bits = 8;
      p.threshold = {3.0};
      p.is_signed = false;
      break;
    case InferableQuantizerKind::ActivationPOTInferableQuantizer:
      p.num_bits = 5;
      p.threshold = {4.0};
      p.is_signed = true;
      break;
    case InferableQuantizerKind::ActivationUniformInferableQuantizer:
      p.num_bits = 8;
      p.min_range = {-1.3};
      p.max_range = {2.9};
      break;
    case InferableQuantizerKind::ActivationLutPOTInferableQuantizer:
      p.num_bits = 3;
      p.lut_values = {0, 10, 50, 100, 200, 255};
      p.threshold = {4.0};
      p.is_signed = false;
      break;
    case InferableQuantizerKind::WeightsFloatInferableQuantizer:
      p.format = "E4M3";
      p.scale = {0.01, 0.3, 2.0};
      p.per_channel = true;
      p.channel_axis = 1;
      break;
    case InferableQuantizerKind::ActivationFloatInferableQuantizer:
      p.format = "E2M1";
      p.scale = {0.5};
      break;
    case InferableQuantizerKind::WeightsMXInferableQuantizer:  // blocks of 3 along axis 1
    case InferableQuantizerKind::ActivationMXInferableQuantizer:
      p.format = kind == InferableQuantizerKind::WeightsMXInferableQuantizer ? "E4M3" : "E2M1";
      p.block_size = 3;
      p.block_axis = 1;
      break;
    case InferableQuantizerKind::WeightsNVFP4InferableQuantizer:  // blocks of 16: see below
    case InferableQuantizerKind::ActivationNVFP4InferableQuantizer:
      p.tensor_scale = 0.01;
      break;
  }
  return p;
}

// Random values with rounding ties of the first channel's grid, +/-0, +/-Inf and NaN mixed in.
at::Tensor special_input(at::IntArrayRef sizes, uint64_t seed) {
  ::torch::manual_seed(seed);
  at::Tensor x = ::torch::randn(sizes, ::torch::kFloat) * 2.5;
  at::Tensor flat = x.view({-1});
  const std::vector<float> special = {0.f, -0.f, kInf, -kInf, kNaN, 1e-30f, -1e-30f,
                                      0.5f * 0.00390625f, 1.5f * 0.00390625f, 0.25f, -0.375f};
  for (size_t i = 0; i < special.size() && static_cast<int64_t>(i) < flat.numel(); ++i)
    flat[static_cast<int64_t>(i) * 5 % flat.numel()] = special[i];
  return x;
}

// The core's own output on a contiguous copy.
at::Tensor core_apply(const qi::BaseInferableQuantizer& q, const at::Tensor& x) {
  const at::Tensor c = x.contiguous();
  const std::vector<float> out = q.apply(values(c), c.sizes().vec());
  return ::torch::tensor(out, ::torch::kFloat).reshape(c.sizes());
}

void check_fake_quant(const qi::BaseInferableQuantizer& q) {
  SCOPED_TRACE(q.to_json());
  // Contiguous.
  const at::Tensor x = special_input({4, 3, 9}, 1);
  EXPECT_TRUE(bit_equal(qi::torch::fake_quant(x, q), core_apply(q, x)));
  // The JSON overload gives the same.
  EXPECT_TRUE(bit_equal(qi::torch::fake_quant(x, q.to_json()), core_apply(q, x)));
  // Transposed (permuted) view.
  const at::Tensor xt = special_input({9, 3, 4}, 2).permute({2, 1, 0});
  ASSERT_FALSE(xt.is_contiguous());
  EXPECT_TRUE(bit_equal(qi::torch::fake_quant(xt, q), core_apply(q, xt)));
  // Strided slices.
  const at::Tensor xs = special_input({8, 3, 18}, 3).slice(0, 0, 8, 2).slice(2, 1, 18, 2);
  ASSERT_FALSE(xs.is_contiguous());
  EXPECT_TRUE(bit_equal(qi::torch::fake_quant(xs, q), core_apply(q, xs)));
  // Larger than one thread grain, so that at::parallel_for splits it.
  const at::Tensor xl = special_input({4, 3, 10007}, 4);
  EXPECT_TRUE(bit_equal(qi::torch::fake_quant(xl, q), core_apply(q, xl)));
  // Empty.
  const at::Tensor xe = ::torch::empty({4, 3, 0});
  EXPECT_EQ(qi::torch::fake_quant(xe, q).sizes(), xe.sizes());
}

TEST(FakeQuantOp, EqualsCoreApplyForEveryInferableClass) {
  for (const auto& info : qi::kInferableQuantizers) {
    SCOPED_TRACE(info.class_name);
    // NVFP4's blocks of 16 do not fit these [., 3, .] tensors; PackedPlanMatchesTheJsonOp and
    // NVFP4BlocksAlongTheLastAxis cover it.
    if (info.method == qi::QuantizationMethod::NVFP4) continue;
    const auto q = qi::make_inferable_quantizer(info.kind, params_for(info.kind));
    check_fake_quant(*q);
  }
}

TEST(FakeQuantOp, EqualsCoreApplyForTfProfileAndPerTensorAndAxisZero) {
  QuantizerParams sym = params_for(InferableQuantizerKind::WeightsSymmetricInferableQuantizer);
  sym.profile = NumericProfile::kTf;
  check_fake_quant(qi::WeightsSymmetricInferableQuantizer(sym));
  QuantizerParams uni = params_for(InferableQuantizerKind::WeightsUniformInferableQuantizer);
  uni.profile = NumericProfile::kTf;
  check_fake_quant(qi::WeightsUniformInferableQuantizer(uni));
  check_fake_quant(qi::ActivationUniformInferableQuantizer(8, {-0.7}, {2.0}, NumericProfile::kTf));
  check_fake_quant(qi::WeightsSymmetricInferableQuantizer(4, {1.7}, /*per_channel=*/false));
  // Axis 0 of a [4, 3, 9] tensor.
  check_fake_quant(qi::WeightsPOTInferableQuantizer(8, {0.25, 0.5, 1.0, 8.0}, true, 0));
}

TEST(FakeQuantOp, NVFP4BlocksAlongTheLastAxis) {
  const qi::WeightsNVFP4InferableQuantizer q(0.01);
  const at::Tensor x = special_input({4, 3, 32}, 5);
  EXPECT_TRUE(bit_equal(qi::torch::fake_quant(x, q), core_apply(q, x)));
  const at::Tensor xt = special_input({4, 32, 3}, 6).transpose(1, 2);  // strided blocks
  EXPECT_TRUE(bit_equal(qi::torch::fake_quant(xt, q), core_apply(q, xt)));
}

TEST(FakeQuantOp, GradientIsStraightThrough) {
  const qi::WeightsSymmetricInferableQuantizer q(4, {1.0}, false);
  at::Tensor x = (::torch::randn({5, 7}) * 3).requires_grad_(true);
  const at::Tensor w = ::torch::randn({5, 7});
  (qi::torch::fake_quant(x, q) * w).sum().backward();
  EXPECT_TRUE(bit_equal(x.grad(), w));  // including outside the grid
}

TEST(FakeQuantOp, BadInputsRaise) {
  const qi::WeightsSymmetricInferableQuantizer q(8, {1.0, 2.0, 3.0}, true, 1);
  expect_c10_error([&] { qi::torch::fake_quant(::torch::randn({4, 5}), q); }, "channel");
  expect_c10_error([&] { qi::torch::fake_quant(::torch::ones({4, 3}, ::torch::kInt), q); },
                   "x must be float32, float16, bfloat16 or float64, got Int");
  expect_c10_error([&] { qi::torch::fake_quant(::torch::randn({4, 3}), std::string("{not json")); },
                   "malformed JSON");
}

// The packed-plan op gives the JSON op's bits for every registry class, per tensor and per
// channel, and rejects plans it cannot have come from.
TEST(QuantizeOp, PackedPlanMatchesTheJsonOp) {
  for (const auto& info : qi::kInferableQuantizers) {
    for (int64_t channels : {int64_t{1}, int64_t{4}}) {
      if (info.target == qi::QuantizationTarget::Activation && channels > 1) continue;
      SCOPED_TRACE(::testing::Message() << info.class_name << " " << channels);
      const auto q = qi::inferable_quantizer_from_config(
          info.kind, qi::example_inferable_config(info.kind, channels, 1));
      ::torch::manual_seed(7);
      // Block formats block the last axis: two blocks there.
      const int64_t last = qi::kernels::plan_is_block_scaled(q->plan()) ? 32 : 2;
      const at::Tensor x = ::torch::randn({3, channels, 5, last}) * 2;
      const at::Tensor plan = qi::torch::packed_plan(*q);
      EXPECT_EQ(plan.scalar_type(), ::torch::kInt);
      const auto axis = q->per_channel() ? q->channel_axis() : std::nullopt;
      EXPECT_TRUE(bit_equal(qi::torch::quantize(x, plan, axis, q->params().input_rank),
                            qi::torch::fake_quant(x, *q)));
    }
  }
  const qi::WeightsSymmetricInferableQuantizer q(8, {1.0, 2.0, 3.0}, true, 1);
  const at::Tensor plan = qi::torch::packed_plan(q);
  expect_c10_error([&] { qi::torch::quantize(::torch::randn({4, 5}), plan, 1, std::nullopt); },
                   "qi::quantize: the quantizer holds 3 per-channel values but the tensor has 5");
  expect_c10_error([&] { qi::torch::quantize(::torch::randn({4, 3}), plan.to(::torch::kFloat), 1,
                                             std::nullopt); },
                   "plan must be a 1-D int32 CPU tensor");
  expect_c10_error([&] { qi::torch::quantize(::torch::randn({4, 3}), plan.slice(0, 0, 5), 1,
                                             std::nullopt); },
                   "packed plan: truncated");
  at::Tensor bad = plan.clone();
  bad[0] = 7;
  expect_c10_error([&] { qi::torch::quantize(::torch::randn({4, 3}), bad, 1, std::nullopt); },
                   "packed plan: unknown format tag 7");
}

// Half, bfloat16 and double inputs: quantized on the float32 grid, returned in their dtype;
// channels_last stays channels_last.
TEST(QuantizeOp, DtypesAndMemoryFormat) {
  const qi::WeightsSymmetricInferableQuantizer q(8, {1.0, 2.0, 3.0}, true, 1);
  ::torch::manual_seed(3);
  const at::Tensor x = ::torch::randn({2, 3, 4, 5}) * 2;
  const at::Tensor ref = qi::torch::fake_quant(x, q);
  for (auto dtype : {::torch::kHalf, ::torch::kBFloat16, ::torch::kDouble}) {
    const at::Tensor xd = x.to(dtype);
    const at::Tensor y = qi::torch::fake_quant(xd, q);
    EXPECT_EQ(y.scalar_type(), dtype);
    EXPECT_TRUE(::torch::equal(y, qi::torch::fake_quant(xd.to(::torch::kFloat), q).to(dtype)));
  }
  const at::Tensor cl = x.contiguous(at::MemoryFormat::ChannelsLast);
  const at::Tensor y = qi::torch::fake_quant(cl, q);
  EXPECT_TRUE(y.is_contiguous(at::MemoryFormat::ChannelsLast));
  EXPECT_TRUE(bit_equal(y.contiguous(), ref));
}

// ---- forward: parity with ATen's fake_quantize_per_{tensor,channel}_affine -------------------

// Grid points, exact ties (k + 0.5) * scale and random values over and beyond [qmin, qmax].
at::Tensor grid_input(double scale, double zp, double qmin, double qmax, int64_t count,
                      uint64_t seed) {
  ::torch::manual_seed(seed);
  const double lo = (qmin - zp - 4) * scale, hi = (qmax - zp + 4) * scale;
  at::Tensor x = ::torch::rand({count}, ::torch::kDouble) * (hi - lo) + lo;
  at::Tensor ties = (::torch::randint(static_cast<int64_t>(qmin - zp - 3),
                                      static_cast<int64_t>(qmax - zp + 3), {count / 4},
                                      ::torch::kDouble) +
                     0.5) * scale;
  x.slice(0, 0, count / 4).copy_(ties);
  return x.to(::torch::kFloat);
}

TEST(SymmetricQuantOp, ForwardEqualsAtenPerTensorAffine) {
  for (int64_t n : {2, 4, 8, 16}) {
    for (bool is_signed : {true, false}) {
      for (double t : {1.0, 0.75, 3.1, 1e-3}) {
        SCOPED_TRACE(::testing::Message() << "n=" << n << " signed=" << is_signed << " t=" << t);
        // Signed: scale t / 2^(n-1), [-2^(n-1), 2^(n-1)-1]; unsigned: t / 2^n, [0, 2^n-1].
        const double steps = std::ldexp(1.0, static_cast<int>(is_signed ? n - 1 : n));
        const double scale = static_cast<float>(t / steps);
        const int64_t qmin = is_signed ? -(int64_t{1} << (n - 1)) : 0;
        const int64_t qmax = is_signed ? (int64_t{1} << (n - 1)) - 1 : (int64_t{1} << n) - 1;
        const at::Tensor x = grid_input(scale, 0, static_cast<double>(qmin),
                                        static_cast<double>(qmax), 4096, static_cast<uint64_t>(n));
        const at::Tensor y = qi::torch::symmetric_quant(x, ::torch::tensor({static_cast<float>(t)}),
                                                        n, is_signed, std::nullopt, "ste", 1.0);
        const at::Tensor ref = at::fake_quantize_per_tensor_affine(x, scale, 0, qmin, qmax);
        EXPECT_TRUE(bit_equal(y, ref));
      }
    }
  }
}

TEST(SymmetricQuantOp, ForwardEqualsAtenPerChannelAffine) {
  const std::vector<float> t = {0.5f, 1.3f, 2.0f, 0.07f};
  for (int64_t axis : {0, 1, 2}) {
    SCOPED_TRACE(::testing::Message() << "axis=" << axis);
    std::vector<int64_t> sizes = {6, 6, 6};
    sizes[static_cast<size_t>(axis)] = 4;
    ::torch::manual_seed(10 + axis);
    at::Tensor x = ::torch::randn(sizes) * 2;
    // Exact ties of the power-of-two scale of channel 2 (2.0 / 128).
    at::Tensor channel = x.select(axis, 2);
    channel.copy_(((::torch::arange(-18, 18, ::torch::kFloat) + 0.5f) * (2.0f / 128.f))
                      .reshape(channel.sizes()));
    at::Tensor scales = ::torch::empty({4});
    for (int64_t c = 0; c < 4; ++c) scales[c] = static_cast<float>(t[c] / 128.0);
    const at::Tensor y = qi::torch::symmetric_quant(x, ::torch::tensor(t), 8, true, axis, "lsq", 1.0);
    const at::Tensor ref = at::fake_quantize_per_channel_affine(
        x, scales, ::torch::zeros({4}, ::torch::kInt), axis, -128, 127);
    EXPECT_TRUE(bit_equal(y, ref));
    // A non-contiguous view of the same data gives the same values.
    const at::Tensor xt = x.transpose(0, 2).contiguous().transpose(0, 2);
    EXPECT_TRUE(bit_equal(
        qi::torch::symmetric_quant(xt, ::torch::tensor(t), 8, true, axis, "ste", 1.0), ref));
  }
}

// The float32 range adjustment of docs/numerics.md (torch, non-clamping), scale and zero point
// as the torch uniform quantizers compute them.
struct UniformGrid {
  double scale;
  int64_t zero_point;
  float min_adj;
};
UniformGrid uniform_grid(float mn, float mx, int64_t n, bool activation) {
  const float levels = static_cast<float>(std::ldexp(1.0, static_cast<int>(n)) - 1);
  const float s0 = (mx - mn) / levels;
  const float shifted = s0 * std::nearbyint(mn / s0);
  float lo = shifted, hi = (mx - mn) + shifted;
  if (mn > 0) {
    lo = 0;
    hi = mx;
  } else if (mx < 0) {
    lo = mn;
    hi = 0;
  }
  UniformGrid g;
  g.min_adj = lo;
  if (activation) {
    const double s = (static_cast<double>(hi) - lo) / static_cast<double>(levels);
    g.scale = static_cast<float>(s);
    g.zero_point = static_cast<int64_t>(-std::nearbyint(static_cast<double>(lo) / s));
  } else {
    const float s = (hi - lo) / levels;
    g.scale = s;
    g.zero_point = static_cast<int64_t>(-std::nearbyint(lo / s));
  }
  g.zero_point = std::min<int64_t>(std::max<int64_t>(g.zero_point, 0), (int64_t{1} << n) - 1);
  return g;
}

TEST(UniformQuantOp, ForwardEqualsAtenPerTensorAffine) {
  const std::vector<std::pair<float, float>> ranges = {
      {-1.0f, 1.0f}, {-0.3f, 2.7f}, {0.5f, 3.0f}, {-4.0f, -0.25f}, {-1e-3f, 5e-3f}};
  for (int64_t n : {2, 4, 8, 16}) {
    for (bool activation : {false, true}) {
      for (const auto& [mn, mx] : ranges) {
        SCOPED_TRACE(::testing::Message() << "n=" << n << " activation=" << activation
                                          << " range=[" << mn << ", " << mx << "]");
        const UniformGrid g = uniform_grid(mn, mx, n, activation);
        const int64_t qmax = (int64_t{1} << n) - 1;
        const at::Tensor x = grid_input(g.scale, static_cast<double>(g.zero_point), 0,
                                        static_cast<double>(qmax), 4096, static_cast<uint64_t>(n));
        const at::Tensor y = qi::torch::uniform_quant(x, ::torch::tensor({mn}), ::torch::tensor({mx}),
                                                      n, std::nullopt, "ste", 1.0, activation);
        const at::Tensor ref =
            at::fake_quantize_per_tensor_affine(x, g.scale, g.zero_point, 0, qmax);
        EXPECT_TRUE(bit_equal(y, ref));
      }
    }
  }
}

TEST(UniformQuantOp, ForwardEqualsAtenPerChannelAffine) {
  const std::vector<float> mn = {-1.0f, 0.2f, -2.0f}, mx = {1.1f, 1.5f, -0.3f};
  const int64_t n = 5;
  at::Tensor scales = ::torch::empty({3}, ::torch::kFloat);
  at::Tensor zps = ::torch::empty({3}, ::torch::kInt);
  for (int64_t c = 0; c < 3; ++c) {
    const UniformGrid g = uniform_grid(mn[c], mx[c], n, false);
    scales[c] = static_cast<float>(g.scale);
    zps[c] = static_cast<int32_t>(g.zero_point);
  }
  ::torch::manual_seed(5);
  const at::Tensor x = ::torch::randn({7, 3, 11}) * 2;
  const at::Tensor y = qi::torch::uniform_quant(x, ::torch::tensor(mn), ::torch::tensor(mx), n, 1,
                                                "lsq", 1.0, false);
  EXPECT_TRUE(bit_equal(y, at::fake_quantize_per_channel_affine(x, scales, zps, 1, 0, 31)));
}

TEST(QuantOps, BadArgumentsRaise) {
  const at::Tensor x = ::torch::randn({2, 3});
  expect_c10_error([&] { qi::torch::symmetric_quant(x, ::torch::tensor({1.f}), 1, true, {}, "ste", 1); },
                   "num_bits must be in [2, 16], got 1");
  expect_c10_error([&] { qi::torch::symmetric_quant(x, ::torch::tensor({0.f}), 8, true, {}, "ste", 1); },
                   "qi::symmetric_quant: threshold must be > 0, got 0 at index 0");
  expect_c10_error([&] { qi::torch::symmetric_quant(x, ::torch::tensor({1.f}), 8, true, {}, "sgd", 1); },
                   "mode must be \"ste\" or \"lsq\"");
  expect_c10_error(
      [&] { qi::torch::symmetric_quant(x, ::torch::tensor({1.f, 2.f}), 8, true, 1, "ste", 1); },
      "threshold holds 2 values but the tensor has 3 channels");
  expect_c10_error(
      [&] { qi::torch::symmetric_quant(x, ::torch::tensor({1.f, 2.f}), 8, true, std::nullopt, "ste", 1); },
      "threshold must hold one value when channel_axis is None");
  expect_c10_error([&] { qi::torch::symmetric_quant(x, ::torch::tensor({1.f}), 8, true, 2, "ste", 1); },
                   "channel_axis must be in [-2, 2)");
  expect_c10_error([&] {
    qi::torch::uniform_quant(x, ::torch::tensor({1.f}), ::torch::tensor({1.f}), 8, {}, "ste", 1, false);
  }, "qi::uniform_quant: min_range and max_range must differ, got both 1 at index 0");
}

// ---- gradients against references from plain torch ops -----------------------------------------
//
// STE and LSQ are not checked with a numerical gradcheck: their forward is a staircase (zero
// derivative almost everywhere, jumps at the rounding ties), and the straight-through gradient
// is a deliberate surrogate, not the derivative. The reference is MCT's own formulation with
// torch autograd: ste_round / ste_clip / grad_scale.

at::Tensor ste_round(const at::Tensor& x) { return x + (::torch::round(x) - x).detach(); }
at::Tensor ste_clip(const at::Tensor& x, double lo, double hi) {
  return x + (::torch::clamp(x, lo, hi) - x).detach();
}
at::Tensor grad_scale(const at::Tensor& d, double g) { return (d - g * d).detach() + g * d; }

// Reshapes a per-channel [C] parameter for broadcasting along `axis` of a rank-`rank` tensor.
at::Tensor bshape(const at::Tensor& p, int64_t rank, std::optional<int64_t> axis) {
  if (!axis) return p;
  std::vector<int64_t> s(static_cast<size_t>(rank), 1);
  s[static_cast<size_t>(*axis)] = -1;
  return p.reshape(s);
}

// Inputs at (k + f) * delta + a with f in [-0.4, 0.4]: away from rounding ties (the op multiplies
// by 1/scale while the reference divides), k over the grid and 5 steps beyond each end.
at::Tensor off_tie_input(const at::Tensor& delta_b, const at::Tensor& offset_b, double kmin,
                         double kmax, at::IntArrayRef sizes, uint64_t seed) {
  ::torch::manual_seed(seed);
  const at::Tensor k = ::torch::randint(static_cast<int64_t>(kmin) - 5,
                                        static_cast<int64_t>(kmax) + 6, sizes, ::torch::kFloat);
  const at::Tensor f = ::torch::rand(sizes) * 0.8 - 0.4;
  return ((k + f) * delta_b + offset_b).detach();
}

// Tolerance for a sum of float terms: relative to the sum of their magnitudes.
double sum_tol(const at::Tensor& abs_terms_sum) { return 2e-5 * abs_terms_sum.max().item<double>() + 1e-6; }

struct SymCase {
  int64_t n;
  bool is_signed;
  std::string mode;
  std::optional<int64_t> axis;
  double g;
};

void check_symmetric_grads(const SymCase& c) {
  SCOPED_TRACE(::testing::Message() << "n=" << c.n << " signed=" << c.is_signed << " mode=" << c.mode
                                    << " axis=" << (c.axis ? *c.axis : -1) << " g=" << c.g);
  const std::vector<int64_t> sizes = {3, 3, 6};
  const at::Tensor t0 = c.axis ? ::torch::tensor({0.9f, 2.3f, 0.4f}) : ::torch::tensor({1.7f});
  const double steps = std::ldexp(1.0, static_cast<int>(c.is_signed ? c.n - 1 : c.n));
  const double qmin = c.is_signed ? -steps : 0, qmax = steps - 1;
  const at::Tensor delta_b = bshape(t0 / steps, 3, c.axis);
  const at::Tensor x0 = off_tie_input(delta_b, ::torch::zeros({1}), qmin, qmax, sizes, 7);
  ::torch::manual_seed(8);
  const at::Tensor dy = ::torch::randn(sizes);

  // The op.
  at::Tensor x = x0.clone().requires_grad_(true);
  at::Tensor t = t0.clone().requires_grad_(true);
  (qi::torch::symmetric_quant(x, t, c.n, c.is_signed, c.axis, c.mode, c.g) * dy).sum().backward();

  // The reference.
  at::Tensor xr = x0.clone().requires_grad_(true);
  at::Tensor tr = t0.clone().requires_grad_(true);
  at::Tensor delta = bshape(tr / steps, 3, c.axis);
  at::Tensor q;
  if (c.mode == "ste") {
    q = delta * ste_clip(ste_round(xr / delta), qmin, qmax);
  } else {
    const at::Tensor ds = grad_scale(delta, c.g);
    q = ds * ::torch::clamp(ste_round(xr / ds), qmin, qmax);  // hard clamp
  }
  (q * dy).sum().backward();

  // Forward values agree away from ties; dx is dy (STE) or dy masked to the grid (LSQ), exactly.
  EXPECT_TRUE(all_close(qi::torch::symmetric_quant(x0, t0, c.n, c.is_signed, c.axis, "ste", 1), q,
                        1e-6, 1e-7));
  // (The reference's dx is (dy * delta) / delta, within an ulp of dy.)
  EXPECT_TRUE(all_close(x.grad(), xr.grad(), 1e-6, 0));
  if (c.mode == "ste") {
    EXPECT_TRUE(bit_equal(x.grad(), dy));
  } else {
    EXPECT_TRUE(bit_equal(x.grad(), ::torch::where(xr.grad() != 0, dy, ::torch::zeros_like(dy))));
  }
  // Threshold: sums of many terms; tolerance from the magnitudes of the terms.
  const at::Tensor u = (x0 / bshape(t0 / steps, 3, c.axis)).abs();
  std::vector<int64_t> reduce;
  for (int64_t d = 0; d < 3; ++d)
    if (!c.axis || d != *c.axis) reduce.push_back(d);
  const at::Tensor mag = (dy.abs() * (u + qmax + 1)).sum(reduce) * c.g / steps;
  EXPECT_TRUE(all_close(t.grad(), tr.grad(), 1e-4, sum_tol(mag)));
  EXPECT_GT(tr.grad().abs().sum().item<double>(), 0.0);
}

TEST(SymmetricQuantGrad, SteMatchesTorchReference) {
  check_symmetric_grads({8, true, "ste", std::nullopt, 1.0});
  check_symmetric_grads({4, false, "ste", std::nullopt, 1.0});
  check_symmetric_grads({3, true, "ste", 1, 1.0});
  check_symmetric_grads({5, true, "ste", 0, 1.0});
}

TEST(SymmetricQuantGrad, LsqMatchesTorchReference) {
  check_symmetric_grads({8, true, "lsq", std::nullopt, 0.37});
  check_symmetric_grads({4, false, "lsq", std::nullopt, 0.11});
  check_symmetric_grads({3, true, "lsq", 1, 0.5});
  check_symmetric_grads({4, true, "lsq", 0, 1.0});
}

TEST(SymmetricQuantGrad, BroadcastShapedThresholdNonContiguousAndLargeInputs) {
  // A threshold kept in broadcast shape (C, 1): the gradient comes back in that shape.
  ::torch::manual_seed(13);
  const at::Tensor base = (::torch::randn({3, 9}) * 2).requires_grad_(true);
  at::Tensor t = ::torch::tensor({0.7f, 1.1f, 2.3f}).reshape({3, 1}).requires_grad_(true);
  const at::Tensor dy = ::torch::randn({9, 3});
  // x is a transposed view: channels along axis 1.
  (qi::torch::symmetric_quant(base.t(), t, 4, true, 1, "lsq", 0.5) * dy).sum().backward();
  EXPECT_EQ(t.grad().sizes(), t.sizes());
  at::Tensor xc = base.detach().t().contiguous().requires_grad_(true);
  at::Tensor tc = t.detach().reshape({3}).clone().requires_grad_(true);
  (qi::torch::symmetric_quant(xc, tc, 4, true, 1, "lsq", 0.5) * dy).sum().backward();
  EXPECT_TRUE(bit_equal(base.grad().t(), xc.grad()));
  EXPECT_TRUE(all_close(t.grad().reshape({3}), tc.grad(), 1e-6, 1e-7));

  // Enough elements for several threads: per-thread partial sums are merged.
  check_symmetric_grads({8, true, "lsq", 1, 0.25});
  const at::Tensor xl = off_tie_input(::torch::tensor({0.9f, 1.4f, 2.2f}).reshape({1, 3, 1}) / 32,
                                     ::torch::zeros({1}), -32, 31, {4, 3, 30011}, 14);
  const at::Tensor dyl = ::torch::randn({4, 3, 30011});
  at::Tensor tl = ::torch::tensor({0.9f, 1.4f, 2.2f}).requires_grad_(true);
  (qi::torch::symmetric_quant(xl, tl, 6, true, 1, "ste", 1.0) * dyl).sum().backward();
  at::Tensor tr = ::torch::tensor({0.9f, 1.4f, 2.2f}, ::torch::kDouble).requires_grad_(true);
  const at::Tensor delta = (tr / 32).reshape({1, 3, 1});
  const at::Tensor xd = xl.to(::torch::kDouble);
  ((delta * ste_clip(ste_round(xd / delta), -32, 31)) * dyl.to(::torch::kDouble)).sum().backward();
  EXPECT_TRUE(all_close(tl.grad(), tr.grad().to(::torch::kFloat), 1e-4, 1e-3));
}

struct UniCase {
  int64_t n;
  std::string mode;
  std::vector<float> mn, mx;
  std::optional<int64_t> axis;
  double g;
  bool activation;
};

void check_uniform_grads(const UniCase& c) {
  SCOPED_TRACE(::testing::Message() << "n=" << c.n << " mode=" << c.mode << " axis="
                                    << (c.axis ? *c.axis : -1) << " g=" << c.g
                                    << " mn0=" << c.mn[0] << " mx0=" << c.mx[0]);
  const std::vector<int64_t> sizes = {4, 3, 7};
  const double levels = std::ldexp(1.0, static_cast<int>(c.n)) - 1;
  const at::Tensor mn0 = ::torch::tensor(c.mn), mx0 = ::torch::tensor(c.mx);

  // MCT's differentiable adjust_range_to_include_zero (torch.round: zero gradient; no clamp).
  auto adjust = [&](const at::Tensor& mn, const at::Tensor& mx) {
    const at::Tensor scale = (mx - mn) / levels;
    const at::Tensor min_adj0 = scale * ::torch::round(mn / scale);
    const at::Tensor max_adj0 = mx - mn + min_adj0;
    const at::Tensor min_pos = (mn > 0).to(::torch::kFloat);
    const at::Tensor max_neg = (mx < 0).to(::torch::kFloat);
    const at::Tensor mid = (1 - min_pos) * (1 - max_neg);
    return std::make_pair(min_adj0 * mid + max_neg * mn, max_adj0 * mid + min_pos * mx);
  };
  at::Tensor a0, b0;
  {
    ::torch::NoGradGuard ng;
    std::tie(a0, b0) = adjust(mn0, mx0);
  }
  const at::Tensor delta_b = bshape((b0 - a0) / levels, 3, c.axis);
  const at::Tensor x0 = off_tie_input(delta_b, bshape(a0, 3, c.axis), 0, levels, sizes, 11);
  ::torch::manual_seed(12);
  const at::Tensor dy = ::torch::randn(sizes);

  at::Tensor x = x0.clone().requires_grad_(true);
  at::Tensor mn = mn0.clone().requires_grad_(true), mx = mx0.clone().requires_grad_(true);
  (qi::torch::uniform_quant(x, mn, mx, c.n, c.axis, c.mode, c.g, c.activation) * dy).sum().backward();

  at::Tensor xr = x0.clone().requires_grad_(true);
  at::Tensor mnr = mn0.clone().requires_grad_(true), mxr = mx0.clone().requires_grad_(true);
  auto [a, b] = adjust(mnr, mxr);
  const at::Tensor delta = bshape((b - a) / levels, 3, c.axis);
  const at::Tensor ab = bshape(a, 3, c.axis);
  at::Tensor q;
  if (c.mode == "ste") {
    q = delta * ste_clip(ste_round((xr - ab) / delta), 0, levels) + ab;
  } else {
    const at::Tensor ds = grad_scale(delta, c.g);
    q = ds * ::torch::clamp(ste_round((xr - ab) / ds), 0, levels) + ab;
  }
  (q * dy).sum().backward();

  EXPECT_TRUE(all_close(x.grad(), xr.grad(), 1e-6, 0));
  if (c.mode == "ste") {
    EXPECT_TRUE(bit_equal(x.grad(), dy));
  }
  const at::Tensor u = ((x0 - bshape(a0, 3, c.axis)) / delta_b).abs();
  std::vector<int64_t> reduce;
  for (int64_t d = 0; d < 3; ++d)
    if (!c.axis || d != *c.axis) reduce.push_back(d);
  const at::Tensor mag = (dy.abs() * (u + levels + 1)).sum(reduce) * (2 + 2 * levels) / levels;
  EXPECT_TRUE(all_close(mn.grad(), mnr.grad(), 1e-4, sum_tol(mag)));
  EXPECT_TRUE(all_close(mx.grad(), mxr.grad(), 1e-4, sum_tol(mag)));
  EXPECT_GT((mnr.grad().abs().sum() + mxr.grad().abs().sum()).item<double>(), 0.0);
}

TEST(UniformQuantGrad, SteMatchesTorchReference) {
  check_uniform_grads({8, "ste", {-0.8f}, {1.3f}, std::nullopt, 1.0, false});
  check_uniform_grads({4, "ste", {0.3f}, {1.9f}, std::nullopt, 1.0, true});   // min > 0
  check_uniform_grads({4, "ste", {-2.1f}, {-0.2f}, std::nullopt, 1.0, false});  // max < 0
  check_uniform_grads({3, "ste", {-0.8f, 0.3f, -2.0f}, {1.3f, 1.7f, -0.4f}, 1, 1.0, false});
}

TEST(UniformQuantGrad, LsqMatchesTorchReference) {
  check_uniform_grads({8, "lsq", {-0.8f}, {1.3f}, std::nullopt, 0.2, true});
  check_uniform_grads({4, "lsq", {0.3f}, {1.9f}, std::nullopt, 0.5, false});
  check_uniform_grads({4, "lsq", {-2.1f}, {-0.2f}, std::nullopt, 1.0, false});
  check_uniform_grads({3, "lsq", {-0.8f, 0.3f, -2.0f}, {1.3f, 1.7f, -0.4f}, 1, 0.3, false});
}

// Training can move min_range past max_range; the op then uses the range in order and each end's
// gradient reaches the variable it came from (the core's trainable::trained_range).
TEST(UniformQuantGrad, CrossedRangeIsUsedInOrder) {
  ::torch::manual_seed(31);
  const at::Tensor x0 = ::torch::randn({5, 3, 4});
  const at::Tensor dy = ::torch::randn({5, 3, 4});
  for (const std::string mode : {"ste", "lsq"}) {
    auto run = [&](std::vector<float> first, std::vector<float> second) {
      at::Tensor a = ::torch::tensor(first).requires_grad_(true);
      at::Tensor b = ::torch::tensor(second).requires_grad_(true);
      at::Tensor x = x0.clone().requires_grad_(true);
      const at::Tensor y = qi::torch::uniform_quant(x, a, b, 2, 1, mode, 0.5, false);
      (y * dy).sum().backward();
      return std::make_tuple(y.detach(), a.grad(), b.grad(), x.grad());
    };
    const auto [y, g_lo, g_hi, gx] = run({-0.7f, 0.2f, -1.5f}, {1.1f, 2.0f, -0.3f});
    const auto [y_c, g_a, g_b, gx_c] = run({1.1f, 2.0f, -0.3f}, {-0.7f, 0.2f, -1.5f});
    EXPECT_TRUE(bit_equal(y_c, y)) << mode;
    EXPECT_TRUE(bit_equal(gx_c, gx)) << mode;
    EXPECT_TRUE(bit_equal(g_a, g_hi)) << mode;
    EXPECT_TRUE(bit_equal(g_b, g_lo)) << mode;
    EXPECT_GT(g_lo.abs().sum().item<double>(), 0.0) << mode;
  }
}

// ---- soft rounding ------------------------------------------------------------------------------

at::Tensor rectified_sigmoid_ref(const at::Tensor& alpha) {
  return ::torch::clamp(::torch::sigmoid(alpha) * 1.2 - 0.1, 0, 1);
}

// alpha in [-2.5, -0.2] U [0.2, 2.5]: away from h = 0.5 (the eval threshold) and from the clip.
at::Tensor alpha_input(at::IntArrayRef sizes, uint64_t seed) {
  ::torch::manual_seed(seed);
  const at::Tensor mag = ::torch::rand(sizes) * 2.3 + 0.2;
  const at::Tensor sign = ::torch::where(::torch::rand(sizes) < 0.5, -1.0, 1.0).to(::torch::kFloat);
  return mag * sign;
}

// 4-bit symmetric grids: delta = threshold / 8, integers [-8, 7].
struct SoftFixture {
  at::Tensor w, alpha, delta, threshold, dy;
  double qmin = -8, qmax = 7;
  int64_t axis = 0;
  SoftFixture() {
    delta = ::torch::tensor({0.1f, 0.25f, 0.05f});
    threshold = delta * 8;
    ::torch::manual_seed(21);
    // Inside the grid, so that the clip does not act (the finite differences see its flat part).
    const at::Tensor k = ::torch::randint(-7, 6, {3, 8}, ::torch::kFloat);
    const at::Tensor f = ::torch::rand({3, 8}) * 0.9 + 0.05;
    w = (k + f) * delta.reshape({3, 1});
    alpha = alpha_input({3, 8}, 22);
    dy = ::torch::randn({3, 8});
  }
  at::Tensor op(const at::Tensor& a, bool training) const {
    return qi::torch::soft_round(w, a, threshold, 4, false, axis, training);
  }
  at::Tensor ref(const at::Tensor& a, bool training) const {
    const at::Tensor d = delta.reshape({3, 1});
    at::Tensor h = rectified_sigmoid_ref(a);
    if (!training) h = (h >= 0.5).to(::torch::kFloat);
    // As MCT's torch soft rounding: w_int without gradient, ste_clip.
    return d * ste_clip(::torch::floor(w / d) + h, qmin, qmax);
  }
};

// ---- the formats' op ----------------------------------------------------------------------------

// FLOAT E4M3/E5M2 with a scale per channel along axis 0 of [4, 40]: the forward is torch's float8
// cast, and the gradients are those of the autograd formulation E * (c + (F(c) - c).detach())
// (LSQ: c = clamp(x / E, -max, max), a hard clip) or E * (u + (F(clamp(u)) - u).detach()) (STE),
// with LSQ's gradient scale on E.
void check_format_float8(at::ScalarType f8, double largest, const char* format,
                         const std::string& mode, double g) {
  ::torch::manual_seed(21);
  const at::Tensor x0 = ::torch::randn({4, 40}) * 3;
  const at::Tensor s0 = ::torch::tensor({0.012f, 0.015f, 0.013f, 0.014f}) * (448.0 / largest);
  const at::Tensor dy = ::torch::randn({4, 40});
  const at::Tensor x = x0.clone().requires_grad_(), s = s0.clone().requires_grad_();
  const at::Tensor y = qi::torch::format_quant(x, s, at::empty({0}), format, "scale", 0, mode, g);
  const at::Tensor e0 = s0.reshape({4, 1});
  EXPECT_TRUE(bit_equal(y, ::torch::clamp(x0 / e0, -largest, largest).to(f8).to(at::kFloat) * e0));
  (y * dy).sum().backward();

  const at::Tensor xr = x0.clone().requires_grad_(), sr = s0.clone().requires_grad_();
  const at::Tensor e = grad_scale(sr, g).reshape({4, 1});
  const at::Tensor u = xr / e;
  const auto f = [&](const at::Tensor& v) { return v.to(f8).to(at::kFloat); };
  const at::Tensor c = mode == "lsq" ? ::torch::clamp(u, -largest, largest) : u;
  const at::Tensor yr = e * (c + (f(::torch::clamp(c, -largest, largest)) - c).detach());
  (yr * dy).sum().backward();
  // dx: dy, masked by the clip for LSQ (exact; the reference's dy * E / E is not).
  const at::Tensor inside = (x0 / e0).abs() <= largest;
  EXPECT_TRUE(bit_equal(x.grad(), mode == "lsq" ? ::torch::where(inside, dy, 0.f) : dy));
  const at::Tensor mag = (dy.abs() * (u.abs() + largest)).sum(1).detach() * g;
  EXPECT_TRUE(all_close(s.grad(), sr.grad(), 1e-4, sum_tol(mag)));
  EXPECT_GT(sr.grad().abs().sum().item<double>(), 0.0);
  if (mode == "lsq") {
    EXPECT_GT((~inside).sum().item<int64_t>(), 0);  // some elements clip
  }
}

TEST(FormatQuantOp, Float8MatchesTorchsCastAndAutogradReference) {
  check_format_float8(at::kFloat8_e4m3fn, 448.0, "E4M3", "ste", 1.0);
  check_format_float8(at::kFloat8_e4m3fn, 448.0, "E4M3", "lsq", 0.37);
  check_format_float8(at::kFloat8_e5m2, 57344.0, "E5M2", "lsq", 1.0);
}

TEST(SoftRoundOp, ForwardMatchesReference) {
  const SoftFixture s;
  EXPECT_TRUE(all_close(s.op(s.alpha, true), s.ref(s.alpha, true), 1e-6, 1e-7));
  EXPECT_TRUE(bit_equal(s.op(s.alpha, false), s.ref(s.alpha, false)));
  // Hard rounding puts every value on the grid.
  const at::Tensor v = s.op(s.alpha, false) / s.delta.reshape({3, 1});
  EXPECT_TRUE(all_close(v, ::torch::round(v), 0, 1e-5));
  // Clipping: far outside values land on the ends.
  const at::Tensor big = ::torch::full({3, 8}, 100.f);
  EXPECT_TRUE(all_close(qi::torch::soft_round(big, s.alpha, s.threshold, 4, false, 0, false),
                        (s.delta * s.qmax).reshape({3, 1}).expand({3, 8}), 0, 0));
}

TEST(SoftRoundOp, UniformOffsetUsesTheRoundedZeroPoint) {
  // The 4-bit uniform grid over [-0.5, 1.375]: delta 0.125, offset -0.5 (already on the grid):
  // q = delta * clip(floor((w - a) / delta) + h, 0, 15) + a.
  ::torch::manual_seed(3);
  const at::Tensor w = ::torch::rand({20}) * 1.8 - 0.5;
  const at::Tensor alpha = alpha_input({20}, 4);
  const at::Tensor q = qi::torch::soft_round(w, alpha, ::torch::tensor({-0.5f}), 4, false,
                                             std::nullopt, false, ::torch::tensor({1.375f}));
  const at::Tensor h = (rectified_sigmoid_ref(alpha) >= 0.5).to(::torch::kFloat);
  const at::Tensor ref = 0.125f * ::torch::clamp(::torch::floor((w + 0.5f) / 0.125f) + h, 0, 15) - 0.5f;
  EXPECT_TRUE(bit_equal(q, ref));
}

TEST(SoftRoundGrad, AlphaMatchesTorchReference) {
  const SoftFixture s;
  at::Tensor a = s.alpha.clone().requires_grad_(true);
  (s.op(a, true) * s.dy).sum().backward();
  at::Tensor ar = s.alpha.clone().requires_grad_(true);
  (s.ref(ar, true) * s.dy).sum().backward();
  EXPECT_TRUE(all_close(a.grad(), ar.grad(), 1e-4, 1e-7));
  // The clip passes the gradient (ste_clip) also for weights outside the grid.
  at::Tensor a2 = s.alpha.clone().requires_grad_(true);
  const at::Tensor big = ::torch::full({3, 8}, 100.f);
  (qi::torch::soft_round(big, a2, s.threshold, 4, false, 0, true) * s.dy).sum().backward();
  EXPECT_TRUE(all_close(a2.grad(), ar.grad(), 1e-4, 1e-7));
  // No gradient reaches w (floor(w / delta) is computed without gradient).
  at::Tensor w = s.w.clone().requires_grad_(true);
  at::Tensor a3 = s.alpha.clone().requires_grad_(true);
  (qi::torch::soft_round(w, a3, s.threshold, 4, false, 0, true) * s.dy).sum().backward();
  EXPECT_FALSE(w.grad().defined() && w.grad().abs().sum().item<double>() != 0.0);
}

// Central differences in float32: a loose check that the analytic gradient is the derivative
// where the function is smooth (this is the gradcheck of the smooth ops).
template <typename F>
void check_finite_differences(F&& f, const at::Tensor& x0, const at::Tensor& analytic, double eps,
                              double rtol, double atol) {
  const at::Tensor x = x0.detach().clone().contiguous();
  at::Tensor flat = x.view({-1});
  const std::vector<float> an = values(analytic);
  for (int64_t i = 0; i < flat.numel(); ++i) {
    const float orig = flat[i].item<float>();
    flat[i] = orig + static_cast<float>(eps);
    const double fp = f(x);
    flat[i] = orig - static_cast<float>(eps);
    const double fm = f(x);
    flat[i] = orig;
    const double numeric = (fp - fm) / (2 * eps);
    EXPECT_NEAR(numeric, an[static_cast<size_t>(i)], atol + rtol * std::fabs(numeric))
        << "element " << i;
  }
}

TEST(SoftRoundGrad, AlphaMatchesFiniteDifferences) {
  const SoftFixture s;
  at::Tensor a = s.alpha.clone().requires_grad_(true);
  (s.op(a, true) * s.dy).sum().backward();
  check_finite_differences(
      [&](const at::Tensor& alpha) {
        ::torch::NoGradGuard ng;
        return (s.op(alpha, true).to(::torch::kDouble) * s.dy.to(::torch::kDouble)).sum().item<double>();
      },
      s.alpha, a.grad(), 1e-2, 2e-2, 2e-4);
}

TEST(SoftRoundRegularization, ValueAndGradientMatchReference) {
  const at::Tensor alpha0 = alpha_input({3, 8}, 31);
  for (double beta : {2.0, 3.5, 20.0}) {
    SCOPED_TRACE(::testing::Message() << "beta=" << beta);
    at::Tensor a = alpha0.clone().requires_grad_(true);
    const at::Tensor reg = qi::torch::soft_round_regularization(a, beta);
    EXPECT_EQ(reg.dim(), 0);
    (reg * 1.5).backward();
    at::Tensor ar = alpha0.clone().requires_grad_(true);
    const at::Tensor h = rectified_sigmoid_ref(ar);
    const at::Tensor ref = (1 - ::torch::pow((2 * (h - 0.5)).abs(), beta)).sum();
    (ref * 1.5).backward();
    EXPECT_NEAR(reg.item<double>(), ref.item<double>(), 1e-5 * std::fabs(ref.item<double>()) + 1e-6);
    EXPECT_TRUE(all_close(a.grad(), ar.grad(), 1e-4, 1e-6));
  }
}

TEST(SoftRoundRegularization, GradientMatchesFiniteDifferences) {
  const at::Tensor alpha0 = alpha_input({2, 6}, 41);
  for (double beta : {2.0, 3.5}) {
    SCOPED_TRACE(::testing::Message() << "beta=" << beta);
    at::Tensor a = alpha0.clone().requires_grad_(true);
    qi::torch::soft_round_regularization(a, beta).backward();
    check_finite_differences(
        [&](const at::Tensor& alpha) {
          return qi::torch::soft_round_regularization(alpha, beta).item<double>();
        },
        alpha0, a.grad(), 1e-2, 2e-2, 2e-3);
  }
}

}  // namespace
