// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cstdint>
#include <functional>

namespace qi {

// Runs fn(chunk_begin, chunk_end) over disjoint chunks covering [begin, end), each at least
// `grain` long except possibly the last. Kernels never create threads; they call this hook.
using ParallelForFn = std::function<void(int64_t begin, int64_t end, int64_t grain,
                                         const std::function<void(int64_t, int64_t)>& fn)>;

void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn);

// Replaces the hook (the torch layer installs at::parallel_for, so that qi's kernels share
// ATen's threads); num_threads reports the hook's thread count. An empty function restores qi's
// own thread pool.
void set_parallel_for(ParallelForFn fn, std::function<int()> num_threads = {});

// The most threads qi's kernels use, in every front end (n >= 1): qi's own pool runs n threads,
// and a hook (at::parallel_for) gets chunks large enough for at most n. Until it is called, qi's
// kernels use the hook's threads (torch.set_num_threads) or, without a hook, one per core.
void set_num_threads(int n);
// The limit set by set_num_threads, else the hook's thread count, else qi's pool size.
int get_num_threads();

}  // namespace qi
