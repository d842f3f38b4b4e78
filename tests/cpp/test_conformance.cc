// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Every inferable quantizer from the registry, against the slow double-precision reference:
// bit-exact, per-tensor and per-channel on every axis (negative included), both numeric
// profiles, sizes around the SIMD width, strided views, in place, special values, every ISA.

#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/reference.h"
#include "qi/qi.h"

namespace {

using qi::InferableQuantizerKind;
using qi::NumericProfile;
using qi::QuantizerParams;
using qi::Shape;

bool is_lut(InferableQuantizerKind k) {
  const auto m = qi::inferable_quantizer_info(k).method;
  return m == qi::QuantizationMethod::LUT_POT_QUANTIZER ||
         m == qi::QuantizationMethod::LUT_SYM_QUANTIZER;
}
bool is_pot(InferableQuantizerKind k) {
  const auto m = qi::inferable_quantizer_info(k).method;
  return m == qi::QuantizationMethod::POWER_OF_TWO ||
         m == qi::QuantizationMethod::LUT_POT_QUANTIZER;
}
bool is_weights(InferableQuantizerKind k) {
  return qi::inferable_quantizer_info(k).target == qi::QuantizationTarget::Weights;
}
bool is_uniform(InferableQuantizerKind k) {
  return qi::inferable_quantizer_info(k).method == qi::QuantizationMethod::UNIFORM;
}
bool is_float(InferableQuantizerKind k) {
  return qi::inferable_quantizer_info(k).method == qi::QuantizationMethod::FLOAT;
}
bool is_block(InferableQuantizerKind k) {
  const auto m = qi::inferable_quantizer_info(k).method;
  return m == qi::QuantizationMethod::MX || m == qi::QuantizationMethod::NVFP4;
}

// Parameters for `channels` channels; variety on purpose: power-of-two and arbitrary thresholds,
// tiny and huge scales, ranges straddling zero and wholly on one side of it.
QuantizerParams make_params(InferableQuantizerKind kind, NumericProfile profile, int64_t channels,
                            bool per_channel, std::optional<int64_t> axis, std::mt19937& rng,
                            int64_t num_bits, bool is_signed, const char* format = "E4M3") {
  QuantizerParams p;
  p.num_bits = num_bits;
  p.format = format;
  p.profile = profile;
  p.per_channel = per_channel;
  p.channel_axis = axis;
  p.is_signed = is_signed;
  std::uniform_real_distribution<double> u(0.05, 4.0);
  static const double kSpecial[] = {1.0, 0.5, 3.0, 1e-30, 1e30, 0.7};
  for (int64_t c = 0; c < channels; ++c) {
    double t = c < 6 ? kSpecial[c] : u(rng);
    if (is_pot(kind)) t = std::exp2(std::round(std::log2(t)));
    p.threshold.push_back(t);
    p.scale.push_back(t);
    static const double kLo[] = {-1.0, 0.25, -3.0, -1e-20, -7.0, -0.3};
    static const double kHi[] = {1.0, 2.0, -0.5, 1e-20, 1e20, 0.9};
    if (c < 6) {
      p.min_range.push_back(kLo[c]);
      p.max_range.push_back(kHi[c]);
    } else {
      const double a = -u(rng), b = u(rng);
      p.min_range.push_back(a);
      p.max_range.push_back(b);
    }
  }
  if (is_lut(kind)) {
    p.lut_values_bitwidth = 8;
    const int64_t count = int64_t{1} << num_bits;
    std::uniform_int_distribution<int> v(is_signed ? -128 : 0, is_signed ? 127 : 255);
    for (int64_t j = 0; j < count; ++j) p.lut_values.push_back(v(rng));
    p.lut_values.push_back(p.lut_values[0]);  // a duplicate: ties keep the first entry
    if (static_cast<int64_t>(p.lut_values.size()) > count) p.lut_values.pop_back();
  }
  if (!is_weights(kind)) p.per_channel = false;
  return p;
}

// Random values around the grid plus every special value (+-0, ties, +-Inf, NaN,
// subnormals, huge and tiny values).
std::vector<float> make_inputs(int64_t n, double scale, std::mt19937& rng) {
  std::vector<float> x(static_cast<size_t>(n));
  std::uniform_real_distribution<double> u(-1.6, 1.6);
  const float specials[] = {0.f, -0.f, std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::denorm_min(), -1e-40f, FLT_MAX, -FLT_MAX,
                            1e30f, -1e30f};
  std::uniform_int_distribution<int> k(-300, 300);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = i % 7;
    if (r == 0) {
      x[i] = specials[(i / 7) % (sizeof(specials) / sizeof(float))];
    } else if (r == 1 || r == 2) {  // exact rounding ties for power-of-two steps
      x[i] = static_cast<float>((k(rng) + 0.5) * scale / 128.0);
    } else {
      x[i] = static_cast<float>(u(rng) * scale);
    }
  }
  return x;
}

// make_inputs plus, for a float format, values at and around its grid times `scale`: exact
// midpoints between neighbours (ties), grid values, the largest value, beyond it, and
// subnormals of the format.
std::vector<float> make_float_inputs(int64_t n, double scale, const char* format,
                                     std::mt19937& rng) {
  std::vector<float> x = make_inputs(n, scale, rng);
  const qi::kernels::FloatFormat& f = *qi::kernels::find_float_format(format);
  const int bias = (1 << (f.ebits - 1)) - 1;
  std::uniform_int_distribution<int> mant(0, (1 << f.mbits) - 1);
  std::uniform_int_distribution<int> expo(-bias - 1, static_cast<int>(std::log2(f.max)));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = i % 7;
    const double sign = (i / 7) % 2 ? -1.0 : 1.0;
    const int e = std::max(expo(rng), 1 - bias);  // normal range (and the top subnormals)
    const double step = std::ldexp(1.0, e - f.mbits);
    const double grid = std::ldexp(1.0, e) + mant(rng) * step;
    if (r == 1) x[i] = static_cast<float>(sign * (grid + step / 2) * scale);  // a tie
    else if (r == 3) x[i] = static_cast<float>(sign * grid * scale);
    else if (r == 4) x[i] = static_cast<float>(sign * f.max * scale * (i % 3 ? 1.0 : 1.1));
    else if (r == 5)  // subnormal of the format, or a tie between two
      x[i] = static_cast<float>(sign * std::ldexp(mant(rng) + 0.5 * (i % 2), 1 - bias - f.mbits) *
                                scale);
  }
  return x;
}

bool same_bits(float a, float b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  uint32_t ua, ub;
  std::memcpy(&ua, &a, 4);
  std::memcpy(&ub, &b, 4);
  return ua == ub;
}

// Runs the quantizer on a view and compares with the reference; returns mismatch count.
int64_t compare(const qi::BaseInferableQuantizer& q, InferableQuantizerKind kind,
                const QuantizerParams& p, const qi::ConstTensorView& in, bool in_place,
                std::string* first) {
  const std::vector<float> want = qi::reference::fake_quant(kind, p, in);
  std::vector<float> got(want.size());
  if (in_place) {
    // Copy the view's elements to a same-layout buffer and quantize that in place.
    int64_t span = 1;
    for (size_t k = 0; k < in.sizes.size(); ++k) span += (in.sizes[k] - 1) * in.strides[k];
    std::vector<float> buf(in.data, in.data + (in.numel() ? span : 0));
    qi::TensorView v(buf.data(), in.sizes, in.strides);
    q.apply_inplace(v);
    // Gather in logical order.
    const int64_t n = in.numel();
    for (int64_t linear = 0; linear < n; ++linear) {
      int64_t rem = linear, off = 0;
      for (int64_t k = in.dim() - 1; k >= 0; --k) {
        off += (rem % in.sizes[k]) * in.strides[k];
        rem /= in.sizes[k];
      }
      got[linear] = buf[off];
    }
  } else {
    q.apply(in, qi::TensorView(got.data(), in.sizes));
  }
  int64_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!same_bits(got[i], want[i])) {
      if (bad == 0 && first) {
        // Recover the input value for the message.
        int64_t rem = static_cast<int64_t>(i), off = 0;
        for (int64_t k = in.dim() - 1; k >= 0; --k) {
          off += (rem % in.sizes[k]) * in.strides[k];
          rem /= in.sizes[k];
        }
        *first = qi::str_cat("element ", i, ": x=", in.data[off], " got ", got[i], " want ",
                             want[i]);
      }
      ++bad;
    }
  }
  return bad;
}

struct ConformanceParam {
  InferableQuantizerKind kind;
  NumericProfile profile;
};

std::string param_name(const testing::TestParamInfo<ConformanceParam>& info) {
  return std::string(qi::inferable_quantizer_info(info.param.kind).class_name) + "_" +
         qi::to_string(info.param.profile);
}

std::vector<ConformanceParam> all_params() {
  std::vector<ConformanceParam> out;
  for (const auto& info : qi::kInferableQuantizers) {
    if (is_block(info.kind)) continue;  // BlockConformance
    out.push_back({info.kind, NumericProfile::kTorch});
    // Only the affine and weights-LUT quantizers take a profile.
    if (info.kind != InferableQuantizerKind::ActivationLutPOTInferableQuantizer &&
        !is_float(info.kind))
      out.push_back({info.kind, NumericProfile::kTf});
  }
  return out;
}

class Conformance : public testing::TestWithParam<ConformanceParam> {
 protected:
  void TearDown() override { qi::kernels::force_simd_target(""); }

  // All layouts for one ISA.
  void run_all(const std::string& isa) {
    const auto [kind, profile] = GetParam();
    std::mt19937 rng(1234);
    // Variants: sign and bit width of integer grids; the format of float quantizers.
    struct Variant {
      bool is_signed;
      int64_t bits;
      const char* format;
    };
    std::vector<Variant> variants;
    if (is_float(kind)) {
      for (const auto& f : qi::kernels::kFloatFormats) variants.push_back({true, 8, f.name});
    } else {
      for (bool is_signed : {true, false}) {
        if (is_uniform(kind) && !is_signed) continue;
        for (int64_t bits : {2, 4, 8})
          if (!is_lut(kind) || bits <= 6) variants.push_back({is_signed, bits, ""});
      }
    }
    for (const auto& [is_signed, bits, format] : variants) {
      // Per-tensor: 1-D sizes around the SIMD width (16 floats on AVX-512) and a prime.
      for (int64_t n : {0, 1, 15, 16, 17, 35, 1009}) {
        auto p = make_params(kind, profile, 1, false, std::nullopt, rng, bits, is_signed, format);
        auto q = qi::make_inferable_quantizer(kind, p);
        auto x = is_float(kind) ? make_float_inputs(n, p.scale[0], format, rng)
                                : make_inputs(n, p.threshold[0], rng);
        std::string first;
        qi::ConstTensorView v(x.data(), Shape{n});
        EXPECT_EQ(compare(*q, kind, p, v, false, &first), 0)
            << isa << " n=" << n << " bits=" << bits << " signed=" << is_signed << " " << format
            << " " << first;
        EXPECT_EQ(compare(*q, kind, p, v, true, &first), 0)
            << isa << " in place n=" << n << " " << first;
      }
      if (!is_weights(kind)) continue;
      // Per-channel on every axis of ranks 1..4, contiguous and strided.
      const Shape base = {3, 5, 7, 19};
      for (int64_t rank = 1; rank <= 4; ++rank) {
        Shape sizes(base.end() - rank, base.end());
        for (int64_t axis = -rank; axis < rank; ++axis) {
          const int64_t a = axis < 0 ? axis + rank : axis;
          auto p =
              make_params(kind, profile, sizes[a], true, axis, rng, bits, is_signed, format);
          auto q = qi::make_inferable_quantizer(kind, p);
          const int64_t n = std::accumulate(sizes.begin(), sizes.end(), int64_t{1},
                                            std::multiplies<int64_t>());
          // Twice the elements: the strided view takes every other one of the last dim.
          auto x = is_float(kind) ? make_float_inputs(2 * n, 1.0, format, rng)
                                  : make_inputs(2 * n, 1.0, rng);
          std::string first;
          qi::ConstTensorView contiguous(x.data(), sizes);
          EXPECT_EQ(compare(*q, kind, p, contiguous, false, &first), 0)
              << isa << " rank=" << rank << " axis=" << axis << " " << first;
          Shape strides = qi::ConstTensorView::contiguous_strides(sizes);
          for (auto& s : strides) s *= 2;
          qi::ConstTensorView strided(x.data(), sizes, strides);
          EXPECT_EQ(compare(*q, kind, p, strided, false, &first), 0)
              << isa << " strided rank=" << rank << " axis=" << axis << " " << first;
          EXPECT_EQ(compare(*q, kind, p, strided, true, &first), 0)
              << isa << " strided in place rank=" << rank << " axis=" << axis << " " << first;
          if (rank >= 2) {  // transposed view: swap the first two dims
            Shape ts = sizes, tst = qi::ConstTensorView::contiguous_strides(sizes);
            std::swap(ts[0], ts[1]);
            std::swap(tst[0], tst[1]);
            QuantizerParams pt = p;
            const int64_t ta = a == 0 ? 1 : (a == 1 ? 0 : a);
            pt.channel_axis = ta;
            auto qt = qi::make_inferable_quantizer(kind, pt);
            EXPECT_EQ(compare(*qt, kind, pt, qi::ConstTensorView(x.data(), ts, tst), false,
                              &first),
                      0)
                << isa << " transposed rank=" << rank << " axis=" << ta << " " << first;
          }
        }
      }
    }
  }
};

TEST_P(Conformance, BitExactAgainstReferenceOnEveryIsa) {
  const auto targets = qi::kernels::supported_simd_targets();
  ASSERT_FALSE(targets.empty());
  for (const auto& isa : targets) {
    qi::kernels::force_simd_target(isa);
    ASSERT_EQ(qi::kernels::simd_target_name(), isa);
    run_all(isa);
  }
}

TEST_P(Conformance, BitExactWithThreads) {
  // Large enough for several parallel chunks, odd sizes so chunks end mid-row.
  const auto [kind, profile] = GetParam();
  std::mt19937 rng(99);
  qi::set_num_threads(2);
  const Shape sizes = is_weights(kind) ? Shape{37, 3, 1001} : Shape{100003};
  const int64_t channels = sizes[0];
  auto p = make_params(kind, profile, is_weights(kind) ? channels : 1, is_weights(kind),
                       is_weights(kind) ? std::optional<int64_t>(0) : std::nullopt, rng, 4, true);
  auto q = qi::make_inferable_quantizer(kind, p);
  const int64_t n = std::accumulate(sizes.begin(), sizes.end(), int64_t{1},
                                    std::multiplies<int64_t>());
  auto x = make_inputs(n, 1.0, rng);
  std::string first;
  EXPECT_EQ(compare(*q, kind, p, qi::ConstTensorView(x.data(), sizes), false, &first), 0) << first;
}

bool takes_groups(InferableQuantizerKind kind) {
  for (const auto& spec : qi::inferable_param_specs(kind))
    if (std::string(spec.key) == "group_size") return true;
  return false;
}

// Per-group parameters (the classes that take group_size): ragged last groups, groups longer
// than the axis and of one element, channels outer or innermost, no channel axis, 2-D and 4-D,
// strided views and in place.
class GroupConformance : public testing::TestWithParam<ConformanceParam> {
 protected:
  void TearDown() override { qi::kernels::force_simd_target(""); }
};

TEST_P(GroupConformance, BitExactAgainstReferenceOnEveryIsa) {
  const auto [kind, profile] = GetParam();
  struct Case {
    Shape sizes;
    std::optional<int64_t> channel_axis;
    int64_t group_axis, group_size;
  };
  const Case cases[] = {
      {{6, 37}, 0, 1, 8},          // a Linear weight [out, in] grouped along in, ragged
      {{6, 37}, 0, -1, 37},        // one group per row
      {{6, 37}, -2, 1, 64},        // one group longer than the axis
      {{6, 32}, 0, 1, 1},          // groups of one element
      {{37, 6}, 1, 0, 5},          // a Keras Dense kernel [in, out]: channels innermost
      {{4, 10, 3, 3}, 0, 1, 4},    // a conv weight [out, in, kh, kw] grouped along in
      {{4, 10, 3, 3}, std::nullopt, -1, 2},  // no channel axis: groups along the last axis
      {{3, 5, 7, 19}, 2, -1, 16},
      {{0, 7}, std::nullopt, 1, 3},  // empty
  };
  struct Variant {
    int64_t bits;
    const char* format;
  };
  const std::vector<Variant> variants =
      is_float(kind) ? std::vector<Variant>{{8, "E4M3"}, {8, "E2M1"}}
                     : std::vector<Variant>{{4, ""}, {8, ""}, {2, ""}};
  for (const auto& isa : qi::kernels::supported_simd_targets()) {
    qi::kernels::force_simd_target(isa);
    std::mt19937 rng(77);
    for (const auto& c : cases) {
      const int64_t rank = static_cast<int64_t>(c.sizes.size());
      const int64_t ga = c.group_axis < 0 ? c.group_axis + rank : c.group_axis;
      const int64_t groups = (c.sizes[ga] + c.group_size - 1) / c.group_size;
      const int64_t rows =
          c.channel_axis ? c.sizes[*c.channel_axis < 0 ? *c.channel_axis + rank : *c.channel_axis]
                         : 1;
      for (const auto& [bits, format] : variants) {
        auto p = make_params(kind, profile, std::max<int64_t>(rows * groups, 1),
                             c.channel_axis.has_value(), c.channel_axis, rng, bits, true, format);
        p.group_size = c.group_size;
        p.group_axis = c.group_axis;
        auto q = qi::make_inferable_quantizer(kind, p);
        const int64_t n = std::accumulate(c.sizes.begin(), c.sizes.end(), int64_t{1},
                                          std::multiplies<int64_t>());
        auto x = is_float(kind) ? make_float_inputs(2 * n, 1.0, format, rng)
                                : make_inputs(2 * n, 1.0, rng);
        std::string first;
        const std::string where = qi::str_cat(isa, " sizes ", c.sizes.size(), "-d group_size ",
                                              c.group_size, " bits ", bits, " ", format);
        EXPECT_EQ(compare(*q, kind, p, qi::ConstTensorView(x.data(), c.sizes), false, &first), 0)
            << where << " " << first;
        Shape strides = qi::ConstTensorView::contiguous_strides(c.sizes);
        for (auto& s : strides) s *= 2;
        qi::ConstTensorView strided(x.data(), c.sizes, strides);
        EXPECT_EQ(compare(*q, kind, p, strided, false, &first), 0) << where << " strided " << first;
        EXPECT_EQ(compare(*q, kind, p, strided, true, &first), 0)
            << where << " strided in place " << first;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Registry, Conformance, testing::ValuesIn(all_params()), param_name);

std::vector<ConformanceParam> group_params() {
  std::vector<ConformanceParam> out;
  for (const auto& p : all_params())
    if (takes_groups(p.kind)) out.push_back(p);
  return out;
}
INSTANTIATE_TEST_SUITE_P(Registry, GroupConformance, testing::ValuesIn(group_params()), param_name);

TEST(Conformance, KnownValuesSymmetricTorch) {
  // threshold 1, 8 bits: step 1/128; ties round to even; clamp at [-1, 127/128].
  qi::WeightsSymmetricInferableQuantizer q(8, {1.0}, false);
  const std::vector<float> x = {0.5f / 128, 1.5f / 128, 2.5f / 128, -0.5f / 128, 5.f, -5.f,
                                std::numeric_limits<float>::infinity()};
  const auto y = q.apply(x, Shape{7});
  EXPECT_EQ(y[0], 0.f);
  EXPECT_EQ(y[1], 2.f / 128);
  EXPECT_EQ(y[2], 2.f / 128);
  EXPECT_EQ(y[3], 0.f);
  EXPECT_EQ(y[4], 127.f / 128);
  EXPECT_EQ(y[5], -1.f);
  EXPECT_EQ(y[6], 127.f / 128);
}

TEST(Conformance, KnownValuesSymmetricTfRoundsHalfUp) {
  qi::WeightsSymmetricInferableQuantizer q(8, {1.0}, false, std::nullopt, true,
                                           NumericProfile::kTf);
  const std::vector<float> x = {0.5f / 128, 1.5f / 128, 2.5f / 128, -0.5f / 128};
  const auto y = q.apply(x, Shape{4});
  EXPECT_EQ(y[0], 1.f / 128);
  EXPECT_EQ(y[1], 2.f / 128);
  EXPECT_EQ(y[2], 3.f / 128);
  EXPECT_EQ(y[3], 0.f);
}

TEST(Conformance, KnownValuesFloatE4M3) {
  // Scale 1: ties go to the even code; beyond max and +-Inf saturate to +-448; subnormals (step
  // 2^-9) are kept; the sign of zero (and of values rounding to zero) is kept.
  qi::WeightsFloatInferableQuantizer q("E4M3", {1.0}, false);
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> x = {1.0625f, 1.1875f, 448.f, 464.f, 1e9f, -inf, std::ldexp(1.f, -9),
                                std::ldexp(1.f, -10), 3 * std::ldexp(1.f, -10), -1e-30f, -0.f};
  const std::vector<float> want = {1.f, 1.25f, 448.f, 448.f, 448.f, -448.f, std::ldexp(1.f, -9),
                                   0.f, std::ldexp(1.f, -8), -0.f, -0.f};
  const auto y = q.apply(x, Shape{static_cast<int64_t>(x.size())});
  for (size_t i = 0; i < x.size(); ++i)
    EXPECT_TRUE(same_bits(y[i], want[i])) << "x=" << x[i] << " got " << y[i] << " want " << want[i];
  // Scale 0.5: the grid is halved.
  qi::ActivationFloatInferableQuantizer a("E2M1", {0.5});
  EXPECT_EQ(a.apply({0.3f, 0.9f, 1.25f, 2.9f, 5.f}, Shape{5}),
            (std::vector<float>{0.25f, 1.f, 1.f, 3.f, 3.f}));
}

TEST(Conformance, NanStaysNan) {
  for (const auto& info : qi::kInferableQuantizers) {
    std::mt19937 rng(5);
    auto p = make_params(info.kind, NumericProfile::kTorch, 1, false, std::nullopt, rng, 4, true);
    p.block_size = 16;
    auto q = qi::make_inferable_quantizer(info.kind, p);
    const auto y = q->apply(std::vector<float>(16, std::nanf("")), Shape{16});
    EXPECT_TRUE(std::isnan(y[0])) << info.class_name;
  }
}

// Inputs for block formats: runs of 16 consecutive values of one magnitude (2^-140 to 2^127),
// some on a coarse grid (ties of every element format), some all zero, one special value (NaN,
// +-Inf, +-0, FLT_MAX, a float32 subnormal) in every 11th run.
std::vector<float> make_block_inputs(int64_t n, std::mt19937& rng) {
  std::vector<float> x(static_cast<size_t>(n));
  std::uniform_real_distribution<double> expo(-140, 127), u(-1, 1);
  std::uniform_int_distribution<int> grid(-64, 64);
  const float inf = std::numeric_limits<float>::infinity();
  const float specials[] = {std::nanf(""), inf, -inf, 0.f, -0.f, FLT_MAX, -FLT_MAX, 1e-40f};
  for (int64_t start = 0, run = 0; start < n; start += 16, ++run) {
    const double e = expo(rng);
    for (int64_t i = start; i < std::min(n, start + 16); ++i) {
      if (run % 5 == 1) x[i] = static_cast<float>(grid(rng) / 16.0 * std::ldexp(1.0, static_cast<int>(e / 4)));
      else if (run % 5 == 3) x[i] = 0.f;
      else x[i] = static_cast<float>(u(rng) * std::ldexp(1.0, static_cast<int>(e)));
    }
    if (run % 11 == 4 && start < n)
      x[start] = specials[(run / 11) % (sizeof(specials) / sizeof(float))];
  }
  return x;
}

// q against the reference on x's first elements viewed as `sizes`: contiguous, in place and
// with every stride doubled.
void expect_reference_layouts(const qi::BaseInferableQuantizer& q, InferableQuantizerKind kind,
                              const QuantizerParams& p, const std::vector<float>& x,
                              const Shape& sizes, const std::string& where) {
  std::string first;
  EXPECT_EQ(compare(q, kind, p, qi::ConstTensorView(x.data(), sizes), false, &first), 0)
      << where << " " << first;
  EXPECT_EQ(compare(q, kind, p, qi::ConstTensorView(x.data(), sizes), true, &first), 0)
      << where << " in place " << first;
  Shape strides = qi::ConstTensorView::contiguous_strides(sizes);
  for (auto& s : strides) s *= 2;
  qi::ConstTensorView strided(x.data(), sizes, strides);
  EXPECT_EQ(compare(q, kind, p, strided, false, &first), 0) << where << " strided " << first;
}

// MX and NVFP4 against the reference: every element format, block sizes from 1 to 32, blocks
// along the last, first and a middle axis, strided views, in place, every ISA, two threads.
class BlockConformance : public testing::TestWithParam<InferableQuantizerKind> {
 protected:
  void TearDown() override {
    qi::kernels::force_simd_target("");
    qi::set_num_threads(1);
  }
};

TEST_P(BlockConformance, BitExactAgainstReferenceOnEveryIsa) {
  const InferableQuantizerKind kind = GetParam();
  const bool mx = qi::inferable_quantizer_info(kind).method == qi::QuantizationMethod::MX;
  std::vector<QuantizerParams> variants;
  if (mx) {
    // Half of the variants with a random pre-scale 2^[-60, 60) * [1, 2) (tiny and huge ones
    // push x / p to overflow or into subnormals).
    std::mt19937 draw(5);
    std::uniform_int_distribution<int> exponent(-60, 59);
    std::uniform_real_distribution<double> mantissa(1.0, 2.0);
    for (const char* format : {"E4M3", "E5M2", "E3M2", "E2M3", "E2M1", "INT8"})
      for (int64_t k : {32, 16, 3, 1}) {
        QuantizerParams p;
        p.format = format;
        p.block_size = k;
        if (k == 16 || k == 3) p.tensor_scale = std::ldexp(mantissa(draw), exponent(draw));
        variants.push_back(p);
      }
  } else {
    for (std::optional<double> t : {std::optional<double>(), std::optional<double>(0.01),
                                    std::optional<double>(3e-5), std::optional<double>(1e30)}) {
      QuantizerParams p;
      p.tensor_scale = t;
      p.block_size = qi::kernels::kNvfp4BlockSize;
      variants.push_back(p);
    }
  }
  for (const auto& isa : qi::kernels::supported_simd_targets()) {
    qi::kernels::force_simd_target(isa);
    std::mt19937 rng(31);
    for (QuantizerParams p : variants) {
      const int64_t k = p.block_size;
      struct Layout {
        Shape sizes;
        int64_t axis;
      };
      const Layout layouts[] = {{{5 * k}, -1},       {{7, 2 * k}, -1}, {{2 * k, 9}, 0},
                                {{3, 2 * k, 5}, 1},  {{3, 2 * k, 5}, -2}, {{0, k}, 1}};
      for (const auto& l : layouts) {
        p.block_axis = l.axis;
        auto q = qi::make_inferable_quantizer(kind, p);
        const int64_t n = std::accumulate(l.sizes.begin(), l.sizes.end(), int64_t{1},
                                          std::multiplies<int64_t>());
        auto x = make_block_inputs(2 * n, rng);
        expect_reference_layouts(*q, kind, p, x, l.sizes,
                                 qi::str_cat(isa, " ", p.format, " block ", k, " axis ", l.axis,
                                             " rank ", l.sizes.size(), " tensor_scale ",
                                             p.tensor_scale.value_or(0)));
      }
    }
  }
  // Several parallel chunks.
  qi::kernels::force_simd_target("");
  qi::set_num_threads(2);
  std::mt19937 rng(8);
  QuantizerParams p = variants.front();
  p.block_axis = -1;
  auto q = qi::make_inferable_quantizer(kind, p);
  const Shape sizes = {37, 3, 64 * p.block_size};
  auto x = make_block_inputs(37 * 3 * 64 * p.block_size, rng);
  std::string first;
  EXPECT_EQ(compare(*q, kind, p, qi::ConstTensorView(x.data(), sizes), false, &first), 0) << first;
}

std::vector<InferableQuantizerKind> block_kinds() {
  std::vector<InferableQuantizerKind> out;
  for (const auto& info : qi::kInferableQuantizers)
    if (is_block(info.kind)) out.push_back(info.kind);
  return out;
}
INSTANTIATE_TEST_SUITE_P(Registry, BlockConformance, testing::ValuesIn(block_kinds()),
                         [](const testing::TestParamInfo<InferableQuantizerKind>& info) {
                           return std::string(qi::inferable_quantizer_info(info.param).class_name);
                         });

// NVFP4 with stored block scales (a grouped E2M1 FloatPlan) against the reference: random E4M3
// scales, channel axes before and after the block axis, strided views, in place, every ISA.
TEST(Conformance, Nvfp4StoredBlockScalesOnEveryIsa) {
  const InferableQuantizerKind kind = InferableQuantizerKind::WeightsNVFP4InferableQuantizer;
  struct Layout {
    Shape sizes;
    int64_t channel_axis, block_axis;
  };
  const Layout layouts[] = {{{5, 64}, 0, -1}, {{32, 3}, -1, 0}, {{3, 48, 2}, 2, 1},
                            {{4, 2, 16}, 0, 2}, {{0, 16}, 0, 1}};
  for (const auto& isa : qi::kernels::supported_simd_targets()) {
    qi::kernels::force_simd_target(isa);
    std::mt19937 rng(17);
    std::uniform_int_distribution<int> code(8, 126);  // E4M3 codes from 2^-6 to 448
    for (std::optional<double> t : {std::optional<double>(), std::optional<double>(0.01)})
      for (const auto& l : layouts) {
        QuantizerParams p;
        p.tensor_scale = t;
        p.block_axis = l.block_axis;
        p.channel_axis = l.channel_axis;
        const int64_t rank = static_cast<int64_t>(l.sizes.size());
        const auto norm = [rank](int64_t a) { return static_cast<size_t>(a < 0 ? a + rank : a); };
        const int64_t count =
            l.sizes[norm(l.channel_axis)] * (l.sizes[norm(l.block_axis)] / 16);
        for (int64_t i = 0; i < count; ++i) {
          const int c = code(rng), e = c >> 3, m = c & 7;
          p.block_scales.push_back(std::ldexp(8 + m, e - 7 - 3));
        }
        if (count == 0) p.block_scales.push_back(1.0);  // never used: an empty tensor
        auto q = qi::make_inferable_quantizer(kind, p);
        const int64_t n = std::accumulate(l.sizes.begin(), l.sizes.end(), int64_t{1},
                                          std::multiplies<int64_t>());
        auto x = make_block_inputs(2 * n, rng);
        if (count == 0) {
          EXPECT_THROW(q->apply(qi::ConstTensorView(x.data(), l.sizes),
                                qi::TensorView(x.data(), l.sizes)),
                       qi::Error);
          continue;
        }
        expect_reference_layouts(*q, kind, p, x, l.sizes,
                                 qi::str_cat(isa, " rank ", rank, " channel_axis ",
                                             l.channel_axis, " tensor_scale ", t.value_or(0)));
      }
  }
  qi::kernels::force_simd_target("");
}

TEST(Conformance, KnownValuesMx) {
  // A block of 4 (E4M3): amax 500, X = 2^(8 - 8) = 1; 480 and -500 saturate to +-448.
  qi::ActivationMXInferableQuantizer q("E4M3", 4);
  EXPECT_EQ(q.apply({448.f, 480.f, -500.f, 1.0625f}, Shape{4}),
            (std::vector<float>{448.f, 448.f, -448.f, 1.f}));
  // E2M1, amax 6 * 2^-3: X = 2^(-1 - 2) = 2^-3.
  qi::ActivationMXInferableQuantizer f4("E2M1", 2);
  EXPECT_EQ(f4.apply({0.75f, -0.0625f}, Shape{2}), (std::vector<float>{0.75f, -0.0625f}));
  // INT8: amax 1.5, X = 1; elements k / 64.
  qi::ActivationMXInferableQuantizer i8("INT8", 2);
  EXPECT_EQ(i8.apply({1.5f, 0.5f + 1.f / 128}, Shape{2}), (std::vector<float>{1.5f, 0.5f}));
}

}  // namespace

namespace {

TEST(Conformance, EmptyTensorsOfAnyShape) {
  qi::WeightsSymmetricInferableQuantizer q(8, {1.0, 2.0, 4.0}, true, 0);
  std::vector<float> none;
  EXPECT_TRUE(q.apply(none, Shape{3, 0}).empty());
  EXPECT_THROW(q.apply(none, Shape{0, 3}), qi::Error);  // 3 values, 0 channels
  qi::ActivationPOTInferableQuantizer a(8, {1.0}, true);
  EXPECT_TRUE(a.apply(none, Shape{0, 5, 0}).empty());
}

TEST(Conformance, SeedExampleOneThresholdPerChannelBroadcasts) {
  // The seed: per_channel=True with one threshold and no channel_axis.
  qi::WeightsSymmetricInferableQuantizer q(8, {2.0}, /*per_channel=*/true);
  qi::WeightsSymmetricInferableQuantizer per_tensor(8, {2.0}, /*per_channel=*/false);
  std::vector<float> x(6 * 7);
  for (size_t i = 0; i < x.size(); ++i) x[i] = 0.37f * static_cast<float>(i) - 7.f;
  EXPECT_EQ(q.apply(x, Shape{6, 7}), per_tensor.apply(x, Shape{6, 7}));
  // With an axis, one value still covers every channel.
  qi::WeightsSymmetricInferableQuantizer with_axis(8, {2.0}, true, 1);
  EXPECT_EQ(with_axis.apply(x, Shape{6, 7}), per_tensor.apply(x, Shape{6, 7}));
}

}  // namespace

namespace {

// Outputs of 16 MB and more take the non-temporal-store path: same bits, every plan family,
// per tensor, per channel on the outer axis and on the innermost axis (varying parameters).
TEST(Conformance, LargeOutputsStreamedBitExact) {
  std::mt19937 rng(21);
  const int64_t n = (int64_t{1} << 22) + 13;  // > 16 MB of float32, odd tail, long rows
  auto x = make_inputs(n, 1.0, rng);
  x[0] = 0.3f;  // misaligned output start below exercises the scalar head
  struct Case {
    InferableQuantizerKind kind;
    NumericProfile profile;
    Shape sizes;
    std::optional<int64_t> axis;
  };
  const Case cases[] = {
      {InferableQuantizerKind::WeightsSymmetricInferableQuantizer, NumericProfile::kTorch, {n}, {}},
      {InferableQuantizerKind::WeightsUniformInferableQuantizer, NumericProfile::kTf, {n}, {}},
      {InferableQuantizerKind::WeightsLUTSymmetricInferableQuantizer, NumericProfile::kTorch, {n}, {}},
      {InferableQuantizerKind::WeightsSymmetricInferableQuantizer, NumericProfile::kTorch,
       {(n - 13) / 4, 4}, 1},
      {InferableQuantizerKind::WeightsPOTInferableQuantizer, NumericProfile::kTf,
       {4, (n - 13) / 4}, 0},
  };
  for (const auto& c : cases) {
    const int64_t channels = c.axis ? c.sizes[*c.axis] : 1;
    auto p = make_params(c.kind, c.profile, channels, c.axis.has_value(), c.axis, rng, 4, true);
    auto q = qi::make_inferable_quantizer(c.kind, p);
    int64_t count = 1;
    for (int64_t s : c.sizes) count *= s;
    std::vector<float> out(static_cast<size_t>(count) + 1);
    // Output one float past an aligned start: the streaming loop must align itself first.
    q->apply(qi::ConstTensorView(x.data(), c.sizes), qi::TensorView(out.data() + 1, c.sizes));
    const auto want = qi::reference::fake_quant(c.kind, p, qi::ConstTensorView(x.data(), c.sizes));
    int64_t bad = 0;
    for (int64_t i = 0; i < count; ++i) bad += same_bits(out[i + 1], want[i]) ? 0 : 1;
    EXPECT_EQ(bad, 0) << qi::inferable_quantizer_info(c.kind).class_name << " "
                      << qi::to_string(c.profile);
  }
}

}  // namespace
