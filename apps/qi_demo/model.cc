// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include "model.h"

namespace qi_demo {

Calibration calibrate(Net& net, const Dataset& train_set, int64_t weight_bits,
                      int64_t act_bits) {
  static std::map<int64_t, std::vector<double>> act_cache;  // by activation bits
  Calibration cal;
  const std::pair<const char*, nn::Module*> layers[] = {
      {"conv1", net->conv1.get()}, {"conv2", net->conv2.get()}, {"fc1", net->fc1.get()},
      {"fc2", net->fc2.get()}};
  for (const auto& [name, layer] : layers) {
    const auto w = layer->named_parameters()["weight"].detach().contiguous();
    const int64_t axis = qi::torch::weight_channel_axis(*layer);
    cal.weight_thresholds[name] = qi::calibration::threshold_mse(
        qi::ConstTensorView(w.const_data_ptr<float>(), w.sizes().vec()), axis, weight_bits,
        /*is_signed=*/true, /*power_of_two=*/false);
  }
  auto cached = act_cache.find(act_bits);
  if (cached != act_cache.end()) {
    cal.act_thresholds = cached->second;
    return cal;
  }
  torch::NoGradGuard no_grad;
  net->eval();
  const auto acts = net->activations(train_set.images.slice(0, 0, 512));
  for (size_t i = 0; i < acts.size(); ++i) {
    const auto a = acts[i].contiguous();
    cal.act_thresholds.push_back(qi::calibration::threshold_mse(
        qi::ConstTensorView(a.const_data_ptr<float>(), a.sizes().vec()), std::nullopt, act_bits,
        /*is_signed=*/i == 0, /*power_of_two=*/false)[0]);
  }
  act_cache[act_bits] = cal.act_thresholds;
  return cal;
}

}  // namespace qi_demo
