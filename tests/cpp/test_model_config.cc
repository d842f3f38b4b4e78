// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Whole-model quantization configs: presets, JSON, overrides, skip lists and their errors.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "qi/error.h"
#include "qi/inferable_quantizers.h"
#include "qi/trainable_quantizers.h"
#include "qi/model_config.h"

namespace {

using qi::ModelQuantizationConfig;
using testing::HasSubstr;

std::string error_of(const std::string& json) {
  try {
    ModelQuantizationConfig::from_json(json);
  } catch (const qi::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ModelConfig, PresetsRoundTripThroughJson) {
  for (const auto& name : ModelQuantizationConfig::preset_names()) {
    const auto c = ModelQuantizationConfig::preset(name);
    EXPECT_EQ(ModelQuantizationConfig::from_json(c.to_json()), c) << name;
    EXPECT_EQ(ModelQuantizationConfig::from_json("{\"preset\": \"" + name + "\"}"), c) << name;
  }
  const auto w8a8 = ModelQuantizationConfig::preset("w8a8");
  ASSERT_TRUE(w8a8.weights && w8a8.activations);
  EXPECT_TRUE(w8a8.weights->per_channel);
  EXPECT_FALSE(ModelQuantizationConfig::preset("w8_weight_only").activations);
  EXPECT_EQ(ModelQuantizationConfig::preset("w4a8_lsq").weights->training,
            qi::TrainingMethod::LSQ);
}

TEST(ModelConfig, OverridesAndSkipResolveInOrder) {
  const auto c = ModelQuantizationConfig::from_json(R"({"preset": "w8a8",
      "overrides": [{"type": "Linear", "weights": {"n_bits": 4}},
                    {"name": "head.*", "activations": null},
                    {"name": "head.fc", "weights": {"method": "UNIFORM"}}],
      "skip": ["stem", {"type": "Embedding"}]})");
  auto l = c.resolve("head.fc", "Linear");
  ASSERT_TRUE(l.weights);
  EXPECT_EQ(l.weights->n_bits, 4);
  EXPECT_EQ(l.weights->method, qi::QuantizationMethod::UNIFORM);
  EXPECT_FALSE(l.activations);
  EXPECT_TRUE(c.resolve("stem", "Conv2d").skipped);
  EXPECT_TRUE(c.resolve("tok", "Embedding").skipped);
  EXPECT_EQ(c.resolve("body.conv", "Conv2d").weights->n_bits, 8);
}

TEST(ModelConfig, GlobMatch) {
  EXPECT_TRUE(qi::glob_match("layer1.*", "layer1.0.conv1"));
  EXPECT_TRUE(qi::glob_match("*.conv?", "a.b.conv2"));
  EXPECT_FALSE(qi::glob_match("layer1.*", "layer10"));
  EXPECT_TRUE(qi::glob_match("*", ""));
  EXPECT_FALSE(qi::glob_match("a?", "a"));
}

TEST(ModelConfig, ErrorsNameTheKeyAndValue) {
  EXPECT_THAT(error_of(R"({"preset": "w9a9"})"),
              HasSubstr("unknown preset \"w9a9\"; known presets: w8a8, w4a8_lsq, w8_weight_only"));
  EXPECT_THAT(error_of(R"({"wieghts": {}})"), HasSubstr("model config: unknown key \"wieghts\""));
  EXPECT_THAT(error_of(R"({"weights": {"nbits": 4}})"),
              HasSubstr("model config: weights: unknown key \"nbits\""));
  EXPECT_THAT(error_of(R"({"activations": {"per_channel": true}})"),
              HasSubstr("activation quantizers are per tensor"));
  EXPECT_THAT(error_of(R"({"weights": {"method": "LUT_POT_QUANTIZER"}})"),
              HasSubstr("\"method\" must be one of SYMMETRIC, POWER_OF_TWO, UNIFORM"));
  EXPECT_THAT(error_of(R"({"overrides": [{"weights": {"n_bits": 4}}]})"),
              HasSubstr("overrides[0]: give \"name\" (a pattern) and/or \"type\""));
  EXPECT_THAT(error_of(R"({"preset": "w8a8", "overrides": [{"name": "x", "weights": {"n_bits": 1}}]})"),
              HasSubstr("overrides[0].weights: \"n_bits\" must be in [2, 16], got 1"));
  EXPECT_THAT(error_of(R"({"activation_ops": ["mul"]})"),
              HasSubstr("activation_ops[0] must be one of add, cat, matmul, got \"mul\""));
  EXPECT_THAT(error_of(R"({"weights": {"calibration": "entropy"}})"),
              HasSubstr("unknown calibration method \"entropy\""));
}

TEST(ModelConfig, CalibrateWeightsAndActivationsFollowTheSpec) {
  const std::vector<float> w = {0.5f, -3.f, 1.f, 0.25f, 2.f, -0.5f};  // [2, 3]
  auto spec = qi::TensorQuantizationSpec::from_json(R"({"method": "POWER_OF_TWO",
      "calibration": "minmax"})", /*weights=*/true);
  const auto p = qi::calibrate_weights(spec, qi::ConstTensorView(w.data(), {2, 3}), 0);
  EXPECT_EQ(p.threshold, (std::vector<double>{4.0, 2.0}));  // max |w| rounded up per row
  spec = qi::TensorQuantizationSpec::from_json(R"({"method": "UNIFORM", "per_channel": false,
      "calibration": "minmax"})", true);
  const auto u = qi::calibrate_weights(spec, qi::ConstTensorView(w.data(), {2, 3}), 0);
  EXPECT_EQ(u.min_range, std::vector<double>{-3.0});
  EXPECT_EQ(u.max_range, std::vector<double>{2.0});

  qi::calibration::Histogram h(64);
  const std::vector<float> relu = {0.f, 0.5f, 3.f, 1.f};
  h.update(qi::ConstTensorView(relu.data(), {4}));
  const auto a = qi::calibrate_activations(
      qi::TensorQuantizationSpec::from_json(R"({"method": "SYMMETRIC"})", false), h);
  EXPECT_FALSE(a.is_signed);
  EXPECT_EQ(a.threshold, std::vector<double>{3.0});
  try {
    qi::TensorQuantizationSpec::from_json(R"({"per_channel": true})", false);
    FAIL();
  } catch (const qi::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("activations spec: \"per_channel\" must be false"));
  }
}

// ---- the quantizers of calibrated sites ----------------------------------------------------------

template <class F>
std::string error_text(F&& f) {
  try {
    f();
  } catch (const qi::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ModelQuantizers, InferableAndTrainableFromOneSpec) {
  auto spec = *ModelQuantizationConfig::preset("w4a8_lsq").weights;  // 4-bit per-channel, LSQ
  qi::CalibratedParams p;
  p.threshold = {0.5, 1.0, 2.0};
  // QAT: the registry's LSQ class, thresholds shaped along axis 1 of a rank-4 weight.
  const auto t = qi::make_weights_quantizer(spec, p, 4, 1);
  ASSERT_TRUE(t->is_trainable());
  EXPECT_STREQ(t->class_name(), "LSQWeightQATQuantizer");
  EXPECT_THAT(t->to_json(), HasSubstr("\"weights_channels_axis\":1"));
  // PTQ: the same spec without training is the inferable class with the same parameters.
  spec.training.reset();
  const auto q = qi::make_weights_quantizer(spec, p, 4, -3);
  ASSERT_FALSE(q->is_trainable());
  EXPECT_STREQ(q->class_name(), "WeightsSymmetricInferableQuantizer");
  const auto& inf = dynamic_cast<const qi::BaseInferableQuantizer&>(*q);
  EXPECT_EQ(inf.params().threshold, p.threshold);
  EXPECT_EQ(inf.params().channel_axis, 1);

  auto act = *ModelQuantizationConfig::preset("w8a8").activations;  // 8-bit uniform
  qi::CalibratedParams r;
  r.min_range = {-1.0};
  r.max_range = {3.0};
  EXPECT_STREQ(qi::make_activation_quantizer(act, r)->class_name(),
               "ActivationUniformInferableQuantizer");
  act.training = qi::TrainingMethod::STE;
  EXPECT_STREQ(qi::make_activation_quantizer(act, r)->class_name(), "STEUniformActivationTrainableQuantizer");
}

TEST(ModelQuantizers, BadParametersRaise) {
  const auto w = *ModelQuantizationConfig::preset("w8a8").weights;
  qi::CalibratedParams p;
  p.threshold = {1.0};
  EXPECT_THAT(error_text([&] { qi::make_weights_quantizer(w, p, 0, 0); }),
              HasSubstr("make_weights_quantizer: the weight's rank must be >= 1, got 0"));
  EXPECT_THAT(error_text([&] { qi::make_weights_quantizer(w, p, 2, 2); }),
              HasSubstr("make_weights_quantizer: channel_axis 2 is out of range for a weight of rank 2"));
  auto lsq = *ModelQuantizationConfig::preset("w4a8_lsq").weights;
  EXPECT_THAT(error_text([&] { qi::make_weights_quantizer(lsq, qi::CalibratedParams{}, 2, 0); }),
              HasSubstr("make_weights_quantizer: no calibrated value"));
  const auto a = *ModelQuantizationConfig::preset("w8a8").activations;
  qi::CalibratedParams two;
  two.min_range = {-1.0, -2.0};
  two.max_range = {1.0, 2.0};
  EXPECT_THAT(error_text([&] { qi::make_activation_quantizer(a, two); }),
              HasSubstr("make_activation_quantizer: activations take one calibrated value per "
                        "tensor, got 2"));
}

}  // namespace

// ---- formats and groups -----------------------------------------------------------------------

TEST(ModelFormats, WeightInputAxis) {
  EXPECT_EQ(qi::weight_input_axis(2, 0), 1);   // PyTorch Linear [out, in]
  EXPECT_EQ(qi::weight_input_axis(4, 0), 1);   // PyTorch Conv2d [out, in, kh, kw]
  EXPECT_EQ(qi::weight_input_axis(2, -1), 0);  // Keras Dense [in, out]
  EXPECT_EQ(qi::weight_input_axis(4, 3), 2);   // Keras Conv2D [kh, kw, in, out]
  EXPECT_EQ(qi::weight_input_axis(4, 1), 0);   // PyTorch ConvTranspose2d [in, out, kh, kw]
  EXPECT_THAT(error_text([] { qi::weight_input_axis(1, 0); }),
              HasSubstr("weight_input_axis: groups and blocks lie along a weight's input axis, "
                        "which a weight of rank 1 does not have"));
}

TEST(ModelFormats, GroupsCalibrateEachGroupInChannelGroupOrder) {
  // [2, 5] with groups of 2 along axis 1: groups {0,1}, {2,3}, {4} (ragged).
  const std::vector<float> w = {1, -2, 3, 0.5f, -7, /**/ 0.25f, 4, -1, 2, 6};
  const auto spec = qi::TensorQuantizationSpec::from_json(
      R"({"calibration": "minmax", "group_size": 2})", true);
  const auto p = qi::calibrate_weights(spec, qi::ConstTensorView(w.data(), {2, 5}), 0);
  EXPECT_EQ(p.threshold, (std::vector<double>{2, 3, 7, 4, 2, 6}));
  const auto q = qi::make_weights_quantizer(spec, p, 2, 0);
  const auto& inf = dynamic_cast<const qi::BaseInferableQuantizer&>(*q);
  EXPECT_EQ(inf.params().group_size, 2);
  EXPECT_EQ(inf.params().group_axis, 1);
  std::vector<float> out(10);
  inf.apply(qi::ConstTensorView(w.data(), {2, 5}), qi::TensorView(out.data(), {2, 5}));
  EXPECT_EQ(out[4], -7.f);  // the group's own max is on the grid
}

TEST(ModelFormats, FloatScalesAndNvfp4TensorScale) {
  const std::vector<float> w(64, 0.5f);
  std::vector<float> v = w;
  v[3] = -896.f;  // row 0's max |x| = 2 * 448
  const auto f = qi::TensorQuantizationSpec::from_json(R"({"method": "FLOAT"})", true);
  const auto p = qi::calibrate_weights(f, qi::ConstTensorView(v.data(), {2, 32}), 0);
  EXPECT_EQ(p.scale, (std::vector<double>{2.0, 0.5 / 448}));
  EXPECT_TRUE(p.threshold.empty());
  EXPECT_STREQ(qi::make_weights_quantizer(f, p, 2, 0)->class_name(),
               "WeightsFloatInferableQuantizer");
  const auto n = qi::TensorQuantizationSpec::from_json(R"({"method": "NVFP4"})", true);
  const auto t = qi::calibrate_weights(n, qi::ConstTensorView(v.data(), {2, 32}), 0);
  ASSERT_TRUE(t.tensor_scale.has_value());
  EXPECT_DOUBLE_EQ(*t.tensor_scale, 896.0 / (448.0 * 6.0));
  const auto q = qi::make_weights_quantizer(n, t, 2, 0);
  EXPECT_EQ(dynamic_cast<const qi::BaseInferableQuantizer&>(*q).params().block_axis, 1);
  EXPECT_EQ(error_text([&] {
              qi::calibrate_weights(n, qi::ConstTensorView(v.data(), {4, 16, 1}), 0);
            }),
            "(no error)");
  EXPECT_THAT(error_text([&] {
                qi::calibrate_weights(n, qi::ConstTensorView(v.data(), {8, 8}), 0);
              }),
              HasSubstr("NVFP4 blocks of 16 elements lie along the weight's input axis 1, whose "
                        "size 8 is not a multiple of 16 (weight sizes [8, 8])"));
}
