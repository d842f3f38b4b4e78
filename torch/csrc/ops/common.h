// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Internal helpers of the op kernels: tensor -> core view, argument checks, dtypes, errors.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

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

// Outputs of at least this many bytes are advised onto transparent huge pages before the kernel
// writes them. glibc's malloc maps every block this large afresh (its mmap threshold never
// rises above 32 MiB), so each such output would otherwise pay one page fault per 4 KiB on its
// first write: 16384 faults for 2^24 floats, which took more than half of an allocating call
// on a KVM guest. With MADV_HUGEPAGE (honoured when the system's THP mode is `madvise` or
// `always`) the aligned interior faults once per 2 MiB. Smaller blocks come from the heap,
// already faulted; the advice would only change the heap's mapping.
inline constexpr int64_t kHugePageAdviceBytes = int64_t{32} << 20;

// QI_HUGE_PAGES=0 turns the advice off (read once).
inline bool huge_page_advice_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("QI_HUGE_PAGES");
    return v == nullptr || std::string(v) != "0";
  }();
  return enabled;
}

// Advises the whole 2 MiB pages inside [data, data + bytes) onto huge pages (Linux; a no-op
// elsewhere, for small blocks or when turned off). Only for memory nobody has written yet.
inline void advise_huge_pages(void* data, int64_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (bytes < kHugePageAdviceBytes || !huge_page_advice_enabled()) return;
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + static_cast<uintptr_t>(bytes)) &
                        ~(kHuge - 1);
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

// Large CPU outputs (kHugePageAdviceBytes and more) come from a cache of freed ones
// (output_cache.cc): a block freed by one call is reused by the next output of the same size,
// already mapped, so a training step's outputs and gradients stop paying the kernel's zeroing
// of fresh pages at every call. At most QI_OUTPUT_CACHE_MB (default 256) of freed blocks are
// kept, the least recently freed dropped first; QI_OUTPUT_CACHE_MB=0 turns the cache off.
bool output_cache_enabled();
size_t output_cache_held_bytes();  // bytes of freed blocks the cache holds now
// A float32 CPU tensor with empty_like(t)'s sizes and strides, from the cache (contents
// undefined: for kernels that write every element).
at::Tensor large_float_like(const at::Tensor& t);

// A new float32 tensor of t's sizes and memory format (channels_last stays channels_last), for
// a kernel that writes every element: large ones on huge pages (advise_huge_pages), from the
// cache of freed outputs when it is on.
inline at::Tensor empty_float_like(const at::Tensor& t) {
  if (t.is_cpu() && t.numel() * int64_t{4} >= kHugePageAdviceBytes && output_cache_enabled())
    return large_float_like(t);
  at::Tensor y = at::empty_like(t, t.options().dtype(at::kFloat));
  if (y.is_cpu())
    advise_huge_pages(y.storage().mutable_data(), static_cast<int64_t>(y.storage().nbytes()));
  return y;
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
