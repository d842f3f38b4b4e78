// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Internal: the parameter rules shared by the inferable quantizers (checked once, at
// construction) and the trainable ops (checked at every call, since training moves the
// parameters). One definition, one wording: "<what>: <argument> <rule>, got <value> at index i".
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace qi::rules {

// lo <= n <= hi; `why` is appended to the rule (e.g. " (at most lut_values_bitwidth)").
void num_bits(const char* what, int64_t n, int64_t lo, int64_t hi, const char* why = "");

// Every value finite.
void finite(const char* what, const char* arg, const std::vector<double>& values);

// A threshold t > 0 whose float32 step t / 2^steps_log2 is a normal float32.
void threshold(const char* what, double t, int64_t steps_log2, size_t index);

// A range min < max, both in float32, whose step (max - min) / (2^num_bits - 1) in float32 is a
// finite, normal float32.
void range(const char* what, double min, double max, int64_t num_bits, size_t index);

// A scale s > 0 whose float32 value is a normal, finite float32 (`arg` names it in messages).
void scale(const char* what, double s, size_t index, const char* arg = "scale");

// The range a trainable uniform quantizer uses: the interval between its two learned ends.
// Training may move min past max (large steps on 2-bit activations do); the ends then swap roles
// instead of failing the step, and the forward, the gradients (each reaches the variable it came
// from) and convert all use the pair in order. Ranges in order are unchanged.
inline std::pair<double, double> trained_range(double min, double max) {
  return min > max ? std::pair{max, min} : std::pair{min, max};
}

}  // namespace qi::rules
