// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Construction-time validation of every inferable quantizer and the choice of its kernel plan.
// Messages follow one shape: "<class>: <argument> <rule>, got <value>".

#include "qi/inferable_quantizers.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <set>
#include <sstream>

#include "core/param_rules.h"
#include "kernels/plan.h"
#include "kernels/scalar_ops.h"
#include "qi/error.h"

namespace qi {
namespace {

using Kind = InferableQuantizerKind;

std::string fmt_shape(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

// Validation helpers; `cls` is the class name that starts every message.
struct Checker {
  const char* cls;

  void num_bits(int64_t n, int64_t lo, int64_t hi, const char* why = "") const {
    rules::num_bits(cls, n, lo, hi, why);
  }

  void non_empty(const char* arg, const std::vector<double>& v) const {
    QI_CHECK(!v.empty(), cls, ": ", arg, " must hold at least one value, got []");
  }

  void finite(const char* arg, const std::vector<double>& v) const { rules::finite(cls, arg, v); }

  // Positive thresholds whose float32 step t / 2^(n - s) is a normal float32.
  void thresholds(const std::vector<double>& t, int64_t steps_log2) const {
    non_empty("threshold", t);
    finite("threshold", t);
    for (size_t i = 0; i < t.size(); ++i) rules::threshold(cls, t[i], steps_log2, i);
  }

  void power_of_two(const std::vector<double>& t) const {
    for (size_t i = 0; i < t.size(); ++i) {
      int e = 0;
      QI_CHECK(std::frexp(t[i], &e) == 0.5, cls,
               ": threshold must be a power of two for POWER_OF_TWO quantization, got ", t[i],
               " at index ", i);
    }
  }

  void ranges(const std::vector<double>& lo, const std::vector<double>& hi,
              int64_t num_bits) const {
    non_empty("min_range", lo);
    non_empty("max_range", hi);
    QI_CHECK(lo.size() == hi.size(), cls,
             ": min_range and max_range must have the same length, got ", lo.size(), " and ",
             hi.size());
    finite("min_range", lo);
    finite("max_range", hi);
    for (size_t i = 0; i < lo.size(); ++i) rules::range(cls, lo[i], hi[i], num_bits, i);
  }

  // per_channel needs channel_axis; per-tensor needs exactly one value per list.
  void layout(const QuantizerParams& p, const char* arg, size_t count) const {
    if (p.input_rank)
      QI_CHECK(*p.input_rank >= 1, cls, ": input_rank must be >= 1, got ", *p.input_rank);
    if (p.per_channel) {
      // One value applies to every channel, wherever they lie (the seed writes
      // per_channel=True, threshold=2); more values need to know their axis.
      QI_CHECK(p.channel_axis.has_value() || count == 1, cls,
               ": channel_axis is required for per-channel quantization with ", count,
               " values, got none");
      if (p.input_rank && p.channel_axis) {
        const int64_t r = *p.input_rank;
        QI_CHECK(*p.channel_axis >= -r && *p.channel_axis < r, cls, ": channel_axis must be in [",
                 -r, ", ", r, ") for input_rank ", r, ", got ", *p.channel_axis);
      }
    } else if (!p.group_size) {
      QI_CHECK(count == 1, cls, ": ", arg,
               " must hold exactly one value for per-tensor quantization, got ", count,
               " values");
    }
  }

  // Per-group granularity: group_size >= 1, a channel axis for per-channel groups, group_axis
  // within input_rank and apart from channel_axis (where both are known). How many values the
  // groups take depends on the tensor: checked when it is quantized (kernels::check_plan_fits).
  kernels::GroupLayout groups(const QuantizerParams& p) const {
    if (!p.group_size) return {};
    const int64_t k = *p.group_size;
    QI_CHECK(k >= 1 && k <= INT32_MAX, cls, ": group_size must be in [1, ", INT32_MAX,
             "] (or null: no groups), got ", k);
    QI_CHECK(p.group_axis >= -(int64_t{1} << 30) && p.group_axis < (int64_t{1} << 30), cls,
             ": group_axis must be an axis index, got ", p.group_axis);
    QI_CHECK(!p.per_channel || p.channel_axis, cls,
             ": channel_axis is required for per-channel quantization with groups, got none");
    const bool both = p.per_channel && p.channel_axis;
    if (p.input_rank) {
      const int64_t r = *p.input_rank;
      QI_CHECK(p.group_axis >= -r && p.group_axis < r, cls, ": group_axis must be in [", -r,
               ", ", r, ") for input_rank ", r, ", got ", p.group_axis);
      const auto norm = [r](int64_t a) { return a < 0 ? a + r : a; };
      QI_CHECK(!both || norm(*p.channel_axis) != norm(p.group_axis), cls, ": channel_axis ",
               *p.channel_axis, " and group_axis ", p.group_axis,
               " must be different axes (groups lie along another axis than the channels)");
    } else {
      QI_CHECK(!both || *p.channel_axis != p.group_axis, cls, ": channel_axis ",
               *p.channel_axis, " and group_axis ", p.group_axis,
               " must be different axes (groups lie along another axis than the channels)");
    }
    return {k, p.group_axis};
  }

  const kernels::FloatFormat& float_format(const std::string& name) const {
    const kernels::FloatFormat* f = kernels::find_float_format(name);
    QI_CHECK(f != nullptr, cls, ": format must be one of ", kernels::float_format_names(),
             ", got \"", name, "\"");
    return *f;
  }

  void scales(const std::vector<double>& s) const {
    non_empty("scale", s);
    for (size_t i = 0; i < s.size(); ++i) rules::scale(cls, s[i], i);
  }

  const kernels::FloatFormat& mx_format(const std::string& name) const {
    const kernels::FloatFormat* f = kernels::find_mx_format(name);
    QI_CHECK(f != nullptr, cls, ": format must be one of ", kernels::mx_format_names(), ", got \"",
             name, "\"");
    return *f;
  }

  // Blocks of block_size along block_axis (within input_rank when given).
  void blocks(const QuantizerParams& p, int64_t block_size) const {
    QI_CHECK(block_size >= 1 && block_size <= INT32_MAX, cls, ": block_size must be in [1, ",
             INT32_MAX, "], got ", block_size);
    QI_CHECK(p.block_axis >= -(int64_t{1} << 30) && p.block_axis < (int64_t{1} << 30), cls,
             ": block_axis must be an axis index, got ", p.block_axis);
    if (p.input_rank) {
      const int64_t r = *p.input_rank;
      QI_CHECK(p.block_axis >= -r && p.block_axis < r, cls, ": block_axis must be in [", -r, ", ",
               r, ") for input_rank ", r, ", got ", p.block_axis);
    }
  }

  // An optional tensor scale t: finite, > 0, a normal float32 with t * 448 finite.
  void tensor_scale(const std::optional<double>& t) const {
    if (!t) return;
    QI_CHECK(std::isfinite(*t), cls, ": tensor_scale must be finite, got ", *t);
    QI_CHECK(*t > 0, cls, ": tensor_scale must be > 0, got ", *t);
    QI_CHECK(*t <= FLT_MAX / 448 && static_cast<float>(*t) >= FLT_MIN, cls,
             ": tensor_scale must be a normal float32 in [", FLT_MIN, ", ", FLT_MAX / 448,
             "] (FLT_MAX / 448, so that the largest block scale stays finite), got ", *t);
  }

  // MX's optional pre-scale p: finite, > 0, a normal float32.
  void mx_tensor_scale(const std::optional<double>& p) const {
    if (!p) return;
    QI_CHECK(std::isfinite(*p), cls, ": tensor_scale must be finite, got ", *p);
    QI_CHECK(*p > 0, cls, ": tensor_scale must be > 0, got ", *p);
    QI_CHECK(*p <= FLT_MAX && static_cast<float>(*p) >= FLT_MIN, cls,
             ": tensor_scale must be a normal float32 in [", FLT_MIN, ", ", FLT_MAX, "], got ",
             *p);
  }

  // NVFP4's stored block scales: each an E4M3 value in [2^-6, 448] (its own block scale), with
  // a channel axis apart from the block axis (within input_rank when given).
  void block_scales(const QuantizerParams& p) const {
    for (size_t i = 0; i < p.block_scales.size(); ++i) {
      const double v = p.block_scales[i];
      const bool ok = std::isfinite(v) && v >= 0.015625 && v <= 448 &&
                      static_cast<double>(kernels::scalar::nvfp4_block_scale(
                          static_cast<float>(v))) == v;
      QI_CHECK(ok, cls, ": block_scales must be FP8 E4M3 values in [2^-6, 448] (0.015625 to ",
               "448), got ", v, " at index ", i);
    }
    QI_CHECK(p.channel_axis.has_value(), cls,
             ": channel_axis is required with block_scales, got none");
    const int64_t a = *p.channel_axis, b = p.block_axis;
    QI_CHECK(a >= -(int64_t{1} << 30) && a < (int64_t{1} << 30), cls,
             ": channel_axis must be an axis index, got ", a);
    if (p.input_rank) {
      const int64_t r = *p.input_rank;
      QI_CHECK(a >= -r && a < r, cls, ": channel_axis must be in [", -r, ", ", r,
               ") for input_rank ", r, ", got ", a);
      QI_CHECK((a < 0 ? a + r : a) != (b < 0 ? b + r : b), cls, ": channel_axis ", a,
               " and block_axis ", b, " must be different axes");
    } else {
      QI_CHECK(a != b, cls, ": channel_axis ", a, " and block_axis ", b,
               " must be different axes");
    }
  }

  void activation_layout(const QuantizerParams& p, const char* arg, size_t count) const {
    QI_CHECK(!p.per_channel, cls,
             ": per_channel must be false: activation quantization is per-tensor only, got true");
    QI_CHECK(count == 1, cls, ": ", arg,
             " must hold exactly one value: activation quantization is per-tensor only, got ",
             count, " values");
  }

  void lut(const QuantizerParams& p) const {
    const int64_t b = p.lut_values_bitwidth;
    QI_CHECK(b >= 2 && b <= 16, cls, ": lut_values_bitwidth must be in [2, 16], got ", b);
    num_bits(p.num_bits, 1, b, " (at most lut_values_bitwidth)");
    QI_CHECK(std::isfinite(p.eps) && p.eps >= 0, cls, ": eps must be finite and >= 0, got ",
             p.eps);
    const auto& L = p.lut_values;
    non_empty("lut_values", L);
    finite("lut_values", L);
    for (size_t i = 0; i < L.size(); ++i)
      QI_CHECK(L[i] == std::floor(L[i]), cls, ": lut_values must be integers, got ", L[i],
               " at index ", i);
    const double lo = p.is_signed ? -std::ldexp(1.0, static_cast<int>(b - 1)) : 0.0;
    const double hi = p.is_signed ? std::ldexp(1.0, static_cast<int>(b - 1)) - 1
                                  : std::ldexp(1.0, static_cast<int>(b)) - 1;
    for (size_t i = 0; i < L.size(); ++i) {
      if (!p.is_signed)
        QI_CHECK(L[i] >= 0, cls, ": lut_values must be >= 0 for unsigned quantization, got ",
                 L[i], " at index ", i);
      QI_CHECK(L[i] >= lo && L[i] <= hi, cls, ": lut_values must be in [", lo, ", ", hi,
               "] for lut_values_bitwidth ", b, (p.is_signed ? " (signed)" : " (unsigned)"),
               ", got ", L[i], " at index ", i);
    }
    const std::set<double> unique(L.begin(), L.end());
    const double max_count = std::ldexp(1.0, static_cast<int>(p.num_bits));
    QI_CHECK(static_cast<double>(unique.size()) <= max_count, cls,
             ": lut_values must hold at most 2^num_bits = ", max_count,
             " distinct values, got ", unique.size());
  }
};

QuantizerParams threshold_params(int64_t num_bits, std::vector<double> threshold) {
  QuantizerParams p;
  p.num_bits = num_bits;
  p.threshold = std::move(threshold);
  return p;
}

int64_t steps_log2(const QuantizerParams& p) { return p.num_bits - (p.is_signed ? 1 : 0); }

// Activation quantizers are per-tensor and ignore input_rank (their get_config() has no such
// key): it is cleared so that apply() does not enforce it.
QuantizerParams without_input_rank(QuantizerParams p) {
  p.input_rank.reset();
  return p;
}

QuantizerParams with_defaults(QuantizerParams p, bool per_channel, std::optional<int64_t> axis,
                              bool is_signed, NumericProfile profile) {
  p.per_channel = per_channel;
  p.channel_axis = axis;
  p.is_signed = is_signed;
  p.profile = profile;
  return p;
}

// The plan with its group layout.
template <typename P>
kernels::Plan grouped(P plan, const kernels::GroupLayout& groups) {
  plan.groups = groups;
  return plan;
}

// num_bits of a FLOAT or MX quantizer: its format's width (the params keep the rest as given).
QuantizerParams with_format_width(QuantizerParams p) {
  if (const auto* f = kernels::find_mx_format(p.format))
    p.num_bits = f->ebits == 0 ? 8 : 1 + f->ebits + f->mbits;
  return p;
}

// NVFP4: 4-bit elements in blocks of 16.
QuantizerParams nvfp4_params(QuantizerParams p) {
  p.num_bits = 4;
  p.block_size = kernels::kNvfp4BlockSize;
  return p;
}

}  // namespace

// ---- base --------------------------------------------------------------------------------------

BaseInferableQuantizer::BaseInferableQuantizer(InferableQuantizerKind kind, QuantizerParams params)
    : info_(&inferable_quantizer_info(kind)), params_(std::move(params)) {}

std::optional<int64_t> BaseInferableQuantizer::resolve_channel_axis(int64_t rank) const {
  if (!params_.per_channel || !params_.channel_axis) return std::nullopt;
  const int64_t axis = *params_.channel_axis;
  QI_CHECK(axis >= -rank && axis < rank, class_name(), ": channel_axis must be in [", -rank, ", ",
           rank, ") for a tensor of rank ", rank, ", got ", axis);
  return axis < 0 ? axis + rank : axis;
}

void BaseInferableQuantizer::apply(ConstTensorView in, TensorView out) const {
  kernels::checked_fake_quant(class_name(), plan_,
                              params_.per_channel ? params_.channel_axis : std::nullopt,
                              params_.input_rank, in, out);
}

std::vector<int32_t> BaseInferableQuantizer::packed_plan() const { return kernels::pack_plan(plan_); }

std::vector<float> BaseInferableQuantizer::apply(const std::vector<float>& x,
                                                 const Shape& shape) const {
  ConstTensorView in(x.data(), shape);
  QI_CHECK(in.numel() == static_cast<int64_t>(x.size()), class_name(), ": shape ",
           fmt_shape(shape), " holds ", in.numel(), " elements, got ", x.size(), " values");
  std::vector<float> y(x.size());
  apply(in, TensorView(y.data(), shape));
  return y;
}

// ---- weights symmetric / POT -------------------------------------------------------------------

WeightsSymmetricInferableQuantizer::WeightsSymmetricInferableQuantizer(
    InferableQuantizerKind kind, const QuantizerParams& p)
    : BaseInferableQuantizer(kind, p) {
  const Checker check{class_name()};
  check.num_bits(p.num_bits, 2, 16);
  check.thresholds(p.threshold, steps_log2(p));
  check.layout(p, "threshold", p.threshold.size());
  const auto groups = check.groups(p);
  if (kind == Kind::WeightsPOTInferableQuantizer) check.power_of_two(p.threshold);
  // Groups take the per-channel arithmetic (the tf profile multiplies by 1/scale per channel).
  const bool per_channel = p.per_channel || groups.group_size > 0;
  if (p.profile == NumericProfile::kTorch)
    set_plan(grouped(kernels::symmetric_torch_plan(p.threshold, p.num_bits, p.is_signed), groups));
  else
    set_plan(grouped(
        kernels::symmetric_tf_plan(p.threshold, p.num_bits, p.is_signed, per_channel), groups));
}

WeightsSymmetricInferableQuantizer::WeightsSymmetricInferableQuantizer(const QuantizerParams& p)
    : WeightsSymmetricInferableQuantizer(Kind::WeightsSymmetricInferableQuantizer, p) {}

WeightsSymmetricInferableQuantizer::WeightsSymmetricInferableQuantizer(
    int64_t num_bits, std::vector<double> threshold, bool per_channel,
    std::optional<int64_t> channel_axis, bool is_signed, NumericProfile profile)
    : WeightsSymmetricInferableQuantizer(
          Kind::WeightsSymmetricInferableQuantizer,
          with_defaults(threshold_params(num_bits, std::move(threshold)), per_channel, channel_axis,
                        is_signed, profile)) {}

WeightsPOTInferableQuantizer::WeightsPOTInferableQuantizer(const QuantizerParams& p)
    : WeightsSymmetricInferableQuantizer(Kind::WeightsPOTInferableQuantizer, p) {}

WeightsPOTInferableQuantizer::WeightsPOTInferableQuantizer(int64_t num_bits,
                                                           std::vector<double> threshold,
                                                           bool per_channel,
                                                           std::optional<int64_t> channel_axis,
                                                           bool is_signed, NumericProfile profile)
    : WeightsSymmetricInferableQuantizer(
          Kind::WeightsPOTInferableQuantizer,
          with_defaults(threshold_params(num_bits, std::move(threshold)), per_channel, channel_axis,
                        is_signed, profile)) {}

// ---- weights uniform ---------------------------------------------------------------------------

WeightsUniformInferableQuantizer::WeightsUniformInferableQuantizer(const QuantizerParams& p)
    : BaseInferableQuantizer(Kind::WeightsUniformInferableQuantizer, p) {
  const Checker check{class_name()};
  check.num_bits(p.num_bits, 2, 16);
  check.ranges(p.min_range, p.max_range, p.num_bits);
  check.layout(p, "min_range", p.min_range.size());
  const auto groups = check.groups(p);
  const bool per_channel = p.per_channel || groups.group_size > 0;
  if (p.profile == NumericProfile::kTorch)
    set_plan(grouped(kernels::uniform_torch_plan(p.min_range, p.max_range, p.num_bits, false),
                     groups));
  else
    set_plan(grouped(
        kernels::uniform_tf_plan(p.min_range, p.max_range, p.num_bits, per_channel), groups));
}

WeightsUniformInferableQuantizer::WeightsUniformInferableQuantizer(
    int64_t num_bits, std::vector<double> min_range, std::vector<double> max_range,
    bool per_channel, std::optional<int64_t> channel_axis, NumericProfile profile)
    : WeightsUniformInferableQuantizer([&] {
        QuantizerParams p;
        p.num_bits = num_bits;
        p.min_range = std::move(min_range);
        p.max_range = std::move(max_range);
        return with_defaults(p, per_channel, channel_axis, true, profile);
      }()) {}

namespace {
// The zero-adjusted range of channel c with the arithmetic of the quantizer's profile.
std::pair<float, float> adjusted_range(const QuantizerParams& p, size_t c) {
  if (p.profile == NumericProfile::kTorch) {
    float lo, hi;
    kernels::adjust_range_float(static_cast<float>(p.min_range[c]),
                                static_cast<float>(p.max_range[c]), p.num_bits, &lo, &hi);
    return {lo, hi};
  }
  double lo, hi;
  kernels::adjust_range_double(p.min_range[c], p.max_range[c], p.num_bits, &lo, &hi);
  return {static_cast<float>(lo), static_cast<float>(hi)};
}
}  // namespace

std::vector<float> WeightsUniformInferableQuantizer::adjusted_min_range() const {
  std::vector<float> out;
  for (size_t c = 0; c < params().min_range.size(); ++c)
    out.push_back(adjusted_range(params(), c).first);
  return out;
}

std::vector<float> WeightsUniformInferableQuantizer::adjusted_max_range() const {
  std::vector<float> out;
  for (size_t c = 0; c < params().min_range.size(); ++c)
    out.push_back(adjusted_range(params(), c).second);
  return out;
}

// ---- weights LUT -------------------------------------------------------------------------------

WeightsLUTSymmetricInferableQuantizer::WeightsLUTSymmetricInferableQuantizer(
    InferableQuantizerKind kind, const QuantizerParams& p)
    : BaseInferableQuantizer(kind, p) {
  const Checker check{class_name()};
  check.lut(p);
  check.thresholds(p.threshold, 0);
  check.layout(p, "threshold", p.threshold.size());
  if (kind == Kind::WeightsLUTPOTInferableQuantizer) check.power_of_two(p.threshold);
  // torch adds eps to a float32 threshold tensor; Keras adds it in float64 before TF casts.
  set_plan(kernels::lut_plan(p.lut_values, p.threshold, p.is_signed, p.lut_values_bitwidth, p.eps,
                             /*divisor_in_double=*/p.profile == NumericProfile::kTf));
}

namespace {
QuantizerParams lut_params(int64_t num_bits, std::vector<double> lut_values,
                           std::vector<double> threshold, bool per_channel,
                           std::optional<int64_t> channel_axis, std::optional<int64_t> input_rank,
                           int64_t lut_values_bitwidth, double eps, bool is_signed) {
  QuantizerParams p;
  p.num_bits = num_bits;
  p.lut_values = std::move(lut_values);
  p.threshold = std::move(threshold);
  p.per_channel = per_channel;
  p.channel_axis = channel_axis;
  p.input_rank = input_rank;
  p.lut_values_bitwidth = lut_values_bitwidth;
  p.eps = eps;
  p.is_signed = is_signed;
  return p;
}
}  // namespace

WeightsLUTSymmetricInferableQuantizer::WeightsLUTSymmetricInferableQuantizer(
    const QuantizerParams& p)
    : WeightsLUTSymmetricInferableQuantizer(Kind::WeightsLUTSymmetricInferableQuantizer, p) {}

WeightsLUTSymmetricInferableQuantizer::WeightsLUTSymmetricInferableQuantizer(
    int64_t num_bits, std::vector<double> lut_values, std::vector<double> threshold,
    bool per_channel, std::optional<int64_t> channel_axis, std::optional<int64_t> input_rank,
    int64_t lut_values_bitwidth, double eps)
    : WeightsLUTSymmetricInferableQuantizer(
          Kind::WeightsLUTSymmetricInferableQuantizer,
          lut_params(num_bits, std::move(lut_values), std::move(threshold), per_channel,
                     channel_axis, input_rank, lut_values_bitwidth, eps, true)) {}

WeightsLUTPOTInferableQuantizer::WeightsLUTPOTInferableQuantizer(const QuantizerParams& p)
    : WeightsLUTSymmetricInferableQuantizer(Kind::WeightsLUTPOTInferableQuantizer, p) {}

WeightsLUTPOTInferableQuantizer::WeightsLUTPOTInferableQuantizer(
    int64_t num_bits, std::vector<double> lut_values, std::vector<double> threshold,
    bool per_channel, std::optional<int64_t> channel_axis, std::optional<int64_t> input_rank,
    int64_t lut_values_bitwidth, double eps)
    : WeightsLUTSymmetricInferableQuantizer(
          Kind::WeightsLUTPOTInferableQuantizer,
          lut_params(num_bits, std::move(lut_values), std::move(threshold), per_channel,
                     channel_axis, input_rank, lut_values_bitwidth, eps, true)) {}

// ---- activations -------------------------------------------------------------------------------

ActivationSymmetricInferableQuantizer::ActivationSymmetricInferableQuantizer(
    InferableQuantizerKind kind, const QuantizerParams& p)
    : BaseInferableQuantizer(kind, without_input_rank(p)) {
  const Checker check{class_name()};
  check.num_bits(p.num_bits, 2, 16);
  check.activation_layout(p, "threshold", p.threshold.size());
  check.thresholds(p.threshold, steps_log2(p));
  if (kind == Kind::ActivationPOTInferableQuantizer) check.power_of_two(p.threshold);
  if (p.profile == NumericProfile::kTorch)
    set_plan(kernels::symmetric_torch_plan(p.threshold, p.num_bits, p.is_signed));
  else
    set_plan(kernels::symmetric_tf_plan(p.threshold, p.num_bits, p.is_signed, false));
}

ActivationSymmetricInferableQuantizer::ActivationSymmetricInferableQuantizer(
    const QuantizerParams& p)
    : ActivationSymmetricInferableQuantizer(Kind::ActivationSymmetricInferableQuantizer, p) {}

ActivationSymmetricInferableQuantizer::ActivationSymmetricInferableQuantizer(
    int64_t num_bits, std::vector<double> threshold, bool is_signed, NumericProfile profile)
    : ActivationSymmetricInferableQuantizer(
          Kind::ActivationSymmetricInferableQuantizer,
          with_defaults(threshold_params(num_bits, std::move(threshold)), false, std::nullopt,
                        is_signed, profile)) {}

ActivationPOTInferableQuantizer::ActivationPOTInferableQuantizer(const QuantizerParams& p)
    : ActivationSymmetricInferableQuantizer(Kind::ActivationPOTInferableQuantizer, p) {}

ActivationPOTInferableQuantizer::ActivationPOTInferableQuantizer(int64_t num_bits,
                                                                 std::vector<double> threshold,
                                                                 bool is_signed,
                                                                 NumericProfile profile)
    : ActivationSymmetricInferableQuantizer(
          Kind::ActivationPOTInferableQuantizer,
          with_defaults(threshold_params(num_bits, std::move(threshold)), false, std::nullopt,
                        is_signed, profile)) {}

ActivationUniformInferableQuantizer::ActivationUniformInferableQuantizer(const QuantizerParams& p)
    : BaseInferableQuantizer(Kind::ActivationUniformInferableQuantizer, without_input_rank(p)) {
  const Checker check{class_name()};
  check.num_bits(p.num_bits, 2, 16);
  check.activation_layout(p, "min_range", p.min_range.size());
  check.activation_layout(p, "max_range", p.max_range.size());
  check.ranges(p.min_range, p.max_range, p.num_bits);
  if (p.profile == NumericProfile::kTorch)
    set_plan(kernels::uniform_torch_plan(p.min_range, p.max_range, p.num_bits, true));
  else
    set_plan(kernels::uniform_tf_plan(p.min_range, p.max_range, p.num_bits, false));
}

ActivationUniformInferableQuantizer::ActivationUniformInferableQuantizer(
    int64_t num_bits, std::vector<double> min_range, std::vector<double> max_range,
    NumericProfile profile)
    : ActivationUniformInferableQuantizer([&] {
        QuantizerParams p;
        p.num_bits = num_bits;
        p.min_range = std::move(min_range);
        p.max_range = std::move(max_range);
        return with_defaults(p, false, std::nullopt, true, profile);
      }()) {}

ActivationLutPOTInferableQuantizer::ActivationLutPOTInferableQuantizer(const QuantizerParams& p)
    : BaseInferableQuantizer(Kind::ActivationLutPOTInferableQuantizer, without_input_rank(p)) {
  const Checker check{class_name()};
  check.lut(p);
  check.activation_layout(p, "threshold", p.threshold.size());
  check.thresholds(p.threshold, 0);
  check.power_of_two(p.threshold);
  set_plan(kernels::lut_plan(p.lut_values, p.threshold, p.is_signed, p.lut_values_bitwidth, p.eps,
                             /*divisor_in_double=*/true));
}

ActivationLutPOTInferableQuantizer::ActivationLutPOTInferableQuantizer(
    int64_t num_bits, std::vector<double> lut_values, std::vector<double> threshold,
    bool is_signed, int64_t lut_values_bitwidth, double eps)
    : ActivationLutPOTInferableQuantizer(lut_params(num_bits, std::move(lut_values),
                                                    std::move(threshold), false, std::nullopt,
                                                    std::nullopt, lut_values_bitwidth, eps,
                                                    is_signed)) {}

// ---- low-precision floats ----------------------------------------------------------------------

WeightsFloatInferableQuantizer::WeightsFloatInferableQuantizer(const QuantizerParams& p)
    : BaseInferableQuantizer(Kind::WeightsFloatInferableQuantizer, with_format_width(p)) {
  const Checker check{class_name()};
  const auto& format = check.float_format(p.format);
  check.scales(p.scale);
  check.layout(p, "scale", p.scale.size());
  set_plan(grouped(kernels::float_plan(format, p.scale), check.groups(p)));
}

WeightsFloatInferableQuantizer::WeightsFloatInferableQuantizer(
    std::string format, std::vector<double> scale, bool per_channel,
    std::optional<int64_t> channel_axis, std::optional<int64_t> input_rank)
    : WeightsFloatInferableQuantizer([&] {
        QuantizerParams p;
        p.format = std::move(format);
        p.scale = std::move(scale);
        p.per_channel = per_channel;
        p.channel_axis = channel_axis;
        p.input_rank = input_rank;
        return p;
      }()) {}

ActivationFloatInferableQuantizer::ActivationFloatInferableQuantizer(const QuantizerParams& p)
    : BaseInferableQuantizer(Kind::ActivationFloatInferableQuantizer,
                             with_format_width(without_input_rank(p))) {
  const Checker check{class_name()};
  const auto& format = check.float_format(p.format);
  check.activation_layout(p, "scale", p.scale.size());
  check.scales(p.scale);
  set_plan(kernels::float_plan(format, p.scale));
}

ActivationFloatInferableQuantizer::ActivationFloatInferableQuantizer(std::string format,
                                                                     std::vector<double> scale)
    : ActivationFloatInferableQuantizer([&] {
        QuantizerParams p;
        p.format = std::move(format);
        p.scale = std::move(scale);
        return p;
      }()) {}

// ---- block formats ------------------------------------------------------------------------------

WeightsMXInferableQuantizer::WeightsMXInferableQuantizer(const QuantizerParams& p)
    : BaseInferableQuantizer(Kind::WeightsMXInferableQuantizer, with_format_width(p)) {
  const Checker check{class_name()};
  const auto& format = check.mx_format(p.format);
  if (p.input_rank)
    QI_CHECK(*p.input_rank >= 1, class_name(), ": input_rank must be >= 1, got ", *p.input_rank);
  check.blocks(p, p.block_size);
  check.mx_tensor_scale(p.tensor_scale);
  set_plan(kernels::mx_plan(format, p.block_size, p.block_axis, p.tensor_scale));
}

namespace {
QuantizerParams block_params(std::string format, int64_t block_size, int64_t block_axis,
                             std::optional<int64_t> input_rank,
                             std::optional<double> tensor_scale) {
  QuantizerParams p;
  p.format = std::move(format);
  p.block_size = block_size;
  p.block_axis = block_axis;
  p.input_rank = input_rank;
  p.tensor_scale = tensor_scale;
  return p;
}
}  // namespace

WeightsMXInferableQuantizer::WeightsMXInferableQuantizer(std::string format, int64_t block_size,
                                                         int64_t block_axis,
                                                         std::optional<int64_t> input_rank,
                                                         std::optional<double> tensor_scale)
    : WeightsMXInferableQuantizer(
          block_params(std::move(format), block_size, block_axis, input_rank, tensor_scale)) {}

ActivationMXInferableQuantizer::ActivationMXInferableQuantizer(const QuantizerParams& p)
    : BaseInferableQuantizer(Kind::ActivationMXInferableQuantizer,
                             with_format_width(without_input_rank(p))) {
  const Checker check{class_name()};
  const auto& format = check.mx_format(p.format);
  check.blocks(without_input_rank(p), p.block_size);
  check.mx_tensor_scale(p.tensor_scale);
  set_plan(kernels::mx_plan(format, p.block_size, p.block_axis, p.tensor_scale));
}

ActivationMXInferableQuantizer::ActivationMXInferableQuantizer(std::string format,
                                                               int64_t block_size,
                                                               int64_t block_axis,
                                                               std::optional<double> tensor_scale)
    : ActivationMXInferableQuantizer(
          block_params(std::move(format), block_size, block_axis, std::nullopt, tensor_scale)) {}

namespace {
// NVFP4 weights: stored block scales make the quantizer per channel (one set per channel and
// block), so that apply() passes the channel axis to the kernels.
QuantizerParams nvfp4_weights_params(QuantizerParams p) {
  p = nvfp4_params(std::move(p));
  p.per_channel = !p.block_scales.empty();
  return p;
}
}  // namespace

WeightsNVFP4InferableQuantizer::WeightsNVFP4InferableQuantizer(const QuantizerParams& p)
    : BaseInferableQuantizer(Kind::WeightsNVFP4InferableQuantizer, nvfp4_weights_params(p)) {
  const Checker check{class_name()};
  check.tensor_scale(p.tensor_scale);
  if (p.input_rank)
    QI_CHECK(*p.input_rank >= 1, class_name(), ": input_rank must be >= 1, got ", *p.input_rank);
  check.blocks(p, kernels::kNvfp4BlockSize);
  if (p.block_scales.empty()) {
    set_plan(kernels::nvfp4_plan(p.tensor_scale, p.block_axis));
    return;
  }
  check.block_scales(p);
  set_plan(kernels::nvfp4_stored_plan(p.block_scales, p.tensor_scale, p.block_axis));
}

WeightsNVFP4InferableQuantizer::WeightsNVFP4InferableQuantizer(
    std::optional<double> tensor_scale, int64_t block_axis, std::optional<int64_t> input_rank,
    std::vector<double> block_scales, int64_t channel_axis)
    : WeightsNVFP4InferableQuantizer([&] {
        QuantizerParams p =
            block_params("", kernels::kNvfp4BlockSize, block_axis, input_rank, tensor_scale);
        p.block_scales = std::move(block_scales);
        p.channel_axis = channel_axis;
        return p;
      }()) {}

ActivationNVFP4InferableQuantizer::ActivationNVFP4InferableQuantizer(const QuantizerParams& p)
    : BaseInferableQuantizer(Kind::ActivationNVFP4InferableQuantizer,
                             nvfp4_params(without_input_rank(p))) {
  const Checker check{class_name()};
  check.tensor_scale(p.tensor_scale);
  check.blocks(without_input_rank(p), kernels::kNvfp4BlockSize);
  set_plan(kernels::nvfp4_plan(p.tensor_scale, p.block_axis));
}

ActivationNVFP4InferableQuantizer::ActivationNVFP4InferableQuantizer(
    std::optional<double> tensor_scale, int64_t block_axis)
    : ActivationNVFP4InferableQuantizer(
          block_params("", kernels::kNvfp4BlockSize, block_axis, std::nullopt, tensor_scale)) {}

// ---- registry-driven construction --------------------------------------------------------------

std::unique_ptr<BaseInferableQuantizer> make_inferable_quantizer(InferableQuantizerKind kind,
                                                                 const QuantizerParams& params) {
  switch (kind) {
#define QI_MAKE_CASE(Name, Target, Method, Family, OnnxOp, Doc) \
  case Kind::Name:                         \
    return std::make_unique<Name>(params);
    QI_FOR_EACH_INFERABLE_QUANTIZER(QI_MAKE_CASE)
#undef QI_MAKE_CASE
  }
  throw Error(str_cat("make_inferable_quantizer: invalid kind ", static_cast<int>(kind)));
}

std::unique_ptr<BaseInferableQuantizer> make_inferable_quantizer(QuantizationTarget target,
                                                                 QuantizationMethod method,
                                                                 const QuantizerParams& params) {
  return make_inferable_quantizer(get_inferable_quantizer_class(target, method).kind, params);
}

}  // namespace qi
