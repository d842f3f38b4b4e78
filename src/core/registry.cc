// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include "qi/registry.h"

#include <cstring>

#include "qi/error.h"

namespace qi {

const InferableQuantizerInfo& get_inferable_quantizer_class(QuantizationTarget target,
                                                            QuantizationMethod method) {
  for (const auto& info : kInferableQuantizers)
    if (info.target == target && info.method == method) return info;
  throw Error(str_cat("get_inferable_quantizer_class: no inferable quantizer for target ",
                      to_string(target), " and method ", to_string(method)));
}

const InferableQuantizerInfo& inferable_quantizer_info(const char* class_name) {
  for (const auto& info : kInferableQuantizers)
    if (std::strcmp(info.class_name, class_name) == 0) return info;
  std::string names;
  for (const auto& info : kInferableQuantizers) names += str_cat(names.empty() ? "" : ", ", info.class_name);
  throw Error(str_cat("class_name: unknown inferable quantizer \"", class_name,
                      "\"; expected one of ", names));
}

const InferableQuantizerInfo& inferable_quantizer_info(InferableQuantizerKind kind) {
  const auto i = static_cast<size_t>(kind);
  QI_CHECK(i < kInferableQuantizers.size(), "InferableQuantizerKind: invalid value ", i);
  return kInferableQuantizers[i];
}

}  // namespace qi
