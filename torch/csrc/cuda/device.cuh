// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Internal to the CUDA kernels: element types, layouts and launch geometry.
#pragma once

#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda/launch.h"

namespace qi::cuda {

// Loads convert exactly to float32 (float64 rounds to nearest, as the CPU layer's .to(float)).
__device__ inline float load(float v) { return v; }
__device__ inline float load(__half v) { return __half2float(v); }
__device__ inline float load(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ inline float load(double v) { return __double2float_rn(v); }
__device__ inline double load_double(float v) { return v; }
__device__ inline double load_double(__half v) { return __half2float(v); }
__device__ inline double load_double(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ inline double load_double(double v) { return v; }

// Stores round to nearest even, as torch's float32 -> float16/bfloat16 conversions.
template <typename T>
__device__ inline T store(float v);
template <>
__device__ inline float store<float>(float v) { return v; }
template <>
__device__ inline __half store<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ inline __nv_bfloat16 store<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <>
__device__ inline double store<double>(float v) { return v; }

// A double result in type T the way torch converts a float64 tensor: float64 -> float32 first
// for float16 and bfloat16 (c10::Half and c10::BFloat16 are built from a float).
template <typename T>
__device__ inline T store_double(double v) {
  return store<T>(__double2float_rn(v));
}
template <>
__device__ inline double store_double<double>(double v) { return v; }

// fn(T{}) with T the element type of `dtype`.
template <typename Fn>
void dispatch_dtype(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat: fn(float{}); break;
    case DType::kHalf: fn(__half{}); break;
    case DType::kBFloat16: fn(__nv_bfloat16{}); break;
    case DType::kDouble: fn(double{}); break;
  }
}

// The parameter set of the element at memory position m (Index: 32- or 64-bit arithmetic).
template <typename Index>
__device__ inline Index param_index(const Layout& l, Index m) {
  Index p = 0;
  if (l.channels > 1)
    p = (m / static_cast<Index>(l.channel_stride)) % static_cast<Index>(l.channels);
  if (l.group_size > 0) {
    const Index i = (m / static_cast<Index>(l.group_stride)) % static_cast<Index>(l.group_extent);
    p = p * static_cast<Index>(l.group_count) + i / static_cast<Index>(l.group_size);
  }
  return p;
}

inline constexpr int kThreads = 256;

// Blocks of a grid-stride loop over n items: enough to fill any current GPU, no more.
inline unsigned grid_for(int64_t n, int64_t per_thread = 4) {
  const int64_t want = (n + kThreads * per_thread - 1) / (kThreads * per_thread);
  const int64_t cap = int64_t{132} * 32;  // an H200's 132 SMs, 32 blocks deep
  return static_cast<unsigned>(want < 1 ? 1 : want > cap ? cap : want);
}

// True when every index of the layout fits 32-bit arithmetic (much cheaper division).
inline bool fits_32bit(const Layout& l) { return l.numel <= INT32_MAX; }

}  // namespace qi::cuda
