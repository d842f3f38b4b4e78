// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Forward kernels of every plan kind: one grid-stride elementwise kernel over a per-kind functor
// (the formulas of kernels/scalar_ops.h, the CPU kernels' own), and one kernel per block for the
// block-scaled formats (MX, NVFP4), whose scale comes from the block's largest magnitude.
#include <cstdint>

#include "cuda/device.cuh"
#include "kernels/scalar_ops.h"

namespace qi::cuda {
namespace {

namespace scalar = qi::kernels::scalar;

struct AffineTorchOp {
  DevicePlan p;
  template <typename Index>
  __device__ float operator()(float x, Index c) const {
    return scalar::affine_torch(x, p.scale[c], p.inv_scale[c], p.zero_point[c], p.qmin, p.qmax);
  }
};

struct AffineTfOp {
  DevicePlan p;
  template <typename Index>
  __device__ float operator()(float x, Index c) const {
    return scalar::affine_tf(x, p.scale[c], p.inv_scale[c], p.nudged_min[c], p.nudged_max[c],
                             p.quant_zero[c], p.use_division);
  }
};

struct LutOp {
  DevicePlan p;
  template <typename Index>
  __device__ float operator()(float x, Index c) const {
    if (scalar::is_nan(x)) return x;
    const float v = scalar::lut_value(x, p.divisor[c], p.multiplier, p.qmin, p.qmax);
    const size_t k = scalar::lut_step(v, p.boundaries, static_cast<size_t>(p.boundary_count));
    return p.table[static_cast<size_t>(c) * static_cast<size_t>(p.boundary_count + 1) + k];
  }
};

struct FloatOp {
  DevicePlan p;
  template <typename Index>
  __device__ float operator()(float x, Index c) const {
    return scalar::float_quant(x, p.scale[c], p.scale[c], p.max, p.mbits, p.emin_biased);
  }
};

template <typename T, typename Index, typename Op>
__global__ void __launch_bounds__(kThreads)
    map_kernel(const T* __restrict__ in, T* __restrict__ out, Layout l, Op op) {
  const Index n = static_cast<Index>(l.numel);
  const Index step = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index m = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; m < n; m += step)
    out[m] = store<T>(op(load(in[m]), param_index(l, m)));
}

// In-place calls pass the same pointer as in and out: the kernel reads each element before it
// writes it, in the same thread, so __restrict__ holds for what the compiler may reorder.
template <typename T, typename Op>
void launch_map(const Layout& l, const void* in, void* out, const Op& op, cudaStream_t stream) {
  const unsigned grid = grid_for(l.numel);
  if (fits_32bit(l))
    map_kernel<T, uint32_t><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(in),
                                                          static_cast<T*>(out), l, op);
  else
    map_kernel<T, uint64_t><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(in),
                                                          static_cast<T*>(out), l, op);
}

// One thread per block of group_size elements along the group axis: the block's largest
// magnitude (a NaN makes the block NaN), its scales, then each element. Block b starts at
// (o * blocks_per_line + j) * group_size * group_stride + i for b = (o * blocks_per_line + j) *
// group_stride + i.
template <typename T, bool kMx>
__global__ void __launch_bounds__(kThreads)
    block_kernel(const T* __restrict__ in, T* __restrict__ out, Layout l, DevicePlan p) {
  const int64_t k = l.group_size;
  const int64_t blocks = l.numel / k;
  const int64_t per_line = l.group_extent / k;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int32_t mbits = kMx ? p.mbits : 1;
  const int32_t emin = kMx ? p.emin_biased : scalar::float_format_emin_biased(2);
  const float max = kMx ? p.max : 6.f;
  for (int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; b < blocks;
       b += step) {
    const int64_t i = b % l.group_stride;
    const int64_t line_block = b / l.group_stride;
    const int64_t o = line_block / per_line, j = line_block % per_line;
    const int64_t base = (o * l.group_extent + j * k) * l.group_stride + i;
    float amax = 0.f;
    bool nan = false;
    for (int64_t e = 0; e < k; ++e) {
      const float v = load(in[base + e * l.group_stride]);
      nan = nan || scalar::is_nan(v);
      amax = fmaxf(amax, fabsf(v));
    }
    float divisor = 0.f, multiplier = 0.f;
    if (!nan) {
      if (kMx)  // MX's pre-scale: the block of x / tensor_scale (scalar::mx_prescaled_quant)
        nan = !scalar::mx_scales(p.tensor_scale > 0 ? amax / p.tensor_scale : amax, p.emax,
                                 &divisor, &multiplier);
      else
        divisor = multiplier = scalar::nvfp4_total_scale(amax, p.tensor_scale);
    }
    for (int64_t e = 0; e < k; ++e) {
      const int64_t at = base + e * l.group_stride;
      const float pre = kMx ? p.tensor_scale : 0.f;
      const float y = nan ? scalar::bits_float(0x7fc00000u)
                          : scalar::mx_prescaled_quant(load(in[at]), pre, divisor, multiplier,
                                                       max, mbits, emin);
      out[at] = store<T>(y);
    }
  }
}

}  // namespace

void fake_quant_forward(const DevicePlan& plan, const Layout& layout, DType dtype, const void* in,
                        void* out, cudaStream_t stream) {
  if (layout.numel == 0) return;
  dispatch_dtype(dtype, [&](auto zero) {
    using T = decltype(zero);
    switch (plan.kind) {
      case PlanKind::kAffineTorch:
        launch_map<T>(layout, in, out, AffineTorchOp{plan}, stream);
        break;
      case PlanKind::kAffineTf:
        launch_map<T>(layout, in, out, AffineTfOp{plan}, stream);
        break;
      case PlanKind::kLut:
        launch_map<T>(layout, in, out, LutOp{plan}, stream);
        break;
      case PlanKind::kFloat:
        launch_map<T>(layout, in, out, FloatOp{plan}, stream);
        break;
      case PlanKind::kMx:
      case PlanKind::kNvfp4: {
        const int64_t blocks = layout.numel / layout.group_size;
        const unsigned grid = grid_for(blocks, 1);
        if (plan.kind == PlanKind::kMx)
          block_kernel<T, true><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(in),
                                                               static_cast<T*>(out), layout, plan);
        else
          block_kernel<T, false><<<grid, kThreads, 0, stream>>>(
              static_cast<const T*>(in), static_cast<T*>(out), layout, plan);
        break;
      }
    }
  });
}

const char* last_launch_error() {
  const cudaError_t e = cudaGetLastError();
  return e == cudaSuccess ? "" : cudaGetErrorString(e);
}

}  // namespace qi::cuda
