// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// TensorFlow custom ops over qi::core (float32, CPU). Forward ops run the core's kernels; the
// *Grad ops are the backward passes that quantizers_infrastructure.keras registers as gradients
// (tf.RegisterGradient). Core errors (qi::Error) become InvalidArgument with the same message;
// shape functions run the same checks, so graph construction (tf.function, Keras functional
// models) reports them as ValueError.
//
//   QiFakeQuant(x; quantizer)                      inferable quantizer from its to_json() text
//   QiSymmetricQuant(x, threshold, ...)            trainable symmetric/POT (STE or LSQ)
//   QiUniformQuant(x, min_range, max_range, ...)   trainable uniform (STE or LSQ)
//   QiFormatQuant(x, scale, tensor_scale, ...)     trainable FLOAT, MX and NVFP4 (STE or LSQ)
//   QiSoftRound(w, alpha, threshold_or_min, ...)   soft rounding (AdaRound-style)
//   QiSoftRoundRegularization and the *Grad ops.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"

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
    // A grouped quantizer's count depends on the unknown size: checked when the op runs.
    else if (kernels::plan_groups(q.plan()).group_size > 0) return Status();
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
      TF_RETURN_IF_ERROR(guarded([&] { q = cached_inferable_quantizer(json); }));
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
    OP_REQUIRES_OK(ctx, guarded([&] { quantizer_ = cached_inferable_quantizer(json); }));
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

// ---- trainable quantizers ----------------------------------------------------------------------
// Bindings of the core's trainable ops (qi/trainable_math.h): attributes in, core call, tensors
// out. Optional integers are a has_<name> flag and a value. Doubles (grad_scale, min_threshold)
// are float64 inputs because TensorFlow's float attributes are 32-bit; forwards do not need
// grad_scale but take it so that forward and gradient ops have the same inputs.

Status optional_int(OpKernelConstruction* ctx, const char* name, std::optional<int64_t>* out) {
  bool has = false;
  int64_t value = 0;
  TF_RETURN_IF_ERROR(ctx->GetAttr(str_cat("has_", name), &has));
  TF_RETURN_IF_ERROR(ctx->GetAttr(name, &value));
  *out = has ? std::optional<int64_t>(value) : std::nullopt;
  return Status();
}

Status grad_mode(OpKernelConstruction* ctx, const char* op, trainable::GradMode* mode) {
  std::string m;
  TF_RETURN_IF_ERROR(ctx->GetAttr("mode", &m));
  if (m != "ste" && m != "lsq")
    return invalid(str_cat(op, ": mode must be \"ste\" or \"lsq\", got \"", m, "\""));
  *mode = m == "lsq" ? trainable::GradMode::kLsq : trainable::GradMode::kSte;
  return Status();
}

Status double_scalar(OpKernelContext* ctx, int index, const char* op, const char* name,
                     double* out) {
  if (ctx->input(index).NumElements() != 1)
    return invalid(str_cat(op, ": ", name, " must be a scalar"));
  *out = ctx->input(index).flat<double>()(0);
  return Status();
}

Status same_shape(const Tensor& a, const Tensor& b, const char* op, const char* a_name,
                  const char* b_name) {
  if (a.shape() == b.shape()) return Status();
  return invalid(str_cat(op, ": ", a_name, " shape ", a.shape().DebugString(), " must equal ",
                         b_name, " shape ", b.shape().DebugString()));
}

// Output i shaped as input j.
template <int... kPairs>
Status shapes_of_inputs(InferenceContext* c) {
  constexpr int pairs[] = {kPairs...};
  for (size_t k = 0; k + 1 < sizeof(pairs) / sizeof(int); k += 2)
    c->set_output(pairs[k], c->input(pairs[k + 1]));
  return Status();
}

// Per-parameter gradients into a float32 output shaped like the parameter.
Status write_param_grad(OpKernelContext* ctx, int index, const TensorShape& shape,
                        const std::vector<double>& g) {
  if (static_cast<int64_t>(g.size()) != shape.num_elements())
    return ::tensorflow::errors::Internal("qi: ", g.size(), " parameter gradients for a "
                                          "parameter of ", shape.num_elements(), " values");
  Tensor* out = nullptr;
  TF_RETURN_IF_ERROR(ctx->allocate_output(index, shape, &out));
  auto flat = out->flat<float>();
  for (int64_t c = 0; c < flat.size(); ++c) flat(c) = static_cast<float>(g[static_cast<size_t>(c)]);
  return Status();
}

// dx of a trainable backward (affine or formats): dy itself for STE (straight through the
// rounding and the clip), else a new tensor.
Status trainable_dx(OpKernelContext* ctx, const Tensor& grad, trainable::GradMode mode,
                 TensorView* dx_view) {
  if (mode == trainable::GradMode::kSte) {
    ctx->set_output(0, grad);
    return Status();
  }
  Tensor* dx = nullptr;
  TF_RETURN_IF_ERROR(ctx->allocate_output(0, grad.shape(), &dx));
  *dx_view = mutable_view(dx);
  return Status();
}

// The attributes every trainable op (affine and formats) shares.
#define QI_TRAINABLE_ATTRS                                                                       \
  Attr("has_channel_axis: bool = false")                                                         \
      .Attr("channel_axis: int = 0")                                                             \
      .Attr("mode: string = 'ste'")                                                              \
      .Attr("has_grad_scale_axis: bool = false")                                                 \
      .Attr("grad_scale_axis: int = 0")                                                          \
      .Attr("has_group_size: bool = false")                                                      \
      .Attr("group_size: int = 0")                                                               \
      .Attr("group_axis: int = -1")
#define QI_AFFINE_ATTRS Attr("num_bits: int").QI_TRAINABLE_ATTRS

// The shared optional attributes of the trainable ops (QI_TRAINABLE_ATTRS).
template <typename Args>
Status read_trainable_attrs(OpKernelConstruction* ctx, const char* op, Args* args) {
  TF_RETURN_IF_ERROR(optional_int(ctx, "channel_axis", &args->channel_axis));
  TF_RETURN_IF_ERROR(optional_int(ctx, "grad_scale_axis", &args->grad_scale_axis));
  TF_RETURN_IF_ERROR(optional_int(ctx, "group_size", &args->group_size));
  TF_RETURN_IF_ERROR(ctx->GetAttr("group_axis", &args->group_axis));
  return grad_mode(ctx, op, &args->mode);
}

// The affine ops' attributes: num_bits and the trainable ones.
template <typename Args>
Status read_affine_attrs(OpKernelConstruction* ctx, const char* op, Args* args) {
  TF_RETURN_IF_ERROR(ctx->GetAttr("num_bits", &args->num_bits));
  return read_trainable_attrs(ctx, op, args);
}

struct SymmetricAttrs {
  trainable::SymmetricQuantArgs args;
  Status read(OpKernelConstruction* ctx, const char* op) {
    TF_RETURN_IF_ERROR(ctx->GetAttr("is_signed", &args.is_signed));
    TF_RETURN_IF_ERROR(ctx->GetAttr("power_of_two", &args.power_of_two));
    return read_affine_attrs(ctx, op, &args);
  }
  // Inputs first_scalar and first_scalar + 1: grad_scale and min_threshold.
  Status call(OpKernelContext* ctx, const char* op, const Tensor& x, const Tensor& threshold,
              int first_scalar, trainable::SymmetricQuantArgs* a, std::vector<double>* t,
              trainable::AffineCall* out) const {
    *a = args;
    TF_RETURN_IF_ERROR(double_scalar(ctx, first_scalar, op, "grad_scale", &a->grad_scale));
    TF_RETURN_IF_ERROR(double_scalar(ctx, first_scalar + 1, op, "min_threshold", &a->min_threshold));
    *t = values_of(threshold);
    return guarded([&] { *out = trainable::symmetric_quant_call(op, sizes_of(x), *t, *a); });
  }
};

REGISTER_OP("QiSymmetricQuant")
    .Input("x: float")
    .Input("threshold: float")
    .Input("grad_scale: double")
    .Input("min_threshold: double")
    .Output("y: float")
    .Attr("is_signed: bool = true")
    .Attr("power_of_two: bool = false")
    .QI_AFFINE_ATTRS
    .SetShapeFn(shapes_of_inputs<0, 0>)
    .Doc("Trainable symmetric fake quantizer (qi::trainable::symmetric_quant_call).");

REGISTER_OP("QiSymmetricQuantGrad")
    .Input("grad: float")
    .Input("x: float")
    .Input("threshold: float")
    .Input("grad_scale: double")
    .Input("min_threshold: double")
    .Output("dx: float")
    .Output("dthreshold: float")
    .Attr("is_signed: bool = true")
    .Attr("power_of_two: bool = false")
    .QI_AFFINE_ATTRS
    .SetShapeFn(shapes_of_inputs<0, 1, 1, 2>);

class QiSymmetricQuantOp : public OpKernel {
 public:
  explicit QiSymmetricQuantOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.read(ctx, "QiSymmetricQuant"));
  }
  void Compute(OpKernelContext* ctx) override {
    const char* op = "QiSymmetricQuant";
    const Tensor& x = ctx->input(0);
    trainable::SymmetricQuantArgs args;
    std::vector<double> t;
    trainable::AffineCall call;
    OP_REQUIRES_OK(ctx, attrs_.call(ctx, op, x, ctx->input(1), 2, &args, &t, &call));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, guarded([&] {
      trainable::affine_quant_forward(call, const_view(x), mutable_view(y));
    }));
  }

 private:
  SymmetricAttrs attrs_;
};
REGISTER_KERNEL_BUILDER(Name("QiSymmetricQuant").Device(::tensorflow::DEVICE_CPU),
                        QiSymmetricQuantOp);

class QiSymmetricQuantGradOp : public OpKernel {
 public:
  explicit QiSymmetricQuantGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.read(ctx, "QiSymmetricQuantGrad"));
  }
  void Compute(OpKernelContext* ctx) override {
    const char* op = "QiSymmetricQuantGrad";
    const Tensor& grad = ctx->input(0);
    const Tensor& x = ctx->input(1);
    OP_REQUIRES_OK(ctx, same_shape(grad, x, op, "grad", "x"));
    trainable::SymmetricQuantArgs args;
    std::vector<double> t;
    trainable::AffineCall call;
    OP_REQUIRES_OK(ctx, attrs_.call(ctx, op, x, ctx->input(2), 3, &args, &t, &call));
    TensorView dx_view;
    OP_REQUIRES_OK(ctx, trainable_dx(ctx, grad, args.mode, &dx_view));
    std::vector<double> dt;
    OP_REQUIRES_OK(ctx, guarded([&] {
      dt = trainable::symmetric_quant_backward(call, t, args, const_view(x), const_view(grad),
                                               dx_view);
    }));
    OP_REQUIRES_OK(ctx, write_param_grad(ctx, 1, ctx->input(2).shape(), dt));
  }

 private:
  SymmetricAttrs attrs_;
};
REGISTER_KERNEL_BUILDER(Name("QiSymmetricQuantGrad").Device(::tensorflow::DEVICE_CPU),
                        QiSymmetricQuantGradOp);

struct UniformAttrs {
  trainable::UniformQuantArgs args;
  Status read(OpKernelConstruction* ctx, const char* op) {
    TF_RETURN_IF_ERROR(ctx->GetAttr("activation", &args.activation));
    return read_affine_attrs(ctx, op, &args);
  }
  Status call(OpKernelContext* ctx, const char* op, const Tensor& x, int first_param,
              trainable::UniformQuantArgs* a, std::vector<double>* lo, std::vector<double>* hi,
              trainable::AffineCall* out) const {
    *a = args;
    TF_RETURN_IF_ERROR(double_scalar(ctx, first_param + 2, op, "grad_scale", &a->grad_scale));
    *lo = values_of(ctx->input(first_param));
    *hi = values_of(ctx->input(first_param + 1));
    return guarded([&] { *out = trainable::uniform_quant_call(op, sizes_of(x), *lo, *hi, *a); });
  }
};

REGISTER_OP("QiUniformQuant")
    .Input("x: float")
    .Input("min_range: float")
    .Input("max_range: float")
    .Input("grad_scale: double")
    .Output("y: float")
    .Attr("activation: bool = false")
    .QI_AFFINE_ATTRS
    .SetShapeFn(shapes_of_inputs<0, 0>)
    .Doc("Trainable uniform fake quantizer (qi::trainable::uniform_quant_call).");

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
    .SetShapeFn(shapes_of_inputs<0, 1, 1, 2, 2, 3>);

class QiUniformQuantOp : public OpKernel {
 public:
  explicit QiUniformQuantOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.read(ctx, "QiUniformQuant"));
  }
  void Compute(OpKernelContext* ctx) override {
    const char* op = "QiUniformQuant";
    const Tensor& x = ctx->input(0);
    trainable::UniformQuantArgs args;
    std::vector<double> lo, hi;
    trainable::AffineCall call;
    OP_REQUIRES_OK(ctx, attrs_.call(ctx, op, x, 1, &args, &lo, &hi, &call));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, guarded([&] {
      trainable::affine_quant_forward(call, const_view(x), mutable_view(y));
    }));
  }

 private:
  UniformAttrs attrs_;
};
REGISTER_KERNEL_BUILDER(Name("QiUniformQuant").Device(::tensorflow::DEVICE_CPU), QiUniformQuantOp);

class QiUniformQuantGradOp : public OpKernel {
 public:
  explicit QiUniformQuantGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.read(ctx, "QiUniformQuantGrad"));
  }
  void Compute(OpKernelContext* ctx) override {
    const char* op = "QiUniformQuantGrad";
    const Tensor& grad = ctx->input(0);
    const Tensor& x = ctx->input(1);
    OP_REQUIRES_OK(ctx, same_shape(grad, x, op, "grad", "x"));
    trainable::UniformQuantArgs args;
    std::vector<double> lo, hi;
    trainable::AffineCall call;
    OP_REQUIRES_OK(ctx, attrs_.call(ctx, op, x, 2, &args, &lo, &hi, &call));
    TensorView dx_view;
    OP_REQUIRES_OK(ctx, trainable_dx(ctx, grad, args.mode, &dx_view));
    std::vector<trainable::RangeGrads> r;
    OP_REQUIRES_OK(ctx, guarded([&] {
      r = trainable::uniform_quant_backward(call, lo, hi, args, const_view(x), const_view(grad),
                                            dx_view);
    }));
    std::vector<double> dmin, dmax;
    for (const auto& g : r) {
      dmin.push_back(g.d_min);
      dmax.push_back(g.d_max);
    }
    OP_REQUIRES_OK(ctx, write_param_grad(ctx, 1, ctx->input(2).shape(), dmin));
    OP_REQUIRES_OK(ctx, write_param_grad(ctx, 2, ctx->input(3).shape(), dmax));
  }

 private:
  UniformAttrs attrs_;
};
REGISTER_KERNEL_BUILDER(Name("QiUniformQuantGrad").Device(::tensorflow::DEVICE_CPU),
                        QiUniformQuantGradOp);

// ---- the formats: low-precision floats, MX and NVFP4 --------------------------------------------
// An input the scaling does not use (scale or tensor_scale) is an empty tensor.

struct FormatAttrs {
  trainable::FormatQuantArgs args;
  Status read(OpKernelConstruction* ctx, const char* op) {
    std::string scaling;
    TF_RETURN_IF_ERROR(ctx->GetAttr("format", &args.format));
    TF_RETURN_IF_ERROR(ctx->GetAttr("scaling", &scaling));
    TF_RETURN_IF_ERROR(
        guarded([&] { args.scaling = trainable::parse_format_scaling(op, scaling); }));
    return read_trainable_attrs(ctx, op, &args);
  }
  // Inputs first_param (scale), first_param + 1 (tensor_scale), first_param + 2 (grad_scale),
  // first_param + 3 (tensor_grad_scale: one value, or empty for grad_scale).
  Status call(OpKernelContext* ctx, const char* op, const Tensor& x, int first_param,
              trainable::FormatCall* out) const {
    trainable::FormatQuantArgs a = args;
    TF_RETURN_IF_ERROR(double_scalar(ctx, first_param + 2, op, "grad_scale", &a.grad_scale));
    if (ctx->input(first_param + 3).NumElements() != 0) {
      double v = 0.0;
      TF_RETURN_IF_ERROR(double_scalar(ctx, first_param + 3, op, "tensor_grad_scale", &v));
      a.tensor_grad_scale = v;
    }
    const auto scale = values_of(ctx->input(first_param));
    const auto tensor_scale = values_of(ctx->input(first_param + 1));
    return guarded(
        [&] { *out = trainable::format_quant_call(op, sizes_of(x), scale, tensor_scale, a); });
  }
};

#define QI_FORMAT_ATTRS                                                                          \
  Attr("format: string")                                                                         \
      .Attr("scaling: string")                                                                   \
      .QI_TRAINABLE_ATTRS

REGISTER_OP("QiFormatQuant")
    .Input("x: float")
    .Input("scale: float")
    .Input("tensor_scale: float")
    .Input("grad_scale: double")
    .Input("tensor_grad_scale: double")
    .Output("y: float")
    .QI_FORMAT_ATTRS
    .SetShapeFn(shapes_of_inputs<0, 0>)
    .Doc("Trainable FLOAT, MX and NVFP4 fake quantizer (qi::trainable::format_quant_call).");

REGISTER_OP("QiFormatQuantGrad")
    .Input("grad: float")
    .Input("x: float")
    .Input("scale: float")
    .Input("tensor_scale: float")
    .Input("grad_scale: double")
    .Input("tensor_grad_scale: double")
    .Output("dx: float")
    .Output("dscale: float")
    .Output("dtensor_scale: float")
    .QI_FORMAT_ATTRS
    .SetShapeFn(shapes_of_inputs<0, 1, 1, 2, 2, 3>);

class QiFormatQuantOp : public OpKernel {
 public:
  explicit QiFormatQuantOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.read(ctx, "QiFormatQuant"));
  }
  void Compute(OpKernelContext* ctx) override {
    const char* op = "QiFormatQuant";
    const Tensor& x = ctx->input(0);
    trainable::FormatCall call;
    OP_REQUIRES_OK(ctx, attrs_.call(ctx, op, x, 1, &call));
    Tensor* y = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, guarded([&] {
      trainable::format_quant_forward(call, const_view(x), mutable_view(y));
    }));
  }

 private:
  FormatAttrs attrs_;
};
REGISTER_KERNEL_BUILDER(Name("QiFormatQuant").Device(::tensorflow::DEVICE_CPU), QiFormatQuantOp);

class QiFormatQuantGradOp : public OpKernel {
 public:
  explicit QiFormatQuantGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.read(ctx, "QiFormatQuantGrad"));
  }
  void Compute(OpKernelContext* ctx) override {
    const char* op = "QiFormatQuantGrad";
    const Tensor& grad = ctx->input(0);
    const Tensor& x = ctx->input(1);
    OP_REQUIRES_OK(ctx, same_shape(grad, x, op, "grad", "x"));
    trainable::FormatCall call;
    OP_REQUIRES_OK(ctx, attrs_.call(ctx, op, x, 2, &call));
    TensorView dx_view;
    OP_REQUIRES_OK(ctx, trainable_dx(ctx, grad, attrs_.args.mode, &dx_view));
    trainable::FormatGrads g;
    OP_REQUIRES_OK(ctx, guarded([&] {
      g = trainable::format_quant_backward(call, const_view(x), const_view(grad), dx_view);
    }));
    OP_REQUIRES_OK(ctx, write_param_grad(ctx, 1, ctx->input(2).shape(), g.d_scale));
    OP_REQUIRES_OK(ctx, write_param_grad(ctx, 2, ctx->input(3).shape(), g.d_tensor_scale));
  }

 private:
  FormatAttrs attrs_;
};
REGISTER_KERNEL_BUILDER(Name("QiFormatQuantGrad").Device(::tensorflow::DEVICE_CPU),
                        QiFormatQuantGradOp);

// ---- soft rounding ------------------------------------------------------------------------------

// uniform: inputs (threshold_or_min, max_range) are a range, else max_range is ignored.
struct SoftRoundAttrs {
  trainable::SoftRoundArgs args;
  bool uniform = false;
  Status read(OpKernelConstruction* ctx) {
    TF_RETURN_IF_ERROR(ctx->GetAttr("num_bits", &args.num_bits));
    TF_RETURN_IF_ERROR(ctx->GetAttr("power_of_two", &args.power_of_two));
    TF_RETURN_IF_ERROR(ctx->GetAttr("uniform", &uniform));
    return optional_int(ctx, "channel_axis", &args.channel_axis);
  }
  Status call(OpKernelContext* ctx, const char* op, const Tensor& w, int first_param,
              trainable::SoftRoundCall* out) const {
    const auto p = values_of(ctx->input(first_param));
    std::optional<std::vector<double>> hi;
    if (uniform) hi = values_of(ctx->input(first_param + 1));
    return guarded([&] { *out = trainable::soft_round_call(op, sizes_of(w), p, hi, args); });
  }
};

#define QI_SOFT_ROUND_ATTRS                                                                      \
  Attr("num_bits: int")                                                                          \
      .Attr("power_of_two: bool = false")                                                        \
      .Attr("uniform: bool = false")                                                             \
      .Attr("has_channel_axis: bool = false")                                                    \
      .Attr("channel_axis: int = 0")

REGISTER_OP("QiSoftRound")
    .Input("w: float")
    .Input("alpha: float")
    .Input("threshold_or_min: float")
    .Input("max_range: float")
    .Output("q: float")
    .Attr("training: bool = true")
    .QI_SOFT_ROUND_ATTRS
    .SetShapeFn(shapes_of_inputs<0, 0>)
    .Doc("Soft rounding on the grid of the symmetric or uniform inferable quantizer "
         "(qi::trainable::soft_round_call); h(alpha) >= 0.5 when not training.");

REGISTER_OP("QiSoftRoundGrad")
    .Input("grad: float")
    .Input("alpha: float")
    .Input("threshold_or_min: float")
    .Input("max_range: float")
    .Output("dalpha: float")
    .QI_SOFT_ROUND_ATTRS
    .SetShapeFn(shapes_of_inputs<0, 1>);

class QiSoftRoundOp : public OpKernel {
 public:
  explicit QiSoftRoundOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.read(ctx));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("training", &training_));
  }
  void Compute(OpKernelContext* ctx) override {
    const char* op = "QiSoftRound";
    const Tensor& w = ctx->input(0);
    const Tensor& alpha = ctx->input(1);
    OP_REQUIRES_OK(ctx, same_shape(alpha, w, op, "alpha", "w"));
    trainable::SoftRoundCall call;
    OP_REQUIRES_OK(ctx, attrs_.call(ctx, op, w, 2, &call));
    Tensor* q = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, w.shape(), &q));
    OP_REQUIRES_OK(ctx, guarded([&] {
      trainable::soft_rounding_forward(call.plan, const_view(w), const_view(alpha),
                                       mutable_view(q), call.axis, training_);
    }));
  }

 private:
  SoftRoundAttrs attrs_;
  bool training_ = true;
};
REGISTER_KERNEL_BUILDER(Name("QiSoftRound").Device(::tensorflow::DEVICE_CPU), QiSoftRoundOp);

class QiSoftRoundGradOp : public OpKernel {
 public:
  explicit QiSoftRoundGradOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, attrs_.read(ctx));
  }
  void Compute(OpKernelContext* ctx) override {
    const char* op = "QiSoftRoundGrad";
    const Tensor& grad = ctx->input(0);
    const Tensor& alpha = ctx->input(1);
    OP_REQUIRES_OK(ctx, same_shape(grad, alpha, op, "grad", "alpha"));
    trainable::SoftRoundCall call;
    OP_REQUIRES_OK(ctx, attrs_.call(ctx, op, alpha, 2, &call));
    Tensor* d = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, alpha.shape(), &d));
    OP_REQUIRES_OK(ctx, guarded([&] {
      trainable::soft_rounding_backward(call.plan, const_view(alpha), const_view(grad),
                                        mutable_view(d), call.axis);
    }));
  }

 private:
  SoftRoundAttrs attrs_;
};
REGISTER_KERNEL_BUILDER(Name("QiSoftRoundGrad").Device(::tensorflow::DEVICE_CPU),
                        QiSoftRoundGradOp);

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
      trainable::check_soft_rounding_beta(beta_, "QiSoftRoundRegularization");
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
      trainable::check_soft_rounding_beta(beta_, "QiSoftRoundRegularizationGrad");
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
