// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include "kernels/plan.h"

#include <algorithm>
#include <cfloat>
#include <cstring>
#include <type_traits>

#include "kernels/scalar_ops.h"
#include "qi/error.h"

#include <cmath>

namespace qi::kernels {

int64_t plan_channels(const Plan& plan) {
  struct Visitor {
    int64_t operator()(const AffineTorchPlan& p) const { return static_cast<int64_t>(p.scale.size()); }
    int64_t operator()(const AffineTfPlan& p) const { return static_cast<int64_t>(p.scale.size()); }
    int64_t operator()(const LutPlan& p) const { return static_cast<int64_t>(p.divisor.size()); }
    int64_t operator()(const FloatPlan& p) const { return static_cast<int64_t>(p.scale.size()); }
    int64_t operator()(const MxPlan&) const { return 1; }
    int64_t operator()(const Nvfp4Plan&) const { return 1; }
  };
  return std::visit(Visitor{}, plan);
}

bool plan_is_block_scaled(const Plan& plan) {
  return std::holds_alternative<MxPlan>(plan) || std::holds_alternative<Nvfp4Plan>(plan);
}

const GroupLayout& plan_groups(const Plan& plan) {
  return std::visit([](const auto& p) -> const GroupLayout& { return p.groups; }, plan);
}

// ---- packed plans -------------------------------------------------------------------------------

namespace {

class Packer {
 public:
  void word(int32_t w) { words_.push_back(w); }
  void f(float v) {
    int32_t w;
    std::memcpy(&w, &v, sizeof(w));
    words_.push_back(w);
  }
  void floats(const std::vector<float>& v) {
    for (float x : v) f(x);
  }
  std::vector<int32_t> take() { return std::move(words_); }

 private:
  std::vector<int32_t> words_;
};

class Unpacker {
 public:
  Unpacker(const int32_t* words, int64_t count) : words_(words), count_(count) {}
  int32_t word(const char* what) {
    QI_CHECK(pos_ < count_, "packed plan: truncated at ", what, " (", count_, " words)");
    return words_[pos_++];
  }
  float f(const char* what) {
    const int32_t w = word(what);
    float v;
    std::memcpy(&v, &w, sizeof(v));
    return v;
  }
  std::vector<float> floats(int64_t n, const char* what) {
    QI_CHECK(n >= 0 && n <= count_ - pos_, "packed plan: truncated in ", what, " (", n,
             " values wanted, ", count_ - pos_, " words left)");
    std::vector<float> v(static_cast<size_t>(n));
    std::memcpy(v.data(), words_ + pos_, static_cast<size_t>(n) * sizeof(float));
    pos_ += n;
    return v;
  }
  void finish() {
    QI_CHECK(pos_ == count_, "packed plan: ", count_ - pos_, " words left over");
  }

 private:
  const int32_t* words_;
  int64_t count_;
  int64_t pos_ = 0;
};

void check_scales(const std::vector<float>& scale, const char* what) {
  for (float s : scale)
    QI_CHECK(std::isfinite(s) && s > 0, "packed plan: ", what, " must be finite and > 0, got ", s);
}

}  // namespace

std::vector<int32_t> pack_plan(const Plan& plan) {
  Packer p;
  const GroupLayout& groups = plan_groups(plan);
  const bool grouped = groups.group_size > 0;
  p.word(kPackedPlanTag + static_cast<int32_t>(plan.index()) + (grouped ? kPackedGroupedFlag : 0) +
         (grouped && groups.whole ? kPackedWholeFlag : 0));
  p.word(static_cast<int32_t>(plan_channels(plan)));
  if (grouped) {
    p.word(static_cast<int32_t>(groups.group_size));
    p.word(static_cast<int32_t>(groups.group_axis));
  }
  std::visit(
      [&p](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, AffineTorchPlan>) {
          p.f(v.qmin);
          p.f(v.qmax);
          p.floats(v.scale);
          p.floats(v.inv_scale);
          p.floats(v.zero_point);
        } else if constexpr (std::is_same_v<T, AffineTfPlan>) {
          p.word(v.use_division ? 1 : 0);
          p.floats(v.scale);
          p.floats(v.inv_scale);
          p.floats(v.nudged_min);
          p.floats(v.nudged_max);
          p.floats(v.quant_zero);
        } else if constexpr (std::is_same_v<T, FloatPlan>) {
          p.word(v.ebits);
          p.word(v.mbits);
          p.f(v.max);
          p.floats(v.scale);
        } else if constexpr (std::is_same_v<T, MxPlan>) {
          p.word(v.ebits);
          p.word(v.mbits);
          p.f(v.max);
          p.word(v.emax);
          p.f(v.tensor_scale);
        } else if constexpr (std::is_same_v<T, Nvfp4Plan>) {
          p.f(v.tensor_scale);
        } else {
          p.f(v.multiplier);
          p.f(v.lo);
          p.f(v.hi);
          p.word(static_cast<int32_t>(v.lut.size()));
          p.word(static_cast<int32_t>(v.boundaries.size()));
          p.floats(v.divisor);
          p.floats(v.lut);
          p.floats(v.boundaries);
          p.floats(v.table);
        }
      },
      plan);
  return p.take();
}

Plan unpack_plan(const int32_t* words, int64_t count) {
  QI_CHECK(words != nullptr || count == 0, "packed plan: no data");
  Unpacker u(words, count);
  const int32_t tag = u.word("the tag");
  const bool grouped = ((tag - kPackedPlanTag) & kPackedGroupedFlag) != 0;
  const bool whole = grouped && ((tag - kPackedPlanTag) & kPackedWholeFlag) != 0;
  const int32_t kind =
      tag - kPackedPlanTag - (grouped ? kPackedGroupedFlag : 0) - (whole ? kPackedWholeFlag : 0);
  QI_CHECK(kind >= 0 && kind < static_cast<int32_t>(std::variant_size_v<Plan>),
           "packed plan: unknown format tag ", tag, " (not a plan of this qi version?)");
  const int64_t c = u.word("the channel count");
  QI_CHECK(c >= 1 && c <= count, "packed plan: channel count must be in [1, ", count, "], got ",
           c);
  GroupLayout groups;
  if (grouped) {
    groups.group_size = u.word("group_size");
    groups.group_axis = u.word("group_axis");
    groups.whole = whole;
    QI_CHECK(groups.group_size >= 1, "packed plan: group_size must be >= 1, got ",
             groups.group_size);
  }
  Plan out;
  if (kind == 0) {
    AffineTorchPlan p;
    p.qmin = u.f("qmin");
    p.qmax = u.f("qmax");
    p.scale = u.floats(c, "scale");
    p.inv_scale = u.floats(c, "inv_scale");
    p.zero_point = u.floats(c, "zero_point");
    check_scales(p.scale, "scale");
    QI_CHECK(p.qmin < p.qmax, "packed plan: qmin must be < qmax, got ", p.qmin, " and ", p.qmax);
    // The kernel rounds with the 1.5 * 2^23 trick, exact for |x / scale| up to 2^22 after the
    // clamp to [qmin - zp, qmax - zp]: bound the grid and keep each zero point on it.
    QI_CHECK(p.qmin >= -65536.f && p.qmax <= 65536.f, "packed plan: qmin and qmax must be within ",
             "+-65536, got ", p.qmin, " and ", p.qmax);
    for (float zp : p.zero_point)
      QI_CHECK(zp >= p.qmin && zp <= p.qmax && zp == std::nearbyint(zp),
               "packed plan: zero_point must be an integer in [qmin, qmax], got ", zp);
    out = std::move(p);
  } else if (kind == 1) {
    AffineTfPlan p;
    p.use_division = u.word("use_division") != 0;
    p.scale = u.floats(c, "scale");
    p.inv_scale = u.floats(c, "inv_scale");
    p.nudged_min = u.floats(c, "nudged_min");
    p.nudged_max = u.floats(c, "nudged_max");
    p.quant_zero = u.floats(c, "quant_zero");
    check_scales(p.scale, "scale");
    out = std::move(p);
  } else if (kind == 4 || kind == 5) {
    QI_CHECK(grouped && c == 1, "packed plan: a block-scaled plan needs its block layout and one "
             "channel");
    if (kind == 4) {
      MxPlan p;
      p.ebits = u.word("ebits");
      p.mbits = u.word("mbits");
      p.max = u.f("max");
      p.emax = u.word("emax");
      p.tensor_scale = u.f("tensor_scale");
      QI_CHECK(p.tensor_scale == 0 || (std::isfinite(p.tensor_scale) && p.tensor_scale >= FLT_MIN),
               "packed plan: MX tensor_scale must be 0 or a normal float32, got ", p.tensor_scale);
      const FloatFormat* f = nullptr;
      for (const auto& g : kFloatFormats)
        if (g.ebits == p.ebits && g.mbits == p.mbits && g.max == p.max) f = &g;
      if (p.ebits == kMxInt8.ebits && p.mbits == kMxInt8.mbits && p.max == kMxInt8.max)
        f = &kMxInt8;
      QI_CHECK(f != nullptr && p.emax == mx_emax(*f), "packed plan: unknown MX element format E",
               p.ebits, "M", p.mbits, " with max ", p.max, " and emax ", p.emax);
      out = std::move(p);
    } else {
      Nvfp4Plan p;
      p.tensor_scale = u.f("tensor_scale");
      QI_CHECK(p.tensor_scale == 0 || (std::isfinite(p.tensor_scale) && p.tensor_scale >= FLT_MIN &&
                                       p.tensor_scale <= FLT_MAX / 448),
               "packed plan: tensor_scale must be 0 or a normal float32 up to FLT_MAX / 448, got ",
               p.tensor_scale);
      QI_CHECK(groups.group_size == kNvfp4BlockSize, "packed plan: NVFP4 blocks hold ",
               kNvfp4BlockSize, " elements, got ", groups.group_size);
      out = std::move(p);
    }
  } else if (kind == 3) {
    FloatPlan p;
    p.ebits = u.word("ebits");
    p.mbits = u.word("mbits");
    p.max = u.f("max");
    bool known = false;
    for (const auto& f : kFloatFormats)
      known = known || (f.ebits == p.ebits && f.mbits == p.mbits && f.max == p.max);
    QI_CHECK(known, "packed plan: unknown float format E", p.ebits, "M", p.mbits, " with max ",
             p.max);
    p.scale = u.floats(c, "scale");
    check_scales(p.scale, "scale");
    out = std::move(p);
  } else {
    LutPlan p;
    p.multiplier = u.f("multiplier");
    p.lo = u.f("lo");
    p.hi = u.f("hi");
    const int64_t l = u.word("the LUT size");
    const int64_t b = u.word("the boundary count");
    QI_CHECK(l >= 1 && b >= 0 && b < l + 1 && l <= count, "packed plan: bad LUT sizes ", l,
             " and ", b);
    p.divisor = u.floats(c, "divisor");
    p.lut = u.floats(l, "lut");
    p.boundaries = u.floats(b, "boundaries");
    QI_CHECK(c <= count / (b + 1), "packed plan: bad table size");
    p.table = u.floats(c * (b + 1), "table");
    out = std::move(p);
  }
  u.finish();
  std::visit([&groups](auto& p) { p.groups = groups; }, out);
  return out;
}

const FloatFormat* find_float_format(const std::string& name) {
  for (const auto& f : kFloatFormats)
    if (name == f.name) return &f;
  return nullptr;
}

int32_t mx_emax(const FloatFormat& f) {
  int e = 0;
  std::frexp(f.max, &e);
  return e - 1;  // floor(log2(max))
}

const FloatFormat* find_mx_format(const std::string& name) {
  if (name == kMxInt8.name) return &kMxInt8;
  return find_float_format(name);
}

std::string mx_format_names() { return str_cat(float_format_names(), ", ", kMxInt8.name); }

MxPlan mx_plan(const FloatFormat& format, int64_t block_size, int64_t block_axis,
               std::optional<double> tensor_scale) {
  MxPlan p;
  p.tensor_scale = tensor_scale ? static_cast<float>(*tensor_scale) : 0.f;
  p.ebits = format.ebits;
  p.mbits = format.mbits;
  p.max = format.max;
  p.emax = mx_emax(format);
  p.groups = {block_size, block_axis};
  return p;
}

Nvfp4Plan nvfp4_plan(std::optional<double> tensor_scale, int64_t block_axis) {
  Nvfp4Plan p;
  p.tensor_scale = tensor_scale ? static_cast<float>(*tensor_scale) : 0.f;
  p.groups = {kNvfp4BlockSize, block_axis};
  return p;
}

FloatPlan nvfp4_stored_plan(const std::vector<double>& block_scales,
                            std::optional<double> tensor_scale, int64_t block_axis) {
  const float t = tensor_scale ? static_cast<float>(*tensor_scale) : 0.f;
  FloatPlan p;
  const FloatFormat& e2m1 = *find_float_format("E2M1");
  p.ebits = e2m1.ebits;
  p.mbits = e2m1.mbits;
  p.max = e2m1.max;
  for (double s : block_scales) p.scale.push_back(scalar::nvfp4_total(static_cast<float>(s), t));
  p.groups = {kNvfp4BlockSize, block_axis, /*whole=*/true};
  return p;
}

std::string float_format_names() {
  std::string names;
  for (const auto& f : kFloatFormats) names += str_cat(names.empty() ? "" : ", ", f.name);
  return names;
}

FloatPlan float_plan(const FloatFormat& format, const std::vector<double>& scale) {
  FloatPlan p;
  p.ebits = format.ebits;
  p.mbits = format.mbits;
  p.max = format.max;
  for (double s : scale) p.scale.push_back(static_cast<float>(s));
  return p;
}

AffineTorchPlan symmetric_torch_plan(const std::vector<double>& threshold, int64_t num_bits,
                                     bool is_signed) {
  AffineTorchPlan p;
  const double steps = std::ldexp(1.0, static_cast<int>(num_bits - (is_signed ? 1 : 0)));
  scalar::symmetric_grid(static_cast<int32_t>(num_bits), is_signed, &p.qmin, &p.qmax);
  for (double t : threshold) {
    // Division by a power of two is exact in double; one rounding to float32 as torch does when
    // it builds the scales tensor from numpy float64.
    const float scale = scalar::symmetric_scale(t, steps);
    p.scale.push_back(scale);
    p.inv_scale.push_back(1.0f / scale);  // ATen multiplies by the float32 reciprocal
    p.zero_point.push_back(0.f);
  }
  return p;
}

void adjust_range_float(float min, float max, int64_t num_bits, float* min_adj, float* max_adj) {
  const float levels = static_cast<float>(std::ldexp(1.0, static_cast<int>(num_bits)) - 1);
  scalar::adjust_range_float(min, max, levels, min_adj, max_adj);
}

void adjust_range_double(double min, double max, int64_t num_bits, double* min_adj,
                         double* max_adj) {
  const double levels = std::ldexp(1.0, static_cast<int>(num_bits)) - 1;
  const double scale = (max - min) / levels;
  const double shifted_min = scale * std::nearbyint(min / scale);
  const double shifted_max = (max - min) + shifted_min;
  double lo = shifted_min, hi = shifted_max;
  if (min > 0) {
    lo = 0;
    hi = max;
  } else if (max < 0) {
    lo = min;
    hi = 0;
  }
  *min_adj = std::min(lo, 0.0);  // numpy variant clamps so that 0 is always inside
  *max_adj = std::max(hi, 0.0);
}

AffineTorchPlan uniform_torch_plan(const std::vector<double>& min_range,
                                   const std::vector<double>& max_range, int64_t num_bits,
                                   bool scale_in_double) {
  AffineTorchPlan p;
  const double levels_d = std::ldexp(1.0, static_cast<int>(num_bits)) - 1;
  const float levels = static_cast<float>(levels_d);
  p.qmin = 0.f;
  p.qmax = levels;
  for (size_t c = 0; c < min_range.size(); ++c) {
    float lo, hi;
    adjust_range_float(static_cast<float>(min_range[c]), static_cast<float>(max_range[c]),
                       num_bits, &lo, &hi);
    float scale, zp;
    scalar::uniform_scale_zero_point(lo, hi, levels_d, scale_in_double, &scale, &zp);
    p.scale.push_back(scale);
    p.inv_scale.push_back(1.0f / scale);
    p.zero_point.push_back(zp);
  }
  return p;
}

AffineTfPlan tf_plan_from_ranges(const std::vector<double>& min_range,
                                 const std::vector<double>& max_range, int64_t num_bits,
                                 bool per_channel) {
  AffineTfPlan p;
  p.use_division = !per_channel;
  const int quant_min = 0;
  const int quant_max = (1 << num_bits) - 1;
  const float quant_min_float = static_cast<float>(quant_min);
  const float quant_max_float = static_cast<float>(quant_max);
  for (size_t c = 0; c < min_range.size(); ++c) {
    const float min = static_cast<float>(min_range[c]);
    const float max = static_cast<float>(max_range[c]);
    // TensorFlow's Nudge(), step by step in float32.
    const float scale = (max - min) / (quant_max_float - quant_min_float);
    const float inv_scale = (quant_max_float - quant_min_float) / (max - min);
    const float zero_point_from_min = quant_min_float - min / scale;
    uint16_t nudged_zero_point;
    if (zero_point_from_min < quant_min_float) {
      nudged_zero_point = static_cast<uint16_t>(quant_min);
    } else if (zero_point_from_min > quant_max_float) {
      nudged_zero_point = static_cast<uint16_t>(quant_max);
    } else {
      nudged_zero_point = static_cast<uint16_t>(std::round(zero_point_from_min));
    }
    const float nudged_min = (quant_min_float - nudged_zero_point) * scale;
    const float nudged_max = (quant_max_float - nudged_zero_point) * scale;
    p.scale.push_back(scale);
    p.inv_scale.push_back(inv_scale);
    p.nudged_min.push_back(nudged_min);
    p.nudged_max.push_back(nudged_max);
    p.quant_zero.push_back(std::floor(-nudged_min * inv_scale + 0.5f));
  }
  return p;
}

AffineTfPlan symmetric_tf_plan(const std::vector<double>& threshold, int64_t num_bits,
                               bool is_signed, bool per_channel) {
  std::vector<double> lo, hi;
  const double steps = std::ldexp(1.0, static_cast<int>(num_bits - (is_signed ? 1 : 0)));
  for (double t : threshold) {
    lo.push_back(is_signed ? -t : 0.0);
    hi.push_back(t - t / steps);
  }
  return uniform_tf_plan(lo, hi, num_bits, per_channel);
}

AffineTfPlan uniform_tf_plan(const std::vector<double>& min_range,
                             const std::vector<double>& max_range, int64_t num_bits,
                             bool per_channel) {
  std::vector<double> lo(min_range.size()), hi(max_range.size());
  for (size_t c = 0; c < min_range.size(); ++c)
    adjust_range_double(min_range[c], max_range[c], num_bits, &lo[c], &hi[c]);
  return tf_plan_from_ranges(lo, hi, num_bits, per_channel);
}

LutPlan lut_plan(const std::vector<double>& lut_values, const std::vector<double>& threshold,
                 bool is_signed, int64_t lut_values_bitwidth, double eps,
                 bool divisor_in_double) {
  LutPlan p;
  const int b = static_cast<int>(lut_values_bitwidth);
  p.multiplier = static_cast<float>(std::ldexp(1.0, b - (is_signed ? 1 : 0)));
  p.lo = is_signed ? static_cast<float>(-std::ldexp(1.0, b - 1)) : 0.f;
  p.hi = is_signed ? static_cast<float>(std::ldexp(1.0, b - 1) - 1)
                   : static_cast<float>(std::ldexp(1.0, b) - 1);
  for (double v : lut_values) p.lut.push_back(static_cast<float>(v));
  // Distinct values ascending; the entry the brute force picks for v.
  std::vector<float> sorted = p.lut;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  auto picked = [&](float v) {
    return p.lut[scalar::lut_index_of_value(v, p.lut.data(), p.lut.size())];
  };
  // Ordered integer keys of floats, so that bisection walks float32 values in order.
  auto key = [](float f) {
    int32_t i;
    std::memcpy(&i, &f, 4);
    return i >= 0 ? static_cast<int64_t>(i) : -static_cast<int64_t>(i & 0x7fffffff);
  };
  auto value = [](int64_t k) {
    const uint32_t bits = k >= 0 ? static_cast<uint32_t>(k)
                                 : (static_cast<uint32_t>(-k) | 0x80000000u);
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  };
  for (size_t j = 0; j + 1 < sorted.size(); ++j) {
    // Smallest v in (sorted[j], sorted[j + 1]] whose pick is above sorted[j].
    int64_t lo = key(sorted[j]), hi = key(sorted[j + 1]);
    while (hi - lo > 1) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (picked(value(mid)) > sorted[j]) hi = mid;
      else lo = mid;
    }
    p.boundaries.push_back(value(hi));
  }
  for (double t : threshold) {
    const float tf = static_cast<float>(t);
    p.divisor.push_back(divisor_in_double ? static_cast<float>(t + eps)
                                          : tf + static_cast<float>(eps));
    for (float l : sorted) p.table.push_back((l / p.multiplier) * tf);
  }
  return p;
}

}  // namespace qi::kernels
