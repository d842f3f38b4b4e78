// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The C++ entry points of include/qi/torch/ops.h: typed calls through the dispatcher, so that
// C++ and Python users go through the same kernels and autograd.
#include <algorithm>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include "qi/parallel.h"
#include "qi/torch/ops.h"

namespace qi::torch {
namespace {

template <typename Sig>
c10::TypedOperatorHandle<Sig> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
}

// qi's kernels take their threads from ATen's pool, so torch.set_num_threads applies.
const bool kParallelHookInstalled = [] {
  qi::set_parallel_for(
      [](int64_t begin, int64_t end, int64_t grain,
         const std::function<void(int64_t, int64_t)>& fn) { at::parallel_for(begin, end, grain, fn); },
      [] { return at::get_num_threads(); });
  return true;
}();

}  // namespace

void init() { (void)kParallelHookInstalled; }

at::Tensor fake_quant(const at::Tensor& x, const std::string& quantizer_json) {
  static auto h = op<at::Tensor(const at::Tensor&, c10::string_view)>("qi::fake_quant");
  return h.call(x, quantizer_json);
}

at::Tensor fake_quant(const at::Tensor& x, const BaseInferableQuantizer& quantizer) {
  return fake_quant(x, quantizer.to_json());
}

at::Tensor quantize(const at::Tensor& x, const at::Tensor& plan,
                    std::optional<int64_t> channel_axis, std::optional<int64_t> input_rank) {
  static auto h = op<at::Tensor(const at::Tensor&, const at::Tensor&, std::optional<int64_t>,
                                std::optional<int64_t>)>("qi::quantize");
  return h.call(x, plan, channel_axis, input_rank);
}

at::Tensor packed_plan(const BaseInferableQuantizer& quantizer) {
  const std::vector<int32_t> words = quantizer.packed_plan();
  at::Tensor t = at::empty({static_cast<int64_t>(words.size())}, at::kInt);
  std::copy(words.begin(), words.end(), t.mutable_data_ptr<int32_t>());
  return t;
}

at::Tensor symmetric_quant(const at::Tensor& x, const at::Tensor& threshold, int64_t num_bits,
                           bool is_signed, std::optional<int64_t> channel_axis,
                           const std::string& mode, double grad_scale,
                           std::optional<int64_t> grad_scale_axis, double min_threshold,
                           bool power_of_two, std::optional<int64_t> group_size,
                           int64_t group_axis) {
  static auto h = op<at::Tensor(const at::Tensor&, const at::Tensor&, int64_t, bool,
                                std::optional<int64_t>, c10::string_view, double,
                                std::optional<int64_t>, double, bool, std::optional<int64_t>,
                                int64_t)>("qi::symmetric_quant");
  return h.call(x, threshold, num_bits, is_signed, channel_axis, mode, grad_scale,
                grad_scale_axis, min_threshold, power_of_two, group_size, group_axis);
}

at::Tensor uniform_quant(const at::Tensor& x, const at::Tensor& min_range,
                         const at::Tensor& max_range, int64_t num_bits,
                         std::optional<int64_t> channel_axis, const std::string& mode,
                         double grad_scale, bool activation,
                         std::optional<int64_t> grad_scale_axis,
                         std::optional<int64_t> group_size, int64_t group_axis) {
  static auto h = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                std::optional<int64_t>, c10::string_view, double, bool,
                                std::optional<int64_t>, std::optional<int64_t>,
                                int64_t)>("qi::uniform_quant");
  return h.call(x, min_range, max_range, num_bits, channel_axis, mode, grad_scale, activation,
                grad_scale_axis, group_size, group_axis);
}

at::Tensor format_quant(const at::Tensor& x, const at::Tensor& scale,
                        const at::Tensor& tensor_scale, const std::string& format,
                        const std::string& scaling, std::optional<int64_t> channel_axis,
                        const std::string& mode, double grad_scale,
                        std::optional<int64_t> grad_scale_axis,
                        std::optional<int64_t> group_size, int64_t group_axis,
                        std::optional<double> tensor_grad_scale) {
  static auto h = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                c10::string_view, c10::string_view, std::optional<int64_t>,
                                c10::string_view, double, std::optional<int64_t>,
                                std::optional<int64_t>, int64_t,
                                std::optional<double>)>("qi::format_quant");
  return h.call(x, scale, tensor_scale, format, scaling, channel_axis, mode, grad_scale,
                grad_scale_axis, group_size, group_axis, tensor_grad_scale);
}

at::Tensor soft_round(const at::Tensor& w, const at::Tensor& alpha,
                      const at::Tensor& threshold_or_min, int64_t num_bits, bool power_of_two,
                      std::optional<int64_t> channel_axis, bool training,
                      const at::Tensor& max_range) {
  static auto h = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                bool, std::optional<int64_t>, bool,
                                const std::optional<at::Tensor>&)>("qi::soft_round");
  const std::optional<at::Tensor> hi =
      max_range.defined() ? std::optional<at::Tensor>(max_range) : std::nullopt;
  return h.call(w, alpha, threshold_or_min, num_bits, power_of_two, channel_axis, training, hi);
}

at::Tensor soft_round_regularization(const at::Tensor& alpha, double beta) {
  static auto h =
      op<at::Tensor(const at::Tensor&, double)>("qi::soft_round_regularization");
  return h.call(alpha, beta);
}

}  // namespace qi::torch
