// Row-wise (batch-invariant) matrix product kernel against OpenBLAS SGEMM, single-threaded, on one
// weight shape: what batch invariance costs a prefill matmul. Median GFLOP/s of --runs runs.
//   matmul_bench [--rows 512] [--in 1024] [--out 4096] [--runs 5]
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "engine/backend/cpu/cpu_kernels.h"
#include "engine/backend/cpu/panel_kernels.h"

namespace {

template <typename F>
double MedianGflops(int runs, double flops, F&& fn) {
  std::vector<double> r;
  for (int i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    r.push_back(flops / 1e9 / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(r.begin(), r.end());
  return r[r.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int rows = 512, in = 1024, out = 4096, runs = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    const int v = std::stoi(argv[i + 1]);
    if (a == "--rows") rows = v;
    else if (a == "--in") in = v;
    else if (a == "--out") out = v;
    else if (a == "--runs") runs = v;
  }
  openblas_set_num_threads(1);
  std::mt19937 rng(1);
  std::normal_distribution<float> d;
  std::vector<float> x(static_cast<size_t>(rows) * in), w(static_cast<size_t>(out) * in), y(static_cast<size_t>(rows) * out);
  for (auto& v : x) v = d(rng);
  for (auto& v : w) v = d(rng);
  const double flops = 2.0 * rows * in * out;
  const double sgemm = MedianGflops(runs, flops, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out, in, 1.0f, x.data(), in, w.data(), in, 0.0f,
                y.data(), out);
  });
  const double rowwise = MedianGflops(runs, flops, [&] {
    brickserve::cpu::MatVecRows(x.data(), rows, in, w.data(), brickserve::DType::kF32, 0, out, y.data(), out);
  });
  namespace cpu = brickserve::cpu;
  const cpu::PanelStorage panels = cpu::AllocatePanels(out, in, brickserve::DType::kF32);
  cpu::PackPanels(w.data(), brickserve::DType::kF32, out, in, 0, cpu::NumPanels(out), panels.get());
  std::vector<float> y_panels(y.size());
  const double panel = MedianGflops(runs, flops, [&] {
    cpu::PanelMatMul(x.data(), rows, in, panels.get(), brickserve::DType::kF32, out, 0, cpu::NumPanels(out), y_panels.data(), out);
  });
  std::printf("rows %d in %d out %d F32, 1 thread, median of %d: SGEMM %.1f GFLOP/s, row-wise %.1f GFLOP/s (%.0f %%), "
              "panels %.1f GFLOP/s (%.0f %%)\n",
              rows, in, out, runs, sgemm, rowwise, 100.0 * rowwise / sgemm, panel, 100.0 * panel / sgemm);
}
