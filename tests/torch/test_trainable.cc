// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The trainable quantizers of the torch layer: registry, variables,
// freezing, forward, and conversion to inferable quantizers bit for bit.
#include <cmath>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "qi/base_quantizer.h"
#include "qi/configs.h"
#include "qi/torch/ops.h"
#include "qi/torch/quantizers.h"
#include "qi/trainable_quantizers.h"
#include "torch_test_util.h"

namespace {

using qi::ParamArray;
using qi::QuantizationMethod;
using qi::QuantizationTarget;
using qi::TrainableQuantizerActivationConfig;
using qi::TrainableQuantizerWeightsConfig;
using qi::TrainingMethod;
using qi::VariableGroup;
using qi::torch::BaseTrainableQuantizer;
using TrainableQuantizerClass = qi::TrainableQuantizerInfo;
using qi_torch_test::all_close;
using qi_torch_test::bit_equal;
using qi_torch_test::expect_qi_error;

constexpr int64_t kChannels = 4;

TrainableQuantizerWeightsConfig weights_config(QuantizationMethod method, bool per_channel,
                                               int64_t n_bits = 4, int64_t axis = 0) {
  TrainableQuantizerWeightsConfig c;
  c.weights_quantization_method = method;
  c.weights_n_bits = n_bits;
  c.weights_channels_axis = axis;
  c.weights_per_channel_threshold = per_channel;
  // The formats: E2M1 (4 bits). FLOAT scales per channel or tensor; MX blocks of 2 along the
  // last axis; NVFP4 blocks of 16 along the last axis (make_instance's NVFP4 weights are
  // [4, 16]).
  if (method == QuantizationMethod::FLOAT) {
    c.weights_quantization_params = {
        {"scale", per_channel ? qi::QuantizationParam(ParamArray{{kChannels, 1, 1, 1},
                                                                  {0.05, 0.08, 0.1, 0.03}})
                              : qi::QuantizationParam(0.07)}};
    return c;
  }
  if (method == QuantizationMethod::MX) {
    c.weights_quantization_params = {{"block_size", 2.0}, {"pre_scale", 1.3}};
    return c;
  }
  if (method == QuantizationMethod::NVFP4) {
    c.weights_quantization_params = {{"tensor_scale", 0.001}};
    return c;
  }
  if (method == QuantizationMethod::UNIFORM) {
    if (per_channel) {
      // Channels with min < 0 < max, min > 0 and max < 0 (docs/numerics.md).
      c.weights_quantization_params = {
          {"range_min", ParamArray{{kChannels, 1, 1, 1}, {-1.0, -0.5, 0.2, -2.0}}},
          {"range_max", ParamArray{{kChannels, 1, 1, 1}, {1.0, 0.7, 1.5, -0.1}}}};
    } else {
      c.weights_quantization_params = {{"range_min", -0.7}, {"range_max", 1.2}};
    }
  } else if (per_channel) {
    c.weights_quantization_params = {
        {"threshold", ParamArray{{kChannels, 1, 1, 1}, {0.5, 1.3, 2.0, 0.9}}}};
  } else {
    c.weights_quantization_params = {{"threshold", 1.3}};
  }
  return c;
}

TrainableQuantizerActivationConfig activation_config(QuantizationMethod method,
                                                     bool is_signed = true) {
  TrainableQuantizerActivationConfig c;
  c.activation_quantization_method = method;
  c.activation_n_bits = 5;
  if (method == QuantizationMethod::FLOAT || method == QuantizationMethod::MX ||
      method == QuantizationMethod::NVFP4) {
    // E4M3 (FLOAT: scale 0.02; MX: blocks of 3 along the last axis), NVFP4 blocks of 16 along
    // the channels of make_instance's [2, 16, 3, 3] activations.
    c.activation_n_bits = method == QuantizationMethod::NVFP4 ? 4 : 8;
    if (method == QuantizationMethod::FLOAT) c.activation_quantization_params = {{"scale", 0.02}};
    if (method == QuantizationMethod::MX)
      c.activation_quantization_params = {{"block_size", 3.0}, {"pre_scale", 0.8}};
    if (method == QuantizationMethod::NVFP4)
      c.activation_quantization_params = {{"block_axis", 1.0}, {"tensor_scale", 0.002}};
    return c;
  }
  if (method == QuantizationMethod::UNIFORM)
    c.activation_quantization_params = {{"range_min", -1.0}, {"range_max", 3.0}};
  else
    c.activation_quantization_params = {{"threshold", 3.0}, {"is_signed", is_signed}};
  return c;
}

// A quantizer of class `cls` for `method`, initialized on `module`, and the tensor it quantizes:
// for weights the module's parameter "weight" (registered first, as the wrapper does), for
// activations an NCHW batch.
struct Instance {
  std::shared_ptr<BaseTrainableQuantizer> q;
  std::shared_ptr<::torch::nn::Module> module;
  at::Tensor x;
  bool weights = true;
};

// Weights: channels along `axis` of a rank-4 weight.
Instance make_instance(const TrainableQuantizerClass& cls, QuantizationMethod method,
                       bool per_channel, bool freeze = false, int64_t axis = 0) {
  Instance in;
  in.module = std::make_shared<::torch::nn::Module>();
  in.weights = cls.target == QuantizationTarget::Weights;
  if (in.weights) {
    in.q = qi::torch::make_trainable_quantizer(
        cls.training_method, weights_config(method, per_channel, 4, axis), freeze);
    ::torch::manual_seed(1);
    std::vector<int64_t> shape = {3, 2, 2, 2};
    shape.insert(shape.begin() + (axis < 0 ? axis + 4 : axis), kChannels);
    shape.pop_back();
    if (method == QuantizationMethod::NVFP4) shape = {kChannels, 16};
    // Inside every threshold's grid, so that soft rounding starts at the float weights.
    const at::Tensor w = (::torch::rand(shape) * 2 - 1) * 0.4;
    in.x = in.module->register_parameter("weight", w);
    in.q->initialize_quantization(in.x.sizes(), "weight", *in.module);
  } else {
    in.q = qi::torch::make_trainable_quantizer(cls.training_method, activation_config(method),
                                               freeze);
    ::torch::manual_seed(2);
    in.x = ::torch::randn({2, method == QuantizationMethod::NVFP4 ? 16 : 5, 3, 3}) * 2;
    in.q->initialize_quantization({}, "act", *in.module);
  }
  return in;
}

// Calls fn(class, method, per_channel) for every registered class and each method it serves.
template <typename F>
void for_each_class(F&& fn) {
  for (const auto& cls : qi::kTrainableQuantizers) {
    for (QuantizationMethod m : cls.methods()) {
      for (bool per_channel : {true, false}) {
        if (cls.target == QuantizationTarget::Activation && !per_channel) continue;
        // NVFP4 activations have nothing to learn: LSQ refuses them (a test of its own).
        if (cls.target == QuantizationTarget::Activation && m == QuantizationMethod::NVFP4 &&
            cls.training_method == TrainingMethod::LSQ)
          continue;
        // NVFP4 LSQ weights learn one block scale per (channel, block): per channel only.
        if (cls.target == QuantizationTarget::Weights && m == QuantizationMethod::NVFP4 &&
            cls.training_method == TrainingMethod::LSQ && !per_channel)
          continue;
        SCOPED_TRACE(::testing::Message() << cls.class_name << " " << qi::to_string(m)
                                          << (per_channel ? " per-channel" : " per-tensor"));
        fn(cls, m, per_channel);
      }
    }
  }
}

// The converted quantizer's output equals forward(x, training=false) bit for bit (soft rounding:
// the converted quantizer keeps the hard-rounded weights unchanged).
void expect_conversion_exact(const Instance& in) {
  ::torch::NoGradGuard ng;
  const at::Tensor eval = in.q->forward(in.x, /*training=*/false);
  const auto inferable = in.q->convert_to_inferable();
  ASSERT_NE(inferable, nullptr);
  EXPECT_EQ(inferable->quantization_target(), in.q->quantization_target());
  EXPECT_EQ(inferable->quantization_method(), in.q->quantization_method());
  EXPECT_FALSE(inferable->is_trainable());
  if (in.q->replaces_weight())
    EXPECT_TRUE(bit_equal(qi::torch::fake_quant(eval, *inferable), eval));
  else
    EXPECT_TRUE(bit_equal(qi::torch::fake_quant(in.x, *inferable), eval));
}

TEST(TrainableRegistry, ListsTheClassesOfTheXMacro) {
  std::vector<std::string> expected;
#define QI_NAME(Name, Target, TM, Family, Doc) expected.push_back(#Name);
  QI_FOR_EACH_TRAINABLE_QUANTIZER(QI_NAME)
#undef QI_NAME
  std::vector<std::string> got;
  for (const auto& c : qi::kTrainableQuantizers) got.push_back(c.class_name);
  EXPECT_EQ(got, expected);
}

TEST(TrainableRegistry, LookupMatchesReferenceTable) {
  using QM = QuantizationMethod;
  const auto W = QuantizationTarget::Weights, A = QuantizationTarget::Activation;
  const std::vector<std::tuple<QuantizationTarget, QM, TrainingMethod, std::string>> table = {
      {W, QM::POWER_OF_TWO, TrainingMethod::STE, "STEWeightQATQuantizer"},
      {W, QM::SYMMETRIC, TrainingMethod::STE, "STEWeightQATQuantizer"},
      {W, QM::UNIFORM, TrainingMethod::STE, "STEUniformWeightQATQuantizer"},
      {W, QM::POWER_OF_TWO, TrainingMethod::LSQ, "LSQWeightQATQuantizer"},
      {W, QM::SYMMETRIC, TrainingMethod::LSQ, "LSQWeightQATQuantizer"},
      {W, QM::UNIFORM, TrainingMethod::LSQ, "LSQUniformWeightQATQuantizer"},
      {A, QM::POWER_OF_TWO, TrainingMethod::STE, "STESymmetricActivationTrainableQuantizer"},
      {A, QM::SYMMETRIC, TrainingMethod::STE, "STESymmetricActivationTrainableQuantizer"},
      {A, QM::UNIFORM, TrainingMethod::STE, "STEUniformActivationTrainableQuantizer"},
      {A, QM::POWER_OF_TWO, TrainingMethod::LSQ, "LSQSymmetricActivationTrainableQuantizer"},
      {A, QM::SYMMETRIC, TrainingMethod::LSQ, "LSQSymmetricActivationTrainableQuantizer"},
      {A, QM::UNIFORM, TrainingMethod::LSQ, "LSQUniformActivationTrainableQuantizer"},
      {W, QM::POWER_OF_TWO, TrainingMethod::SoftRounding, "SymmetricSoftRoundingGPTQ"},
      {W, QM::SYMMETRIC, TrainingMethod::SoftRounding, "SymmetricSoftRoundingGPTQ"},
      {W, QM::UNIFORM, TrainingMethod::SoftRounding, "UniformSoftRoundingGPTQ"},
      {W, QM::FLOAT, TrainingMethod::STE, "STEFloatWeightQATQuantizer"},
      {W, QM::MX, TrainingMethod::LSQ, "LSQFloatWeightQATQuantizer"},
      {A, QM::NVFP4, TrainingMethod::STE, "STEFloatActivationTrainableQuantizer"},
      {A, QM::MX, TrainingMethod::LSQ, "LSQFloatActivationTrainableQuantizer"},
  };
  for (const auto& [target, method, tm, name] : table) {
    EXPECT_EQ(qi::get_trainable_quantizer_class(target, method, tm).class_name, name);
  }
}

TEST(TrainableRegistry, NoMatchRaisesWithMessage) {
  expect_qi_error(
      [] {
        qi::get_trainable_quantizer_class(QuantizationTarget::Weights,
                                                 QuantizationMethod::LUT_POT_QUANTIZER,
                                                 TrainingMethod::STE);
      },
      "found 0 trainable quantizers for target Weights, method LUT_POT_QUANTIZER and training "
      "method STE");
  expect_qi_error(
      [] {
        qi::get_trainable_quantizer_class(QuantizationTarget::Activation,
                                                 QuantizationMethod::UNIFORM,
                                                 TrainingMethod::SoftRounding);
      },
      "found 0 trainable quantizers");
  expect_qi_error(
      [] {
        qi::get_trainable_quantizer_class(QuantizationTarget::Weights,
                                                 QuantizationMethod::UNIFORM, TrainingMethod::DQA);
      },
      "training method DQA");
  expect_qi_error(
      [] {
        qi::torch::make_trainable_quantizer(
            TrainingMethod::LSQ, weights_config(QuantizationMethod::LUT_SYM_QUANTIZER, true));
      },
      "LUT_SYM_QUANTIZER");
}

TEST(TrainableRegistry, WrongConfigKindAndMissingParamsRaise) {
  const auto& w = qi::get_trainable_quantizer_class(
      QuantizationTarget::Weights, QuantizationMethod::SYMMETRIC, TrainingMethod::STE);
  expect_qi_error(
      [&] { qi::TrainableQuantizer(w.kind, activation_config(QuantizationMethod::SYMMETRIC)); },
                  "expected weight quantization configuration");
  const auto& a = qi::get_trainable_quantizer_class(
      QuantizationTarget::Activation, QuantizationMethod::SYMMETRIC, TrainingMethod::LSQ);
  expect_qi_error(
      [&] { qi::TrainableQuantizer(a.kind, weights_config(QuantizationMethod::SYMMETRIC, true)); },
                  "expected activation quantization configuration");
  TrainableQuantizerWeightsConfig no_threshold = weights_config(QuantizationMethod::SYMMETRIC, true);
  no_threshold.weights_quantization_params.clear();
  expect_qi_error([&] { qi::torch::make_trainable_quantizer(TrainingMethod::LSQ, no_threshold); },
                  "quantization params must hold \"threshold\"");
  // Per-channel thresholds must fit the weight.
  auto q = qi::torch::make_trainable_quantizer(TrainingMethod::LSQ,
                                               weights_config(QuantizationMethod::SYMMETRIC, true));
  ::torch::nn::Module m;
  m.register_parameter("weight", ::torch::zeros({3, 2}));
  expect_qi_error([&] { q->initialize_quantization({3, 2}, "weight", m); },
                  "threshold holds 4 values but the tensor has 3 channels");
}

TEST(TrainableQuantizers, EveryClassInitializesRunsAndReportsItsIdentity) {
  for_each_class([](const TrainableQuantizerClass& cls, QuantizationMethod m, bool per_channel) {
    const Instance in = make_instance(cls, m, per_channel);
    EXPECT_STREQ(in.q->class_name(), cls.class_name);
    EXPECT_TRUE(in.q->is_trainable());
    EXPECT_EQ(in.q->quantization_method(), m);
    EXPECT_EQ(in.q->quantization_target(), cls.target);
    EXPECT_EQ(in.q->training_method(), cls.training_method);
    EXPECT_EQ(in.q->identifier(), qi::to_string(cls.training_method));
    // Every variable is a parameter of the module, under "<name>_<suffix>".
    const auto params = in.module->named_parameters(/*recurse=*/false);
    ASSERT_EQ(in.q->registered_names().size(), in.q->variables().size());
    for (const auto& name : in.q->registered_names()) {
      EXPECT_NE(params.find(name), nullptr) << name;
      EXPECT_EQ(name.rfind(in.weights ? "weight_" : "act_", 0), 0u) << name;
    }
    for (bool training : {true, false}) {
      const at::Tensor y = in.q->forward(in.x, training);
      EXPECT_EQ(y.sizes(), in.x.sizes());
      EXPECT_TRUE(::torch::isfinite(y).all().item<bool>());
    }
    // A JSON round trip gives the same class.
    const auto back = qi::quantizer_from_json(in.q->to_json());
    EXPECT_STREQ(back->class_name(), cls.class_name);
    EXPECT_TRUE(back->is_trainable());
  });
}

TEST(TrainableQuantizers, VariablesByGroupAndRequiresGrad) {
  // Expected (QPARAMS trainable, WEIGHTS trainable) counts, as in mct-quantizers.
  const std::map<std::string, std::pair<size_t, size_t>> expected = {
      {"STEWeightQATQuantizer", {0, 0}},
      {"STEUniformWeightQATQuantizer", {0, 0}},
      {"LSQWeightQATQuantizer", {1, 0}},
      {"LSQUniformWeightQATQuantizer", {2, 0}},
      {"STESymmetricActivationTrainableQuantizer", {1, 0}},
      {"STEUniformActivationTrainableQuantizer", {2, 0}},
      {"LSQSymmetricActivationTrainableQuantizer", {1, 0}},
      {"LSQUniformActivationTrainableQuantizer", {2, 0}},
      {"SymmetricSoftRoundingGPTQ", {0, 1}},
      {"UniformSoftRoundingGPTQ", {0, 1}},
  };
  for_each_class([&](const TrainableQuantizerClass& cls, QuantizationMethod m, bool per_channel) {
    const Instance in = make_instance(cls, m, per_channel);
    const auto qparams = in.q->get_trainable_variables(VariableGroup::QPARAMS);
    const auto weights = in.q->get_trainable_variables(VariableGroup::WEIGHTS);
    // The formats: LSQ weights and activations learn one variable (FLOAT's scales, MX's
    // pre-scale, NVFP4 weights' block scales, one per channel here), except NVFP4 activations.
    const bool format = cls.family == qi::TrainableFamily::kFormat;
    const bool learns = (cls.training_method == TrainingMethod::LSQ || !in.weights) &&
                        !(m == QuantizationMethod::NVFP4 && !in.weights);
    const auto want = format ? std::pair<size_t, size_t>{learns ? 1 : 0, 0}
                             : expected.at(cls.class_name);
    EXPECT_EQ(qparams.size(), want.first);
    EXPECT_EQ(weights.size(), want.second);
    for (const auto& t : qparams) {
      EXPECT_TRUE(t.requires_grad());
      const bool channels = in.weights && m != QuantizationMethod::MX &&
                            (per_channel || m == QuantizationMethod::NVFP4);
      EXPECT_EQ(t.numel(), channels ? kChannels : 1);
    }
    for (const auto& t : weights) {
      EXPECT_TRUE(t.requires_grad());
      EXPECT_EQ(t.sizes(), in.x.sizes());  // soft rounding: one alpha per weight
    }
    // The variables are the module's own parameters (same storage).
    const auto params = in.module->named_parameters(false);  // find() points into this dict
    for (const auto& [suffix, v] : in.q->variables()) {
      const at::Tensor* p = params.find((in.weights ? "weight_" : "act_") + suffix);
      ASSERT_NE(p, nullptr) << suffix;
      EXPECT_TRUE(p->is_same(v.tensor)) << suffix;
    }
  });
}

TEST(TrainableQuantizers, FreezeQuantParams) {
  for_each_class([](const TrainableQuantizerClass& cls, QuantizationMethod m, bool per_channel) {
    for (bool freeze : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "freeze=" << freeze);
      const Instance in = make_instance(cls, m, per_channel, freeze);
      EXPECT_EQ(in.q->freeze_quant_params(), freeze);
      // Activation quantizers learn their parameters unless frozen; weights quantizers as MCT:
      // LSQ learns them, STE and soft rounding keep them fixed.
      const bool learns = !in.weights || cls.training_method == TrainingMethod::LSQ;
      bool any_qparams = false;
      for (const auto& [suffix, v] : in.q->variables()) {
        if (v.group != VariableGroup::QPARAMS) continue;
        any_qparams = true;
        // NVFP4's tensor scale stays at its calibrated value.
        EXPECT_EQ(v.tensor.requires_grad(), learns && !freeze && suffix != "tensor_scale")
            << suffix;
      }
      EXPECT_TRUE(any_qparams);
      if (!freeze) continue;
      EXPECT_TRUE(in.q->get_trainable_variables(VariableGroup::QPARAMS).empty());
      // Making a quantization parameter trainable despite freezing is an error.
      for (const auto& [suffix, v] : in.q->variables()) {
        if (v.group != VariableGroup::QPARAMS) continue;
        at::Tensor t = v.tensor;
        t.set_requires_grad(true);
        break;
      }
      expect_qi_error([&] { in.q->get_trainable_variables(VariableGroup::QPARAMS); },
                      "freeze_quant_params");
      // WEIGHTS are unaffected by freezing.
      EXPECT_NO_THROW(in.q->get_trainable_variables(VariableGroup::WEIGHTS));
    }
  });
}

TEST(TrainableQuantizers, FreezeQuantParamsNow) {
  const auto& cls = qi::get_trainable_quantizer_class(
      QuantizationTarget::Activation, QuantizationMethod::UNIFORM, TrainingMethod::LSQ);
  const Instance in = make_instance(cls, QuantizationMethod::UNIFORM, true);
  EXPECT_EQ(in.q->get_trainable_variables(VariableGroup::QPARAMS).size(), 2u);
  in.q->freeze_quant_params_now();
  EXPECT_TRUE(in.q->freeze_quant_params());
  EXPECT_TRUE(in.q->get_trainable_variables(VariableGroup::QPARAMS).empty());
}

TEST(TrainableQuantizers, ConversionEqualsEvalForwardBitForBit) {
  for_each_class([](const TrainableQuantizerClass& cls, QuantizationMethod m, bool per_channel) {
    const Instance in = make_instance(cls, m, per_channel);
    expect_conversion_exact(in);
  });
}

TEST(TrainableQuantizers, ConversionEqualsEvalForwardAfterTraining) {
  for_each_class([](const TrainableQuantizerClass& cls, QuantizationMethod m, bool per_channel) {
    const Instance in = make_instance(cls, m, per_channel);
    std::vector<at::Tensor> vars = in.q->get_trainable_variables(VariableGroup::QPARAMS);
    for (const auto& t : in.q->get_trainable_variables(VariableGroup::WEIGHTS)) vars.push_back(t);
    ::torch::manual_seed(5);
    const at::Tensor target = ::torch::randn(in.x.sizes());
    std::vector<double> losses;
    if (!vars.empty()) {
      ::torch::optim::SGD opt(vars, ::torch::optim::SGDOptions(0.05));
      for (int step = 0; step < 4; ++step) {
        opt.zero_grad();
        const at::Tensor loss = (in.q->forward(in.x.detach(), true) - target).pow(2).mean();
        loss.backward();
        for (const auto& v : vars) {
          ASSERT_TRUE(v.grad().defined());
          EXPECT_GT(v.grad().abs().sum().item<double>(), 0.0);
        }
        losses.push_back(loss.item<double>());
        opt.step();
      }
      // NVFP4's learned block scales move in steps of their E4M3 spacing (8 at 66): four small
      // steps move b but not yet its E4M3 value, so the loss may stay.
      if (m != QuantizationMethod::NVFP4) {
        EXPECT_NE(losses.front(), losses.back());
      }
    }
    expect_conversion_exact(in);
    // Parameters off any power-of-two grid (POT thresholds are forced at eval and conversion).
    {
      ::torch::NoGradGuard ng;
      for (const auto& [suffix, v] : in.q->variables()) {
        at::Tensor t = v.tensor;
        if (suffix == "min" || suffix == "max") t.add_(0.013f);
        else if (suffix != "auxvar_tensor") t.mul_(1.37f);
      }
    }
    expect_conversion_exact(in);
  });
}

TEST(TrainableQuantizers, ConversionExactOnOtherChannelAxes) {
  // ConvTranspose weights have their output channels on axis 1; also a negative axis.
  for (int64_t axis : {1, -1}) {
    SCOPED_TRACE(::testing::Message() << "axis=" << axis);
    for_each_class([&](const TrainableQuantizerClass& cls, QuantizationMethod m, bool per_channel) {
      if (cls.target != QuantizationTarget::Weights || !per_channel) return;
      // NVFP4's [4, 16] instance has its channels on axis 0 (its axes: test_trainable_formats).
      if (m == QuantizationMethod::NVFP4) return;
      const Instance in = make_instance(cls, m, per_channel, false, axis);
      const int64_t a = axis < 0 ? axis + 4 : axis;
      ASSERT_EQ(in.x.size(a), kChannels);
      expect_conversion_exact(in);
      // One gradient step on whatever trains, then again.
      const at::Tensor y = in.q->forward(in.x.detach(), true);
      if (!y.requires_grad()) return;  // STE weights: nothing of the quantizer trains
      (y * y).sum().backward();
      ::torch::NoGradGuard ng;
      for (VariableGroup g : {VariableGroup::QPARAMS, VariableGroup::WEIGHTS})
        for (at::Tensor v : in.q->get_trainable_variables(g)) v.sub_(0.01 * v.grad());
      expect_conversion_exact(in);
    });
  }
}

TEST(TrainableQuantizers, TrainingAndEvalForwardAtInitialization) {
  // Symmetric weights at init: thresholds are already powers of two for POT, so train == eval.
  for (TrainingMethod tm : {TrainingMethod::STE, TrainingMethod::LSQ}) {
    for (QuantizationMethod m : {QuantizationMethod::SYMMETRIC, QuantizationMethod::POWER_OF_TWO}) {
      const auto& cls = qi::get_trainable_quantizer_class(QuantizationTarget::Weights, m, tm);
      const Instance in = make_instance(cls, m, true);
      EXPECT_TRUE(bit_equal(in.q->forward(in.x, true), in.q->forward(in.x, false)));
    }
  }
  // Activation POT: the threshold is not forced at init (torch), only at eval/conversion.
  const auto& act = qi::get_trainable_quantizer_class(
      QuantizationTarget::Activation, QuantizationMethod::POWER_OF_TWO, TrainingMethod::STE);
  const Instance a = make_instance(act, QuantizationMethod::POWER_OF_TWO, true);
  EXPECT_TRUE(bit_equal(a.q->forward(a.x, true),
                        qi::torch::symmetric_quant(a.x, ::torch::tensor({3.f}), 5, true,
                                                   std::nullopt, "ste", 1.0)));
  EXPECT_TRUE(bit_equal(a.q->forward(a.x, false),
                        qi::torch::symmetric_quant(a.x, ::torch::tensor({4.f}), 5, true,
                                                   std::nullopt, "ste", 1.0)));
  // Soft rounding: right after initialization the training forward gives the
  // float weights back, the hard-rounded eval forward does not.
  // (SYMMETRIC: a POT quantizer initializes with the stored thresholds but runs with
  // power-of-two ones, so it starts at the weights only when they already are powers of two.)
  {
    const QuantizationMethod m = QuantizationMethod::SYMMETRIC;
    for (bool per_channel : {true, false}) {
      const auto& cls = qi::get_trainable_quantizer_class(QuantizationTarget::Weights, m,
                                                                 TrainingMethod::SoftRounding);
      const Instance in = make_instance(cls, m, per_channel);
      EXPECT_TRUE(all_close(in.q->forward(in.x, true), in.x, 0, 1e-6));
      EXPECT_FALSE(all_close(in.q->forward(in.x, false), in.x, 0, 1e-6));
    }
  }
}

TEST(TrainableQuantizers, LsqGradientScale) {
  // Weights: g = 1 / sqrt(max_int * number of thresholds); activations: channels = dim 1.
  const auto& wcls = qi::get_trainable_quantizer_class(
      QuantizationTarget::Weights, QuantizationMethod::SYMMETRIC, TrainingMethod::LSQ);
  const Instance w = make_instance(wcls, QuantizationMethod::SYMMETRIC, true);
  const at::Tensor t = w.q->get_trainable_variables(VariableGroup::QPARAMS).at(0);
  w.q->forward(w.x, true).pow(2).sum().backward();
  at::Tensor tr = t.detach().clone().requires_grad_(true);
  qi::torch::symmetric_quant(w.x.detach(), tr, 4, true, 0, "lsq", 1.0 / std::sqrt(7.0 * kChannels))
      .pow(2).sum().backward();
  EXPECT_TRUE(bit_equal(t.grad(), tr.grad()));

  const auto& acls = qi::get_trainable_quantizer_class(
      QuantizationTarget::Activation, QuantizationMethod::SYMMETRIC, TrainingMethod::LSQ);
  const Instance a = make_instance(acls, QuantizationMethod::SYMMETRIC, true);
  const at::Tensor ta = a.q->get_trainable_variables(VariableGroup::QPARAMS).at(0);
  a.q->forward(a.x, true).pow(2).sum().backward();
  at::Tensor tar = ta.detach().clone().requires_grad_(true);
  qi::torch::symmetric_quant(a.x, tar, 5, true, std::nullopt, "lsq", 1.0 / std::sqrt(15.0 * 5))
      .pow(2).sum().backward();
  EXPECT_TRUE(bit_equal(ta.grad(), tar.grad()));
}

TEST(SoftRoundingRegularization, SumsTheSoftQuantizersWithAnnealedBeta) {
  const auto& cls = qi::get_trainable_quantizer_class(
      QuantizationTarget::Weights, QuantizationMethod::SYMMETRIC, TrainingMethod::SoftRounding);
  const Instance a = make_instance(cls, QuantizationMethod::SYMMETRIC, true);
  const Instance b = make_instance(cls, QuantizationMethod::SYMMETRIC, false);
  const auto& ste = qi::get_trainable_quantizer_class(
      QuantizationTarget::Weights, QuantizationMethod::SYMMETRIC, TrainingMethod::STE);
  const Instance other = make_instance(ste, QuantizationMethod::SYMMETRIC, true);
  const at::Tensor alpha_a = a.q->get_trainable_variables(VariableGroup::WEIGHTS).at(0);
  const at::Tensor alpha_b = b.q->get_trainable_variables(VariableGroup::WEIGHTS).at(0);

  qi::torch::SoftRoundingRegularization reg(10);  // beta 20 -> 2 between steps 2 and 10
  EXPECT_DOUBLE_EQ(reg.beta(), 20.0);
  const at::Tensor r0 = reg({a.q, other.q, b.q}, 0.5, {1.0, 3.0});
  const double expected0 = 0.5 *
      (qi::torch::soft_round_regularization(alpha_a, 20.0).item<double>() +
       3.0 * qi::torch::soft_round_regularization(alpha_b, 20.0).item<double>()) / 3.0;
  EXPECT_NEAR(r0.item<double>(), expected0, 1e-5 * std::fabs(expected0));
  for (int i = 0; i < 5; ++i) reg({a.q}, 1.0);
  EXPECT_EQ(reg.step(), 6);
  EXPECT_DOUBLE_EQ(reg.beta(), 20.0 + (6.0 - 2.0) / 8.0 * (2.0 - 20.0));
  // Gradient reaches alpha.
  reg({a.q}, 1.0).backward();
  ASSERT_TRUE(alpha_a.grad().defined());
  EXPECT_GT(alpha_a.grad().abs().sum().item<double>(), 0.0);
  expect_qi_error([&] { reg({a.q, b.q}, 1.0, {1.0}); }, "layer_weights must have one entry");
}

}  // namespace

namespace {

// A saved config whose method the class does not serve is refused on load.
TEST(TrainableRegistry, FromJsonRejectsAMethodTheClassDoesNotServe) {
  qi::TrainableQuantizerWeightsConfig cfg;
  cfg.weights_quantization_method = qi::QuantizationMethod::SYMMETRIC;
  cfg.weights_n_bits = 4;
  cfg.weights_quantization_params["threshold"] = 1.0;
  const auto q = qi::torch::make_trainable_quantizer(qi::TrainingMethod::STE, cfg);
  std::string text = q->to_json();
  const std::string from = "\"weights_quantization_method\":\"SYMMETRIC\"";
  const auto at = text.find(from);
  ASSERT_NE(at, std::string::npos) << text;
  text.replace(at, from.size(), "\"weights_quantization_method\":\"UNIFORM\"");
  try {
    qi::quantizer_from_json(text);
    FAIL() << "no error";
  } catch (const qi::Error& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "STEWeightQATQuantizer: Quantization method mismatch: expected one of "
                  "[POWER_OF_TWO, SYMMETRIC], received UNIFORM"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
