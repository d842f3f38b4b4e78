// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include "qi/dispatcher.h"

#include <utility>

#include "core/json_util.h"
#include "qi/error.h"
#include "qi/version.h"

namespace qi {
namespace {

namespace ju = json_util;
using Json = ju::Json;

constexpr const char* kWhat = "NodeQuantizationDispatcher";
constexpr const char* kActivationKey = "activation_quantizers";
constexpr const char* kWeightKey = "weight_quantizer";  // singular, as MCT spells it

using QuantizerPtr = NodeQuantizationDispatcher::QuantizerPtr;

void check_weight_entry(const std::string& name, const QuantizerPtr& q) {
  QI_CHECK(!name.empty(), kWhat, ": weight attribute name must not be empty");
  QI_CHECK(q != nullptr, kWhat, ": weight quantizer of attribute \"", name,
           "\" must not be null");
}

// The quantizer's to_json() text as a JSON value, so that the dispatcher's config nests objects
// rather than strings.
Json quantizer_json(const BaseQuantizer& q) { return ju::parse(q.to_json(), kWhat); }

// Rebuilds one quantizer; its own error is prefixed with where it sits in the config.
QuantizerPtr entry_from_json(const Json& v, const std::string& where) {
  QI_CHECK(v.is_object(), kWhat, ": ", where,
           " must be a quantizer's JSON object {\"class_name\", \"config\"}, got ",
           ju::type_name(v), " ", v.dump());
  try {
    return qi::quantizer_from_json(v.dump());
  } catch (const Error& e) {
    throw Error(str_cat(kWhat, ": ", where, ": ", e.what()));
  }
}

}  // namespace

NodeQuantizationDispatcher::NodeQuantizationDispatcher(
    std::map<std::string, QuantizerPtr> weight_quantizers,
    std::vector<QuantizerPtr> activation_quantizers) {
  set_weight_quantizers(std::move(weight_quantizers));
  set_activation_quantizers(std::move(activation_quantizers));
}

void NodeQuantizationDispatcher::set_weight_quantizers(
    std::map<std::string, QuantizerPtr> weight_quantizers) {
  // Checked in full before anything is replaced: a failed call leaves the dispatcher unchanged.
  for (const auto& [name, q] : weight_quantizers) check_weight_entry(name, q);
  weight_quantizers_ = std::move(weight_quantizers);
}

void NodeQuantizationDispatcher::set_activation_quantizers(
    std::vector<QuantizerPtr> activation_quantizers) {
  for (size_t i = 0; i < activation_quantizers.size(); ++i)
    QI_CHECK(activation_quantizers[i] != nullptr, kWhat, ": activation quantizer ", i, " of ",
             activation_quantizers.size(), " must not be null");
  activation_quantizers_ = std::move(activation_quantizers);
}

void NodeQuantizationDispatcher::add_weight_quantizer(const std::string& param_name,
                                                      QuantizerPtr quantizer) {
  check_weight_entry(param_name, quantizer);
  weight_quantizers_[param_name] = std::move(quantizer);
}

std::string NodeQuantizationDispatcher::get_config() const {
  Json activations = Json::array();
  for (const auto& q : activation_quantizers_) activations.push_back(quantizer_json(*q));
  Json weights = Json::object();
  for (const auto& [name, q] : weight_quantizers_) weights[name] = quantizer_json(*q);
  Json j = Json::object();
  j[kActivationKey] = std::move(activations);
  j[kWeightKey] = std::move(weights);
  j["qi_version"] = kVersion;
  return j.dump();
}

NodeQuantizationDispatcher NodeQuantizationDispatcher::from_config(const std::string& json) {
  try {
    const Json j = ju::parse(json, kWhat);
    ju::require_object(j, kWhat);
    static const char* const kKeys[] = {kActivationKey, kWeightKey, "qi_version"};
    ju::reject_unknown_keys(j, kKeys, kWhat);
    if (auto it = j.find("qi_version"); it != j.end()) ju::get_string(*it, "qi_version", kWhat);

    const Json& activations = ju::get(j, kActivationKey, kWhat);
    QI_CHECK(activations.is_array(), kWhat, ": \"", kActivationKey,
             "\" must be a list of quantizers, got ", ju::type_name(activations), " ",
             activations.dump());
    std::vector<QuantizerPtr> activation_quantizers;
    for (size_t i = 0; i < activations.size(); ++i)
      activation_quantizers.push_back(
          entry_from_json(activations[i], str_cat(kActivationKey, "[", i, "]")));

    const Json& weights = ju::get(j, kWeightKey, kWhat);
    QI_CHECK(weights.is_object(), kWhat, ": \"", kWeightKey,
             "\" must be an object mapping attribute names to quantizers, got ",
             ju::type_name(weights), " ", weights.dump());
    std::map<std::string, QuantizerPtr> weight_quantizers;
    for (auto it = weights.begin(); it != weights.end(); ++it) {
      const std::string where = str_cat(kWeightKey, "[\"", it.key(), "\"]");
      weight_quantizers.emplace(it.key(), entry_from_json(it.value(), where));
    }

    return NodeQuantizationDispatcher(std::move(weight_quantizers),
                                      std::move(activation_quantizers));
  } catch (const Json::exception& e) {
    // Not expected past the checks above; still never let a nlohmann exception escape.
    throw Error(str_cat(kWhat, ": malformed config: ", e.what()));
  }
}

}  // namespace qi
