// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Internal helpers of the op kernels: tensor -> core view, argument checks, dtypes, errors.
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

// Bad arguments raise ValueError in Python (c10::ValueError), as qi's other errors do.
#define QI_TORCH_CHECK(cond, ...) TORCH_CHECK_VALUE(cond, __VA_ARGS__)

// Inputs may be float32, float16, bfloat16 or float64 CPU tensors; qi computes in float32 (the
// grid is a float32 grid) and returns the input's dtype.
inline void check_floating_cpu(const at::Tensor& t, const char* op, const char* arg) {
  QI_TORCH_CHECK(t.defined(), op, ": ", arg, " must be a defined tensor");
  QI_TORCH_CHECK(t.device().is_cpu(), op, ": ", arg, " must be a CPU tensor, got ", t.device());
  const auto s = t.scalar_type();
  QI_TORCH_CHECK(s == at::kFloat || s == at::kHalf || s == at::kBFloat16 || s == at::kDouble, op,
                 ": ", arg, " must be float32, float16, bfloat16 or float64, got ", s);
}

// t in float32 (itself when it already is; a copy in the same memory format otherwise).
inline at::Tensor as_float(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat ? t : t.to(at::kFloat);
}

// A float32 result in the dtype of `like` (rounded to nearest even).
inline at::Tensor in_dtype_of(const at::Tensor& y32, const at::Tensor& like) {
  return like.scalar_type() == at::kFloat ? y32 : y32.to(like.scalar_type());
}

// A new float32 tensor of t's sizes and memory format (channels_last stays channels_last).
inline at::Tensor empty_float_like(const at::Tensor& t) {
  return at::empty_like(t, t.options().dtype(at::kFloat));
}

// Per-channel values of a parameter tensor as doubles (any shape is flattened: MCT keeps
// per-channel thresholds in broadcast shapes such as (C, 1, 1, 1)).
inline std::vector<double> values_of(const at::Tensor& t, const char* op, const char* arg) {
  check_floating_cpu(t, op, arg);
  const at::Tensor c = t.detach().to(at::kDouble).reshape({-1}).contiguous();
  const double* p = c.const_data_ptr<double>();
  return std::vector<double>(p, p + c.numel());
}

inline trainable::GradMode grad_mode_of(const std::string& mode, const char* op) {
  if (mode == "ste") return trainable::GradMode::kSte;
  if (mode == "lsq") return trainable::GradMode::kLsq;
  QI_TORCH_CHECK(false, op, ": mode must be \"ste\" or \"lsq\", got \"", mode, "\"");
}

// The static arguments of the trainable ops, as the CPU and CUDA kernels take them.
inline trainable::SymmetricQuantArgs symmetric_args(int64_t n, bool is_signed,
                                                     std::optional<int64_t> channel_axis,
                                                     c10::string_view mode, double grad_scale,
                                                     std::optional<int64_t> grad_scale_axis,
                                                     double min_threshold, bool power_of_two,
                                                     std::optional<int64_t> group_size,
                                                     int64_t group_axis, const char* op) {
  return {n,          is_signed,       channel_axis,  grad_mode_of(std::string(mode), op),
          grad_scale, grad_scale_axis, min_threshold, power_of_two,
          group_size, group_axis};
}

inline trainable::UniformQuantArgs uniform_args(int64_t n, std::optional<int64_t> channel_axis,
                                                c10::string_view mode, double grad_scale,
                                                bool activation,
                                                std::optional<int64_t> grad_scale_axis,
                                                std::optional<int64_t> group_size,
                                                int64_t group_axis, const char* op) {
  return {n,          channel_axis, grad_mode_of(std::string(mode), op), grad_scale, grad_scale_axis,
          activation, group_size,   group_axis};
}

// Runs fn, turning qi::Error into c10::ValueError (Python ValueError) with the same message.
template <typename Fn>
auto translate_errors(Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const qi::Error& e) {
    QI_TORCH_CHECK(false, e.what());
  }
}

// The formats op's static arguments; the scaling name goes through the core's parser (its
// qi::Error becomes c10::ValueError).
inline trainable::FormatQuantArgs format_args(c10::string_view format, c10::string_view scaling,
                                              std::optional<int64_t> channel_axis,
                                              c10::string_view mode, double grad_scale,
                                              std::optional<int64_t> grad_scale_axis,
                                              std::optional<int64_t> group_size,
                                              int64_t group_axis,
                                              std::optional<double> tensor_grad_scale,
                                              const char* op) {
  trainable::FormatQuantArgs a;
  a.format = std::string(format);
  a.scaling = translate_errors(
      [&] { return trainable::parse_format_scaling(op, std::string(scaling)); });
  a.channel_axis = channel_axis;
  a.mode = grad_mode_of(std::string(mode), op);
  a.grad_scale = grad_scale;
  a.grad_scale_axis = grad_scale_axis;
  a.group_size = group_size;
  a.group_axis = group_axis;
  a.tensor_grad_scale = tensor_grad_scale;
  return a;
}

}  // namespace qi::torch::detail
