// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// A program that links qi::torch but calls none of its functions still finds the qi ops: the
// library's DT_NEEDED entry is kept (qi::torch links with --no-as-needed) and its static
// registrations run when it loads. So a TorchScript model holding qi ops loads and runs in a C++
// program with no qi::torch::init() and no torch::ops::load_library.
//
//   qi_torch_link_test                   the qi ops are in the dispatcher; fake_quant runs
//   qi_torch_link_test MODEL DATA        also loads MODEL (a traced wrapped model) and compares
//                                        its output on DATA's "input" with DATA's "expected"
//                                        (tests/python/test_pytorch_jit.py writes both)
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/script.h>
#include <torch/torch.h>

#include <iostream>
#include <string>

int main(int argc, char** argv) {
  for (const char* name : {"qi::fake_quant", "qi::quantize", "qi::symmetric_quant",
                           "qi::uniform_quant", "qi::format_quant", "qi::soft_round"}) {
    if (!c10::Dispatcher::singleton().findSchema({name, ""})) {
      std::cerr << name << " is not registered: linking qi::torch did not load it\n";
      return 1;
    }
  }
  const auto fake_quant = c10::Dispatcher::singleton()
                              .findSchemaOrThrow("qi::fake_quant", "")
                              .typed<at::Tensor(const at::Tensor&, c10::string_view)>();
  const std::string config =
      R"({"class_name": "ActivationPOTInferableQuantizer", "config": )"
      R"({"num_bits": 4, "threshold": [2.0], "signed": true}})";
  const at::Tensor y = fake_quant.call(torch::tensor({-3.0f, -0.3f, 0.1f, 0.6f, 5.0f}), config);
  // 4 bits signed, threshold 2: step 0.25, grid [-2, 1.75].
  const at::Tensor expected = torch::tensor({-2.0f, -0.25f, 0.0f, 0.5f, 1.75f});
  if (!torch::equal(y, expected)) {
    std::cerr << "qi::fake_quant gave " << y << ", expected " << expected << "\n";
    return 1;
  }
  std::cout << "qi ops registered by linking qi::torch\n";
  if (argc < 3) return 0;
  torch::jit::script::Module model = torch::jit::load(argv[1]);
  model.eval();
  torch::jit::script::Module data = torch::jit::load(argv[2]);
  torch::NoGradGuard no_grad;
  const at::Tensor got = model.forward({data.attr("input").toTensor()}).toTensor();
  const at::Tensor want = data.attr("expected").toTensor();
  if (!torch::equal(got, want)) {
    std::cerr << "the traced model's output differs from Python's\n";
    return 1;
  }
  std::cout << "traced model loaded and ran bit for bit (" << want.numel() << " values)\n";
  return 0;
}
