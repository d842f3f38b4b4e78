// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Operator schemas of the qi library. Kernels: cpu.cc (CPU), autograd.cc (Autograd); fake
// (meta) kernels for torch.compile and torch.export are registered by the Python package
// (quantizers_infrastructure/pytorch/fake.py). Inputs may be float32, float16, bfloat16 or
// float64; qi computes on its float32 grids and returns the input's dtype and memory format.
#include <torch/library.h>

TORCH_LIBRARY(qi, m) {
  // An inferable quantizer given by its to_json() text (portable: what TorchScript and ONNX
  // exports record). Gradient: straight through.
  m.def("fake_quant(Tensor x, str quantizer) -> Tensor");
  // Into a preallocated tensor (may be x itself: in place). No autograd; returns nothing (a
  // custom op cannot return an alias of its input and still be functionalized).
  m.def("fake_quant.out(Tensor x, str quantizer, *, Tensor(a!) out) -> ()");
  // An inferable quantizer given by its packed plan (an int32 tensor, kept as a buffer): no
  // parsing on the call, and the plan moves with the module. Gradient: straight through.
  m.def("quantize(Tensor x, Tensor plan, int? channel_axis, int? input_rank) -> Tensor");
  m.def(
      "quantize.out(Tensor x, Tensor plan, int? channel_axis, int? input_rank, *, "
      "Tensor(a!) out) -> ()");
  m.def(
      "symmetric_quant(Tensor x, Tensor threshold, int num_bits, bool is_signed, int? channel_axis, "
      "str mode, float grad_scale, int? grad_scale_axis=None, float min_threshold=0., "
      "bool power_of_two=False, int? group_size=None, int group_axis=-1) -> Tensor");
  m.def(
      "_symmetric_quant_backward(Tensor grad, Tensor x, Tensor threshold, int num_bits, "
      "bool is_signed, int? channel_axis, str mode, float grad_scale, int? grad_scale_axis, "
      "float min_threshold, bool power_of_two, bool need_x, bool need_threshold, "
      "int? group_size=None, int group_axis=-1) -> (Tensor, Tensor)");
  m.def(
      "uniform_quant(Tensor x, Tensor min_range, Tensor max_range, int num_bits, int? channel_axis, "
      "str mode, float grad_scale, bool activation, int? grad_scale_axis=None, "
      "int? group_size=None, int group_axis=-1) -> Tensor");
  m.def(
      "_uniform_quant_backward(Tensor grad, Tensor x, Tensor min_range, Tensor max_range, "
      "int num_bits, int? channel_axis, str mode, float grad_scale, bool activation, "
      "int? grad_scale_axis, bool need_x, bool need_range, int? group_size=None, "
      "int group_axis=-1) -> (Tensor, Tensor, Tensor)");
  // The formats' op (trainable_math.h FormatQuantArgs): FLOAT scales, NVFP4 block scales, MX
  // pre-scale or NVFP4 from the data. An argument the scaling does not use is an empty tensor.
  m.def(
      "format_quant(Tensor x, Tensor scale, Tensor tensor_scale, str format, str scaling, "
      "int? channel_axis, str mode, float grad_scale, int? grad_scale_axis=None, "
      "int? group_size=None, int group_axis=-1, float? tensor_grad_scale=None) -> Tensor");
  m.def(
      "_format_quant_backward(Tensor grad, Tensor x, Tensor scale, Tensor tensor_scale, "
      "str format, str scaling, int? channel_axis, str mode, float grad_scale, "
      "int? grad_scale_axis, int? group_size, int group_axis, bool need_x, bool need_scale, "
      "float? tensor_grad_scale=None) -> (Tensor, Tensor, Tensor)");
  m.def(
      "soft_round(Tensor w, Tensor alpha, Tensor threshold_or_min, int num_bits, bool power_of_two, "
      "int? channel_axis, bool training, Tensor? max_range=None) -> Tensor");
  m.def(
      "_soft_round_backward(Tensor grad, Tensor alpha, Tensor threshold_or_min, int num_bits, "
      "bool power_of_two, int? channel_axis, Tensor? max_range) -> Tensor");
  m.def("soft_round_regularization(Tensor alpha, float beta) -> Tensor");
  m.def("_soft_round_regularization_backward(Tensor grad, Tensor alpha, float beta) -> Tensor");
}
