// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Fuzz target: the model loader, qi::torch::load (load_from_memory). The first byte chooses the
// model (bit 1: inferable or trainable quantizers) and what the rest is (bit 0): the bytes of a
// model file, or the text of a quantizer record written with the model's tensors and valid
// checksums (so that the record's schema checks are reached, not only the checksum).
// Only qi::Error may come out. A refused load must leave the model as it was; an accepted one
// must give a model whose forward runs (in eval and in train mode).
#include <sstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "fuzz_util.h"
#include "qi/qi.h"
#include "qi/torch/qi_torch.h"

namespace {

namespace nn = ::torch::nn;
using qi::NodeQuantizationDispatcher;
using qi::torch::ActivationQuantizationHolder;
using qi::torch::QuantizationWrapper;
using QuantizerPtr = NodeQuantizationDispatcher::QuantizerPtr;

qi::TrainableQuantizerWeightsConfig weights_config(qi::QuantizationMethod method, int64_t channels) {
  qi::TrainableQuantizerWeightsConfig c;
  c.weights_quantization_method = method;
  c.weights_n_bits = 4;
  c.weights_channels_axis = 0;
  c.weights_per_channel_threshold = true;
  c.weights_quantization_params = {
      {"threshold", qi::ParamArray{{channels, 1}, std::vector<double>(static_cast<size_t>(channels), 0.5)}}};
  return c;
}

qi::TrainableQuantizerActivationConfig activation_config(qi::QuantizationMethod method) {
  qi::TrainableQuantizerActivationConfig c;
  c.activation_quantization_method = method;
  c.activation_n_bits = 6;
  if (method == qi::QuantizationMethod::UNIFORM)
    c.activation_quantization_params = {{"range_min", -1.5}, {"range_max", 2.0}};
  else
    c.activation_quantization_params = {{"threshold", 2.0}, {"is_signed", true}};
  return c;
}

// conv (3 channels) -> holder -> linear (2 outputs), on [1, 1, 4, 4] inputs.
struct NetImpl : nn::Module {
  explicit NetImpl(bool trainable) {
    nn::Conv2d c(nn::Conv2dOptions(1, 3, 3).padding(1));
    nn::Linear l(3 * 4 * 4, 2);
    NodeQuantizationDispatcher dc, dl;
    QuantizerPtr holder_q;
    if (!trainable) {
      dc = NodeQuantizationDispatcher(
          {{"weight", std::make_shared<qi::WeightsSymmetricInferableQuantizer>(
                          4, std::vector<double>{0.5, 0.25, 1.0}, true, 0)}},
          {});
      holder_q = std::make_shared<qi::ActivationPOTInferableQuantizer>(6, std::vector<double>{2.0}, false);
      dl = NodeQuantizationDispatcher(
          {{"weight", std::make_shared<qi::WeightsUniformInferableQuantizer>(
                          5, std::vector<double>(2, -0.2), std::vector<double>(2, 0.25), true, 0)}},
          {std::make_shared<qi::ActivationUniformInferableQuantizer>(8, std::vector<double>{-2.0},
                                                                     std::vector<double>{2.0})});
    } else {
      dc = NodeQuantizationDispatcher(
          {{"weight", qi::torch::make_trainable_quantizer(
                          qi::TrainingMethod::LSQ, weights_config(qi::QuantizationMethod::POWER_OF_TWO, 3))}},
          {qi::torch::make_trainable_quantizer(qi::TrainingMethod::LSQ,
                                               activation_config(qi::QuantizationMethod::UNIFORM))});
      holder_q = qi::torch::make_trainable_quantizer(qi::TrainingMethod::STE,
                                                     activation_config(qi::QuantizationMethod::SYMMETRIC));
      dl = NodeQuantizationDispatcher(
          {{"weight", qi::torch::make_trainable_quantizer(
                          qi::TrainingMethod::SoftRounding,
                          weights_config(qi::QuantizationMethod::SYMMETRIC, 2))}},
          {});
    }
    conv = register_module("conv", QuantizationWrapper(nn::AnyModule(c), dc));
    act = register_module("act", ActivationQuantizationHolder(holder_q));
    fc = register_module("fc", QuantizationWrapper(nn::AnyModule(l), dl));
  }
  at::Tensor forward(const at::Tensor& x) {
    return fc->forward(act->forward(::torch::relu(conv->forward(x))).flatten(1));
  }
  QuantizationWrapper conv{nullptr}, fc{nullptr};
  ActivationQuantizationHolder act{nullptr};
};
QI_TORCH_MODULE(Net);

Net make_net(bool trainable) {
  ::torch::manual_seed(7);
  return Net(trainable);
}

// Quantizer configs and tensor values, to tell whether a refused load changed anything.
struct State {
  std::vector<std::string> configs;
  std::vector<at::Tensor> tensors;
};

State state_of(Net& net) {
  State s;
  s.configs = {net->conv->dispatcher().get_config(), net->fc->dispatcher().get_config(),
               net->act->quantizer()->to_json()};
  for (const auto& p : net->named_parameters()) s.tensors.push_back(p.value().detach().clone());
  for (const auto& b : net->named_buffers()) s.tensors.push_back(b.value().detach().clone());
  return s;
}

bool same_state(const State& a, const State& b) {
  if (a.configs != b.configs || a.tensors.size() != b.tensors.size()) return false;
  for (size_t i = 0; i < a.tensors.size(); ++i)
    if (a.tensors[i].sizes() != b.tensors[i].sizes() || !a.tensors[i].equal(b.tensors[i])) return false;
  return true;
}

// Both models, as a file and as a record (the mode byte first).
void write_seeds() {
  for (bool trainable : {false, true}) {
    Net net = make_net(trainable);
    std::ostringstream file;
    qi::torch::detail::write_archive(*net, qi::torch::detail::quantizer_record(*net), file);
    const std::string name = trainable ? "trainable" : "inferable";
    qi_fuzz::write_seed(name + "_file", std::string(1, trainable ? '\x02' : '\x00') + file.str());
    qi_fuzz::write_seed(name + "_record.json",
                        std::string(1, trainable ? '\x03' : '\x01') +
                            qi::torch::detail::quantizer_record(*net));
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  at::set_num_threads(1);
  if (qi_fuzz::seed_dir() != nullptr) write_seeds();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static const bool initialized = [] {
    at::set_num_threads(1);  // also when replayed without libFuzzer
    return true;
  }();
  (void)initialized;
  const bool record_mode = (data[0] & 1) != 0;
  const bool trainable = (data[0] & 2) != 0;
  const std::string rest = qi_fuzz::text_of(data + 1, size - 1);
  Net net = make_net(trainable);
  std::string file;
  if (record_mode) {
    std::ostringstream out;
    bool written = false;
    qi_fuzz::expect_only_qi_errors("qi::torch::detail::write_archive", [&] {
      qi::torch::detail::write_archive(*net, rest, out);
      written = true;
    });
    if (!written) return 0;
    file = out.str();
  } else {
    file = rest;
  }
  const State before = state_of(net);
  bool loaded = false;
  qi_fuzz::expect_only_qi_errors("qi::torch::load", [&] {
    qi::torch::load_from_memory(*net, file.data(), file.size(), "fuzzed");
    loaded = true;
  });
  if (!loaded) {
    QI_FUZZ_CHECK(same_state(before, state_of(net)), "a refused load changed the model");
    return 0;
  }
  // Accepted: the model must run.
  const at::Tensor x = ::torch::linspace(-3.0, 3.0, 16).reshape({1, 1, 4, 4});
  for (bool train : {false, true}) {
    net->train(train);
    try {
      const at::Tensor y = net->forward(x);
      QI_FUZZ_CHECK(y.sizes() == at::IntArrayRef({1, 2}), "output sizes ", y.sizes());
    } catch (const std::exception& e) {
      QI_FUZZ_CHECK(false, "a loaded model's forward (train ", train, ") failed: ", e.what());
    }
  }
  return 0;
}
