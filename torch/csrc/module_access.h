// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// What torch::nn::Module keeps protected and the LibTorch layer must change: its parameter dict
// (Module has no unregister_parameter and no way to define a parameter registered undefined).
#pragma once

#include <string>

#include <torch/nn/module.h>
#include <torch/ordered_dict.h>

namespace qi::torch::detail {

// The parameter dict, reached through a member pointer formed in a derived class.
struct ParameterDict : ::torch::nn::Module {
  static ::torch::OrderedDict<std::string, at::Tensor>& of(::torch::nn::Module& m) {
    return m.*(&ParameterDict::parameters_);
  }
};

}  // namespace qi::torch::detail
