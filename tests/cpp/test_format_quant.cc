// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The format op of the trainable FLOAT, MX and NVFP4 quantizers (qi::trainable::format_quant_*)
// against a naive reference written from its documented formulas: the forward bit for bit, the
// input gradient exactly and the parameter gradients to float64 rounding.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "qi/qi.h"

namespace {

using qi::ConstTensorView;
using qi::Shape;
using qi::TensorView;
using qi::trainable::FormatQuantArgs;
using qi::trainable::FormatScaling;
using qi::trainable::GradMode;
using testing::HasSubstr;

struct Fmt {
  int ebits, mbits;
  float max;
};
constexpr Fmt kE2M1{2, 1, 6.f}, kE4M3{4, 3, 448.f};

// v (|v| <= max) rounded to the format, half to even, subnormals kept.
float round_to(float v, const Fmt& f) {
  if (v == 0.f || std::isnan(v)) return v;
  const int emin = 2 - (1 << (f.ebits - 1));  // 1 - bias
  int e = 0;
  std::frexp(std::fabs(v), &e);  // |v| = m * 2^e, m in [0.5, 1)
  const double q = std::ldexp(1.0, std::max(e - 1, emin) - f.mbits);
  return static_cast<float>(std::nearbyint(v / q) * q);
}

// One element's forward, gradient terms and dx under a divisor/multiplier pair.
struct Terms {
  float y, dx;
  double d;  // dy * dy/dE in element units, times `weight` (MX: the block's multiplier)
};
Terms terms(float x, float g, float divisor, float multiplier, const Fmt& f, bool lsq,
            double weight = 1.0) {
  const float u = x / divisor;
  const float q = round_to(std::fmin(std::fmax(u, -f.max), f.max), f);
  const bool inside = std::fabs(u) <= f.max;
  Terms t{q * multiplier, g, 0.0};
  if (lsq) {
    t.d = weight * double(g) * (inside ? double(q) - u : double(q));
    t.dx = inside ? g : 0.f;
  } else {
    t.d = weight * double(g) * (double(q) - u);
  }
  return t;
}

std::vector<float> random(size_t n, float lo, float hi, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& e : v) e = u(rng);
  return v;
}

// The forward and the backward of a call on [rows, cols] x and dy.
struct Run {
  std::vector<float> y, dx;
  qi::trainable::FormatGrads g;
};
Run run(const qi::trainable::FormatCall& call, const std::vector<float>& x,
        const std::vector<float>& dy, const Shape& shape) {
  Run r{std::vector<float>(x.size()), std::vector<float>(x.size()), {}};
  qi::trainable::format_quant_forward(call, ConstTensorView(x.data(), shape),
                                      TensorView(r.y.data(), shape));
  r.g = qi::trainable::format_quant_backward(call, ConstTensorView(x.data(), shape),
                                             ConstTensorView(dy.data(), shape),
                                             TensorView(r.dx.data(), shape));
  return r;
}

void expect_bits(const std::vector<float>& got, const std::vector<float>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_TRUE(got[i] == want[i] || (std::isnan(got[i]) && std::isnan(want[i])))
        << i << ": " << got[i] << " vs " << want[i];
}

TEST(FormatQuant, ScaleGroupedMatchesNaive) {
  // [3, 40] in groups of 16 along axis 1 (16, 16, 8): 9 scales; E2M1 with clipping.
  const int64_t R = 3, C = 40, G = 3;
  const auto x = random(R * C, -2.f, 2.f, 1), dy = random(R * C, -1.f, 1.f, 2);
  std::vector<double> s;
  for (float v : random(R * G, 0.05f, 0.4f, 3)) s.push_back(v);
  for (auto mode : {GradMode::kSte, GradMode::kLsq}) {
    FormatQuantArgs a;
    a.format = "E2M1";
    a.channel_axis = 0;
    a.group_size = 16;
    a.group_axis = 1;
    a.mode = mode;
    a.grad_scale = 0.5;
    const auto [y, dx, g] =
        run(qi::trainable::format_quant_call("t", {R, C}, s, {}, a), x, dy, {R, C});
    std::vector<float> want_y(x.size()), want_dx(x.size());
    std::vector<double> want_d(s.size(), 0.0);
    for (int64_t r = 0; r < R; ++r)
      for (int64_t c = 0; c < C; ++c) {
        const size_t i = static_cast<size_t>(r * C + c), k = static_cast<size_t>(r * G + c / 16);
        const float e = static_cast<float>(s[k]);
        const Terms t = terms(x[i], dy[i], e, e, kE2M1, mode == GradMode::kLsq);
        want_y[i] = t.y;
        want_dx[i] = t.dx;
        want_d[k] += t.d;
      }
    expect_bits(y, want_y);
    expect_bits(dx, want_dx);
    ASSERT_EQ(g.d_scale.size(), s.size());
    EXPECT_TRUE(g.d_tensor_scale.empty());
    for (size_t k = 0; k < s.size(); ++k)
      EXPECT_NEAR(g.d_scale[k], 0.5 * want_d[k], 1e-9 * (1 + std::fabs(want_d[k]))) << k;
  }
}

TEST(FormatQuant, ScalePerChannelStridedEqualsContiguous) {
  // E4M3 per channel along axis 0 of [4, 300], and the same data as a transposed view.
  const int64_t C = 4, L = 300;
  const auto x = random(C * L, -50.f, 50.f, 4), dy = random(C * L, -1.f, 1.f, 5);
  const std::vector<double> s = {0.01, 0.05, 0.1, 1.0};
  FormatQuantArgs a;
  a.channel_axis = 0;
  a.mode = GradMode::kLsq;
  const auto call = qi::trainable::format_quant_call("t", {C, L}, s, {}, a);
  std::vector<float> dx(x.size());
  const auto g = qi::trainable::format_quant_backward(call, ConstTensorView(x.data(), {C, L}),
                                                      ConstTensorView(dy.data(), {C, L}),
                                                      TensorView(dx.data(), {C, L}));
  std::vector<float> xt(x.size()), gt(x.size()), dxt(x.size());
  for (int64_t c = 0; c < C; ++c)
    for (int64_t i = 0; i < L; ++i) {
      xt[i * C + c] = x[c * L + i];
      gt[i * C + c] = dy[c * L + i];
    }
  a.channel_axis = 1;
  const auto call_t = qi::trainable::format_quant_call("t", {L, C}, s, {}, a);
  // A [C, L] view of the transposed buffers: strides (1, C).
  const auto gt_sums = qi::trainable::format_quant_backward(
      call, ConstTensorView(xt.data(), {C, L}, {1, C}), ConstTensorView(gt.data(), {C, L}, {1, C}),
      TensorView(dxt.data(), {C, L}, {1, C}));
  for (int64_t c = 0; c < C; ++c) {
    EXPECT_NEAR(gt_sums.d_scale[c], g.d_scale[c], 1e-9 * (1 + std::fabs(g.d_scale[c])));
    for (int64_t i = 0; i < L; ++i) ASSERT_EQ(dxt[i * C + c], dx[c * L + i]);
  }
  EXPECT_EQ(call_t.axis, std::optional<int64_t>(1));
}

TEST(FormatQuant, Fp8BlockScalesMatchNaive) {
  // NVFP4 with learned block scales: [2, 48] in blocks of 16 along axis 1, tensor scale 0.7.
  const int64_t R = 2, C = 48, G = 3;
  const auto x = random(R * C, -1.f, 1.f, 6), dy = random(R * C, -1.f, 1.f, 7);
  std::vector<double> b;
  for (float v : random(R * G, 0.05f, 0.4f, 8)) b.push_back(v);
  b[4] = 1e-3;    // below 2^-6: clamped, no gradient
  b[1] = 0.0157;  // above 2^-6 but rounded to it: still learns
  const double t = 0.7;
  FormatQuantArgs a;
  a.format = "E2M1";
  a.scaling = FormatScaling::kFp8Scale;
  a.channel_axis = 0;
  a.group_axis = 1;
  a.mode = GradMode::kLsq;
  const auto call = qi::trainable::format_quant_call("t", {R, C}, b, {t}, a);
  const auto [y, dx, g] = run(call, x, dy, {R, C});
  std::vector<float> want_y(x.size());
  std::vector<double> d_e(b.size(), 0.0), s8(b.size());
  for (size_t k = 0; k < b.size(); ++k)
    s8[k] = round_to(std::fmin(std::fmax(static_cast<float>(b[k]), 0.015625f), 448.f), kE4M3);
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) {
      const size_t i = static_cast<size_t>(r * C + c), k = static_cast<size_t>(r * G + c / 16);
      const float e = static_cast<float>(t) * static_cast<float>(s8[k]);
      const Terms tt = terms(x[i], dy[i], e, e, kE2M1, true);
      want_y[i] = tt.y;
      ASSERT_EQ(dx[i], tt.dx);
      d_e[k] += tt.d;
    }
  expect_bits(y, want_y);
  double d_t = 0;
  for (size_t k = 0; k < b.size(); ++k) {
    const double want = k == 4 ? 0.0 : d_e[k] * static_cast<float>(t);
    EXPECT_NEAR(g.d_scale[k], want, 1e-6 * (1 + std::fabs(want))) << k;
    d_t += d_e[k] * s8[k];
  }
  ASSERT_EQ(g.d_tensor_scale.size(), 1u);
  EXPECT_NEAR(g.d_tensor_scale[0], d_t, 1e-6 * (1 + std::fabs(d_t)));
  EXPECT_EQ(call.block_scale[4], 0.015625f);
  EXPECT_EQ(call.block_scale[1], 0.015625f);
  EXPECT_NE(g.d_scale[1], 0.0);

  // tensor_grad_scale scales the tensor scale's gradient only; grad_scale_axis divides both.
  a.grad_scale = 0.5;
  a.tensor_grad_scale = 2e-3;
  a.grad_scale_axis = 0;
  const auto scaled = qi::trainable::format_quant_call("t", {R, C}, b, {t}, a);
  const auto [y2, dx2, g2] = run(scaled, x, dy, {R, C});
  expect_bits(y2, y);
  EXPECT_EQ(dx2, dx);
  const double root = std::sqrt(static_cast<double>(R));
  for (size_t k = 0; k < b.size(); ++k)
    EXPECT_DOUBLE_EQ(g2.d_scale[k], g.d_scale[k] * 0.5 / root) << k;
  EXPECT_DOUBLE_EQ(g2.d_tensor_scale[0], g.d_tensor_scale[0] * 2e-3 / root);
}

TEST(FormatQuant, MxAndNvfp4FollowTheirInferableQuantizers) {
  // Data-scaled blocks: the forward equals the inferable quantizer; MX's pre-scale gradient is
  // the block multiplier times the element terms.
  const int64_t R = 5, C = 64;
  auto x = random(R * C, -3.f, 3.f, 9);
  x[70] = std::nanf("");  // block 1 of row 1 becomes NaN
  const auto dy = random(R * C, -1.f, 1.f, 10);
  for (auto mode : {GradMode::kSte, GradMode::kLsq}) {
    FormatQuantArgs a;
    a.scaling = FormatScaling::kMx;
    a.group_size = 32;
    a.mode = mode;
    const auto call = qi::trainable::format_quant_call("t", {R, C}, {1.0}, {}, a);
    std::vector<float> y(x.size()), want(x.size()), dx(x.size());
    qi::trainable::format_quant_forward(call, ConstTensorView(x.data(), {R, C}),
                                        TensorView(y.data(), {R, C}));
    qi::WeightsMXInferableQuantizer("E4M3", 32, -1).apply(ConstTensorView(x.data(), {R, C}),
                                                          TensorView(want.data(), {R, C}));
    expect_bits(y, want);
    const auto g = qi::trainable::format_quant_backward(call, ConstTensorView(x.data(), {R, C}),
                                                        ConstTensorView(dy.data(), {R, C}),
                                                        TensorView(dx.data(), {R, C}));
    ASSERT_EQ(g.d_scale.size(), 1u);
    EXPECT_TRUE(std::isnan(g.d_scale[0]));  // the NaN block's terms
    // Without the NaN: the naive sum over blocks of X * terms.
    auto clean = x;
    clean[70] = 0.5f;
    double want_d = 0;
    for (int64_t blk = 0; blk < R * C / 32; ++blk) {
      float amax = 0;
      for (int64_t i = 0; i < 32; ++i) amax = std::fmax(amax, std::fabs(clean[blk * 32 + i]));
      int e = 0;
      std::frexp(amax, &e);
      const float X = std::ldexp(1.f, (e - 1) - 8);  // emax(E4M3) = 8
      for (int64_t i = 0; i < 32; ++i)
        want_d += terms(clean[blk * 32 + i], dy[blk * 32 + i], X, X, kE4M3,
                        mode == GradMode::kLsq, X).d;
    }
    const auto g2 = qi::trainable::format_quant_backward(
        call, ConstTensorView(clean.data(), {R, C}), ConstTensorView(dy.data(), {R, C}),
        TensorView());
    EXPECT_NEAR(g2.d_scale[0], want_d, 1e-9 * (1 + std::fabs(want_d)));
  }
  FormatQuantArgs a;
  a.format = "E2M1";
  a.scaling = FormatScaling::kNvfp4;
  a.group_axis = 0;  // blocks along rows: [32, 3]
  a.mode = GradMode::kLsq;
  const auto xs = random(32 * 3, -3.f, 3.f, 11), gs = random(32 * 3, -1.f, 1.f, 12);
  const auto call = qi::trainable::format_quant_call("t", {32, 3}, {}, {0.01}, a);
  std::vector<float> y(xs.size()), want(xs.size()), dx(xs.size());
  qi::trainable::format_quant_forward(call, ConstTensorView(xs.data(), {32, 3}),
                                      TensorView(y.data(), {32, 3}));
  qi::WeightsNVFP4InferableQuantizer(0.01, 0).apply(ConstTensorView(xs.data(), {32, 3}),
                                                    TensorView(want.data(), {32, 3}));
  expect_bits(y, want);
  const auto g = qi::trainable::format_quant_backward(call, ConstTensorView(xs.data(), {32, 3}),
                                                      ConstTensorView(gs.data(), {32, 3}),
                                                      TensorView(dx.data(), {32, 3}));
  EXPECT_TRUE(g.d_scale.empty());
  ASSERT_EQ(g.d_tensor_scale, std::vector<double>{0.0});
  for (size_t i = 0; i < dx.size(); ++i) EXPECT_TRUE(dx[i] == gs[i] || dx[i] == 0.f);
}

TEST(FormatQuant, RejectsBadArguments) {
  auto fails = [](const Shape& x, std::vector<double> s, std::vector<double> t,
                  const FormatQuantArgs& a, const char* message) {
    try {
      qi::trainable::format_quant_call("op", x, s, t, a);
      ADD_FAILURE() << "no error; expected: " << message;
    } catch (const qi::Error& e) {
      EXPECT_THAT(e.what(), HasSubstr(message));
    }
  };
  FormatQuantArgs a;
  EXPECT_THROW(qi::trainable::parse_format_scaling("op", "blocks"), qi::Error);
  try {
    qi::trainable::parse_format_scaling("op", "blocks");
  } catch (const qi::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("op: scaling must be one of scale, fp8_scale, mx, nvfp4, "
                                    "got \"blocks\""));
  }
  a.format = "E9M9";
  fails({4}, {1.0}, {}, a, "op: format must be one of E4M3, E5M2, E3M2, E2M3, E2M1, got \"E9M9\"");
  a.format = "E4M3";
  fails({4}, {1.0}, {1.0}, a,
        "op: tensor_scale must be empty for scaling \"scale\", got size 1");
  fails({4}, {0.0}, {}, a, "op: scale must be > 0, got 0 at index 0");
  fails({4}, {1.0, 2.0}, {}, a, "op: scale must hold one value when channel_axis is None, got 2");
  a.channel_axis = 0;
  fails({4, 2}, {1.0, 2.0}, {}, a, "op: scale holds 2 values but the tensor has 4 channels");
  a.scaling = FormatScaling::kMx;
  fails({4, 32}, {1.0}, {}, a, "op: scaling \"mx\" computes its scales per block from the data "
                               "and takes no channel_axis");
  a.channel_axis.reset();
  fails({4, 32}, {1.0, 1.0}, {}, a, "op: scale (the MX pre-scale) must hold one value, got 2");
  fails({4, 30}, {1.0}, {}, a, "block");
  a.scaling = FormatScaling::kNvfp4;
  fails({4, 32}, {}, {}, a, "op: scaling \"nvfp4\" is NVFP4's and takes format \"E2M1\", got "
                            "\"E4M3\"");
  a.format = "E2M1";
  fails({4, 32}, {1.0}, {}, a, "op: scale must be empty for scaling \"nvfp4\"");
  fails({4, 32}, {}, {-1.0}, a, "op: tensor_scale must be > 0, got -1 at index 0");
  a.group_size = 32;
  fails({4, 32}, {}, {}, a, "op: NVFP4 blocks hold 16 elements, got group_size 32");
  a.group_size.reset();
  a.scaling = FormatScaling::kFp8Scale;
  a.channel_axis = 0;
  a.group_axis = 1;
  fails({4, 32}, {1.0}, {}, a, "op: the quantizer holds 1 values (one per channel and group) but the tensor has 4 "
        "channels along channel_axis 0 x 2 groups");
  fails({4, 32}, std::vector<double>(8, NAN), {}, a, "op: scale must be finite, got nan at index 0");
  fails({4, 32}, std::vector<double>(8, 0.1), {1.0, 2.0}, a,
        "op: tensor_scale must hold at most one value, got 2");
  a.tensor_grad_scale = INFINITY;
  fails({4, 32}, std::vector<double>(8, 0.1), {1.0}, a,
        "op: tensor_grad_scale must be finite, got inf");
  a.scaling = FormatScaling::kScale;
  a.format = "E4M3";
  a.tensor_grad_scale = 1.0;
  fails({4, 32}, std::vector<double>(8, 0.1), {}, a,
        "op: tensor_grad_scale applies to scaling \"fp8_scale\" (a learned tensor scale) only, "
        "got scaling \"scale\"");
}

}  // namespace
