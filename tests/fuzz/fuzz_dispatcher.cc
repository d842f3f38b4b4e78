// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Fuzz target: dispatcher configs. The input is text read by NodeQuantizationDispatcher::
// from_config. Only qi::Error may come out; a dispatcher that loads must write itself back
// identically, hold no null quantizer and no empty attribute name.
#include <memory>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "qi/qi.h"

namespace {

// Empty, weights only, activations only, both, two attributes, trainable quantizers.
void write_seeds() {
  using Kind = qi::InferableQuantizerKind;
  auto inferable = [](Kind k, int64_t channels) {
    return std::shared_ptr<qi::BaseQuantizer>(
        qi::inferable_quantizer_from_config(k, qi::example_inferable_config(k, channels)));
  };
  qi::TrainableQuantizerActivationConfig act;
  act.activation_quantization_params = {{"threshold", 2.0}, {"is_signed", true}};
  qi::TrainableQuantizerWeightsConfig w;
  w.weights_quantization_params = {{"threshold", qi::ParamArray{{3, 1}, {0.5, 0.5, 1.0}}}};
  const std::vector<qi::NodeQuantizationDispatcher> ds = {
      qi::NodeQuantizationDispatcher(),
      qi::NodeQuantizationDispatcher({{"weight", inferable(Kind::WeightsSymmetricInferableQuantizer, 3)}}, {}),
      qi::NodeQuantizationDispatcher({}, {inferable(Kind::ActivationUniformInferableQuantizer, 1)}),
      qi::NodeQuantizationDispatcher({{"weight", inferable(Kind::WeightsLUTPOTInferableQuantizer, 2)},
                                      {"bias", inferable(Kind::WeightsUniformInferableQuantizer, 1)}},
                                     {inferable(Kind::ActivationPOTInferableQuantizer, 1)}),
      qi::NodeQuantizationDispatcher(
          {{"kernel", std::make_shared<qi::TrainableQuantizer>(qi::TrainableQuantizerKind::LSQWeightQATQuantizer, w)}},
          {std::make_shared<qi::TrainableQuantizer>(
              qi::TrainableQuantizerKind::STESymmetricActivationTrainableQuantizer, act)}),
  };
  for (size_t i = 0; i < ds.size(); ++i)
    qi_fuzz::write_seed("dispatcher_" + std::to_string(i) + ".json", ds[i].get_config());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (qi_fuzz::seed_dir() != nullptr) write_seeds();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text = qi_fuzz::text_of(data, size);
  qi_fuzz::expect_only_qi_errors("NodeQuantizationDispatcher::from_config", [&] {
    const auto d = qi::NodeQuantizationDispatcher::from_config(text);
    for (const auto& [name, q] : d.weight_quantizers())
      QI_FUZZ_CHECK(!name.empty() && q != nullptr, "empty attribute name or null quantizer");
    for (const auto& q : d.activation_quantizers()) QI_FUZZ_CHECK(q != nullptr, "null quantizer");
    const std::string config = d.get_config();
    const auto again = qi::NodeQuantizationDispatcher::from_config(config);
    QI_FUZZ_CHECK(again.get_config() == config, "get_config does not read back: ", config);
  });
  return 0;
}
