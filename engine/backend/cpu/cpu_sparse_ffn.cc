// CpuDevice::SparseFfn: the emergent-modules FFN, reading only the chosen neurons' weights.
//
// Work is split into parts of at most kPartNeurons neurons of one group. A part computes, for its
// group's rows, gate and up of its neurons, h = silu(gate)·up, and its own partial output
// Σ_j h_j down_t[j, :], streaming each weight row whole. A row's output is then the sum of its
// parts' partials in part order. Parts depend only on their group, so a row sums the same partials
// in the same order whatever else is in the batch (batch-invariant), and threads share nothing
// but the final sum.
#include <algorithm>
#include <cstring>

#include "engine/backend/buffer_checks.h"
#include "engine/backend/cpu/cpu_device.h"
#include "engine/backend/cpu/cpu_kernels.h"

namespace brickserve {
namespace {

constexpr size_t kPartNeurons = 64;

}  // namespace

absl::Status CpuDevice::SparseFfn(const Buffer& x, const Weight& gate, const Weight& up, const Weight& down_t,
                                  std::span<const FfnNeuronGroup> groups, std::span<const int32_t> out_rows,
                                  Buffer& out) {
  if (auto s = CheckSparseFfn(x, gate, up, down_t, groups, out_rows, out); !s.ok()) return s;
  const int64_t H = gate.cols;
  const size_t max_rows = std::min(x.size, out.size) / static_cast<size_t>(H);
  std::vector<int32_t> out_index(max_rows, -1);  // batch row -> its place in out_rows
  for (size_t i = 0; i < out_rows.size(); ++i) out_index[out_rows[i]] = static_cast<int32_t>(i);
  // Parts, and for every output row the partials that sum to it, in part order.
  std::vector<FfnPart>& parts = ffn_parts_;
  parts.clear();
  size_t partial_floats = 0;
  for (const FfnNeuronGroup& g : groups) {
    if (g.rows.empty()) continue;
    for (size_t j0 = 0; j0 < g.neurons.size(); j0 += kPartNeurons) {
      const size_t n = std::min(kPartNeurons, g.neurons.size() - j0);
      parts.push_back({&g, g.neurons.data() + j0, n, partial_floats});
      partial_floats += g.rows.size() * static_cast<size_t>(H);
    }
  }
  ffn_partials_.resize(partial_floats);
  std::vector<std::vector<const float*>>& row_partials = ffn_row_partials_;
  row_partials.resize(std::max(row_partials.size(), out_rows.size()));
  for (size_t i = 0; i < out_rows.size(); ++i) row_partials[i].clear();
  for (const FfnPart& p : parts) {
    for (size_t i = 0; i < p.group->rows.size(); ++i) {
      row_partials[out_index[p.group->rows[i]]].push_back(ffn_partials_.data() + p.partial + i * H);
    }
  }
  pool_.ParallelFor(parts.size(), 1, [&](size_t b, size_t e) {
    thread_local std::vector<const float*> x_rows;
    thread_local std::vector<float*> y_rows;
    thread_local std::vector<float> g, u;
    for (size_t pi = b; pi < e; ++pi) {
      const FfnPart& p = parts[pi];
      const std::span<const int32_t> rows = p.group->rows;
      const int nr = static_cast<int>(rows.size());
      const int64_t n = static_cast<int64_t>(p.count);
      x_rows.resize(nr);
      y_rows.resize(nr);
      for (int i = 0; i < nr; ++i) {
        x_rows[i] = x.data + static_cast<size_t>(rows[i]) * H;
        y_rows[i] = ffn_partials_.data() + p.partial + static_cast<size_t>(i) * H;
      }
      g.resize(static_cast<size_t>(nr) * n);
      u.resize(g.size());
      cpu::MatVecGathered(x_rows.data(), nr, H, gate.data, gate.dtype, p.neurons, n, g.data(), n);
      cpu::MatVecGathered(x_rows.data(), nr, H, up.data, up.dtype, p.neurons, n, u.data(), n);
      // Row by row: SiluMul's vector/scalar split must not depend on how many rows there are.
      for (int i = 0; i < nr; ++i) cpu::SiluMul(g.data() + i * n, u.data() + i * n, static_cast<size_t>(n), g.data() + i * n);
      cpu::RowsTimesGatheredRows(g.data(), nr, n, down_t.data, down_t.dtype, H, p.neurons, 0, H, y_rows.data(),
                                 /*accumulate=*/false);
    }
  });
  // Each output row: the sum of its partials, in order, split over columns.
  pool_.ParallelFor(static_cast<size_t>(H), 256, [&](size_t o0, size_t o1) {
    for (size_t i = 0; i < out_rows.size(); ++i) {
      float* y = out.data + static_cast<size_t>(out_rows[i]) * H;
      const auto& parts_of_row = row_partials[i];
      if (parts_of_row.empty()) {
        std::memset(y + o0, 0, (o1 - o0) * sizeof(float));
        continue;
      }
      std::memcpy(y + o0, parts_of_row[0] + o0, (o1 - o0) * sizeof(float));
      for (size_t k = 1; k < parts_of_row.size(); ++k) {
        const float* part = parts_of_row[k];
        for (size_t o = o0; o < o1; ++o) y[o] += part[o];
      }
    }
  });
  return absl::OkStatus();
}

}  // namespace brickserve
