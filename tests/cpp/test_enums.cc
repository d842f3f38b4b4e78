// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "qi/enums.h"
#include "qi/error.h"

namespace {

// Runs fn and checks that it throws qi::Error (not another type) whose message holds `part`.
template <typename F>
void expect_error(F&& fn, const std::string& part) {
  try {
    fn();
    ADD_FAILURE() << "expected qi::Error containing \"" << part << "\", nothing thrown";
  } catch (const qi::Error& e) {
    EXPECT_PRED_FORMAT2(::testing::IsSubstring, part, e.what());
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected qi::Error, got another exception: " << e.what();
  }
}

using qi::QuantizationMethod;
using qi::QuantizationTarget;

const std::vector<std::pair<QuantizationMethod, std::string>> kMethods = {
    {QuantizationMethod::POWER_OF_TWO, "POWER_OF_TWO"},
    {QuantizationMethod::LUT_POT_QUANTIZER, "LUT_POT_QUANTIZER"},
    {QuantizationMethod::SYMMETRIC, "SYMMETRIC"},
    {QuantizationMethod::UNIFORM, "UNIFORM"},
    {QuantizationMethod::LUT_SYM_QUANTIZER, "LUT_SYM_QUANTIZER"},
};

TEST(EnumsTest, QuantizationMethodNamesRoundTrip) {
  for (const auto& [m, name] : kMethods) {
    EXPECT_EQ(qi::to_string(m), name);
    EXPECT_EQ(qi::quantization_method_from_string(name), m);
    EXPECT_EQ(qi::quantization_method_from_string(qi::to_string(m)), m);
  }
}

TEST(EnumsTest, QuantizationMethodMctValues) {
  // mct_quantizers >= 1.5 (KMEANS removed).
  EXPECT_EQ(static_cast<int>(QuantizationMethod::POWER_OF_TWO), 0);
  EXPECT_EQ(static_cast<int>(QuantizationMethod::LUT_POT_QUANTIZER), 1);
  EXPECT_EQ(static_cast<int>(QuantizationMethod::SYMMETRIC), 2);
  EXPECT_EQ(static_cast<int>(QuantizationMethod::UNIFORM), 3);
  EXPECT_EQ(static_cast<int>(QuantizationMethod::LUT_SYM_QUANTIZER), 4);
  for (int64_t v = 0; v < 5; ++v) {
    const auto m = qi::quantization_method_from_value(v);
    EXPECT_EQ(static_cast<int64_t>(m), v);
    EXPECT_EQ(qi::quantization_method_from_string(std::to_string(v)), m);
    EXPECT_EQ(qi::to_string(m), kMethods[static_cast<size_t>(v)].second);
  }
}

TEST(EnumsTest, QuantizationMethodUnknownNameListsChoices) {
  expect_error([] { qi::quantization_method_from_string("FOO"); },
               "QuantizationMethod: unknown name \"FOO\"; expected one of POWER_OF_TWO, "
               "LUT_POT_QUANTIZER, SYMMETRIC, UNIFORM, LUT_SYM_QUANTIZER");
  // Names are case sensitive and not trimmed; a KMEANS config is from an older MCT.
  expect_error([] { qi::quantization_method_from_string("symmetric"); }, "\"symmetric\"");
  expect_error([] { qi::quantization_method_from_string(" SYMMETRIC"); }, "\" SYMMETRIC\"");
  expect_error([] { qi::quantization_method_from_string("KMEANS"); }, "\"KMEANS\"");
  expect_error([] { qi::quantization_method_from_string(""); }, "unknown name \"\"");
  expect_error([] { qi::quantization_method_from_string("2.0"); }, "unknown name \"2.0\"");
  expect_error([] { qi::quantization_method_from_string("-"); }, "unknown name \"-\"");
}

TEST(EnumsTest, QuantizationMethodUnknownValue) {
  expect_error([] { qi::quantization_method_from_value(5); },
               "QuantizationMethod: unknown MCT value 5; expected 0 (POWER_OF_TWO)");
  expect_error([] { qi::quantization_method_from_value(-1); }, "unknown MCT value -1");
  expect_error([] { qi::quantization_method_from_value(INT64_MAX); },
               "unknown MCT value 9223372036854775807");
  expect_error([] { qi::quantization_method_from_string("5"); }, "unknown MCT value 5");
  expect_error([] { qi::quantization_method_from_string("-1"); }, "unknown MCT value -1");
  expect_error([] { qi::quantization_method_from_string("99999999999999999999999"); },
               "unknown MCT value 99999999999999999999999");
}

TEST(EnumsTest, QuantizationTargetRoundTrip) {
  EXPECT_EQ(qi::to_string(QuantizationTarget::Activation), "Activation");
  EXPECT_EQ(qi::to_string(QuantizationTarget::Weights), "Weights");
  for (auto t : {QuantizationTarget::Activation, QuantizationTarget::Weights})
    EXPECT_EQ(qi::quantization_target_from_string(qi::to_string(t)), t);
  // The QI-era integer values.
  EXPECT_EQ(qi::quantization_target_from_string("0"), QuantizationTarget::Activation);
  EXPECT_EQ(qi::quantization_target_from_string("1"), QuantizationTarget::Weights);
}

TEST(EnumsTest, QuantizationTargetBadInput) {
  expect_error([] { qi::quantization_target_from_string("weights"); },
               "QuantizationTarget: unknown name \"weights\"; expected one of Activation, Weights");
  expect_error([] { qi::quantization_target_from_string("2"); },
               "QuantizationTarget: unknown value 2; expected 0 (Activation) or 1 (Weights)");
  expect_error([] { qi::quantization_target_from_string("-1"); }, "unknown value -1");
}

TEST(EnumsTest, TrainingMethodRoundTrip) {
  const std::vector<std::pair<qi::TrainingMethod, std::string>> all = {
      {qi::TrainingMethod::STE, "STE"},
      {qi::TrainingMethod::DQA, "DQA"},
      {qi::TrainingMethod::LSQ, "LSQ"},
      {qi::TrainingMethod::SoftRounding, "SoftRounding"},
  };
  for (const auto& [t, name] : all) {
    EXPECT_EQ(qi::to_string(t), name);
    EXPECT_EQ(qi::training_method_from_string(name), t);
  }
  expect_error([] { qi::training_method_from_string("ste"); },
               "TrainingMethod: unknown name \"ste\"; expected one of STE, DQA, LSQ, "
               "SoftRounding");
  // Only the method and the target take integer values.
  expect_error([] { qi::training_method_from_string("0"); }, "unknown name \"0\"");
}

TEST(EnumsTest, VariableGroupRoundTrip) {
  EXPECT_EQ(qi::to_string(qi::VariableGroup::WEIGHTS), "WEIGHTS");
  EXPECT_EQ(qi::to_string(qi::VariableGroup::QPARAMS), "QPARAMS");
  EXPECT_EQ(qi::variable_group_from_string("WEIGHTS"), qi::VariableGroup::WEIGHTS);
  EXPECT_EQ(qi::variable_group_from_string("QPARAMS"), qi::VariableGroup::QPARAMS);
  expect_error([] { qi::variable_group_from_string("BIAS"); },
               "VariableGroup: unknown name \"BIAS\"; expected one of WEIGHTS, QPARAMS");
}

TEST(EnumsTest, NumericProfileRoundTrip) {
  EXPECT_EQ(qi::to_string(qi::NumericProfile::kTorch), "torch");
  EXPECT_EQ(qi::to_string(qi::NumericProfile::kTf), "tf");
  EXPECT_EQ(qi::numeric_profile_from_string("torch"), qi::NumericProfile::kTorch);
  EXPECT_EQ(qi::numeric_profile_from_string("tf"), qi::NumericProfile::kTf);
  expect_error([] { qi::numeric_profile_from_string("keras"); },
               "NumericProfile: unknown name \"keras\"; expected one of torch, tf");
  expect_error([] { qi::numeric_profile_from_string("kTorch"); }, "\"kTorch\"");
}

TEST(EnumsTest, ToStringRejectsValuesOutsideTheEnum) {
  expect_error([] { qi::to_string(static_cast<QuantizationMethod>(7)); },
               "QuantizationMethod: invalid enum value 7");
  expect_error([] { qi::to_string(static_cast<QuantizationTarget>(2)); },
               "QuantizationTarget: invalid enum value 2");
  expect_error([] { qi::to_string(static_cast<qi::TrainingMethod>(-1)); },
               "TrainingMethod: invalid enum value -1");
  expect_error([] { qi::to_string(static_cast<qi::VariableGroup>(5)); },
               "VariableGroup: invalid enum value 5");
  expect_error([] { qi::to_string(static_cast<qi::NumericProfile>(9)); },
               "NumericProfile: invalid enum value 9");
}

}  // namespace
