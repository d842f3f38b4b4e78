// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// QuantizationWrapper and ActivationQuantizationHolder on the common layers;
// save/load of wrapped models is tested in test_serialize.cc.
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "qi/configs.h"
#include "qi/dispatcher.h"
#include "qi/inferable_quantizers.h"
#include "qi/torch/qi_torch.h"
#include "torch_test_util.h"

namespace {

namespace fs = std::filesystem;
namespace nn = ::torch::nn;
using qi::NodeQuantizationDispatcher;
using qi::ParamArray;
using qi::QuantizationMethod;
using qi::TrainingMethod;
using qi::VariableGroup;
using qi::torch::ActivationQuantizationHolder;
using qi::torch::QuantizationWrapper;
using qi_torch_test::bit_equal;
using qi_torch_test::expect_qi_error;
using QuantizerPtr = NodeQuantizationDispatcher::QuantizerPtr;

// A per-channel symmetric weights quantizer (4 bits, thresholds 0.3, 0.4, ...).
QuantizerPtr per_channel_quantizer(int64_t channels, int64_t axis) {
  std::vector<double> t;
  for (int64_t c = 0; c < channels; ++c) t.push_back(0.3 + 0.1 * static_cast<double>(c));
  return std::make_shared<qi::WeightsSymmetricInferableQuantizer>(4, t, true, axis);
}

NodeQuantizationDispatcher weights_only(QuantizerPtr q) {
  return NodeQuantizationDispatcher({{"weight", std::move(q)}}, {});
}

// The eval output of a wrapper with an inferable per-channel weight quantizer equals the layer's
// own operation run on get_quantized_weights(), bit for bit; training mode gives the same.
template <typename Layer>
void check_inferable_wrapper(Layer layer, int64_t expected_axis, const at::Tensor& x,
                             const std::function<at::Tensor(const at::Tensor&)>& op_with) {
  const int64_t axis = qi::torch::weight_channel_axis(*layer);
  EXPECT_EQ(axis, expected_axis);
  const at::Tensor float_weight = layer->weight.detach().clone();
  const QuantizerPtr q = per_channel_quantizer(float_weight.size(axis), axis);
  QuantizationWrapper w(nn::AnyModule(layer), weights_only(q));
  w->eval();
  const at::Tensor y = w->forward(x);
  const auto quantized = w->get_quantized_weights();
  ASSERT_EQ(quantized.size(), 1u);
  const at::Tensor qw = quantized.at("weight");
  EXPECT_TRUE(bit_equal(w->float_weight("weight"), float_weight));
  EXPECT_TRUE(bit_equal(
      qw, qi::torch::fake_quant(float_weight,
                                dynamic_cast<const qi::BaseInferableQuantizer&>(*q))));
  EXPECT_FALSE(qw.equal(float_weight));  // the quantizer does something
  EXPECT_TRUE(bit_equal(y, op_with(qw)));
  w->train();
  EXPECT_TRUE(bit_equal(w->forward(x), y));
  // The float weight belongs to the wrapper and receives the gradient (straight through).
  w->zero_grad();
  w->forward(x).to(::torch::kFloat).sum().backward();
  ASSERT_TRUE(w->float_weight("weight").grad().defined());
  EXPECT_GT(w->float_weight("weight").grad().abs().sum().item<double>(), 0.0);
}

TEST(QuantizationWrapper, Conv1dEqualsConvWithQuantizedWeight) {
  ::torch::manual_seed(1);
  nn::Conv1d conv(nn::Conv1dOptions(3, 5, 3).padding(1));
  const at::Tensor x = ::torch::randn({2, 3, 11});
  check_inferable_wrapper(conv, 0, x, [&](const at::Tensor& qw) {
    return ::torch::conv1d(x, qw, conv->bias, 1, 1);
  });
}

TEST(QuantizationWrapper, Conv2dEqualsConvWithQuantizedWeight) {
  ::torch::manual_seed(2);
  nn::Conv2d conv(nn::Conv2dOptions(3, 6, 3).padding(1).stride(2));
  const at::Tensor x = ::torch::randn({2, 3, 9, 9});
  check_inferable_wrapper(conv, 0, x, [&](const at::Tensor& qw) {
    return ::torch::conv2d(x, qw, conv->bias, 2, 1);
  });
}

TEST(QuantizationWrapper, Conv3dEqualsConvWithQuantizedWeight) {
  ::torch::manual_seed(3);
  nn::Conv3d conv(nn::Conv3dOptions(2, 4, 3));
  const at::Tensor x = ::torch::randn({1, 2, 5, 6, 5});
  check_inferable_wrapper(conv, 0, x, [&](const at::Tensor& qw) {
    return ::torch::conv3d(x, qw, conv->bias);
  });
}

TEST(QuantizationWrapper, ConvTranspose2dQuantizesAlongAxisOne) {
  ::torch::manual_seed(4);
  nn::ConvTranspose2d conv(nn::ConvTranspose2dOptions(4, 6, 3).stride(2));
  ASSERT_EQ(conv->weight.size(1), 6);  // [in, out, kH, kW]
  const at::Tensor x = ::torch::randn({2, 4, 5, 5});
  check_inferable_wrapper(conv, 1, x, [&](const at::Tensor& qw) {
    return ::torch::conv_transpose2d(x, qw, conv->bias, 2);
  });
}

TEST(QuantizationWrapper, LinearEqualsLinearWithQuantizedWeight) {
  ::torch::manual_seed(5);
  nn::Linear fc(7, 5);
  const at::Tensor x = ::torch::randn({4, 7});
  check_inferable_wrapper(fc, 0, x, [&](const at::Tensor& qw) {
    return ::torch::linear(x, qw, fc->bias);
  });
}

TEST(QuantizationWrapper, EmbeddingTakesIndices) {
  ::torch::manual_seed(6);
  nn::Embedding emb(10, 4);
  {
    ::torch::NoGradGuard ng;
    emb->weight.mul_(0.2);
  }
  const at::Tensor idx = ::torch::tensor({0, 3, 9, 3, 1}, ::torch::kLong).reshape({5, 1});
  check_inferable_wrapper(emb, 0, idx, [&](const at::Tensor& qw) {
    return ::torch::embedding(qw, idx);
  });
}

TEST(QuantizationWrapper, BatchNorm2dEvalUsesQuantizedScale) {
  ::torch::manual_seed(7);
  nn::BatchNorm2d bn(3);
  {
    ::torch::NoGradGuard ng;
    bn->weight.uniform_(0.1, 0.9);
    bn->bias.normal_();
    bn->running_mean.normal_();
    bn->running_var.uniform_(0.5, 2.0);
  }
  const at::Tensor x = ::torch::randn({2, 3, 4, 4});
  const auto opts = bn->options;
  // (Training mode normalizes with batch statistics; compare in eval mode only.)
  const at::Tensor float_weight = bn->weight.detach().clone();
  const QuantizerPtr q = per_channel_quantizer(3, 0);
  QuantizationWrapper w(nn::AnyModule(bn), weights_only(q));
  EXPECT_EQ(qi::torch::weight_channel_axis(*bn), 0);
  w->eval();
  const at::Tensor y = w->forward(x);
  const at::Tensor qw = w->get_quantized_weights().at("weight");
  EXPECT_FALSE(qw.equal(float_weight));
  EXPECT_TRUE(bit_equal(y, ::torch::batch_norm(x, qw, bn->bias, bn->running_mean, bn->running_var,
                                               false, opts.momentum().value(), opts.eps(), false)));
}

TEST(QuantizationWrapper, ActivationQuantizerAppliesToTheOutput) {
  ::torch::manual_seed(8);
  nn::Linear fc(6, 4);
  const auto wq = per_channel_quantizer(4, 0);
  const auto aq = std::make_shared<qi::ActivationUniformInferableQuantizer>(
      5, std::vector<double>{-0.6}, std::vector<double>{0.9});
  QuantizationWrapper w(nn::AnyModule(fc), NodeQuantizationDispatcher({{"weight", wq}}, {aq}));
  w->eval();
  const at::Tensor x = ::torch::randn({3, 6});
  const at::Tensor y = w->forward(x);
  const at::Tensor qw = w->get_quantized_weights().at("weight");
  EXPECT_TRUE(bit_equal(y, qi::torch::fake_quant(::torch::linear(x, qw, fc->bias), *aq)));
  // Only the activation quantizer: the layer runs with its float weight.
  nn::Linear fc2(6, 4);
  QuantizationWrapper a(nn::AnyModule(fc2), NodeQuantizationDispatcher({}, {aq}));
  EXPECT_TRUE(bit_equal(a->forward(x), qi::torch::fake_quant(fc2->forward(x), *aq)));
}

TEST(QuantizationWrapper, BiasCanBeQuantizedToo) {
  ::torch::manual_seed(9);
  nn::Linear fc(6, 4);
  const auto wq = per_channel_quantizer(4, 0);
  const auto bq = std::make_shared<qi::WeightsSymmetricInferableQuantizer>(
      8, std::vector<double>{1.0}, false);
  QuantizationWrapper w(nn::AnyModule(fc),
                        NodeQuantizationDispatcher({{"weight", wq}, {"bias", bq}}, {}));
  w->eval();
  const at::Tensor x = ::torch::randn({3, 6});
  const auto qws = w->get_quantized_weights();
  EXPECT_EQ(qws.size(), 2u);
  EXPECT_TRUE(bit_equal(w->forward(x), ::torch::linear(x, qws.at("weight"), qws.at("bias"))));
}

TEST(QuantizationWrapper, ErrorsNameTheProblem) {
  nn::Conv2d conv(nn::Conv2dOptions(3, 4, 3));
  expect_qi_error(
      [&] {
        QuantizationWrapper(nn::AnyModule(conv),
                            NodeQuantizationDispatcher({{"kernel", per_channel_quantizer(4, 0)}}, {}));
      },
      "the layer has no parameter \"kernel\"; it has: weight, bias");
  const auto aq = std::make_shared<qi::ActivationPOTInferableQuantizer>(
      8, std::vector<double>{2.0}, true);
  expect_qi_error(
      [&] { QuantizationWrapper(nn::AnyModule(conv), NodeQuantizationDispatcher({}, {aq, aq})); },
      "at most one activation quantizer can apply, got 2");
  expect_qi_error(
      [&] { QuantizationWrapper(nn::AnyModule(conv), NodeQuantizationDispatcher({{"weight", aq}}, {})); },
      "expected Weights");
  expect_qi_error(
      [&] {
        QuantizationWrapper(nn::AnyModule(conv),
                            NodeQuantizationDispatcher({}, {per_channel_quantizer(4, 0)}));
      },
      "activation quantizer 0 is a Weights quantizer");
  nn::Linear fc(3, 2);
  QuantizationWrapper ok(nn::AnyModule(fc), weights_only(per_channel_quantizer(2, 0)));
  expect_qi_error([&] { ok->float_weight("bias"); }, "no quantized weight \"bias\"");
}

TEST(QuantizationWrapper, ModelParametersAreLeavesAndHoldEachWeightOnce) {
  ::torch::manual_seed(13);
  nn::Conv2d conv(nn::Conv2dOptions(3, 4, 3));
  QuantizationWrapper w(nn::AnyModule(conv), weights_only(per_channel_quantizer(4, 0)));
  // The float weight is the wrapper's; the layer's tensor is no longer a parameter (MCT).
  const auto names = w->named_parameters();
  EXPECT_NE(names.find("weight"), nullptr);
  EXPECT_NE(names.find("layer.bias"), nullptr);
  EXPECT_EQ(names.find("layer.weight"), nullptr);
  EXPECT_EQ(names.size(), 2u);
  EXPECT_EQ(conv->named_parameters().find("weight"), nullptr);
  // After a training forward, every parameter is still a leaf an optimizer can take.
  w->train();
  const at::Tensor x = ::torch::randn({2, 3, 6, 6});
  ::torch::optim::SGD opt(w->parameters(), ::torch::optim::SGDOptions(0.1));
  for (int step = 0; step < 2; ++step) {
    opt.zero_grad();
    w->forward(x).pow(2).mean().backward();
    for (const auto& p : w->parameters()) {
      EXPECT_TRUE(p.is_leaf());
      EXPECT_TRUE(p.grad().defined());
    }
    opt.step();
  }
}

TEST(QuantizationWrapper, DottedAttributeOfASubmodule) {
  struct InnerImpl : nn::Module {
    InnerImpl() : sub(register_module("sub", nn::Linear(5, 3))) {}
    at::Tensor forward(const at::Tensor& x) { return sub->forward(x); }
    nn::Linear sub;
  };
  ::torch::manual_seed(14);
  auto inner = std::make_shared<InnerImpl>();
  QuantizationWrapper w(nn::AnyModule(inner),
                        NodeQuantizationDispatcher({{"sub.weight", per_channel_quantizer(3, 0)}}, {}));
  EXPECT_NE(w->named_parameters(false).find("sub_weight"), nullptr);
  EXPECT_EQ(w->named_parameters().find("layer.sub.weight"), nullptr);
  w->eval();
  const at::Tensor x = ::torch::randn({4, 5});
  const at::Tensor qw = w->get_quantized_weights().at("sub.weight");
  EXPECT_TRUE(bit_equal(w->forward(x), ::torch::linear(x, qw, inner->sub->bias)));
}

TEST(QuantizationWrapper, SetDispatcherAddsAndReplacesQuantizers) {
  ::torch::manual_seed(15);
  nn::Linear fc(6, 4);
  QuantizationWrapper w(nn::AnyModule(fc), weights_only(per_channel_quantizer(4, 0)));
  const auto bq = std::make_shared<qi::WeightsSymmetricInferableQuantizer>(
      3, std::vector<double>{0.5}, false);
  const auto wq = std::make_shared<qi::WeightsSymmetricInferableQuantizer>(
      3, std::vector<double>{0.5}, false);
  w->set_dispatcher(NodeQuantizationDispatcher({{"weight", wq}, {"bias", bq}}, {}));
  w->eval();
  const at::Tensor x = ::torch::randn({3, 6});
  EXPECT_TRUE(bit_equal(w->forward(x),
                        ::torch::linear(x, qi::torch::fake_quant(w->float_weight("weight"), *wq),
                                        qi::torch::fake_quant(w->float_weight("bias"), *bq))));
  expect_qi_error(
      [&] { w->set_dispatcher(NodeQuantizationDispatcher({{"kernel", wq}}, {})); },
      "no parameter \"kernel\"");
}

// ---- trainable quantizers in the wrapper ---------------------------------------------------------

qi::TrainableQuantizerWeightsConfig symmetric_weights_config(QuantizationMethod method,
                                                             std::vector<double> thresholds) {
  qi::TrainableQuantizerWeightsConfig c;
  c.weights_quantization_method = method;
  c.weights_n_bits = 4;
  c.weights_channels_axis = 0;
  c.weights_per_channel_threshold = true;
  const int64_t n = static_cast<int64_t>(thresholds.size());
  c.weights_quantization_params = {{"threshold", ParamArray{{n, 1}, std::move(thresholds)}}};
  return c;
}

qi::TrainableQuantizerActivationConfig activation_config(QuantizationMethod method) {
  qi::TrainableQuantizerActivationConfig c;
  c.activation_quantization_method = method;
  c.activation_n_bits = 6;
  if (method == QuantizationMethod::UNIFORM)
    c.activation_quantization_params = {{"range_min", -1.5}, {"range_max", 2.0}};
  else
    c.activation_quantization_params = {{"threshold", 2.0}, {"is_signed", true}};
  return c;
}

at::Tensor param(nn::Module& m, const std::string& name) {
  const auto params = m.named_parameters(/*recurse=*/false);  // find() points into this dict
  const at::Tensor* p = params.find(name);
  EXPECT_NE(p, nullptr) << "no parameter " << name;
  return p ? *p : at::Tensor();
}

TEST(QuantizationWrapper, LsqTrainsWeightAndThresholdThenConvertsExactly) {
  ::torch::manual_seed(10);
  nn::Conv2d conv(nn::Conv2dOptions(3, 6, 3).padding(1));
  auto wq = qi::torch::make_trainable_quantizer(
      TrainingMethod::LSQ,
      symmetric_weights_config(QuantizationMethod::SYMMETRIC, {0.2, 0.25, 0.3, 0.15, 0.2, 0.35}));
  auto aq = qi::torch::make_trainable_quantizer(TrainingMethod::LSQ,
                                                activation_config(QuantizationMethod::UNIFORM));
  QuantizationWrapper w(nn::AnyModule(conv), NodeQuantizationDispatcher({{"weight", wq}}, {aq}));
  const at::Tensor threshold = param(*w, "weight_ptq_threshold_tensor");
  const at::Tensor act_min = param(*w, "tensor0_min");
  ASSERT_TRUE(threshold.requires_grad());

  const at::Tensor x = ::torch::randn({4, 3, 8, 8});
  const at::Tensor target = ::torch::randn({4, 6, 8, 8}) * 0.5;
  w->train();
  ::torch::optim::SGD opt(w->parameters(), ::torch::optim::SGDOptions(0.05));
  std::vector<double> losses;
  for (int step = 0; step < 5; ++step) {
    opt.zero_grad();
    const at::Tensor loss = ::torch::mse_loss(w->forward(x), target);
    loss.backward();
    if (step == 0) {
      ASSERT_TRUE(w->float_weight("weight").grad().defined());
      EXPECT_GT(w->float_weight("weight").grad().abs().sum().item<double>(), 0.0);
      ASSERT_TRUE(threshold.grad().defined());
      EXPECT_GT(threshold.grad().abs().sum().item<double>(), 0.0);
      ASSERT_TRUE(act_min.grad().defined());
    }
    losses.push_back(loss.item<double>());
    opt.step();
  }
  EXPECT_LT(losses.back(), losses.front());

  w->eval();
  const at::Tensor before = w->forward(x);
  const size_t params_before = w->named_parameters(false).size();
  w->convert_to_inferable_quantizers();
  for (const auto& [name, q] : w->dispatcher().weight_quantizers()) EXPECT_FALSE(q->is_trainable());
  for (const auto& q : w->dispatcher().activation_quantizers()) EXPECT_FALSE(q->is_trainable());
  const auto names = w->named_parameters(false);
  EXPECT_EQ(names.find("weight_ptq_threshold_tensor"), nullptr);
  EXPECT_EQ(names.find("tensor0_min"), nullptr);
  EXPECT_EQ(names.size(), params_before - 3);
  EXPECT_TRUE(bit_equal(w->forward(x), before));
  w->train();  // inferable quantizers: training mode gives the same
  EXPECT_TRUE(bit_equal(w->forward(x), before));
}

TEST(QuantizationWrapper, SoftRoundingTrainsAlphaThenConvertsExactly) {
  ::torch::manual_seed(11);
  nn::Linear fc(8, 3);
  auto wq = qi::torch::make_trainable_quantizer(
      TrainingMethod::SoftRounding,
      symmetric_weights_config(QuantizationMethod::SYMMETRIC, {0.4, 0.5, 0.45}));
  QuantizationWrapper w(nn::AnyModule(fc), weights_only(wq));
  const at::Tensor alpha = param(*w, "weight_auxvar_tensor");
  const at::Tensor x = ::torch::randn({16, 8});
  const at::Tensor target = ::torch::randn({16, 3});
  ::torch::optim::Adam opt(std::vector<at::Tensor>{alpha}, ::torch::optim::AdamOptions(0.05));
  w->train();
  std::vector<double> losses;
  for (int step = 0; step < 4; ++step) {
    opt.zero_grad();
    const at::Tensor loss = ::torch::mse_loss(w->forward(x), target) +
                            0.01 * qi::torch::soft_round_regularization(alpha, 4.0);
    loss.backward();
    ASSERT_TRUE(alpha.grad().defined());
    losses.push_back(loss.item<double>());
    opt.step();
  }
  EXPECT_NE(losses.back(), losses.front());
  w->eval();
  const at::Tensor before = w->forward(x);
  const at::Tensor hard = w->get_quantized_weights().at("weight");
  w->convert_to_inferable_quantizers();
  // The float weight now holds the hard-rounded values, which the inferable quantizer keeps.
  EXPECT_TRUE(bit_equal(w->float_weight("weight"), hard));
  EXPECT_TRUE(bit_equal(w->get_quantized_weights().at("weight"), hard));
  EXPECT_EQ(w->named_parameters(false).find("weight_auxvar_tensor"), nullptr);
  EXPECT_TRUE(bit_equal(w->forward(x), before));
}

// ---- activation holder -----------------------------------------------------------------------

TEST(ActivationQuantizationHolder, InferableQuantizerIsApplied) {
  const auto q = std::make_shared<qi::ActivationPOTInferableQuantizer>(
      4, std::vector<double>{2.0}, false);
  ActivationQuantizationHolder h(q);
  const at::Tensor x = ::torch::randn({3, 5}) * 2;
  EXPECT_TRUE(bit_equal(h->forward(x), qi::torch::fake_quant(x, *q)));
  h->eval();
  EXPECT_TRUE(bit_equal(h->forward(x), qi::torch::fake_quant(x, *q)));
  EXPECT_TRUE(h->parameters().empty());
  h->convert_to_inferable_quantizers();  // nothing to convert
  EXPECT_EQ(h->quantizer(), q);
}

TEST(ActivationQuantizationHolder, TrainableQuantizerTrainsAndConvertsExactly) {
  for (TrainingMethod tm : {TrainingMethod::STE, TrainingMethod::LSQ}) {
    for (QuantizationMethod m : {QuantizationMethod::POWER_OF_TWO, QuantizationMethod::UNIFORM}) {
      SCOPED_TRACE(::testing::Message() << qi::to_string(tm) << " " << qi::to_string(m));
      ActivationQuantizationHolder h(qi::torch::make_trainable_quantizer(tm, activation_config(m)));
      const auto params = h->named_parameters(false);
      if (m == QuantizationMethod::UNIFORM) {
        EXPECT_NE(params.find("activation_holder_quantizer_min"), nullptr);
        EXPECT_NE(params.find("activation_holder_quantizer_max"), nullptr);
      } else {
        EXPECT_NE(params.find("activation_holder_quantizer_ptq_threshold_tensor"), nullptr);
      }
      ::torch::manual_seed(12);
      const at::Tensor x = ::torch::randn({4, 3, 5}) * 2;
      h->train();
      ::torch::optim::SGD opt(h->parameters(), ::torch::optim::SGDOptions(0.01));
      for (int step = 0; step < 3; ++step) {
        opt.zero_grad();
        (h->forward(x) - x * 0.8).pow(2).mean().backward();
        for (const auto& p : h->parameters()) {
          ASSERT_TRUE(p.grad().defined());
          EXPECT_NE(p.grad().abs().sum().item<double>(), 0.0);
        }
        opt.step();
      }
      h->eval();
      const at::Tensor before = h->forward(x);
      h->convert_to_inferable_quantizers();
      EXPECT_FALSE(h->quantizer()->is_trainable());
      EXPECT_TRUE(h->parameters().empty());
      EXPECT_TRUE(bit_equal(h->forward(x), before));
    }
  }
}

TEST(ActivationQuantizationHolder, RejectsWeightsQuantizers) {
  expect_qi_error([] { ActivationQuantizationHolder(per_channel_quantizer(2, 0)); },
                  "expected an Activation quantizer");
  expect_qi_error([] { ActivationQuantizationHolder h{QuantizerPtr()}; }, "must not be null");
}

}  // namespace
