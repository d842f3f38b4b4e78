// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// The C++ core alone: per-channel weight quantization, an activation quantizer and a dispatcher.
#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

#include "qi/qi.h"

namespace {

void print_rows(const char* title, const std::vector<float>& t, int64_t rows, int64_t cols) {
  std::printf("%s\n", title);
  for (int64_t r = 0; r < rows; ++r) {
    std::printf("  [%lld]", static_cast<long long>(r));
    for (int64_t c = 0; c < cols; ++c) std::printf(" %10.6f", t[r * cols + c]);
    std::printf("\n");
  }
}

double max_abs_error(const std::vector<float>& a, const std::vector<float>& b) {
  double err = 0.0;
  for (size_t i = 0; i < a.size(); ++i) err = std::fmax(err, std::fabs(double(a[i]) - b[i]));
  return err;
}

}  // namespace

int main() {
  try {
    // A 4x6 "weight" tensor whose rows (channels, axis 0) have different ranges.
    constexpr int64_t kRows = 4, kCols = 6;
    const std::vector<double> thresholds = {0.5, 1.0, 2.0, 4.0};
    std::vector<float> w(kRows * kCols);
    for (int64_t r = 0; r < kRows; ++r)
      for (int64_t c = 0; c < kCols; ++c)
        w[r * kCols + c] = static_cast<float>(thresholds[r] * std::sin(0.9 * double(r * kCols + c) + 0.3));

    // 8 bits, signed, one threshold per channel along axis 0 (torch numerics by default).
    auto wq = std::make_shared<qi::WeightsSymmetricInferableQuantizer>(
        8, thresholds, /*per_channel=*/true, /*channel_axis=*/0);
    std::vector<float> wq_out = w;
    qi::TensorView view(wq_out.data(), {kRows, kCols});
    wq->apply_inplace(view);

    std::printf("qi %s, SIMD target: %s\n\n", qi::kVersion, qi::kernels::simd_target_name().c_str());
    std::printf("WeightsSymmetricInferableQuantizer: 8 bits, per channel (axis 0), thresholds 0.5 1 2 4\n");
    print_rows("input:", w, kRows, kCols);
    print_rows("quantized:", wq_out, kRows, kCols);
    // Step per channel: threshold / 2^(8 - 1); values past 127 steps clamp to the grid's end.
    std::printf("max |error| = %.6g (steps per channel: %g %g %g %g)\n\n", max_abs_error(w, wq_out),
                thresholds[0] / 128, thresholds[1] / 128, thresholds[2] / 128, thresholds[3] / 128);

    // Activations after a ReLU6: uniform 8-bit grid over [0, 6]; negatives clamp to 0.
    auto aq = std::make_shared<qi::ActivationUniformInferableQuantizer>(8, std::vector<double>{0.0},
                                                                        std::vector<double>{6.0});
    const std::vector<float> a = {-1.0f, 0.0f, 0.01f, 0.5f, 1.234f, 3.14159f, 5.99f, 7.5f};
    const std::vector<float> a_out = aq->apply(a, {static_cast<int64_t>(a.size())});
    std::printf("ActivationUniformInferableQuantizer: 8 bits, range [0, 6]\n");
    print_rows("input:", a, 1, static_cast<int64_t>(a.size()));
    print_rows("quantized:", a_out, 1, static_cast<int64_t>(a.size()));
    std::printf("\n");

    // One layer's quantizers: the weight attribute "weight" and the layer's single output.
    qi::NodeQuantizationDispatcher dispatcher({{"weight", wq}}, {aq});
    std::printf("NodeQuantizationDispatcher: num_weight_quantizers=%lld num_act_quantizers=%lld\n",
                static_cast<long long>(dispatcher.num_weight_quantizers()),
                static_cast<long long>(dispatcher.num_act_quantizers()));
    std::printf("get_config(): %s\n", dispatcher.get_config().c_str());
    return 0;
  } catch (const qi::Error& e) {
    std::fprintf(stderr, "qi error: %s\n", e.what());
    return 1;
  }
}
