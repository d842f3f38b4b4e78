// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Calibration (thresholds and ranges from data) and the trainable math of the core.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "qi/qi.h"

namespace {

using qi::ConstTensorView;
using qi::Shape;
using testing::HasSubstr;

TEST(Calibration, ThresholdMaxPerTensorAndPerChannel) {
  const std::vector<float> x = {1, -3, 2, 0.5f, 0, 0, -7, 4};  // [2, 4]
  EXPECT_EQ(qi::calibration::threshold_max(ConstTensorView(x.data(), {8}), std::nullopt),
            std::vector<double>{7.0});
  const auto rows = qi::calibration::threshold_max(ConstTensorView(x.data(), {2, 4}), 0);
  EXPECT_EQ(rows, (std::vector<double>{3.0, 7.0}));
  const auto cols = qi::calibration::threshold_max(ConstTensorView(x.data(), {2, 4}), 1);
  EXPECT_EQ(cols, (std::vector<double>{1.0, 3.0, 7.0, 4.0}));
}

TEST(Calibration, ThresholdMaxAllZeroChannelGetsTheFloor) {
  const std::vector<float> x = {0, 0, 1, -2};
  const auto t = qi::calibration::threshold_max(ConstTensorView(x.data(), {2, 2}), 0, 0.25);
  EXPECT_EQ(t, (std::vector<double>{0.25, 2.0}));
}

TEST(Calibration, RangeMinMaxIgnoresNanAndWidensEmptyRanges) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> x = {nan, -1, 3, 2, 2, 2};
  const auto r = qi::calibration::range_min_max(ConstTensorView(x.data(), {2, 3}), 0, 0.5);
  EXPECT_EQ(r.min, (std::vector<double>{-1.0, 1.5}));
  EXPECT_EQ(r.max, (std::vector<double>{3.0, 2.5}));
}

// Squared quantization error of x under a symmetric 4-bit quantizer with threshold t.
double mse_at(const std::vector<float>& x, double t) {
  qi::WeightsSymmetricInferableQuantizer q(4, {t}, false);
  const auto y = q.apply(x, Shape{static_cast<int64_t>(x.size())});
  double e = 0;
  for (size_t i = 0; i < x.size(); ++i) e += (y[i] - x[i]) * (y[i] - x[i]);
  return e;
}

TEST(Calibration, MseSearchBeatsTheMaxOnHeavyTails) {
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<float> x(20000);
  for (auto& v : x) v = n(rng);
  x[0] = 40.f;  // one outlier makes max a poor threshold
  const ConstTensorView v(x.data(), {static_cast<int64_t>(x.size())});
  const double t_max = qi::calibration::threshold_max(v, std::nullopt)[0];
  const double t_mse = qi::calibration::threshold_mse(v, std::nullopt, 4, true, false)[0];
  EXPECT_LT(t_mse, t_max);
  EXPECT_LT(mse_at(x, t_mse), 0.5 * mse_at(x, t_max));
  const double t_pot = qi::calibration::threshold_mse(v, std::nullopt, 4, true, true)[0];
  int e = 0;
  EXPECT_EQ(std::frexp(t_pot, &e), 0.5) << t_pot;
}

TEST(Calibration, MseRejectsBadArguments) {
  const std::vector<float> x = {1, 2};
  try {
    qi::calibration::threshold_mse(ConstTensorView(x.data(), {2}), std::nullopt, 1, true, false);
    FAIL();
  } catch (const qi::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("threshold_mse: num_bits must be in [2, 16], got 1"));
  }
  try {
    qi::calibration::threshold_max(ConstTensorView(x.data(), {2}), 3);
    FAIL();
  } catch (const qi::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("calibration: channel_axis must be in [0, 1), got 3"));
  }
}

TEST(Calibration, HistogramWidensByWholeBinsAndKeepsEveryCount) {
  qi::calibration::Histogram h(64);
  std::vector<float> a = {0.f, 0.25f, 0.5f, 1.f};
  h.update(ConstTensorView(a.data(), {4}));
  const double w0 = h.width(0);
  std::vector<float> b = {-3.f, 5.f, 0.75f};  // outside on both sides
  h.update(ConstTensorView(b.data(), {3}));
  EXPECT_EQ(h.counts(), std::vector<double>{7.0});
  const double ratio = h.width(0) / w0;
  EXPECT_EQ(std::exp2(std::round(std::log2(ratio))), ratio);  // a power of two
  EXPECT_LE(h.lower(0), -3.0);
  EXPECT_GE(h.lower(0) + 64 * h.width(0), 5.0);
  const auto r = h.range_min_max();
  EXPECT_EQ(r.min, std::vector<double>{-3.0});
  EXPECT_EQ(r.max, std::vector<double>{5.0});
  EXPECT_EQ(h.threshold_max(), std::vector<double>{5.0});
}

TEST(Calibration, HistogramPercentileAndMseFollowTheData) {
  std::mt19937 rng(5);
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<float> x(40000);
  for (auto& v : x) v = n(rng);
  x[0] = 50.f;
  qi::calibration::Histogram h(4096);
  h.update(ConstTensorView(x.data(), {20000}));
  h.update(ConstTensorView(x.data() + 20000, {20000}));
  std::vector<float> sorted(x.size());
  for (size_t i = 0; i < x.size(); ++i) sorted[i] = std::fabs(x[i]);
  std::sort(sorted.begin(), sorted.end());
  const double p99 = sorted[static_cast<size_t>(0.99 * (x.size() - 1))];
  EXPECT_NEAR(h.threshold_percentile(99.0)[0], p99, 2 * h.width(0));
  const ConstTensorView v(x.data(), {40000});
  const double exact = qi::calibration::threshold_mse(v, std::nullopt, 4, true, false)[0];
  const double from_hist = h.threshold_mse(4, true, false)[0];
  EXPECT_LT(mse_at(x, from_hist), 1.02 * mse_at(x, exact));
  const double kl = h.threshold_kl(8, true)[0];
  EXPECT_GT(kl, 2.0);
  EXPECT_LT(kl, 50.0);
}

TEST(Calibration, HistogramPerChannelAndErrors) {
  const std::vector<float> x = {1, -2, 3, 10, 20, 30};  // [2, 3], channels along axis 0
  qi::calibration::Histogram h(16, 0);
  h.update(ConstTensorView(x.data(), {2, 3}));
  EXPECT_EQ(h.threshold_max(), (std::vector<double>{3.0, 30.0}));
  qi::calibration::Histogram empty(16);
  try {
    empty.threshold_max();
    FAIL();
  } catch (const qi::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("Histogram::threshold_max: no data yet"));
  }
  try {
    h.update(ConstTensorView(x.data(), {3, 2}));
    FAIL();
  } catch (const qi::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("Histogram: a batch has 3 channels, the earlier ones 2"));
  }
  try {
    h.threshold_percentile(0.0);
    FAIL();
  } catch (const qi::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("percentile must be in (0, 100], got 0"));
  }
}

TEST(Calibration, RangeMseShrinksAroundOutliers) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> x(10000);
  for (auto& v : x) v = u(rng);
  x[0] = 30.f;
  const auto r = qi::calibration::range_mse(ConstTensorView(x.data(), {10000}), std::nullopt, 4);
  EXPECT_LT(r.max[0], 30.0);
  EXPECT_GT(r.max[0], 0.5);
}

TEST(TrainableMath, PowerOfTwoCeil) {
  EXPECT_EQ(qi::trainable::power_of_two_ceil(3.0), 4.0);
  EXPECT_EQ(qi::trainable::power_of_two_ceil(4.0), 4.0);
  EXPECT_EQ(qi::trainable::power_of_two_ceil(0.0, qi::trainable::kMinThreshold),
            qi::trainable::kMinThreshold);
}

TEST(TrainableMath, LinearAnnealing) {
  const qi::trainable::LinearAnnealing a(10, 20, 20.0, 2.0);
  EXPECT_EQ(a(0), 20.0);
  EXPECT_EQ(a(10), 20.0);
  EXPECT_DOUBLE_EQ(a(15), 11.0);
  EXPECT_EQ(a(20), 2.0);
  EXPECT_EQ(a(100), 2.0);
  try {
    qi::trainable::LinearAnnealing(5, 5, 1.0, 0.0);
    FAIL();
  } catch (const qi::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("expected 0 <= t_start < t_end, got t_start=5 and t_end=5"));
  }
}

TEST(TrainableMath, RectifiedSigmoidInverse) {
  for (float r : {0.05f, 0.25f, 0.5f, 0.75f, 0.95f})
    EXPECT_NEAR(qi::trainable::rectified_sigmoid(qi::trainable::rectified_sigmoid_inverse(r)), r,
                1e-6);
  EXPECT_EQ(qi::trainable::rectified_sigmoid(-50.f), 0.f);
  EXPECT_EQ(qi::trainable::rectified_sigmoid(50.f), 1.f);
  EXPECT_EQ(qi::trainable::rectified_sigmoid_grad(50.f), 0.f);  // the clip stops the gradient
}

// The fused backward against a naive per-element computation of the same formulas, on the SIMD
// path (contiguous rows) and the strided path, per tensor and per channel.
TEST(TrainableMath, AffineBackwardMatchesNaive) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> u(-2.f, 2.f);
  const int64_t C = 3, L = 1001;
  std::vector<float> x(C * L), g(C * L);
  for (auto& v : x) v = u(rng);
  for (auto& v : g) v = u(rng);
  for (auto mode : {qi::trainable::GradMode::kSte, qi::trainable::GradMode::kLsq}) {
    const auto plan = qi::kernels::AffineTorchPlan{{0.01f, 0.02f, 0.005f},
                                                   {1 / 0.01f, 1 / 0.02f, 1 / 0.005f},
                                                   {3.f, 0.f, -2.f}, -8.f, 7.f, {}};
    std::vector<float> dx(C * L);
    const auto got = qi::trainable::affine_backward(
        plan, ConstTensorView(x.data(), {C, L}), ConstTensorView(g.data(), {C, L}),
        qi::TensorView(dx.data(), {C, L}), 0, mode);
    for (int64_t c = 0; c < C; ++c) {
      double ds = 0, da = 0;
      for (int64_t i = 0; i < L; ++i) {
        const float xv = x[c * L + i], gv = g[c * L + i];
        const float uu = xv * plan.inv_scale[c];
        const float r = std::nearbyint(uu);
        const float q = r + plan.zero_point[c];
        const bool inside = q >= plan.qmin && q <= plan.qmax;
        const float cl = std::fmin(std::fmax(q, plan.qmin), plan.qmax);
        if (mode == qi::trainable::GradMode::kLsq) {
          ds += gv * (inside ? double(r) - uu : double(cl));
          da += inside ? 0.0 : gv;
          EXPECT_EQ(dx[c * L + i], inside ? gv : 0.f);
        } else {
          ds += gv * (double(cl) - plan.zero_point[c] - uu);
          EXPECT_EQ(dx[c * L + i], gv);
        }
      }
      EXPECT_NEAR(got.d_scale[c], ds, 1e-3 * (1 + std::fabs(ds))) << c;
      EXPECT_NEAR(got.d_offset[c], da, 1e-3 * (1 + std::fabs(da))) << c;
    }
    // Channel as the innermost dim (the strided/scalar path) gives the same sums.
    std::vector<float> xt(C * L), gt(C * L);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < L; ++i) {
        xt[i * C + c] = x[c * L + i];
        gt[i * C + c] = g[c * L + i];
      }
    const auto got_t = qi::trainable::affine_backward(
        plan, ConstTensorView(xt.data(), {L, C}), ConstTensorView(gt.data(), {L, C}),
        qi::TensorView(), 1, mode);
    for (int64_t c = 0; c < C; ++c)
      EXPECT_NEAR(got_t.d_scale[c], got.d_scale[c], 1e-3 * (1 + std::fabs(got.d_scale[c])));
  }
}

}  // namespace
