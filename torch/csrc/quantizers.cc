// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include "qi/torch/quantizers.h"

#include <algorithm>
#include <cmath>

#include <torch/torch.h>

#include "qi/error.h"
#include "qi/torch/ops.h"

namespace qi::torch {

at::Tensor quantize(BaseQuantizer& quantizer, const at::Tensor& x, bool training) {
  if (quantizer.is_trainable()) {
    auto* t = dynamic_cast<TrainableQuantizer*>(&quantizer);
    QI_CHECK(t != nullptr, quantizer.class_name(),
             ": a trainable quantizer must be bound to a module (qi::torch::TrainableQuantizer, "
             "initialize_quantization) before it runs");
    return t->forward(x, training);
  }
  auto* inf = dynamic_cast<BaseInferableQuantizer*>(&quantizer);
  QI_CHECK(inf != nullptr, quantizer.class_name(), ": not an inferable quantizer");
  return fake_quant(x, inf->to_json());
}

// ---- soft rounding regularization ---------------------------------------------------------------

SoftRoundingRegularization::SoftRoundingRegularization(int64_t total_steps, double warmup_fraction,
                                                       double beta_start, double beta_end)
    : schedule_(total_steps, warmup_fraction, beta_start, beta_end) {}

double SoftRoundingRegularization::beta() const { return schedule_.beta(step_); }

at::Tensor SoftRoundingRegularization::operator()(
    const std::vector<std::shared_ptr<TrainableQuantizer>>& quantizers, double entropy_reg,
    const std::vector<double>& layer_weights) {
  std::vector<std::shared_ptr<TrainableQuantizer>> soft;
  for (const auto& q : quantizers)
    if (q && q->training_method() == TrainingMethod::SoftRounding) soft.push_back(q);
  QI_CHECK(layer_weights.empty() || layer_weights.size() == soft.size(),
           "SoftRoundingRegularization: layer_weights must have one entry per soft rounding "
           "quantizer (",
           soft.size(), "), got ", layer_weights.size());
  const double b = beta();
  ++step_;
  at::Tensor reg = ::torch::zeros({});
  if (soft.empty()) return reg;
  double max_w = 1.0;
  if (!layer_weights.empty()) max_w = *std::max_element(layer_weights.begin(), layer_weights.end());
  for (size_t l = 0; l < soft.size(); ++l) {
    const double w = layer_weights.empty() ? 1.0 : layer_weights[l];
    reg = reg + w * soft_round_regularization(
                        soft[l]->variables().at(qi::TrainableQuantizer::kAuxvar).tensor, b);
  }
  return entropy_reg * reg / max_w;
}

}  // namespace qi::torch
