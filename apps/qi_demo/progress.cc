// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include "progress.h"

#include <cstdio>

namespace qi_demo {

Progress::Progress(std::string label, int64_t total)
    : label_(std::move(label)), total_(total), start_(std::chrono::steady_clock::now()), last_() {}

void Progress::update(int64_t done, const std::string& extra) {
  const auto now = std::chrono::steady_clock::now();
  if (now - last_ < std::chrono::milliseconds(100) && done < total_) return;
  last_ = now;
  draw(done, extra);
}

void Progress::finish(const std::string& extra) {
  draw(total_, extra);
  std::fprintf(stderr, "\n");
}

void Progress::draw(int64_t done, const std::string& extra) {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double frac = total_ > 0 ? static_cast<double>(done) / static_cast<double>(total_) : 1.0;
  const double eta = frac > 0 ? elapsed * (1.0 - frac) / frac : 0.0;
  const int width = 30, filled = static_cast<int>(frac * width);
  std::string bar(filled, '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "\r  %-22s [%s] %3d%% %5.1fs elapsed, ETA %5.1fs %s", label_.c_str(),
               bar.c_str(), static_cast<int>(frac * 100), elapsed, eta, extra.c_str());
  std::fflush(stderr);
}

}  // namespace qi_demo
