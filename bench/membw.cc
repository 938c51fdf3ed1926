// Memory read bandwidth of this machine: a large array (default 2 GiB, far beyond the caches) summed
// by 1..N threads, several passes each; prints best and median GB/s (1 GB = 1e9 bytes).
//
// This is the denominator of the decode floor in docs/BENCHMARKS.md: a decode step has to stream
// every weight matrix once, so it cannot take less than weight bytes / read bandwidth.
//
//   membw [--gib 2] [--passes 10] [--threads 2] [--no-scan] [--hugepages]
//
// By default the array sits on ordinary 4 KiB pages, like the engine's memory-mapped checkpoint;
// --hugepages asks for transparent huge pages (madvise) to show what the TLB costs. --no-scan
// measures with --threads threads only (engine_bench --membw runs it that way between its runs). The last line,
// "membw: ... median_gbs=X best_gbs=Y", is what bench/run_cpu_bench.sh reads.
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace {

// Sums a block of 64-bit words with independent accumulators. Integer adds vectorise without
// -ffast-math; target_clones gives AVX-512 / AVX2 loads where the CPU has them, so the loop is
// limited by memory, not by the core.
__attribute__((target_clones("avx512f", "avx2", "default"), noinline)) uint64_t SumWords(const uint64_t* p,
                                                                                         size_t n) {
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    a0 += p[i];
    a1 += p[i + 1];
    a2 += p[i + 2];
    a3 += p[i + 3];
    a4 += p[i + 4];
    a5 += p[i + 5];
    a6 += p[i + 6];
    a7 += p[i + 7];
  }
  for (; i < n; ++i) a0 += p[i];
  return a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
}

// Busy CPU seconds of the whole machine (/proc/stat) and of this process (rusage), to tell how much
// of the machine other processes used during the measurement.
double MachineBusySeconds() {
  std::ifstream f("/proc/stat");
  std::string cpu;
  double v[7] = {};
  f >> cpu;
  for (double& x : v) f >> x;
  return (v[0] + v[1] + v[2] + v[5] + v[6]) / static_cast<double>(sysconf(_SC_CLK_TCK));
}
double SelfBusySeconds() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void Usage() {
  std::fprintf(stderr, "usage: membw [--gib G] [--passes P] [--threads T] [--no-scan] [--hugepages]\n");
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  double gib = 2.0;
  int passes = 10;
  int max_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  bool hugepages = false;
  bool scan = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) Usage();
      return argv[++i];
    };
    if (a == "--gib") gib = std::atof(next());
    else if (a == "--passes") passes = std::atoi(next());
    else if (a == "--threads") max_threads = std::atoi(next());
    else if (a == "--hugepages") hugepages = true;
    else if (a == "--no-scan") scan = false;
    else Usage();
  }
  if (gib <= 0 || passes < 1 || max_threads < 1) Usage();

  const size_t bytes = static_cast<size_t>(gib * (1ull << 30)) & ~size_t{4095};
  const size_t words = bytes / sizeof(uint64_t);
  void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) {
    std::perror("membw: mmap");
    return 1;
  }
  madvise(mem, bytes, hugepages ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  auto* data = static_cast<uint64_t*>(mem);

  // Fill in parallel (first touch), with non-zero values so nothing can be folded away.
  {
    std::vector<std::thread> ts;
    for (int t = 0; t < max_threads; ++t) {
      ts.emplace_back([=] {
        const size_t b = words * t / max_threads, e = words * (t + 1) / max_threads;
        for (size_t i = b; i < e; ++i) data[i] = i * 0x9E3779B97F4A7C15ull;
      });
    }
    for (auto& t : ts) t.join();
  }

  std::printf("membw: %.2f GiB array (%s pages), %d passes per thread count, 1 GB = 1e9 bytes\n",
              bytes / double(1ull << 30), hugepages ? "transparent huge" : "4 KiB", passes);
  std::printf("%8s %12s %12s %12s\n", "threads", "best GB/s", "median GB/s", "worst GB/s");
  double last_median = 0, last_best = 0;
  volatile uint64_t sink = 0;
  const auto wall0 = std::chrono::steady_clock::now();
  const double machine0 = MachineBusySeconds(), self0 = SelfBusySeconds();
  for (int nt = scan ? 1 : max_threads; nt <= max_threads; ++nt) {
    std::vector<double> gbs;
    for (int p = 0; p < passes + 1; ++p) {  // pass 0 is a warm-up, not counted
      std::vector<uint64_t> sums(nt);
      const auto t0 = std::chrono::steady_clock::now();
      std::vector<std::thread> ts;
      for (int t = 0; t < nt; ++t) {
        ts.emplace_back([&, t] {
          const size_t b = words * t / nt, e = words * (t + 1) / nt;
          sums[t] = SumWords(data + b, e - b);
        });
      }
      for (auto& t : ts) t.join();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      for (uint64_t v : sums) sink = sink + v;
      if (p > 0) gbs.push_back(bytes / s / 1e9);
    }
    const double best = *std::max_element(gbs.begin(), gbs.end());
    const double worst = *std::min_element(gbs.begin(), gbs.end());
    const double med = Median(gbs);
    std::printf("%8d %12.2f %12.2f %12.2f\n", nt, best, med, worst);
    last_median = med;
    last_best = best;
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  const double cores = std::max(1u, std::thread::hardware_concurrency());
  const double other = std::max(0.0, (MachineBusySeconds() - machine0) - (SelfBusySeconds() - self0)) / (wall * cores);
  std::printf("other processes used %.1f%% of the machine during the passes\n", 100 * other);
  std::printf("membw: threads=%d median_gbs=%.3f best_gbs=%.3f other_cpu=%.4f\n", max_threads, last_median, last_best,
              other);
  munmap(mem, bytes);
  return sink == 42 ? 3 : 0;  // keep the sums observable
}
