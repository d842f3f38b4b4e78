// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Internal helpers of the op kernels: tensor -> core view, argument checks, error translation.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "qi/error.h"
#include "qi/tensor_view.h"
#include "qi/trainable_math.h"

namespace qi::torch::detail {

inline ConstTensorView const_view(const at::Tensor& t) {
  return ConstTensorView(t.const_data_ptr<float>(), t.sizes().vec(), t.strides().vec());
}
inline TensorView mutable_view(at::Tensor& t) {
  return TensorView(t.mutable_data_ptr<float>(), t.sizes().vec(), t.strides().vec());
}

inline void check_float_cpu(const at::Tensor& t, const char* op, const char* arg) {
  TORCH_CHECK(t.defined(), op, ": ", arg, " must be a defined tensor");
  TORCH_CHECK(t.device().is_cpu(), op, ": ", arg, " must be a CPU tensor, got ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat, op, ": ", arg, " must be float32, got ",
              t.scalar_type());
}

// Per-channel values of a parameter tensor as doubles (any shape is flattened: MCT keeps
// per-channel thresholds in broadcast shapes such as (C, 1, 1, 1)).
inline std::vector<double> values_of(const at::Tensor& t, const char* op, const char* arg) {
  check_float_cpu(t, op, arg);
  const at::Tensor c = t.detach().reshape({-1}).contiguous();
  const float* p = c.const_data_ptr<float>();
  return std::vector<double>(p, p + c.numel());
}

inline trainable::GradMode grad_mode_of(const std::string& mode, const char* op) {
  if (mode == "ste") return trainable::GradMode::kSte;
  if (mode == "lsq") return trainable::GradMode::kLsq;
  TORCH_CHECK(false, op, ": mode must be \"ste\" or \"lsq\", got \"", mode, "\"");
}

// Runs fn, turning qi::Error into c10::Error with the same message.
template <typename Fn>
auto translate_errors(Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const qi::Error& e) {
    TORCH_CHECK(false, e.what());
  }
}

}  // namespace qi::torch::detail
