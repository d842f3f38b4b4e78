// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Whole-model quantization configs: presets, JSON, overrides, skip lists and their errors.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "qi/error.h"
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

}  // namespace
