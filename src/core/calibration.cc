// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include "qi/calibration.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <mutex>

#include "kernels/iterate.h"
#include "kernels/plan.h"
#include "kernels/scalar_ops.h"
#include "qi/kernels.h"
#include "qi/error.h"
#include "qi/parallel.h"

namespace qi::calibration {
namespace {

constexpr int64_t kGrain = 1 << 15;

int64_t channel_count(const ConstTensorView& x, std::optional<int64_t> axis) {
  if (!axis) return 1;
  QI_CHECK(*axis >= 0 && *axis < x.dim(), "calibration: channel_axis must be in [0, ", x.dim(),
           "), got ", *axis);
  return x.sizes[*axis];
}

// Calls fn(value, channel, acc) over all elements, with one accumulator vector per chunk
// merged by `merge`.
template <typename Acc, typename Fn, typename Merge>
void reduce(const ConstTensorView& x, std::optional<int64_t> axis, int64_t channels, Acc init,
            Fn&& fn, Merge&& merge, int64_t grain = kGrain) {
  const auto dims = kernels::coalesce_dims<1>(x.sizes, {&x.strides}, axis);
  const int64_t total = kernels::total_elements(dims);
  if (total == 0 || x.numel() == 0) return;
  std::mutex m;
  parallel_for(0, total, grain, [&](int64_t begin, int64_t end) {
    std::vector<Acc> local(channels, init);
    kernels::iterate_rows(dims, begin, end,
                          [&](const std::array<int64_t, 1>& off, const std::array<int64_t, 1>& st,
                              int64_t n, int64_t c0, bool vary) {
                            for (int64_t i = 0; i < n; ++i)
                              fn(x.data[off[0] + i * st[0]], vary ? c0 + i : c0, local);
                          });
    std::lock_guard<std::mutex> g(m);
    merge(local);
  });
}

}  // namespace

std::vector<double> threshold_max(ConstTensorView x, std::optional<int64_t> channel_axis,
                                  double floor) {
  const int64_t channels = channel_count(x, channel_axis);
  std::vector<double> out(channels, 0.0);
  reduce(
      x, channel_axis, channels, 0.0,
      [](float v, int64_t c, std::vector<double>& acc) {
        if (std::isfinite(v)) acc[c] = std::max(acc[c], static_cast<double>(std::fabs(v)));
      },
      [&](const std::vector<double>& local) {
        for (int64_t c = 0; c < channels; ++c) out[c] = std::max(out[c], local[c]);
      });
  for (double& t : out) t = std::max(t, floor);
  return out;
}

namespace {

// Min and max of the finite values per channel (+inf / -inf where there are none).
Range finite_min_max(const ConstTensorView& x, std::optional<int64_t> axis, int64_t channels) {
  const double inf = std::numeric_limits<double>::infinity();
  Range r{std::vector<double>(channels, inf), std::vector<double>(channels, -inf)};
  using MinMax = std::array<double, 2>;
  reduce(
      x, axis, channels, MinMax{inf, -inf},
      [](float v, int64_t c, std::vector<MinMax>& acc) {
        if (!std::isfinite(v)) return;
        acc[c][0] = std::min(acc[c][0], static_cast<double>(v));
        acc[c][1] = std::max(acc[c][1], static_cast<double>(v));
      },
      [&](const std::vector<MinMax>& local) {
        for (int64_t c = 0; c < channels; ++c) {
          r.min[c] = std::min(r.min[c], local[c][0]);
          r.max[c] = std::max(r.max[c], local[c][1]);
        }
      });
  return r;
}

// Empty channels become [0, 0]; ranges narrower than `floor` widen by it on each side.
Range widened(Range r, double floor) {
  for (size_t c = 0; c < r.min.size(); ++c) {
    if (!(r.min[c] <= r.max[c])) r.min[c] = r.max[c] = 0.0;  // empty or all non-finite
    if (r.max[c] - r.min[c] < floor) {
      r.min[c] -= floor;
      r.max[c] += floor;
    }
  }
  return r;
}

}  // namespace

Range range_min_max(ConstTensorView x, std::optional<int64_t> channel_axis, double floor) {
  return widened(finite_min_max(x, channel_axis, channel_count(x, channel_axis)), floor);
}

namespace {

void check_search(const char* what, int64_t num_bits, int64_t num_candidates) {
  QI_CHECK(num_bits >= 2 && num_bits <= 16, what, ": num_bits must be in [2, 16], got ",
           num_bits);
  QI_CHECK(num_candidates >= 1, what, ": num_candidates must be >= 1, got ", num_candidates);
}

// The MSE searches, shared by tensors and histograms: add_errors(plan, err) adds each channel's
// sum of squared errors under `plan` to err[c]; the first best candidate wins.
template <typename AddErrors>
std::vector<double> search_threshold(const std::vector<double>& tmax, int64_t num_bits,
                                     bool is_signed, bool power_of_two, int64_t num_candidates,
                                     AddErrors&& add_errors) {
  const int64_t channels = static_cast<int64_t>(tmax.size());
  // Candidate k of channel c.
  const int64_t count = power_of_two ? 9 : num_candidates;
  auto candidate = [&](int64_t c, int64_t k) {
    if (power_of_two) return std::exp2(std::ceil(std::log2(tmax[c])) - static_cast<double>(k));
    return tmax[c] * static_cast<double>(k + 1) / static_cast<double>(num_candidates);
  };
  std::vector<double> best(channels), best_err(channels, std::numeric_limits<double>::infinity());
  for (int64_t k = 0; k < count; ++k) {
    std::vector<double> t(channels);
    for (int64_t c = 0; c < channels; ++c) t[c] = std::max(candidate(c, k), 1.0 / 65536.0);
    const auto plan = kernels::symmetric_torch_plan(t, num_bits, is_signed);
    std::vector<double> err(channels, 0.0);
    add_errors(plan, err);
    for (int64_t c = 0; c < channels; ++c)
      if (err[c] < best_err[c]) {
        best_err[c] = err[c];
        best[c] = t[c];
      }
  }
  return best;
}

template <typename AddErrors>
Range search_range(const Range& full, int64_t num_bits, bool activation, int64_t num_candidates,
                   AddErrors&& add_errors) {
  const int64_t channels = static_cast<int64_t>(full.min.size());
  const double inf = std::numeric_limits<double>::infinity();
  Range best{full.min, full.max};
  std::vector<double> best_err(channels, inf);
  for (int64_t k = 0; k < num_candidates; ++k) {
    const double s = static_cast<double>(k + 1) / static_cast<double>(num_candidates);
    Range r{full.min, full.max};
    for (int64_t c = 0; c < channels; ++c) {
      r.min[c] *= s;
      r.max[c] *= s;
      if (r.max[c] - r.min[c] < 1.0 / 65536.0) r.max[c] = r.min[c] + 1.0 / 65536.0;
    }
    const auto plan = kernels::uniform_torch_plan(r.min, r.max, num_bits, activation);
    std::vector<double> err(channels, 0.0);
    add_errors(plan, err);
    for (int64_t c = 0; c < channels; ++c)
      if (err[c] < best_err[c]) {
        best_err[c] = err[c];
        best.min[c] = r.min[c];
        best.max[c] = r.max[c];
      }
  }
  return best;
}

float quantize_with(const kernels::AffineTorchPlan& plan, float v, int64_t c) {
  return kernels::scalar::affine_torch(v, plan.scale[c], plan.inv_scale[c], plan.zero_point[c],
                                       plan.qmin, plan.qmax);
}

// sum((q - x)^2) over n elements, in eight interleaved partial sums (which the compiler can keep
// in vector registers).
double squared_error(const float* x, const float* q, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) {
      const double d = static_cast<double>(q[i + k]) - static_cast<double>(x[i + k]);
      acc[k] += d * d;
    }
  for (; i < n; ++i) {
    const double d = static_cast<double>(q[i]) - static_cast<double>(x[i]);
    acc[0] += d * d;
  }
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// add_errors over a tensor's elements: each candidate plan runs the SIMD kernel over a dense
// copy of the tensor, then the squared errors are summed per channel (the tensor is read once
// per candidate at memory speed rather than element by element through the scalar path).
class TensorErrors {
 public:
  TensorErrors(const ConstTensorView& x, std::optional<int64_t> axis, int64_t channels)
      : sizes_(x.sizes), axis_(axis), channels_(channels), dense_(x.numel()), q_(x.numel()) {
    // Row-major copy (an odometer over the sizes; x may have any strides). Non-finite values
    // become 0, whose error is 0 on every grid: they are ignored, as by the other statistics.
    const int64_t n = x.numel();
    std::vector<int64_t> index(x.dim(), 0);
    int64_t offset = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float v = x.data[offset];
      dense_[i] = std::isfinite(v) ? v : 0.f;
      for (int64_t d = x.dim() - 1; d >= 0; --d) {
        offset += x.strides[d];
        if (++index[d] < x.sizes[d]) break;
        offset -= x.strides[d] * x.sizes[d];
        index[d] = 0;
      }
    }
    // Runs of `inner_` elements belong to one channel, run r to channel r % channels.
    inner_ = std::max<int64_t>(n, 1);
    if (axis) {
      inner_ = 1;
      for (int64_t d = *axis + 1; d < x.dim(); ++d) inner_ *= x.sizes[d];
    }
  }

  void operator()(const kernels::AffineTorchPlan& plan, std::vector<double>& err) {
    const int64_t n = static_cast<int64_t>(dense_.size());
    if (n == 0) return;
    kernels::fake_quant_forward(plan, ConstTensorView(dense_.data(), sizes_),
                                TensorView(q_.data(), sizes_), axis_);
    std::mutex m;
    parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      std::vector<double> local(channels_, 0.0);
      for (int64_t i = begin; i < end;) {
        const int64_t run = i / inner_;
        const int64_t stop = std::min(end, (run + 1) * inner_);
        local[run % channels_] += squared_error(dense_.data() + i, q_.data() + i, stop - i);
        i = stop;
      }
      std::lock_guard<std::mutex> g(m);
      for (int64_t c = 0; c < channels_; ++c) err[c] += local[c];
    });
  }

 private:
  Shape sizes_;
  std::optional<int64_t> axis_;
  int64_t channels_, inner_ = 1;
  std::vector<float> dense_, q_;
};

}  // namespace

std::vector<double> threshold_mse(ConstTensorView x, std::optional<int64_t> channel_axis,
                                  int64_t num_bits, bool is_signed, bool power_of_two,
                                  int64_t num_candidates) {
  check_search("threshold_mse", num_bits, num_candidates);
  const std::vector<double> tmax = threshold_max(x, channel_axis);
  return search_threshold(tmax, num_bits, is_signed, power_of_two, num_candidates,
                          TensorErrors(x, channel_axis, static_cast<int64_t>(tmax.size())));
}

Range range_mse(ConstTensorView x, std::optional<int64_t> channel_axis, int64_t num_bits,
                bool activation, int64_t num_candidates) {
  check_search("range_mse", num_bits, num_candidates);
  const Range full = range_min_max(x, channel_axis);
  return search_range(full, num_bits, activation, num_candidates,
                      TensorErrors(x, channel_axis, static_cast<int64_t>(full.min.size())));
}

// ---- methods ----------------------------------------------------------------------------------

std::string to_string(Method m) {
  switch (m) {
    case Method::kMinMax: return "minmax";
    case Method::kPercentile: return "percentile";
    case Method::kMse: return "mse";
    case Method::kKl: return "kl";
  }
  return "?";
}

Method method_from_string(const std::string& s) {
  for (Method m : {Method::kMinMax, Method::kPercentile, Method::kMse, Method::kKl})
    if (to_string(m) == s) return m;
  throw Error(str_cat("unknown calibration method \"", s,
                      "\"; expected one of minmax, percentile, mse, kl"));
}

// ---- histogram --------------------------------------------------------------------------------

Histogram::Histogram(int64_t num_bins, std::optional<int64_t> channel_axis)
    : num_bins_(num_bins), axis_(channel_axis) {
  QI_CHECK(num_bins >= 16 && num_bins <= (1 << 20),
           "Histogram: num_bins must be in [16, 1048576], got ", num_bins);
}

void Histogram::update(ConstTensorView x) {
  std::optional<int64_t> axis;
  if (axis_) {
    const int64_t a = *axis_ < 0 ? *axis_ + x.dim() : *axis_;
    QI_CHECK(a >= 0 && a < x.dim(), "Histogram: channel_axis ", *axis_,
             " is out of range for a tensor of rank ", x.dim());
    axis = a;
  }
  const int64_t channels = axis ? x.sizes[*axis] : 1;
  if (rank_ < 0) {
    rank_ = x.dim();
    min_.assign(channels, std::numeric_limits<double>::infinity());
    max_.assign(channels, -std::numeric_limits<double>::infinity());
    lower_.assign(channels, 0.0);
    width_.assign(channels, 0.0);
    bins_.assign(channels, std::vector<double>(num_bins_, 0.0));
  }
  QI_CHECK(channels == this->channels(), "Histogram: a batch has ", channels,
           " channels, the earlier ones ", this->channels());
  // The batch's min and max, then bins that cover them.
  const Range batch = finite_min_max(x, axis, channels);
  const std::vector<double>& lo = batch.min;
  const std::vector<double>& hi = batch.max;
  const double n = static_cast<double>(num_bins_);
  for (int64_t c = 0; c < channels; ++c) {
    if (!(lo[c] <= hi[c])) continue;  // nothing finite in this channel
    if (width_[c] == 0.0) {
      double span = hi[c] - lo[c];
      double start = lo[c];
      if (!(span > 0.0)) {  // one value: a narrow range around it
        span = std::max(std::fabs(lo[c]), 1.0) * 1e-6;
        start = lo[c] - span / 2;
      }
      lower_[c] = start;
      width_[c] = span / n;
    } else if (lo[c] < lower_[c] || hi[c] > lower_[c] + n * width_[c]) {
      // Shift by j old bins and merge 2^k old bins into one: old bin i goes to (i + j) >> k.
      const double w = width_[c];
      const double j = lo[c] < lower_[c] ? std::ceil((lower_[c] - lo[c]) / w) : 0.0;
      const double start = lower_[c] - j * w;
      const double need = std::max(hi[c], lower_[c] + n * w);
      double factor = 2.0;
      while (start + n * w * factor < need) factor *= 2.0;
      std::vector<double> merged(num_bins_, 0.0);
      for (int64_t i = 0; i < num_bins_; ++i) {
        const auto b = static_cast<int64_t>(std::floor((static_cast<double>(i) + j) / factor));
        merged[std::min(b, num_bins_ - 1)] += bins_[c][i];
      }
      bins_[c] = std::move(merged);
      lower_[c] = start;
      width_[c] = w * factor;
    }
    min_[c] = std::min(min_[c], lo[c]);
    max_[c] = std::max(max_[c], hi[c]);
  }
  // Counts: one accumulator per (channel, bin), chunks large enough to amortize them.
  const int64_t bins = num_bins_;
  std::vector<double> inv_width(channels);
  for (int64_t c = 0; c < channels; ++c) inv_width[c] = width_[c] > 0 ? 1.0 / width_[c] : 0.0;
  reduce(
      x, axis, channels * bins, 0.0,
      [&](float v, int64_t c, std::vector<double>& acc) {
        if (!std::isfinite(v)) return;
        auto b = static_cast<int64_t>(std::floor((v - lower_[c]) * inv_width[c]));
        b = std::min(std::max<int64_t>(b, 0), bins - 1);
        acc[c * bins + b] += 1.0;
      },
      [&](const std::vector<double>& local) {
        for (int64_t c = 0; c < channels; ++c)
          for (int64_t b = 0; b < bins; ++b) bins_[c][b] += local[c * bins + b];
      },
      std::max<int64_t>(kGrain, 8 * channels * bins));
}

void Histogram::require_data(const char* what) const {
  QI_CHECK(channels() > 0, "Histogram::", what, ": no data yet (call update first)");
}

std::vector<double> Histogram::counts() const {
  std::vector<double> out;
  for (const auto& b : bins_) {
    double s = 0;
    for (double v : b) s += v;
    out.push_back(s);
  }
  return out;
}

const std::vector<double>& Histogram::bins(int64_t c) const {
  QI_CHECK(c >= 0 && c < channels(), "Histogram: channel must be in [0, ", channels(), "), got ",
           c);
  return bins_[c];
}
double Histogram::lower(int64_t c) const {
  bins(c);  // checks c
  return lower_[c];
}
double Histogram::width(int64_t c) const {
  bins(c);
  return width_[c];
}

Range Histogram::range_min_max(double floor) const {
  require_data("range_min_max");
  return widened(Range{min_, max_}, floor);
}

std::vector<double> Histogram::threshold_max(double floor) const {
  require_data("threshold_max");
  std::vector<double> out(channels());
  for (int64_t c = 0; c < channels(); ++c) {
    const double m = min_[c] <= max_[c] ? std::max(std::fabs(min_[c]), std::fabs(max_[c])) : 0.0;
    out[c] = std::max(m, floor);
  }
  return out;
}

namespace {
// Mass of x < v with each bin's count spread evenly over it.
double mass_below(const std::vector<double>& bins, double lower, double width, double v) {
  const double pos = (v - lower) / width;
  if (pos <= 0) return 0.0;
  double m = 0.0;
  const auto n = static_cast<int64_t>(bins.size());
  const auto full = static_cast<int64_t>(std::min(std::floor(pos), static_cast<double>(n)));
  for (int64_t b = 0; b < full; ++b) m += bins[b];
  if (full < n) m += bins[full] * (pos - static_cast<double>(full));
  return m;
}

void check_percentile(double p, const char* what) {
  QI_CHECK(p > 0.0 && p <= 100.0, "Histogram::", what, ": percentile must be in (0, 100], got ",
           p);
}
}  // namespace

double Histogram::quantile(int64_t c, double q) const {
  const auto& b = bins_[c];
  double total = 0;
  for (double v : b) total += v;
  if (total == 0) return 0.0;
  const double target = q * total;
  double acc = 0;
  for (int64_t i = 0; i < num_bins_; ++i) {
    if (b[i] > 0 && acc + b[i] >= target) {
      const double v = lower_[c] + width_[c] * (static_cast<double>(i) + (target - acc) / b[i]);
      return std::min(std::max(v, min_[c]), max_[c]);
    }
    acc += b[i];
  }
  return max_[c];
}

double Histogram::abs_mass_below(int64_t c, double t) const {
  return mass_below(bins_[c], lower_[c], width_[c], t) -
         mass_below(bins_[c], lower_[c], width_[c], -t);
}

std::vector<double> Histogram::threshold_percentile(double percentile) const {
  require_data("threshold_percentile");
  check_percentile(percentile, "threshold_percentile");
  const std::vector<double> tmax = threshold_max(0.0);
  const std::vector<double> total = counts();
  std::vector<double> out(channels());
  for (int64_t c = 0; c < channels(); ++c) {
    const double target = percentile / 100.0 * total[c];
    double lo = 0.0, hi = tmax[c];
    if (percentile < 100.0 && total[c] > 0) {
      for (int it = 0; it < 64; ++it) {  // the smallest t with mass(|x| <= t) >= target
        const double mid = 0.5 * (lo + hi);
        (abs_mass_below(c, mid) >= target ? hi : lo) = mid;
      }
    }
    out[c] = std::max(hi, 1.0 / 65536.0);
  }
  return out;
}

Range Histogram::range_percentile(double percentile) const {
  require_data("range_percentile");
  check_percentile(percentile, "range_percentile");
  Range r{std::vector<double>(channels()), std::vector<double>(channels())};
  for (int64_t c = 0; c < channels(); ++c) {
    r.min[c] = quantile(c, 1.0 - percentile / 100.0);
    r.max[c] = quantile(c, percentile / 100.0);
  }
  return widened(r, 1.0 / 65536.0);
}

namespace {
// add_errors over histograms: each bin's count at its center.
auto histogram_errors(const Histogram& h) {
  return [&h](const kernels::AffineTorchPlan& plan, std::vector<double>& err) {
    for (int64_t c = 0; c < h.channels(); ++c) {
      const auto& bins = h.bins(c);
      for (int64_t b = 0; b < h.num_bins(); ++b) {
        if (bins[b] == 0) continue;
        const double v = h.lower(c) + (static_cast<double>(b) + 0.5) * h.width(c);
        const double d = static_cast<double>(quantize_with(plan, static_cast<float>(v), c)) - v;
        err[c] += bins[b] * d * d;
      }
    }
  };
}
}  // namespace

std::vector<double> Histogram::threshold_mse(int64_t num_bits, bool is_signed, bool power_of_two,
                                             int64_t num_candidates) const {
  require_data("threshold_mse");
  check_search("Histogram::threshold_mse", num_bits, num_candidates);
  return search_threshold(threshold_max(), num_bits, is_signed, power_of_two, num_candidates,
                          histogram_errors(*this));
}

Range Histogram::range_mse(int64_t num_bits, int64_t num_candidates) const {
  require_data("range_mse");
  check_search("Histogram::range_mse", num_bits, num_candidates);
  return search_range(range_min_max(), num_bits, /*activation=*/true, num_candidates,
                      histogram_errors(*this));
}

std::vector<double> Histogram::threshold_kl(int64_t num_bits, bool is_signed) const {
  require_data("threshold_kl");
  QI_CHECK(num_bits >= 2 && num_bits <= 12, "Histogram::threshold_kl: num_bits must be in [2, 12], got ",
           num_bits);
  const int64_t levels = int64_t{1} << (num_bits - (is_signed ? 1 : 0));
  const std::vector<double> tmax = threshold_max();
  std::vector<double> out(channels());
  for (int64_t c = 0; c < channels(); ++c) {
    // |x| over num_bins bins of [0, max |x|] (each signed bin's count at its center).
    const int64_t n = num_bins_;
    const double w = tmax[c] / static_cast<double>(n);
    std::vector<double> a(n, 0.0);
    for (int64_t b = 0; b < n; ++b) {
      const double v = std::fabs(lower_[c] + (static_cast<double>(b) + 0.5) * width_[c]);
      a[std::min<int64_t>(static_cast<int64_t>(v / w), n - 1)] += bins_[c][b];
    }
    double best = std::numeric_limits<double>::infinity();
    int64_t best_i = n;
    for (int64_t i = std::min(levels, n); i <= n; ++i) {
      // P: the first i bins, the outliers folded into the last; Q: P merged into `levels`
      // groups, each spread evenly over the group's non-empty bins.
      std::vector<double> p(a.begin(), a.begin() + i);
      for (int64_t b = i; b < n; ++b) p[i - 1] += a[b];
      double p_total = 0;
      for (double v : p) p_total += v;
      if (p_total == 0) continue;
      std::vector<double> q(i, 0.0);
      for (int64_t g = 0; g < levels; ++g) {
        const int64_t b0 = g * i / levels, b1 = (g + 1) * i / levels;
        double sum = 0;
        int64_t nonzero = 0;
        for (int64_t b = b0; b < b1; ++b) {
          sum += a[b];
          nonzero += a[b] > 0 ? 1 : 0;
        }
        for (int64_t b = b0; b < b1; ++b)
          if (a[b] > 0) q[b] = sum / static_cast<double>(nonzero);
      }
      double q_total = 0;
      for (double v : q) q_total += v;
      double kl = 0;
      for (int64_t b = 0; b < i; ++b) {
        if (p[b] == 0) continue;
        if (q[b] == 0) {
          kl = std::numeric_limits<double>::infinity();
          break;
        }
        kl += p[b] / p_total * std::log((p[b] / p_total) / (q[b] / q_total));
      }
      if (kl < best) {
        best = kl;
        best_i = i;
      }
    }
    out[c] = std::max(static_cast<double>(best_i) * w, 1.0 / 65536.0);
  }
  return out;
}

}  // namespace qi::calibration
