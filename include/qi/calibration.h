// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Post-training calibration: quantization parameters from data (per tensor or per channel).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "qi/tensor_view.h"

namespace qi::calibration {

// max |x| over the tensor or over each slice along channel_axis (normalized axis or nullopt).
// A slice that is all zero (or empty) gets `floor` so the result is always a valid threshold.
std::vector<double> threshold_max(ConstTensorView x, std::optional<int64_t> channel_axis,
                                  double floor = 1.0 / 65536.0);

// The threshold that minimizes sum((Q_t(x) - x)^2) for the symmetric grid of `num_bits` (torch
// profile numerics), searched per channel among `num_candidates` fractions of the max
// (max * k / num_candidates, k = 1..num_candidates) or, when power_of_two, among the powers of
// two from 2^ceil(log2(max)) down by 1..8 octaves.
std::vector<double> threshold_mse(ConstTensorView x, std::optional<int64_t> channel_axis,
                                  int64_t num_bits, bool is_signed, bool power_of_two,
                                  int64_t num_candidates = 100);

// Per-tensor or per-channel min and max (NaN ignored). Ranges of zero width are widened by
// `floor` on each side so that they are valid uniform ranges.
struct Range {
  std::vector<double> min, max;
};
Range range_min_max(ConstTensorView x, std::optional<int64_t> channel_axis,
                    double floor = 1.0 / 65536.0);

// The uniform range [min * s, max * s] (s = k / num_candidates, k = 1..num_candidates) that
// minimizes sum((Q(x) - x)^2) on the uniform grid of `num_bits` (torch profile, zero on the
// grid), per tensor or per channel. `activation` picks the activation quantizer's scale rounding
// (computed in double) instead of the weights quantizer's (float32).
Range range_mse(ConstTensorView x, std::optional<int64_t> channel_axis, int64_t num_bits,
                bool activation = false, int64_t num_candidates = 100);

// How a calibrated parameter is chosen from the data.
enum class Method : int { kMinMax, kPercentile, kMse, kKl };
std::string to_string(Method m);  // "minmax", "percentile", "mse", "kl"
Method method_from_string(const std::string& s);  // throws qi::Error naming the choices

// Streaming statistics of a tensor seen batch by batch (one pass over the data): exact min and
// max, and a histogram of `num_bins` equal bins per channel. The first batch sets each
// channel's bins over its [min, max]; a later batch outside them widens the bins by a power of
// two, merging whole bins (no interpolation), so every count stays in the bin that holds it.
// Results read the histogram with each bin's mass at its center (MSE, KL) or spread evenly over
// it (percentiles). Non-finite values are ignored.
class Histogram {
 public:
  // channel_axis: nullopt for one histogram over the tensor, else the axis of the channels
  // (negative counts from the end) of every batch.
  explicit Histogram(int64_t num_bins = 2048, std::optional<int64_t> channel_axis = std::nullopt);

  void update(ConstTensorView x);

  int64_t num_bins() const { return num_bins_; }
  std::optional<int64_t> channel_axis() const { return axis_; }
  int64_t channels() const { return static_cast<int64_t>(min_.size()); }  // 0 before update
  // Finite values seen per channel.
  std::vector<double> counts() const;
  // Channel c's histogram: bin b covers [lower(c) + b * width(c), lower(c) + (b+1) * width(c)).
  const std::vector<double>& bins(int64_t c) const;
  double lower(int64_t c) const;
  double width(int64_t c) const;

  // Exact min and max (widened by `floor` where the range is narrower, as range_min_max).
  Range range_min_max(double floor = 1.0 / 65536.0) const;
  // max |x| (at least `floor`), as threshold_max.
  std::vector<double> threshold_max(double floor = 1.0 / 65536.0) const;
  // The `percentile` (in (0, 100]) of |x|: a symmetric threshold.
  std::vector<double> threshold_percentile(double percentile) const;
  // [the (100 - percentile) percentile, the percentile] of x: a uniform range.
  Range range_percentile(double percentile) const;
  // As calibration::threshold_mse and range_mse, over the histogram.
  std::vector<double> threshold_mse(int64_t num_bits, bool is_signed, bool power_of_two,
                                    int64_t num_candidates = 100) const;
  Range range_mse(int64_t num_bits, int64_t num_candidates = 100) const;
  // The symmetric threshold minimizing the KL divergence between the distribution of |x| and its
  // quantized version (TensorRT's entropy calibration), over the histogram of |x|.
  std::vector<double> threshold_kl(int64_t num_bits, bool is_signed) const;

 private:
  void require_data(const char* what) const;
  double quantile(int64_t c, double q) const;       // the q-quantile (q in [0, 1]) of x
  double abs_mass_below(int64_t c, double t) const;  // mass of |x| <= t

  int64_t num_bins_;
  std::optional<int64_t> axis_;
  int64_t rank_ = -1;
  std::vector<double> min_, max_, lower_, width_;
  std::vector<std::vector<double>> bins_;
};

}  // namespace qi::calibration
