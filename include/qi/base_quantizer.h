// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <memory>
#include <string>

#include "qi/enums.h"

namespace qi {

// The root of every quantizer a NodeQuantizationDispatcher can hold: the core's inferable
// quantizers and the trainable quantizers of the framework layers (qi::torch, ...).
class BaseQuantizer {
 public:
  virtual ~BaseQuantizer() = default;
  virtual QuantizationTarget quantization_target() const = 0;
  virtual QuantizationMethod quantization_method() const = 0;
  // "inferable_quantizer_id" for inferable quantizers; the training method ("STE", "LSQ",
  // "SoftRounding") for trainable ones.
  virtual std::string identifier() const = 0;
  virtual const char* class_name() const = 0;
  virtual bool is_trainable() const = 0;
  // {"class_name": ..., "config": {...}}: what quantizer_from_json reads back.
  virtual std::string to_json() const = 0;
};

// Rebuilds a quantizer from to_json() text: an inferable quantizer, or a trainable quantizer's
// policy (qi::TrainableQuantizer, which framework front ends bind to their variables). Unknown
// classes and malformed text throw qi::Error.
std::shared_ptr<BaseQuantizer> quantizer_from_json(const std::string& json);

}  // namespace qi
