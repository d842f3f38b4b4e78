// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include "qi/registry.h"

#include <cmath>
#include <cstring>

#include "core/json_util.h"
#include "qi/error.h"

namespace qi {

const InferableQuantizerInfo& get_inferable_quantizer_class(QuantizationTarget target,
                                                            QuantizationMethod method) {
  for (const auto& info : kInferableQuantizers)
    if (info.target == target && info.method == method) return info;
  throw Error(str_cat("get_inferable_quantizer_class: no inferable quantizer for target ",
                      to_string(target), " and method ", to_string(method)));
}

const InferableQuantizerInfo& inferable_quantizer_info(const char* class_name) {
  for (const auto& info : kInferableQuantizers)
    if (std::strcmp(info.class_name, class_name) == 0) return info;
  std::string names;
  for (const auto& info : kInferableQuantizers) names += str_cat(names.empty() ? "" : ", ", info.class_name);
  throw Error(str_cat("class_name: unknown inferable quantizer \"", class_name,
                      "\"; expected one of ", names));
}

const InferableQuantizerInfo& inferable_quantizer_info(InferableQuantizerKind kind) {
  const auto i = static_cast<size_t>(kind);
  QI_CHECK(i < kInferableQuantizers.size(), "InferableQuantizerKind: invalid value ", i);
  return kInferableQuantizers[i];
}

std::string to_string(ParamFamily family) {
  switch (family) {
    case ParamFamily::kSymmetricWeights: return "symmetric_weights";
    case ParamFamily::kUniformWeights: return "uniform_weights";
    case ParamFamily::kLutWeights: return "lut_weights";
    case ParamFamily::kSymmetricActivation: return "symmetric_activation";
    case ParamFamily::kUniformActivation: return "uniform_activation";
    case ParamFamily::kLutActivation: return "lut_activation";
    case ParamFamily::kFloatWeights: return "float_weights";
    case ParamFamily::kFloatActivation: return "float_activation";
    case ParamFamily::kMxWeights: return "mx_weights";
    case ParamFamily::kMxActivation: return "mx_activation";
    case ParamFamily::kNvfp4Weights: return "nvfp4_weights";
    case ParamFamily::kNvfp4Activation: return "nvfp4_activation";
  }
  throw Error(str_cat("ParamFamily: invalid value ", static_cast<int>(family)));
}

// ---- parameter families ------------------------------------------------------------------------

namespace {

using Spec = InferableParamSpec;

const Spec kNumBits{"num_bits", std::nullopt, false, "bit width n of the integer grid"};
const Spec kThreshold{"threshold", std::nullopt, false,
                      "threshold t > 0, a scalar or a list (one per channel when per_channel)"};
const Spec kMinRange{"min_range", std::nullopt, false,
                     "lower end of the range, a scalar or a list (one per channel)"};
const Spec kMaxRange{"max_range", std::nullopt, false,
                     "upper end of the range, a scalar or a list (one per channel)"};
const Spec kLutValues{"lut_values", std::nullopt, false,
                      "the look-up table: integers in the lut_values_bitwidth domain"};
const Spec kPerChannel{"per_channel", std::nullopt, false,
                       "one parameter per slice along channel_axis (else one per tensor)"};
const Spec kChannelAxis{"channel_axis", "null", false,
                        "the channel axis (negative counts from the end); required when "
                        "per_channel with more than one value"};
const Spec kInputRank{"input_rank", "null", false,
                      "rank of the tensors this quantizer will see (optional check)"};
const Spec kSignedWeights{"signed", "true", false, "signed grid (else unsigned, from 0)"};
const Spec kSigned{"signed", std::nullopt, false, "signed grid (else unsigned, from 0)"};
const Spec kLutBitwidth{"lut_values_bitwidth", "8", false,
                        "bit width B of the LUT's integer domain"};
const Spec kEps{"eps", "1e-08", false, "added to the threshold before dividing"};
const Spec kFormat{"format", std::nullopt, false,
                   "the element format: \"E4M3\" or \"E5M2\" (FP8), \"E3M2\" or \"E2M3\" (FP6), "
                   "\"E2M1\" (FP4)"};
const Spec kMxFormat{"format", std::nullopt, false,
                     "the element format: \"E4M3\" or \"E5M2\" (MXFP8), \"E3M2\" or \"E2M3\" "
                     "(MXFP6), \"E2M1\" (MXFP4), \"INT8\" (MXINT8)"};
const Spec kBlockSize{"block_size", "32", false,
                      "elements per block (sharing one scale) along block_axis, which must hold "
                      "whole blocks"};
const Spec kBlockAxis{"block_axis", "-1", false,
                      "the axis the blocks lie along (negative counts from the end)"};
const Spec kTensorScale{"tensor_scale", "null", false,
                        "the float32 tensor scale t > 0 of two-level scaling (block scales are "
                        "stored relative to it); null: single-level"};
const Spec kMxTensorScale{"tensor_scale", "null", true,
                          "an optional pre-scale p > 0 (a normal float32): the blocks quantize "
                          "x / p and the result is multiplied by p (float32); null: none"};
const Spec kBlockScales{"block_scales", "null", true,
                        "stored E4M3 block scales in [2^-6, 448], one per (channel along "
                        "channel_axis, block of 16 along block_axis), row-major: channel, then "
                        "block; each block's scale is tensor_scale * block_scale (or the block "
                        "scale); null: computed from the data"};
const Spec kBlockScalesAxis{"channel_axis", "0", true,
                            "the channel axis of block_scales (negative counts from the end); "
                            "not the block axis"};
const Spec kScale{"scale", std::nullopt, false,
                  "scale s > 0, a scalar or a list (one per channel when per_channel)"};
const Spec kGroupSize{"group_size", "null", true,
                      "elements per group along group_axis: one parameter per channel and group "
                      "(row-major: channel, then group), the last group may be shorter (null: "
                      "no groups)"};
const Spec kGroupAxis{"group_axis", "-1", true,
                      "the axis the groups lie along (negative counts from the end); not the "
                      "channel axis"};
const Spec kProfile{"profile", "\"torch\"", true,
                    "'torch' (round half to even, as torch.fake_quantize_*) or 'tf' (TensorFlow "
                    "fake_quant: nudged zero point, round half up)"};

const std::vector<Spec>& family_specs(ParamFamily family) {
  static const std::vector<Spec> symmetric_w = {
      kNumBits,       kThreshold, kPerChannel, kChannelAxis, kInputRank,
      kSignedWeights, kProfile,   kGroupSize,  kGroupAxis};
  static const std::vector<Spec> uniform_w = {kNumBits,   kMinRange,  kMaxRange,
                                              kPerChannel, kChannelAxis, kInputRank,
                                              kProfile,   kGroupSize, kGroupAxis};
  static const std::vector<Spec> lut_w = {kNumBits,     kLutValues, kThreshold,     kPerChannel,
                                          kChannelAxis, kInputRank, kSignedWeights, kLutBitwidth,
                                          kEps,         kProfile};
  static const std::vector<Spec> symmetric_a = {kNumBits, kThreshold, kSigned, kProfile};
  static const std::vector<Spec> uniform_a = {kNumBits, kMinRange, kMaxRange, kProfile};
  static const std::vector<Spec> lut_a = {kNumBits, kLutValues,   kThreshold,
                                          kSigned,  kLutBitwidth, kEps};
  static const std::vector<Spec> float_w = {kFormat,    kScale,     kPerChannel, kChannelAxis,
                                            kInputRank, kGroupSize, kGroupAxis};
  static const std::vector<Spec> float_a = {kFormat, kScale};
  static const std::vector<Spec> mx_w = {kMxFormat, kBlockSize, kBlockAxis, kInputRank,
                                         kMxTensorScale};
  static const std::vector<Spec> mx_a = {kMxFormat, kBlockSize, kBlockAxis, kMxTensorScale};
  static const std::vector<Spec> nvfp4_w = {kTensorScale, kBlockAxis, kInputRank, kBlockScales,
                                            kBlockScalesAxis};
  static const std::vector<Spec> nvfp4_a = {kTensorScale, kBlockAxis};
  switch (family) {
    case ParamFamily::kSymmetricWeights: return symmetric_w;
    case ParamFamily::kUniformWeights: return uniform_w;
    case ParamFamily::kLutWeights: return lut_w;
    case ParamFamily::kSymmetricActivation: return symmetric_a;
    case ParamFamily::kUniformActivation: return uniform_a;
    case ParamFamily::kLutActivation: return lut_a;
    case ParamFamily::kFloatWeights: return float_w;
    case ParamFamily::kFloatActivation: return float_a;
    case ParamFamily::kMxWeights: return mx_w;
    case ParamFamily::kMxActivation: return mx_a;
    case ParamFamily::kNvfp4Weights: return nvfp4_w;
    case ParamFamily::kNvfp4Activation: return nvfp4_a;
  }
  throw Error(str_cat("ParamFamily: invalid value ", static_cast<int>(family)));
}

}  // namespace

const std::vector<InferableParamSpec>& inferable_param_specs(InferableQuantizerKind kind) {
  return family_specs(inferable_quantizer_info(kind).family);
}

std::string example_inferable_config(InferableQuantizerKind kind, int64_t channels,
                                     int64_t channel_axis) {
  const auto& info = inferable_quantizer_info(kind);
  const bool weights = info.target == QuantizationTarget::Weights;
  QI_CHECK(channels >= 1 && (weights || channels == 1), info.class_name,
           ": example configs have 1 channel (activations) or more (weights), got ", channels);
  // Thresholds are powers of two, so that POT accepts them.
  json_util::Json t = json_util::Json::array(), lo = json_util::Json::array(),
                  hi = json_util::Json::array(), lut = json_util::Json::array();
  for (int64_t c = 0; c < channels; ++c) {
    const double v = channels > 1 ? std::ldexp(1.0, static_cast<int>(c % 4) - 2) : 1.0;
    t.push_back(v);
    lo.push_back(-v);
    hi.push_back(v);
  }
  for (int i = 0; i < 16; ++i) lut.push_back(-128.0 + 17.0 * i);
  const bool is_lut = info.family == ParamFamily::kLutWeights ||
                      info.family == ParamFamily::kLutActivation;
  json_util::Json j = json_util::Json::object();
  for (const auto& spec : inferable_param_specs(kind)) {
    const std::string key = spec.key;
    if (key == "num_bits") j[key] = is_lut ? 4 : 8;
    else if (key == "threshold" || key == "scale") j[key] = t;
    else if (key == "format") j[key] = "E4M3";
    else if (key == "tensor_scale" && info.method == QuantizationMethod::NVFP4)
      j[key] = std::ldexp(1.0, -9);
    else if (key == "min_range") j[key] = lo;
    else if (key == "max_range") j[key] = hi;
    else if (key == "lut_values") j[key] = lut;
    else if (key == "per_channel") j[key] = channels > 1;
    else if (key == "channel_axis")
      j[key] = channels > 1 ? json_util::Json(channel_axis)
                            : json_util::Json::parse(spec.default_json.value_or("null"));
    else if (key == "signed") j[key] = true;
    else if (spec.default_json) j[key] = json_util::Json::parse(*spec.default_json);
  }
  return j.dump();
}

}  // namespace qi
