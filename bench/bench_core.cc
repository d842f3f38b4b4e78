// qi: Quantizers Infrastructure. SPDX-License-Identifier: Apache-2.0
// Forward throughput of every registered inferable quantizer against a same-size memcpy (the
// memory-bandwidth limit), at 1 and 2 threads. Benchmarks come from qi::kInferableQuantizers (the
// X-macro list of qi/registry.h), so a new quantizer is benchmarked without touching this file.
//
// After Google Benchmark's own report, prints a table of each quantizer's throughput as a fraction
// of memcpy's, from an interleaved timing loop (median of --qi_table_reps runs each), since
// absolute times drift on a shared machine. Extra flags: --qi_table=false, --qi_table_only,
// --qi_table_reps=N. --benchmark_filter also selects the table's rows.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <regex>
#include <string>
#include <vector>

#include "qi/qi.h"

namespace {

constexpr int64_t kFlatElements = int64_t{1} << 24;
constexpr int64_t kCopyGrain = int64_t{1} << 16;
constexpr int kThreadCounts[] = {1, 2};

// One input and one output buffer, large enough for every case; inputs uniform in [-2, 2].
struct Buffers {
  std::vector<float> in, out;
};

Buffers& buffers() {
  static Buffers b = [] {
    Buffers r;
    r.in.resize(kFlatElements);
    r.out.assign(kFlatElements, 0.f);  // touch every page before timing
    std::mt19937 rng(20240611);
    std::uniform_real_distribution<float> dist(-2.f, 2.f);
    for (float& v : r.in) v = dist(rng);
    return r;
  }();
  return b;
}

struct Layout {
  std::string name;  // part of the benchmark name
  qi::Shape shape;
  std::optional<int64_t> channel_axis;
};

int64_t numel(const qi::Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

const Layout kPerTensor{"per_tensor_2^24", {kFlatElements}, std::nullopt};
const Layout kPerChannelLayouts[] = {
    {"per_channel_512x512x3x3_axis0", {512, 512, 3, 3}, 0},
    {"per_channel_64x256x28x28_axis1", {64, 256, 28, 28}, 1},
};

// Representative parameters: the registry's example of each class (8 bits; LUT 4 bits over 16
// values), per channel along the layout's axis.
std::shared_ptr<const qi::BaseInferableQuantizer> representative_quantizer(
    const qi::InferableQuantizerInfo& info, const Layout& layout) {
  const int64_t channels = layout.channel_axis ? layout.shape[*layout.channel_axis] : 1;
  return qi::inferable_quantizer_from_config(
      info.kind, qi::example_inferable_config(info.kind, channels, layout.channel_axis.value_or(0)));
}

struct Case {
  std::string name;
  std::string quantizer;  // class name, or "memcpy"
  Layout layout;
  int threads = 1;
  std::shared_ptr<const qi::BaseInferableQuantizer> q;  // null for memcpy

  // One forward pass over the case's tensor (out of place).
  void run_once() const {
    Buffers& b = buffers();
    const int64_t n = numel(layout.shape);
    if (q) {
      q->apply(qi::ConstTensorView(b.in.data(), layout.shape),
               qi::TensorView(b.out.data(), layout.shape));
    } else {
      const float* src = b.in.data();
      float* dst = b.out.data();
      qi::parallel_for(0, n, kCopyGrain, [&](int64_t begin, int64_t end) {
        std::memcpy(dst + begin, src + begin, static_cast<size_t>(end - begin) * sizeof(float));
      });
    }
    benchmark::DoNotOptimize(b.out.data());
    benchmark::ClobberMemory();
  }
};

std::vector<Case> make_cases() {
  std::vector<Case> cases;
  std::vector<Layout> layouts = {kPerTensor};
  for (const Layout& l : kPerChannelLayouts) layouts.push_back(l);
  for (const Layout& layout : layouts) {
    for (int threads : kThreadCounts) {
      const std::string suffix = "/" + layout.name + "/qi_threads:" + std::to_string(threads);
      cases.push_back({"memcpy" + suffix, "memcpy", layout, threads, nullptr});
      for (const qi::InferableQuantizerInfo& info : qi::kInferableQuantizers) {
        // Per-channel layouts only for the weights quantizers (activations are per tensor).
        if (layout.channel_axis && info.target != qi::QuantizationTarget::Weights) continue;
        std::shared_ptr<const qi::BaseInferableQuantizer> q =
            representative_quantizer(info, layout);
        // Block formats need whole blocks along their axis: layouts without them are left out.
        try {
          qi::kernels::check_plan_fits(info.class_name, q->plan(),
                                       q->per_channel() ? q->channel_axis() : std::nullopt,
                                       q->params().input_rank, layout.shape);
        } catch (const qi::Error&) {
          continue;
        }
        cases.push_back({info.class_name + suffix, info.class_name, layout, threads, std::move(q)});
      }
    }
  }
  return cases;
}

void run_benchmark(benchmark::State& state, const Case* c) {
  qi::set_num_threads(c->threads);
  const int64_t n = numel(c->layout.shape);
  for (auto _ : state) c->run_once();
  state.SetBytesProcessed(2 * int64_t{sizeof(float)} * n * state.iterations());  // read + write
  state.SetItemsProcessed(n * state.iterations());
}

// --benchmark_filter semantics: a regex, "-" in front negates, "" / "all" / "." select all.
bool selected(const std::string& filter, const std::string& name) {
  if (filter.empty() || filter == "all" || filter == ".") return true;
  const bool negate = filter[0] == '-';
  const std::regex re(negate ? filter.substr(1) : filter);
  return std::regex_search(name, re) != negate;
}

double seconds_of(const Case& c) {
  const auto t0 = std::chrono::steady_clock::now();
  c.run_once();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

// Each quantizer timed alternately with the memcpy of its layout and thread count, so that both
// see the same machine load; throughput fraction = median memcpy time / median quantizer time.
void print_table(const std::vector<Case>& cases, const std::string& filter, int reps) {
  std::printf("\nThroughput as a fraction of memcpy (read + write of the same bytes, median of %d "
              "interleaved runs; SIMD target %s)\n",
              reps, qi::kernels::simd_target_name().c_str());
  std::printf("%-40s %-31s %7s %8s %11s %9s\n", "quantizer", "layout", "threads", "GB/s",
              "memcpy GB/s", "/memcpy");
  for (const Case& c : cases) {
    if (!c.q || !selected(filter, c.name)) continue;
    const Case* base = nullptr;
    for (const Case& b : cases)
      if (!b.q && b.layout.name == c.layout.name && b.threads == c.threads) base = &b;
    qi::set_num_threads(c.threads);
    std::vector<double> tq, tm;
    seconds_of(c);  // warm-up
    seconds_of(*base);
    for (int r = 0; r < reps; ++r) {
      tq.push_back(seconds_of(c));
      tm.push_back(seconds_of(*base));
    }
    const double bytes = 2.0 * sizeof(float) * static_cast<double>(numel(c.layout.shape));
    const double mq = median(tq), mm = median(tm);
    std::printf("%-40s %-31s %7d %8.2f %11.2f %9.3f\n", c.quantizer.c_str(), c.layout.name.c_str(),
                c.threads, bytes / mq * 1e-9, bytes / mm * 1e-9, mm / mq);
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool table = true, table_only = false;
  int reps = 11;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--qi_table=false" || a == "--qi_table=0") {
      table = false;
    } else if (a == "--qi_table" || a == "--qi_table=true" || a == "--qi_table=1") {
      table = true;
    } else if (a == "--qi_table_only") {
      table_only = true;
    } else if (a.rfind("--qi_table_reps=", 0) == 0) {
      reps = std::max(1, std::atoi(a.c_str() + std::strlen("--qi_table_reps=")));
    } else {
      args.push_back(argv[i]);
    }
  }
  int bench_argc = static_cast<int>(args.size());
  args.push_back(nullptr);  // argv[argc] == nullptr, as for main's argv
  benchmark::Initialize(&bench_argc, args.data());
  if (benchmark::ReportUnrecognizedArguments(bench_argc, args.data())) return 1;

  std::vector<Case> cases;
  try {
    cases = make_cases();
  } catch (const qi::Error& e) {
    std::fprintf(stderr, "qi_bench_core: cannot build a quantizer: %s\n", e.what());
    return 1;
  }
  buffers();  // allocate and fill before any timing

  if (!table_only) {
    for (const Case& c : cases) {
      benchmark::RegisterBenchmark(c.name.c_str(), run_benchmark, &c)
          ->UseRealTime()
          ->Unit(benchmark::kMillisecond);
    }
    benchmark::RunSpecifiedBenchmarks();
  }
  if (table || table_only) print_table(cases, benchmark::GetBenchmarkFilter(), reps);
  benchmark::Shutdown();
  return 0;
}
