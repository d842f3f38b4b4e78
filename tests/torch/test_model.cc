// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// qi::torch::quantize / prepare_qat / convert over LibTorch module trees.
#include <cmath>
#include <filesystem>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "qi/torch/qi_torch.h"

namespace {

namespace nn = torch::nn;
using ::testing::HasSubstr;
using qi::ModelQuantizationConfig;

template <class F>
void expect_qi_error(F&& f, const std::string& part) {
  try {
    f();
    ADD_FAILURE() << "no qi::Error; expected one containing: " << part;
  } catch (const qi::Error& e) {
    EXPECT_THAT(std::string(e.what()), HasSubstr(part));
  }
}

// A small CNN as LibTorch users write one: conv-bn-relu blocks and a head in Sequentials.
nn::Sequential make_cnn(int64_t seed) {
  torch::manual_seed(seed);
  nn::Sequential net(nn::Conv2d(nn::Conv2dOptions(3, 8, 3).padding(1).bias(false)),
                     nn::BatchNorm2d(8), nn::ReLU(), nn::MaxPool2d(2),
                     nn::Conv2d(nn::Conv2dOptions(8, 8, 3).padding(1).groups(8)),  // depthwise
                     nn::BatchNorm2d(8), nn::ReLU6(),
                     nn::ConvTranspose2d(nn::ConvTranspose2dOptions(8, 4, 2).stride(2)),
                     nn::Flatten(), nn::Linear(4 * 8 * 8, 10));
  // Batch norms with statistics of their own, as after training.
  for (auto& m : net->modules(false))
    if (auto* bn = m->as<nn::BatchNorm2d>()) {
      torch::NoGradGuard g;
      bn->running_mean.uniform_(-0.5, 0.5);
      bn->running_var.uniform_(0.5, 2.0);
      bn->weight.uniform_(0.5, 1.5);
      bn->bias.uniform_(-0.2, 0.2);
    }
  return net;
}

std::vector<torch::Tensor> batches(int n, int64_t seed) {
  torch::manual_seed(seed);
  std::vector<torch::Tensor> out;
  for (int i = 0; i < n; ++i) out.push_back(torch::randn({4, 3, 8, 8}));
  return out;
}

qi::torch::ForwardLoop loop_over(nn::Sequential& net, const std::vector<torch::Tensor>& xs) {
  return [&net, &xs](nn::Module&) {
    for (const auto& x : xs) net->forward(x);
  };
}

double sqnr_db(const torch::Tensor& ref, const torch::Tensor& q) {
  return 10 * std::log10(ref.pow(2).sum().item<double>() / (ref - q).pow(2).sum().item<double>());
}

TEST(WholeModelCpp, QuantizeWrapsFoldsAndCalibrates) {
  nn::Sequential net = make_cnn(0);
  nn::Sequential ref = make_cnn(0);
  net->eval();
  ref->eval();
  const auto xs = batches(3, 1);
  const auto report = qi::torch::quantize(*net, ModelQuantizationConfig::preset("w8a8"),
                                          loop_over(net, xs));
  // Four layers wrapped with 8-bit per-channel weights; outputs after the activations.
  EXPECT_EQ(report.num_wrapped(), 4);
  EXPECT_EQ(report.folded, (std::vector<std::string>{"1 into 0", "5 into 4"}));
  ASSERT_EQ(report.layers.size(), 6u);
  EXPECT_EQ(report.layers[0].name, "0");
  EXPECT_EQ(report.layers[0].type, "Conv2d");
  EXPECT_EQ(report.layers[0].weights, "WeightsSymmetricInferableQuantizer");
  EXPECT_EQ(report.layers[0].activations, "");  // quantized after the ReLU
  EXPECT_EQ(report.layers[2].name, "7");       // the transposed convolution's own output
  EXPECT_EQ(report.layers[2].activations, "ActivationUniformInferableQuantizer");
  EXPECT_EQ(report.layers[4].name, "2");
  EXPECT_EQ(report.layers[4].type, "ReLU");
  EXPECT_EQ(report.layers[5].name, "6");
  EXPECT_EQ(report.layers[5].type, "ReLU6");
  for (int i = 0; i < 4; ++i) EXPECT_GT(*report.layers[i].weight_sqnr_db, 30.0) << i;
  EXPECT_EQ(report.calibration_calls, 3);
  EXPECT_FALSE(net->is_training());
  EXPECT_EQ(qi::torch::find_wrappers(*net).size(), 6u);
  EXPECT_TRUE(net[1]->as<nn::Identity>() != nullptr);
  // Close to the float model (folded batch norms are exact to float tolerance).
  torch::NoGradGuard g;
  const auto x = torch::randn({8, 3, 8, 8});
  EXPECT_GT(sqnr_db(ref->forward(x), net->forward(x)), 25.0);
  EXPECT_THAT(report.to_string(), HasSubstr("4 layers with quantized weights, 4 activation quantizers"));
}

TEST(WholeModelCpp, FoldedBatchNormMatchesTheFloatModel) {
  nn::Sequential net = make_cnn(3), ref = make_cnn(3);
  net->eval();
  ref->eval();
  auto config = ModelQuantizationConfig::preset("w8a8");
  config.weights.reset();
  config.activations.reset();
  const auto report = qi::torch::quantize(*net, config);
  EXPECT_EQ(report.folded.size(), 2u);
  EXPECT_EQ(report.num_wrapped(), 0);
  torch::NoGradGuard g;
  const auto x = torch::randn({2, 3, 8, 8});
  EXPECT_TRUE(torch::allclose(net->forward(x), ref->forward(x), 1e-4, 1e-5));
}

TEST(WholeModelCpp, OverridesAndSkipsByNameAndType) {
  nn::Sequential net = make_cnn(0);
  const auto xs = batches(1, 1);
  auto config = ModelQuantizationConfig::from_json(
      R"({"preset": "w8a8", "overrides": [{"type": "Linear", "weights": {"n_bits": 4}}],
          "skip": ["4"]})");
  const auto report = qi::torch::quantize(*net, config, loop_over(net, xs));
  EXPECT_EQ(report.num_wrapped(), 3);
  EXPECT_THAT(report.to_string(), HasSubstr("skipped '4' (Conv2d): the config's skip list"));
  int checked = 0;
  for (auto& [name, w] : qi::torch::find_wrappers(*net)) {
    if (name != "9") continue;
    EXPECT_THAT(w->dispatcher().weight_quantizers().at("weight")->to_json(),
                HasSubstr("\"num_bits\":4"));
    ++checked;
  }
  EXPECT_EQ(checked, 1);
}

TEST(WholeModelCpp, LayersOfCustomModulesAreNotedNotSilentlyQuantized) {
  struct CustomImpl : nn::Module {
    CustomImpl() {
      fc = register_module("fc", nn::Linear(4, 4));
      body = register_module("body", nn::Sequential(nn::Linear(4, 4), nn::ReLU()));
    }
    torch::Tensor forward(torch::Tensor x) { return body->forward(fc->forward(x)); }
    nn::Linear fc{nullptr};
    nn::Sequential body{nullptr};
  };
  auto model = std::make_shared<CustomImpl>();
  const std::vector<torch::Tensor> xs{torch::randn({2, 4})};
  const auto report = qi::torch::quantize(
      *model, ModelQuantizationConfig::preset("w8a8"),
      [&](nn::Module&) { for (const auto& x : xs) model->forward(x); });
  EXPECT_EQ(report.num_wrapped(), 1);  // body.0, reached through the Sequential member
  EXPECT_EQ(report.layers.at(0).name, "body.0");
  ASSERT_EQ(report.notes.size(), 1u);
  EXPECT_THAT(report.notes[0], HasSubstr("not quantized: 'fc' (Linear) is held by a custom module"));
  // The custom module's own forward now runs the wrapped layer.
  torch::NoGradGuard g;
  EXPECT_EQ(model->forward(xs[0]).sizes(), (std::vector<int64_t>{2, 4}));
}

TEST(WholeModelCpp, PrepareQatTrainsAndConvertsBitExact) {
  nn::Sequential net = make_cnn(0);
  const auto xs = batches(2, 1);
  const auto report = qi::torch::prepare_qat(*net, ModelQuantizationConfig::preset("w4a8_lsq"),
                                             loop_over(net, xs));
  EXPECT_EQ(report.num_wrapped(), 4);
  EXPECT_EQ(report.layers[0].weights, "LSQWeightQATQuantizer");
  EXPECT_TRUE(net->is_training());
  // A few steps train the float weights and the LSQ thresholds.
  std::vector<torch::Tensor> params;
  for (auto& p : net->parameters())
    if (p.requires_grad()) params.push_back(p);
  torch::optim::SGD opt(params, 1e-3);
  for (int s = 0; s < 3; ++s) {
    opt.zero_grad();
    net->forward(xs[0]).pow(2).mean().backward();
    opt.step();
  }
  net->eval();
  torch::NoGradGuard g;
  const auto before = net->forward(xs[1]);
  qi::torch::convert(*net);
  EXPECT_TRUE(torch::equal(before, net->forward(xs[1])));
  for (auto& [name, w] : qi::torch::find_wrappers(*net))
    for (auto& [attr, q] : w->dispatcher().weight_quantizers()) EXPECT_FALSE(q->is_trainable());
}

TEST(WholeModelCpp, QuantizedModelSavesAndLoads) {
  nn::Sequential a = make_cnn(0), b = make_cnn(5);
  const auto xs = batches(2, 1);
  qi::torch::quantize(*a, ModelQuantizationConfig::preset("w8a8"), loop_over(a, xs));
  const auto ys = batches(1, 9);
  qi::torch::quantize(*b, ModelQuantizationConfig::preset("w8a8"), loop_over(b, ys));
  const auto path = (std::filesystem::temp_directory_path() / "qi_whole_model_cpp.pt").string();
  qi::torch::save(*a, path);
  qi::torch::load(*b, path);
  std::filesystem::remove(path);
  torch::NoGradGuard g;
  EXPECT_TRUE(torch::equal(a->forward(xs[0]), b->forward(xs[0])));
}

TEST(WholeModelCpp, BadUseRaisesClearErrors) {
  nn::Sequential net = make_cnn(0);
  expect_qi_error([&] { qi::torch::quantize(*net, ModelQuantizationConfig::preset("w8a8")); },
                  "qi::torch::quantize: the config quantizes activations; pass a forward loop");
  const auto xs = batches(1, 1);
  qi::torch::quantize(*net, ModelQuantizationConfig::preset("w8_weight_only"));
  expect_qi_error([&] { qi::torch::prepare_qat(*net, ModelQuantizationConfig::preset("w8a8"), loop_over(net, xs)); },
                  "qi::torch::prepare_qat: the model already holds qi wrappers or holders (0); "
                  "quantize a float model");
  // A failing forward loop leaves the model as it was, observers removed.
  nn::Sequential other = make_cnn(0);
  EXPECT_THROW(qi::torch::quantize(*other, ModelQuantizationConfig::preset("w8a8"),
                                   [](nn::Module&) { throw std::runtime_error("data error"); }),
               std::runtime_error);
  EXPECT_TRUE(other[2]->as<nn::ReLU>() != nullptr);
  EXPECT_TRUE(other[1]->as<nn::BatchNorm2d>() != nullptr);  // not folded either
  EXPECT_TRUE(qi::torch::find_wrappers(*other).empty());
}

}  // namespace
