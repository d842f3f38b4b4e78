// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
#include "qi/parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "qi/error.h"

namespace qi {
namespace {

// A small persistent pool: the caller runs chunk 0 itself and workers take the rest. One job at
// a time (a mutex serializes concurrent callers); nested calls run inline.
class ThreadPool {
 public:
  ~ThreadPool() { resize(0); }

  int size() {
    std::lock_guard<std::mutex> g(job_mutex_);
    return static_cast<int>(workers_.size()) + 1;
  }

  void set_size(int n) {
    std::lock_guard<std::mutex> g(job_mutex_);
    resize(n - 1);
  }

  void run(int64_t begin, int64_t end, int64_t grain,
           const std::function<void(int64_t, int64_t)>& fn) {
    if (in_pool_) {  // nested: no further parallelism
      fn(begin, end);
      return;
    }
    std::unique_lock<std::mutex> job_lock(job_mutex_);
    const int64_t n = end - begin;
    const int64_t max_chunks = std::max<int64_t>(1, n / std::max<int64_t>(grain, 1));
    const int64_t chunks = std::min<int64_t>(max_chunks, static_cast<int64_t>(workers_.size()) + 1);
    if (chunks <= 1) {
      job_lock.unlock();
      fn(begin, end);
      return;
    }
    const int64_t step = (n + chunks - 1) / chunks;
    std::unique_lock<std::mutex> lk(mutex_);
    fn_ = &fn;
    begin_ = begin;
    end_ = end;
    step_ = step;
    next_chunk_ = 0;
    num_chunks_ = chunks;
    pending_ = chunks;
    error_ = nullptr;
    cv_.notify_all();
    // The caller works too: it takes chunks like any worker, then waits for the stragglers.
    in_pool_ = true;
    take_chunks(lk);
    in_pool_ = false;
    done_cv_.wait(lk, [&] { return pending_ == 0; });
    fn_ = nullptr;
    num_chunks_ = 0;
    next_chunk_ = 0;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void resize(int workers) {
    workers = std::max(workers, 0);
    if (static_cast<int>(workers_.size()) == workers) return;
    {
      std::lock_guard<std::mutex> g(mutex_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
    stop_ = false;
    for (int i = 0; i < workers; ++i) workers_.emplace_back([this] { worker_loop(); });
  }

  void worker_loop() {
    in_pool_ = true;
    std::unique_lock<std::mutex> lk(mutex_);
    for (;;) {
      // Any chunk left of the current job is fair game; no generation bookkeeping, so a worker
      // that starts late cannot miss a job.
      cv_.wait(lk, [&] { return stop_ || next_chunk_ < num_chunks_; });
      if (stop_) return;
      take_chunks(lk);
    }
  }

  // Runs chunks until none is left; `lk` holds mutex_ on entry and on exit.
  void take_chunks(std::unique_lock<std::mutex>& lk) {
    while (next_chunk_ < num_chunks_) {
      const int64_t c = next_chunk_++;
      const int64_t b = begin_ + c * step_;
      const int64_t e = std::min(end_, b + step_);
      const auto* fn = fn_;
      lk.unlock();
      try {
        if (b < e) (*fn)(b, e);
      } catch (...) {
        std::lock_guard<std::mutex> g(mutex_);
        if (!error_) error_ = std::current_exception();
      }
      lk.lock();
      if (--pending_ == 0) done_cv_.notify_all();
    }
  }

  std::mutex job_mutex_;  // one job at a time
  std::mutex mutex_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t begin_ = 0, end_ = 0, step_ = 0, next_chunk_ = 0, num_chunks_ = 0, pending_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
  static thread_local bool in_pool_;
};

thread_local bool ThreadPool::in_pool_ = false;

ThreadPool& pool() {
  static ThreadPool* p = [] {
    auto* tp = new ThreadPool();  // leaked on purpose: no join at static destruction time
    tp->set_size(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    return tp;
  }();
  return *p;
}

// The installed hook, never freed (a replaced one may still run on another thread): read on every
// kernel call without a lock.
std::atomic<const ParallelForFn*> g_hook{nullptr};
std::atomic<const std::function<int()>*> g_hook_threads{nullptr};
// The thread limit set by set_num_threads (0: not set, the host framework's or the machine's).
std::atomic<int> g_limit{0};

}  // namespace

void parallel_for(int64_t begin, int64_t end, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& fn) {
  if (begin >= end) return;
  if (const ParallelForFn* h = g_hook.load(std::memory_order_acquire)) {
    // A limit caps the number of chunks, hence of threads, that the host framework runs.
    const int limit = g_limit.load(std::memory_order_relaxed);
    if (limit > 0) grain = std::max(grain, (end - begin + limit - 1) / limit);
    (*h)(begin, end, grain, fn);
  } else if (end - begin <= grain) {
    fn(begin, end);
  } else {
    pool().run(begin, end, grain, fn);
  }
}

void set_parallel_for(ParallelForFn fn, std::function<int()> num_threads) {
  g_hook_threads.store(fn && num_threads ? new std::function<int()>(std::move(num_threads))
                                         : nullptr,
                       std::memory_order_release);
  g_hook.store(fn ? new ParallelForFn(std::move(fn)) : nullptr, std::memory_order_release);
}

void set_num_threads(int n) {
  QI_CHECK(n >= 1, "set_num_threads: num_threads must be >= 1, got ", n);
  pool().set_size(n);
  g_limit.store(n, std::memory_order_relaxed);
}

int get_num_threads() {
  if (const int limit = g_limit.load(std::memory_order_relaxed); limit > 0) return limit;
  if (g_hook.load(std::memory_order_acquire) != nullptr) {
    if (const auto* threads = g_hook_threads.load(std::memory_order_acquire)) return (*threads)();
  }
  return pool().size();
}

}  // namespace qi
