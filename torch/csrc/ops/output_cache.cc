// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Large CPU outputs from a bounded cache of freed ones (common.h, large_float_like).
#include <algorithm>
#include <cstdlib>
#include <deque>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "ops/common.h"

namespace qi::torch::detail {
namespace {

constexpr size_t kBlockAlign = size_t{2} << 20;  // whole huge pages

// The cache's limit in bytes: QI_OUTPUT_CACHE_MB (default 256; 0 turns the cache off), read once.
size_t cache_limit_bytes() {
  static const size_t limit = [] {
    const char* v = std::getenv("QI_OUTPUT_CACHE_MB");
    if (v == nullptr || *v == '\0') return size_t{256} << 20;
    char* end = nullptr;
    const long long mb = std::strtoll(v, &end, 10);
    if (end == v || *end != '\0' || mb < 0) return size_t{256} << 20;  // unreadable: the default
    return static_cast<size_t>(mb) << 20;
  }();
  return limit;
}

// Freed blocks, most recently freed first; at most cache_limit_bytes() of them are kept.
class FreedBlocks {
 public:
  // Never destroyed: tensors may die after static destructors ran (at interpreter exit).
  static FreedBlocks& instance() {
    static auto* blocks = new FreedBlocks();
    return *blocks;
  }

  // A freed block of exactly `bytes`, or nullptr.
  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = std::find_if(blocks_.begin(), blocks_.end(),
                                 [&](const Block& b) { return b.bytes == bytes; });
    if (it == blocks_.end()) return nullptr;
    void* p = it->data;
    held_ -= bytes;
    blocks_.erase(it);
    return p;
  }

  // Keeps a block for reuse, dropping the least recently freed ones beyond the limit.
  void give_back(void* data, size_t bytes) {
    std::vector<void*> dropped;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks_.push_front({data, bytes});
      held_ += bytes;
      while (held_ > cache_limit_bytes()) {
        dropped.push_back(blocks_.back().data);
        held_ -= blocks_.back().bytes;
        blocks_.pop_back();
      }
    }
    for (void* p : dropped) std::free(p);
  }

  size_t held_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return held_;
  }

 private:
  struct Block {
    void* data;
    size_t bytes;
  };
  std::mutex mutex_;
  std::deque<Block> blocks_;
  size_t held_ = 0;
};

}  // namespace

bool output_cache_enabled() { return cache_limit_bytes() > 0; }

size_t output_cache_held_bytes() { return FreedBlocks::instance().held_bytes(); }

at::Tensor large_float_like(const at::Tensor& t) {
  // empty_like's sizes and strides (its memory format rules) without allocating.
  const at::Tensor shape = at::empty_like(t, t.options().dtype(at::kFloat).device(at::kMeta));
  const size_t bytes = static_cast<size_t>(shape.storage().nbytes());
  const size_t rounded = (bytes + kBlockAlign - 1) / kBlockAlign * kBlockAlign;
  void* data = FreedBlocks::instance().take(rounded);
  if (data == nullptr) {
    data = std::aligned_alloc(kBlockAlign, rounded);
    if (data == nullptr) throw std::bad_alloc();
    advise_huge_pages(data, static_cast<int64_t>(rounded));
  }
  return at::from_blob(
      data, shape.sizes(), shape.strides(),
      [rounded](void* p) { FreedBlocks::instance().give_back(p, rounded); },
      t.options().dtype(at::kFloat).device(at::kCPU));
}

}  // namespace qi::torch::detail
