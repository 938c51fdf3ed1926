// The ops that gather rows per request: LoRA segments, sparse-FFN neuron groups, sampling.
#include <algorithm>

#include "engine/backend/buffer_checks.h"
#include "engine/backend/cuda/cuda_device.h"
#include "engine/backend/cuda/cuda_status.h"
#include "engine/util/status_macros.h"

namespace brickserve {
namespace {

// Staging room for a Put of each of these vectors (CudaStaging::Begin takes the total).
template <typename... V>
size_t Room(const V&... v) {
  return (CudaStaging::PaddedSize(v) + ...);
}

// Orders (row, entry) pairs appended in call order by row, keeping the call order within a row:
// one sort of a reused vector per call instead of a list allocated per row.
template <typename E>
void GroupByRow(std::vector<std::pair<int32_t, E>>* pairs) {
  std::stable_sort(pairs->begin(), pairs->end(), [](const auto& a, const auto& b) { return a.first < b.first; });
}

}  // namespace

absl::Status CudaDevice::AddLora(const Buffer& x, std::span<const LoraSegment> segments, Buffer& y) {
  lora_segs_.clear();
  lora_rows_.clear();
  lora_row_weights_.clear();
  lora_by_row_.clear();
  int64_t in = -1, out = -1;
  int32_t t_floats = 0;
  int max_items = 0;
  for (const LoraSegment& seg : segments) {
    const Weight& a = *seg.a;
    const Weight& b = *seg.b;
    const int64_t rank = a.rows;
    BS_RETURN_IF_ERROR(CheckLoraSegment(x, y, seg));
    if ((in >= 0 && a.cols != in) || (out >= 0 && b.cols != out)) {
      return absl::InvalidArgumentError("AddLora: the segments of one call differ in input or output width");
    }
    in = a.cols;
    out = b.cols;
    const int32_t count = static_cast<int32_t>(seg.rows.size());
    if (count == 0) continue;
    const int32_t segment = static_cast<int32_t>(lora_segs_.size());
    lora_segs_.push_back({a.data, b.data, a.dtype, b.dtype, static_cast<int32_t>(rank),
                          static_cast<int32_t>(lora_rows_.size()), count, t_floats, seg.scale});
    for (int32_t i = 0; i < count; ++i) {
      const int32_t r = seg.rows[i];
      lora_rows_.push_back(r);
      lora_row_weights_.push_back(seg.row_weights[i]);
      lora_by_row_.push_back({r, {segment, t_floats + i * static_cast<int32_t>(rank)}});
    }
    t_floats += count * static_cast<int32_t>(rank);
    max_items = std::max(max_items, count * static_cast<int>(rank));
  }
  if (lora_segs_.empty()) return absl::OkStatus();
  // Per output row, its segments' products in segment order.
  GroupByRow(&lora_by_row_);
  lora_out_rows_.clear();
  lora_entry_begin_.assign(1, 0);
  lora_entries_.clear();
  for (size_t i = 0; i < lora_by_row_.size(); ++i) {
    lora_entries_.push_back(lora_by_row_[i].second);
    if (i + 1 == lora_by_row_.size() || lora_by_row_[i + 1].first != lora_by_row_[i].first) {
      lora_out_rows_.push_back(lora_by_row_[i].first);
      lora_entry_begin_.push_back(static_cast<int32_t>(lora_entries_.size()));
    }
  }
  BS_ASSIGN_OR_RETURN(void* t, lora_t_->Get(static_cast<size_t>(t_floats) * sizeof(float)));
  BS_RETURN_IF_ERROR(staging_->Begin(
      Room(lora_segs_, lora_rows_, lora_row_weights_, lora_out_rows_, lora_entry_begin_, lora_entries_)));
  BS_ASSIGN_OR_RETURN(auto* d_segs, staging_->Put(std::span<const cuda::LoraSegmentArgs>(lora_segs_)));
  BS_ASSIGN_OR_RETURN(auto* d_rows, staging_->Put(std::span<const int32_t>(lora_rows_)));
  BS_ASSIGN_OR_RETURN(auto* d_weights, staging_->Put(std::span<const float>(lora_row_weights_)));
  BS_ASSIGN_OR_RETURN(auto* d_out_rows, staging_->Put(std::span<const int32_t>(lora_out_rows_)));
  BS_ASSIGN_OR_RETURN(auto* d_begin, staging_->Put(std::span<const int32_t>(lora_entry_begin_)));
  BS_ASSIGN_OR_RETURN(auto* d_entries, staging_->Put(std::span<const cuda::LoraEntry>(lora_entries_)));
  float* d_t = static_cast<float*>(t);
  BS_CUDA_RETURN_IF_ERROR(cuda::LoraShrink(x.data, in, d_segs, static_cast<int>(lora_segs_.size()), max_items, d_rows,
                                           d_weights, d_t, stream_),
                          "AddLora (shrink)");
  BS_CUDA_RETURN_IF_ERROR(cuda::LoraExpand(d_t, d_segs, d_out_rows, static_cast<int>(lora_out_rows_.size()), d_begin,
                                           d_entries, out, y.data, stream_),
                          "AddLora (expand)");
  return absl::OkStatus();
}

absl::Status CudaDevice::SparseFfn(const Buffer& x, const Weight& gate, const Weight& up, const Weight& down_t,
                                   std::span<const FfnNeuronGroup> groups, std::span<const int32_t> out_rows,
                                   Buffer& out) {
  BS_RETURN_IF_ERROR(CheckSparseFfn(x, gate, up, down_t, groups, out_rows, out));
  if (up.dtype != gate.dtype || down_t.dtype != gate.dtype) {  // the kernels read all three alike
    return absl::InvalidArgumentError("SparseFfn: gate, up and down_t must share one dtype");
  }
  const int64_t hidden = gate.cols;
  ffn_groups_.clear();
  ffn_neurons_.clear();
  ffn_rows_.clear();
  ffn_by_row_.clear();
  int64_t act_floats = 0;
  int max_items = 0;
  for (const FfnNeuronGroup& g : groups) {
    const int32_t group = static_cast<int32_t>(ffn_groups_.size());
    for (int32_t i = 0; i < static_cast<int32_t>(g.rows.size()); ++i) ffn_by_row_.push_back({g.rows[i], {group, i}});
    ffn_groups_.push_back({static_cast<int32_t>(ffn_neurons_.size()), static_cast<int32_t>(g.neurons.size()),
                           static_cast<int32_t>(ffn_rows_.size()), static_cast<int32_t>(g.rows.size()), act_floats});
    ffn_neurons_.insert(ffn_neurons_.end(), g.neurons.begin(), g.neurons.end());
    ffn_rows_.insert(ffn_rows_.end(), g.rows.begin(), g.rows.end());
    const int64_t items = static_cast<int64_t>(g.rows.size()) * static_cast<int64_t>(g.neurons.size());
    act_floats += items;
    max_items = std::max<int64_t>(max_items, items);
  }
  // Per output row, its (group, index) entries in group order.
  GroupByRow(&ffn_by_row_);
  ffn_entry_begin_.assign(1, 0);
  ffn_entries_.clear();
  for (int32_t r : out_rows) {
    auto it = std::lower_bound(ffn_by_row_.begin(), ffn_by_row_.end(), r,
                               [](const auto& e, int32_t row) { return e.first < row; });
    for (; it != ffn_by_row_.end() && it->first == r; ++it) ffn_entries_.push_back(it->second);
    ffn_entry_begin_.push_back(static_cast<int32_t>(ffn_entries_.size()));
  }
  if (out_rows.empty()) return absl::OkStatus();
  BS_ASSIGN_OR_RETURN(void* act, ffn_act_->Get(std::max<int64_t>(act_floats, 1) * sizeof(float)));
  BS_RETURN_IF_ERROR(staging_->Begin(Room(ffn_groups_, ffn_neurons_, ffn_rows_, ffn_entry_begin_, ffn_entries_) +
                                     CudaStaging::Padded(std::max<size_t>(out_rows.size_bytes(), 1))));
  BS_ASSIGN_OR_RETURN(auto* d_groups, staging_->Put(std::span<const cuda::FfnGroupArgs>(ffn_groups_)));
  BS_ASSIGN_OR_RETURN(auto* d_neurons, staging_->Put(std::span<const int32_t>(ffn_neurons_)));
  BS_ASSIGN_OR_RETURN(auto* d_rows, staging_->Put(std::span<const int32_t>(ffn_rows_)));
  BS_ASSIGN_OR_RETURN(auto* d_out_rows, staging_->Put(out_rows));
  BS_ASSIGN_OR_RETURN(auto* d_begin, staging_->Put(std::span<const int32_t>(ffn_entry_begin_)));
  BS_ASSIGN_OR_RETURN(auto* d_entries, staging_->Put(std::span<const cuda::FfnEntry>(ffn_entries_)));
  float* d_act = static_cast<float*>(act);
  BS_CUDA_RETURN_IF_ERROR(cuda::SparseFfnActivations(x.data, hidden, gate.data, up.data, gate.dtype, d_groups,
                                                     static_cast<int>(ffn_groups_.size()), max_items, d_neurons,
                                                     d_rows, d_act, stream_),
                          "SparseFfn (activations)");
  BS_CUDA_RETURN_IF_ERROR(cuda::SparseFfnDown(d_act, down_t.data, down_t.dtype, hidden, d_groups, d_neurons,
                                              d_out_rows, static_cast<int>(out_rows.size()), d_begin, d_entries,
                                              out.data, stream_),
                          "SparseFfn (down)");
  return absl::OkStatus();
}

absl::Status CudaDevice::SampleTokens(Buffer& logits, int vocab, std::span<const SampleRow> rows,
                                      std::span<int32_t> ids) {
  const int n = static_cast<int>(rows.size());
  BS_RETURN_IF_ERROR(CheckSampleTokens(logits, vocab, rows, ids));
  if (n == 0) return absl::OkStatus();
  sample_rows_.clear();
  sample_penalties_.clear();
  for (const SampleRow& r : rows) {
    sample_rows_.push_back({r.temperature, r.top_k, r.top_p, r.min_p, r.repetition_penalty, r.presence_penalty,
                            r.frequency_penalty, r.uniform, static_cast<int32_t>(sample_penalties_.size()),
                            static_cast<int32_t>(r.penalties.size())});
    for (const PenaltyToken& t : r.penalties) sample_penalties_.push_back({t.id, t.output_count, t.seen});
  }
  BS_ASSIGN_OR_RETURN(void* probs, sample_probs_->Get(static_cast<size_t>(n) * vocab * sizeof(double)));
  BS_ASSIGN_OR_RETURN(void* d_ids, sample_ids_->Get(static_cast<size_t>(n) * sizeof(int32_t)));
  BS_RETURN_IF_ERROR(staging_->Begin(Room(sample_rows_, sample_penalties_)));
  BS_ASSIGN_OR_RETURN(auto* d_rows, staging_->Put(std::span<const cuda::SampleRowArgs>(sample_rows_)));
  BS_ASSIGN_OR_RETURN(auto* d_pen, staging_->Put(std::span<const cuda::PenaltyArgs>(sample_penalties_)));
  BS_CUDA_RETURN_IF_ERROR(cuda::SampleTokens(logits.data, vocab, d_rows, n, d_pen, static_cast<double*>(probs),
                                             static_cast<int32_t*>(d_ids), stream_),
                          "SampleTokens");
  BS_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(ids.data(), d_ids, static_cast<size_t>(n) * sizeof(int32_t),
                                          cudaMemcpyDeviceToHost, stream_),
                          "SampleTokens (ids)");
  return Synchronize();
}

}  // namespace brickserve
