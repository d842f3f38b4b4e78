// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "qi/dispatcher.h"
#include "qi/error.h"
#include "qi/inferable_quantizers.h"
#include "qi/version.h"

namespace {

using Json = nlohmann::json;
using qi::NodeQuantizationDispatcher;
using QuantizerPtr = NodeQuantizationDispatcher::QuantizerPtr;

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

QuantizerPtr weights_symmetric() {
  return std::make_shared<qi::WeightsSymmetricInferableQuantizer>(8, std::vector<double>{2.0},
                                                                  true, 0);
}
QuantizerPtr weights_uniform() {
  return std::make_shared<qi::WeightsUniformInferableQuantizer>(
      4, std::vector<double>{-1.0, -0.3}, std::vector<double>{1.0, 0.7}, true, -1);
}
QuantizerPtr activation_pot() {
  return std::make_shared<qi::ActivationPOTInferableQuantizer>(8, std::vector<double>{1.0}, true);
}
QuantizerPtr activation_uniform() {
  return std::make_shared<qi::ActivationUniformInferableQuantizer>(
      8, std::vector<double>{-0.1}, std::vector<double>{6.1}, qi::NumericProfile::kTf);
}

// A layer with two weights and two outputs.
NodeQuantizationDispatcher full_dispatcher() {
  return NodeQuantizationDispatcher({{"kernel", weights_symmetric()}, {"bias", weights_uniform()}},
                                    {activation_pot(), activation_uniform()});
}

// Each quantizer of `a` has the same class and to_json() text as its counterpart in `b`.
void expect_same_quantizers(const NodeQuantizationDispatcher& a,
                            const NodeQuantizationDispatcher& b) {
  ASSERT_EQ(a.num_weight_quantizers(), b.num_weight_quantizers());
  ASSERT_EQ(a.num_act_quantizers(), b.num_act_quantizers());
  for (const auto& [name, q] : a.weight_quantizers()) {
    ASSERT_EQ(b.weight_quantizers().count(name), 1u) << name;
    const auto& other = b.weight_quantizers().at(name);
    EXPECT_STREQ(q->class_name(), other->class_name()) << name;
    EXPECT_EQ(q->to_json(), other->to_json()) << name;
  }
  for (size_t i = 0; i < a.activation_quantizers().size(); ++i) {
    EXPECT_STREQ(a.activation_quantizers()[i]->class_name(),
                 b.activation_quantizers()[i]->class_name());
    EXPECT_EQ(a.activation_quantizers()[i]->to_json(), b.activation_quantizers()[i]->to_json());
  }
}

// get_config() of the full dispatcher, edited by `edit`, back through from_config().
NodeQuantizationDispatcher from_edited(void (*edit)(Json&)) {
  Json j = Json::parse(full_dispatcher().get_config());
  edit(j);
  return NodeQuantizationDispatcher::from_config(j.dump());
}

// ---- properties and set/add semantics ---------------------------------------------------------

TEST(NodeDispatcherTest, DefaultIsEmpty) {
  NodeQuantizationDispatcher d;
  EXPECT_EQ(d.num_weight_quantizers(), 0);
  EXPECT_EQ(d.num_act_quantizers(), 0);
  EXPECT_FALSE(d.is_weights_quantization());
  EXPECT_FALSE(d.is_activation_quantization());
  EXPECT_TRUE(d.weight_quantizers().empty());
  EXPECT_TRUE(d.activation_quantizers().empty());
}

TEST(NodeDispatcherTest, PropertiesFollowTheQuantizers) {
  const auto d = full_dispatcher();
  EXPECT_EQ(d.num_weight_quantizers(), 2);
  EXPECT_EQ(d.num_act_quantizers(), 2);
  EXPECT_TRUE(d.is_weights_quantization());
  EXPECT_TRUE(d.is_activation_quantization());

  NodeQuantizationDispatcher weights_only({{"kernel", weights_symmetric()}}, {});
  EXPECT_TRUE(weights_only.is_weights_quantization());
  EXPECT_FALSE(weights_only.is_activation_quantization());
  EXPECT_EQ(weights_only.num_act_quantizers(), 0);

  NodeQuantizationDispatcher activations_only({}, {activation_pot()});
  EXPECT_FALSE(activations_only.is_weights_quantization());
  EXPECT_TRUE(activations_only.is_activation_quantization());
  EXPECT_EQ(activations_only.num_weight_quantizers(), 0);
  EXPECT_EQ(activations_only.num_act_quantizers(), 1);
}

TEST(NodeDispatcherTest, ConstructorKeepsTheGivenObjects) {
  const auto kernel = weights_symmetric();
  const auto out0 = activation_pot();
  const auto out1 = activation_uniform();
  NodeQuantizationDispatcher d({{"kernel", kernel}}, {out0, out1});
  EXPECT_EQ(d.weight_quantizers().at("kernel"), kernel);
  ASSERT_EQ(d.activation_quantizers().size(), 2u);
  // Outputs keep their order.
  EXPECT_EQ(d.activation_quantizers()[0], out0);
  EXPECT_EQ(d.activation_quantizers()[1], out1);
}

TEST(NodeDispatcherTest, SetReplacesAll) {
  auto d = full_dispatcher();
  const auto w = weights_uniform();
  d.set_weight_quantizers({{"weight", w}});
  EXPECT_EQ(d.num_weight_quantizers(), 1);
  EXPECT_EQ(d.weight_quantizers().count("kernel"), 0u);
  EXPECT_EQ(d.weight_quantizers().at("weight"), w);
  EXPECT_EQ(d.num_act_quantizers(), 2);  // untouched

  const auto a = activation_uniform();
  d.set_activation_quantizers({a});
  ASSERT_EQ(d.num_act_quantizers(), 1);
  EXPECT_EQ(d.activation_quantizers()[0], a);

  d.set_weight_quantizers({});
  d.set_activation_quantizers({});
  EXPECT_FALSE(d.is_weights_quantization());
  EXPECT_FALSE(d.is_activation_quantization());
}

TEST(NodeDispatcherTest, AddWeightQuantizerAddsOrReplaces) {
  NodeQuantizationDispatcher d;
  const auto first = weights_symmetric();
  const auto bias = weights_uniform();
  const auto second = weights_uniform();
  d.add_weight_quantizer("kernel", first);
  EXPECT_TRUE(d.is_weights_quantization());
  d.add_weight_quantizer("bias", bias);
  EXPECT_EQ(d.num_weight_quantizers(), 2);
  d.add_weight_quantizer("kernel", second);
  EXPECT_EQ(d.num_weight_quantizers(), 2);
  EXPECT_EQ(d.weight_quantizers().at("kernel"), second);
  EXPECT_EQ(d.weight_quantizers().at("bias"), bias);
  EXPECT_FALSE(d.is_activation_quantization());
}

// ---- bad input to the setters -----------------------------------------------------------------

TEST(NodeDispatcherTest, NullOrUnnamedQuantizersAreRejected) {
  NodeQuantizationDispatcher d;
  expect_error([&] { d.add_weight_quantizer("kernel", nullptr); },
               "NodeQuantizationDispatcher: weight quantizer of attribute \"kernel\" must not be "
               "null");
  expect_error([&] { d.add_weight_quantizer("", weights_symmetric()); },
               "NodeQuantizationDispatcher: weight attribute name must not be empty");
  EXPECT_EQ(d.num_weight_quantizers(), 0);

  expect_error([] { NodeQuantizationDispatcher({{"bias", nullptr}}, {}); },
               "weight quantizer of attribute \"bias\" must not be null");
  expect_error([] { NodeQuantizationDispatcher({{"", weights_symmetric()}}, {}); },
               "weight attribute name must not be empty");
  expect_error([] { NodeQuantizationDispatcher({}, {activation_pot(), nullptr}); },
               "NodeQuantizationDispatcher: activation quantizer 1 of 2 must not be null");
}

TEST(NodeDispatcherTest, FailedSetLeavesTheDispatcherUnchanged) {
  auto d = full_dispatcher();
  expect_error([&] { d.set_weight_quantizers({{"a", weights_symmetric()}, {"b", nullptr}}); },
               "weight quantizer of attribute \"b\" must not be null");
  expect_error([&] { d.set_activation_quantizers({nullptr}); },
               "activation quantizer 0 of 1 must not be null");
  EXPECT_EQ(d.num_weight_quantizers(), 2);
  EXPECT_EQ(d.weight_quantizers().count("kernel"), 1u);
  EXPECT_EQ(d.num_act_quantizers(), 2);
}

// ---- get_config / from_config -----------------------------------------------------------------

TEST(NodeDispatcherTest, GetConfigUsesTheKerasKeys) {
  const auto d = full_dispatcher();
  const Json j = Json::parse(d.get_config());
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j.size(), 3u);
  ASSERT_TRUE(j.contains("activation_quantizers"));
  ASSERT_TRUE(j.contains("weight_quantizer"));  // singular, as MCT spells it
  EXPECT_EQ(j["qi_version"], qi::kVersion);

  const Json& acts = j["activation_quantizers"];
  ASSERT_TRUE(acts.is_array());
  ASSERT_EQ(acts.size(), 2u);
  EXPECT_EQ(acts[0], Json::parse(d.activation_quantizers()[0]->to_json()));
  EXPECT_EQ(acts[1], Json::parse(d.activation_quantizers()[1]->to_json()));
  EXPECT_EQ(acts[0]["class_name"], "ActivationPOTInferableQuantizer");
  EXPECT_EQ(acts[1]["class_name"], "ActivationUniformInferableQuantizer");

  const Json& weights = j["weight_quantizer"];
  ASSERT_TRUE(weights.is_object());
  ASSERT_EQ(weights.size(), 2u);
  EXPECT_EQ(weights["kernel"], Json::parse(d.weight_quantizers().at("kernel")->to_json()));
  EXPECT_EQ(weights["kernel"]["class_name"], "WeightsSymmetricInferableQuantizer");
  EXPECT_EQ(weights["bias"]["class_name"], "WeightsUniformInferableQuantizer");
}

TEST(NodeDispatcherTest, EmptyConfigRoundTrip) {
  NodeQuantizationDispatcher d;
  const Json j = Json::parse(d.get_config());
  EXPECT_EQ(j["activation_quantizers"], Json::array());
  EXPECT_EQ(j["weight_quantizer"], Json::object());
  const auto back = NodeQuantizationDispatcher::from_config(d.get_config());
  EXPECT_FALSE(back.is_weights_quantization());
  EXPECT_FALSE(back.is_activation_quantization());
}

TEST(NodeDispatcherTest, ConfigRoundTrip) {
  const auto d = full_dispatcher();
  const auto back = NodeQuantizationDispatcher::from_config(d.get_config());
  expect_same_quantizers(d, back);
  EXPECT_EQ(back.get_config(), d.get_config());
  // New objects, not shared ones.
  EXPECT_NE(back.weight_quantizers().at("kernel"), d.weight_quantizers().at("kernel"));
}

TEST(NodeDispatcherTest, RoundTripQuantizesIdentically) {
  const auto d = full_dispatcher();
  const auto back = NodeQuantizationDispatcher::from_config(d.get_config());
  const std::vector<float> x = {-3.1f, -1.0f, -0.337f, 0.0f, 0.004f, 0.5f, 1.99f, 7.25f};
  const qi::Shape shape = {2, 4};
  for (const char* name : {"kernel", "bias"}) {
    const auto& q = dynamic_cast<const qi::BaseInferableQuantizer&>(*d.weight_quantizers().at(name));
    const auto& r =
        dynamic_cast<const qi::BaseInferableQuantizer&>(*back.weight_quantizers().at(name));
    // Per-channel: "kernel" has 1 channel on axis 0, "bias" 2 channels on the last axis.
    const qi::Shape s = std::string(name) == "kernel" ? qi::Shape{1, 8} : qi::Shape{4, 2};
    EXPECT_EQ(q.apply(x, s), r.apply(x, s)) << name;
  }
  for (size_t i = 0; i < d.activation_quantizers().size(); ++i)
    EXPECT_EQ(dynamic_cast<const qi::BaseInferableQuantizer&>(*d.activation_quantizers()[i])
                  .apply(x, shape),
              dynamic_cast<const qi::BaseInferableQuantizer&>(*back.activation_quantizers()[i])
                  .apply(x, shape))
        << i;
}

TEST(NodeDispatcherTest, FromConfigWithoutVersion) {
  const auto back = from_edited([](Json& j) { j.erase("qi_version"); });
  expect_same_quantizers(full_dispatcher(), back);
}

// ---- from_config: malformed input -------------------------------------------------------------

TEST(NodeDispatcherTest, FromConfigMalformedText) {
  const std::string good = full_dispatcher().get_config();
  expect_error([&] { NodeQuantizationDispatcher::from_config(good.substr(0, good.size() - 3)); },
               "NodeQuantizationDispatcher: malformed JSON");
  expect_error([] { NodeQuantizationDispatcher::from_config(""); },
               "NodeQuantizationDispatcher: malformed JSON");
  for (const char* text : {"[]", "1", "null", "\"weight_quantizer\""})
    expect_error([&] { NodeQuantizationDispatcher::from_config(text); },
                 "NodeQuantizationDispatcher: expected a JSON object, got");
}

TEST(NodeDispatcherTest, FromConfigMissingOrUnknownKeys) {
  expect_error([] { from_edited([](Json& j) { j.erase("activation_quantizers"); }); },
               "NodeQuantizationDispatcher: missing key \"activation_quantizers\"");
  expect_error([] { from_edited([](Json& j) { j.erase("weight_quantizer"); }); },
               "NodeQuantizationDispatcher: missing key \"weight_quantizer\"");
  // The plural spelling is a typo here, not an alias.
  expect_error([] {
    from_edited([](Json& j) {
      j["weights_quantizer"] = j["weight_quantizer"];
      j.erase("weight_quantizer");
    });
  }, "NodeQuantizationDispatcher: unknown key \"weights_quantizer\"");
}

TEST(NodeDispatcherTest, FromConfigWrongTypes) {
  expect_error([] { from_edited([](Json& j) { j["activation_quantizers"] = Json::object(); }); },
               "\"activation_quantizers\" must be a list of quantizers, got object");
  expect_error([] { from_edited([](Json& j) { j["weight_quantizer"] = Json::array(); }); },
               "\"weight_quantizer\" must be an object mapping attribute names to quantizers, got "
               "array");
  expect_error([] { from_edited([](Json& j) { j["qi_version"] = 0.1; }); },
               "NodeQuantizationDispatcher: \"qi_version\" must be a string, got number");
  // An entry given as to_json() text inside a string is not accepted: entries are objects.
  expect_error([] {
    from_edited([](Json& j) {
      j["activation_quantizers"][1] = j["activation_quantizers"][1].dump();
    });
  }, "NodeQuantizationDispatcher: activation_quantizers[1] must be a quantizer's JSON object "
     "{\"class_name\", \"config\"}, got string");
  expect_error([] { from_edited([](Json& j) { j["weight_quantizer"]["kernel"] = nullptr; }); },
               "NodeQuantizationDispatcher: weight_quantizer[\"kernel\"] must be a quantizer's "
               "JSON object");
}

TEST(NodeDispatcherTest, FromConfigBadQuantizerEntriesSayWhere) {
  expect_error([] {
    from_edited([](Json& j) { j["activation_quantizers"][1]["class_name"] = "NoSuchQuantizer"; });
  }, "NodeQuantizationDispatcher: activation_quantizers[1]: ");
  expect_error([] {
    from_edited([](Json& j) { j["weight_quantizer"]["bias"]["config"]["num_bits"] = "8"; });
  }, "NodeQuantizationDispatcher: weight_quantizer[\"bias\"]: ");
  expect_error([] {
    from_edited([](Json& j) { j["weight_quantizer"]["kernel"]["config"].erase("threshold"); });
  }, "NodeQuantizationDispatcher: weight_quantizer[\"kernel\"]: ");
  expect_error([] {
    from_edited([](Json& j) { j["activation_quantizers"][0].erase("config"); });
  }, "NodeQuantizationDispatcher: activation_quantizers[0]: ");
  // The quantizer's own message comes through after the location.
  expect_error([] {
    from_edited([](Json& j) { j["weight_quantizer"]["kernel"]["config"]["colour"] = 1; });
  }, "unknown key \"colour\"");
}

TEST(NodeDispatcherTest, FromConfigEmptyAttributeName) {
  expect_error([] {
    from_edited([](Json& j) { j["weight_quantizer"][""] = j["weight_quantizer"]["kernel"]; });
  }, "NodeQuantizationDispatcher: weight attribute name must not be empty");
}

TEST(NodeDispatcherTest, FromConfigDeepNestingIsAnErrorNotACrash) {
  const int64_t depth = 200000;
  const std::string text = "{\"activation_quantizers\": " + std::string(depth, '[') +
                           std::string(depth, ']') + "}";
  expect_error([&] { NodeQuantizationDispatcher::from_config(text); },
               "NodeQuantizationDispatcher: JSON nested deeper than 256 levels");
}

}  // namespace
