// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "qi/configs.h"
#include "qi/error.h"
#include "qi/version.h"

namespace {

using Json = nlohmann::json;
using qi::ParamArray;
using qi::QuantizationMethod;
using qi::QuantizationParams;
using qi::TrainableQuantizerActivationConfig;
using qi::TrainableQuantizerCandidateConfig;
using qi::TrainableQuantizerWeightsConfig;

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

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A weights config using every kind of parameter value and candidates.
TrainableQuantizerWeightsConfig full_weights_config() {
  TrainableQuantizerWeightsConfig c;
  c.weights_quantization_method = QuantizationMethod::POWER_OF_TWO;
  c.weights_n_bits = 4;
  c.weights_quantization_params = {
      {"threshold", ParamArray{{3, 1, 1, 1}, {0.5, 1.25, 3.0}}},
      {"is_signed", true},
      {"scale", 0.1},
  };
  c.enable_weights_quantization = false;
  c.weights_channels_axis = -1;
  c.weights_per_channel_threshold = false;
  c.min_threshold = 1.0 / 3.0;
  c.weights_bits_candidates = std::vector<TrainableQuantizerCandidateConfig>{
      {8, {{"threshold", ParamArray{{2}, {1.0, 2.0}}}}},
      {2, {{"range_min", -0.7}, {"range_max", 0.3}, {"is_signed", false}}},
  };
  return c;
}

TrainableQuantizerActivationConfig full_activation_config() {
  TrainableQuantizerActivationConfig c;
  c.activation_quantization_method = QuantizationMethod::UNIFORM;
  c.activation_n_bits = 16;
  c.activation_quantization_params = {
      {"range_min", -6.1},
      {"range_max", ParamArray{{}, {6.2}}},
      {"is_signed", false},
  };
  c.enable_activation_quantization = true;
  c.min_threshold = 0.0;
  c.activation_bits_candidates = std::vector<TrainableQuantizerCandidateConfig>{
      {4, {}},
      {8, {{"threshold", 2.0}}},
  };
  return c;
}

// get_config() of the full weights config, edited by `edit`, back through from_config().
TrainableQuantizerWeightsConfig weights_from_edited(const std::function<void(Json&)>& edit) {
  Json j = Json::parse(full_weights_config().get_config());
  edit(j);
  return TrainableQuantizerWeightsConfig::from_config(j.dump());
}

TrainableQuantizerActivationConfig activation_from_edited(const std::function<void(Json&)>& edit) {
  Json j = Json::parse(full_activation_config().get_config());
  edit(j);
  return TrainableQuantizerActivationConfig::from_config(j.dump());
}

const std::vector<std::string> kWeightsKeys = {
    "weights_quantization_method", "weights_n_bits",       "weights_quantization_params",
    "enable_weights_quantization", "weights_channels_axis", "weights_per_channel_threshold",
    "min_threshold",               "is_weights",            "is_activations"};
const std::vector<std::string> kActivationKeys = {
    "activation_quantization_method", "activation_n_bits", "activation_quantization_params",
    "enable_activation_quantization", "min_threshold",     "is_weights",
    "is_activations"};

// ---- defaults, equality, round trips ----------------------------------------------------------

TEST(TrainableConfigTest, DefaultsFollowMct) {
  TrainableQuantizerWeightsConfig w;
  EXPECT_EQ(w.weights_quantization_method, QuantizationMethod::SYMMETRIC);
  EXPECT_EQ(w.weights_n_bits, 8);
  EXPECT_EQ(w.min_threshold, std::ldexp(1.0, -16));
  EXPECT_FALSE(w.weights_bits_candidates.has_value());
  EXPECT_NO_THROW(w.validate());
  TrainableQuantizerActivationConfig a;
  EXPECT_EQ(a.activation_n_bits, 8);
  EXPECT_NO_THROW(a.validate());
}

TEST(TrainableConfigTest, EqualityComparesEveryField) {
  const auto base = full_weights_config();
  EXPECT_EQ(base, full_weights_config());
  std::vector<std::function<void(TrainableQuantizerWeightsConfig&)>> edits = {
      [](auto& c) { c.weights_quantization_method = QuantizationMethod::SYMMETRIC; },
      [](auto& c) { c.weights_n_bits = 5; },
      [](auto& c) { c.weights_quantization_params["is_signed"] = false; },
      [](auto& c) { std::get<ParamArray>(c.weights_quantization_params["threshold"]).shape = {3}; },
      [](auto& c) { c.enable_weights_quantization = true; },
      [](auto& c) { c.weights_channels_axis = 0; },
      [](auto& c) { c.weights_per_channel_threshold = true; },
      [](auto& c) { c.min_threshold = 0.25; },
      [](auto& c) { c.weights_bits_candidates = std::nullopt; },
      [](auto& c) { (*c.weights_bits_candidates)[1].n_bits = 3; },
  };
  for (size_t i = 0; i < edits.size(); ++i) {
    auto c = full_weights_config();
    edits[i](c);
    EXPECT_FALSE(c == base) << "edit " << i;
  }
  auto a = full_activation_config();
  EXPECT_EQ(a, full_activation_config());
  a.activation_bits_candidates = std::nullopt;
  EXPECT_FALSE(a == full_activation_config());
}

TEST(TrainableConfigTest, WeightsRoundTripWithEveryParamKind) {
  const auto c = full_weights_config();
  const auto back = TrainableQuantizerWeightsConfig::from_config(c.get_config());
  EXPECT_EQ(back, c);
  EXPECT_EQ(back.get_config(), c.get_config());
}

TEST(TrainableConfigTest, ActivationRoundTripWithEveryParamKind) {
  const auto c = full_activation_config();
  const auto back = TrainableQuantizerActivationConfig::from_config(c.get_config());
  EXPECT_EQ(back, c);
  EXPECT_EQ(back.get_config(), c.get_config());
}

TEST(TrainableConfigTest, DefaultConfigsRoundTrip) {
  TrainableQuantizerWeightsConfig w;
  EXPECT_EQ(TrainableQuantizerWeightsConfig::from_config(w.get_config()), w);
  TrainableQuantizerActivationConfig a;
  EXPECT_EQ(TrainableQuantizerActivationConfig::from_config(a.get_config()), a);
  // An empty candidate list is not the same as no candidates.
  w.weights_bits_candidates.emplace();
  const auto back = TrainableQuantizerWeightsConfig::from_config(w.get_config());
  ASSERT_TRUE(back.weights_bits_candidates.has_value());
  EXPECT_TRUE(back.weights_bits_candidates->empty());
}

TEST(TrainableConfigTest, DoublesRoundTripExactly) {
  const std::vector<double> values = {0.1,
                                      1.0 / 3.0,
                                      2.0 / 3.0,
                                      std::nextafter(1.0, 2.0),
                                      1e-300,
                                      std::numeric_limits<double>::denorm_min(),
                                      std::numeric_limits<double>::min(),
                                      std::numeric_limits<double>::max(),
                                      -std::numeric_limits<double>::max(),
                                      -0.0,
                                      123456789.123456789,
                                      std::ldexp(1.0, -16)};
  TrainableQuantizerActivationConfig c;
  c.activation_quantization_params["v"] = ParamArray{{static_cast<int64_t>(values.size())}, values};
  for (size_t i = 0; i < values.size(); ++i) {
    c.activation_quantization_params["d" + std::to_string(i)] = values[i];
    if (values[i] >= 0) c.min_threshold = values[i];
    const auto back = TrainableQuantizerActivationConfig::from_config(c.get_config());
    ASSERT_EQ(back, c) << "value " << i;
    EXPECT_EQ(back.min_threshold, c.min_threshold);
  }
  const auto back = TrainableQuantizerActivationConfig::from_config(c.get_config());
  const auto& v = std::get<ParamArray>(back.activation_quantization_params.at("v")).values;
  for (size_t i = 0; i < values.size(); ++i) {
    EXPECT_EQ(v[i], values[i]) << i;
    EXPECT_EQ(std::signbit(v[i]), std::signbit(values[i])) << i;
  }
}

// ---- get_config() contents --------------------------------------------------------------------

TEST(TrainableConfigTest, WeightsGetConfigHoldsEveryFieldByName) {
  const Json j = Json::parse(full_weights_config().get_config());
  for (const auto& k : kWeightsKeys) EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_TRUE(j.contains("weights_bits_candidates"));
  EXPECT_EQ(j.size(), kWeightsKeys.size() + 2);  // + candidates + qi_version
  EXPECT_EQ(j["weights_quantization_method"], "POWER_OF_TWO");
  EXPECT_EQ(j["weights_n_bits"], 4);
  EXPECT_EQ(j["enable_weights_quantization"], false);
  EXPECT_EQ(j["weights_channels_axis"], -1);
  EXPECT_EQ(j["weights_per_channel_threshold"], false);
  EXPECT_EQ(j["min_threshold"].get<double>(), 1.0 / 3.0);
  EXPECT_EQ(j["is_weights"], true);
  EXPECT_EQ(j["is_activations"], false);
  EXPECT_EQ(j["qi_version"], qi::kVersion);
  const Json& p = j["weights_quantization_params"];
  EXPECT_EQ(p["is_signed"], true);
  EXPECT_TRUE(p["scale"].is_number_float());
  EXPECT_EQ(p["scale"].get<double>(), 0.1);
  EXPECT_EQ(p["threshold"], Json::parse(R"({"shape": [3, 1, 1, 1], "values": [0.5, 1.25, 3.0]})"));
  const Json& cands = j["weights_bits_candidates"];
  ASSERT_TRUE(cands.is_array());
  ASSERT_EQ(cands.size(), 2u);
  EXPECT_EQ(cands[0]["n_bits"], 8);
  EXPECT_EQ(cands[0]["quantization_params"]["threshold"]["shape"], Json::parse("[2]"));
  EXPECT_EQ(cands[1]["quantization_params"]["is_signed"], false);
}

TEST(TrainableConfigTest, ActivationGetConfigHoldsEveryFieldByName) {
  const Json j = Json::parse(TrainableQuantizerActivationConfig().get_config());
  for (const auto& k : kActivationKeys) EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j.size(), kActivationKeys.size() + 2);
  EXPECT_EQ(j["activation_quantization_method"], "SYMMETRIC");
  EXPECT_EQ(j["is_weights"], false);
  EXPECT_EQ(j["is_activations"], true);
  EXPECT_TRUE(j["activation_bits_candidates"].is_null());
  EXPECT_TRUE(j["activation_quantization_params"].is_object());
  EXPECT_EQ(j["qi_version"], qi::kVersion);
}

// ---- what from_config() accepts besides its own output ----------------------------------------

TEST(TrainableConfigTest, FromConfigAcceptsMctIntegerMethod) {
  const std::vector<std::pair<int, QuantizationMethod>> values = {
      {0, QuantizationMethod::POWER_OF_TWO},
      {1, QuantizationMethod::LUT_POT_QUANTIZER},
      {2, QuantizationMethod::SYMMETRIC},
      {3, QuantizationMethod::UNIFORM},
      {4, QuantizationMethod::LUT_SYM_QUANTIZER}};
  for (const auto& [v, m] : values) {
    auto w = weights_from_edited([v = v](Json& j) { j["weights_quantization_method"] = v; });
    EXPECT_EQ(w.weights_quantization_method, m);
    auto a = activation_from_edited([v = v](Json& j) {
      j["activation_quantization_method"] = std::to_string(v);
    });
    EXPECT_EQ(a.activation_quantization_method, m);
  }
}

TEST(TrainableConfigTest, FromConfigOptionalKeys) {
  // Configs written by MCT carry neither qi_version nor (in old versions) candidates.
  auto w = weights_from_edited([](Json& j) {
    j.erase("qi_version");
    j.erase("weights_bits_candidates");
  });
  EXPECT_FALSE(w.weights_bits_candidates.has_value());
  auto a = activation_from_edited([](Json& j) {
    j.erase("qi_version");
    j.erase("activation_bits_candidates");
  });
  EXPECT_FALSE(a.activation_bits_candidates.has_value());
}

TEST(TrainableConfigTest, FromConfigReadsPlainNumbersAndNestedLists) {
  auto w = weights_from_edited([](Json& j) {
    j["weights_quantization_params"] =
        Json::parse(R"({"threshold": [[1.5], [2]], "flat": [1, 2, 3], "empty": [],
                        "n": 2, "grid": [[[]], [[]]]})");
  });
  const auto& p = w.weights_quantization_params;
  EXPECT_EQ(std::get<ParamArray>(p.at("threshold")), (ParamArray{{2, 1}, {1.5, 2.0}}));
  EXPECT_EQ(std::get<ParamArray>(p.at("flat")), (ParamArray{{3}, {1.0, 2.0, 3.0}}));
  EXPECT_EQ(std::get<ParamArray>(p.at("empty")), (ParamArray{{0}, {}}));
  EXPECT_EQ(std::get<ParamArray>(p.at("grid")), (ParamArray{{2, 1, 0}, {}}));
  EXPECT_EQ(std::get<double>(p.at("n")), 2.0);
}

// ---- validate(): every range rule -------------------------------------------------------------

TEST(TrainableConfigTest, ValidateNBitsRange) {
  // The limits of the quantizers of each method: 2..16, LUT 1..16.
  for (int64_t bits : {int64_t{2}, int64_t{16}}) {
    TrainableQuantizerWeightsConfig w;
    w.weights_n_bits = bits;
    EXPECT_NO_THROW(w.validate());
    TrainableQuantizerActivationConfig a;
    a.activation_n_bits = bits;
    EXPECT_NO_THROW(a.validate());
  }
  TrainableQuantizerWeightsConfig lut;
  lut.weights_quantization_method = QuantizationMethod::LUT_POT_QUANTIZER;
  lut.weights_n_bits = 1;
  EXPECT_NO_THROW(lut.validate());
  lut.weights_n_bits = 17;
  expect_error([&] { lut.validate(); },
               "weights_n_bits must be in [1, 16] for LUT_POT_QUANTIZER quantization, got 17");
  for (int64_t bits : {int64_t{0}, int64_t{1}, int64_t{17}, int64_t{-8}, INT64_MAX}) {
    TrainableQuantizerWeightsConfig w;
    w.weights_n_bits = bits;
    expect_error([&] { w.validate(); },
                 "TrainableQuantizerWeightsConfig: weights_n_bits must be in [2, 16] for "
                 "SYMMETRIC quantization, got " + std::to_string(bits));
    TrainableQuantizerActivationConfig a;
    a.activation_n_bits = bits;
    expect_error([&] { a.validate(); },
                 "TrainableQuantizerActivationConfig: activation_n_bits must be in [2, 16] for "
                 "SYMMETRIC quantization, got " + std::to_string(bits));
  }
}

TEST(TrainableConfigTest, ValidateMinThreshold) {
  const std::vector<std::pair<double, std::string>> bad = {
      {-1.0, "-1"}, {-1e-300, "-1e-300"}, {kNaN, "nan"}, {kInf, "inf"}, {-kInf, "-inf"}};
  for (const auto& [t, shown] : bad) {
    TrainableQuantizerWeightsConfig w;
    w.min_threshold = t;
    expect_error([&] { w.validate(); },
                 "TrainableQuantizerWeightsConfig: min_threshold must be finite and >= 0, got " +
                     shown);
    TrainableQuantizerActivationConfig a;
    a.min_threshold = t;
    expect_error([&] { a.validate(); },
                 "TrainableQuantizerActivationConfig: min_threshold must be finite and >= 0, got " +
                     shown);
  }
  TrainableQuantizerWeightsConfig w;
  w.min_threshold = 0.0;
  EXPECT_NO_THROW(w.validate());
}

TEST(TrainableConfigTest, ValidateParamDoublesFinite) {
  for (double bad : {kNaN, kInf, -kInf}) {
    TrainableQuantizerWeightsConfig w;
    w.weights_quantization_params["threshold"] = bad;
    expect_error([&] { w.validate(); },
                 "weights_quantization_params[\"threshold\"] must be finite, got");
    TrainableQuantizerActivationConfig a;
    a.activation_quantization_params["range_max"] = ParamArray{{2}, {1.0, bad}};
    expect_error([&] { a.validate(); },
                 "activation_quantization_params[\"range_max\"].values[1] must be finite, got");
  }
}

TEST(TrainableConfigTest, ValidateParamArrayShape) {
  TrainableQuantizerWeightsConfig w;
  w.weights_quantization_params["t"] = ParamArray{{2, -1}, {}};
  expect_error([&] { w.validate(); },
               "weights_quantization_params[\"t\"].shape[1] must be >= 0, got -1");
  w.weights_quantization_params["t"] = ParamArray{{2, 2}, {1, 2, 3}};
  expect_error([&] { w.validate(); },
               "weights_quantization_params[\"t\"] must hold product(shape) values, got 3 values "
               "for shape [2, 2]");
  w.weights_quantization_params["t"] = ParamArray{{}, {}};
  expect_error([&] { w.validate(); }, "got 0 values for shape []");
  // A product beyond int64 must not wrap around to the value count.
  w.weights_quantization_params["t"] = ParamArray{{INT64_MAX, INT64_MAX, 2}, {1.0}};
  expect_error([&] { w.validate(); }, "got 1 values for shape [9223372036854775807");
  w.weights_quantization_params["t"] = ParamArray{{int64_t{1} << 32, int64_t{1} << 32}, {}};
  expect_error([&] { w.validate(); }, "got 0 values for shape [4294967296, 4294967296]");
  // Valid shapes: scalar, zero-sized (even with a huge other dimension), broadcast-ready.
  for (const ParamArray& ok : {ParamArray{{}, {1.0}}, ParamArray{{0, INT64_MAX}, {}},
                               ParamArray{{1, 1, 1, 2}, {1.0, 2.0}}}) {
    w.weights_quantization_params["t"] = ok;
    EXPECT_NO_THROW(w.validate());
    EXPECT_EQ(TrainableQuantizerWeightsConfig::from_config(w.get_config()), w);
  }
}

TEST(TrainableConfigTest, ValidateCandidates) {
  TrainableQuantizerWeightsConfig w;
  w.weights_bits_candidates = std::vector<TrainableQuantizerCandidateConfig>{{8, {}}, {0, {}}};
  expect_error([&] { w.validate(); },
               "weights_bits_candidates[1].n_bits must be in [2, 16] for SYMMETRIC quantization, got 0");
  TrainableQuantizerActivationConfig a;
  a.activation_bits_candidates =
      std::vector<TrainableQuantizerCandidateConfig>{{33, {}}};
  expect_error([&] { a.validate(); },
               "activation_bits_candidates[0].n_bits must be in [2, 16] for SYMMETRIC quantization, got 33");
  a.activation_bits_candidates =
      std::vector<TrainableQuantizerCandidateConfig>{{4, {{"threshold", kNaN}}}};
  expect_error([&] { a.validate(); },
               "activation_bits_candidates[0].quantization_params[\"threshold\"] must be finite");
}

TEST(TrainableConfigTest, ValidateRejectsMethodOutsideTheEnum) {
  TrainableQuantizerWeightsConfig w;
  w.weights_quantization_method = static_cast<QuantizationMethod>(9);
  expect_error([&] { w.validate(); }, "QuantizationMethod: invalid enum value 9");
}

TEST(TrainableConfigTest, GetConfigRefusesInvalidConfigs) {
  // NaN has no JSON form; writing null would give a file from_config cannot read back.
  TrainableQuantizerWeightsConfig w;
  w.weights_quantization_params["threshold"] = kNaN;
  expect_error([&] { w.get_config(); }, "must be finite");
  TrainableQuantizerActivationConfig a;
  a.activation_n_bits = 0;
  expect_error([&] { a.get_config(); }, "activation_n_bits must be in [2, 16] for SYMMETRIC quantization, got 0");
}

// ---- from_config(): malformed input -----------------------------------------------------------

TEST(TrainableConfigTest, FromConfigMalformedText) {
  const std::string good = full_weights_config().get_config();
  const std::string truncated = good.substr(0, good.size() / 2);
  expect_error([&] { TrainableQuantizerWeightsConfig::from_config(truncated); },
               "TrainableQuantizerWeightsConfig: malformed JSON");
  expect_error([] { TrainableQuantizerWeightsConfig::from_config(""); },
               "TrainableQuantizerWeightsConfig: malformed JSON");
  expect_error([&] { TrainableQuantizerActivationConfig::from_config(good + "}"); },
               "TrainableQuantizerActivationConfig: malformed JSON");
  expect_error([] { TrainableQuantizerActivationConfig::from_config("{'a': 1}"); },
               "malformed JSON");
  expect_error([] { TrainableQuantizerActivationConfig::from_config("{\"min_threshold\": NaN}"); },
               "malformed JSON");
}

TEST(TrainableConfigTest, FromConfigNotAnObject) {
  for (const char* text : {"[]", "8", "\"SYMMETRIC\"", "null", "true"}) {
    expect_error([&] { TrainableQuantizerWeightsConfig::from_config(text); },
                 "TrainableQuantizerWeightsConfig: expected a JSON object, got");
    expect_error([&] { TrainableQuantizerActivationConfig::from_config(text); },
                 "TrainableQuantizerActivationConfig: expected a JSON object, got");
  }
}

TEST(TrainableConfigTest, FromConfigMissingKeys) {
  for (const auto& key : kWeightsKeys)
    expect_error([&] { weights_from_edited([&](Json& j) { j.erase(key); }); },
                 "TrainableQuantizerWeightsConfig: missing key \"" + key + "\"");
  for (const auto& key : kActivationKeys)
    expect_error([&] { activation_from_edited([&](Json& j) { j.erase(key); }); },
                 "TrainableQuantizerActivationConfig: missing key \"" + key + "\"");
}

TEST(TrainableConfigTest, FromConfigUnknownKeys) {
  expect_error([] { weights_from_edited([](Json& j) { j["weights_nbits"] = 8; }); },
               "TrainableQuantizerWeightsConfig: unknown key \"weights_nbits\"");
  // A weights key in an activation config is unknown there.
  expect_error([] { activation_from_edited([](Json& j) { j["weights_channels_axis"] = 0; }); },
               "TrainableQuantizerActivationConfig: unknown key \"weights_channels_axis\"");
}

TEST(TrainableConfigTest, FromConfigWrongKindFlags) {
  const std::string act = full_activation_config().get_config();
  expect_error([&] { TrainableQuantizerWeightsConfig::from_config(act); },
               "\"is_weights\" must be true in a weights quantization config, got false");
  const std::string wts = full_weights_config().get_config();
  expect_error([&] { TrainableQuantizerActivationConfig::from_config(wts); },
               "\"is_weights\" must be false in an activation quantization config, got true");
  expect_error([] { weights_from_edited([](Json& j) { j["is_activations"] = true; }); },
               "\"is_activations\" must be false in a weights quantization config, got true");
  expect_error([] { activation_from_edited([](Json& j) { j["is_activations"] = false; }); },
               "\"is_activations\" must be true");
  expect_error([] { weights_from_edited([](Json& j) { j["is_weights"] = 1; }); },
               "\"is_weights\" must be a boolean, got number 1");
}

TEST(TrainableConfigTest, FromConfigWrongTypes) {
  struct Case {
    const char* key;
    Json value;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"weights_n_bits", "8", "\"weights_n_bits\" must be an integer, got string \"8\""},
      {"weights_n_bits", 8.0, "\"weights_n_bits\" must be an integer, got number 8.0"},
      {"weights_n_bits", nullptr, "\"weights_n_bits\" must be an integer, got null"},
      {"weights_channels_axis", true, "\"weights_channels_axis\" must be an integer, got boolean"},
      {"enable_weights_quantization", 1, "\"enable_weights_quantization\" must be a boolean"},
      {"weights_per_channel_threshold", "true",
       "\"weights_per_channel_threshold\" must be a boolean, got string"},
      {"min_threshold", "0.1", "\"min_threshold\" must be a number, got string"},
      {"weights_quantization_params", Json::array(),
       "\"weights_quantization_params\" must be a JSON object, got array"},
      {"weights_quantization_method", true,
       "\"weights_quantization_method\" must be a method name or MCT's integer value, got "
       "boolean"},
      {"weights_quantization_method", 2.0,
       "\"weights_quantization_method\" must be a method name or MCT's integer value, got "
       "number 2.0"},
      {"weights_bits_candidates", Json::object(),
       "\"weights_bits_candidates\" must be a list or null, got object"},
      {"qi_version", 1, "\"qi_version\" must be a string, got number 1"},
  };
  for (const auto& c : cases) {
    expect_error([&] { weights_from_edited([&](Json& j) { j[c.key] = c.value; }); }, c.message);
  }
  expect_error([] { activation_from_edited([](Json& j) { j["activation_n_bits"] = "8"; }); },
               "TrainableQuantizerActivationConfig: \"activation_n_bits\" must be an integer");
  expect_error(
      [] { activation_from_edited([](Json& j) { j["enable_activation_quantization"] = 0; }); },
      "\"enable_activation_quantization\" must be a boolean, got number 0");
}

TEST(TrainableConfigTest, FromConfigUnknownMethod) {
  expect_error(
      [] { weights_from_edited([](Json& j) { j["weights_quantization_method"] = "FOO"; }); },
               "TrainableQuantizerWeightsConfig: \"weights_quantization_method\": "
               "QuantizationMethod: unknown name \"FOO\"; expected one of POWER_OF_TWO");
  expect_error([] { weights_from_edited([](Json& j) { j["weights_quantization_method"] = 7; }); },
               "\"weights_quantization_method\": QuantizationMethod: unknown MCT value 7");
  expect_error(
      [] { activation_from_edited([](Json& j) { j["activation_quantization_method"] = -1; }); },
      "\"activation_quantization_method\": QuantizationMethod: unknown MCT value -1");
  expect_error([] {
    activation_from_edited([](Json& j) { j["activation_quantization_method"] = "KMEANS"; });
  }, "unknown name \"KMEANS\"");
}

TEST(TrainableConfigTest, FromConfigHugeNumbers) {
  const std::string good = full_weights_config().get_config();
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const auto pos = s.find(from);
    EXPECT_NE(pos, std::string::npos) << from;
    return s.replace(pos, from.size(), to);
  };
  // 1e400 is no double: the parser refuses it rather than read infinity.
  expect_error([&] {
    TrainableQuantizerWeightsConfig::from_config(
        replace("\"min_threshold\":", "\"min_threshold\":1e400,\"x\":"));
  }, "malformed JSON");
  expect_error([&] {
    TrainableQuantizerWeightsConfig::from_config(replace("\"scale\":0.1", "\"scale\":-1e400"));
  }, "number overflow");
  expect_error([&] {
    TrainableQuantizerWeightsConfig::from_config(
        replace("\"weights_n_bits\":4", "\"weights_n_bits\":9223372036854775808"));
  }, "\"weights_n_bits\" is out of the int64 range, got 9223372036854775808");
  // Beyond uint64 the parser makes it a float: still not an integer.
  expect_error([&] {
    TrainableQuantizerWeightsConfig::from_config(
        replace("\"weights_channels_axis\":-1", "\"weights_channels_axis\":-99999999999999999999"));
  }, "\"weights_channels_axis\" must be an integer, got number");
  expect_error([&] {
    TrainableQuantizerWeightsConfig::from_config(
        replace("\"weights_n_bits\":4", "\"weights_n_bits\":1e20"));
  }, "\"weights_n_bits\" must be an integer, got number");
  // In range of int64 but not of the rule: validate() runs after parsing.
  expect_error([&] {
    TrainableQuantizerWeightsConfig::from_config(
        replace("\"weights_n_bits\":4", "\"weights_n_bits\":9223372036854775807"));
  }, "weights_n_bits must be in [2, 16] for POWER_OF_TWO quantization, got 9223372036854775807");
}

TEST(TrainableConfigTest, FromConfigRunsValidate) {
  expect_error([] { weights_from_edited([](Json& j) { j["weights_n_bits"] = 0; }); },
               "TrainableQuantizerWeightsConfig: weights_n_bits must be in [2, 16] for POWER_OF_TWO quantization, got 0");
  expect_error([] { activation_from_edited([](Json& j) { j["activation_n_bits"] = 33; }); },
               "activation_n_bits must be in [2, 16] for UNIFORM quantization, got 33");
  expect_error([] { weights_from_edited([](Json& j) { j["min_threshold"] = -0.5; }); },
               "min_threshold must be finite and >= 0, got -0.5");
  expect_error([] {
    weights_from_edited([](Json& j) {
      j["weights_quantization_params"]["threshold"]["shape"] = Json::parse("[2, 2]");
    });
  }, "weights_quantization_params[\"threshold\"] must hold product(shape) values, got 3 values "
     "for shape [2, 2]");
  expect_error([] {
    weights_from_edited([](Json& j) { j["weights_bits_candidates"][0]["n_bits"] = 64; });
  }, "weights_bits_candidates[0].n_bits must be in [2, 16] for POWER_OF_TWO quantization, got 64");
}

TEST(TrainableConfigTest, FromConfigBadParamValues) {
  struct Case {
    const char* json;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"null", "weights_quantization_params[\"p\"] must be a boolean, a number, a list of numbers "
               "or {\"shape\", \"values\"}, got null"},
      {"\"1.0\"", "must be a boolean, a number, a list of numbers or {\"shape\", \"values\"}, got "
                  "string"},
      {R"({"shape": [1], "values": [1.0], "dtype": "float32"})", "unknown key \"dtype\""},
      {R"({"class_name": "__numpy__", "config": {"value": [1.0]}})", "unknown key \"class_name\""},
      {R"({"shape": [1]})", "missing key \"values\""},
      {R"({"values": [1.0]})", "missing key \"shape\""},
      {R"({"shape": 1, "values": [1.0]})", "weights_quantization_params[\"p\"].shape must be a "
                                           "list of integers, got number"},
      {R"({"shape": [1.0], "values": [1.0]})", "\"weights_quantization_params[\"p\"].shape[0]\" "
                                               "must be an integer, got number 1.0"},
      {R"({"shape": [1], "values": 1.0})", "\"weights_quantization_params[\"p\"].values\" must be "
                                           "a list of numbers"},
      {R"({"shape": [2], "values": [1.0, true]})", "\"weights_quantization_params[\"p\"]."
                                                   "values[1]\" must be a number, got boolean"},
      {R"({"shape": [-1], "values": []})", "weights_quantization_params[\"p\"].shape[0] must be "
                                           ">= 0, got -1"},
      {"[1, [2]]", "weights_quantization_params[\"p\"] must be a rectangular list of numbers"},
      {"[[1], 2]", "must be a rectangular list of numbers, got a ragged list"},
      {"[[1, 2], [3]]", "must be a rectangular list of numbers, got lengths 2 and 1 at depth 1"},
      {"[1, \"2\"]", "\"weights_quantization_params[\"p\"]\" must be a number, got string"},
      {"[1, null]", "must be a number, got null"},
  };
  for (const auto& c : cases) {
    expect_error([&] {
      weights_from_edited(
          [&](Json& j) { j["weights_quantization_params"]["p"] = Json::parse(c.json); });
    }, c.message);
  }
}

TEST(TrainableConfigTest, FromConfigBadCandidates) {
  expect_error([] { weights_from_edited([](Json& j) { j["weights_bits_candidates"][0] = 8; }); },
               "weights_bits_candidates[0] must be a JSON object, got number 8");
  expect_error([] {
    weights_from_edited([](Json& j) { j["weights_bits_candidates"][1]["bits"] = 8; });
  }, "TrainableQuantizerWeightsConfig: weights_bits_candidates[1]: unknown key \"bits\"");
  expect_error([] {
    activation_from_edited([](Json& j) { j["activation_bits_candidates"][0].erase("n_bits"); });
  }, "TrainableQuantizerActivationConfig: activation_bits_candidates[0]: missing key \"n_bits\"");
  expect_error([] {
    activation_from_edited(
        [](Json& j) { j["activation_bits_candidates"][1]["quantization_params"] = 1; });
  }, "\"activation_bits_candidates[1].quantization_params\" must be a JSON object, got number");
  expect_error([] {
    activation_from_edited([](Json& j) { j["activation_bits_candidates"][1]["n_bits"] = "8"; });
  }, "\"activation_bits_candidates[1].n_bits\" must be an integer, got string");
}

TEST(TrainableConfigTest, FromConfigDeepNestingIsAnErrorNotACrash) {
  const int64_t depth = 200000;
  std::string text = R"({"weights_quantization_params": {"p": )" + std::string(depth, '[') +
                     std::string(depth, ']') + "}}";
  expect_error([&] { TrainableQuantizerWeightsConfig::from_config(text); },
               "TrainableQuantizerWeightsConfig: JSON nested deeper than 256 levels");
}

}  // namespace
