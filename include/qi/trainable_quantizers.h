// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The trainable quantizers, defined once: their registry and their policy (which variables exist
// and how they start, what the forward computes in training and in eval, how they convert to an
// inferable quantizer). The LibTorch, PyTorch and Keras classes are generated from this registry
// and only create their framework's variables and call the ops the policy names.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "qi/base_quantizer.h"
#include "qi/configs.h"
#include "qi/enums.h"
#include "qi/inferable_quantizers.h"
#include "qi/trainable_math.h"

// X(ClassName, QuantizationTarget, TrainingMethod, Family, "doc")
// Family kSymmetric serves POWER_OF_TWO and SYMMETRIC, kUniform serves UNIFORM, kFormat serves
// FLOAT, MX and NVFP4.
#define QI_FOR_EACH_TRAINABLE_QUANTIZER(X)                                                      \
  X(STEWeightQATQuantizer, Weights, STE, kSymmetric,                                            \
    "STE weights quantizer: q = delta * clamp(round(w / delta), -2^(n-1), 2^(n-1)-1), "         \
    "delta = t / 2^(n-1); the threshold is fixed and dq/dw = 1.")                               \
  X(STEUniformWeightQATQuantizer, Weights, STE, kUniform,                                       \
    "STE uniform weights quantizer over the zero-adjusted [min, max]; the range is fixed and "  \
    "dq/dw = 1.")                                                                               \
  X(LSQWeightQATQuantizer, Weights, LSQ, kSymmetric,                                            \
    "LSQ weights quantizer: learned threshold (one per channel), hard clip, gradient scale "    \
    "g = 1 / sqrt((2^(n-1) - 1) * C) for C channels.")                                          \
  X(LSQUniformWeightQATQuantizer, Weights, LSQ, kUniform,                                       \
    "LSQ uniform weights quantizer: learned range (one per channel), gradient scale "           \
    "g = 1 / sqrt((2^n - 1) * C).")                                                             \
  X(STESymmetricActivationTrainableQuantizer, Activation, STE, kSymmetric,                      \
    "STE activation quantizer: the threshold learns through delta = t / 2^(n - s) unless "      \
    "frozen; dq/dx = 1.")                                                                       \
  X(STEUniformActivationTrainableQuantizer, Activation, STE, kUniform,                          \
    "STE uniform activation quantizer: the range learns unless frozen; dq/dx = 1.")             \
  X(LSQSymmetricActivationTrainableQuantizer, Activation, LSQ, kSymmetric,                      \
    "LSQ activation quantizer: learned threshold, hard clip, gradient scale "                   \
    "g = 1 / sqrt(2^(n - s) - 1) / sqrt(C) for C input channels.")                              \
  X(LSQUniformActivationTrainableQuantizer, Activation, LSQ, kUniform,                          \
    "LSQ uniform activation quantizer: learned range, gradient scale "                          \
    "g = 1 / sqrt(2^n - 1) / sqrt(C) for C input channels.")                                    \
  X(SymmetricSoftRoundingGPTQ, Weights, SoftRounding, kSymmetric,                               \
    "Soft rounding (AdaRound-style) of symmetric weights: q = delta * clamp(floor(w / delta) "  \
    "+ h(alpha), qmin, qmax) with h(alpha) learned per weight and hardened to {0, 1} in eval.") \
  X(UniformSoftRoundingGPTQ, Weights, SoftRounding, kUniform,                                   \
    "Soft rounding of uniform weights on the inferable quantizer's grid, h(alpha) learned per " \
    "weight and hardened to {0, 1} in eval.")                                                   \
  X(STEFloatWeightQATQuantizer, Weights, STE, kFormat,                                          \
    "STE weights quantizer of a low-precision float format (FLOAT: a fixed scale per tensor, "   \
    "channel or group), MX (blocks with E8M0 scales from the data) or NVFP4 (blocks of 16 with " \
    "E4M3 scales from the data); dq/dw = 1.")                                                   \
  X(LSQFloatWeightQATQuantizer, Weights, LSQ, kFormat,                                          \
    "LSQ weights quantizer of the formats: FLOAT learns its scales, MX a per-tensor pre-scale "  \
    "p (y = p * MX(w / p)), NVFP4 its block scales b (E4M3 in the forward, straight-through "  \
    "gradient) over the calibrated tensor scale t (learned too with \"learn_tensor_scale\": "   \
    "true); hard clip, gradient scale "                                                         \
    "g = 1 / sqrt(L * C) for L positive values of the element format and C parameters, over "  \
    "M^2 for FLOAT (M the format's max) and (6 t)^2 for NVFP4 (the range's gradient).")         \
  X(STEFloatActivationTrainableQuantizer, Activation, STE, kFormat,                             \
    "STE activation quantizer of the formats (FLOAT, MX, NVFP4): the FLOAT scale and the MX "    \
    "pre-scale learn unless frozen; dq/dx = 1.")                                                \
  X(LSQFloatActivationTrainableQuantizer, Activation, LSQ, kFormat,                             \
    "LSQ activation quantizer of FLOAT (learned scale) and MX (learned pre-scale): hard clip, "  \
    "gradient scale g = 1 / sqrt(L) / sqrt(C) for C input channels. NVFP4 activations train "   \
    "with STE only (their block scales follow the data).")

namespace qi {

enum class TrainableQuantizerKind : int {
#define QI_TRAINABLE_KIND_ENUM(Name, Target, TM, Family, Doc) Name,
  QI_FOR_EACH_TRAINABLE_QUANTIZER(QI_TRAINABLE_KIND_ENUM)
#undef QI_TRAINABLE_KIND_ENUM
};

// Which grids a trainable quantizer learns.
enum class TrainableFamily : int { kSymmetric, kUniform, kFormat };

// One row of the trainable registry (QI_FOR_EACH_TRAINABLE_QUANTIZER), as data.
struct TrainableQuantizerInfo {
  TrainableQuantizerKind kind;
  const char* class_name;
  QuantizationTarget target;
  TrainingMethod training_method;
  TrainableFamily family;
  const char* doc;

  // The quantization methods the class serves: POWER_OF_TWO and SYMMETRIC, UNIFORM, or FLOAT,
  // MX and NVFP4.
  std::vector<QuantizationMethod> methods() const;
  bool serves(QuantizationMethod method) const;
};

#define QI_TRAINABLE_KIND_COUNT(Name, Target, TM, Family, Doc) +1
inline constexpr size_t kNumTrainableQuantizers =
    0 QI_FOR_EACH_TRAINABLE_QUANTIZER(QI_TRAINABLE_KIND_COUNT);
#undef QI_TRAINABLE_KIND_COUNT

inline constexpr std::array<TrainableQuantizerInfo, kNumTrainableQuantizers> kTrainableQuantizers = {{
#define QI_TRAINABLE_KIND_INFO(Name, Target, TM, Family, Doc)                                 \
  {TrainableQuantizerKind::Name, #Name, QuantizationTarget::Target, TrainingMethod::TM, \
   TrainableFamily::Family, Doc},
    QI_FOR_EACH_TRAINABLE_QUANTIZER(QI_TRAINABLE_KIND_INFO)
#undef QI_TRAINABLE_KIND_INFO
}};

// The one class registered for (target, method, training method); qi::Error unless exactly one
// matches, e.g. "found 0 trainable quantizers for target Activation, method UNIFORM and training
// method SoftRounding; expected exactly one".
const TrainableQuantizerInfo& get_trainable_quantizer_class(QuantizationTarget target,
                                                            QuantizationMethod method,
                                                            TrainingMethod training_method);
// By class name (qi::Error naming the known classes for an unknown name) or kind.
const TrainableQuantizerInfo& trainable_quantizer_info(const std::string& class_name);
const TrainableQuantizerInfo& trainable_quantizer_info(TrainableQuantizerKind kind);
bool is_trainable_quantizer_class(const std::string& class_name);

// The op a trainable forward runs (qi::symmetric_quant, qi::uniform_quant, qi::soft_round).
enum class TrainableOp : int { kSymmetricQuant, kUniformQuant, kSoftRound, kFormatQuant };
std::string to_string(TrainableOp op);  // "symmetric_quant", "uniform_quant", "soft_round",
                                        // "format_quant"

// A trainable quantizer's policy, without variables: front ends create the variables it lists,
// call the op its forward names with them, and read them back to convert. Immutable.
class TrainableQuantizer : public BaseQuantizer {
 public:
  // Variable names, shared by all front ends (MCT's): threshold, range, soft-rounding variables.
  static constexpr const char* kThreshold = "ptq_threshold_tensor";
  static constexpr const char* kMin = "min";
  static constexpr const char* kMax = "max";
  static constexpr const char* kSoftThreshold = "ptq_threshold";
  static constexpr const char* kAuxvar = "auxvar_tensor";
  // The formats' variables: FLOAT scales, NVFP4's learned E4M3 block scales and tensor scale,
  // MX's pre-scale.
  static constexpr const char* kScale = "scale";
  static constexpr const char* kBlockScale = "block_scale";
  static constexpr const char* kTensorScale = "tensor_scale";
  static constexpr const char* kPreScale = "pre_scale";

  // The config must be of the class's target and its method one the class serves (qi::Error
  // with MCT's wording otherwise); its parameters must hold what the class reads ("threshold"
  // and, for activations, "is_signed"; or "range_min" and "range_max"). Weights STE and LSQ
  // also read "group_size" (an integer >= 1) and "group_axis" (an integer, -1 by default): one
  // threshold or range per (channel, group) of group_size elements along group_axis, as the
  // inferable per-group quantizers hold them (the last group may be shorter).
  // The formats (FLOAT, MX, NVFP4) name their element format by n_bits and "ebits" (E4M3: 8
  // and 4 (the default for 8 bits), E5M2: 8 and 5, E3M2: 6 and 3 (default), E2M3: 6 and 2,
  // E2M1: 4 and 2 (default); MX also INT8: 8 and 0; NVFP4: E2M1 only) and read: FLOAT "scale"
  // (one value, one per channel, or per (channel, group) with "group_size"/"group_axis"); MX
  // "block_size" (32), "block_axis" (-1) and "pre_scale" (1); NVFP4 "block_axis" (-1),
  // "tensor_scale" (optional) and, for LSQ weights, "block_scale" (optional: one value per
  // (channel, block of 16 along block_axis); by default amax / 6 / tensor_scale of the weight's
  // block, which variables() then needs).
  TrainableQuantizer(TrainableQuantizerKind kind, const TrainableQuantizerWeightsConfig& config,
                     bool freeze_quant_params = false);
  TrainableQuantizer(TrainableQuantizerKind kind, const TrainableQuantizerActivationConfig& config,
                     bool freeze_quant_params = false);
  // From the "config" object of to_json(): {"quantization_config": {...},
  // "freeze_quant_params": bool}.
  static std::shared_ptr<TrainableQuantizer> from_config(TrainableQuantizerKind kind,
                                                         const std::string& config_json);
  // From to_json() text.
  static std::shared_ptr<TrainableQuantizer> from_json(const std::string& json);

  const TrainableQuantizerInfo& info() const { return *info_; }
  QuantizationTarget quantization_target() const override { return info_->target; }
  QuantizationMethod quantization_method() const override { return method_; }
  std::string identifier() const override { return qi::to_string(info_->training_method); }
  const char* class_name() const override { return info_->class_name; }
  bool is_trainable() const override { return true; }
  TrainingMethod training_method() const { return info_->training_method; }
  bool freeze_quant_params() const { return freeze_; }
  int64_t num_bits() const;
  const std::optional<TrainableQuantizerWeightsConfig>& weights_config() const { return wcfg_; }
  const std::optional<TrainableQuantizerActivationConfig>& activation_config() const {
    return acfg_;
  }
  // The same policy with freeze_quant_params set (variables created afterwards are frozen).
  std::shared_ptr<TrainableQuantizer> frozen() const;

  // {"quantization_config": config.get_config(), "freeze_quant_params": bool} as text.
  std::string config_json() const;
  std::string to_json() const override;

  // A variable the front end creates: `initial` holds product(shape) values, row-major.
  struct Variable {
    std::string name;
    Shape shape;
    std::vector<float> initial;
    bool trainable = false;
    VariableGroup group = VariableGroup::QPARAMS;
  };
  // The variables of a quantizer of a weight of `weight_shape` (activations: ignored). Soft
  // rounding initializes alpha from the weight's values (`weight`: product(weight_shape) float32
  // values, row-major; required then). Throws qi::Error when the parameters do not fit the
  // weight (e.g. "threshold holds 6 values but the tensor has 3 channels").
  std::vector<Variable> variables(const Shape& weight_shape, const float* weight = nullptr) const;

  // What the forward computes: `op` on x and the variables, each passed as the op argument
  // `inputs` pairs it with ((op argument, variable name), in the op's order), with the static
  // arguments of that op's Args. variables_require_grad false: the front end passes the
  // variables' values without gradient (eval).
  struct Forward {
    TrainableOp op = TrainableOp::kSymmetricQuant;
    std::vector<std::pair<std::string, std::string>> inputs;
    bool variables_require_grad = false;
    trainable::SymmetricQuantArgs symmetric;
    trainable::UniformQuantArgs uniform;
    trainable::SoftRoundArgs soft_round;
    trainable::FormatQuantArgs format;
    bool training = false;  // soft rounding: soft (true) or hardened (false) rounding
  };
  // activation_channel_axis: where the front end's activations keep channels (PyTorch 1,
  // Keras -1), for the activations' LSQ gradient scale.
  Forward forward(bool training, const Shape& weight_shape,
                  int64_t activation_channel_axis) const;

  // The inferable quantizer whose output equals the eval forward bit for bit, from the
  // variables' current values by name (each flattened, as float32).
  using VariableValues = std::map<std::string, std::vector<float>>;
  std::shared_ptr<BaseInferableQuantizer> convert(const VariableValues& values) const;
  // Soft rounding: the eval output is not a function of the float weight through the inferable
  // quantizer alone, so conversion also replaces the weight by the eval forward of it.
  bool replaces_weight() const { return info_->training_method == TrainingMethod::SoftRounding; }
  // Whether variables() needs the weight's values: soft rounding, and NVFP4 LSQ weights whose
  // block scales start from the weight's blocks. Front ends pass the weight when this holds.
  bool needs_weight() const;

  // MCT's rule for get_trainable_variables(QPARAMS) of a frozen quantizer: qi::Error when
  // `trainable_qparams` of its QPARAMS variables would still train.
  void check_frozen(size_t trainable_qparams) const;

 private:
  void parse(const QuantizationParams& params);
  int64_t channels(const Shape& weight_shape) const;
  std::optional<int64_t> weight_axis() const;
  // The inferable per-group quantizer's parameters, without its thresholds or ranges.
  QuantizerParams grouped_params(int64_t num_bits) const;

  const TrainableQuantizerInfo* info_;
  QuantizationMethod method_;
  std::optional<TrainableQuantizerWeightsConfig> wcfg_;
  std::optional<TrainableQuantizerActivationConfig> acfg_;
  bool freeze_ = false;
  // From the config: thresholds (POT-ified for weights QAT) or ranges, and the sign.
  std::vector<double> threshold_, min_, max_;
  bool signed_ = true;
  // Weights STE and LSQ: "group_size" and "group_axis" of the weights quantization params (one
  // parameter per (channel, group), as the inferable per-group quantizers; none when unset).
  std::optional<int64_t> group_size_;
  int64_t group_axis_ = -1;
  // The formats: the element format's name, FLOAT's scales, the blocks (MX, NVFP4), MX's
  // pre-scale, NVFP4's tensor scale and initial block scales.
  std::string format_;
  std::vector<double> scale_;
  int64_t block_size_ = 32;
  int64_t block_axis_ = -1;
  double pre_scale_ = 1.0;
  std::optional<double> tensor_scale_;
  std::optional<std::vector<double>> block_scale_;
  void parse_format(const QuantizationParams& params);
  std::vector<Variable> format_variables(const Shape& weight_shape, const float* weight) const;
  Forward format_forward(bool training, const Shape& weight_shape,
                         int64_t activation_channel_axis) const;
  std::shared_ptr<BaseInferableQuantizer> format_convert(const VariableValues& values) const;
};

}  // namespace qi
