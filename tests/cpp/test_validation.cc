// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// One test per bad-input rule of the inferable quantizers: each checks that qi::Error is thrown
// and that its message names the class, the argument, the rule and the value given.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "qi/qi.h"

namespace {

using qi::NumericProfile;
using qi::QuantizerParams;
using qi::Shape;
using testing::HasSubstr;

// Runs fn, expects qi::Error, returns its message.
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const qi::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("WRONG EXCEPTION TYPE: ") + e.what();
  }
  return "NO ERROR";
}

#define EXPECT_ERROR(stmt, ...)                                          \
  do {                                                                   \
    const std::string msg_ = error_of([&] { stmt; });                    \
    for (const char* part_ : {__VA_ARGS__}) EXPECT_THAT(msg_, HasSubstr(part_)); \
  } while (0)

const double kNan = std::numeric_limits<double>::quiet_NaN();
const double kInf = std::numeric_limits<double>::infinity();

// ---- num_bits ----
TEST(Validation, NumBitsBelowRange) {
  EXPECT_ERROR(qi::WeightsSymmetricInferableQuantizer(1, {1.0}, false),
               "WeightsSymmetricInferableQuantizer: num_bits must be in [2, 16]", "got 1");
}
TEST(Validation, NumBitsAboveRange) {
  EXPECT_ERROR(qi::ActivationUniformInferableQuantizer(17, {-1.0}, {1.0}),
               "ActivationUniformInferableQuantizer: num_bits must be in [2, 16]", "got 17");
}
TEST(Validation, LutNumBitsAboveBitwidth) {
  EXPECT_ERROR(qi::WeightsLUTSymmetricInferableQuantizer(9, {1.0}, {1.0}, false),
               "num_bits must be in [1, 8] (at most lut_values_bitwidth)", "got 9");
}
TEST(Validation, LutValuesBitwidthRange) {
  EXPECT_ERROR(qi::WeightsLUTSymmetricInferableQuantizer(2, {1.0}, {1.0}, false, std::nullopt,
                                                         std::nullopt, 17),
               "lut_values_bitwidth must be in [2, 16]", "got 17");
}
TEST(Validation, LutEpsNegative) {
  EXPECT_ERROR(qi::ActivationLutPOTInferableQuantizer(2, {1.0}, {1.0}, true, 8, -1.0),
               "ActivationLutPOTInferableQuantizer: eps must be finite and >= 0", "got -1");
}
TEST(Validation, LutEpsNan) {
  EXPECT_ERROR(qi::ActivationLutPOTInferableQuantizer(2, {1.0}, {1.0}, true, 8, kNan),
               "eps must be finite and >= 0", "got nan");
}

// ---- thresholds ----
TEST(Validation, ThresholdEmpty) {
  EXPECT_ERROR(qi::WeightsSymmetricInferableQuantizer(8, {}, true, 0),
               "threshold must hold at least one value", "got []");
}
TEST(Validation, ThresholdNan) {
  EXPECT_ERROR(qi::WeightsSymmetricInferableQuantizer(8, {1.0, kNan}, true, 0),
               "threshold must be finite", "got nan at index 1");
}
TEST(Validation, ThresholdInf) {
  EXPECT_ERROR(qi::ActivationSymmetricInferableQuantizer(8, {kInf}, true),
               "threshold must be finite", "got inf at index 0");
}
TEST(Validation, ThresholdNotPositive) {
  EXPECT_ERROR(qi::WeightsSymmetricInferableQuantizer(8, {0.0}, false),
               "threshold must be > 0", "got 0 at index 0");
  EXPECT_ERROR(qi::ActivationSymmetricInferableQuantizer(8, {-2.0}, true),
               "threshold must be > 0", "got -2 at index 0");
}
TEST(Validation, ThresholdBeyondFloat32) {
  EXPECT_ERROR(qi::WeightsSymmetricInferableQuantizer(8, {1e39}, false),
               "threshold must fit in float32 (<= 3.40282347e+38), got 1e+39 at index 0");
}
TEST(Validation, ThresholdStepSubnormal) {
  EXPECT_ERROR(qi::WeightsSymmetricInferableQuantizer(8, {1e-37}, false),
               "threshold is too small: the step threshold / 2^7 must be a normal float32",
               "got threshold 1e-37");
}
TEST(Validation, ThresholdNotPowerOfTwo) {
  EXPECT_ERROR(qi::WeightsPOTInferableQuantizer(8, {1.0, 3.0}, true, 0),
               "WeightsPOTInferableQuantizer: threshold must be a power of two for POWER_OF_TWO "
               "quantization, got 3 at index 1");
  EXPECT_ERROR(qi::ActivationPOTInferableQuantizer(8, {0.3}, true), "power of two", "got 0.3");
  EXPECT_ERROR(qi::WeightsLUTPOTInferableQuantizer(2, {1.0}, {3.0}, false), "power of two",
               "got 3");
  EXPECT_ERROR(qi::ActivationLutPOTInferableQuantizer(2, {1.0}, {5.0}, true), "power of two",
               "got 5");
}

// ---- layout ----
TEST(Validation, PerChannelNeedsChannelAxis) {
  EXPECT_ERROR(qi::WeightsSymmetricInferableQuantizer(8, {1.0, 2.0}, true),
               "channel_axis is required for per-channel quantization with 2 values, got none");
  EXPECT_ERROR(qi::WeightsUniformInferableQuantizer(8, {-1.0, -2.0}, {1.0, 2.0}, true),
               "channel_axis is required");
  EXPECT_ERROR(qi::WeightsLUTSymmetricInferableQuantizer(2, {1.0}, {1.0, 2.0}, true),
               "channel_axis is required");
}
TEST(Validation, PerTensorNeedsOneValue) {
  EXPECT_ERROR(qi::WeightsSymmetricInferableQuantizer(8, {1.0, 2.0}, false),
               "threshold must hold exactly one value for per-tensor quantization, got 2 values");
  EXPECT_ERROR(qi::WeightsUniformInferableQuantizer(8, {-1.0, -1.0}, {1.0, 1.0}, false),
               "min_range must hold exactly one value for per-tensor quantization, got 2");
}
TEST(Validation, ActivationIsPerTensorOnly) {
  EXPECT_ERROR(qi::ActivationSymmetricInferableQuantizer(8, {1.0, 2.0}, true),
               "threshold must hold exactly one value: activation quantization is per-tensor "
               "only, got 2 values");
  EXPECT_ERROR(qi::ActivationUniformInferableQuantizer(8, {-1.0}, {1.0, 2.0}),
               "max_range must hold exactly one value: activation quantization is per-tensor");
  EXPECT_ERROR(qi::ActivationLutPOTInferableQuantizer(2, {1.0}, {1.0, 2.0}, true),
               "threshold must hold exactly one value");
}
TEST(Validation, ActivationRejectsPerChannelFlag) {
  QuantizerParams p;
  p.threshold = {1.0};
  p.per_channel = true;
  p.channel_axis = 0;
  EXPECT_ERROR(qi::ActivationPOTInferableQuantizer{p},
               "per_channel must be false: activation quantization is per-tensor only, got true");
}
TEST(Validation, InputRankPositive) {
  QuantizerParams p;
  p.threshold = {1.0};
  p.input_rank = 0;
  EXPECT_ERROR(qi::WeightsSymmetricInferableQuantizer{p}, "input_rank must be >= 1, got 0");
}
TEST(Validation, ChannelAxisWithinInputRank) {
  QuantizerParams p;
  p.threshold = {1.0};
  p.per_channel = true;
  p.channel_axis = -5;
  p.input_rank = 4;
  EXPECT_ERROR(qi::WeightsSymmetricInferableQuantizer{p},
               "channel_axis must be in [-4, 4) for input_rank 4, got -5");
}

// One per-channel value with input_rank and no channel_axis: the value covers every channel (the
// seed's per_channel=True, threshold=2). This read an empty channel_axis once (found by fuzzing).
TEST(Validation, OneValuePerChannelWithInputRankNeedsNoAxis) {
  QuantizerParams p;
  p.threshold = {2.0};
  p.min_range = {-1.0};
  p.max_range = {1.0};
  p.lut_values = {-8, 0, 7};
  p.num_bits = 4;
  p.per_channel = true;
  p.input_rank = 4;
  for (auto kind : {qi::InferableQuantizerKind::WeightsSymmetricInferableQuantizer,
                    qi::InferableQuantizerKind::WeightsUniformInferableQuantizer,
                    qi::InferableQuantizerKind::WeightsLUTSymmetricInferableQuantizer}) {
    const auto q = qi::make_inferable_quantizer(kind, p);
    EXPECT_EQ(q->num_channels(), 1);
    EXPECT_FALSE(q->channel_axis().has_value());
    const std::vector<float> x(2 * 3 * 1 * 1, 0.3f);
    EXPECT_EQ(q->apply(x, {2, 3, 1, 1}).size(), x.size());
    EXPECT_ERROR(q->apply(x, {6}), "tensor rank must equal input_rank 4, got rank 1");
  }
  p.threshold = {2.0, 1.0};
  EXPECT_ERROR(qi::WeightsSymmetricInferableQuantizer{p},
               "channel_axis is required for per-channel quantization with 2 values, got none");
}

// Activation quantizers are per-tensor and document input_rank as ignored (their get_config()
// has no such key): built from QuantizerParams with input_rank set, they must not enforce it in
// apply(), and their config must read back to the same quantizer.
TEST(Validation, ActivationQuantizersIgnoreInputRank) {
  QuantizerParams p;
  p.num_bits = 4;
  p.threshold = {2.0};
  p.min_range = {-1.0};
  p.max_range = {1.0};
  p.lut_values = {-8, 0, 7};
  p.input_rank = 4;
  for (auto kind : {qi::InferableQuantizerKind::ActivationSymmetricInferableQuantizer,
                    qi::InferableQuantizerKind::ActivationPOTInferableQuantizer,
                    qi::InferableQuantizerKind::ActivationUniformInferableQuantizer,
                    qi::InferableQuantizerKind::ActivationLutPOTInferableQuantizer}) {
    SCOPED_TRACE(qi::inferable_quantizer_info(kind).class_name);
    const auto q = qi::make_inferable_quantizer(kind, p);
    EXPECT_FALSE(q->params().input_rank.has_value());
    const std::vector<float> x = {0.3f, -0.7f, 1.5f, 0.0f, 0.25f, -2.0f};
    const std::vector<float> y = q->apply(x, {6});  // rank 1, not 4
    const std::vector<float> y2 = q->apply(x, {2, 3});
    EXPECT_EQ(y, y2);
    // The config (without input_rank) rebuilds a quantizer that gives the same values.
    EXPECT_EQ(q->get_config().find("input_rank"), std::string::npos);
    EXPECT_EQ(qi::inferable_quantizer_from_json(q->to_json())->apply(x, {6}), y);
    // A bad input_rank is ignored too, not rejected.
    QuantizerParams bad = p;
    bad.input_rank = 0;
    EXPECT_EQ(qi::make_inferable_quantizer(kind, bad)->apply(x, {1, 6}), y);
  }
  // Weights quantizers keep enforcing it.
  const auto w = qi::make_inferable_quantizer(
      qi::InferableQuantizerKind::WeightsSymmetricInferableQuantizer, p);
  EXPECT_ERROR(w->apply(std::vector<float>(6, 0.1f), {6}),
               "tensor rank must equal input_rank 4, got rank 1");
}

// ---- ranges ----
TEST(Validation, RangesEmpty) {
  EXPECT_ERROR(qi::WeightsUniformInferableQuantizer(8, {}, {1.0}, true, 0),
               "min_range must hold at least one value");
  EXPECT_ERROR(qi::WeightsUniformInferableQuantizer(8, {-1.0}, {}, true, 0),
               "max_range must hold at least one value");
}
TEST(Validation, RangesLengthMismatch) {
  EXPECT_ERROR(qi::WeightsUniformInferableQuantizer(8, {-1.0, -1.0}, {1.0}, true, 0),
               "min_range and max_range must have the same length, got 2 and 1");
}
TEST(Validation, RangesNotFinite) {
  EXPECT_ERROR(qi::WeightsUniformInferableQuantizer(8, {-kInf}, {1.0}, false),
               "min_range must be finite, got -inf at index 0");
  EXPECT_ERROR(qi::ActivationUniformInferableQuantizer(8, {-1.0}, {kNan}),
               "max_range must be finite, got nan");
}
TEST(Validation, MinNotBelowMax) {
  EXPECT_ERROR(qi::WeightsUniformInferableQuantizer(8, {-1.0, 2.0}, {1.0, 2.0}, true, 0),
               "min_range must be < max_range, got min_range=2 and max_range=2 at index 1");
}
TEST(Validation, RangesBeyondFloat32) {
  EXPECT_ERROR(qi::ActivationUniformInferableQuantizer(8, {-1e39}, {1.0}),
               "min_range and max_range must fit in float32");
}
TEST(Validation, RangeStepNotNormal) {
  EXPECT_ERROR(qi::ActivationUniformInferableQuantizer(8, {-1e-40}, {1e-40}),
               "max_range - min_range must give a finite, normal float32 step");
  EXPECT_ERROR(qi::ActivationUniformInferableQuantizer(8, {-3e38}, {3e38}),
               "must give a finite, normal float32 step");
}

// ---- LUT values ----
TEST(Validation, LutValuesEmpty) {
  EXPECT_ERROR(qi::WeightsLUTSymmetricInferableQuantizer(2, {}, {1.0}, false),
               "lut_values must hold at least one value");
}
TEST(Validation, LutValuesNotFinite) {
  EXPECT_ERROR(qi::WeightsLUTSymmetricInferableQuantizer(2, {1.0, kNan}, {1.0}, false),
               "lut_values must be finite, got nan at index 1");
}
TEST(Validation, LutValuesNotIntegers) {
  EXPECT_ERROR(qi::WeightsLUTSymmetricInferableQuantizer(2, {1.5}, {1.0}, false),
               "lut_values must be integers, got 1.5 at index 0");
}
TEST(Validation, LutValuesOutOfSignedRange) {
  EXPECT_ERROR(qi::WeightsLUTSymmetricInferableQuantizer(2, {-129.0}, {1.0}, false),
               "lut_values must be in [-128, 127] for lut_values_bitwidth 8 (signed), got -129");
  EXPECT_ERROR(qi::WeightsLUTSymmetricInferableQuantizer(2, {128.0}, {1.0}, false),
               "got 128 at index 0");
}
TEST(Validation, LutValuesOutOfUnsignedRange) {
  EXPECT_ERROR(qi::ActivationLutPOTInferableQuantizer(2, {256.0}, {1.0}, false),
               "lut_values must be in [0, 255] for lut_values_bitwidth 8 (unsigned), got 256");
}
TEST(Validation, LutValuesNegativeWhenUnsigned) {
  EXPECT_ERROR(qi::ActivationLutPOTInferableQuantizer(2, {-1.0}, {1.0}, false),
               "lut_values must be >= 0 for unsigned quantization, got -1 at index 0");
}
TEST(Validation, LutValuesTooMany) {
  EXPECT_ERROR(qi::WeightsLUTSymmetricInferableQuantizer(2, {1, 2, 3, 4, 5, 5}, {1.0}, false),
               "lut_values must hold at most 2^num_bits = 4 distinct values, got 5");
}

// ---- at apply time ----
TEST(Validation, ApplyChannelCountMismatch) {
  qi::WeightsSymmetricInferableQuantizer q(8, {1.0, 2.0, 4.0}, true, 1);
  std::vector<float> x(8);
  EXPECT_ERROR(q.apply(x, Shape{2, 4}),
               "the quantizer holds 3 per-channel values but the tensor has 4 channels along "
               "channel_axis 1 (sizes [2, 4])");
}
TEST(Validation, ApplyChannelAxisOutOfRange) {
  qi::WeightsSymmetricInferableQuantizer q(8, {1.0, 2.0}, true, 2);
  std::vector<float> x(4);
  EXPECT_ERROR(q.apply(x, Shape{4}),
               "channel_axis must be in [-1, 1) for a tensor of rank 1, got 2");
}
TEST(Validation, ApplyRankDiffersFromInputRank) {
  qi::WeightsLUTSymmetricInferableQuantizer q(2, {1.0}, {1.0}, true, 0, 4);
  std::vector<float> x(4);
  EXPECT_ERROR(q.apply(x, Shape{1, 4}),
               "tensor rank must equal input_rank 4, got rank 2 (sizes [1, 4])");
}
TEST(Validation, ApplyShapeMismatch) {
  qi::ActivationPOTInferableQuantizer q(8, {1.0}, true);
  std::vector<float> x(4), y(4);
  EXPECT_ERROR(q.apply(qi::ConstTensorView(x.data(), {4}), qi::TensorView(y.data(), {2, 2})),
               "output sizes must equal input sizes [4], got [2, 2]");
}
TEST(Validation, ApplyElementCountMismatch) {
  qi::ActivationPOTInferableQuantizer q(8, {1.0}, true);
  EXPECT_ERROR(q.apply(std::vector<float>(3), Shape{2, 2}),
               "shape [2, 2] holds 4 elements, got 3 values");
}
TEST(Validation, ApplyStridesRankMismatch) {
  qi::ActivationPOTInferableQuantizer q(8, {1.0}, true);
  std::vector<float> x(4), y(4);
  EXPECT_ERROR(q.apply(qi::ConstTensorView(x.data(), {4}, {1, 1}), qi::TensorView(y.data(), {4})),
               "input has 1 sizes but 2 strides");
}
TEST(Validation, ApplyNegativeStride) {
  qi::ActivationPOTInferableQuantizer q(8, {1.0}, true);
  std::vector<float> x(4), y(4);
  EXPECT_ERROR(q.apply(qi::ConstTensorView(x.data() + 3, {4}, {-1}), qi::TensorView(y.data(), {4})),
               "strides must be >= 0");
}
TEST(Validation, ApplyOutputBroadcastStride) {
  qi::ActivationPOTInferableQuantizer q(8, {1.0}, true);
  std::vector<float> x(4), y(4);
  EXPECT_ERROR(q.apply(qi::ConstTensorView(x.data(), {4}), qi::TensorView(y.data(), {4}, {0})),
               "output must not have stride 0 in a dimension of size > 1");
}
TEST(Validation, ApplyPartialOverlap) {
  qi::ActivationPOTInferableQuantizer q(8, {1.0}, true);
  std::vector<float> x(8);
  EXPECT_ERROR(q.apply(qi::ConstTensorView(x.data(), {4}), qi::TensorView(x.data() + 2, {4})),
               "output must be the input view itself (in place) or must not overlap it");
}
TEST(Validation, ApplyNullData) {
  qi::ActivationPOTInferableQuantizer q(8, {1.0}, true);
  std::vector<float> y(4);
  EXPECT_ERROR(q.apply(qi::ConstTensorView(nullptr, {4}), qi::TensorView(y.data(), {4})),
               "tensor data must not be null for 4 elements");
}

// ---- registry / JSON ----
TEST(Validation, NoQuantizerForTargetAndMethod) {
  EXPECT_ERROR(qi::get_inferable_quantizer_class(qi::QuantizationTarget::Activation,
                                                 qi::QuantizationMethod::LUT_SYM_QUANTIZER),
               "no inferable quantizer for target Activation and method LUT_SYM_QUANTIZER");
}
TEST(Validation, UnknownClassName) {
  EXPECT_ERROR(qi::inferable_quantizer_info("WeightsFooInferableQuantizer"),
               "class_name: unknown inferable quantizer \"WeightsFooInferableQuantizer\"");
}
TEST(Validation, ConfigUnknownKey) {
  EXPECT_ERROR(qi::inferable_quantizer_from_config(
                   qi::InferableQuantizerKind::ActivationPOTInferableQuantizer,
                   R"({"num_bits": 8, "threshold": [1.0], "signed": true, "min_range": [0]})"),
               "ActivationPOTInferableQuantizer: unknown key \"min_range\"");
}
TEST(Validation, ConfigMissingKey) {
  EXPECT_ERROR(qi::inferable_quantizer_from_config(
                   qi::InferableQuantizerKind::ActivationPOTInferableQuantizer,
                   R"({"num_bits": 8, "threshold": [1.0]})"),
               "missing key \"signed\"");
}
TEST(Validation, ConfigWrongTypes) {
  const auto kind = qi::InferableQuantizerKind::WeightsSymmetricInferableQuantizer;
  EXPECT_ERROR(qi::inferable_quantizer_from_config(
                   kind, R"({"num_bits": "8", "threshold": [1.0], "per_channel": false})"),
               "\"num_bits\" must be an integer, got string \"8\"");
  EXPECT_ERROR(qi::inferable_quantizer_from_config(
                   kind, R"({"num_bits": 8.5, "threshold": [1.0], "per_channel": false})"),
               "\"num_bits\" must be an integer, got number 8.5");
  EXPECT_ERROR(qi::inferable_quantizer_from_config(
                   kind, R"({"num_bits": 8, "threshold": ["a"], "per_channel": false})"),
               "\"threshold[0]\" must be a number, got string");
  EXPECT_ERROR(qi::inferable_quantizer_from_config(
                   kind, R"({"num_bits": 8, "threshold": [1.0], "per_channel": 1})"),
               "\"per_channel\" must be a boolean, got number 1");
}
TEST(Validation, ConfigHugeNumbers) {
  const auto kind = qi::InferableQuantizerKind::WeightsSymmetricInferableQuantizer;
  EXPECT_ERROR(qi::inferable_quantizer_from_config(
                   kind, R"({"num_bits": 99999999999999999999, "threshold": [1.0], "per_channel": false})"),
               "\"num_bits\" must be an integer");
  EXPECT_ERROR(qi::inferable_quantizer_from_config(
                   kind, R"({"num_bits": 8, "threshold": [1e400], "per_channel": false})"),
               "malformed JSON", "number overflow parsing '1e400'");
  EXPECT_ERROR(qi::inferable_quantizer_from_config(
                   kind, R"({"num_bits": 18446744073709551615, "threshold": [1.0], "per_channel": false})"),
               "\"num_bits\" is out of the int64 range");
}
TEST(Validation, ConfigTruncatedText) {
  EXPECT_ERROR(qi::inferable_quantizer_from_json(R"({"class_name": "WeightsPOTInferableQua)"),
               "inferable_quantizer_from_json: malformed JSON");
}
TEST(Validation, ConfigUnknownProfile) {
  EXPECT_ERROR(qi::inferable_quantizer_from_config(
                   qi::InferableQuantizerKind::ActivationUniformInferableQuantizer,
                   R"({"num_bits": 8, "min_range": [-1], "max_range": [1], "profile": "onnx"})"),
               "profile", "onnx");
}
// ---- FLOAT ----
TEST(Validation, FloatUnknownFormat) {
  EXPECT_ERROR(qi::WeightsFloatInferableQuantizer("E4M4", {1.0}, false),
               "WeightsFloatInferableQuantizer: format must be one of E4M3, E5M2, E3M2, E2M3, "
               "E2M1, got \"E4M4\"");
  EXPECT_ERROR(qi::ActivationFloatInferableQuantizer("e4m3", {1.0}),
               "ActivationFloatInferableQuantizer: format must be one of", "got \"e4m3\"");
}
TEST(Validation, FloatScaleEmpty) {
  EXPECT_ERROR(qi::WeightsFloatInferableQuantizer("E5M2", {}, false),
               "WeightsFloatInferableQuantizer: scale must hold at least one value, got []");
}
TEST(Validation, FloatScaleNotPositive) {
  EXPECT_ERROR(qi::WeightsFloatInferableQuantizer("E4M3", {1.0, 0.0}, true, 0),
               "WeightsFloatInferableQuantizer: scale must be > 0, got 0 at index 1");
  EXPECT_ERROR(qi::ActivationFloatInferableQuantizer("E2M1", {-2.0}),
               "ActivationFloatInferableQuantizer: scale must be > 0, got -2 at index 0");
}
TEST(Validation, FloatScaleNotFinite) {
  EXPECT_ERROR(qi::WeightsFloatInferableQuantizer("E4M3", {kNan}, false),
               "scale must be finite, got nan at index 0");
  EXPECT_ERROR(qi::ActivationFloatInferableQuantizer("E3M2", {kInf}),
               "scale must be finite, got inf at index 0");
}
TEST(Validation, FloatScaleNotNormalFloat32) {
  EXPECT_ERROR(qi::WeightsFloatInferableQuantizer("E4M3", {1e-40}, false),
               "scale must be a normal float32", "got 1e-40 at index 0");
  EXPECT_ERROR(qi::WeightsFloatInferableQuantizer("E4M3", {1e39}, false),
               "scale must be a normal float32", "got 1e+39 at index 0");
}
TEST(Validation, FloatLayout) {
  EXPECT_ERROR(qi::WeightsFloatInferableQuantizer("E4M3", {1.0, 2.0}, false),
               "scale must hold exactly one value for per-tensor quantization, got 2 values");
  EXPECT_ERROR(qi::WeightsFloatInferableQuantizer("E4M3", {1.0, 2.0}, true),
               "channel_axis is required for per-channel quantization with 2 values");
  EXPECT_ERROR(qi::ActivationFloatInferableQuantizer("E4M3", {1.0, 2.0}),
               "scale must hold exactly one value: activation quantization is per-tensor only");
  qi::WeightsFloatInferableQuantizer q("E4M3", {1.0, 2.0}, true, 1);
  EXPECT_ERROR(q.apply(std::vector<float>(6), Shape{2, 3}),
               "the quantizer holds 2 per-channel values but the tensor has 3 channels");
}
TEST(Validation, FloatConfigKeys) {
  const auto kind = qi::InferableQuantizerKind::ActivationFloatInferableQuantizer;
  EXPECT_ERROR(qi::inferable_quantizer_from_config(kind, R"({"format": "E4M3"})"),
               "ActivationFloatInferableQuantizer", "scale");
  EXPECT_ERROR(qi::inferable_quantizer_from_config(kind, R"({"format": 8, "scale": [1]})"),
               "\"format\" must be a string");
  EXPECT_ERROR(
      qi::inferable_quantizer_from_config(kind, R"({"format": "E4M3", "scale": 1, "num_bits": 8})"),
      "unknown key", "num_bits");
}

// ---- groups ----
QuantizerParams grouped_params(std::vector<double> threshold, int64_t group_size,
                               int64_t group_axis, std::optional<int64_t> channel_axis) {
  QuantizerParams p;
  p.num_bits = 4;
  p.threshold = std::move(threshold);
  p.per_channel = channel_axis.has_value();
  p.channel_axis = channel_axis;
  p.group_size = group_size;
  p.group_axis = group_axis;
  return p;
}
TEST(Validation, GroupSizePositive) {
  EXPECT_ERROR(qi::WeightsSymmetricInferableQuantizer(grouped_params({1.0}, 0, -1, std::nullopt)),
               "WeightsSymmetricInferableQuantizer: group_size must be in [1, 2147483647] (or "
               "null: no groups), got 0");
  EXPECT_ERROR(qi::WeightsSymmetricInferableQuantizer(grouped_params({1.0}, -4, -1, 0)),
               "group_size must be in [1, 2147483647]", "got -4");
}
TEST(Validation, GroupsPerChannelNeedChannelAxis) {
  auto p = grouped_params({1.0}, 4, -1, std::nullopt);
  p.per_channel = true;
  EXPECT_ERROR(qi::WeightsSymmetricInferableQuantizer{p},
               "channel_axis is required for per-channel quantization with groups, got none");
}
TEST(Validation, GroupAxisApartFromChannelAxis) {
  EXPECT_ERROR(qi::WeightsSymmetricInferableQuantizer(grouped_params({1.0}, 4, 0, 0)),
               "channel_axis 0 and group_axis 0 must be different axes");
  auto p = grouped_params({1.0}, 4, -2, 0);
  p.input_rank = 2;
  EXPECT_ERROR(qi::WeightsSymmetricInferableQuantizer{p},
               "channel_axis 0 and group_axis -2 must be different axes");
  // Without input_rank the aliasing shows when the tensor comes.
  qi::WeightsSymmetricInferableQuantizer q(grouped_params({1.0, 1.0}, 4, -2, 0));
  EXPECT_ERROR(q.apply(std::vector<float>(8), Shape{2, 4}),
               "channel_axis 0 and group_axis -2 are the same axis of a tensor of rank 2");
}
TEST(Validation, GroupAxisWithinRank) {
  auto p = grouped_params({1.0}, 4, 2, 0);
  p.input_rank = 2;
  EXPECT_ERROR(qi::WeightsSymmetricInferableQuantizer{p},
               "group_axis must be in [-2, 2) for input_rank 2, got 2");
  qi::WeightsSymmetricInferableQuantizer q(grouped_params({1.0}, 4, 3, 0));
  EXPECT_ERROR(q.apply(std::vector<float>(8), Shape{2, 4}),
               "group_axis must be in [-2, 2) for a tensor of rank 2, got 3");
}
TEST(Validation, GroupCountMustFitTheTensor) {
  // [2, 10] in groups of 4 along axis 1: 2 channels x 3 groups (the last one ragged) = 6.
  qi::WeightsSymmetricInferableQuantizer q(grouped_params({1, 1, 1, 1, 1}, 4, 1, 0));
  EXPECT_ERROR(q.apply(std::vector<float>(20), Shape{2, 10}),
               "the quantizer holds 5 values (one per channel and group) but the tensor has 2 "
               "channels along channel_axis 0 x 3 groups of up to 4 along group_axis 1 = 6");
  qi::WeightsUniformInferableQuantizer u([] {
    QuantizerParams p;
    p.num_bits = 8;
    p.min_range = {-1, -1};
    p.max_range = {1, 1};
    p.group_size = 3;
    return p;
  }());
  EXPECT_ERROR(u.apply(std::vector<float>(9), Shape{9}),
               "the quantizer holds 2 values (one per channel and group) but the tensor has 1 row "
               "x 3 groups of up to 3 along group_axis -1 = 3");
  EXPECT_ERROR(qi::check_fits_weight(q, Shape{3, 10}), "holds 5 values", "3 channels", "x 3 groups");
}
TEST(Validation, GroupConfigKeys) {
  const auto kind = qi::InferableQuantizerKind::WeightsFloatInferableQuantizer;
  EXPECT_ERROR(qi::inferable_quantizer_from_config(
                   kind, R"({"format": "E4M3", "scale": [1], "per_channel": false, "group_size": 2.5})"),
               "\"group_size\" must be an integer");
  EXPECT_ERROR(qi::inferable_quantizer_from_config(
                   kind, R"({"format": "E4M3", "scale": [1], "per_channel": false, "group_axis": null})"),
               "\"group_axis\" must be an integer");
}

// ---- MX, NVFP4 ----
TEST(Validation, MxUnknownFormat) {
  EXPECT_ERROR(qi::WeightsMXInferableQuantizer("MXFP4"),
               "WeightsMXInferableQuantizer: format must be one of E4M3, E5M2, E3M2, E2M3, E2M1, "
               "INT8, got \"MXFP4\"");
}
TEST(Validation, MxBlockSize) {
  EXPECT_ERROR(qi::ActivationMXInferableQuantizer("E4M3", 0),
               "ActivationMXInferableQuantizer: block_size must be in [1, 2147483647], got 0");
  EXPECT_ERROR(qi::WeightsMXInferableQuantizer("INT8", -32), "block_size must be in", "got -32");
}
TEST(Validation, BlockAxisWithinRank) {
  EXPECT_ERROR(qi::WeightsMXInferableQuantizer("E4M3", 32, 2, 2),
               "block_axis must be in [-2, 2) for input_rank 2, got 2");
  EXPECT_ERROR(qi::WeightsNVFP4InferableQuantizer(std::nullopt, -3, 2),
               "WeightsNVFP4InferableQuantizer: block_axis must be in [-2, 2) for input_rank 2, "
               "got -3");
  qi::ActivationMXInferableQuantizer q("E4M3", 4, 2);
  EXPECT_ERROR(q.apply(std::vector<float>(8), Shape{2, 4}),
               "block_axis must be in [-2, 2) for a tensor of rank 2, got 2");
}
TEST(Validation, BlockAxisHoldsWholeBlocks) {
  qi::WeightsMXInferableQuantizer q("E2M1", 32, 1);
  EXPECT_ERROR(q.apply(std::vector<float>(80), Shape{2, 40}),
               "WeightsMXInferableQuantizer: the size along block_axis 1 (40) must be a multiple "
               "of block_size 32 (sizes [2, 40])");
  qi::ActivationNVFP4InferableQuantizer n(std::nullopt, 0);
  EXPECT_ERROR(n.apply(std::vector<float>(24), Shape{8, 3}),
               "the size along block_axis 0 (8) must be a multiple of block_size 16");
  EXPECT_ERROR(qi::check_fits_weight(q, Shape{2, 48}), "(48) must be a multiple of block_size 32");
}
TEST(Validation, Nvfp4TensorScale) {
  EXPECT_ERROR(qi::WeightsNVFP4InferableQuantizer(0.0),
               "WeightsNVFP4InferableQuantizer: tensor_scale must be > 0, got 0");
  EXPECT_ERROR(qi::ActivationNVFP4InferableQuantizer(-1.0), "tensor_scale must be > 0, got -1");
  EXPECT_ERROR(qi::ActivationNVFP4InferableQuantizer{kNan}, "tensor_scale must be finite, got nan");
  EXPECT_ERROR(qi::ActivationNVFP4InferableQuantizer(1e-45), "tensor_scale must be a normal float32");
  EXPECT_ERROR(qi::ActivationNVFP4InferableQuantizer(1e36),
               "tensor_scale must be a normal float32", "FLT_MAX / 448", "got 1e+36");
}
TEST(Validation, MxPreScale) {
  EXPECT_ERROR(qi::WeightsMXInferableQuantizer("E4M3", 32, -1, std::nullopt, 0.0),
               "WeightsMXInferableQuantizer: tensor_scale must be > 0, got 0");
  EXPECT_ERROR(qi::ActivationMXInferableQuantizer("E4M3", 32, -1, kNan),
               "ActivationMXInferableQuantizer: tensor_scale must be finite, got nan");
  EXPECT_ERROR(qi::ActivationMXInferableQuantizer("E4M3", 32, -1, 1e-40),
               "tensor_scale must be a normal float32");
  EXPECT_ERROR(qi::ActivationMXInferableQuantizer("E4M3", 32, -1, 1e39),
               "tensor_scale must be a normal float32", "got 1e+39");
  const qi::ActivationMXInferableQuantizer q("E4M3", 4, -1, 0.5);
  EXPECT_EQ(std::get<qi::kernels::MxPlan>(q.plan()).tensor_scale, 0.5f);
  // x / 0.5 = {2, 4, 6, 1}: amax 6, X = 2^(2 - 8); exact on E4M3's grid, so y = x.
  EXPECT_EQ(q.apply({1.f, 2.f, 3.f, 0.5f}, Shape{4}), (std::vector<float>{1.f, 2.f, 3.f, 0.5f}));
  const auto back = qi::kernels::unpack_plan(q.packed_plan().data(),
                                             static_cast<int64_t>(q.packed_plan().size()));
  EXPECT_EQ(std::get<qi::kernels::MxPlan>(back).tensor_scale, 0.5f);
}
TEST(Validation, Nvfp4StoredBlockScales) {
  using W = qi::WeightsNVFP4InferableQuantizer;
  EXPECT_ERROR(W(std::nullopt, -1, std::nullopt, {1.0, 0.3}),
               "WeightsNVFP4InferableQuantizer: block_scales must be FP8 E4M3 values in [2^-6, "
               "448] (0.015625 to 448), got 0.3 at index 1");
  EXPECT_ERROR(W(std::nullopt, -1, std::nullopt, {500.0}), "got 500 at index 0");
  EXPECT_ERROR(W(std::nullopt, -1, std::nullopt, {1.0}, -1),
               "channel_axis -1 and block_axis -1 must be different axes");
  EXPECT_ERROR(W(std::nullopt, 0, 2, {1.0}, 3),
               "channel_axis must be in [-2, 2) for input_rank 2, got 3");
  qi::QuantizerParams p;
  p.block_scales = {1.0};
  EXPECT_ERROR(qi::make_inferable_quantizer(
                   qi::InferableQuantizerKind::WeightsNVFP4InferableQuantizer, p),
               "channel_axis is required with block_scales, got none");
  EXPECT_ERROR(qi::inferable_quantizer_from_config(
                   qi::InferableQuantizerKind::WeightsNVFP4InferableQuantizer,
                   R"({"tensor_scale": null, "block_scales": []})"),
               "block_scales must hold at least one value (or be null), got []");
  const W q(2.0, -1, std::nullopt, {1.0, 0.5, 448.0, 0.015625}, 0);
  EXPECT_EQ(std::get<qi::kernels::FloatPlan>(q.plan()).scale,
            (std::vector<float>{2.f, 1.f, 896.f, 0.03125f}));
  EXPECT_ERROR(q.apply(std::vector<float>(48), Shape{2, 24}),
               "the size along block_axis -1 (24) must be a multiple of block_size 16");
  const auto words = q.packed_plan();
  const auto back = qi::kernels::unpack_plan(words.data(), static_cast<int64_t>(words.size()));
  EXPECT_TRUE(qi::kernels::plan_groups(back).whole);
  EXPECT_ERROR(qi::kernels::check_plan_fits("fits", back, 0, std::nullopt, Shape{2, 24}),
               "fits: the size along block_axis -1 (24) must be a multiple of block_size 16");
  const auto again = qi::inferable_quantizer_from_json(q.to_json());
  EXPECT_EQ(again->get_config(), q.get_config());
}
TEST(Validation, BlockConfigKeys) {
  const auto kind = qi::InferableQuantizerKind::ActivationMXInferableQuantizer;
  EXPECT_ERROR(qi::inferable_quantizer_from_config(kind, R"({"format": "E4M3", "block_size": "32"})"),
               "\"block_size\" must be an integer");
  EXPECT_ERROR(qi::inferable_quantizer_from_config(
                   qi::InferableQuantizerKind::ActivationNVFP4InferableQuantizer,
                   R"({"tensor_scale": "1"})"),
               "\"tensor_scale\" must be a number");
  EXPECT_ERROR(qi::inferable_quantizer_from_config(kind, R"({"format": "E4M3", "scale": [1]})"),
               "unknown key \"scale\"");
}

TEST(Validation, SetNumThreadsPositive) {
  EXPECT_ERROR(qi::set_num_threads(0), "set_num_threads: num_threads must be >= 1, got 0");
}
TEST(Validation, ForceUnknownSimdTarget) {
  EXPECT_ERROR(qi::kernels::force_simd_target("AVX9"),
               "force_simd_target: target \"AVX9\" is not compiled in or not supported here");
}

}  // namespace
