// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Fuzz target: quantizer JSON. The input is text read by qi::quantizer_from_json ({"class_name",
// "config"}) and, as a bare config, by inferable_quantizer_from_config for every registered
// class. Only qi::Error may come out. What loads must write itself back identically and, for an
// inferable quantizer, run on small tensors: finite inputs give finite outputs, bit-equal to the
// double-precision reference.
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "fuzz_util.h"
#include "kernels/reference.h"
#include "qi/qi.h"

namespace {

bool same_bits(float a, float b) {
  if (std::isnan(a) && std::isnan(b)) return true;
  return std::memcmp(&a, &b, sizeof(float)) == 0;
}

// Runs an inferable quantizer on a few shapes around its channel count.
void exercise_inferable(const qi::BaseInferableQuantizer& q) {
  const int64_t c = q.num_channels();
  const auto family = q.info().family;
  const bool lut = family == qi::ParamFamily::kLutWeights || family == qi::ParamFamily::kLutActivation;
  const bool check_values = !qi_fuzz::known_unfixed_finding(q.params(), lut);
  if (c > 64) return;  // bounded work per input
  const std::vector<qi::Shape> shapes = {{c}, {c, 3}, {3, c}, {2, c, 2}, {5}, {}};
  const float specials[] = {0.0f, -0.0f, 1e-30f, -7.5f, 3.25f, 1e30f, -1e30f, 0.5f, -0.49f, 100.0f};
  for (const qi::Shape& shape : shapes) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    std::vector<float> x(static_cast<size_t>(n));
    for (size_t i = 0; i < x.size(); ++i) x[i] = specials[i % 10] * (1.0f + 0.01f * static_cast<float>(i));
    std::vector<float> y;
    try {
      y = q.apply(x, shape);
    } catch (const qi::Error&) {
      continue;  // the shape does not fit the quantizer: refused as documented
    }
    QI_FUZZ_CHECK(y.size() == x.size(), q.class_name(), ": output size ", y.size());
    if (!check_values) continue;
    const std::vector<float> want =
        qi::reference::fake_quant(q.info().kind, q.params(), qi::ConstTensorView(x.data(), shape));
    for (size_t i = 0; i < y.size(); ++i) {
      QI_FUZZ_CHECK(std::isfinite(y[i]), q.class_name(), ": finite input ", x[i],
                    " gave ", y[i], " at ", i, "; config ", q.get_config());
      QI_FUZZ_CHECK(same_bits(y[i], want[i]), q.class_name(), ": ", x[i], " -> ", y[i],
                    " but the reference gives ", want[i], "; config ", q.get_config());
    }
  }
}

void check_round_trip(const qi::BaseQuantizer& q) {
  const std::string json = q.to_json();
  const auto again = qi::quantizer_from_json(json);
  QI_FUZZ_CHECK(again != nullptr && again->to_json() == json, "to_json does not read back: ", json);
}

qi::TrainableQuantizerWeightsConfig weights_config(qi::QuantizationMethod m) {
  qi::TrainableQuantizerWeightsConfig c;
  c.weights_quantization_method = m;
  c.weights_n_bits = 4;
  if (m == qi::QuantizationMethod::UNIFORM)
    c.weights_quantization_params = {{"range_min", qi::ParamArray{{3, 1}, {-1.0, -0.5, -0.25}}},
                                     {"range_max", qi::ParamArray{{3, 1}, {1.0, 0.5, 0.75}}}};
  else
    c.weights_quantization_params = {{"threshold", qi::ParamArray{{3, 1}, {1.0, 0.5, 0.25}}}};
  return c;
}

qi::TrainableQuantizerActivationConfig activation_config(qi::QuantizationMethod m) {
  qi::TrainableQuantizerActivationConfig c;
  c.activation_quantization_method = m;
  if (m == qi::QuantizationMethod::UNIFORM)
    c.activation_quantization_params = {{"range_min", -1.0}, {"range_max", 3.0}};
  else
    c.activation_quantization_params = {{"threshold", 2.0}, {"is_signed", false}};
  return c;
}

// Every registered class: inferable ones per tensor and per channel (to_json and bare config),
// trainable ones from a config of each method they serve.
void write_seeds() {
  for (const auto& info : qi::kInferableQuantizers) {
    const bool weights = info.target == qi::QuantizationTarget::Weights;
    for (int64_t channels : {int64_t{1}, int64_t{4}}) {
      if (channels > 1 && !weights) continue;
      const auto q = qi::inferable_quantizer_from_config(
          info.kind, qi::example_inferable_config(info.kind, channels, channels > 1 ? -1 : 0));
      const std::string base = std::string(info.class_name) + "_" + std::to_string(channels);
      qi_fuzz::write_seed(base + ".json", q->to_json());
      qi_fuzz::write_seed(base + "_config.json", q->get_config());
    }
  }
  for (const auto& info : qi::kTrainableQuantizers) {
    for (const auto m : info.methods()) {
      std::shared_ptr<qi::TrainableQuantizer> t;
      if (info.target == qi::QuantizationTarget::Weights)
        t = std::make_shared<qi::TrainableQuantizer>(info.kind, weights_config(m));
      else
        t = std::make_shared<qi::TrainableQuantizer>(info.kind, activation_config(m));
      qi_fuzz::write_seed(std::string(info.class_name) + "_" + qi::to_string(m) + ".json", t->to_json());
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (qi_fuzz::seed_dir() != nullptr) write_seeds();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text = qi_fuzz::text_of(data, size);
  qi_fuzz::expect_only_qi_errors("quantizer_from_json", [&] {
    const auto q = qi::quantizer_from_json(text);
    QI_FUZZ_CHECK(q != nullptr, "quantizer_from_json returned null");
    check_round_trip(*q);
    if (const auto* inf = dynamic_cast<const qi::BaseInferableQuantizer*>(q.get()))
      exercise_inferable(*inf);
  });
  for (const auto& info : qi::kInferableQuantizers) {
    qi_fuzz::expect_only_qi_errors("inferable_quantizer_from_config", [&] {
      const auto q = qi::inferable_quantizer_from_config(info.kind, text);
      QI_FUZZ_CHECK(q != nullptr, "inferable_quantizer_from_config returned null");
      check_round_trip(*q);
      exercise_inferable(*q);
    });
  }
  return 0;
}
