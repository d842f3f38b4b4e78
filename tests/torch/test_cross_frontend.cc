// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The LibTorch side of tests/python/test_cross_frontend.py: runs the trainable-quantizer
// scenarios the Python test writes (QI_CROSS_FRONTEND_IN) through the C++ front end and writes
// every variable after every gradient step, and the converted quantizer, bit for bit
// (QI_CROSS_FRONTEND_OUT). Skipped when the variables are not set.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "qi/torch/ops.h"
#include "qi/torch/quantizers.h"

namespace {

using Json = nlohmann::json;

// Float32 tensors travel as {"shape", "bits"} (the uint32 patterns), so nothing is rounded.
at::Tensor tensor_of(const Json& j) {
  const auto bits = j.at("bits").get<std::vector<uint32_t>>();
  std::vector<float> values(bits.size());
  std::memcpy(values.data(), bits.data(), bits.size() * sizeof(float));
  return ::torch::tensor(values, ::torch::kFloat).reshape(j.at("shape").get<std::vector<int64_t>>());
}

Json json_of(const at::Tensor& t) {
  const at::Tensor c = t.detach().to(::torch::kFloat).contiguous();
  std::vector<uint32_t> bits(static_cast<size_t>(c.numel()));
  std::memcpy(bits.data(), c.const_data_ptr<float>(), bits.size() * sizeof(float));
  return Json{{"shape", c.sizes().vec()}, {"bits", bits}};
}

// One scenario: a quantizer (its to_json), the tensor it quantizes (a weight, or an NCHW
// activation), the output gradient dy, `steps` SGD steps of rate lr on L = sum(Q(t) * dy).
Json run(const Json& scenario) {
  auto q = qi::torch::as_trainable(qi::quantizer_from_json(scenario.at("quantizer").dump()));
  const bool weights = q->quantization_target() == qi::QuantizationTarget::Weights;
  ::torch::nn::Module module;
  at::Tensor t = tensor_of(scenario.at("x"));
  if (weights) t = module.register_parameter("weight", t);
  q->initialize_quantization(weights ? t.sizes() : at::IntArrayRef{}, weights ? "weight" : "act",
                             module);
  const at::Tensor dy = tensor_of(scenario.at("dy"));
  const double lr = scenario.at("lr").get<double>();
  Json out;
  out["steps"] = Json::array();
  for (int64_t s = 0; s < scenario.at("steps").get<int64_t>(); ++s) {
    const at::Tensor y = q->forward(t, /*training=*/true);
    if (y.requires_grad()) (y * dy).sum().backward();  // else nothing trains (NVFP4 activations)
    Json step;
    step["y"] = json_of(y);
    {
      ::torch::NoGradGuard guard;
      for (auto& [name, v] : q->variables())
        if (v.tensor.requires_grad() && v.tensor.grad().defined()) {
          v.tensor.sub_(lr * v.tensor.grad());
          v.tensor.mutable_grad() = at::Tensor();
        }
      if (weights && t.grad().defined()) {
        t.sub_(lr * t.grad());
        t.mutable_grad() = at::Tensor();
      }
    }
    for (const auto& [name, v] : q->variables()) step["variables"][name] = json_of(v.tensor);
    step["x"] = json_of(t);
    out["steps"].push_back(step);
  }
  ::torch::NoGradGuard guard;
  const at::Tensor eval = q->forward(t, /*training=*/false);
  const auto converted = q->convert_to_inferable();
  out["eval"] = json_of(eval);
  out["converted"] = Json::parse(converted->to_json());
  out["converted_y"] = json_of(qi::torch::fake_quant(q->replaces_weight() ? eval : t, *converted));
  return out;
}

TEST(CrossFrontEnd, TrainableScenarios) {
  const char* in = std::getenv("QI_CROSS_FRONTEND_IN");
  const char* out = std::getenv("QI_CROSS_FRONTEND_OUT");
  if (in == nullptr || out == nullptr) GTEST_SKIP() << "driven by test_cross_frontend.py";
  std::ifstream f(in);
  const Json scenarios = Json::parse(f);
  Json results = Json::array();
  for (const auto& s : scenarios) results.push_back(run(s));
  std::ofstream(out) << results.dump();
}

}  // namespace
