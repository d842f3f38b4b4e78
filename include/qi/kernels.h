// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Low-level fake-quantization kernels: per-channel float parameters ("plans") and the drivers
// that apply them to strided views with SIMD (Highway, ISA chosen at run time) and threads
// (qi::parallel_for). Quantizer classes build plans; most users never call this directly.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "qi/tensor_view.h"

namespace qi::kernels {

// Per-group granularity (docs/numerics.md). A plan with group_size > 0 holds one parameter set
// per (channel, group): the set of element x is c * G + g, with c its index along the channel axis
// (0 without one), g = i / group_size for its index i along group_axis, and G = ceil(S /
// group_size) groups along that axis of size S (the last group may be shorter). Its "channels"
// (plan_channels) are those C * G sets. group_size 0: no groups.
// whole: the group axis must hold whole groups (NVFP4's stored block scales: blocks of 16).
struct GroupLayout {
  int64_t group_size = 0;
  int64_t group_axis = -1;  // negative counts from the end
  bool whole = false;
};

// torch profile, per channel c:
//   q = zero_point[c] + nearbyint(x * inv_scale[c])      (float32, round half to even)
//   y = (clamp(q, qmin, qmax) - zero_point[c]) * scale[c]
// inv_scale is 1.0f / scale computed in float32, as ATen does.
struct AffineTorchPlan {
  std::vector<float> scale, inv_scale, zero_point;
  float qmin = 0.f, qmax = 0.f;
  GroupLayout groups;
};

// tf profile (TensorFlow fake_quant_with_min_max_vars), per channel c:
//   c = clamp(x, nudged_min, nudged_max) - nudged_min
//   v = use_division ? c / scale : c * inv_scale      (TF divides per tensor, multiplies per channel)
//   y = floor(v - quant_zero + 0.5f) * scale
struct AffineTfPlan {
  std::vector<float> scale, inv_scale, nudged_min, nudged_max, quant_zero;
  bool use_division = true;
  GroupLayout groups;
};

// LUT (non-uniform) quantizer, per channel c (docs/numerics.md):
//   v = clamp((x / divisor[c]) * multiplier, lo, hi)      divisor = threshold + eps
//   j = first argmin_j |v - lut[j]|   (float32 distances, ties to the first entry)
//   y = (lut[j] / multiplier) * threshold[c]
// The argmin is a monotone step function of v, so it is evaluated as k = the number of
// `boundaries` <= v, an index into the distinct LUT values in ascending order; the boundaries
// are found once, by bisection over float32 values with the brute-force search itself, so the
// result is the brute force's bit for bit. table[c * (boundaries.size() + 1) + k] is the output.
struct LutPlan {
  std::vector<float> divisor;
  std::vector<float> lut;         // as given
  std::vector<float> boundaries;  // ascending
  std::vector<float> table;
  float multiplier = 1.f, lo = 0.f, hi = 0.f;
  GroupLayout groups;
};

// Low-precision float element formats: a sign, `ebits` exponent bits of bias 2^(ebits-1) - 1,
// `mbits` mantissa bits and subnormals; `max` is the largest finite value (docs/numerics.md).
// E4M3 is OCP FP8 E4M3 in its "fn" variant (torch.float8_e4m3fn: no infinities, max 448), E5M2
// is OCP FP8 E5M2 (torch.float8_e5m2), E3M2 and E2M3 are the MX FP6 element types and E2M1 the
// MX FP4 element type (no infinities or NaN).
struct FloatFormat {
  const char* name;
  int32_t ebits, mbits;
  float max;
};
inline constexpr FloatFormat kFloatFormats[] = {
    {"E4M3", 4, 3, 448.f}, {"E5M2", 5, 2, 57344.f}, {"E3M2", 3, 2, 28.f},
    {"E2M3", 2, 3, 7.5f},  {"E2M1", 2, 1, 6.f},
};
// The format of a name ("E4M3", ...); null for an unknown name.
const FloatFormat* find_float_format(const std::string& name);
// "E4M3, E5M2, E3M2, E2M3, E2M1": the names, for messages.
std::string float_format_names();

// Scaled low-precision float (FLOAT), per channel c:
//   v = clamp(x / scale[c], -max, max)                (float32 division)
//   y = round_to_format(v) * scale[c]                 (round half to even, subnormals kept)
// NaN stays NaN; +/-Inf become +/-max * scale; the sign of zero is kept.
struct FloatPlan {
  std::vector<float> scale;
  int32_t ebits = 4, mbits = 3;
  float max = 448.f;
  GroupLayout groups;
};

// The element types of MX: the float formats and INT8, two's complement with 6 fraction bits
// (k / 64 for k in [-127, 127]: the symmetric range; -2 is never produced), written as a format
// of ebits 0 whose spacing is 2^-6 everywhere.
inline constexpr FloatFormat kMxInt8{"INT8", 0, 6, 127.f / 64.f};
// The MX element format of a name (the float formats and "INT8"); null for an unknown name.
const FloatFormat* find_mx_format(const std::string& name);
std::string mx_format_names();

// OCP Microscaling (MX), as torchao 0.11's to_mx with the FLOOR scale mode followed by its
// dequantization to float32. Per block of groups.group_size elements along groups.group_axis
// (the axis holds whole blocks):
//   amax = max |x| over the block                   (a NaN makes the whole block NaN)
//   E = the float32 exponent of amax (-126 for amax 0, -127 for subnormals, 128 for inf)
//   e = clamp(E - emax, -127, 128)                   (128, the E8M0 NaN: the block is NaN)
//   y = round(clamp(x / max(2^e, 2^-126), -max, max)) * 2^e
// with round() to the element format (FloatPlan's rounding) and emax = floor(log2(max)), the
// exponent of the format's largest power of two (E4M3 8, E5M2 15, E3M2 4, E2M3 2, E2M1 2,
// INT8 0). The divisor's floor at 2^-126 (while 2^-127 multiplies) is torchao's.
// tensor_scale p > 0 (0: none) pre-scales the tensor: u = x / p (float32), the blocks above on u,
// and y = MX(u) * p (float32); the trainable MX quantizers learn p.
struct MxPlan {
  int32_t ebits = 4, mbits = 3;  // ebits 0: INT8
  float max = 448.f;
  int32_t emax = 8;
  GroupLayout groups;
  float tensor_scale = 0.f;
};

// NVFP4 (NVIDIA's FP4): E2M1 elements in blocks of 16 (groups) along an axis, with an FP8 E4M3
// block scale and an optional float32 tensor scale t (0: none). Per block:
//   s = e4m3(clamp((amax / 6) / t, 2^-6, 448))      (without t: e4m3(clamp(amax / 6, ...)))
//   total = t * s (or s);  y = e2m1(clamp(x / total, -6, 6)) * total
// e4m3() and e2m1() round half to even; a NaN makes the whole block NaN.
struct Nvfp4Plan {
  float tensor_scale = 0.f;
  GroupLayout groups;
};
inline constexpr int64_t kNvfp4BlockSize = 16;

using Plan = std::variant<AffineTorchPlan, AffineTfPlan, LutPlan, FloatPlan, MxPlan, Nvfp4Plan>;

// Whether the plan computes its scales from the data, per block (MX, NVFP4), rather than
// holding them per channel or group.
bool plan_is_block_scaled(const Plan& plan);

// Number of channels a plan holds (1 for a per-tensor or block-scaled plan; channels x groups for
// a grouped one).
int64_t plan_channels(const Plan& plan);
// The plan's group layout (group_size 0: none).
const GroupLayout& plan_groups(const Plan& plan);

// A plan as one array of 32-bit words (float32 bit patterns and integers): the form framework
// layers keep as integer tensors (buffers that move with the model between devices and that
// casts of floating-point state leave alone) and pass to the kernels. Layout: word 0 the format
// tag (kPackedPlanTag + the plan's variant index), word 1 the channel count C, then the plan's
// scalars and arrays in declaration order (arrays of variable length after their length). A
// grouped plan has kPackedGroupedFlag in its tag and group_size, group_axis after C, and
// kPackedWholeFlag too when its axis must hold whole groups.
inline constexpr int32_t kPackedPlanTag = 0x51490100;  // "QI", version 1, kind in the low byte
inline constexpr int32_t kPackedGroupedFlag = 0x80;
inline constexpr int32_t kPackedWholeFlag = 0x40;
std::vector<int32_t> pack_plan(const Plan& plan);
// The plan of pack_plan's words. Throws qi::Error for anything pack_plan cannot have written
// (wrong tag, sizes that do not add up, non-finite or non-positive scales).
Plan unpack_plan(const int32_t* words, int64_t count);

// Applies `plan` to `in`, writing `out` (same sizes; may be the very same view for in-place
// operation, but must not otherwise overlap). channel_axis: std::nullopt for per-tensor, else a
// normalized axis in [0, in.dim()) with in.sizes[axis] == plan_channels(plan) (grouped plans:
// times the number of groups along the plan's group axis, a different axis).
// Preconditions are checked by the caller (the quantizer classes); violating them is undefined.
// NaN inputs stay NaN; +/-Inf clamp to the ends of the grid.
void fake_quant_forward(const Plan& plan, ConstTensorView in, TensorView out,
                        std::optional<int64_t> channel_axis);

// Whether a tensor of these sizes fits the plan, with messages starting with `what`: rank ==
// input_rank when given, a per-channel plan's channel count equal to the size of the tensor
// along channel_axis (negative: from the end; ignored for a one-channel plan that is not
// grouped), a grouped plan's group axis within the rank and apart from the channel axis and its
// count equal to channels x groups; a block-scaled plan's axis within the rank and holding whole
// blocks. Returns the normalized channel axis fake_quant_forward takes. Throws qi::Error.
std::optional<int64_t> check_plan_fits(const char* what, const Plan& plan,
                                       std::optional<int64_t> channel_axis,
                                       std::optional<int64_t> input_rank, const Shape& sizes);

// fake_quant_forward after the checks of BaseInferableQuantizer::apply, with messages starting
// with `what`: equal sizes, check_plan_fits, non-negative strides, an output without stride-0
// dimensions that is the input itself (in place) or does not overlap it. Throws qi::Error.
void checked_fake_quant(const char* what, const Plan& plan, std::optional<int64_t> channel_axis,
                        std::optional<int64_t> input_rank, ConstTensorView in, TensorView out);

// Name of the SIMD target the dispatcher picked on this machine (e.g. "AVX3", "AVX2").
std::string simd_target_name();

// Restricts dynamic dispatch to one compiled target, for conformance tests on every ISA.
// Returns the list of targets compiled in and supported here.
std::vector<std::string> supported_simd_targets();
// Forces the named target ("" restores the best). Throws qi::Error for an unknown name.
void force_simd_target(const std::string& name);

}  // namespace qi::kernels
