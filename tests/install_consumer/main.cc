// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Built against an installed qi by tests/install_consumer/run_test.cmake.
#include <cstdio>
#include <vector>

#include "qi/qi.h"

int main() {
  // 8-bit signed symmetric grid with threshold 1: step 1/128, integers [-128, 127].
  // 0.3 * 128 = 38.4 rounds to 38 -> 0.296875; -1.5 clamps to -128 -> -1.
  qi::WeightsSymmetricInferableQuantizer q(8, {1.0}, /*per_channel=*/false);
  std::vector<float> x = {0.3f, -1.5f};
  q.apply_inplace(qi::TensorView(x.data(), {2}));
  std::printf("qi %s quantized: %.6f %.6f\n", qi::kVersion, x[0], x[1]);
  return 0;
}
