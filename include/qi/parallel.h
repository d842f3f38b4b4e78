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

// Replaces the hook (the torch layer installs at::parallel_for). An empty function restores
// qi's own thread pool.
void set_parallel_for(ParallelForFn fn);

// Threads used by qi's own pool (default: std::thread::hardware_concurrency()). n >= 1.
void set_num_threads(int n);
int get_num_threads();

}  // namespace qi
