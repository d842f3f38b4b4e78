// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "qi/base_quantizer.h"
#include "qi/inferable_quantizers.h"

namespace qi {

// One layer's quantizers: a quantizer per weight attribute (by name) and one
// per layer output (in order). Wrappers read it to quantize weights before the layer runs and
// outputs after.
class NodeQuantizationDispatcher {
 public:
  using QuantizerPtr = std::shared_ptr<BaseQuantizer>;

  NodeQuantizationDispatcher() = default;
  NodeQuantizationDispatcher(std::map<std::string, QuantizerPtr> weight_quantizers,
                             std::vector<QuantizerPtr> activation_quantizers);

  // Replace all. Null quantizers and empty attribute names throw qi::Error.
  void set_weight_quantizers(std::map<std::string, QuantizerPtr> weight_quantizers);
  void set_activation_quantizers(std::vector<QuantizerPtr> activation_quantizers);
  // Adds or replaces the quantizer of one weight attribute.
  void add_weight_quantizer(const std::string& param_name, QuantizerPtr quantizer);

  const std::map<std::string, QuantizerPtr>& weight_quantizers() const { return weight_quantizers_; }
  const std::vector<QuantizerPtr>& activation_quantizers() const { return activation_quantizers_; }

  int64_t num_weight_quantizers() const { return static_cast<int64_t>(weight_quantizers_.size()); }
  int64_t num_act_quantizers() const { return static_cast<int64_t>(activation_quantizers_.size()); }
  bool is_weights_quantization() const { return num_weight_quantizers() > 0; }
  bool is_activation_quantization() const { return num_act_quantizers() > 0; }

  // {"activation_quantizers": [q.to_json()...], "weight_quantizer": {name: q.to_json()},
  //  "qi_version": ...} (the keys of KerasNodeQuantizationDispatcher).
  std::string get_config() const;
  static NodeQuantizationDispatcher from_config(const std::string& json);

 private:
  std::map<std::string, QuantizerPtr> weight_quantizers_;
  std::vector<QuantizerPtr> activation_quantizers_;
};

}  // namespace qi
