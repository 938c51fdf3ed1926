// Argument checks every backend makes the same way, so a bad call reads the same on any device.
#pragma once

#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/backend/device.h"

namespace brickserve {

// INVALID_ARGUMENT naming the op when `b` holds fewer than `need` floats.
inline absl::Status CheckSize(const Buffer& b, size_t need, const char* what) {
  if (b.size < need) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": buffer holds ", b.size, " floats, op needs ", need));
  }
  return absl::OkStatus();
}

// One sequence of an Attention call: its context fits its block table, its blocks are in the cache,
// and q and out hold its rows.
inline absl::Status CheckAttentionSeq(const Buffer& q, const Buffer& out, const KvCacheSpec& s, const AttentionSeq& sq,
                                      const AttentionParams& p) {
  if (sq.context_len > static_cast<int64_t>(sq.block_table.size()) * s.block_size || sq.q_len > sq.context_len) {
    return absl::InvalidArgumentError("Attention: context longer than the sequence's block table");
  }
  const size_t rows_end = (static_cast<size_t>(sq.q_begin) + sq.q_len) * p.num_heads * p.head_dim;
  if (absl::Status st = CheckSize(q, rows_end, "Attention q"); !st.ok()) return st;
  if (absl::Status st = CheckSize(out, rows_end, "Attention out"); !st.ok()) return st;
  for (int32_t b = 0; b < (sq.context_len + s.block_size - 1) / s.block_size; ++b) {
    if (sq.block_table[b] < 0 || sq.block_table[b] >= s.num_blocks) {
      return absl::OutOfRangeError(
          absl::StrCat("Attention: block ", sq.block_table[b], " outside the cache of ", s.num_blocks, " blocks"));
    }
  }
  return absl::OkStatus();
}

// One AddLora segment: B has A's rank, a weight per row, and x and y hold its rows.
inline absl::Status CheckLoraSegment(const Buffer& x, const Buffer& y, const LoraSegment& seg) {
  const Weight& a = *seg.a;
  const Weight& b = *seg.b;
  if (b.rows != a.rows) {
    return absl::InvalidArgumentError(absl::StrCat("AddLora: b is [", b.rows, ", ", b.cols, "] for rank ", a.rows));
  }
  if (seg.row_weights.size() != seg.rows.size()) {
    return absl::InvalidArgumentError("AddLora: a segment has a row weight per row");
  }
  for (int32_t row : seg.rows) {
    const size_t r = static_cast<size_t>(row);  // a negative row fails the size checks
    if (absl::Status st = CheckSize(x, (r + 1) * a.cols, "AddLora input"); !st.ok()) return st;
    if (absl::Status st = CheckSize(y, (r + 1) * b.cols, "AddLora output"); !st.ok()) return st;
  }
  return absl::OkStatus();
}

// SparseFfn: gate, up and down_t agree, neurons are in d_ff, output rows are in the buffers, and every
// group row is an output row.
inline absl::Status CheckSparseFfn(const Buffer& x, const Weight& gate, const Weight& up, const Weight& down_t,
                                   std::span<const FfnNeuronGroup> groups, std::span<const int32_t> out_rows,
                                   const Buffer& out) {
  const int64_t H = gate.cols, I = gate.rows;
  if (up.rows != I || up.cols != H || down_t.rows != I || down_t.cols != H) {
    return absl::InvalidArgumentError(absl::StrCat("SparseFfn: gate [", I, ", ", H, "], up [", up.rows, ", ", up.cols,
                                                   "] and down_t [", down_t.rows, ", ", down_t.cols, "] disagree"));
  }
  const size_t max_rows = std::min(x.size, out.size) / static_cast<size_t>(H);
  std::vector<bool> is_out(max_rows, false);
  for (int32_t r : out_rows) {
    if (r < 0 || static_cast<size_t>(r) >= max_rows) {
      return absl::OutOfRangeError(absl::StrCat("SparseFfn: output row ", r, " outside the buffers"));
    }
    is_out[r] = true;
  }
  for (const FfnNeuronGroup& g : groups) {
    for (int32_t j : g.neurons) {
      if (j < 0 || j >= I) return absl::OutOfRangeError(absl::StrCat("SparseFfn: neuron ", j, " outside [0, ", I, ")"));
    }
    for (int32_t r : g.rows) {
      if (r < 0 || static_cast<size_t>(r) >= max_rows || !is_out[r]) {
        return absl::InvalidArgumentError(absl::StrCat("SparseFfn: group row ", r, " is not an output row"));
      }
    }
  }
  return absl::OkStatus();
}

// SampleTokens' arguments: logits for every row, an id slot per row, penalty tokens in the vocabulary.
inline absl::Status CheckSampleTokens(const Buffer& logits, int vocab, std::span<const SampleRow> rows,
                                      std::span<const int32_t> ids) {
  if (absl::Status s = CheckSize(logits, rows.size() * vocab, "SampleTokens logits"); !s.ok()) return s;
  if (ids.size() < rows.size()) return absl::InvalidArgumentError("SampleTokens: fewer ids than rows");
  for (const SampleRow& r : rows) {
    for (const PenaltyToken& t : r.penalties) {
      if (t.id < 0 || t.id >= vocab) {
        return absl::OutOfRangeError(
            absl::StrCat("SampleTokens: penalty token ", t.id, " outside the vocabulary of ", vocab));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace brickserve
