// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <string>

namespace qi {

// X(Name, value): MCT's QuantizationMethod with the values of mct_quantizers >= 1.5 (KMEANS
// removed), then qi's extensions at 100 and above (values MCT does not use): FLOAT, scaled
// low-precision float elements (FP8 E4M3/E5M2, FP6 E3M2/E2M3, FP4 E2M1); MX, OCP Microscaling
// (blocks sharing a power-of-two scale); NVFP4 (E2M1 blocks of 16 with E4M3 scales). Names and
// parsing follow this list.
#define QI_FOR_EACH_QUANTIZATION_METHOD(X) \
  X(POWER_OF_TWO, 0)                       \
  X(LUT_POT_QUANTIZER, 1)                  \
  X(SYMMETRIC, 2)                          \
  X(UNIFORM, 3)                            \
  X(LUT_SYM_QUANTIZER, 4)                  \
  X(FLOAT, 100)                            \
  X(MX, 101)                               \
  X(NVFP4, 102)

enum class QuantizationMethod : int {
#define QI_METHOD_ENUM(Name, Value) Name = Value,
  QI_FOR_EACH_QUANTIZATION_METHOD(QI_METHOD_ENUM)
#undef QI_METHOD_ENUM
};

// Whether a quantizer applies to a layer's weights or to its outputs.
enum class QuantizationTarget : int { Activation = 0, Weights = 1 };

// How a trainable quantizer learns (MCT's TrainingMethod, plus soft rounding from GPTQ).
enum class TrainingMethod : int { STE = 0, DQA = 1, LSQ = 2, SoftRounding = 3 };

// Optimizer groups of trainable variables (MCT's VariableGroup).
enum class VariableGroup : int { WEIGHTS = 0, QPARAMS = 1 };

// The rounding/arithmetic convention a symmetric, POT or uniform quantizer emulates.
//  kTorch: q = zp + nearbyint(x * (1.0f/scale)), clamp, (q - zp) * scale; round half to even,
//          bit-exact with torch.fake_quantize_per_{tensor,channel}_affine.
//  kTf:    TensorFlow's fake_quant_with_min_max_vars (nudged zero point, floor(v + 0.5)).
enum class NumericProfile : int { kTorch = 0, kTf = 1 };

std::string to_string(QuantizationMethod m);
std::string to_string(QuantizationTarget t);
std::string to_string(TrainingMethod t);
std::string to_string(VariableGroup g);
std::string to_string(NumericProfile p);  // "torch" / "tf"

// Parsers accept the name ("SYMMETRIC", "Weights", "LSQ", "torch"); the method and target also
// accept MCT's integer value as a decimal string. Throw qi::Error naming the valid choices.
QuantizationMethod quantization_method_from_string(const std::string& s);
QuantizationMethod quantization_method_from_value(int64_t value);
QuantizationTarget quantization_target_from_string(const std::string& s);
TrainingMethod training_method_from_string(const std::string& s);
VariableGroup variable_group_from_string(const std::string& s);
NumericProfile numeric_profile_from_string(const std::string& s);

}  // namespace qi
