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
// its mantissa.
const std::vector<double>& float_grid(const kernels::FloatFormat& fmt) {
  static std::vector<double> grids[std::size(kernels::kFloatFormats)];
  const size_t index = static_cast<size_t>(&fmt - kernels::kFloatFormats);
  std::vector<double>& grid = grids[index];
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

// FLOAT: the nearest value of the format to clamp(x / s, -max, max), ties to the even code.
float float_quant(float x, const std::string& format, double s) {
  if (std::isnan(x)) return x;
  const kernels::FloatFormat& fmt = *kernels::find_float_format(format);
  const std::vector<double>& grid = float_grid(fmt);
  const float scale = f(s);
  float v = div(x, scale);
  v = v < -fmt.max ? -fmt.max : (v > fmt.max ? fmt.max : v);
  const double a = std::fabs(static_cast<double>(v));
  size_t k = static_cast<size_t>(std::lower_bound(grid.begin(), grid.end(), a) - grid.begin());
  if (grid[k] != a) {  // between grid[k - 1] and grid[k] (a <= max, so k is in range)
    const double below = a - grid[k - 1], above = grid[k] - a;  // exact in double
    if (below < above || (below == above && (k - 1) % 2 == 0)) --k;
  }
  return mul(f(std::copysign(grid[k], static_cast<double>(v))), scale);
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
  }
  return x;
}

}  // namespace

std::vector<float> fake_quant(InferableQuantizerKind kind, const QuantizerParams& params,
                              ConstTensorView in) {
  const int64_t numel = in.numel();
  const int64_t rank = in.dim();
  int64_t axis = -1;
  if (params.per_channel && params.channel_axis)
    axis = *params.channel_axis < 0 ? *params.channel_axis + rank : *params.channel_axis;
  // Groups: the value of (channel c, group g) is at c * groups + g.
  const int64_t group_size = params.group_size.value_or(0);
  const int64_t group_axis = params.group_axis < 0 ? params.group_axis + rank : params.group_axis;
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
