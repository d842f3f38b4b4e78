// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include "core/param_rules.h"

#include <cfloat>
#include <cmath>

#include "qi/error.h"

namespace qi::rules {

void num_bits(const char* what, int64_t n, int64_t lo, int64_t hi, const char* why) {
  QI_CHECK(n >= lo && n <= hi, what, ": num_bits must be in [", lo, ", ", hi, "]", why, ", got ",
           n);
}

void finite(const char* what, const char* arg, const std::vector<double>& values) {
  for (size_t i = 0; i < values.size(); ++i)
    QI_CHECK(std::isfinite(values[i]), what, ": ", arg, " must be finite, got ", values[i],
             " at index ", i);
}

void threshold(const char* what, double t, int64_t steps_log2, size_t index) {
  QI_CHECK(std::isfinite(t), what, ": threshold must be finite, got ", t, " at index ", index);
  QI_CHECK(t > 0, what, ": threshold must be > 0, got ", t, " at index ", index);
  QI_CHECK(t <= FLT_MAX, what, ": threshold must fit in float32 (<= ", FLT_MAX, "), got ", t,
           " at index ", index);
  QI_CHECK(std::ldexp(t, -static_cast<int>(steps_log2)) >= FLT_MIN, what,
           ": threshold is too small: the step threshold / 2^", steps_log2,
           " must be a normal float32 (>= ", FLT_MIN, "), got threshold ", t, " at index ", index);
}

void range(const char* what, double min, double max, int64_t num_bits, size_t index) {
  QI_CHECK(std::isfinite(min) && std::isfinite(max), what,
           ": min_range and max_range must be finite, got min_range=", min, " and max_range=", max,
           " at index ", index);
  QI_CHECK(min < max, what, ": min_range must be < max_range, got min_range=", min,
           " and max_range=", max, " at index ", index);
  QI_CHECK(std::fabs(min) <= FLT_MAX && std::fabs(max) <= FLT_MAX, what,
           ": min_range and max_range must fit in float32, got min_range=", min,
           " and max_range=", max, " at index ", index);
  const double levels = std::ldexp(1.0, static_cast<int>(num_bits)) - 1;
  const float span = static_cast<float>(max) - static_cast<float>(min);
  QI_CHECK(std::isfinite(span) && span / static_cast<float>(levels) >= FLT_MIN, what,
           ": max_range - min_range must give a finite, normal float32 step (max - min) / ",
           levels, ", got min_range=", min, " and max_range=", max, " at index ", index);
}

void scale(const char* what, double s, size_t index, const char* arg) {
  QI_CHECK(std::isfinite(s), what, ": ", arg, " must be finite, got ", s, " at index ", index);
  QI_CHECK(s > 0, what, ": ", arg, " must be > 0, got ", s, " at index ", index);
  QI_CHECK(s <= FLT_MAX && static_cast<float>(s) >= FLT_MIN, what, ": ", arg,
           " must be a normal float32 (in [", FLT_MIN, ", ", FLT_MAX, "]), got ", s,
           " at index ", index);
}

}  // namespace qi::rules
