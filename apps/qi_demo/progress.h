// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace qi_demo {

// A one-line progress bar with rate and ETA on stderr (redrawn at most 10 times a second).
class Progress {
 public:
  Progress(std::string label, int64_t total);
  void update(int64_t done, const std::string& extra = "");
  void finish(const std::string& extra = "");

 private:
  void draw(int64_t done, const std::string& extra);
  std::string label_;
  int64_t total_;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace qi_demo
