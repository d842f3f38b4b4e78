// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The trainable affine ops on the device: their grids from the parameter tensors, and the fused
// backward (dx and the per-channel parameter sums in one pass over x and dy, with no full-size
// temporary), whose sums are reduced in a fixed order (deterministic) and finished by a kernel
// of one thread per channel. Nothing is read back to the host.
#include <cfloat>
#include <cstdint>

#include "cuda/device.cuh"
#include "kernels/scalar_ops.h"

namespace qi::cuda {
namespace {

namespace scalar = qi::kernels::scalar;

constexpr int64_t kTargetBlocks = 132 * 8;  // reduction blocks to aim for (an H200's SMs x 8)
constexpr unsigned kParamThreads = 128;

unsigned param_grid(int64_t count) {
  return static_cast<unsigned>((count + kParamThreads - 1) / kParamThreads);
}

template <typename T>
__global__ void symmetric_params_kernel(const T* threshold, int64_t count, double min_threshold,
                                        bool power_of_two, double steps, float* params) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= count) return;
  const double t = load_double(threshold[c]);
  double te = t < min_threshold ? min_threshold : t;  // std::max(t, min_threshold)
  if (te > 0 && te <= FLT_MAX && power_of_two) te = scalar::pow2_ceil(te);
  // rules::threshold; a value the CPU op rejects gives a NaN grid (and NaN outputs) instead.
  const bool valid = te > 0 && te <= FLT_MAX && te / steps >= FLT_MIN;
  const float scale = valid ? scalar::symmetric_scale(te, steps) : scalar::bits_float(0x7fc00000u);
  params[c] = scale;
  params[count + c] = 1.0f / scale;  // the float32 reciprocal, as the CPU plans
  params[2 * count + c] = 0.f;
}

template <typename T>
__global__ void uniform_params_kernel(const T* min_range, const T* max_range, int64_t count,
                                      double levels, bool scale_in_double, float* params) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= count) return;
  double lo = load_double(min_range[c]), hi = load_double(max_range[c]);
  if (lo > hi) {  // rules::trained_range: crossed ends are used in order
    const double t = lo;
    lo = hi;
    hi = t;
  }
  float lo_adj = 0.f, hi_adj = 0.f, scale = 0.f, zp = 0.f;
  // rules::range; a range the CPU op rejects gives a NaN grid (and NaN outputs) instead.
  const float span = static_cast<float>(hi) - static_cast<float>(lo);
  const bool valid = lo < hi && fabs(lo) <= FLT_MAX && fabs(hi) <= FLT_MAX && span <= FLT_MAX &&
                     span / static_cast<float>(levels) >= FLT_MIN;
  scalar::adjust_range_float(static_cast<float>(lo), static_cast<float>(hi),
                             static_cast<float>(levels), &lo_adj, &hi_adj);
  scalar::uniform_scale_zero_point(lo_adj, hi_adj, levels, scale_in_double, &scale, &zp);
  if (!valid) zp = scale = scalar::bits_float(0x7fc00000u);
  params[c] = scale;
  params[count + c] = 1.0f / scale;
  params[2 * count + c] = zp;
}

// Block (channel c, split s) sums the terms of channel c's elements k in its slice of
// [0, numel / channels); element k of channel c is at memory position
// (k / stride) * channels * stride + c * stride + k % stride.
template <typename T, typename Index>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const T* __restrict__ x, const T* __restrict__ dy, T* __restrict__ dx,
                    Layout l, DevicePlan p, bool lsq, double* __restrict__ partials,
                    int64_t splits) {
  __shared__ double sums[2][kThreads];
  const int64_t c = blockIdx.x / splits, s = blockIdx.x % splits;
  const Index per_channel = static_cast<Index>(l.numel / l.channels);
  const Index chunk = (per_channel + static_cast<Index>(splits) - 1) / static_cast<Index>(splits);
  const Index begin = static_cast<Index>(s) * chunk;
  const Index end = begin + chunk < per_channel ? begin + chunk : per_channel;
  const Index stride = static_cast<Index>(l.channel_stride);
  const Index line = static_cast<Index>(l.channels) * stride;
  const Index offset = static_cast<Index>(c) * stride;
  const float inv = p.inv_scale[c], zp = p.zero_point[c];
  double d_scale = 0, d_offset = 0;
  for (Index k = begin + threadIdx.x; k < end; k += blockDim.x) {
    const Index m = l.channels > 1 ? (k / stride) * line + offset + k % stride : k;
    const float d = scalar::affine_backward_terms(load(x[m]), load(dy[m]), inv, zp, p.qmin,
                                                  p.qmax, lsq, &d_scale, &d_offset);
    if (dx) dx[m] = store<T>(d);
  }
  sums[0][threadIdx.x] = d_scale;
  sums[1][threadIdx.x] = d_offset;
  __syncthreads();
  for (unsigned half = blockDim.x / 2; half > 0; half /= 2) {  // a fixed tree: deterministic
    if (threadIdx.x < half) {
      sums[0][threadIdx.x] += sums[0][threadIdx.x + half];
      sums[1][threadIdx.x] += sums[1][threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    partials[2 * blockIdx.x] = sums[0][0];
    partials[2 * blockIdx.x + 1] = sums[1][0];
  }
}

// The sums of channel c's splits, in order.
__device__ inline void channel_sums(const double* partials, int64_t splits, int64_t c,
                                    double* d_scale, double* d_offset) {
  double a = 0, b = 0;
  for (int64_t s = 0; s < splits; ++s) {
    a += partials[2 * (c * splits + s)];
    b += partials[2 * (c * splits + s) + 1];
  }
  *d_scale = a;
  *d_offset = b;
}

template <typename T>
__global__ void symmetric_grads_kernel(const double* partials, int64_t splits, const T* threshold,
                                       int64_t count, double min_threshold, double grad_scale,
                                       double steps, T* d_threshold) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= count) return;
  double d_scale, d_offset;
  channel_sums(partials, splits, c, &d_scale, &d_offset);
  const double t = load_double(threshold[c]);
  // delta = t' / steps: dL/dt = grad_scale * dL/ddelta / steps where t passes the clamp.
  d_threshold[c] = store_double<T>(t < min_threshold ? 0.0 : grad_scale * d_scale / steps);
}

template <typename T>
__global__ void uniform_grads_kernel(const double* partials, int64_t splits, const T* min_range,
                                     const T* max_range, int64_t count, double grad_scale,
                                     double levels, T* d_min, T* d_max) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= count) return;
  double d_scale, d_offset;
  channel_sums(partials, splits, c, &d_scale, &d_offset);
  const double ds = grad_scale * d_scale;
  const double mn = load_double(min_range[c]), mx = load_double(max_range[c]);
  const bool crossed = mn > mx;
  const double lo = crossed ? mx : mn, hi = crossed ? mn : mx;
  double g_lo = 0, g_hi = 0;
  // scale = (max_adj - min_adj) / levels and offset = min_adj, back through the adjustment.
  scalar::adjust_range_backward(static_cast<float>(lo), static_cast<float>(hi), levels,
                                d_offset - ds / levels, ds / levels, &g_lo, &g_hi);
  d_min[c] = store_double<T>(crossed ? g_hi : g_lo);  // crossed: each end gets its own
  d_max[c] = store_double<T>(crossed ? g_lo : g_hi);
}

}  // namespace

void symmetric_params(const void* threshold, DType dtype, int64_t count, double min_threshold,
                      bool power_of_two, double steps, float* params, cudaStream_t stream) {
  dispatch_dtype(dtype, [&](auto zero) {
    using T = decltype(zero);
    symmetric_params_kernel<T><<<param_grid(count), kParamThreads, 0, stream>>>(
        static_cast<const T*>(threshold), count, min_threshold, power_of_two, steps, params);
  });
}

void uniform_params(const void* min_range, const void* max_range, DType dtype, int64_t count,
                    double levels, bool scale_in_double, float* params, cudaStream_t stream) {
  dispatch_dtype(dtype, [&](auto zero) {
    using T = decltype(zero);
    uniform_params_kernel<T><<<param_grid(count), kParamThreads, 0, stream>>>(
        static_cast<const T*>(min_range), static_cast<const T*>(max_range), count, levels,
        scale_in_double, params);
  });
}

int64_t backward_splits(const Layout& layout) {
  const int64_t per_channel = layout.numel / (layout.channels > 0 ? layout.channels : 1);
  const int64_t by_blocks = (kTargetBlocks + layout.channels - 1) / layout.channels;
  const int64_t by_size = (per_channel + kThreads * 4 - 1) / (kThreads * 4);
  const int64_t s = by_blocks < by_size ? by_blocks : by_size;
  return s < 1 ? 1 : s;
}

void affine_backward(const DevicePlan& plan, const Layout& layout, DType dtype, const void* x,
                     const void* dy, void* dx, bool lsq, double* partials, int64_t splits,
                     cudaStream_t stream) {
  const unsigned grid = static_cast<unsigned>(layout.channels * splits);
  dispatch_dtype(dtype, [&](auto zero) {
    using T = decltype(zero);
    const T* xt = static_cast<const T*>(x);
    const T* gt = static_cast<const T*>(dy);
    T* dxt = static_cast<T*>(dx);
    if (fits_32bit(layout))
      backward_kernel<T, uint32_t><<<grid, kThreads, 0, stream>>>(xt, gt, dxt, layout, plan, lsq,
                                                                  partials, splits);
    else
      backward_kernel<T, uint64_t><<<grid, kThreads, 0, stream>>>(xt, gt, dxt, layout, plan, lsq,
                                                                  partials, splits);
  });
}

void symmetric_param_grads(const double* partials, int64_t splits, const void* threshold,
                           DType dtype, int64_t count, double min_threshold, double grad_scale,
                           double steps, void* d_threshold, cudaStream_t stream) {
  dispatch_dtype(dtype, [&](auto zero) {
    using T = decltype(zero);
    symmetric_grads_kernel<T><<<param_grid(count), kParamThreads, 0, stream>>>(
        partials, splits, static_cast<const T*>(threshold), count, min_threshold, grad_scale,
        steps, static_cast<T*>(d_threshold));
  });
}

void uniform_param_grads(const double* partials, int64_t splits, const void* min_range,
                         const void* max_range, DType dtype, int64_t count, double grad_scale,
                         double levels, void* d_min, void* d_max, cudaStream_t stream) {
  dispatch_dtype(dtype, [&](auto zero) {
    using T = decltype(zero);
    uniform_grads_kernel<T><<<param_grid(count), kParamThreads, 0, stream>>>(
        partials, splits, static_cast<const T*>(min_range), static_cast<const T*>(max_range),
        count, grad_scale, levels, static_cast<T*>(d_min), static_cast<T*>(d_max));
  });
}

}  // namespace qi::cuda
