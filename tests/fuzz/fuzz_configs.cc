// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Fuzz target: trainable quantizer configs. The input is text read by
// TrainableQuantizerWeightsConfig::from_config and TrainableQuantizerActivationConfig::from_config.
// Only qi::Error may come out. A config that loads must validate, write itself back to an equal
// config, and build every trainable quantizer class that serves its method (or be refused with
// qi::Error); those quantizers must write themselves back too, and give their variables for a
// small weight.
#include <memory>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "qi/qi.h"

namespace {

void exercise_trainable(const qi::TrainableQuantizer& t) {
  const std::string json = t.to_json();
  const auto again = qi::quantizer_from_json(json);
  QI_FUZZ_CHECK(again != nullptr && again->to_json() == json, "to_json does not read back: ", json);
  if (t.quantization_target() != qi::QuantizationTarget::Weights) {
    t.variables({});
    return;
  }
  // A small weight: 4 output channels on axis 0 (and on the last axis), per-channel values must
  // match or be refused.
  std::vector<float> w(4 * 3);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.37f * static_cast<float>(i) - 2.0f;
  for (const qi::Shape& shape : {qi::Shape{4, 3}, qi::Shape{3, 4}, qi::Shape{12}}) {
    try {
      const auto vars = t.variables(shape, w.data());
      for (const auto& v : vars) {
        int64_t n = 1;
        for (int64_t s : v.shape) n *= s;
        QI_FUZZ_CHECK(static_cast<int64_t>(v.initial.size()) == n, t.class_name(), ": variable ",
                      v.name, " holds ", v.initial.size(), " values for ", n, " elements");
      }
    } catch (const qi::Error&) {
    }
  }
}

template <typename Config>
void exercise_config(const Config& c, qi::QuantizationTarget target, qi::QuantizationMethod method) {
  c.validate();
  const Config again = Config::from_config(c.get_config());
  QI_FUZZ_CHECK(again == c, "get_config does not read back: ", c.get_config());
  for (const auto& info : qi::kTrainableQuantizers) {
    if (info.target != target || !info.serves(method)) continue;
    qi_fuzz::expect_only_qi_errors(info.class_name, [&] {
      for (bool freeze : {false, true}) exercise_trainable(qi::TrainableQuantizer(info.kind, c, freeze));
    });
  }
}

// Weights configs of every method (per channel, per tensor, with bit-width candidates) and
// activation configs of every method an activation quantizer serves.
void write_seeds() {
  int i = 0;
  for (const auto m : {qi::QuantizationMethod::SYMMETRIC, qi::QuantizationMethod::POWER_OF_TWO,
                       qi::QuantizationMethod::UNIFORM}) {
    for (bool per_channel : {true, false}) {
      qi::TrainableQuantizerWeightsConfig c;
      c.weights_quantization_method = m;
      c.weights_n_bits = per_channel ? 4 : 8;
      c.weights_per_channel_threshold = per_channel;
      c.weights_channels_axis = per_channel ? -1 : 0;
      const int64_t n = per_channel ? 4 : 1;
      if (m == qi::QuantizationMethod::UNIFORM)
        c.weights_quantization_params = {
            {"range_min", qi::ParamArray{{n}, std::vector<double>(static_cast<size_t>(n), -0.5)}},
            {"range_max", qi::ParamArray{{n}, std::vector<double>(static_cast<size_t>(n), 0.75)}}};
      else
        c.weights_quantization_params = {
            {"threshold", qi::ParamArray{{n, 1}, std::vector<double>(static_cast<size_t>(n), 0.5)}}};
      if (!per_channel) c.weights_bits_candidates = {{{2, {}}, {4, {}}, {8, c.weights_quantization_params}}};
      qi_fuzz::write_seed("weights_" + std::to_string(i++) + ".json", c.get_config());
    }
    qi::TrainableQuantizerActivationConfig a;
    a.activation_quantization_method = m;
    a.activation_n_bits = 6;
    if (m == qi::QuantizationMethod::UNIFORM)
      a.activation_quantization_params = {{"range_min", -1.5}, {"range_max", 2.0}};
    else
      a.activation_quantization_params = {{"threshold", 2.0}, {"is_signed", true}};
    qi_fuzz::write_seed("activation_" + std::to_string(i++) + ".json", a.get_config());
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (qi_fuzz::seed_dir() != nullptr) write_seeds();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text = qi_fuzz::text_of(data, size);
  qi_fuzz::expect_only_qi_errors("TrainableQuantizerWeightsConfig", [&] {
    const auto c = qi::TrainableQuantizerWeightsConfig::from_config(text);
    exercise_config(c, qi::QuantizationTarget::Weights, c.weights_quantization_method);
  });
  qi_fuzz::expect_only_qi_errors("TrainableQuantizerActivationConfig", [&] {
    const auto c = qi::TrainableQuantizerActivationConfig::from_config(text);
    exercise_config(c, qi::QuantizationTarget::Activation, c.activation_quantization_method);
  });
  return 0;
}
