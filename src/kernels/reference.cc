// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include "kernels/reference.h"

#include <algorithm>
#include <cmath>
#include <iterator>
#include <limits>
#include <string>

namespace qi::reference {
namespace {

using Kind = InferableQuantizerKind;

float f(double v) { return static_cast<float>(v); }
float add(float a, float b) { return f(static_cast<double>(a) + b); }
float sub(float a, float b) { return f(static_cast<double>(a) - b); }
float mul(float a, float b) { return f(static_cast<double>(a) * b); }
float div(float a, float b) { return f(static_cast<double>(a) / b); }
double pow2(int64_t e) { return std::ldexp(1.0, static_cast<int>(e)); }

struct Affine {  // torch profile
  float scale, zp, qmin, qmax;
  float operator()(float x) const {
    if (std::isnan(x)) return x;
    const float inv = div(1.f, scale);
    const float r = f(std::nearbyint(static_cast<double>(mul(x, inv))));  // half to even
    float q = add(zp, r);
    q = q < qmin ? qmin : (q > qmax ? qmax : q);
    return mul(sub(q, zp), scale);
  }
};

struct TfFakeQuant {
  float min, max;  // float32 values handed to TensorFlow
  int64_t num_bits;
  bool per_channel;
  float operator()(float x) const {
    if (std::isnan(x)) return x;
    const float qmin = 0.f, qmax = f(pow2(num_bits) - 1);
    const float scale = div(sub(max, min), sub(qmax, qmin));
    const float inv = div(sub(qmax, qmin), sub(max, min));
    const float zp_from_min = sub(qmin, div(min, scale));
    float zp;
    if (zp_from_min < qmin) zp = qmin;
    else if (zp_from_min > qmax) zp = qmax;
    else zp = f(std::round(static_cast<double>(zp_from_min)));  // half away from zero
    const float nmin = mul(sub(qmin, zp), scale);
    const float nmax = mul(sub(qmax, zp), scale);
    const float quant_zero = f(std::floor(static_cast<double>(add(mul(-nmin, inv), 0.5f))));
    float c = x > nmax ? nmax : x;
    c = c < nmin ? nmin : c;
    c = sub(c, nmin);
    const float v = per_channel ? mul(c, inv) : div(c, scale);
    return mul(f(std::floor(static_cast<double>(add(sub(v, quant_zero), 0.5f)))), scale);
  }
};

// Keras' range adjustment: float64 numpy, clamped so that zero is inside.
void adjust_double(double mn, double mx, int64_t n, double* lo, double* hi) {
  const double scale = (mx - mn) / (pow2(n) - 1);
  double a = scale * std::nearbyint(mn / scale), b = (mx - mn) + a;
  if (mn > 0) {
    a = 0;
    b = mx;
  } else if (mx < 0) {
    a = mn;
    b = 0;
  }
  *lo = std::fmin(a, 0.0);
  *hi = std::fmax(b, 0.0);
}

// torch's range adjustment: float32 tensors, no clamp.
void adjust_float(float mn, float mx, int64_t n, float* lo, float* hi) {
  const float scale = div(sub(mx, mn), f(pow2(n) - 1));
  float a = mul(scale, f(std::nearbyint(static_cast<double>(div(mn, scale)))));
  float b = add(sub(mx, mn), a);
  if (mn > 0) {
    a = 0;
    b = mx;
  } else if (mx < 0) {
    a = mn;
    b = 0;
  }
  *lo = a;
  *hi = b;
}

float lut(float x, const QuantizerParams& p, double t, bool divisor_in_double) {
  if (std::isnan(x)) return x;
  const int64_t b = p.lut_values_bitwidth;
  const int s = p.is_signed ? 1 : 0;
  const float mult = f(pow2(b - s));
  const float lo = s ? f(-pow2(b - 1)) : 0.f;
  const float hi = s ? f(pow2(b - 1) - 1) : f(pow2(b) - 1);
  const float divisor = divisor_in_double ? f(t + p.eps) : add(f(t), f(p.eps));
  float v = mul(div(x, divisor), mult);
  v = v < lo ? lo : (v > hi ? hi : v);
  size_t best = 0;
  float best_d = std::numeric_limits<float>::infinity();
  for (size_t j = 0; j < p.lut_values.size(); ++j) {
    const float d = std::fabs(sub(v, f(p.lut_values[j])));
    if (j == 0 || d < best_d) {
      best_d = d;
      best = j;
    }
  }
  return mul(div(f(p.lut_values[best]), mult), f(t));
}

// The non-negative finite values of a float format in ascending order, decoded from their codes
// (exponent field k >> mbits, mantissa k & (2^mbits - 1)); the parity of a code is the parity of
// its mantissa. MX's INT8 (ebits 0): k / 64 for k in [0, 127].
const std::vector<double>& float_grid(const kernels::FloatFormat& fmt) {
  static std::vector<double> grids[std::size(kernels::kFloatFormats) + 1];
  const size_t index = &fmt == &kernels::kMxInt8
                           ? std::size(kernels::kFloatFormats)
                           : static_cast<size_t>(&fmt - kernels::kFloatFormats);
  std::vector<double>& grid = grids[index];
  if (grid.empty() && fmt.ebits == 0) {
    for (int k = 0; k <= 127; ++k) grid.push_back(k / 64.0);
  }
  if (grid.empty()) {
    const int bias = (1 << (fmt.ebits - 1)) - 1;
    for (int k = 0; k < (1 << (fmt.ebits + fmt.mbits)); ++k) {
      const int e = k >> fmt.mbits, m = k & ((1 << fmt.mbits) - 1);
      const double value = e == 0 ? std::ldexp(m, 1 - bias - fmt.mbits)
                                  : std::ldexp((1 << fmt.mbits) + m, e - bias - fmt.mbits);
      if (value > fmt.max) break;  // the codes of infinities and NaN
      grid.push_back(value);
    }
  }
  return grid;
}

// The nearest value of the format to clamp(v, -max, max), ties to the even code.
float nearest(float v, const kernels::FloatFormat& fmt) {
  const std::vector<double>& grid = float_grid(fmt);
  v = v < -fmt.max ? -fmt.max : (v > fmt.max ? fmt.max : v);
  const double a = std::fabs(static_cast<double>(v));
  size_t k = static_cast<size_t>(std::lower_bound(grid.begin(), grid.end(), a) - grid.begin());
  if (grid[k] != a) {  // between grid[k - 1] and grid[k] (a <= max, so k is in range)
    const double below = a - grid[k - 1], above = grid[k] - a;  // exact in double
    if (below < above || (below == above && (k - 1) % 2 == 0)) --k;
  }
  return f(std::copysign(grid[k], static_cast<double>(v)));
}

// FLOAT: the nearest value of the format to x / s, times s.
float float_quant(float x, const std::string& format, double s) {
  if (std::isnan(x)) return x;
  const float scale = f(s);
  return mul(nearest(div(x, scale), *kernels::find_float_format(format)), scale);
}

// MX and NVFP4: x in a block whose largest magnitude is amax (NaN when the block holds one).
float block_quant(Kind kind, const QuantizerParams& p, float amax, float x) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  if (std::isnan(amax)) return nan;
  if (kind == Kind::WeightsMXInferableQuantizer || kind == Kind::ActivationMXInferableQuantizer) {
    const kernels::FloatFormat& fmt = *kernels::find_mx_format(p.format);
    // X = 2^(floor(log2(amax)) - emax) in E8M0's range; amax 0 counts as 2^-126, and the
    // exponent of a float32 subnormal or of inf is that of its bit field (-127, 128).
    int exponent = 0;
    if (amax == 0) exponent = -126;
    else if (std::isinf(amax)) exponent = 128;
    else exponent = std::max(std::ilogb(amax), -127);
    const int emax = std::ilogb(fmt.max);
    const int e = std::min(std::max(exponent - emax, -127), 128);
    if (e == 128) return nan;  // E8M0's NaN
    const float divisor = f(std::ldexp(1.0, std::max(e, -126)));
    return mul(nearest(div(x, divisor), fmt), f(std::ldexp(1.0, e)));
  }
  // NVFP4: the E4M3 block scale of amax / 6 (relative to the tensor scale), then E2M1 elements.
  float s = div(amax, 6.f);
  if (p.tensor_scale) s = div(s, f(*p.tensor_scale));
  s = s < 0.015625f ? 0.015625f : (s > 448.f ? 448.f : s);
  s = nearest(s, *kernels::find_float_format("E4M3"));
  const float total = p.tensor_scale ? mul(f(*p.tensor_scale), s) : s;
  return mul(nearest(div(x, total), *kernels::find_float_format("E2M1")), total);
}

// The quantizer of channel c as a scalar function.
float quantize(Kind kind, const QuantizerParams& p, int64_t c, float x) {
  const int64_t n = p.num_bits;
  const bool torch = p.profile == NumericProfile::kTorch;
  const bool per_channel = p.per_channel || p.group_size.has_value();  // groups: per channel
  switch (kind) {
    case Kind::WeightsSymmetricInferableQuantizer:
    case Kind::WeightsPOTInferableQuantizer:
    case Kind::ActivationSymmetricInferableQuantizer:
    case Kind::ActivationPOTInferableQuantizer: {
      const double t = p.threshold[c];
      const int s = p.is_signed ? 1 : 0;
      if (torch) {
        const float qmin = s ? f(-pow2(n - 1)) : 0.f;
        const float qmax = s ? f(pow2(n - 1) - 1) : f(pow2(n) - 1);
        return Affine{f(t / pow2(n - s)), 0.f, qmin, qmax}(x);
      }
      double lo, hi;
      adjust_double(s ? -t : 0.0, t - t / pow2(n - s), n, &lo, &hi);
      return TfFakeQuant{f(lo), f(hi), n, per_channel}(x);
    }
    case Kind::WeightsUniformInferableQuantizer:
    case Kind::ActivationUniformInferableQuantizer: {
      const bool activation = kind == Kind::ActivationUniformInferableQuantizer;
      if (torch) {
        float lo, hi;
        adjust_float(f(p.min_range[c]), f(p.max_range[c]), n, &lo, &hi);
        const float qmax = f(pow2(n) - 1);
        float scale, zp;
        if (activation) {  // Python floats: double arithmetic, one rounding
          const double sd = (static_cast<double>(hi) - lo) / (pow2(n) - 1);
          scale = f(sd);
          zp = f(-std::nearbyint(lo / sd));
        } else {
          scale = div(sub(hi, lo), qmax);
          zp = -f(std::nearbyint(static_cast<double>(div(lo, scale))));
        }
        zp = zp < 0 ? 0.f : (zp > qmax ? qmax : zp + 0.f);
        return Affine{scale, zp, 0.f, qmax}(x);
      }
      double lo, hi;
      adjust_double(p.min_range[c], p.max_range[c], n, &lo, &hi);
      return TfFakeQuant{f(lo), f(hi), n, per_channel}(x);
    }
    case Kind::WeightsLUTSymmetricInferableQuantizer:
    case Kind::WeightsLUTPOTInferableQuantizer:
      return lut(x, p, p.threshold[c], /*divisor_in_double=*/p.profile == NumericProfile::kTf);
    case Kind::ActivationLutPOTInferableQuantizer:
      return lut(x, p, p.threshold[c], true);
    case Kind::WeightsFloatInferableQuantizer:
    case Kind::ActivationFloatInferableQuantizer:
      return float_quant(x, p.format, p.scale[c]);
    case Kind::WeightsNVFP4InferableQuantizer: {
      if (p.block_scales.empty()) break;  // per block: fake_quant
      // Stored block scales: E2M1 with the block's scale s (times the tensor scale).
      const float s = f(p.block_scales[c]);
      return float_quant(x, "E2M1", p.tensor_scale ? mul(f(*p.tensor_scale), s) : s);
    }
    case Kind::WeightsMXInferableQuantizer:
    case Kind::ActivationMXInferableQuantizer:
    case Kind::ActivationNVFP4InferableQuantizer:
      break;  // per block: fake_quant
  }
  return x;
}

bool block_scaled(Kind kind, const QuantizerParams& p) {
  return kind == Kind::WeightsMXInferableQuantizer || kind == Kind::ActivationMXInferableQuantizer ||
         (kind == Kind::WeightsNVFP4InferableQuantizer && p.block_scales.empty()) ||
         kind == Kind::ActivationNVFP4InferableQuantizer;
}

bool is_mx(Kind kind) {
  return kind == Kind::WeightsMXInferableQuantizer || kind == Kind::ActivationMXInferableQuantizer;
}

// MX, NVFP4: each element from the largest magnitude of its block (found by walking the block
// along block_axis from the element's logical indices). MX's pre-scale p: the blocks of
// u = x / p (float32), each result times p.
std::vector<float> block_fake_quant(Kind kind, const QuantizerParams& p, ConstTensorView in) {
  const int64_t numel = in.numel(), rank = in.dim();
  const int64_t axis = p.block_axis < 0 ? p.block_axis + rank : p.block_axis;
  const int64_t k = (kind == Kind::WeightsNVFP4InferableQuantizer ||
                     kind == Kind::ActivationNVFP4InferableQuantizer)
                        ? kernels::kNvfp4BlockSize
                        : p.block_size;
  std::vector<float> out(static_cast<size_t>(numel));
  for (int64_t linear = 0; linear < numel; ++linear) {
    int64_t rem = linear, offset = 0, along = 0;
    for (int64_t d = rank - 1; d >= 0; --d) {
      const int64_t i = rem % in.sizes[d];
      rem /= in.sizes[d];
      offset += i * in.strides[d];
      if (d == axis) along = i;
    }
    const int64_t first = offset - (along % k) * in.strides[axis];
    const bool pre = is_mx(kind) && p.tensor_scale.has_value();
    const auto value = [&](int64_t at) {
      return pre ? div(in.data[at], f(*p.tensor_scale)) : in.data[at];
    };
    float amax = 0.f;
    bool nan = false;
    for (int64_t j = 0; j < k; ++j) {
      const float v = value(first + j * in.strides[axis]);
      nan = nan || std::isnan(v);
      amax = std::max(amax, std::fabs(v));
    }
    const float y = block_quant(kind, p, nan ? std::numeric_limits<float>::quiet_NaN() : amax,
                                value(offset));
    out[linear] = pre ? mul(y, f(*p.tensor_scale)) : y;
  }
  return out;
}

}  // namespace

std::vector<float> fake_quant(InferableQuantizerKind kind, const QuantizerParams& params,
                              ConstTensorView in) {
  if (block_scaled(kind, params)) return block_fake_quant(kind, params, in);
  const int64_t numel = in.numel();
  const int64_t rank = in.dim();
  // NVFP4's stored block scales: per channel, in groups of 16 along the block axis.
  const bool stored = !params.block_scales.empty();
  int64_t axis = -1;
  if ((params.per_channel || stored) && params.channel_axis)
    axis = *params.channel_axis < 0 ? *params.channel_axis + rank : *params.channel_axis;
  // Groups: the value of (channel c, group g) is at c * groups + g.
  const int64_t group_size = stored ? kernels::kNvfp4BlockSize : params.group_size.value_or(0);
  const int64_t given_axis = stored ? params.block_axis : params.group_axis;
  const int64_t group_axis = given_axis < 0 ? given_axis + rank : given_axis;
  const int64_t groups =
      group_size > 0 ? (in.sizes[group_axis] + group_size - 1) / group_size : 1;
  std::vector<float> out(static_cast<size_t>(numel));
  for (int64_t linear = 0; linear < numel; ++linear) {
    int64_t rem = linear, offset = 0, channel = 0, group = 0;
    for (int64_t k = rank - 1; k >= 0; --k) {
      const int64_t i = rem % in.sizes[k];
      rem /= in.sizes[k];
      offset += i * in.strides[k];
      if (k == axis) channel = i;
      if (group_size > 0 && k == group_axis) group = i / group_size;
    }
    const size_t values =
        std::max({params.threshold.size(), params.min_range.size(), params.scale.size()});
    const int64_t index =
        group_size > 0 ? channel * groups + group : (values == 1 ? 0 : channel);
    out[linear] = quantize(kind, params, index, in.data[offset]);
  }
  return out;
}

}  // namespace qi::reference
