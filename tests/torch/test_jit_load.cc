// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// A model wrapped in Python (PytorchQuantizationWrapper + holders), traced with torch.jit.trace
// and saved, loads and runs from C++ with the qi ops linked in, bit for bit as in Python; and
// the Python wrapper's output for a Conv2d equals the C++ front end's QuantizationWrapper with
// the same weights and dispatcher. tests/python/test_pytorch_jit.py writes the files and runs
// this test with QI_JIT_MODEL / QI_JIT_DATA set; without them it is skipped.
#include <cstdlib>
#include <iostream>
#include <string>

#include <gtest/gtest.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "qi/dispatcher.h"
#include "qi/torch/ops.h"
#include "qi/torch/wrapper.h"

namespace {

int64_t bit_mismatches(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes()) return a.numel() + b.numel();
  const at::Tensor ai = a.contiguous().view(at::kInt);
  const at::Tensor bi = b.contiguous().view(at::kInt);
  return ai.ne(bi).sum().item<int64_t>();
}

TEST(JitLoad, PythonTracedWrappedModelRunsFromCpp) {
  const char* model_path = std::getenv("QI_JIT_MODEL");
  const char* data_path = std::getenv("QI_JIT_DATA");
  if (model_path == nullptr || data_path == nullptr)
    GTEST_SKIP() << "QI_JIT_MODEL / QI_JIT_DATA not set (tests/python/test_pytorch_jit.py sets them)";
  qi::torch::init();
  torch::jit::script::Module model = torch::jit::load(model_path);
  model.eval();
  torch::jit::script::Module data = torch::jit::load(data_path);
  const at::Tensor x = data.attr("input").toTensor();
  const at::Tensor expected = data.attr("expected").toTensor();
  at::Tensor y;
  {
    torch::NoGradGuard no_grad;
    y = model.forward({x}).toTensor();
  }
  const int64_t mismatches = bit_mismatches(y, expected);
  std::cout << "QI_JIT_RESULT model compared=" << expected.numel() << " mismatches=" << mismatches
            << std::endl;
  EXPECT_EQ(mismatches, 0);
}

TEST(JitLoad, PythonWrapperMatchesCppFrontEnd) {
  const char* data_path = std::getenv("QI_JIT_DATA");
  if (data_path == nullptr)
    GTEST_SKIP() << "QI_JIT_DATA not set (tests/python/test_pytorch_jit.py sets it)";
  qi::torch::init();
  torch::jit::script::Module data = torch::jit::load(data_path);
  const at::Tensor x = data.attr("conv_input").toTensor();
  const at::Tensor expected = data.attr("conv_expected").toTensor();
  const at::Tensor weight = data.attr("conv_weight").toTensor();
  const at::Tensor bias = data.attr("conv_bias").toTensor();
  const std::string dispatcher_json = data.attr("conv_dispatcher").toStringRef();

  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(weight.size(1), weight.size(0), weight.size(2)));
  {
    torch::NoGradGuard no_grad;
    conv->weight.copy_(weight);
    conv->bias.copy_(bias);
  }
  qi::torch::QuantizationWrapper wrapper(torch::nn::AnyModule(conv),
                                         qi::NodeQuantizationDispatcher::from_config(dispatcher_json));
  wrapper->eval();
  at::Tensor y;
  {
    torch::NoGradGuard no_grad;
    y = wrapper->forward(x);
  }
  const int64_t mismatches = bit_mismatches(y, expected);
  std::cout << "QI_JIT_RESULT frontend compared=" << expected.numel()
            << " mismatches=" << mismatches << std::endl;
  EXPECT_EQ(mismatches, 0);
}

}  // namespace
