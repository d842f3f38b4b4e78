// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Operator schemas of the qi library. Kernels: cpu.cc (CPU), autograd.cc (Autograd).
#include <torch/library.h>

TORCH_LIBRARY(qi, m) {
  m.def("fake_quant(Tensor x, str quantizer) -> Tensor");
  // Into a preallocated tensor (may be x itself: in place). No autograd.
  m.def("fake_quant.out(Tensor x, str quantizer, *, Tensor(a!) out) -> Tensor(a!)");
  m.def(
      "symmetric_quant(Tensor x, Tensor threshold, int num_bits, bool is_signed, int? channel_axis, "
      "str mode, float grad_scale) -> Tensor");
  m.def(
      "_symmetric_quant_backward(Tensor grad, Tensor x, Tensor threshold, int num_bits, "
      "bool is_signed, int? channel_axis, str mode, float grad_scale, bool need_x, "
      "bool need_threshold) -> (Tensor, Tensor)");
  m.def(
      "uniform_quant(Tensor x, Tensor min_range, Tensor max_range, int num_bits, int? channel_axis, "
      "str mode, float grad_scale, bool activation) -> Tensor");
  m.def(
      "_uniform_quant_backward(Tensor grad, Tensor x, Tensor min_range, Tensor max_range, "
      "int num_bits, int? channel_axis, str mode, float grad_scale, bool activation, bool need_x, "
      "bool need_range) -> (Tensor, Tensor, Tensor)");
  m.def(
      "soft_round(Tensor w, Tensor alpha, Tensor delta, Tensor offset, float qmin, float qmax, "
      "int? channel_axis, bool training) -> Tensor");
  m.def("_soft_round_backward(Tensor grad, Tensor alpha, Tensor delta, int? channel_axis) -> Tensor");
  m.def("soft_round_regularization(Tensor alpha, float beta) -> Tensor");
  m.def("_soft_round_regularization_backward(Tensor grad, Tensor alpha, float beta) -> Tensor");
}
