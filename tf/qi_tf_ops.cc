// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// TensorFlow custom ops over qi::core (float32, CPU). Forward ops run the core's kernels; the
// *Grad ops are the backward passes that quantizers_infrastructure.keras registers as gradients
// (tf.RegisterGradient). Core errors (qi::Error) become InvalidArgument with the same message;
// shape functions run the same checks, so graph construction (tf.function, Keras functional
// models) reports them as ValueError.
//
//   QiFakeQuant(x; quantizer)                      inferable quantizer from its to_json() text
//   QiSymmetricQuant(x, threshold; ...)            trainable symmetric/POT (STE or LSQ)
//   QiUniformQuant(x, min_range, max_range; ...)   trainable uniform (STE or LSQ)
//   QiSoftRound(w, alpha, delta, offset; ...)      soft rounding (AdaRound-style)
//   QiSoftRoundInitAlpha, QiSoftRoundRegularization and the *Grad ops.
#include <cmath>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"

#include "kernels/plan.h"
#include "qi/error.h"
#include "qi/inferable_quantizers.h"
#include "qi/tensor_view.h"
#include "qi/trainable_math.h"

namespace qi::tf_ops {
namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

Status invalid(const std::string& message) {
  return ::tensorflow::errors::InvalidArgument(message);
}

// Runs fn, returning qi::Error (and any other exception) as InvalidArgument.
template <typename Fn>
Status guarded(Fn&& fn) {
  try {
    fn();
  } catch (const std::exception& e) {
    return invalid(e.what());
  }
  return Status();
}

Shape sizes_of(const Tensor& t) {
  Shape s(static_cast<size_t>(t.dims()));
  for (int i = 0; i < t.dims(); ++i) s[static_cast<size_t>(i)] = t.dim_size(i);
  return s;
}
// TensorFlow tensors are dense row-major.
ConstTensorView const_view(const Tensor& t) {
  return ConstTensorView(t.NumElements() ? t.flat<float>().data() : nullptr, sizes_of(t));
}
TensorView mutable_view(Tensor* t) {
  return TensorView(t->NumElements() ? t->flat<float>().data() : nullptr, sizes_of(*t));
}
std::vector<double> values_of(const Tensor& t) {
  const auto flat = t.flat<float>();
  return std::vector<double>(flat.data(), flat.data() + flat.size());
}

// ---- inferable quantizers -------------------------------------------------------------------

// Parsed quantizers by their JSON text: parsing happens once per distinct quantizer.
std::shared_ptr<const BaseInferableQuantizer> cached_quantizer(const std::string& json) {
  static std::mutex mutex;
  static std::unordered_map<std::string, std::shared_ptr<const BaseInferableQuantizer>> cache;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(json);
  if (it != cache.end()) return it->second;
  std::shared_ptr<const BaseInferableQuantizer> q = inferable_quantizer_from_json(json);
  if (cache.size() > 4096) cache.clear();  // bound memory for programs that make many
  cache.emplace(json, q);
  return q;
}

// The core's own checks of a tensor against a quantizer (rank, channel axis, channel count), run
// at graph construction so that they surface as ValueError with the core's message. The view has
// the known sizes (an unknown channel dimension takes the quantizer's count, other unknown ones 1)
// and no data: apply() checks the shape first, then refuses the null data, which means the shape
// passed.
Status check_shape(InferenceContext* c, const BaseInferableQuantizer& q, ShapeHandle shape) {
  if (!c->RankKnown(shape)) return Status();
  const int64_t rank = c->Rank(shape);
  std::optional<int64_t> axis;
  Status s = guarded([&] {
    axis = q.num_channels() == 1 ? std::nullopt : q.resolve_channel_axis(rank);
  });
  if (!s.ok()) return s;
  Shape sizes(static_cast<size_t>(rank), 1);
  for (int64_t i = 0; i < rank; ++i) {
    const int64_t d = c->Value(c->Dim(shape, i));
    if (d != InferenceContext::kUnknownDim) sizes[static_cast<size_t>(i)] = d;
    else if (axis && *axis == i) sizes[static_cast<size_t>(i)] = q.num_channels();
  }
  try {
    q.apply(ConstTensorView(nullptr, sizes), TensorView(nullptr, sizes));
  } catch (const std::exception& e) {
    if (std::string(e.what()).find("data must not be null") == std::string::npos)
      return invalid(e.what());
  }
  return Status();
}

REGISTER_OP("QiFakeQuant")
    .Input("x: float")
    .Output("y: float")
    .Attr("quantizer: string")
    .SetShapeFn([](InferenceContext* c) -> Status {
      std::string json;
      TF_RETURN_IF_ERROR(c->GetAttr("quantizer", &json));
      std::shared_ptr<const BaseInferableQuantizer> q;
      TF_RETURN_IF_ERROR(guarded([&] { q = cached_quantizer(json); }));
      TF_RETURN_IF_ERROR(check_shape(c, *q, c->input(0)));
      c->set_output(0, c->input(0));
      return Status();
    })
    .Doc("y = Q(x) for the inferable quantizer Q given by its to_json() text.");

class QiFakeQuantOp : public OpKernel {
 public:
  explicit QiFakeQuantOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::string json;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("quantizer", &json));
    OP_REQUIRES_OK(ctx, guarded([&] { quantizer_ = cached_quantizer(json); }));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, guarded([&] { quantizer_->apply(const_view(x), mutable_view(y)); }));
  }

 private:
  std::shared_ptr<const BaseInferableQuantizer> quantizer_;
};
REGISTER_KERNEL_BUILDER(Name("QiFakeQuant").Device(::tensorflow::DEVICE_CPU), QiFakeQuantOp);

// ---- trainable affine quantizers --------------------------------------------------------------

// Attributes shared by the trainable ops: the channel axis (has_channel_axis false: per tensor)
// and, for the affine ones, num_bits, the gradient mode and the LSQ gradient scale.
struct AxisAttrs {
  bool has_axis = false;
  int64_t axis = 0;

  Status read(OpKernelConstruction* ctx) {
    TF_RETURN_IF_ERROR(ctx->GetAttr("has_channel_axis", &has_axis));
    return ctx->GetAttr("channel_axis", &axis);
  }
  // The normalized axis for a tensor of `sizes`, checking the parameter count; a single value
  // broadcasts over every channel (per-tensor arithmetic).
  Status resolve(const char* op, const Shape& sizes, int64_t count, const char* arg,
                 std::optional<int64_t>* out) const {
    *out = std::nullopt;
    if (!has_axis) {
      if (count != 1)
        return invalid(str_cat(op, ": ", arg,
                               " must hold one value when channel_axis is None, got ", count));
      return Status();
    }
    const int64_t r = static_cast<int64_t>(sizes.size());
    if (axis < -r || axis >= r)
      return invalid(str_cat(op, ": channel_axis must be in [", -r, ", ", r,
                             ") for a tensor of rank ", r, ", got ", axis));
    const int64_t a = axis < 0 ? axis + r : axis;
    if (count != 1 && count != sizes[static_cast<size_t>(a)])
      return invalid(str_cat(op, ": ", arg, " holds ", count, " values but the tensor has ",
                             sizes[static_cast<size_t>(a)], " channels along channel_axis ", axis));
    if (count != 1) *out = a;
    return Status();
  }
};

struct AffineAttrs : AxisAttrs {
  int64_t num_bits = 8;
  trainable::GradMode mode = trainable::GradMode::kSte;

  Status read(OpKernelConstruction* ctx, const char* op) {
    TF_RETURN_IF_ERROR(AxisAttrs::read(ctx));
    TF_RETURN_IF_ERROR(ctx->GetAttr("num_bits", &num_bits));
    if (num_bits < 2 || num_bits > 16)
      return invalid(str_cat(op, ": num_bits must be in [2, 16], got ", num_bits));
    std::string m;
    TF_RETURN_IF_ERROR(ctx->GetAttr("mode", &m));
    if (m == "ste") {
      mode = trainable::GradMode::kSte;
    } else if (m == "lsq") {
      mode = trainable::GradMode::kLsq;
    } else {
      return invalid(str_cat(op, ": mode must be \"ste\" or \"lsq\", got \"", m, "\""));
    }
    return Status();
  }
};

Status symmetric_plan(const char* op, const std::vector<double>& t, int64_t n, bool s,
                      kernels::AffineTorchPlan* plan) {
  return guarded([&] { *plan = trainable::checked_symmetric_plan(op, t, n, s); });
}

Status uniform_plan(const char* op, const std::vector<double>& lo, const std::vector<double>& hi,
                    int64_t n, bool activation, kernels::AffineTorchPlan* plan) {
  return guarded([&] { *plan = trainable::checked_uniform_plan(op, lo, hi, n, activation); });
}

// Output shape = input 0's shape.
Status same_as_first(InferenceContext* c) {
  c->set_output(0, c->input(0));
  return Status();
}

#define QI_AFFINE_ATTRS                                                                         \
  Attr("num_bits: int").Attr("has_channel_axis: bool = false").Attr("channel_axis: int = 0")    \
      .Attr("mode: string = 'ste'")

// grad_scale (LSQ's gradient scale of the threshold, a float64 scalar) is an input rather than an
// attribute because TensorFlow's float attributes are 32-bit; the forward does not read it.
REGISTER_OP("QiSymmetricQuant")
    .Input("x: float")
    .Input("threshold: float")
    .Input("grad_scale: double")
    .Output("y: float")
    .Attr("is_signed: bool = true")
    .QI_AFFINE_ATTRS
    .SetShapeFn(same_as_first)
    .Doc("Trainable symmetric fake quantizer (torch-profile numerics): delta = t / 2^(n - s).");

REGISTER_OP("QiSymmetricQuantGrad")
    .Input("grad: float")
    .Input("x: float")
    .Input("threshold: float")
    .Input("grad_scale: double")
    .Output("dx: float")
    .Output("dthreshold: float")
    .Attr("is_signed: bool = true")
    .QI_AFFINE_ATTRS
    .SetShapeFn([](InferenceContext* c) -> Status {
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(2));
      return Status();
    });

class QiSymmetricQuantOp : public OpKernel {
 public:
  explicit QiSymmetricQuantOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.read(ctx, "QiSymmetricQuant"));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("is_signed", &is_signed_));
  }
  void Compute(OpKernelContext* ctx) override {
    const char* op = "QiSymmetricQuant";
    const Tensor& x = ctx->input(0);
    const auto t = values_of(ctx->input(1));
    std::optional<int64_t> axis;
    OP_REQUIRES_OK(ctx, attrs_.resolve(op, sizes_of(x), static_cast<int64_t>(t.size()),
                                       "threshold", &axis));
    kernels::AffineTorchPlan plan;
    OP_REQUIRES_OK(ctx, symmetric_plan(op, t, attrs_.num_bits, is_signed_, &plan));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, guarded([&] {
      kernels::fake_quant_forward(plan, const_view(x), mutable_view(y), axis);
    }));
  }

 private:
  AffineAttrs attrs_;
  bool is_signed_ = true;
};
REGISTER_KERNEL_BUILDER(Name("QiSymmetricQuant").Device(::tensorflow::DEVICE_CPU),
                        QiSymmetricQuantOp);

class QiSymmetricQuantGradOp : public OpKernel {
 public:
  explicit QiSymmetricQuantGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.read(ctx, "QiSymmetricQuantGrad"));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("is_signed", &is_signed_));
  }
  void Compute(OpKernelContext* ctx) override {
    const char* op = "QiSymmetricQuantGrad";
    const Tensor& grad = ctx->input(0);
    const Tensor& x = ctx->input(1);
    const Tensor& threshold = ctx->input(2);
    OP_REQUIRES(ctx, ctx->input(3).NumElements() == 1,
                invalid(str_cat(op, ": grad_scale must be a scalar")));
    const double grad_scale = ctx->input(3).flat<double>()(0);
    OP_REQUIRES(ctx, grad.shape() == x.shape(),
                invalid(str_cat(op, ": grad shape ", grad.shape().DebugString(),
                                " must equal x shape ", x.shape().DebugString())));
    const auto t = values_of(threshold);
    std::optional<int64_t> axis;
    OP_REQUIRES_OK(ctx, attrs_.resolve(op, sizes_of(x), static_cast<int64_t>(t.size()),
                                       "threshold", &axis));
    kernels::AffineTorchPlan plan;
    OP_REQUIRES_OK(ctx, symmetric_plan(op, t, attrs_.num_bits, is_signed_, &plan));
    const bool ste = attrs_.mode == trainable::GradMode::kSte;
    // STE passes dy through unchanged (ste_round and ste_clip).
    TensorView dx_view;
    if (ste) {
      ctx->set_output(0, grad);
    } else {
      Tensor* dx = nullptr;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
      dx_view = mutable_view(dx);
    }
    trainable::AffineParamGrads g;
    OP_REQUIRES_OK(ctx, guarded([&] {
      g = trainable::affine_backward(plan, const_view(x), const_view(grad), dx_view, axis,
                                     attrs_.mode);
    }));
    const auto dts = trainable::symmetric_threshold_grad(g, attrs_.num_bits, is_signed_, grad_scale);
    Tensor* dt = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, threshold.shape(), &dt));
    auto flat = dt->flat<float>();
    for (int64_t c = 0; c < flat.size(); ++c) flat(c) = static_cast<float>(dts[static_cast<size_t>(c)]);
  }

 private:
  AffineAttrs attrs_;
  bool is_signed_ = true;
};
REGISTER_KERNEL_BUILDER(Name("QiSymmetricQuantGrad").Device(::tensorflow::DEVICE_CPU),
                        QiSymmetricQuantGradOp);

REGISTER_OP("QiUniformQuant")
    .Input("x: float")
    .Input("min_range: float")
    .Input("max_range: float")
    .Input("grad_scale: double")
    .Output("y: float")
    .Attr("activation: bool = false")
    .QI_AFFINE_ATTRS
    .SetShapeFn(same_as_first)
    .Doc("Trainable uniform fake quantizer (torch-profile numerics, non-clamping range "
         "adjustment).");

REGISTER_OP("QiUniformQuantGrad")
    .Input("grad: float")
    .Input("x: float")
    .Input("min_range: float")
    .Input("max_range: float")
    .Input("grad_scale: double")
    .Output("dx: float")
    .Output("dmin: float")
    .Output("dmax: float")
    .Attr("activation: bool = false")
    .QI_AFFINE_ATTRS
    .SetShapeFn([](InferenceContext* c) -> Status {
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(2));
      c->set_output(2, c->input(3));
      return Status();
    });

class QiUniformQuantOp : public OpKernel {
 public:
  explicit QiUniformQuantOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.read(ctx, "QiUniformQuant"));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("activation", &activation_));
  }
  void Compute(OpKernelContext* ctx) override {
    const char* op = "QiUniformQuant";
    const Tensor& x = ctx->input(0);
    const auto lo = values_of(ctx->input(1));
    const auto hi = values_of(ctx->input(2));
    std::optional<int64_t> axis;
    OP_REQUIRES_OK(ctx, attrs_.resolve(op, sizes_of(x), static_cast<int64_t>(lo.size()),
                                       "min_range", &axis));
    kernels::AffineTorchPlan plan;
    OP_REQUIRES_OK(ctx, uniform_plan(op, lo, hi, attrs_.num_bits, activation_, &plan));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, guarded([&] {
      kernels::fake_quant_forward(plan, const_view(x), mutable_view(y), axis);
    }));
  }

 private:
  AffineAttrs attrs_;
  bool activation_ = false;
};
REGISTER_KERNEL_BUILDER(Name("QiUniformQuant").Device(::tensorflow::DEVICE_CPU), QiUniformQuantOp);

class QiUniformQuantGradOp : public OpKernel {
 public:
  explicit QiUniformQuantGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.read(ctx, "QiUniformQuantGrad"));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("activation", &activation_));
  }
  void Compute(OpKernelContext* ctx) override {
    const char* op = "QiUniformQuantGrad";
    const Tensor& grad = ctx->input(0);
    const Tensor& x = ctx->input(1);
    const Tensor& min_range = ctx->input(2);
    const Tensor& max_range = ctx->input(3);
    OP_REQUIRES(ctx, ctx->input(4).NumElements() == 1,
                invalid(str_cat(op, ": grad_scale must be a scalar")));
    const double grad_scale = ctx->input(4).flat<double>()(0);
    OP_REQUIRES(ctx, grad.shape() == x.shape(),
                invalid(str_cat(op, ": grad shape ", grad.shape().DebugString(),
                                " must equal x shape ", x.shape().DebugString())));
    const auto lo = values_of(min_range);
    const auto hi = values_of(max_range);
    std::optional<int64_t> axis;
    OP_REQUIRES_OK(ctx, attrs_.resolve(op, sizes_of(x), static_cast<int64_t>(lo.size()),
                                       "min_range", &axis));
    kernels::AffineTorchPlan plan;
    OP_REQUIRES_OK(ctx, uniform_plan(op, lo, hi, attrs_.num_bits, activation_, &plan));
    const bool ste = attrs_.mode == trainable::GradMode::kSte;
    TensorView dx_view;
    if (ste) {
      ctx->set_output(0, grad);
    } else {
      Tensor* dx = nullptr;
      OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
      dx_view = mutable_view(dx);
    }
    trainable::AffineParamGrads g;
    OP_REQUIRES_OK(ctx, guarded([&] {
      g = trainable::affine_backward(plan, const_view(x), const_view(grad), dx_view, axis,
                                     attrs_.mode);
    }));
    Tensor* dmin = nullptr;
    Tensor* dmax = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, min_range.shape(), &dmin));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, max_range.shape(), &dmax));
    auto a = dmin->flat<float>();
    auto b = dmax->flat<float>();
    const auto r = trainable::uniform_range_grads(g, lo, hi, attrs_.num_bits, grad_scale);
    for (size_t c = 0; c < r.size(); ++c) {
      a(static_cast<int64_t>(c)) = static_cast<float>(r[c].d_min);
      b(static_cast<int64_t>(c)) = static_cast<float>(r[c].d_max);
    }
  }

 private:
  AffineAttrs attrs_;
  bool activation_ = false;
};
REGISTER_KERNEL_BUILDER(Name("QiUniformQuantGrad").Device(::tensorflow::DEVICE_CPU),
                        QiUniformQuantGradOp);

// ---- soft rounding ------------------------------------------------------------------------------

Status soft_plan(const char* op, const Tensor& delta, const Tensor* offset, float qmin, float qmax,
                 trainable::SoftRoundingPlan* p) {
  const auto d = values_of(delta);
  const auto o = offset != nullptr && offset->NumElements() > 0 ? values_of(*offset)
                                                                : std::vector<double>{};
  return guarded([&] { *p = trainable::soft_rounding_plan(d, o, qmin, qmax); });
}

REGISTER_OP("QiSoftRound")
    .Input("w: float")
    .Input("alpha: float")
    .Input("delta: float")
    .Input("offset: float")
    .Output("q: float")
    .Attr("qmin: float")
    .Attr("qmax: float")
    .Attr("has_channel_axis: bool = false")
    .Attr("channel_axis: int = 0")
    .Attr("training: bool = true")
    .SetShapeFn(same_as_first)
    .Doc("Soft rounding: q = delta * (clip(floor((w - offset) / delta) + h(alpha), qmin, qmax) - "
         "zero_point); h(alpha) >= 0.5 when not training. offset may be empty (zeros).");

REGISTER_OP("QiSoftRoundGrad")
    .Input("grad: float")
    .Input("alpha: float")
    .Input("delta: float")
    .Output("dalpha: float")
    .Attr("has_channel_axis: bool = false")
    .Attr("channel_axis: int = 0")
    .SetShapeFn([](InferenceContext* c) -> Status {
      c->set_output(0, c->input(1));
      return Status();
    });

REGISTER_OP("QiSoftRoundInitAlpha")
    .Input("w: float")
    .Input("delta: float")
    .Input("offset: float")
    .Output("alpha: float")
    .Attr("qmin: float")
    .Attr("qmax: float")
    .Attr("has_channel_axis: bool = false")
    .Attr("channel_axis: int = 0")
    .SetShapeFn(same_as_first)
    .Doc("alpha with h(alpha) = frac(clip((w - offset) / delta, qmin, qmax)).");

class QiSoftRoundOp : public OpKernel {
 public:
  explicit QiSoftRoundOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, axis_.read(ctx));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("qmin", &qmin_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("qmax", &qmax_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("training", &training_));
  }
  void Compute(OpKernelContext* ctx) override {
    const char* op = "QiSoftRound";
    const Tensor& w = ctx->input(0);
    const Tensor& alpha = ctx->input(1);
    OP_REQUIRES(ctx, alpha.shape() == w.shape(),
                invalid(str_cat(op, ": alpha shape ", alpha.shape().DebugString(),
                                " must equal w shape ", w.shape().DebugString())));
    trainable::SoftRoundingPlan plan;
    OP_REQUIRES_OK(ctx, soft_plan(op, ctx->input(2), &ctx->input(3), qmin_, qmax_, &plan));
    std::optional<int64_t> axis;
    OP_REQUIRES_OK(ctx, axis_.resolve(op, sizes_of(w), static_cast<int64_t>(plan.delta.size()),
                                      "delta", &axis));
    Tensor* q = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, w.shape(), &q));
    OP_REQUIRES_OK(ctx, guarded([&] {
      trainable::soft_rounding_forward(plan, const_view(w), const_view(alpha), mutable_view(q),
                                       axis, training_);
    }));
  }

 private:
  AxisAttrs axis_;
  float qmin_ = 0, qmax_ = 0;
  bool training_ = true;
};
REGISTER_KERNEL_BUILDER(Name("QiSoftRound").Device(::tensorflow::DEVICE_CPU), QiSoftRoundOp);

class QiSoftRoundGradOp : public OpKernel {
 public:
  explicit QiSoftRoundGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, axis_.read(ctx));
  }
  void Compute(OpKernelContext* ctx) override {
    const char* op = "QiSoftRoundGrad";
    const Tensor& grad = ctx->input(0);
    const Tensor& alpha = ctx->input(1);
    OP_REQUIRES(ctx, grad.shape() == alpha.shape(),
                invalid(str_cat(op, ": grad shape ", grad.shape().DebugString(),
                                " must equal alpha shape ", alpha.shape().DebugString())));
    trainable::SoftRoundingPlan plan;
    OP_REQUIRES_OK(ctx, soft_plan(op, ctx->input(2), nullptr, 0.f, 1.f, &plan));
    std::optional<int64_t> axis;
    OP_REQUIRES_OK(ctx, axis_.resolve(op, sizes_of(alpha), static_cast<int64_t>(plan.delta.size()),
                                      "delta", &axis));
    Tensor* d = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, alpha.shape(), &d));
    OP_REQUIRES_OK(ctx, guarded([&] {
      trainable::soft_rounding_backward(plan, const_view(alpha), const_view(grad), mutable_view(d),
                                        axis);
    }));
  }

 private:
  AxisAttrs axis_;
};
REGISTER_KERNEL_BUILDER(Name("QiSoftRoundGrad").Device(::tensorflow::DEVICE_CPU),
                        QiSoftRoundGradOp);

class QiSoftRoundInitAlphaOp : public OpKernel {
 public:
  explicit QiSoftRoundInitAlphaOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, axis_.read(ctx));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("qmin", &qmin_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("qmax", &qmax_));
  }
  void Compute(OpKernelContext* ctx) override {
    const char* op = "QiSoftRoundInitAlpha";
    const Tensor& w = ctx->input(0);
    trainable::SoftRoundingPlan plan;
    OP_REQUIRES_OK(ctx, soft_plan(op, ctx->input(1), &ctx->input(2), qmin_, qmax_, &plan));
    std::optional<int64_t> axis;
    OP_REQUIRES_OK(ctx, axis_.resolve(op, sizes_of(w), static_cast<int64_t>(plan.delta.size()),
                                      "delta", &axis));
    Tensor* alpha = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, w.shape(), &alpha));
    OP_REQUIRES_OK(ctx, guarded([&] {
      trainable::soft_rounding_init_alpha(plan, const_view(w), mutable_view(alpha), axis);
    }));
  }

 private:
  AxisAttrs axis_;
  float qmin_ = 0, qmax_ = 0;
};
REGISTER_KERNEL_BUILDER(Name("QiSoftRoundInitAlpha").Device(::tensorflow::DEVICE_CPU),
                        QiSoftRoundInitAlphaOp);

REGISTER_OP("QiSoftRoundRegularization")
    .Input("alpha: float")
    .Output("reg: float")
    .Attr("beta: float")
    .SetShapeFn([](InferenceContext* c) -> Status {
      c->set_output(0, c->Scalar());
      return Status();
    })
    .Doc("sum(1 - |2 (h(alpha) - 0.5)|^beta).");

REGISTER_OP("QiSoftRoundRegularizationGrad")
    .Input("grad: float")
    .Input("alpha: float")
    .Output("dalpha: float")
    .Attr("beta: float")
    .SetShapeFn([](InferenceContext* c) -> Status {
      c->set_output(0, c->input(1));
      return Status();
    });

class QiSoftRoundRegularizationOp : public OpKernel {
 public:
  explicit QiSoftRoundRegularizationOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("beta", &beta_));
  }
  void Compute(OpKernelContext* ctx) override {
    Tensor* reg = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({}), &reg));
    double value = 0;
    OP_REQUIRES_OK(ctx, guarded([&] {
      value = trainable::soft_rounding_regularization(const_view(ctx->input(0)), beta_);
    }));
    reg->scalar<float>()() = static_cast<float>(value);
  }

 private:
  float beta_ = 0;
};
REGISTER_KERNEL_BUILDER(Name("QiSoftRoundRegularization").Device(::tensorflow::DEVICE_CPU),
                        QiSoftRoundRegularizationOp);

class QiSoftRoundRegularizationGradOp : public OpKernel {
 public:
  explicit QiSoftRoundRegularizationGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("beta", &beta_));
  }
  void Compute(OpKernelContext* ctx) override {
    const Tensor& grad = ctx->input(0);
    const Tensor& alpha = ctx->input(1);
    OP_REQUIRES(ctx, grad.NumElements() == 1,
                invalid("QiSoftRoundRegularizationGrad: grad must be a scalar"));
    Tensor* d = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, alpha.shape(), &d));
    OP_REQUIRES_OK(ctx, guarded([&] {
      trainable::soft_rounding_regularization_backward(
          const_view(alpha), beta_, static_cast<double>(grad.flat<float>()(0)), mutable_view(d));
    }));
  }

 private:
  float beta_ = 0;
};
REGISTER_KERNEL_BUILDER(Name("QiSoftRoundRegularizationGrad").Device(::tensorflow::DEVICE_CPU),
                        QiSoftRoundRegularizationGradOp);

}  // namespace
}  // namespace qi::tf_ops
