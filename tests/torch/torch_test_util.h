// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Helpers shared by the tests of the LibTorch layer (tests/torch/test_*.cc).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "qi/error.h"

namespace qi_torch_test {

// Runs fn and checks that it throws qi::Error (not another type) whose message holds `part`.
template <typename F>
void expect_qi_error(F&& fn, const std::string& part) {
  try {
    fn();
    ADD_FAILURE() << "expected qi::Error containing \"" << part << "\", nothing thrown";
  } catch (const qi::Error& e) {
    EXPECT_PRED_FORMAT2(::testing::IsSubstring, part, e.what());
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected qi::Error containing \"" << part
                  << "\", got another exception: " << e.what();
  }
}

// Runs fn and checks that it throws c10::Error (what the ops raise) whose message holds `part`.
template <typename F>
void expect_c10_error(F&& fn, const std::string& part) {
  try {
    fn();
    ADD_FAILURE() << "expected c10::Error containing \"" << part << "\", nothing thrown";
  } catch (const c10::Error& e) {
    EXPECT_PRED_FORMAT2(::testing::IsSubstring, part, e.what_without_backtrace());
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected c10::Error containing \"" << part
                  << "\", got another exception: " << e.what();
  }
}

// The float32 values of a tensor, row-major.
inline std::vector<float> values(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(at::kFloat).contiguous();
  const float* p = c.const_data_ptr<float>();
  return std::vector<float>(p, p + c.numel());
}

// Bit-for-bit equality of two float32 tensors (NaN payloads, the sign of zero included).
inline ::testing::AssertionResult bit_equal(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes())
    return ::testing::AssertionFailure() << "sizes differ: " << a.sizes() << " vs " << b.sizes();
  const std::vector<float> va = values(a), vb = values(b);
  int64_t bad = 0;
  std::ostringstream first;
  for (size_t i = 0; i < va.size(); ++i) {
    uint32_t ba, bb;
    std::memcpy(&ba, &va[i], 4);
    std::memcpy(&bb, &vb[i], 4);
    if (ba != bb) {
      if (bad == 0)
        first << "first difference at flat index " << i << ": " << va[i] << " vs " << vb[i];
      ++bad;
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << bad << " of " << va.size() << " elements differ; "
                                       << first.str();
}

// |a - b| <= atol + rtol * |b| elementwise (float64 comparison).
inline ::testing::AssertionResult all_close(const at::Tensor& a, const at::Tensor& b, double rtol,
                                            double atol) {
  if (a.sizes() != b.sizes())
    return ::testing::AssertionFailure() << "sizes differ: " << a.sizes() << " vs " << b.sizes();
  const std::vector<float> va = values(a), vb = values(b);
  for (size_t i = 0; i < va.size(); ++i) {
    const double d = std::fabs(static_cast<double>(va[i]) - vb[i]);
    if (!(d <= atol + rtol * std::fabs(static_cast<double>(vb[i]))))
      return ::testing::AssertionFailure()
             << "element " << i << ": " << va[i] << " vs " << vb[i] << " (|diff| " << d
             << ", rtol " << rtol << ", atol " << atol << ")";
  }
  return ::testing::AssertionSuccess();
}

}  // namespace qi_torch_test
