// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The one list of inferable quantizers. Each row says what generated code needs: the class, its
// target and method, its parameter family (the constructor arguments, in order, with defaults
// and docs), and the op type of its ONNX custom node. The enum, the lookup by (target, method),
// JSON, the Python classes (signatures and docs), the conformance tests, the benchmarks and the
// ONNX export are all generated from or driven by it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "qi/enums.h"

// X(ClassName, QuantizationTarget, QuantizationMethod, ParamFamily, "ONNX op type", "doc")
#define QI_SYMMETRIC_DOC                                                                        \
  "y = clamp(round(x / d), qmin, qmax) * d with d = threshold / 2^(num_bits - signed); "        \
  "integers [-2^(n-1), 2^(n-1)-1] when signed, else [0, 2^n - 1]."
#define QI_UNIFORM_DOC                                                                          \
  "Uniform grid of 2^num_bits levels over [min_range, max_range], first adjusted so that 0 is " \
  "on the grid; y = (clamp(zp + round(x / scale), 0, 2^n - 1) - zp) * scale."
#define QI_LUT_DOC                                                                              \
  "v = clamp(x / (threshold + eps) * 2^(B - signed), lo, hi) (no rounding); y = L[k] / "        \
  "2^(B - signed) * threshold with L[k] the first nearest LUT value to v."
#define QI_POT_DOC " Every threshold must be a power of two."
#define QI_FLOAT_DOC                                                                            \
  "y = round(clamp(x / scale, -max, max)) * scale, rounding to the low-precision float format "  \
  "(half to even, subnormals kept): E4M3 (FP8, max 448, no infinities), E5M2 (FP8, max 57344), " \
  "E3M2 (FP6, max 28), E2M3 (FP6, max 7.5) or E2M1 (FP4, max 6). NaN stays NaN, +/-Inf give "    \
  "+/-max * scale."
#define QI_MX_DOC                                                                               \
  "OCP Microscaling (MX v1.0): blocks of block_size elements along block_axis share the scale "   \
  "X = 2^(floor(log2(max|x|)) - emax) (E8M0; torchao's FLOOR mode); y = round(clamp(x / X, -max, " \
  "max)) * X in the element format: E4M3 or E5M2 (MXFP8), E3M2 or E2M3 (MXFP6), E2M1 (MXFP4), " \
  "INT8 (MXINT8: k/64, |k| <= 127). A NaN makes its block NaN. With a pre-scale tensor_scale "  \
  "p: y = MX(x / p) * p (float32)."
#define QI_NVFP4_DOC                                                                            \
  "NVFP4: E2M1 elements in blocks of 16 along block_axis, each with the FP8 E4M3 scale "          \
  "s = e4m3(clamp(max|x| / 6 / tensor_scale, 2^-6, 448)) and total scale tensor_scale * s "       \
  "(without tensor_scale: s); y = e2m1(clamp(x / total, -6, 6)) * total. A NaN makes its block "  \
  "NaN. Stored block_scales (weights) replace the computed s; a NaN then stays in its element."
#define QI_FOR_EACH_INFERABLE_QUANTIZER(X)                                                      \
  X(WeightsSymmetricInferableQuantizer, Weights, SYMMETRIC, kSymmetricWeights,                  \
    "WeightsSymmetricQuantizer", QI_SYMMETRIC_DOC)                                              \
  X(WeightsPOTInferableQuantizer, Weights, POWER_OF_TWO, kSymmetricWeights,                     \
    "WeightsPOTQuantizer", QI_SYMMETRIC_DOC QI_POT_DOC)                                         \
  X(WeightsUniformInferableQuantizer, Weights, UNIFORM, kUniformWeights,                        \
    "WeightsUniformQuantizer", QI_UNIFORM_DOC)                                                  \
  X(WeightsLUTSymmetricInferableQuantizer, Weights, LUT_SYM_QUANTIZER, kLutWeights,             \
    "WeightsLUTSymmetricQuantizer", QI_LUT_DOC)                                                 \
  X(WeightsLUTPOTInferableQuantizer, Weights, LUT_POT_QUANTIZER, kLutWeights,                   \
    "WeightsLUTPOTQuantizer", QI_LUT_DOC QI_POT_DOC)                                            \
  X(ActivationSymmetricInferableQuantizer, Activation, SYMMETRIC, kSymmetricActivation,         \
    "ActivationSymmetricQuantizer", QI_SYMMETRIC_DOC)                                           \
  X(ActivationPOTInferableQuantizer, Activation, POWER_OF_TWO, kSymmetricActivation,            \
    "ActivationPOTQuantizer", QI_SYMMETRIC_DOC QI_POT_DOC)                                      \
  X(ActivationUniformInferableQuantizer, Activation, UNIFORM, kUniformActivation,               \
    "ActivationUniformQuantizer", QI_UNIFORM_DOC)                                               \
  X(ActivationLutPOTInferableQuantizer, Activation, LUT_POT_QUANTIZER, kLutActivation,          \
    "ActivationLutPOTQuantizer", QI_LUT_DOC QI_POT_DOC)                                         \
  X(WeightsFloatInferableQuantizer, Weights, FLOAT, kFloatWeights, "WeightsFloatQuantizer",      \
    QI_FLOAT_DOC)                                                                               \
  X(ActivationFloatInferableQuantizer, Activation, FLOAT, kFloatActivation,                     \
    "ActivationFloatQuantizer", QI_FLOAT_DOC)                                                   \
  X(WeightsMXInferableQuantizer, Weights, MX, kMxWeights, "WeightsMXQuantizer", QI_MX_DOC)       \
  X(ActivationMXInferableQuantizer, Activation, MX, kMxActivation, "ActivationMXQuantizer",      \
    QI_MX_DOC)                                                                                  \
  X(WeightsNVFP4InferableQuantizer, Weights, NVFP4, kNvfp4Weights, "WeightsNVFP4Quantizer",      \
    QI_NVFP4_DOC)                                                                               \
  X(ActivationNVFP4InferableQuantizer, Activation, NVFP4, kNvfp4Activation,                     \
    "ActivationNVFP4Quantizer", QI_NVFP4_DOC)

namespace qi {

enum class InferableQuantizerKind : int {
#define QI_KIND_ENUM(Name, Target, Method, Family, OnnxOp, Doc) Name,
  QI_FOR_EACH_INFERABLE_QUANTIZER(QI_KIND_ENUM)
#undef QI_KIND_ENUM
};

// A parameter family: the constructor arguments a group of quantizers share.
enum class ParamFamily : int {
  kSymmetricWeights,     // num_bits, threshold, per_channel, channel_axis, input_rank, signed
  kUniformWeights,       // num_bits, min_range, max_range, per_channel, channel_axis, input_rank
  kLutWeights,           // num_bits, lut_values, threshold, per_channel, ..., eps
  kSymmetricActivation,  // num_bits, threshold, signed
  kUniformActivation,    // num_bits, min_range, max_range
  kLutActivation,        // num_bits, lut_values, threshold, signed, lut_values_bitwidth, eps
  kFloatWeights,         // format, scale, per_channel, channel_axis, input_rank, groups
  kFloatActivation,      // format, scale
  kMxWeights,            // format, block_size, block_axis, input_rank, tensor_scale
  kMxActivation,         // format, block_size, block_axis, tensor_scale
  kNvfp4Weights,         // tensor_scale, block_axis, input_rank, block_scales, channel_axis
  kNvfp4Activation,      // tensor_scale, block_axis
};
std::string to_string(ParamFamily family);  // "symmetric_weights", ...

// One row of the inferable registry (QI_FOR_EACH_INFERABLE_QUANTIZER), as data.
struct InferableQuantizerInfo {
  InferableQuantizerKind kind;
  const char* class_name;
  QuantizationTarget target;
  QuantizationMethod method;
  ParamFamily family;
  const char* onnx_op;  // the op type of its node in the mct_quantizers ONNX domain
  const char* doc;      // what it computes, one paragraph
};

#define QI_KIND_COUNT(Name, Target, Method, Family, OnnxOp, Doc) +1
inline constexpr size_t kNumInferableQuantizers = 0 QI_FOR_EACH_INFERABLE_QUANTIZER(QI_KIND_COUNT);
#undef QI_KIND_COUNT

inline constexpr std::array<InferableQuantizerInfo, kNumInferableQuantizers> kInferableQuantizers = {{
#define QI_KIND_INFO(Name, Target, Method, Family, OnnxOp, Doc)                                \
  {InferableQuantizerKind::Name, #Name, QuantizationTarget::Target, QuantizationMethod::Method, \
   ParamFamily::Family, OnnxOp, Doc},
    QI_FOR_EACH_INFERABLE_QUANTIZER(QI_KIND_INFO)
#undef QI_KIND_INFO
}};

// The registry entry for (target, method). Throws qi::Error when no inferable quantizer matches
// (e.g. Activation + LUT_SYM_QUANTIZER).
const InferableQuantizerInfo& get_inferable_quantizer_class(QuantizationTarget target,
                                                            QuantizationMethod method);
// The registry entry of a class name. Throws qi::Error for an unknown name.
const InferableQuantizerInfo& inferable_quantizer_info(const char* class_name);
const InferableQuantizerInfo& inferable_quantizer_info(InferableQuantizerKind kind);

// One constructor argument of a quantizer: its JSON key (and Python keyword), its default as
// JSON text (none: required), whether Python takes it by keyword only, and what it means.
struct InferableParamSpec {
  const char* key;
  std::optional<std::string> default_json;
  bool keyword_only = false;
  const char* doc = "";
};
// The arguments of `kind`, in positional order (MCT Quantizers' order); JSON configs hold
// exactly these keys (plus "qi_version").
const std::vector<InferableParamSpec>& inferable_param_specs(InferableQuantizerKind kind);
// A valid example configuration as JSON text, for tests, benchmarks and docs: `channels`
// per-channel values along `channel_axis` for weights quantizers (1: per tensor); 8 bits,
// thresholds and scales cycling through 0.25, 0.5, 1, 2 (per tensor 1), ranges [-t, t]; LUT: 4
// bits, 16 values spread over the 8-bit domain; FLOAT and MX: format E4M3; MX and NVFP4: blocks
// along the last axis, NVFP4's tensor scale 2^-9.
std::string example_inferable_config(InferableQuantizerKind kind, int64_t channels = 1,
                                     int64_t channel_axis = 0);

}  // namespace qi
