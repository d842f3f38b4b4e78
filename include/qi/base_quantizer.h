// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <memory>
#include <string>

#include "qi/enums.h"
#include "qi/tensor_view.h"

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

// Throws qi::Error unless `q` can quantize a weight of this shape: an inferable quantizer's
// input_rank, channel axis and per-channel value count; a trainable quantizer's policy must be
// able to create its variables for it (`weight`, row-major float32 values or null, lets soft
// rounding check its initialization too). Loaders run it on every record before changing a model.
void check_fits_weight(const BaseQuantizer& q, const Shape& shape, const float* weight = nullptr);

}  // namespace qi
