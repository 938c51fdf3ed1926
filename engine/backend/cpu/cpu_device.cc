#include "engine/backend/cpu/cpu_device.h"

#include <cblas.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <thread>

#include "absl/strings/str_cat.h"
#include "engine/backend/buffer_checks.h"
#include "engine/backend/cpu/cpu_kernels.h"
#include "engine/backend/cpu/panel_kernels.h"
#include "engine/sampling/sampler.h"

namespace brickserve {
namespace {

// Widened rows of a weight matrix handed to SGEMM at a time (bounded scratch, good cache reuse).
constexpr int64_t kConvertTileRows = 256;

// The CPU cache keeps each block's K transposed ([kv_dim][block_size], see cpu::AttendKvHead): the
// first K value of `slot`; its dim c is block_size floats further per c.
template <typename F>
F* KColumn(F* k_base, size_t slot, size_t block_size, size_t kv_dim) {
  return k_base + (slot / block_size) * block_size * kv_dim + slot % block_size;
}

}  // namespace

CpuDevice::CpuDevice(int threads, bool batch_invariant) : pool_(threads), batch_invariant_(batch_invariant) {
  // One pool owns the cores: SGEMMs are split across pool_ and each runs single-threaded.
  // OpenBLAS's own threads would otherwise compete with pool_'s spinning workers.
  openblas_set_num_threads(1);
}

std::string CpuDevice::name() const {
  return absl::StrCat("cpu (", pool_.num_threads(), " threads", batch_invariant_ ? ", batch-invariant" : "", ")");
}

absl::StatusOr<Weight> CpuDevice::UploadWeight(const HostTensor& t) {
  if (t.shape.empty() || t.shape.size() > 2) {
    return absl::InvalidArgumentError(absl::StrCat("weights must be 1-D or 2-D, got ", t.shape.size(), "-D"));
  }
  Weight w;
  w.rows = t.shape.size() == 2 ? t.shape[0] : 1;
  w.cols = t.shape.back();
  const size_t n = static_cast<size_t>(w.rows * w.cols);
  const bool aligned = reinterpret_cast<uintptr_t>(t.data) % DTypeSize(t.dtype) == 0;
  if (t.shape.size() == 2 && t.matmul_only && cpu::HasPanels(t.dtype)) return PackForMatMul(t, w);
  if (t.shape.size() == 2 && aligned) {
    // Matrices are used in place, straight from the mapping.
    w.dtype = t.dtype;
    w.data = t.data;
    w.owner = t.keep_alive;
    return w;
  }
  // Vectors (norms, biases) are widened to F32 once; they are tiny and read on every row.
  auto copy = std::make_shared<std::vector<float>>(n);
  if (t.dtype == DType::kF32) {
    std::memcpy(copy->data(), t.data, n * sizeof(float));
  } else {
    cpu::ConvertToF32(t.data, t.dtype, n, copy->data());
  }
  w.dtype = DType::kF32;
  w.data = copy->data();
  w.owner = copy;
  return w;
}

absl::StatusOr<Weight> CpuDevice::PackForMatMul(const HostTensor& t, Weight w) {
  // Column panels (panel_kernels.h): products run ~1.4x (F32) to ~1.45x (BF16) faster at 16-32
  // rows than on the checkpoint's rows, and each output keeps one summation order for any row count.
  cpu::PanelStorage storage = cpu::AllocatePanels(w.rows, w.cols, t.dtype);
  if (storage == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", cpu::PackedPanelsBytes(w.rows, w.cols, t.dtype), " bytes of weights"));
  }
  void* panels = storage.get();
  const size_t src_bytes = static_cast<size_t>(w.rows * w.cols) * DTypeSize(t.dtype);
  // An aligned copy when the mapping gives a misaligned element pointer (an odd data offset).
  const void* rows = t.data;
  std::vector<float> aligned_rows;
  if (reinterpret_cast<uintptr_t>(t.data) % DTypeSize(t.dtype) != 0) {
    aligned_rows.resize((src_bytes + sizeof(float) - 1) / sizeof(float));
    std::memcpy(aligned_rows.data(), t.data, src_bytes);
    rows = aligned_rows.data();
  }
  // On threads of its own (uploads may run beside the ops that own pool_): packing is a transpose
  // plus first-touch page faults, 3-4.5 s per GB of F32 on one thread here.
  const int64_t num_panels = cpu::NumPanels(w.rows);
  const int64_t threads = std::clamp<int64_t>(std::thread::hardware_concurrency(), 1, std::max<int64_t>(1, num_panels / 16));
  std::vector<std::thread> packers;
  for (int64_t i = 1; i < threads; ++i) {
    packers.emplace_back([&, i] {
      cpu::PackPanels(rows, t.dtype, w.rows, w.cols, num_panels * i / threads, num_panels * (i + 1) / threads, panels);
    });
  }
  cpu::PackPanels(rows, t.dtype, w.rows, w.cols, 0, num_panels / threads, panels);
  for (auto& th : packers) th.join();
  if (t.file_mapped) DropMappedPages(t.data, src_bytes);
  w.dtype = t.dtype;
  w.layout = WeightLayout::kPanels16;
  w.data = panels;
  w.owner = std::shared_ptr<void>(std::move(storage));
  return w;
}

void CpuDevice::DropMappedPages(const void* data, size_t bytes) {
  // Only the packed copy is read from now on: without this the checkpoint's pages would stay mapped
  // and count twice in the resident set. Pages shared with a neighbouring tensor stay.
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto begin = (reinterpret_cast<uintptr_t>(data) + page - 1) / page * page;
  const auto end = (reinterpret_cast<uintptr_t>(data) + bytes) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

absl::StatusOr<Buffer> CpuDevice::AllocBuffer(size_t elements) {
  auto storage = std::shared_ptr<float[]>(new (std::nothrow) float[std::max<size_t>(elements, 1)]);
  if (!storage) return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", elements, " floats"));
  std::fill_n(storage.get(), elements, 0.0f);
  Buffer b;
  b.data = storage.get();
  b.size = elements;
  b.owner = storage;
  return b;
}

absl::StatusOr<KvCache> CpuDevice::AllocKvCache(const KvCacheSpec& spec) {
  KvCache cache;
  cache.spec = spec;
  auto buf = AllocBuffer(spec.bytes() / sizeof(float));
  if (!buf.ok()) return buf.status();
  cache.storage = *std::move(buf);
  return cache;
}

absl::Status CpuDevice::CopyToDevice(std::span<const float> host, Buffer& dst, size_t dst_offset) {
  if (auto s = CheckSize(dst, dst_offset + host.size(), "CopyToDevice"); !s.ok()) return s;
  std::memcpy(dst.data + dst_offset, host.data(), host.size_bytes());
  return absl::OkStatus();
}

absl::Status CpuDevice::CopyToHost(const Buffer& src, size_t src_offset, std::span<float> host) {
  if (auto s = CheckSize(src, src_offset + host.size(), "CopyToHost"); !s.ok()) return s;
  std::memcpy(host.data(), src.data + src_offset, host.size_bytes());
  return absl::OkStatus();
}

absl::Status CpuDevice::Embed(const Weight& table, std::span<const int32_t> ids, Buffer& out) {
  const int64_t dim = table.cols;
  if (auto s = CheckSize(out, ids.size() * dim, "Embed"); !s.ok()) return s;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= table.rows) {
      return absl::OutOfRangeError(absl::StrCat("token id ", ids[i], " is outside the vocabulary of ", table.rows));
    }
    const auto* row = static_cast<const std::byte*>(table.data) + ids[i] * dim * DTypeSize(table.dtype);
    cpu::ConvertToF32(row, table.dtype, dim, out.data + i * dim);
  }
  return absl::OkStatus();
}

absl::Status CpuDevice::RmsNorm(const Buffer& x, const Weight& weight, int rows, float eps, Buffer& out) {
  const int64_t dim = weight.cols;
  if (auto s = CheckSize(out, rows * dim, "RmsNorm"); !s.ok()) return s;
  const float* w = static_cast<const float*>(weight.data);
  for (int r = 0; r < rows; ++r) {
    const float* xr = x.data + r * dim;
    float* yr = out.data + r * dim;
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / dim + eps));
    for (int64_t i = 0; i < dim; ++i) yr[i] = xr[i] * inv * w[i];
  }
  return absl::OkStatus();
}

absl::Status CpuDevice::Gemm(const float* x, int rows, const Weight& w, float* y) {
  const int64_t in = w.cols, out_dim = w.rows;
  const size_t elem = DTypeSize(w.dtype);
  // Each thread computes a contiguous range of output features. F16/BF16 weights are widened a
  // tile of rows at a time into that thread's scratch just before the SGEMM; prefill is compute
  // bound, so the widening pass costs little next to the product.
  pool_.ParallelFor(static_cast<size_t>(out_dim), 64, [&](size_t b, size_t e) {
    if (w.dtype == DType::kF32) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, static_cast<int>(e - b), in, 1.0f, x, in,
                  static_cast<const float*>(w.data) + b * in, in, 0.0f, y + b, out_dim);
      return;
    }
    thread_local std::vector<float> scratch;
    scratch.resize(static_cast<size_t>(kConvertTileRows * in));
    for (size_t o0 = b; o0 < e; o0 += kConvertTileRows) {
      const size_t tile = std::min<size_t>(kConvertTileRows, e - o0);
      cpu::ConvertToF32(static_cast<const std::byte*>(w.data) + o0 * in * elem, w.dtype, tile * in, scratch.data());
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, static_cast<int>(tile), in, 1.0f, x, in,
                  scratch.data(), in, 0.0f, y + o0, out_dim);
    }
  });
  return absl::OkStatus();
}

absl::Status CpuDevice::MatMul(const Buffer& x, int rows, const Weight& w, const Weight* bias, Buffer& out) {
  if (auto s = CheckSize(x, rows * w.cols, "MatMul input"); !s.ok()) return s;
  if (auto s = CheckSize(out, rows * w.rows, "MatMul output"); !s.ok()) return s;
  if (w.layout == WeightLayout::kPanels16) {
    // Faster than SGEMM at every row count measured (bench/matmul_bench), so in both modes.
    pool_.ParallelFor(static_cast<size_t>(cpu::NumPanels(w.rows)), 4, [&](size_t b, size_t e) {
      cpu::PanelMatMul(x.data, rows, w.cols, w.data, w.dtype, w.rows, static_cast<int64_t>(b), static_cast<int64_t>(e),
                       out.data, w.rows);
    });
  } else if (!batch_invariant_ && rows > kGemmMinRows) {
    if (auto s = Gemm(x.data, rows, w, out.data); !s.ok()) return s;
  } else {
    pool_.ParallelFor(static_cast<size_t>(w.rows), 64, [&](size_t b, size_t e) {
      cpu::MatVecRows(x.data, rows, w.cols, w.data, w.dtype, b, e, out.data, w.rows);
    });
  }
  if (bias != nullptr) {
    const float* bv = static_cast<const float*>(bias->data);
    for (int r = 0; r < rows; ++r) {
      float* yr = out.data + r * w.rows;
      for (int64_t o = 0; o < w.rows; ++o) yr[o] += bv[o];
    }
  }
  return absl::OkStatus();
}

absl::Status CpuDevice::Rope(Buffer& x, int rows, int heads, int head_dim, std::span<const int32_t> positions,
                             const Weight& inv_freq) {
  if (auto s = CheckSize(x, static_cast<size_t>(rows) * heads * head_dim, "Rope"); !s.ok()) return s;
  const int half = head_dim / 2;
  const float* inv = static_cast<const float*>(inv_freq.data);
  std::vector<float> cs(half), sn(half);
  for (int r = 0; r < rows; ++r) {
    for (int i = 0; i < half; ++i) {
      // The angle in double: float32 loses ~pos·1e-7 rad, visible at long positions.
      const double angle = static_cast<double>(positions[r]) * inv[i];
      cs[i] = static_cast<float>(std::cos(angle));
      sn[i] = static_cast<float>(std::sin(angle));
    }
    for (int h = 0; h < heads; ++h) {
      float* v = x.data + (static_cast<size_t>(r) * heads + h) * head_dim;
      for (int i = 0; i < half; ++i) {
        const float a = v[i], b = v[i + half];
        v[i] = a * cs[i] - b * sn[i];
        v[i + half] = b * cs[i] + a * sn[i];
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CpuDevice::WriteKv(KvCache& cache, int layer, const Buffer& k, const Buffer& v,
                                std::span<const int32_t> slots) {
  const auto& s = cache.spec;
  const size_t kv_dim = static_cast<size_t>(s.num_kv_heads) * s.head_dim;
  const size_t slots_total = static_cast<size_t>(s.num_blocks) * s.block_size;
  const size_t bs = static_cast<size_t>(s.block_size);
  float* k_base = cache.LayerSlots(layer, 0);
  float* v_base = cache.LayerSlots(layer, 1);
  for (size_t i = 0; i < slots.size(); ++i) {
    if (slots[i] < 0 || static_cast<size_t>(slots[i]) >= slots_total) {
      return absl::OutOfRangeError(absl::StrCat("KV slot ", slots[i], " outside the cache of ", slots_total));
    }
    float* kt = KColumn(k_base, static_cast<size_t>(slots[i]), bs, kv_dim);
    const float* ki = k.data + i * kv_dim;
    for (size_t c = 0; c < kv_dim; ++c) kt[c * bs] = ki[c];
    std::memcpy(v_base + slots[i] * kv_dim, v.data + i * kv_dim, kv_dim * sizeof(float));
  }
  return absl::OkStatus();
}

absl::Status CpuDevice::Attention(const Buffer& q, const KvCache& cache, int layer,
                                  std::span<const AttentionSeq> seqs, const AttentionParams& p, Buffer& out) {
  const auto& s = cache.spec;
  std::vector<AttentionSeq> short_seqs;
  for (const auto& sq : seqs) {
    if (auto st = CheckAttentionSeq(q, out, s, sq, p); !st.ok()) return st;
    if (!batch_invariant_ && sq.q_len >= kGemmAttentionMinRows) {
      AttentionGemm(q, cache, layer, sq, p, out);
    } else {
      short_seqs.push_back(sq);
    }
  }
  if (!short_seqs.empty()) AttentionRows(q, cache, layer, short_seqs, p, out);
  return absl::OkStatus();
}

void CpuDevice::AttentionRows(const Buffer& q, const KvCache& cache, int layer, std::span<const AttentionSeq> seqs,
                              const AttentionParams& p, Buffer& out) {
  const auto& s = cache.spec;
  const size_t kv_dim = static_cast<size_t>(s.num_kv_heads) * s.head_dim;
  const size_t q_dim = static_cast<size_t>(p.num_heads) * p.head_dim;
  const float* k_base = cache.LayerSlots(layer, 0);
  const float* v_base = cache.LayerSlots(layer, 1);
  const int group = p.num_heads / p.num_kv_heads;
  const int hd = p.head_dim;
  // One work item per (query row, KV head): the query heads sharing that KV head are served from
  // one pass over its keys and values, so each K/V row is read from memory once, not `group` times.
  struct Item { int32_t seq; int32_t row; };
  std::vector<Item> rows;
  for (size_t si = 0; si < seqs.size(); ++si) {
    for (int i = 0; i < seqs[si].q_len; ++i) rows.push_back({static_cast<int32_t>(si), seqs[si].q_begin + i});
  }
  pool_.ParallelFor(rows.size() * p.num_kv_heads, 1, [&](size_t b, size_t e) {
    thread_local std::vector<float> scores;  // group x (pos + 1)
    for (size_t it = b; it < e; ++it) {
      const Item& item = rows[it / p.num_kv_heads];
      const int kvh = static_cast<int>(it % p.num_kv_heads);
      const auto& sq = seqs[item.seq];
      const int pos = sq.context_len - sq.q_len + (item.row - sq.q_begin);  // causal: see [0, pos]
      const size_t n = static_cast<size_t>(pos) + 1;
      const size_t head0 = static_cast<size_t>(kvh) * group * hd;
      scores.resize(n * group);
      cpu::AttendKvHead(q.data + item.row * q_dim + head0, group, hd, p.scale,
                        k_base + static_cast<size_t>(kvh) * hd * s.block_size, v_base + kvh * hd,
                        kv_dim, sq.block_table.data(), s.block_size, n, scores.data(), out.data + item.row * q_dim + head0);
    }
  });
}

void CpuDevice::AttentionGemm(const Buffer& q, const KvCache& cache, int layer, const AttentionSeq& sq,
                              const AttentionParams& p, Buffer& out) {
  // Prefill chunk: gather the sequence's K/V into contiguous rows, then per head two SGEMMs
  // (scores = Q·Kᵀ, out = P·V) around a causal softmax. The score matrix is q_len x context.
  const auto& s = cache.spec;
  const int hd = p.head_dim;
  const size_t kv_dim = static_cast<size_t>(s.num_kv_heads) * hd;
  const size_t q_dim = static_cast<size_t>(p.num_heads) * hd;
  const int ctx = sq.context_len, qn = sq.q_len;
  const int group = p.num_heads / p.num_kv_heads;
  attn_k_.resize(static_cast<size_t>(ctx) * kv_dim);
  attn_v_.resize(static_cast<size_t>(ctx) * kv_dim);
  const float* k_base = cache.LayerSlots(layer, 0);
  const float* v_base = cache.LayerSlots(layer, 1);
  const size_t bs = static_cast<size_t>(s.block_size);
  for (int t = 0; t < ctx; ++t) {
    const size_t slot = static_cast<size_t>(sq.block_table[t / s.block_size]) * bs + t % s.block_size;
    const float* kt = KColumn(k_base, slot, bs, kv_dim);
    for (size_t c = 0; c < kv_dim; ++c) attn_k_[t * kv_dim + c] = kt[c * bs];
    std::memcpy(attn_v_.data() + t * kv_dim, v_base + slot * kv_dim, kv_dim * sizeof(float));
  }
  // Heads in parallel, each with single-threaded SGEMMs and its own score matrix.
  pool_.ParallelFor(static_cast<size_t>(p.num_heads), 1, [&](size_t h0, size_t h1) {
    thread_local std::vector<float> scores;
    scores.resize(static_cast<size_t>(qn) * ctx);
    for (size_t h = h0; h < h1; ++h) {
      const size_t kvh = h / group;
      const float* qh = q.data + static_cast<size_t>(sq.q_begin) * q_dim + h * hd;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, qn, ctx, hd, p.scale, qh, q_dim,
                  attn_k_.data() + kvh * hd, kv_dim, 0.0f, scores.data(), ctx);
      for (int i = 0; i < qn; ++i) {
        const size_t visible = static_cast<size_t>(ctx - qn) + i + 1;  // causal
        cpu::SoftmaxPrefix(scores.data() + static_cast<size_t>(i) * ctx, ctx, visible);
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, qn, hd, ctx, 1.0f, scores.data(), ctx,
                  attn_v_.data() + kvh * hd, kv_dim, 0.0f,
                  out.data + static_cast<size_t>(sq.q_begin) * q_dim + h * hd, q_dim);
    }
  });
}

absl::Status CpuDevice::SwiGlu(const Buffer& gate, const Buffer& up, size_t n, Buffer& out) {
  if (auto s = CheckSize(gate, n, "SwiGlu gate"); !s.ok()) return s;
  if (auto s = CheckSize(up, n, "SwiGlu up"); !s.ok()) return s;
  if (auto s = CheckSize(out, n, "SwiGlu"); !s.ok()) return s;
  pool_.ParallelFor(n, 4096, [&](size_t b, size_t e) { cpu::SiluMul(gate.data + b, up.data + b, e - b, out.data + b); });
  return absl::OkStatus();
}

absl::Status CpuDevice::AddLora(const Buffer& x, std::span<const LoraSegment> segments, Buffer& y) {
  for (const LoraSegment& seg : segments) {
    const Weight& a = *seg.a;
    const Weight& b = *seg.b;
    const int64_t rank = a.rows, in = a.cols, out = b.cols;
    if (auto s = CheckLoraSegment(x, y, seg); !s.ok()) return s;
    const int n = static_cast<int>(seg.rows.size());
    if (n == 0) continue;
    lora_y_rows_.resize(n);
    for (int i = 0; i < n; ++i) lora_y_rows_[i] = y.data + static_cast<size_t>(seg.rows[i]) * out;
    // Shrink: gather the adapter's rows so A is streamed once for all of them, t = A x.
    lora_x_.resize(static_cast<size_t>(n) * in);
    lora_t_.resize(static_cast<size_t>(n) * rank);
    for (int i = 0; i < n; ++i) {
      std::memcpy(lora_x_.data() + static_cast<size_t>(i) * in, x.data + static_cast<size_t>(seg.rows[i]) * in,
                  in * sizeof(float));
    }
    pool_.ParallelFor(static_cast<size_t>(rank), 8, [&](size_t o0, size_t o1) {
      cpu::MatVecRows(lora_x_.data(), n, in, a.data, a.dtype, o0, o1, lora_t_.data(), rank);
    });
    for (int i = 0; i < n; ++i) {
      const float f = seg.scale * seg.row_weights[i];
      for (int64_t j = 0; j < rank; ++j) lora_t_[static_cast<size_t>(i) * rank + j] *= f;
    }
    // Expand: y rows += t · Bᵀ, straight into y. The column split depends only on `out` and the
    // pool, never on the batch, so a row's result is the same in any batch.
    pool_.ParallelFor(static_cast<size_t>(out), 256, [&](size_t o0, size_t o1) {
      cpu::AddRowsTimesMatrix(lora_t_.data(), n, rank, b.data, b.dtype, out, static_cast<int64_t>(o0),
                              static_cast<int64_t>(o1), lora_y_rows_.data());
    });
  }
  return absl::OkStatus();
}

absl::Status CpuDevice::Add(Buffer& x, const Buffer& y, size_t n) {
  if (auto s = CheckSize(x, n, "Add"); !s.ok()) return s;
  if (auto s = CheckSize(y, n, "Add"); !s.ok()) return s;
  for (size_t i = 0; i < n; ++i) x.data[i] += y.data[i];
  return absl::OkStatus();
}

absl::Status CpuDevice::Copy(const Buffer& src, size_t src_offset, Buffer& dst, size_t dst_offset, size_t n) {
  if (auto s = CheckSize(src, src_offset + n, "Copy source"); !s.ok()) return s;
  if (auto s = CheckSize(dst, dst_offset + n, "Copy"); !s.ok()) return s;
  std::memmove(dst.data + dst_offset, src.data + src_offset, n * sizeof(float));
  return absl::OkStatus();
}

absl::Status CpuDevice::SampleTokens(Buffer& logits, int vocab, std::span<const SampleRow> rows,
                                     std::span<int32_t> ids) {
  if (auto s = CheckSampleTokens(logits, vocab, rows, ids); !s.ok()) return s;
  std::vector<std::pair<float, int32_t>> candidates;
  for (size_t r = 0; r < rows.size(); ++r) {
    ids[r] = SampleOnHost(std::span<float>(logits.data + r * vocab, static_cast<size_t>(vocab)), rows[r], &candidates);
  }
  return absl::OkStatus();
}

}  // namespace brickserve
