// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// CUDA kernels of the qi ops: check the tensors, describe them to the launchers of launch.h and
// enqueue on the current stream. No call reads device memory back, except the first use of a
// packed plan that lives on the device (its words are read once and cached per storage and
// version): warm a module up before capturing it in a CUDA graph. Rules and formulas are the
// core's, as on the CPU.
#include <cmath>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "core/trainable_call.h"
#include "cuda/launch.h"
#include "kernels/scalar_ops.h"
#include "ops/common.h"
#include "qi/inferable_quantizers.h"
#include "qi/kernels.h"

namespace qi::torch {
namespace {

using namespace detail;
using cuda::DevicePlan;
using cuda::DType;
using cuda::Layout;
using cuda::PlanKind;

void check_floating_cuda(const at::Tensor& t, const char* op, const char* arg) {
  QI_TORCH_CHECK(t.defined(), op, ": ", arg, " must be a defined tensor");
  QI_TORCH_CHECK(t.is_cuda(), op, ": ", arg, " must be a CUDA tensor, got ", t.device());
  QI_TORCH_CHECK(t.layout() == at::kStrided, op, ": ", arg, " must be a strided tensor, got ",
                 t.layout());
  const auto s = t.scalar_type();
  QI_TORCH_CHECK(s == at::kFloat || s == at::kHalf || s == at::kBFloat16 || s == at::kDouble, op,
                 ": ", arg, " must be float32, float16, bfloat16 or float64, got ", s);
}

void check_same_device(const at::Tensor& t, const at::Tensor& x, const char* op, const char* arg) {
  check_floating_cuda(t, op, arg);
  QI_TORCH_CHECK(t.device() == x.device(), op, ": ", arg, " must be on ", x.device(), " as x, got ",
                 t.device());
}

DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kHalf: return DType::kHalf;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kDouble: return DType::kDouble;
    default: return DType::kFloat;
  }
}

// The kernels walk tensors in memory order: a dense one as it is, anything else as a copy.
at::Tensor dense(const at::Tensor& t) {
  return t.is_non_overlapping_and_dense() ? t : t.contiguous();
}

cudaStream_t stream_of(const at::Tensor& t) {
  return c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
}

void check_launch(const char* op) {
  const char* error = cuda::last_launch_error();
  TORCH_CHECK(error[0] == '\0', op, ": CUDA kernel launch failed: ", error);
}

// The layout of dense x for a plan's parameters along `axis` (normalized; nullopt: none).
Layout layout_of(const at::Tensor& x, std::optional<int64_t> axis,
                 const kernels::GroupLayout& groups) {
  Layout l;
  l.numel = x.numel();
  if (axis) {
    l.channels = x.size(*axis);
    l.channel_stride = x.stride(*axis);
  }
  if (groups.group_size > 0) {
    const int64_t ga = groups.group_axis < 0 ? groups.group_axis + x.dim() : groups.group_axis;
    l.group_size = groups.group_size;
    l.group_extent = x.size(ga);
    l.group_stride = x.stride(ga);
    l.group_count = (l.group_extent + l.group_size - 1) / l.group_size;
  }
  return l;
}

// ---- plans on the device -----------------------------------------------------------------------

// The DevicePlan of `plan` whose packed words (kernels::pack_plan) start at `words`: the arrays
// point into them (pack_plan's layout, in declaration order after the header).
DevicePlan device_plan(const kernels::Plan& plan, const int32_t* words) {
  const bool grouped = kernels::plan_groups(plan).group_size > 0;
  const float* w = reinterpret_cast<const float*>(words) + (grouped ? 4 : 2);
  const int64_t c = kernels::plan_channels(plan);
  DevicePlan d;
  d.kind = static_cast<PlanKind>(plan.index());
  std::visit(
      [&](const auto& p) {
        using T = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<T, kernels::AffineTorchPlan>) {
          d.qmin = p.qmin;
          d.qmax = p.qmax;
          d.scale = w + 2;
          d.inv_scale = w + 2 + c;
          d.zero_point = w + 2 + 2 * c;
        } else if constexpr (std::is_same_v<T, kernels::AffineTfPlan>) {
          d.use_division = p.use_division;
          d.scale = w + 1;
          d.inv_scale = w + 1 + c;
          d.nudged_min = w + 1 + 2 * c;
          d.nudged_max = w + 1 + 3 * c;
          d.quant_zero = w + 1 + 4 * c;
        } else if constexpr (std::is_same_v<T, kernels::FloatPlan>) {
          d.max = p.max;
          d.mbits = p.mbits;
          d.emin_biased = kernels::scalar::float_format_emin_biased(p.ebits);
          d.scale = w + 3;
        } else if constexpr (std::is_same_v<T, kernels::MxPlan>) {
          d.max = p.max;
          d.mbits = p.mbits;
          d.emin_biased = kernels::scalar::float_format_emin_biased(p.ebits);
          d.emax = p.emax;
          d.tensor_scale = p.tensor_scale;
        } else if constexpr (std::is_same_v<T, kernels::Nvfp4Plan>) {
          d.tensor_scale = p.tensor_scale;
        } else {
          const int64_t l = static_cast<int64_t>(p.lut.size());
          const int64_t b = static_cast<int64_t>(p.boundaries.size());
          d.multiplier = p.multiplier;
          d.qmin = p.lo;
          d.qmax = p.hi;
          d.boundary_count = static_cast<int32_t>(b);
          d.divisor = w + 5;
          d.boundaries = w + 5 + c + l;
          d.table = w + 5 + c + l + b;
        }
      },
      plan);
  return d;
}

bool same_values(const float* a, const std::vector<float>& b) {
  return b.empty() || std::memcmp(a, b.data(), b.size() * sizeof(float)) == 0;
}

// Whether device_plan's arrays over the host words hold the plan's own values: the offsets above
// are checked against pack_plan on every plan before it is used.
bool offsets_agree(const kernels::Plan& plan, const DevicePlan& d) {
  return std::visit(
      [&](const auto& p) {
        using T = std::decay_t<decltype(p)>;
        if constexpr (std::is_same_v<T, kernels::AffineTorchPlan>) {
          return same_values(d.scale, p.scale) && same_values(d.inv_scale, p.inv_scale) &&
                 same_values(d.zero_point, p.zero_point);
        } else if constexpr (std::is_same_v<T, kernels::AffineTfPlan>) {
          return same_values(d.scale, p.scale) && same_values(d.inv_scale, p.inv_scale) &&
                 same_values(d.nudged_min, p.nudged_min) &&
                 same_values(d.nudged_max, p.nudged_max) &&
                 same_values(d.quant_zero, p.quant_zero);
        } else if constexpr (std::is_same_v<T, kernels::FloatPlan>) {
          return same_values(d.scale, p.scale);
        } else if constexpr (std::is_same_v<T, kernels::LutPlan>) {
          return same_values(d.divisor, p.divisor) && same_values(d.boundaries, p.boundaries) &&
                 same_values(d.table, p.table);
        } else {
          return true;
        }
      },
      plan);
}

// A plan with its words in device memory.
struct ResidentPlan {
  kernels::Plan plan;
  at::Tensor words;  // int32, on the device
  DevicePlan device;
  // The packed-plan tensor's storage it was read from (none for a JSON text): while this weak
  // reference lives, no other storage can take that address, so the cache key stays unique.
  std::optional<c10::weak_intrusive_ptr<c10::StorageImpl>> source;
  bool valid() const { return !source || !source->expired(); }
};

std::shared_ptr<ResidentPlan> make_resident(kernels::Plan plan,
                                                  const std::vector<int32_t>& host_words,
                                                  const at::Device& device) {
  auto r = std::make_shared<ResidentPlan>();
  const DevicePlan on_host = device_plan(plan, host_words.data());
  TORCH_CHECK(offsets_agree(plan, on_host), "qi: internal error: the CUDA layer's packed-plan "
              "offsets disagree with pack_plan");
  r->words = at::empty({static_cast<int64_t>(host_words.size())},
                       at::TensorOptions().dtype(at::kInt).device(device));
  r->words.copy_(at::from_blob(const_cast<int32_t*>(host_words.data()),
                               {static_cast<int64_t>(host_words.size())}, at::kInt),
                 /*non_blocking=*/false);
  r->device = device_plan(plan, r->words.const_data_ptr<int32_t>());
  r->plan = std::move(plan);
  return r;
}

// A small cache with least-recently-used eviction, keyed by text.
class PlanCache {
 public:
  template <typename Make>
  std::shared_ptr<const ResidentPlan> get(const std::string& key, Make&& make) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = index_.find(key);
      if (it != index_.end()) {
        if (it->second->second->valid()) {
          order_.splice(order_.begin(), order_, it->second);
          return it->second->second;
        }
        order_.erase(it->second);  // its storage is gone: another tensor at that address
        index_.erase(it);
      }
    }
    std::shared_ptr<const ResidentPlan> value = make();  // unlocked: it copies to the device
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = index_.find(key);
    if (it != index_.end() && it->second->second->valid()) return it->second->second;
    if (it != index_.end()) {
      order_.erase(it->second);
      index_.erase(it);
    }
    order_.emplace_front(key, value);
    index_[key] = order_.begin();
    if (order_.size() > kCapacity) {
      index_.erase(order_.back().first);
      order_.pop_back();
    }
    return value;
  }

 private:
  static constexpr size_t kCapacity = 512;
  std::mutex mutex_;
  using Entry = std::pair<std::string, std::shared_ptr<const ResidentPlan>>;
  std::list<Entry> order_;
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
};

PlanCache& plan_cache() {
  static PlanCache cache;
  return cache;
}

// The resident plan of a quantizer's JSON text on x's device.
std::shared_ptr<const ResidentPlan> resident_of_json(
    c10::string_view json, const at::Device& device,
    std::shared_ptr<const BaseInferableQuantizer>* q) {
  *q = translate_errors([&] { return cached_inferable_quantizer(std::string(json)); });
  const std::string key = "json:" + std::to_string(device.index()) + ":" + std::string(json);
  return plan_cache().get(key, [&] {
    return make_resident((*q)->plan(), (*q)->packed_plan(), device);
  });
}

// The resident plan of a packed-plan tensor (a module's int32 buffer), keyed by its storage, its
// offset, size and version: an in-place update of the buffer makes a new entry. A buffer on the
// device is read back once per version.
std::shared_ptr<const ResidentPlan> resident_of_tensor(const at::Tensor& plan,
                                                       const at::Device& device, const char* op) {
  QI_TORCH_CHECK(plan.defined() && plan.scalar_type() == at::kInt && plan.dim() == 1 &&
                     (plan.is_cpu() || plan.device() == device),
                 op, ": plan must be a 1-D int32 tensor on the CPU or on ", device,
                 " (a quantizer's packed plan), got ",
                 plan.defined() ? plan.toString() : "undefined", " on ",
                 plan.defined() ? plan.device().str() : "no device");
  const std::string key =
      "tensor:" + std::to_string(device.index()) + ":" +
      std::to_string(reinterpret_cast<uintptr_t>(plan.storage().unsafeGetStorageImpl())) + ":" +
      std::to_string(plan.storage_offset()) + ":" + std::to_string(plan.numel()) + ":" +
      std::to_string(plan._version()) + ":" + std::to_string(plan.stride(0));
  const auto hit = plan_cache().get(key, [&] {
    const at::Tensor host = plan.to(at::kCPU).contiguous();
    std::vector<int32_t> words(host.const_data_ptr<int32_t>(),
                               host.const_data_ptr<int32_t>() + host.numel());
    kernels::Plan p = translate_errors(
        [&] { return kernels::unpack_plan(words.data(), static_cast<int64_t>(words.size())); });
    auto r = make_resident(std::move(p), words, device);
    r->source = plan.storage().getWeakStorageImpl();
    return r;
  });
  return hit;
}

// ---- inferable quantizers ----------------------------------------------------------------------

// y = Q(x) (a new tensor in x's dtype and layout) after check_plan_fits.
at::Tensor run_plan(const ResidentPlan& r, const char* what, const at::Tensor& x,
                    std::optional<int64_t> channel_axis, std::optional<int64_t> input_rank,
                    const char* op) {
  const auto axis = translate_errors([&] {
    return kernels::check_plan_fits(what, r.plan, channel_axis, input_rank, x.sizes().vec());
  });
  const at::Tensor xd = dense(x);
  at::Tensor y = at::empty_like(xd);
  const Layout l = layout_of(xd, axis, kernels::plan_groups(r.plan));
  cuda::fake_quant_forward(r.device, l, dtype_of(xd), xd.const_data_ptr(), y.mutable_data_ptr(),
                           stream_of(xd));
  check_launch(op);
  return y;
}

// The same into `out` (may be x itself: in place).
void run_plan_out(const ResidentPlan& r, const char* what, const at::Tensor& x,
                  std::optional<int64_t> channel_axis, std::optional<int64_t> input_rank,
                  at::Tensor& out, const char* op) {
  check_same_device(out, x, op, "out");
  QI_TORCH_CHECK(out.sizes() == x.sizes(), op, ": out sizes ", out.sizes(), " must equal x sizes ",
                 x.sizes());
  QI_TORCH_CHECK(out.scalar_type() == x.scalar_type(), op, ": out dtype ", out.scalar_type(),
                 " must equal x dtype ", x.scalar_type());
  const bool in_place = out.is_same(x) || (out.data_ptr() == x.data_ptr() &&
                                           out.strides() == x.strides());
  if (in_place && x.is_non_overlapping_and_dense()) {
    const auto axis = translate_errors([&] {
      return kernels::check_plan_fits(what, r.plan, channel_axis, input_rank, x.sizes().vec());
    });
    const Layout l = layout_of(x, axis, kernels::plan_groups(r.plan));
    cuda::fake_quant_forward(r.device, l, dtype_of(x), x.const_data_ptr(), out.mutable_data_ptr(),
                             stream_of(x));
    check_launch(op);
    return;
  }
  out.copy_(run_plan(r, what, x, channel_axis, input_rank, op));
}

std::optional<int64_t> json_axis(const BaseInferableQuantizer& q) {
  return q.per_channel() ? q.channel_axis() : std::nullopt;
}

at::Tensor fake_quant_cuda(const at::Tensor& x, c10::string_view quantizer) {
  const char* op = "qi::fake_quant";
  check_floating_cuda(x, op, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  std::shared_ptr<const BaseInferableQuantizer> q;
  const auto r = resident_of_json(quantizer, x.device(), &q);
  return run_plan(*r, q->class_name(), x, json_axis(*q), q->params().input_rank, op);
}

void fake_quant_out_cuda(const at::Tensor& x, c10::string_view quantizer, at::Tensor& out) {
  const char* op = "qi::fake_quant.out";
  check_floating_cuda(x, op, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  std::shared_ptr<const BaseInferableQuantizer> q;
  const auto r = resident_of_json(quantizer, x.device(), &q);
  run_plan_out(*r, q->class_name(), x, json_axis(*q), q->params().input_rank, out, op);
}

at::Tensor quantize_cuda(const at::Tensor& x, const at::Tensor& plan,
                         std::optional<int64_t> channel_axis, std::optional<int64_t> input_rank) {
  const char* op = "qi::quantize";
  check_floating_cuda(x, op, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  const auto r = resident_of_tensor(plan, x.device(), op);
  return run_plan(*r, op, x, channel_axis, input_rank, op);
}

void quantize_out_cuda(const at::Tensor& x, const at::Tensor& plan,
                       std::optional<int64_t> channel_axis, std::optional<int64_t> input_rank,
                       at::Tensor& out) {
  const char* op = "qi::quantize.out";
  check_floating_cuda(x, op, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  const auto r = resident_of_tensor(plan, x.device(), op);
  run_plan_out(*r, op, x, channel_axis, input_rank, out, op);
}

// ---- trainable quantizers ----------------------------------------------------------------------

// The grid of a trainable affine op, computed on the device: params holds scale, inv_scale and
// zero_point (3 x count floats), which `plan` points into.
struct DeviceGrid {
  at::Tensor params;
  DevicePlan plan;
};

DeviceGrid symmetric_grid_of(const at::Tensor& x, const at::Tensor& threshold,
                             const trainable::SymmetricQuantArgs& args) {
  const at::Tensor t = threshold.contiguous();
  const int64_t count = t.numel();
  DeviceGrid g;
  g.params = at::empty({3 * count}, x.options().dtype(at::kFloat));
  const double steps = std::ldexp(1.0, static_cast<int>(args.num_bits - (args.is_signed ? 1 : 0)));
  cuda::symmetric_params(t.const_data_ptr(), dtype_of(t), count, args.min_threshold,
                         args.power_of_two, steps, g.params.mutable_data_ptr<float>(),
                         stream_of(x));
  kernels::scalar::symmetric_grid(static_cast<int32_t>(args.num_bits), args.is_signed,
                                  &g.plan.qmin, &g.plan.qmax);
  const float* p = g.params.const_data_ptr<float>();
  g.plan.scale = p;
  g.plan.inv_scale = p + count;
  g.plan.zero_point = p + 2 * count;
  return g;
}

double levels_of(int64_t num_bits) { return std::ldexp(1.0, static_cast<int>(num_bits)) - 1; }

DeviceGrid uniform_grid_of(const at::Tensor& x, const at::Tensor& min_range,
                           const at::Tensor& max_range, const trainable::UniformQuantArgs& args) {
  const at::Tensor lo = min_range.contiguous();
  const at::Tensor hi = max_range.to(lo.scalar_type()).contiguous();
  const int64_t count = lo.numel();
  DeviceGrid g;
  g.params = at::empty({3 * count}, x.options().dtype(at::kFloat));
  const double levels = levels_of(args.num_bits);
  cuda::uniform_params(lo.const_data_ptr(), hi.const_data_ptr(), dtype_of(lo), count, levels,
                       args.activation, g.params.mutable_data_ptr<float>(), stream_of(x));
  g.plan.qmin = 0.f;
  g.plan.qmax = static_cast<float>(levels);
  const float* p = g.params.const_data_ptr<float>();
  g.plan.scale = p;
  g.plan.inv_scale = p + count;
  g.plan.zero_point = p + 2 * count;
  return g;
}

at::Tensor affine_forward(const at::Tensor& x, const DeviceGrid& g, std::optional<int64_t> axis,
                          const char* op) {
  const at::Tensor xd = dense(x);
  at::Tensor y = at::empty_like(xd);
  cuda::fake_quant_forward(g.plan, layout_of(xd, axis, {}), dtype_of(xd), xd.const_data_ptr(),
                           y.mutable_data_ptr(), stream_of(xd));
  check_launch(op);
  return y;
}

// A checked call of a trainable affine op on the device: its arguments, its checked call (axis,
// LSQ gradient scale) and its grid. The parameters must be on x's device.
template <typename Args>
struct DeviceCall {
  Args args;
  trainable::AffineCall call;
  DeviceGrid grid;
};

// Per-group parameters of the trainable ops run on the CPU only so far.
void check_no_groups(std::optional<int64_t> group_size, const char* op) {
  QI_TORCH_CHECK(!group_size, op, ": group_size is not supported on CUDA yet; per-group "
                 "trainable quantizers run on the CPU");
}

DeviceCall<trainable::SymmetricQuantArgs> symmetric_call(const char* op, const at::Tensor& x,
                                                         const at::Tensor& threshold,
                                                         trainable::SymmetricQuantArgs args) {
  check_no_groups(args.group_size, op);
  check_same_device(threshold, x, op, "threshold");
  DeviceCall<trainable::SymmetricQuantArgs> c{args, {}, {}};
  c.call = translate_errors([&] {
    return trainable::symmetric_quant_shape(op, x.sizes().vec(),
                                            static_cast<size_t>(threshold.numel()), args);
  });
  c.grid = symmetric_grid_of(x, threshold, args);
  return c;
}

DeviceCall<trainable::UniformQuantArgs> uniform_call(const char* op, const at::Tensor& x,
                                                     const at::Tensor& min_range,
                                                     const at::Tensor& max_range,
                                                     trainable::UniformQuantArgs args) {
  check_no_groups(args.group_size, op);
  check_same_device(min_range, x, op, "min_range");
  check_same_device(max_range, x, op, "max_range");
  DeviceCall<trainable::UniformQuantArgs> c{args, {}, {}};
  c.call = translate_errors([&] {
    return trainable::uniform_quant_shape(op, x.sizes().vec(),
                                          static_cast<size_t>(min_range.numel()),
                                          static_cast<size_t>(max_range.numel()), args);
  });
  c.grid = uniform_grid_of(x, min_range, max_range, args);
  return c;
}

at::Tensor symmetric_quant_cuda(const at::Tensor& x, const at::Tensor& threshold, int64_t n,
                                bool is_signed, std::optional<int64_t> channel_axis,
                                c10::string_view mode, double grad_scale,
                                std::optional<int64_t> grad_scale_axis, double min_threshold,
                                bool power_of_two, std::optional<int64_t> group_size,
                                int64_t group_axis) {
  const char* op = "qi::symmetric_quant";
  check_floating_cuda(x, op, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  const auto c = symmetric_call(op, x, threshold,
                                symmetric_args(n, is_signed, channel_axis, mode, grad_scale,
                                               grad_scale_axis, min_threshold, power_of_two,
                                               group_size, group_axis, op));
  return affine_forward(x, c.grid, c.call.axis, op);
}

at::Tensor uniform_quant_cuda(const at::Tensor& x, const at::Tensor& min_range,
                              const at::Tensor& max_range, int64_t n,
                              std::optional<int64_t> channel_axis, c10::string_view mode,
                              double grad_scale, bool activation,
                              std::optional<int64_t> grad_scale_axis,
                              std::optional<int64_t> group_size, int64_t group_axis) {
  const char* op = "qi::uniform_quant";
  check_floating_cuda(x, op, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  const auto c = uniform_call(
      op, x, min_range, max_range,
      uniform_args(n, channel_axis, mode, grad_scale, activation, grad_scale_axis, group_size,
                   group_axis, op));
  return affine_forward(x, c.grid, c.call.axis, op);
}

at::Tensor not_needed(const at::Tensor& like) { return at::empty({0}, like.options()); }

// The fused backward of both affine ops: dx (LSQ; STE passes dy, converted to x's dtype) and the
// per-channel partial sums of the parameter gradients, in `partials`. x and dy are used as they
// are when they share a dtype and a dense layout; otherwise through float32 (or contiguous)
// copies, and dx comes back in x's dtype and layout.
at::Tensor affine_backward_cuda(const at::Tensor& grad, const at::Tensor& x, const DeviceGrid& g,
                                std::optional<int64_t> axis, trainable::GradMode mode,
                                bool need_x, bool need_params, at::Tensor* partials,
                                int64_t* splits, const char* op) {
  const bool lsq = mode == trainable::GradMode::kLsq;
  if (need_params || (lsq && need_x)) {
    at::Tensor xu = x, gu = grad;
    if (xu.scalar_type() != gu.scalar_type()) {
      xu = xu.to(at::kFloat);
      gu = gu.to(at::kFloat);
    }
    if (!xu.is_non_overlapping_and_dense() || gu.strides() != xu.strides()) {
      xu = xu.contiguous();
      gu = gu.contiguous();
    }
    const Layout l = layout_of(xu, axis, {});
    *splits = cuda::backward_splits(l);
    *partials = at::empty({2 * l.channels * *splits}, x.options().dtype(at::kDouble));
    at::Tensor dx;
    if (lsq && need_x) dx = at::empty_like(xu);
    cuda::affine_backward(g.plan, l, dtype_of(xu), xu.const_data_ptr(), gu.const_data_ptr(),
                          dx.defined() ? dx.mutable_data_ptr() : nullptr, lsq,
                          partials->mutable_data_ptr<double>(), *splits, stream_of(x));
    check_launch(op);
    if (dx.defined()) {
      if (dx.scalar_type() == x.scalar_type() && dx.strides() == x.strides()) return dx;
      at::Tensor laid_out = at::empty_like(x);
      laid_out.copy_(dx);
      return laid_out;
    }
  }
  if (!need_x) return not_needed(x);
  return grad.to(x.scalar_type(), /*non_blocking=*/false, /*copy=*/true);
}

void check_grad(const at::Tensor& grad, const at::Tensor& x, const char* op) {
  check_floating_cuda(x, op, "x");
  check_same_device(grad, x, op, "grad");
  QI_TORCH_CHECK(grad.sizes() == x.sizes(), op, ": grad sizes ", grad.sizes(),
                 " must equal x sizes ", x.sizes());
}

std::tuple<at::Tensor, at::Tensor> symmetric_quant_backward_cuda(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& threshold, int64_t n,
    bool is_signed, std::optional<int64_t> channel_axis, c10::string_view mode, double grad_scale,
    std::optional<int64_t> grad_scale_axis, double min_threshold, bool power_of_two, bool need_x,
    bool need_threshold, std::optional<int64_t> group_size, int64_t group_axis) {
  const char* op = "qi::_symmetric_quant_backward";
  check_grad(grad, x, op);
  const c10::cuda::CUDAGuard guard(x.device());
  const auto c = symmetric_call(op, x, threshold,
                                symmetric_args(n, is_signed, channel_axis, mode, grad_scale,
                                               grad_scale_axis, min_threshold, power_of_two,
                                               group_size, group_axis, op));
  at::Tensor partials;
  int64_t splits = 0;
  at::Tensor dx = affine_backward_cuda(grad, x, c.grid, c.call.axis, c.args.mode, need_x,
                                       need_threshold, &partials, &splits, op);
  if (!need_threshold) return {dx, not_needed(threshold)};
  const at::Tensor t = threshold.contiguous();
  at::Tensor dt = at::empty({t.numel()}, t.options());
  const double steps = std::ldexp(1.0, static_cast<int>(n - (is_signed ? 1 : 0)));
  cuda::symmetric_param_grads(partials.const_data_ptr<double>(), splits, t.const_data_ptr(),
                              dtype_of(t), t.numel(), min_threshold, c.call.grad_scale, steps,
                              dt.mutable_data_ptr(), stream_of(x));
  check_launch(op);
  return {dx, dt.reshape(threshold.sizes())};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> uniform_quant_backward_cuda(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& min_range,
    const at::Tensor& max_range, int64_t n, std::optional<int64_t> channel_axis,
    c10::string_view mode, double grad_scale, bool activation,
    std::optional<int64_t> grad_scale_axis, bool need_x, bool need_range,
    std::optional<int64_t> group_size, int64_t group_axis) {
  const char* op = "qi::_uniform_quant_backward";
  check_grad(grad, x, op);
  const c10::cuda::CUDAGuard guard(x.device());
  const auto c = uniform_call(
      op, x, min_range, max_range,
      uniform_args(n, channel_axis, mode, grad_scale, activation, grad_scale_axis, group_size,
                   group_axis, op));
  at::Tensor partials;
  int64_t splits = 0;
  at::Tensor dx = affine_backward_cuda(grad, x, c.grid, c.call.axis, c.args.mode, need_x,
                                       need_range, &partials, &splits, op);
  if (!need_range) return {dx, not_needed(min_range), not_needed(max_range)};
  const at::Tensor lo = min_range.contiguous();
  const at::Tensor hi = max_range.to(lo.scalar_type()).contiguous();
  at::Tensor dmin = at::empty({lo.numel()}, lo.options());
  at::Tensor dmax = at::empty({lo.numel()}, lo.options());
  cuda::uniform_param_grads(partials.const_data_ptr<double>(), splits, lo.const_data_ptr(),
                            hi.const_data_ptr(), dtype_of(lo), lo.numel(), c.call.grad_scale,
                            levels_of(n), dmin.mutable_data_ptr(), dmax.mutable_data_ptr(),
                            stream_of(x));
  check_launch(op);
  return {dx, dmin.reshape(min_range.sizes()),
          dmax.to(max_range.scalar_type()).reshape(max_range.sizes())};
}

// The formats' trainable op runs on the CPU only so far: on CUDA tensors it says so (a
// ValueError), rather than the dispatcher's NotImplementedError.
[[noreturn]] void refuse_format_quant(const char* op) {
  QI_TORCH_CHECK(false, op, ": format_quant is not supported on CUDA yet; the FLOAT, MX and "
                 "NVFP4 trainable quantizers run on the CPU");
}

at::Tensor format_quant_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             c10::string_view, c10::string_view, std::optional<int64_t>,
                             c10::string_view, double, std::optional<int64_t>,
                             std::optional<int64_t>, int64_t, std::optional<double>) {
  refuse_format_quant("qi::format_quant");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> format_quant_backward_cuda(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, c10::string_view,
    c10::string_view, std::optional<int64_t>, c10::string_view, double, std::optional<int64_t>,
    std::optional<int64_t>, int64_t, bool, bool, std::optional<double>) {
  refuse_format_quant("qi::_format_quant_backward");
}

}  // namespace
}  // namespace qi::torch

TORCH_LIBRARY_IMPL(qi, CUDA, m) {
  m.impl("fake_quant", &qi::torch::fake_quant_cuda);
  m.impl("fake_quant.out", &qi::torch::fake_quant_out_cuda);
  m.impl("quantize", &qi::torch::quantize_cuda);
  m.impl("quantize.out", &qi::torch::quantize_out_cuda);
  m.impl("symmetric_quant", &qi::torch::symmetric_quant_cuda);
  m.impl("_symmetric_quant_backward", &qi::torch::symmetric_quant_backward_cuda);
  m.impl("uniform_quant", &qi::torch::uniform_quant_cuda);
  m.impl("_uniform_quant_backward", &qi::torch::uniform_quant_backward_cuda);
  m.impl("format_quant", &qi::torch::format_quant_cuda);
  m.impl("_format_quant_backward", &qi::torch::format_quant_backward_cuda);
}
