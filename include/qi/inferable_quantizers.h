// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Inferable (fixed-parameter) fake quantizers: the output is float32 on the quantization grid.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "qi/base_quantizer.h"
#include "qi/enums.h"
#include "qi/kernels.h"
#include "qi/registry.h"
#include "qi/tensor_view.h"

namespace qi {

// Every parameter any inferable quantizer takes, under mct-quantizers' names. Each
// quantizer reads the fields it documents and ignores the rest; JSON configs hold exactly the
// fields of their class.
struct QuantizerParams {
  int64_t num_bits = 8;
  std::vector<double> threshold;       // symmetric, POT, LUT: one per channel
  std::vector<double> min_range;       // uniform: one per channel
  std::vector<double> max_range;       // uniform: one per channel
  std::vector<double> lut_values;      // LUT: integer values in the lut_values_bitwidth domain
  bool per_channel = false;            // weights quantizers
  std::optional<int64_t> channel_axis; // required when per_channel; negative counts from the end
  std::optional<int64_t> input_rank;   // optional; when given, channel_axis and tensors must fit
  bool is_signed = true;               // "signed" in JSON/Python
  int64_t lut_values_bitwidth = 8;     // LUT
  double eps = 1e-8;                   // LUT
  std::string format;                  // FLOAT: the element format ("E4M3", ...)
  std::vector<double> scale;           // FLOAT: one per channel
  // weights symmetric, POT, uniform, FLOAT: one parameter per (channel, group) of group_size
  // elements along group_axis (kernels::GroupLayout); none when unset
  std::optional<int64_t> group_size;
  int64_t group_axis = -1;
  // MX: elements per block; MX, NVFP4: the blocks' axis; NVFP4: the tensor scale (none:
  // single-level scaling); MX: the pre-scale (none: none)
  int64_t block_size = 32;
  int64_t block_axis = -1;
  std::optional<double> tensor_scale;
  // NVFP4 weights: stored E4M3 block scales, one per (channel along channel_axis, block)
  // (kernels::GroupLayout's order); empty: computed from the data
  std::vector<double> block_scales;
  // symmetric, POT, uniform: the rounding convention; weights LUT: kTf adds eps to the
  // threshold in double (Keras), kTorch in float32 (torch)
  NumericProfile profile = NumericProfile::kTorch;
};

// Base of every quantizer that can run inference. Immutable after construction: parameters are
// validated once in the constructor (qi::Error on any bad value) and turned into a kernel plan.
class BaseInferableQuantizer : public BaseQuantizer {
 public:
  const InferableQuantizerInfo& info() const { return *info_; }
  QuantizationTarget quantization_target() const override { return info_->target; }
  QuantizationMethod quantization_method() const override { return info_->method; }
  const char* class_name() const override { return info_->class_name; }
  static constexpr const char* kIdentifier = "inferable_quantizer_id";
  std::string identifier() const override { return kIdentifier; }
  bool is_trainable() const override { return false; }

  const QuantizerParams& params() const { return params_; }
  int64_t num_bits() const { return params_.num_bits; }
  bool per_channel() const { return params_.per_channel; }
  std::optional<int64_t> channel_axis() const { return params_.channel_axis; }
  bool is_signed() const { return params_.is_signed; }
  // 1 for per-tensor quantizers.
  int64_t num_channels() const { return kernels::plan_channels(plan_); }
  const kernels::Plan& plan() const { return plan_; }
  // The plan as kernels::pack_plan's words (what the torch layer keeps as an int32 buffer and
  // passes to qi::quantize).
  std::vector<int32_t> packed_plan() const;

  // y = Q(x) elementwise. `out` must have in's sizes; it may be the same view as `in` (in place)
  // but must not partially overlap it. Per-channel quantizers need in.sizes[channel_axis] ==
  // num_channels(). Throws qi::Error when the tensor does not fit the quantizer.
  void apply(ConstTensorView in, TensorView out) const;
  void apply_inplace(TensorView inout) const { apply(inout, inout); }
  // Convenience: returns Q(x) for a contiguous row-major tensor of the given shape.
  std::vector<float> apply(const std::vector<float>& x, const Shape& shape) const;

  // The constructor arguments as a JSON object (mct-quantizers' keys, plus "qi_version").
  std::string get_config() const;
  // {"class_name": ..., "config": get_config()}: what inferable_quantizer_from_json reads.
  std::string to_json() const override;

  // The normalized channel axis for a tensor of rank `rank` (std::nullopt when per-tensor);
  // throws qi::Error when the axis does not fit.
  std::optional<int64_t> resolve_channel_axis(int64_t rank) const;

 protected:
  BaseInferableQuantizer(InferableQuantizerKind kind, QuantizerParams params);
  void set_plan(kernels::Plan plan) { plan_ = std::move(plan); }

 private:
  const InferableQuantizerInfo* info_;
  QuantizerParams params_;
  kernels::Plan plan_;
};

// ---- weights quantizers (per-tensor or per-channel on any axis) ----

// Symmetric grid: delta = t / 2^(n - s); integers [-2^(n-1), 2^(n-1)-1] when signed, else
// [0, 2^n - 1]; zero point 0. threshold: one value per channel (or one per tensor), finite > 0.
class WeightsSymmetricInferableQuantizer : public BaseInferableQuantizer {
 public:
  explicit WeightsSymmetricInferableQuantizer(const QuantizerParams& params);
  WeightsSymmetricInferableQuantizer(int64_t num_bits, std::vector<double> threshold,
                                     bool per_channel,
                                     std::optional<int64_t> channel_axis = std::nullopt,
                                     bool is_signed = true,
                                     NumericProfile profile = NumericProfile::kTorch);
 protected:
  WeightsSymmetricInferableQuantizer(InferableQuantizerKind kind, const QuantizerParams& params);
};

// As WeightsSymmetric, and every threshold must be a power of two.
class WeightsPOTInferableQuantizer : public WeightsSymmetricInferableQuantizer {
 public:
  explicit WeightsPOTInferableQuantizer(const QuantizerParams& params);
  WeightsPOTInferableQuantizer(int64_t num_bits, std::vector<double> threshold, bool per_channel,
                               std::optional<int64_t> channel_axis = std::nullopt,
                               bool is_signed = true,
                               NumericProfile profile = NumericProfile::kTorch);
};

// Uniform (asymmetric) grid over [min_range, max_range], first adjusted so that 0 is on the grid
// (docs/numerics.md); zero point rounded. Requires min_range[i] < max_range[i].
class WeightsUniformInferableQuantizer : public BaseInferableQuantizer {
 public:
  explicit WeightsUniformInferableQuantizer(const QuantizerParams& params);
  WeightsUniformInferableQuantizer(int64_t num_bits, std::vector<double> min_range,
                                   std::vector<double> max_range, bool per_channel,
                                   std::optional<int64_t> channel_axis = std::nullopt,
                                   NumericProfile profile = NumericProfile::kTorch);
  // The ranges after zero adjustment, one per channel (what the kernel quantizes to).
  std::vector<float> adjusted_min_range() const;
  std::vector<float> adjusted_max_range() const;
};

// Non-uniform: each value maps to the nearest of lut_values (in the lut_values_bitwidth integer
// domain, scaled by threshold / 2^(B - s)); see docs/numerics.md.
class WeightsLUTSymmetricInferableQuantizer : public BaseInferableQuantizer {
 public:
  explicit WeightsLUTSymmetricInferableQuantizer(const QuantizerParams& params);
  WeightsLUTSymmetricInferableQuantizer(int64_t num_bits, std::vector<double> lut_values,
                                        std::vector<double> threshold, bool per_channel,
                                        std::optional<int64_t> channel_axis = std::nullopt,
                                        std::optional<int64_t> input_rank = std::nullopt,
                                        int64_t lut_values_bitwidth = 8, double eps = 1e-8);
 protected:
  WeightsLUTSymmetricInferableQuantizer(InferableQuantizerKind kind,
                                        const QuantizerParams& params);
};

// As WeightsLUTSymmetric, and every threshold must be a power of two.
class WeightsLUTPOTInferableQuantizer : public WeightsLUTSymmetricInferableQuantizer {
 public:
  explicit WeightsLUTPOTInferableQuantizer(const QuantizerParams& params);
  WeightsLUTPOTInferableQuantizer(int64_t num_bits, std::vector<double> lut_values,
                                  std::vector<double> threshold, bool per_channel,
                                  std::optional<int64_t> channel_axis = std::nullopt,
                                  std::optional<int64_t> input_rank = std::nullopt,
                                  int64_t lut_values_bitwidth = 8, double eps = 1e-8);
};

// ---- activation quantizers (per-tensor) ----

// Symmetric activation grid, per tensor: delta = t / 2^(n - s) (s = 1 when signed), zero
// point 0; one finite threshold > 0.
class ActivationSymmetricInferableQuantizer : public BaseInferableQuantizer {
 public:
  explicit ActivationSymmetricInferableQuantizer(const QuantizerParams& params);
  ActivationSymmetricInferableQuantizer(int64_t num_bits, std::vector<double> threshold,
                                        bool is_signed,
                                        NumericProfile profile = NumericProfile::kTorch);
 protected:
  ActivationSymmetricInferableQuantizer(InferableQuantizerKind kind,
                                        const QuantizerParams& params);
};

// As ActivationSymmetricInferableQuantizer, with a threshold that is a power of two.
class ActivationPOTInferableQuantizer : public ActivationSymmetricInferableQuantizer {
 public:
  explicit ActivationPOTInferableQuantizer(const QuantizerParams& params);
  ActivationPOTInferableQuantizer(int64_t num_bits, std::vector<double> threshold, bool is_signed,
                                  NumericProfile profile = NumericProfile::kTorch);
};

// Uniform activation grid, per tensor: 2^n levels over [min_range, max_range], the range
// adjusted so that 0 lies on the grid.
class ActivationUniformInferableQuantizer : public BaseInferableQuantizer {
 public:
  explicit ActivationUniformInferableQuantizer(const QuantizerParams& params);
  ActivationUniformInferableQuantizer(int64_t num_bits, std::vector<double> min_range,
                                      std::vector<double> max_range,
                                      NumericProfile profile = NumericProfile::kTorch);
};

// Activations on a lookup table: each value becomes the nearest LUT entry (ties to the first)
// on a power-of-two threshold's scale; lut_values are integers of lut_values_bitwidth bits.
class ActivationLutPOTInferableQuantizer : public BaseInferableQuantizer {
 public:
  explicit ActivationLutPOTInferableQuantizer(const QuantizerParams& params);
  ActivationLutPOTInferableQuantizer(int64_t num_bits, std::vector<double> lut_values,
                                     std::vector<double> threshold, bool is_signed,
                                     int64_t lut_values_bitwidth = 8, double eps = 1e-8);
};

// ---- low-precision floats (qi's extension method FLOAT) ----

// y = round(clamp(x / s, -max, max)) * s in a float format (kernels::kFloatFormats), with one
// scale s per tensor or per channel along channel_axis; see docs/numerics.md. num_bits() is the
// format's width (8, 6 or 4).
class WeightsFloatInferableQuantizer : public BaseInferableQuantizer {
 public:
  explicit WeightsFloatInferableQuantizer(const QuantizerParams& params);
  WeightsFloatInferableQuantizer(std::string format, std::vector<double> scale, bool per_channel,
                                 std::optional<int64_t> channel_axis = std::nullopt,
                                 std::optional<int64_t> input_rank = std::nullopt);
};

class ActivationFloatInferableQuantizer : public BaseInferableQuantizer {
 public:
  explicit ActivationFloatInferableQuantizer(const QuantizerParams& params);
  ActivationFloatInferableQuantizer(std::string format, std::vector<double> scale);
};

// ---- block formats (qi's extension methods MX and NVFP4) ----

// OCP Microscaling: blocks of block_size elements along block_axis share a power-of-two scale
// computed from the block (kernels::MxPlan). format: "E4M3", "E5M2", "E3M2", "E2M3", "E2M1" or
// "INT8". The tensor's size along block_axis must be a multiple of block_size. tensor_scale: an
// optional pre-scale p (a finite normal float32 > 0): y = MX(x / p) * p in float32.
class WeightsMXInferableQuantizer : public BaseInferableQuantizer {
 public:
  explicit WeightsMXInferableQuantizer(const QuantizerParams& params);
  explicit WeightsMXInferableQuantizer(std::string format, int64_t block_size = 32,
                                       int64_t block_axis = -1,
                                       std::optional<int64_t> input_rank = std::nullopt,
                                       std::optional<double> tensor_scale = std::nullopt);
};

class ActivationMXInferableQuantizer : public BaseInferableQuantizer {
 public:
  explicit ActivationMXInferableQuantizer(const QuantizerParams& params);
  explicit ActivationMXInferableQuantizer(std::string format, int64_t block_size = 32,
                                          int64_t block_axis = -1,
                                          std::optional<double> tensor_scale = std::nullopt);
};

// NVFP4: E2M1 blocks of 16 along block_axis with E4M3 block scales under an optional float32
// tensor scale t (kernels::Nvfp4Plan). block_scales (weights): stored E4M3 scales s in
// [2^-6, 448] instead, one per (channel along channel_axis, block), in kernels::GroupLayout's
// order; the plan is then a kernels::FloatPlan of E2M1 with the scales t * s (or s), so a
// channel's block holds exactly those elements. Throws qi::Error for a value that is not such
// an E4M3 value.
class WeightsNVFP4InferableQuantizer : public BaseInferableQuantizer {
 public:
  explicit WeightsNVFP4InferableQuantizer(const QuantizerParams& params);
  explicit WeightsNVFP4InferableQuantizer(std::optional<double> tensor_scale,
                                          int64_t block_axis = -1,
                                          std::optional<int64_t> input_rank = std::nullopt,
                                          std::vector<double> block_scales = {},
                                          int64_t channel_axis = 0);
};

class ActivationNVFP4InferableQuantizer : public BaseInferableQuantizer {
 public:
  explicit ActivationNVFP4InferableQuantizer(const QuantizerParams& params);
  explicit ActivationNVFP4InferableQuantizer(std::optional<double> tensor_scale,
                                             int64_t block_axis = -1);
};

// Builds the registered class for `kind` from generic parameters (validating them).
std::unique_ptr<BaseInferableQuantizer> make_inferable_quantizer(InferableQuantizerKind kind,
                                                                 const QuantizerParams& params);
std::unique_ptr<BaseInferableQuantizer> make_inferable_quantizer(QuantizationTarget target,
                                                                 QuantizationMethod method,
                                                                 const QuantizerParams& params);

// The JSON keys a class's config holds (without "qi_version").
const std::vector<std::string>& inferable_quantizer_config_keys(InferableQuantizerKind kind);

// From get_config() text of a known class. Unknown or missing keys, wrong types and malformed
// text throw qi::Error.
std::unique_ptr<BaseInferableQuantizer> inferable_quantizer_from_config(
    InferableQuantizerKind kind, const std::string& config_json);
// From to_json() text: {"class_name": ..., "config": {...}}.
std::unique_ptr<BaseInferableQuantizer> inferable_quantizer_from_json(const std::string& json);
// The same, parsed once per distinct text and shared (a process-wide cache of bounded size,
// used by the framework ops that carry a quantizer as its JSON text). Thread safe.
std::shared_ptr<const BaseInferableQuantizer> cached_inferable_quantizer(const std::string& json);

}  // namespace qi
