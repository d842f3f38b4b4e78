// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// qi-demo: the whole stack from C++ alone. A small CNN is trained in float on Fashion-MNIST,
// then quantized by qi's whole-model calls (qi::torch::quantize / prepare_qat / convert): PTQ at
// 8 bits (the "w8a8" preset: MSE-calibrated weights and activations), QAT with 4-bit weights
// (STE and LSQ), 2-bit weights (LSQ) and 4-bit weights in groups of 32 (LSQ) with 8-bit
// activations, MXFP4 weights (LSQ pre-scale) with MXFP8 activations, and NVFP4 weights (learned
// block and tensor scales) with NVFP4 activations; trainable quantizers are converted to
// inferable ones, the model is saved, reloaded and compared bit for bit. Prints one table and,
// with --json PATH, writes it as JSON.

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "fashion_mnist.h"
#include "model.h"
#include "progress.h"
#include "qi/torch/qi_torch.h"

namespace nn = torch::nn;
using namespace qi_demo;

namespace {

struct Options {
  std::string data_dir = "/usr/share/datasets/fashion-mnist";
  std::string json_path;
  std::string model_path;
  int float_epochs = 4;
  int qat_epochs = 1;
  int qat2_epochs = 2;
  int64_t train_limit = 0;  // 0: all 60000
  int threads = 0;          // 0: all cores
  uint64_t seed = 0;
};

void usage() {
  std::printf(
      "usage: qi-demo [--json PATH] [--data DIR] [--epochs N] [--qat-epochs N] [--qat2-epochs N]\n"
      "               [--train-limit N] [--threads N] [--model PATH] [--seed N]\n");
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "qi-demo: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--json") o.json_path = next();
    else if (a == "--data") o.data_dir = next();
    else if (a == "--epochs") o.float_epochs = std::stoi(next());
    else if (a == "--qat-epochs") o.qat_epochs = std::stoi(next());
    else if (a == "--qat2-epochs") o.qat2_epochs = std::stoi(next());
    else if (a == "--train-limit") o.train_limit = std::stoll(next());
    else if (a == "--threads") o.threads = std::stoi(next());
    else if (a == "--model") o.model_path = next();
    else if (a == "--seed") o.seed = std::stoull(next());
    else if (a == "-h" || a == "--help") {
      usage();
      std::exit(0);
    } else {
      std::fprintf(stderr, "qi-demo: unknown argument %s\n", a.c_str());
      usage();
      std::exit(2);
    }
  }
  return o;
}

// ---- training and evaluation -------------------------------------------------------------------

template <typename Model>
double evaluate(Model& model, const qi_demo::Dataset& test) {
  torch::NoGradGuard no_grad;
  model->eval();
  int64_t correct = 0;
  const int64_t n = test.images.size(0);
  for (int64_t b = 0; b < n; b += 1000) {
    const auto x = test.images.slice(0, b, std::min(n, b + 1000));
    const auto y = test.labels.slice(0, b, std::min(n, b + 1000));
    correct += model->forward(x).argmax(1).eq(y).sum().template item<int64_t>();
  }
  return static_cast<double>(correct) / static_cast<double>(n);
}

template <typename Model>
void train(Model& model, const qi_demo::Dataset& train_set, int epochs, double lr,
           const std::string& label, uint64_t seed) {
  std::vector<torch::Tensor> params;
  for (auto& p : model->parameters())
    if (p.requires_grad() && p.is_leaf()) params.push_back(p);
  torch::optim::Adam opt(params, torch::optim::AdamOptions(lr));
  const int64_t n = train_set.images.size(0), batch = 128;
  const int64_t steps_per_epoch = (n + batch - 1) / batch;
  torch::manual_seed(seed);
  for (int e = 0; e < epochs; ++e) {
    model->train();
    qi_demo::Progress bar(label + " epoch " + std::to_string(e + 1) + "/" + std::to_string(epochs),
                          steps_per_epoch);
    const auto perm = torch::randperm(n, torch::kLong);
    double running = 0;
    for (int64_t s = 0; s < steps_per_epoch; ++s) {
      const auto idx = perm.slice(0, s * batch, std::min(n, (s + 1) * batch));
      const auto x = train_set.images.index_select(0, idx);
      const auto y = train_set.labels.index_select(0, idx);
      opt.zero_grad();
      const auto loss = torch::nn::functional::cross_entropy(model->forward(x), y);
      loss.backward();
      opt.step();
      running = s == 0 ? loss.template item<double>() : 0.98 * running + 0.02 * loss.template item<double>();
      char extra[64];
      std::snprintf(extra, sizeof(extra), "loss %.3f", running);
      bar.update(s + 1, extra);
    }
    char extra[64];
    std::snprintf(extra, sizeof(extra), "loss %.3f", running);
    bar.finish(extra);
  }
}

// Relative L2 error of each layer's quantized weight.
std::map<std::string, double> weight_errors(nn::Sequential& q) {
  std::map<std::string, double> out;
  for (auto& [name, w] : qi::torch::find_wrappers(*q)) {
    if (!w->dispatcher().weight_quantizers().count("weight")) continue;  // an activation site
    const auto fw = w->float_weight("weight").detach();
    const auto qw = w->get_quantized_weights().at("weight");
    out[name] = ((qw - fw).norm() / fw.norm()).item<double>();
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  const Options opt = parse(argc, argv);
  const auto t0 = std::chrono::steady_clock::now();
  if (opt.threads > 0) torch::set_num_threads(opt.threads);
  qi::torch::init();
  torch::manual_seed(static_cast<int64_t>(opt.seed));

  qi_demo::Dataset train_set, test_set;
  try {
    train_set = qi_demo::load_fashion_mnist(opt.data_dir, "train");
    test_set = qi_demo::load_fashion_mnist(opt.data_dir, "t10k");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qi-demo: %s\n", e.what());
    return 1;
  }
  if (opt.train_limit > 0 && opt.train_limit < train_set.images.size(0)) {
    train_set.images = train_set.images.slice(0, 0, opt.train_limit);
    train_set.labels = train_set.labels.slice(0, 0, opt.train_limit);
  }
  std::printf("qi-demo: Fashion-MNIST %lld train / %lld test images, %d threads, SIMD %s\n",
              static_cast<long long>(train_set.images.size(0)),
              static_cast<long long>(test_set.images.size(0)), torch::get_num_threads(),
              qi::kernels::simd_target_name().c_str());

  nlohmann::json report;
  std::map<std::string, double> seconds;
  auto timed = [&](const std::string& key, auto&& fn) {
    const auto s = std::chrono::steady_clock::now();
    fn();
    seconds[key] = std::chrono::duration<double>(std::chrono::steady_clock::now() - s).count();
  };

  // 1. float
  nn::Sequential net = qi_demo::make_net();
  timed("float", [&] { train(net, train_set, opt.float_epochs, 1e-3, "float", opt.seed); });
  report["float"] = evaluate(net, test_set);
  std::printf("  float accuracy        %.4f\n", report["float"].get<double>());

  // 2. PTQ, 8 bits
  std::map<std::string, std::map<std::string, double>> layer_errors;
  // Activations are calibrated on the first 512 training images.
  const torch::Tensor calib = train_set.images.slice(0, 0, 512);
  nn::Sequential ptq{nullptr};
  timed("ptq8", [&] {
    ptq = quantized_copy(net, qi::ModelQuantizationConfig::preset("w8a8"), /*qat=*/false, calib);
    report["ptq8"] = evaluate(ptq, test_set);
  });
  layer_errors["ptq8"] = weight_errors(ptq);
  std::printf("  ptq8 accuracy         %.4f\n", report["ptq8"].get<double>());

  // 3. QAT: fine-tune from the float model, then convert to inferable quantizers.
  struct Run {
    const char* key;
    const char* config;  // over the "w4a8_lsq" preset
    int epochs;
  };
  const Run runs[] = {
      {"qat4_ste", R"({"preset": "w4a8_lsq", "weights": {"training": "STE"},
                       "activations": {"training": "STE"}})", opt.qat_epochs},
      {"qat4_lsq", R"({"preset": "w4a8_lsq"})", opt.qat_epochs},
      {"qat2_lsq", R"({"preset": "w4a8_lsq", "weights": {"n_bits": 2}})", opt.qat2_epochs},
      // 4-bit weights with one learned threshold per (output channel, group of 32 along the
      // input axis); conv1's 1 and conv2's 16 input channels make one shorter group each.
      {"qat4_g32", R"({"preset": "w4a8_lsq", "weights": {"group_size": 32}})", opt.qat_epochs},
      // The block formats need whole blocks along each weight's input axis and along the
      // activations' last axis: the linear layers take them; conv1 (1 input channel), conv2 (16,
      // which MX's blocks of 32 do not fill), the convolutions' outputs (28 and 14 wide) and the
      // 10 logits keep the preset's 8-bit integers.
      {"mxfp4_mxfp8", R"({"preset": "w4a8_lsq",
          "weights": {"method": "MX", "format": "E2M1", "training": "LSQ"},
          "activations": {"method": "MX", "format": "E4M3", "training": "STE"},
          "overrides": [{"name": "conv*", "weights": {"method": "SYMMETRIC", "n_bits": 8,
                                                      "per_channel": true}},
                        {"name": "conv*", "activations": {"method": "UNIFORM", "n_bits": 8,
                                                          "training": "LSQ"}},
                        {"name": "fc2", "activations": {"method": "UNIFORM", "n_bits": 8,
                                                        "training": "LSQ"}}]})",
       opt.qat_epochs},
      {"nvfp4", R"({"preset": "w4a8_lsq",
          "weights": {"method": "NVFP4", "training": "LSQ"},
          "activations": {"method": "NVFP4", "training": "STE"},
          "overrides": [{"name": "conv1", "weights": {"method": "SYMMETRIC", "n_bits": 8,
                                                      "per_channel": true}},
                        {"name": "conv*", "activations": {"method": "UNIFORM", "n_bits": 8,
                                                          "training": "LSQ"}},
                        {"name": "fc2", "activations": {"method": "UNIFORM", "n_bits": 8,
                                                        "training": "LSQ"}}]})",
       opt.qat_epochs}};
  std::map<std::string, nn::Sequential> converted;
  std::map<std::string, double> trained_acc;
  for (const auto& r : runs) {
    timed(r.key, [&] {
      nn::Sequential q = quantized_copy(net, qi::ModelQuantizationConfig::from_json(r.config),
                                        /*qat=*/true, calib, /*quiet=*/true);
      train(q, train_set, r.epochs, 1e-4, r.key, opt.seed + 1);
      trained_acc[r.key] = evaluate(q, test_set);
      qi::torch::convert(*q);
      report[r.key] = evaluate(q, test_set);
      converted.emplace(r.key, q);
    });
    layer_errors[r.key] = weight_errors(converted.at(r.key));
    std::printf("  %-12s accuracy   %.4f (trainable, eval mode %.4f)\n", r.key,
                report[r.key].get<double>(), trained_acc[r.key]);
  }

  // 4. Save the converted QAT4-LSQ model, reload it into a fresh model, compare bit for bit.
  const std::string path = opt.model_path.empty()
                               ? (std::filesystem::temp_directory_path() / "qi-demo-qat4-lsq.pt").string()
                               : opt.model_path;
  bool identical = false;
  timed("save_reload", [&] {
    nn::Sequential& saved = converted.at("qat4_lsq");
    qi::torch::save(*saved, path);
    // A fresh model of the same architecture; load() rebuilds every quantizer from the file.
    nn::Sequential fresh = quantized_copy(qi_demo::make_net(), qi::ModelQuantizationConfig::preset("w8a8"),
                                          /*qat=*/false, calib, /*quiet=*/true);
    qi::torch::load(*fresh, path);
    torch::NoGradGuard no_grad;
    saved->eval();
    fresh->eval();
    identical = torch::equal(saved->forward(test_set.images), fresh->forward(test_set.images));
  });
  report["reload_identical"] = identical;

  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  report["wall_time_s"] = wall;
  report["seconds"] = seconds;
  report["layer_weight_error"] = layer_errors;
  report["model_path"] = path;

  const double f = report["float"].get<double>();
  std::printf("\n%-12s %9s %9s %9s\n", "model", "accuracy", "vs float", "seconds");
  std::vector<std::string> keys = {"float", "ptq8"};
  for (const auto& r : runs) keys.push_back(r.key);
  for (const auto& k : keys)
    std::printf("%-12s %9.4f %+9.4f %9.1f\n", k.c_str(), report[k].get<double>(),
                report[k].get<double>() - f, seconds[k]);
  std::printf("\nper-layer relative weight error ||Q(W) - W|| / ||W||\n%-8s", "layer");
  for (const auto& [k, v] : layer_errors) std::printf(" %12s", k.c_str());
  std::printf("\n");
  for (const auto& [layer, e] : layer_errors.begin()->second) {
    (void)e;
    std::printf("%-8s", layer.c_str());
    for (const auto& [k, v] : layer_errors) std::printf(" %12.4f", v.at(layer));
    std::printf("\n");
  }
  std::printf("\nsaved %s; reloaded outputs identical: %s\nwall time %.1f s\n", path.c_str(),
              identical ? "true" : "false", wall);

  if (!opt.json_path.empty()) {
    std::ofstream out(opt.json_path);
    out << report.dump(2) << "\n";
    if (!out) {
      std::fprintf(stderr, "qi-demo: cannot write %s\n", opt.json_path.c_str());
      return 1;
    }
  }
  return identical ? 0 : 1;
}
