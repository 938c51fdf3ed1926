// The FFN stack alone, dense ops against Device::SparseFfn (docs/BENCHMARKS.md "Emergent modules"):
// --layers FFNs of BF16 weights [--ffn, --hidden] (more than the caches hold), one input row, the
// dense path (gate, up, SwiGlu, down) and the sparse path over a share of --module-size neuron
// modules, each module one contiguous block as in ModuleRuntime's module-ordered copies. Prints the
// median time of --runs rounds and the bandwidth each reaches (weight bytes read / time).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <random>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/backend/device.h"
#include "engine/cli/flags.h"

namespace brickserve {
namespace {

using Clock = std::chrono::steady_clock;

int Main(int argc, char** argv) {
  int layers = 24, hidden = 1024, ffn = 2816, module_size = 32, runs = 3, threads = 0;
  std::string densities_text = "1.0,0.3";
  bool adjacent = false;
  FlagSet flags("sparse_ffn_bench", "Dense FFN ops against Device::SparseFfn on BF16 weights, batch 1.");
  flags.Int("layers", &layers, "FFN layers (each with its own weights)");
  flags.Int("hidden", &hidden, "hidden size");
  flags.Int("ffn", &ffn, "intermediate size");
  flags.Int("module-size", &module_size, "neurons per module (divides --ffn)");
  flags.String("densities", &densities_text, "comma-separated shares of modules");
  flags.Bool("adjacent", &adjacent, "choose consecutive modules (one long run of memory) instead of spread ones");
  flags.Int("runs", &runs, "rounds; the median is printed");
  flags.Int("threads", &threads, "CPU threads (0 = all cores)");
  if (std::optional<int> exit_code = flags.ParseForCommand(argc, argv, 1)) return *exit_code;
  if (module_size < 1 || ffn % module_size != 0 || layers < 1 || runs < 1) {
    std::fprintf(stderr, "sparse_ffn_bench: --module-size must divide --ffn; --layers and --runs >= 1\n");
    return 2;
  }
  auto device = CreateDevice({"cpu", threads, true});
  if (!device.ok()) return 1;
  Device& d = **device;
  const int64_t H = hidden, I = ffn;
  std::mt19937 rng(1);
  std::vector<std::vector<uint16_t>> storage;
  std::vector<Weight> gate, up, down, down_t;
  auto random_bf16 = [&](int64_t rows, int64_t cols) {
    std::vector<uint16_t>& v = storage.emplace_back(static_cast<size_t>(rows * cols));
    for (auto& x : v) x = static_cast<uint16_t>(0x3c00 + (rng() & 0xff));  // small positive BF16 values
    return *d.UploadWeight({DType::kBF16, {rows, cols}, v.data(), nullptr});
  };
  for (int l = 0; l < layers; ++l) {
    gate.push_back(random_bf16(I, H));
    up.push_back(random_bf16(I, H));
    down.push_back(random_bf16(H, I));
    down_t.push_back(random_bf16(I, H));
  }
  Buffer x = *d.AllocBuffer(H), g = *d.AllocBuffer(I), u = *d.AllocBuffer(I), out = *d.AllocBuffer(H);
  for (int64_t i = 0; i < H; ++i) x.data[i] = 0.01f * static_cast<float>(i % 7);
  const int n_modules = static_cast<int>(I / module_size);
  std::vector<std::vector<int32_t>> modules(n_modules);
  for (int m = 0; m < n_modules; ++m) {
    for (int s = 0; s < module_size; ++s) modules[m].push_back(m * module_size + s);
  }
  const int32_t row = 0;
  const double ffn_bytes = 3.0 * layers * I * H * 2;
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::printf("%d layers of [%d, %d] BF16, modules of %d neurons (%s)\n", layers, ffn, hidden, module_size,
              adjacent ? "adjacent" : "spread");
  for (absl::string_view part : absl::StrSplit(densities_text, ',')) {
    float density = 0;
    if (!absl::SimpleAtof(part, &density) || !(density > 0 && density <= 1)) return 2;
    const int k = std::max(1, static_cast<int>(density * n_modules + 0.5f));
    std::vector<FfnNeuronGroup> groups;
    for (int m = 0; m < k; ++m) {  // spread: a stride coprime to most module counts
      groups.push_back({modules[adjacent ? m : (m * 7) % n_modules], std::span<const int32_t>(&row, 1)});
    }
    std::vector<double> dense_s, sparse_s;
    for (int r = 0; r <= runs; ++r) {
      const auto t0 = Clock::now();
      for (int l = 0; l < layers; ++l) {
        (void)d.MatMul(x, 1, gate[l], nullptr, g);
        (void)d.MatMul(x, 1, up[l], nullptr, u);
        (void)d.SwiGlu(g, u, static_cast<size_t>(I), g);
        (void)d.MatMul(g, 1, down[l], nullptr, out);
      }
      const auto t1 = Clock::now();
      for (int l = 0; l < layers; ++l) (void)d.SparseFfn(x, gate[l], up[l], down_t[l], groups, {&row, 1}, out);
      const auto t2 = Clock::now();
      if (r == 0) continue;  // warm-up
      dense_s.push_back(std::chrono::duration<double>(t1 - t0).count());
      sparse_s.push_back(std::chrono::duration<double>(t2 - t1).count());
    }
    const double dt = median(dense_s), st = median(sparse_s), share = static_cast<double>(k) / n_modules;
    std::printf("density %.2f (%d of %d modules): dense %.2f ms (%.1f GB/s), sparse %.2f ms (%.1f GB/s, %.2fx dense)\n",
                share, k, n_modules, dt * 1e3, ffn_bytes / dt / 1e9, st * 1e3, share * ffn_bytes / st / 1e9,
                dt / st);
  }
  return 0;
}

}  // namespace
}  // namespace brickserve

int main(int argc, char** argv) { return brickserve::Main(argc, argv); }
