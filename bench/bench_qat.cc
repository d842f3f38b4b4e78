// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The qi-demo CNN's training step: float against QAT (4-bit LSQ weights, 8-bit LSQ
// activations, C++ front end), median of timed steps on random batches, at 1 and 2 threads.
//   build/bench/qi_bench_qat [--json] [--steps N]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "model.h"

namespace nn = torch::nn;

namespace {

template <typename Model>
double median_step_seconds(Model& model, int steps) {
  std::vector<torch::Tensor> params;
  for (auto& p : model->parameters())
    if (p.requires_grad() && p.is_leaf()) params.push_back(p);
  torch::optim::Adam opt(params, torch::optim::AdamOptions(1e-4));
  model->train();
  const auto x = torch::randn({128, 1, 28, 28});
  const auto y = torch::randint(0, 10, {128}, torch::kLong);
  std::vector<double> t;
  for (int s = 0; s < steps + 3; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    opt.zero_grad();
    torch::nn::functional::cross_entropy(model->forward(x), y).backward();
    opt.step();
    if (s >= 3) t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  bool json = false;
  int steps = 30;
  std::vector<int> thread_counts = {1, 2};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--json") == 0) json = true;
    else if (std::strcmp(argv[i], "--steps") == 0 && i + 1 < argc) steps = std::stoi(argv[++i]);
    else if (std::strcmp(argv[i], "--threads") == 0 && i + 1 < argc)
      thread_counts = {std::stoi(argv[++i])};
  }
  qi::torch::init();
  torch::manual_seed(0);
  nn::Sequential net = qi_demo::make_net();
  // Calibration on random data is enough for timing.
  nn::Sequential qat = qi_demo::quantized_copy(net, qi::ModelQuantizationConfig::preset("w4a8_lsq"),
                                               /*qat=*/true, torch::randn({256, 1, 28, 28}),
                                               /*quiet=*/true);
  std::string out = "[";
  for (int threads : thread_counts) {
    torch::set_num_threads(threads);
    const double f = median_step_seconds(net, steps);
    const double q = median_step_seconds(qat, steps);
    if (!json) std::printf("threads %d: float step %.2f ms, QAT step %.2f ms, QAT/float %.3f\n",
                           threads, f * 1e3, q * 1e3, q / f);
    char row[256];
    std::snprintf(row, sizeof(row),
                  "%s{\"case\": \"qi-demo CNN step (base: float)\", \"quantizer\": \"QAT4 LSQ "
                  "step\", \"threads\": %d, \"qi_s\": %.9g, \"copy_s\": %.9g, \"torch_s\": null, "
                  "\"mct_s\": null}",
                  out.size() == 1 ? "" : ", ", threads, q, f);
    out += row;
  }
  out += "]";
  if (json) std::printf("%s\n", out.c_str());
  return 0;
}
