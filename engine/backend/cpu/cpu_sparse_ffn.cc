// CpuDevice::SparseFfn: the emergent-modules FFN, reading only the chosen neurons' weights.
#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "engine/backend/cpu/cpu_device.h"
#include "engine/backend/cpu/cpu_kernels.h"

namespace brickserve {
namespace {

// Neurons per work item of the gate/up phase: a few rows of weights, enough items for every thread.
constexpr size_t kNeuronsPerItem = 16;

}  // namespace

absl::Status CpuDevice::SparseFfn(const Buffer& x, const Weight& gate, const Weight& up, const Weight& down_t,
                                  std::span<const FfnNeuronGroup> groups, std::span<const int32_t> out_rows,
                                  Buffer& out) {
  const int64_t H = gate.cols, I = gate.rows;
  if (up.rows != I || up.cols != H || down_t.rows != I || down_t.cols != H) {
    return absl::InvalidArgumentError(absl::StrCat("SparseFfn: gate [", I, ", ", H, "], up [", up.rows, ", ", up.cols,
                                                   "] and down_t [", down_t.rows, ", ", down_t.cols, "] disagree"));
  }
  const size_t x_rows = x.size / static_cast<size_t>(H), y_rows = out.size / static_cast<size_t>(H);
  const size_t max_rows = std::min(x_rows, y_rows);
  std::vector<uint8_t> is_out_row(max_rows);
  for (int32_t r : out_rows) {
    if (r < 0 || static_cast<size_t>(r) >= max_rows) {
      return absl::OutOfRangeError(absl::StrCat("SparseFfn: output row ", r, " outside the buffers"));
    }
    is_out_row[r] = 1;
  }
  ffn_groups_.resize(std::max(ffn_groups_.size(), groups.size()));
  // Work items of the gate/up phase: (group, first neuron).
  std::vector<std::pair<size_t, size_t>> items;
  for (size_t g = 0; g < groups.size(); ++g) {
    const FfnNeuronGroup& G = groups[g];
    for (int32_t j : G.neurons) {
      if (j < 0 || j >= I) return absl::OutOfRangeError(absl::StrCat("SparseFfn: neuron ", j, " outside [0, ", I, ")"));
    }
    FfnGroupScratch& s = ffn_groups_[g];
    s.x_rows.clear();
    s.out_rows.clear();
    for (int32_t r : G.rows) {
      if (r < 0 || static_cast<size_t>(r) >= max_rows || !is_out_row[r]) {
        return absl::InvalidArgumentError(absl::StrCat("SparseFfn: group row ", r, " is not an output row"));
      }
      s.x_rows.push_back(x.data + static_cast<size_t>(r) * H);
      s.out_rows.push_back(out.data + static_cast<size_t>(r) * H);
    }
    s.gate.resize(G.rows.size() * G.neurons.size());
    s.up.resize(s.gate.size());
    if (G.rows.empty()) continue;
    for (size_t j = 0; j < G.neurons.size(); j += kNeuronsPerItem) items.emplace_back(g, j);
  }
  // Gate and up products of each group's rows with its neurons, then silu(gate) * up in place.
  pool_.ParallelFor(items.size(), 1, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) {
      const auto [g, j0] = items[i];
      const FfnNeuronGroup& G = groups[g];
      FfnGroupScratch& s = ffn_groups_[g];
      const int rows = static_cast<int>(G.rows.size());
      const int64_t nj = static_cast<int64_t>(G.neurons.size());
      const int64_t n = std::min<int64_t>(kNeuronsPerItem, nj - static_cast<int64_t>(j0));
      const int32_t* ids = G.neurons.data() + j0;
      cpu::MatVecGathered(s.x_rows.data(), rows, H, gate.data, gate.dtype, ids, n, s.gate.data() + j0, nj);
      cpu::MatVecGathered(s.x_rows.data(), rows, H, up.data, up.dtype, ids, n, s.up.data() + j0, nj);
      for (int r = 0; r < rows; ++r) {
        float* gr = s.gate.data() + r * nj + j0;
        cpu::SiluMul(gr, s.up.data() + r * nj + j0, static_cast<size_t>(n), gr);
      }
    }
  });
  // Down: each thread owns a range of output columns and adds every group's neurons in order.
  pool_.ParallelFor(static_cast<size_t>(H), 64, [&](size_t o0, size_t o1) {
    for (int32_t r : out_rows) {
      std::memset(out.data + static_cast<size_t>(r) * H + o0, 0, (o1 - o0) * sizeof(float));
    }
    for (size_t g = 0; g < groups.size(); ++g) {
      const FfnNeuronGroup& G = groups[g];
      if (G.rows.empty() || G.neurons.empty()) continue;
      const FfnGroupScratch& s = ffn_groups_[g];
      cpu::AddRowsTimesGatheredRows(s.gate.data(), static_cast<int>(G.rows.size()),
                                    static_cast<int64_t>(G.neurons.size()), down_t.data, down_t.dtype, H,
                                    G.neurons.data(), static_cast<int64_t>(o0), static_cast<int64_t>(o1),
                                    s.out_rows.data());
    }
  });
  return absl::OkStatus();
}

}  // namespace brickserve
