// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Configurations of trainable quantizers, with JSON (de)serialization.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "qi/enums.h"

namespace qi {

// An n-d array of quantization parameters (e.g. per-channel thresholds shaped (C, 1, 1, 1)).
struct ParamArray {
  std::vector<int64_t> shape;
  std::vector<double> values;  // row-major, size == product(shape)
  bool operator==(const ParamArray& o) const { return shape == o.shape && values == o.values; }
};

// One entry of a quantization-parameter dict: "threshold", "is_signed", "range_min", ...
using QuantizationParam = std::variant<bool, double, ParamArray>;
using QuantizationParams = std::map<std::string, QuantizationParam>;

// Mixed-precision candidate (MCT's TrainableQuantizerCandidateConfig).
struct TrainableQuantizerCandidateConfig {
  int64_t n_bits = 8;
  QuantizationParams quantization_params;
  bool operator==(const TrainableQuantizerCandidateConfig& o) const {
    return n_bits == o.n_bits && quantization_params == o.quantization_params;
  }
};

// How a trainable weights quantizer starts and what it learns (MCT's
// TrainableQuantizerWeightsConfig): method, bits, initial parameters, channel axis.
struct TrainableQuantizerWeightsConfig {
  QuantizationMethod weights_quantization_method = QuantizationMethod::SYMMETRIC;
  int64_t weights_n_bits = 8;
  QuantizationParams weights_quantization_params;
  bool enable_weights_quantization = true;
  int64_t weights_channels_axis = 0;
  bool weights_per_channel_threshold = true;
  double min_threshold = 1.0 / 65536.0;  // MCT's MIN_THRESHOLD = 2^-16
  std::optional<std::vector<TrainableQuantizerCandidateConfig>> weights_bits_candidates;

  bool operator==(const TrainableQuantizerWeightsConfig& o) const;
  // Checks ranges (n_bits as the quantizers of the method take it: [2, 16], LUT [1, 16]; finite
  // min_threshold >= 0, finite parameters, ...); throws qi::Error.
  void validate() const;
  // JSON object: every field above by name (the method by name, e.g. "SYMMETRIC"), plus
  // "is_weights": true, "is_activations": false and "qi_version".
  std::string get_config() const;
  // Accepts get_config() output; the method may also be MCT's integer value. Throws qi::Error on
  // malformed text, missing keys, wrong types, unknown methods or out-of-range numbers.
  static TrainableQuantizerWeightsConfig from_config(const std::string& json);
};

// How a trainable activation quantizer starts and what it learns (MCT's
// TrainableQuantizerActivationConfig): method, bits, initial parameters.
struct TrainableQuantizerActivationConfig {
  QuantizationMethod activation_quantization_method = QuantizationMethod::SYMMETRIC;
  int64_t activation_n_bits = 8;
  QuantizationParams activation_quantization_params;
  bool enable_activation_quantization = true;
  double min_threshold = 1.0 / 65536.0;
  std::optional<std::vector<TrainableQuantizerCandidateConfig>> activation_bits_candidates;

  bool operator==(const TrainableQuantizerActivationConfig& o) const;
  void validate() const;
  std::string get_config() const;  // as the weights config, "is_activations": true
  static TrainableQuantizerActivationConfig from_config(const std::string& json);
};

}  // namespace qi
