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
            Fn&& fn, Merge&& merge) {
  const auto dims = kernels::coalesce_dims<1>(x.sizes, {&x.strides}, axis);
  const int64_t total = kernels::total_elements(dims);
  if (total == 0 || x.numel() == 0) return;
  std::mutex m;
  parallel_for(0, total, kGrain, [&](int64_t begin, int64_t end) {
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

Range range_min_max(ConstTensorView x, std::optional<int64_t> channel_axis, double floor) {
  const int64_t channels = channel_count(x, channel_axis);
  const double inf = std::numeric_limits<double>::infinity();
  Range r{std::vector<double>(channels, inf), std::vector<double>(channels, -inf)};
  using MinMax = std::array<double, 2>;
  reduce(
      x, channel_axis, channels, MinMax{inf, -inf},
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
  for (int64_t c = 0; c < channels; ++c) {
    if (!(r.min[c] <= r.max[c])) r.min[c] = r.max[c] = 0.0;  // empty or all non-finite
    if (r.max[c] - r.min[c] < floor) {
      r.min[c] -= floor;
      r.max[c] += floor;
    }
  }
  return r;
}

std::vector<double> threshold_mse(ConstTensorView x, std::optional<int64_t> channel_axis,
                                  int64_t num_bits, bool is_signed, bool power_of_two,
                                  int64_t num_candidates) {
  QI_CHECK(num_bits >= 2 && num_bits <= 16, "threshold_mse: num_bits must be in [2, 16], got ",
           num_bits);
  QI_CHECK(num_candidates >= 1, "threshold_mse: num_candidates must be >= 1, got ",
           num_candidates);
  const std::vector<double> tmax = threshold_max(x, channel_axis);
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
    reduce(
        x, channel_axis, channels, 0.0,
        [&](float v, int64_t c, std::vector<double>& acc) {
          if (!std::isfinite(v)) return;
          const float q = kernels::scalar::affine_torch(v, plan.scale[c], plan.inv_scale[c], 0.f,
                                                        plan.qmin, plan.qmax);
          const double d = static_cast<double>(q) - v;
          acc[c] += d * d;
        },
        [&](const std::vector<double>& local) {
          for (int64_t c = 0; c < channels; ++c) err[c] += local[c];
        });
    for (int64_t c = 0; c < channels; ++c)
      if (err[c] < best_err[c]) {
        best_err[c] = err[c];
        best[c] = t[c];
      }
  }
  return best;
}

}  // namespace qi::calibration
