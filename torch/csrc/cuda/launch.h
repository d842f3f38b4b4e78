// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Internal: the CUDA kernels' launchers (forward.cu, backward.cu) as plain C++, free of torch:
// ops.cc binds them to tensors. Every launcher enqueues on `stream` and never waits for the
// device, so a sequence of calls can be captured in a CUDA graph.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace qi::cuda {

// Element types of inputs and parameters; the kernels compute in float32 (double for the
// parameter gradients) and store in the tensor's own type.
enum class DType : int32_t { kFloat, kHalf, kBFloat16, kDouble };

// Where an element's parameters are. Tensors are dense (no gaps or overlaps) and walked in
// memory order; the element at memory position m has index (m / stride) % size along an axis of
// that memory stride. Parameter set: c * group_count + g, with c the index along the channel
// axis (0 without one) and g = (index along the group axis) / group_size (0 without groups).
// Block-scaled plans: blocks of group_size elements along the group axis.
struct Layout {
  int64_t numel = 0;
  int64_t channels = 1;
  int64_t channel_stride = 1;
  int64_t group_size = 0;  // 0: no groups
  int64_t group_count = 1;
  int64_t group_stride = 1;
  int64_t group_extent = 1;  // the size along the group axis
};

// The variant index of qi::kernels::Plan.
enum class PlanKind : int32_t { kAffineTorch, kAffineTf, kLut, kFloat, kMx, kNvfp4 };

// A plan whose per-channel arrays are in device memory (the packed plan's words on the device,
// or the parameters the trainable ops compute there); scalars travel by value. The formulas are
// qi::kernels' (include/qi/kernels.h), evaluated by kernels/scalar_ops.h.
struct DevicePlan {
  PlanKind kind = PlanKind::kAffineTorch;
  // kAffineTorch: scale, inv_scale, zero_point; kAffineTf: also nudged_min, nudged_max,
  // quant_zero; kLut: divisor, boundaries (lut_count of them), table; kFloat: scale.
  const float* scale = nullptr;
  const float* inv_scale = nullptr;
  const float* zero_point = nullptr;
  const float* nudged_min = nullptr;
  const float* nudged_max = nullptr;
  const float* quant_zero = nullptr;
  const float* divisor = nullptr;
  const float* boundaries = nullptr;
  const float* table = nullptr;
  int32_t boundary_count = 0;
  float qmin = 0.f, qmax = 0.f;                 // kAffineTorch; kLut: lo, hi
  float multiplier = 1.f;                       // kLut
  bool use_division = true;                     // kAffineTf
  float max = 0.f;                              // kFloat, kMx
  int32_t mbits = 0, emin_biased = 0, emax = 0;  // kFloat, kMx (emax: kMx)
  float tensor_scale = 0.f;                     // kNvfp4; kMx: the pre-scale (0: none)
};

// out = Q(in), both dense with the same strides (out may be in).
void fake_quant_forward(const DevicePlan& plan, const Layout& layout, DType dtype, const void* in,
                        void* out, cudaStream_t stream);

// ---- the trainable affine ops (symmetric_quant, uniform_quant) ----
// Their grids are computed on the device from the parameter tensors (nothing is read back), in
// `params`: 3 * count floats, scale then inv_scale then zero_point. The values are not checked
// (that would need them on the host): a threshold <= 0 or a range that gives no normal float32
// step makes NaN or infinite outputs, where the CPU kernels raise an error.

// delta = t' / steps with t' = max(t, min_threshold), rounded up to a power of two when
// power_of_two.
void symmetric_params(const void* threshold, DType dtype, int64_t count, double min_threshold,
                      bool power_of_two, double steps, float* params, cudaStream_t stream);
// The torch-profile uniform grid of [min, max] (ends swapped when they crossed), levels 2^n - 1.
void uniform_params(const void* min_range, const void* max_range, DType dtype, int64_t count,
                    double levels, bool scale_in_double, float* params, cudaStream_t stream);

// The number of partial sums per parameter set that affine_backward writes (a function of the
// layout only, so results do not depend on the device).
int64_t backward_splits(const Layout& layout);

// Fused backward of the affine fake quantizer: dx (unless null; in x's type and layout) and, per
// parameter set, `splits` partial sums of dy * dq/dscale and dy * dq/da in `partials` (double,
// 2 * channels * splits). x and dy: dense with the same strides, of type dtype.
void affine_backward(const DevicePlan& plan, const Layout& layout, DType dtype, const void* x,
                     const void* dy, void* dx, bool lsq, double* partials, int64_t splits,
                     cudaStream_t stream);

// dL/dthreshold from the partial sums: 0 where t < min_threshold, else
// grad_scale * d_scale / steps; written in the threshold's type.
void symmetric_param_grads(const double* partials, int64_t splits, const void* threshold,
                           DType dtype, int64_t count, double min_threshold, double grad_scale,
                           double steps, void* d_threshold, cudaStream_t stream);
// dL/dmin and dL/dmax from the partial sums, through the range adjustment; in the ranges' type.
void uniform_param_grads(const double* partials, int64_t splits, const void* min_range,
                         const void* max_range, DType dtype, int64_t count, double grad_scale,
                         double levels, void* d_min, void* d_max, cudaStream_t stream);

// The last launch error as text ("" when none), for the op layer's checks.
const char* last_launch_error();

}  // namespace qi::cuda
