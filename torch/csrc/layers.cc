// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// What qi knows about layer types lives here and only here.
#include <torch/torch.h>

#include "qi/torch/wrapper.h"

namespace qi::torch {

int64_t weight_channel_axis(const ::torch::nn::Module& layer, const std::string& attribute) {
  if (attribute != "weight") return 0;
  if (dynamic_cast<const ::torch::nn::ConvTranspose1dImpl*>(&layer) ||
      dynamic_cast<const ::torch::nn::ConvTranspose2dImpl*>(&layer) ||
      dynamic_cast<const ::torch::nn::ConvTranspose3dImpl*>(&layer))
    return 1;
  return 0;
}

std::vector<std::pair<std::string, QuantizationWrapper>> find_wrappers(::torch::nn::Module& model) {
  std::vector<std::pair<std::string, QuantizationWrapper>> out;
  for (const auto& item : model.named_modules("", /*include_self=*/true))
    if (auto w = std::dynamic_pointer_cast<QuantizationWrapperImpl>(item.value()))
      out.emplace_back(item.key(), QuantizationWrapper(w));
  return out;
}

std::vector<std::pair<std::string, ActivationQuantizationHolder>> find_holders(
    ::torch::nn::Module& model) {
  std::vector<std::pair<std::string, ActivationQuantizationHolder>> out;
  for (const auto& item : model.named_modules("", /*include_self=*/true))
    if (auto h = std::dynamic_pointer_cast<ActivationQuantizationHolderImpl>(item.value()))
      out.emplace_back(item.key(), ActivationQuantizationHolder(h));
  return out;
}

}  // namespace qi::torch
