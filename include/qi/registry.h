// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The one list of inferable quantizers. The enum, the lookup by (target, method), JSON
// deserialization, the conformance tests and the benchmarks are all generated from it.
#pragma once

#include <array>
#include <cstddef>

#include "qi/enums.h"

// X(ClassName, QuantizationTarget, QuantizationMethod)
#define QI_FOR_EACH_INFERABLE_QUANTIZER(X)                           \
  X(WeightsSymmetricInferableQuantizer, Weights, SYMMETRIC)          \
  X(WeightsPOTInferableQuantizer, Weights, POWER_OF_TWO)             \
  X(WeightsUniformInferableQuantizer, Weights, UNIFORM)              \
  X(WeightsLUTSymmetricInferableQuantizer, Weights, LUT_SYM_QUANTIZER) \
  X(WeightsLUTPOTInferableQuantizer, Weights, LUT_POT_QUANTIZER)     \
  X(ActivationSymmetricInferableQuantizer, Activation, SYMMETRIC)    \
  X(ActivationPOTInferableQuantizer, Activation, POWER_OF_TWO)       \
  X(ActivationUniformInferableQuantizer, Activation, UNIFORM)        \
  X(ActivationLutPOTInferableQuantizer, Activation, LUT_POT_QUANTIZER)

namespace qi {

enum class InferableQuantizerKind : int {
#define QI_KIND_ENUM(Name, Target, Method) Name,
  QI_FOR_EACH_INFERABLE_QUANTIZER(QI_KIND_ENUM)
#undef QI_KIND_ENUM
};

struct InferableQuantizerInfo {
  InferableQuantizerKind kind;
  const char* class_name;
  QuantizationTarget target;
  QuantizationMethod method;
};

inline constexpr std::array<InferableQuantizerInfo, 9> kInferableQuantizers = {{
#define QI_KIND_INFO(Name, Target, Method) \
  {InferableQuantizerKind::Name, #Name, QuantizationTarget::Target, QuantizationMethod::Method},
    QI_FOR_EACH_INFERABLE_QUANTIZER(QI_KIND_INFO)
#undef QI_KIND_INFO
}};

// The registry entry for (target, method) (REFERENCE.md 1.4). Throws qi::Error when no inferable
// quantizer matches (e.g. Activation + LUT_SYM_QUANTIZER).
const InferableQuantizerInfo& get_inferable_quantizer_class(QuantizationTarget target,
                                                            QuantizationMethod method);
// The registry entry of a class name. Throws qi::Error for an unknown name.
const InferableQuantizerInfo& inferable_quantizer_info(const char* class_name);
const InferableQuantizerInfo& inferable_quantizer_info(InferableQuantizerKind kind);

}  // namespace qi
