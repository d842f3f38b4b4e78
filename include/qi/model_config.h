// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Whole-model quantization configs: what every front end's one-call quantization reads (named
// presets, per-layer overrides by name pattern or type, skip lists), with one JSON form and one
// set of rules. The front ends find the layers and build the quantizers; which layer gets what
// is decided here.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qi/base_quantizer.h"
#include "qi/calibration.h"
#include "qi/enums.h"

namespace qi {

// How one kind of tensor is quantized in a model: a layer's weights, or an activation.
// JSON keys: "method", "n_bits", "per_channel", "calibration", "percentile", "num_candidates",
// "training", "format", "group_size", "block_size", "block_axis".
struct TensorQuantizationSpec {
  // SYMMETRIC, POWER_OF_TWO, UNIFORM (integer grids), FLOAT (scaled low-precision floats), MX,
  // NVFP4 (block formats).
  QuantizationMethod method = QuantizationMethod::SYMMETRIC;
  int64_t n_bits = 8;  // FLOAT, MX, NVFP4: the width of the element format
  bool per_channel = false;  // weights only: activation quantizers are per tensor
  calibration::Method calibration = calibration::Method::kMinMax;
  double percentile = 99.99;     // of the percentile calibration, in (0, 100]
  int64_t num_candidates = 100;  // of the MSE search
  // QAT: the trainable quantizer's training method (STE or LSQ); none: an inferable quantizer.
  std::optional<TrainingMethod> training;
  // FLOAT, MX: the element format (FLOAT: E4M3, E5M2, E3M2, E2M3, E2M1; MX also INT8); empty for
  // the other methods.
  std::string format;
  // Weights of SYMMETRIC, POWER_OF_TWO, UNIFORM and FLOAT: one parameter per (channel, group)
  // of group_size elements along the weight's input axis (weight_input_axis); none: per channel
  // or per tensor.
  std::optional<int64_t> group_size;
  // MX: elements per block (none: 32); NVFP4: 16 (none: 16).
  std::optional<int64_t> block_size;
  // Activations of MX and NVFP4: the axis of the blocks. Weights block their input axis.
  int64_t block_axis = -1;

  bool operator==(const TensorQuantizationSpec& o) const;
  // JSON object of every key; from_json reads a (partial) object over the default spec of
  // weights (8-bit per-channel symmetric) or activations (8-bit uniform), validated.
  std::string to_json() const;
  static TensorQuantizationSpec from_json(const std::string& text, bool weights);
};

// A quantizer's calibrated parameters: thresholds (SYMMETRIC, POWER_OF_TWO: rounded up to
// powers of two) with the grid's sign, or ranges (UNIFORM), or scales (FLOAT: max |x| / the
// format's max), one value per channel or one, or per (channel, group) in the order
// c * groups + g; NVFP4: the tensor scale (max |x| / (448 * 6); none when max |x| is 0). MX has
// no calibrated parameter (its scales come from each block).
struct CalibratedParams {
  std::vector<double> threshold, min_range, max_range, scale;
  std::optional<double> tensor_scale;
  bool is_signed = true;
};
// The axis along which a weight's groups and blocks lie: its input axis. rank - 2 when the
// channel axis is the last (Keras kernels [..., in, out]); else 1 when it is 0 (PyTorch
// [out, in, ...]); else 0. qi::Error for a rank below 2.
int64_t weight_input_axis(int64_t rank, int64_t channel_axis);
// Weights: the spec's method on the tensor itself (minmax, mse: exact; percentile, kl: over a
// histogram of the tensor), per channel along channel_axis when spec.per_channel, per group
// along weight_input_axis when spec.group_size (a shorter last group is calibrated on its own
// elements). MX and NVFP4: the input axis must hold whole blocks (qi::Error naming the sizes).
CalibratedParams calibrate_weights(const TensorQuantizationSpec& spec, ConstTensorView w,
                                   int64_t channel_axis);
// Activations: the spec's method over the histogram of what the site saw (per tensor);
// symmetric grids are unsigned when no value was negative.
CalibratedParams calibrate_activations(const TensorQuantizationSpec& spec,
                                       const calibration::Histogram& h);

// The quantizer of a calibrated site, as every front end builds it: inferable when
// spec.training is none (post-training quantization), else the registry's trainable class for
// (target, method, spec.training), started from the same parameters (a core TrainableQuantizer,
// which each front end binds to its tensors). Weights: `rank` and `channel_axis` of the weight
// (per-channel parameters lie along channel_axis). qi::Error when the parameters do not fit.
std::shared_ptr<BaseQuantizer> make_weights_quantizer(const TensorQuantizationSpec& spec,
                                                      const CalibratedParams& params,
                                                      int64_t rank, int64_t channel_axis);
std::shared_ptr<BaseQuantizer> make_activation_quantizer(const TensorQuantizationSpec& spec,
                                                         const CalibratedParams& params);

// Which layers an override or a skip entry names: a glob over the layer's qualified name ("*"
// any characters, dots included; "?" one character) and/or its type name (e.g. "Conv2d", or
// "add" / "cat" / "matmul" for functional ops). Empty: any.
struct LayerMatch {
  std::string name;
  std::string type;
  bool matches(const std::string& layer_name, const std::string& layer_type) const;
  bool operator==(const LayerMatch& o) const { return name == o.name && type == o.type; }
};

// Changes for the layers that `match` names: a patch is JSON text, an object of the spec keys
// to change (e.g. {"n_bits": 4}), or "null" to quantize nothing of that kind; none: unchanged.
struct LayerOverride {
  LayerMatch match;
  std::optional<std::string> weights, activations;
  bool operator==(const LayerOverride& o) const;
};

// What a model's quantization does. JSON: {"preset": name (optional: the base, which the other
// keys change), "weights": spec | null, "activations": spec | null, "activation_ops": ["add",
// "cat", "matmul"], "fold_batch_norm": bool, "num_bins": int, "overrides": [{"name", "type",
// "weights", "activations"}], "skip": [name pattern | {"name", "type"}]}. Unknown keys and
// values are errors (qi::Error naming the key and the value).
struct ModelQuantizationConfig {
  std::optional<TensorQuantizationSpec> weights, activations;
  // Functional ops whose outputs get an activation quantizer: of "add", "cat", "matmul".
  std::vector<std::string> activation_ops = {"add", "cat", "matmul"};
  bool fold_batch_norm = true;
  int64_t num_bins = 2048;  // of the activation histograms
  std::vector<LayerOverride> overrides;  // in order; later ones win
  std::vector<LayerMatch> skip;

  // The named presets: "w8a8" (8-bit per-channel symmetric weights by MSE, 8-bit uniform
  // activations by MSE over histograms), "w4a8_lsq" (QAT: 4-bit per-channel LSQ weights, 8-bit
  // LSQ uniform activations, both started from calibration), "w8_weight_only".
  static std::vector<std::string> preset_names();
  static ModelQuantizationConfig preset(const std::string& name);
  static ModelQuantizationConfig from_json(const std::string& text);
  // Complete JSON (no "preset": every key written), which from_json reads back equal.
  std::string to_json() const;
  void validate() const;
  bool operator==(const ModelQuantizationConfig& o) const;

  // What the layer `name` of type `type` gets: skipped, or its weights and activation specs
  // after the overrides (none: not quantized).
  struct Layer {
    bool skipped = false;
    std::optional<TensorQuantizationSpec> weights, activations;
  };
  Layer resolve(const std::string& name, const std::string& type) const;
};

// "*" matches any run of characters, "?" one character; everything else itself.
bool glob_match(const std::string& pattern, const std::string& text);

}  // namespace qi
