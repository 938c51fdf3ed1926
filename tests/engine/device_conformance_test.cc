// Device conformance, op by op: each op of the device under test against the CPU reference on fresh
// random inputs, every weight type, output buffers poisoned with NaN so an element the op forgets to
// write (or writes where it must not) shows. Then batch invariance: a row computed alone is
// bit-identical to the same row inside a batch. See device_conformance_util.h for the devices,
// the seed and the tolerances.
#include <array>
#include <iostream>
#include <numeric>
#include <optional>
#include <utility>

#include "device_conformance_util.h"

namespace brickserve::conformance {
namespace {

constexpr DType kWeightTypes[] = {DType::kF32, DType::kF16, DType::kBF16};

std::span<const float> Rows(const std::vector<float>& v, size_t begin, size_t count, size_t cols) {
  return std::span<const float>(v).subspan(begin * cols, count * cols);
}

TEST_F(DeviceConformance, EmbedCopiesTableRowsExactly) {
  for (DType t : kWeightTypes) {
    SCOPED_TRACE(DTypeName(t));
    const int64_t vocab = 1000, dim = 72;
    CONF_ASSIGN_OR_FAIL(auto table, Upload(RandomWeight(t, {vocab, dim}, rng_, 1.0f)));
    std::vector<int32_t> ids = {0, static_cast<int32_t>(vocab - 1), 7, 7};
    for (int i = 0; i < 33; ++i) ids.push_back(RandomInt(rng_, 0, vocab - 1));
    const size_t n = ids.size() * dim;
    CONF_ASSIGN_OR_FAIL(auto out, Buffers(Nans(n + dim)));
    for (int side = 0; side < kSides; ++side) CONF_ASSERT_OK(device(side).Embed(table[side], ids, out[side]));
    CONF_ASSIGN_OR_FAIL(auto got, ReadBoth(out, n + dim));
    ExpectRowsClose(got[0], got[1], ids.size(), dim, kExact, "Embed");
    ExpectUntouched(std::span(got[0]).subspan(n), Nans(dim), "Embed past its rows");
  }
}

TEST_F(DeviceConformance, RmsNormMatchesInPlaceAndNot) {
  for (DType t : kWeightTypes) {
    for (int64_t dim : {72, 128}) {
      for (int rows : {1, 9, 33}) {
        for (bool in_place : {false, true}) {
          SCOPED_TRACE(absl::StrCat(DTypeName(t), " dim ", dim, " rows ", rows, in_place ? " in place" : ""));
          CONF_ASSIGN_OR_FAIL(auto w, Upload(RandomWeight(t, {dim}, rng_, 0.1f, 1.0f)));
          std::vector<float> x = RandomVector(rows * dim, rng_);
          for (int r = 0; r < rows; ++r) {  // rows of very different scales
            for (int64_t i = 0; i < dim; ++i) x[r * dim + i] *= std::pow(10.0f, static_cast<float>(r % 3 - 1));
          }
          const size_t n = x.size();
          x.resize(n + dim, std::numeric_limits<float>::quiet_NaN());
          CONF_ASSIGN_OR_FAIL(auto xb, Buffers(x));
          CONF_ASSIGN_OR_FAIL(auto out, Buffers(Nans(n + dim)));
          auto& dst = in_place ? xb : out;
          for (int side = 0; side < kSides; ++side) {
            CONF_ASSERT_OK(device(side).RmsNorm(xb[side], w[side], rows, 1e-5f, dst[side]));
          }
          CONF_ASSIGN_OR_FAIL(auto got, ReadBoth(dst, n + dim));
          ExpectRowsClose(got[0], got[1], rows, dim, kElementwise, "RmsNorm");
          ExpectUntouched(std::span(got[0]).subspan(n), Nans(dim), "RmsNorm past its rows");
        }
      }
    }
  }
}

// The DUT's copy uploaded as `matmul_only` (it may store it in its own layout: the CPU packs F32
// into column panels), the reference's as plain rows.
absl::StatusOr<Weight> UploadMatMulOnly(Device& d, const HostWeight& w) {
  HostTensor t = w.tensor();
  t.matmul_only = true;
  return d.UploadWeight(t);
}

// Row counts on both sides of any small-batch / GEMM switch (the CPU's is at 8), odd shapes (out
// not a multiple of the CPU's 16-wide panels), weights in the checkpoint's rows and `matmul_only`.
TEST_F(DeviceConformance, MatMulMatchesForEveryShapeAndWeightType) {
  struct Shape {
    int64_t out, in;
  };
  for (DType t : kWeightTypes) {
    for (Shape s : {Shape{100, 72}, Shape{256, 128}, Shape{72, 200}, Shape{17, 33}}) {
      for (bool matmul_only : {false, true}) {
        const auto host_w = RandomWeight(t, {s.out, s.in}, rng_, 1.0f / std::sqrt(static_cast<float>(s.in)));
        CONF_ASSIGN_OR_FAIL(auto w, Upload(host_w));
        if (matmul_only) {
          CONF_ASSIGN_OR_FAIL(w[0], UploadMatMulOnly(device(0), host_w));
        }
        CONF_ASSIGN_OR_FAIL(auto bias, Upload(RandomWeight(t, {s.out}, rng_, 0.5f)));
        for (int rows : {1, 3, 8, 9, 33, 130}) {
          for (bool with_bias : {false, true}) {
            SCOPED_TRACE(absl::StrCat(DTypeName(t), " [", s.out, ", ", s.in, "] rows ", rows, with_bias ? " +bias" : "",
                                      matmul_only ? " matmul_only" : ""));
            CONF_ASSIGN_OR_FAIL(auto x, Buffers(RandomVector(rows * s.in, rng_)));
            const size_t n = static_cast<size_t>(rows * s.out);
            CONF_ASSIGN_OR_FAIL(auto out, Buffers(Nans(n + s.out)));
            for (int side = 0; side < kSides; ++side) {
              CONF_ASSERT_OK(device(side).MatMul(x[side], rows, w[side], with_bias ? &bias[side] : nullptr, out[side]));
            }
            CONF_ASSIGN_OR_FAIL(auto got, ReadBoth(out, n + s.out));
            ExpectRowsClose(got[0], got[1], rows, s.out, WeightTolerance(t), "MatMul");
            ExpectUntouched(std::span(got[0]).subspan(n), Nans(s.out), "MatMul past its rows");
          }
        }
      }
    }
  }
}

// Long positions: the angle must be formed in double (float loses ~pos·1e-7 rad, 3e-3 at 30000).
TEST_F(DeviceConformance, RopeMatchesAtPositionsUpTo30000) {
  for (int head_dim : {64, 128}) {
    for (double theta : {10000.0, 500000.0}) {
      std::vector<float> inv(head_dim / 2);
      for (int i = 0; i < head_dim / 2; ++i) inv[i] = static_cast<float>(1.0 / std::pow(theta, 2.0 * i / head_dim));
      CONF_ASSIGN_OR_FAIL(auto inv_freq, Upload(MakeWeight(DType::kF32, {head_dim / 2}, inv)));
      for (int rows : {1, 5, 37}) {
        SCOPED_TRACE(absl::StrCat("head_dim ", head_dim, " theta ", theta, " rows ", rows));
        const int heads = 3;
        std::vector<int32_t> positions = {30000, 0};
        while (static_cast<int>(positions.size()) < rows) positions.push_back(RandomInt(rng_, 0, 30000));
        positions.resize(rows);
        const size_t width = static_cast<size_t>(heads) * head_dim, n = rows * width;
        std::vector<float> x = RandomVector(n, rng_);
        x.resize(n + width, std::numeric_limits<float>::quiet_NaN());
        CONF_ASSIGN_OR_FAIL(auto xb, Buffers(x));
        for (int side = 0; side < kSides; ++side) {
          CONF_ASSERT_OK(device(side).Rope(xb[side], rows, heads, head_dim, positions, inv_freq[side]));
        }
        CONF_ASSIGN_OR_FAIL(auto got, ReadBoth(xb, n + width));
        ExpectRowsClose(got[0], got[1], rows, width, kElementwise, "Rope");
        ExpectUntouched(std::span(got[0]).subspan(n), Nans(width), "Rope past its rows");
      }
    }
  }
}

// --- paged attention ---

struct SeqPlan {
  int context_len, q_len;
};
struct HeadShape {
  int heads, kv_heads, head_dim;
};

// Sequences in one shuffled paged cache (block_size 16, 2 layers), every layer's K/V drawn at random.
// Slots no sequence writes hold NaN: fresh device memory may hold any bits, and a kernel must never
// let a slot past context_len reach the output (vLLM zeroes V there for that reason).
struct AttentionScene {
  static constexpr int kLayers = 2, kBlockSize = 16;
  HeadShape shape;
  std::vector<SeqPlan> plans;
  std::vector<std::vector<int32_t>> tables;
  std::vector<AttentionSeq> seqs;  // q rows consecutive in plan order
  int total_q = 0;
  std::vector<float> q;                                 // [total_q, heads * head_dim]
  std::array<std::vector<std::vector<float>>, 2> k, v;  // [layer][seq]: [context_len, kv_dim]
  KvCacheSpec spec;

  size_t q_dim() const { return static_cast<size_t>(shape.heads) * shape.head_dim; }
  size_t kv_dim() const { return static_cast<size_t>(shape.kv_heads) * shape.head_dim; }
  int32_t Slot(size_t seq, int pos) const { return tables[seq][pos / kBlockSize] * kBlockSize + pos % kBlockSize; }

  AttentionScene(HeadShape s, std::vector<SeqPlan> p, std::mt19937& rng) : shape(s), plans(std::move(p)) {
    int blocks = 0;
    // Each sequence may hold one reserved block past its context, never written.
    for (const auto& pl : plans) blocks += (pl.context_len + kBlockSize - 1) / kBlockSize + 1;
    spec = {kLayers, s.kv_heads, s.head_dim, kBlockSize, blocks + 3};
    std::vector<int32_t> ids(spec.num_blocks);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    size_t next = 0;
    for (const auto& pl : plans) {
      const int need = (pl.context_len + kBlockSize - 1) / kBlockSize + RandomInt(rng, 0, 1);
      tables.emplace_back(ids.begin() + next, ids.begin() + next + need);
      next += need;
      for (int l = 0; l < kLayers; ++l) {
        k[l].push_back(RandomVector(pl.context_len * kv_dim(), rng, 1.5f));
        v[l].push_back(RandomVector(pl.context_len * kv_dim(), rng));
      }
    }
    for (size_t i = 0; i < plans.size(); ++i) {
      seqs.push_back({total_q, plans[i].q_len, plans[i].context_len, tables[i]});
      total_q += plans[i].q_len;
    }
    q = RandomVector(total_q * q_dim(), rng);
  }

  // Allocates the cache on `d`, poisons it, and writes each layer in two calls: the sequences'
  // earlier tokens (rows shuffled) and this step's new tokens (in batch order).
  absl::StatusOr<KvCache> Fill(Device& d, std::mt19937& rng) const {
    auto cache = d.AllocKvCache(spec);
    if (!cache.ok()) return cache.status();
    if (auto st = d.CopyToDevice(Nans(cache->storage.size), cache->storage, 0); !st.ok()) return st;
    for (int l = 0; l < kLayers; ++l) {
      for (bool past : {true, false}) {
        std::vector<std::pair<size_t, int>> rows;  // (seq, position)
        for (size_t i = 0; i < plans.size(); ++i) {
          const int first_new = plans[i].context_len - plans[i].q_len;
          for (int p = past ? 0 : first_new; p < (past ? first_new : plans[i].context_len); ++p) rows.push_back({i, p});
        }
        if (rows.empty()) continue;
        if (past) std::shuffle(rows.begin(), rows.end(), rng);
        std::vector<float> kh, vh;
        std::vector<int32_t> slots;
        for (auto [i, p] : rows) {
          kh.insert(kh.end(), k[l][i].begin() + p * kv_dim(), k[l][i].begin() + (p + 1) * kv_dim());
          vh.insert(vh.end(), v[l][i].begin() + p * kv_dim(), v[l][i].begin() + (p + 1) * kv_dim());
          slots.push_back(Slot(i, p));
        }
        auto kb = BufferWith(d, kh);
        auto vb = BufferWith(d, vh);
        if (!kb.ok() || !vb.ok()) return kb.ok() ? vb.status() : kb.status();
        if (auto st = d.WriteKv(*cache, l, *kb, *vb, slots); !st.ok()) return st;
      }
    }
    return cache;
  }

  // out rows [0, rows) of attention over `s` with queries `qh` (plus one poisoned row past them).
  absl::StatusOr<std::vector<float>> Run(Device& d, const KvCache& cache, int layer, std::span<const AttentionSeq> s,
                                         std::span<const float> qh, int rows) const {
    auto qb = BufferWith(d, qh);
    if (!qb.ok()) return qb.status();
    auto out = BufferWith(d, Nans((rows + 1) * q_dim()));
    if (!out.ok()) return out.status();
    const AttentionParams p{shape.heads, shape.kv_heads, shape.head_dim, 1.0f / std::sqrt(float(shape.head_dim))};
    if (auto st = d.Attention(*qb, cache, layer, s, p, *out); !st.ok()) return st;
    return Read(d, *out, (rows + 1) * q_dim());
  }
};

enum class BatchKind { kDecode, kPrefill, kChunks, kMixed };

std::vector<SeqPlan> RandomPlans(BatchKind kind, std::mt19937& rng) {
  std::vector<SeqPlan> plans;
  auto decode = [&] { plans.push_back({RandomInt(rng, 1, 300), 1}); };
  auto prefill = [&] {
    const int n = RandomInt(rng, 1, 40);
    plans.push_back({n, n});
  };
  auto chunk = [&] {
    const int q = RandomInt(rng, 2, 40);
    plans.push_back({RandomInt(rng, q + 1, 300), q});
  };
  switch (kind) {
    case BatchKind::kDecode:
      plans = {{1, 1}, {16, 1}, {17, 1}, {300, 1}};
      for (int i = 0; i < 4; ++i) decode();
      break;
    case BatchKind::kPrefill:
      plans = {{1, 1}, {16, 16}, {40, 40}};
      for (int i = 0; i < 3; ++i) prefill();
      break;
    case BatchKind::kChunks:
      plans = {{32, 16}, {300, 40}};
      for (int i = 0; i < 3; ++i) chunk();
      break;
    case BatchKind::kMixed:
      decode(), decode(), prefill(), chunk(), chunk(), decode();
      break;
  }
  std::shuffle(plans.begin(), plans.end(), rng);
  return plans;
}

constexpr HeadShape kHeadShapes[] = {{4, 4, 64}, {8, 4, 128}, {8, 2, 64}, {8, 2, 128}};  // GQA groups 1, 2, 4
constexpr BatchKind kBatchKinds[] = {BatchKind::kDecode, BatchKind::kPrefill, BatchKind::kChunks, BatchKind::kMixed};

TEST_F(DeviceConformance, WriteKvAndPagedAttentionMatch) {
  for (HeadShape hs : kHeadShapes) {
    for (BatchKind kind : kBatchKinds) {
      const AttentionScene scene(hs, RandomPlans(kind, rng_), rng_);
      std::string plan;
      for (const auto& p : scene.plans) absl::StrAppend(&plan, " (ctx ", p.context_len, ", q ", p.q_len, ")");
      SCOPED_TRACE(absl::StrCat("heads ", hs.heads, "/", hs.kv_heads, " head_dim ", hs.head_dim, " seqs", plan));
      Pair<KvCache> cache;
      for (int side = 0; side < kSides; ++side) {
        CONF_ASSIGN_OR_FAIL(cache[side], scene.Fill(device(side), rng_));
      }
      for (int layer = 0; layer < AttentionScene::kLayers; ++layer) {
        Pair<std::vector<float>> got;
        for (int side = 0; side < kSides; ++side) {
          CONF_ASSIGN_OR_FAIL(got[side],
                              scene.Run(device(side), cache[side], layer, scene.seqs, scene.q, scene.total_q));
        }
        ExpectRowsClose(got[0], got[1], scene.total_q, scene.q_dim(), kElementwise,
                        absl::StrCat("Attention layer ", layer));
        ExpectUntouched(Rows(got[0], scene.total_q, 1, scene.q_dim()), Nans(scene.q_dim()), "Attention past its rows");
      }
    }
  }
}

TEST_F(DeviceConformance, SwiGluAddAndCopyMatch) {
  for (size_t n : {size_t{1}, size_t{7}, size_t{1000}, size_t{4099}}) {
    SCOPED_TRACE(absl::StrCat("n ", n));
    const std::vector<float> gate = RandomVector(n, rng_, 3.0f), up = RandomVector(n, rng_);
    for (bool alias : {false, true}) {  // out may alias gate
      CONF_ASSIGN_OR_FAIL(auto g, Buffers(gate));
      CONF_ASSIGN_OR_FAIL(auto u, Buffers(up));
      CONF_ASSIGN_OR_FAIL(auto out, Buffers(Nans(n + 8)));
      auto& dst = alias ? g : out;
      for (int side = 0; side < kSides; ++side) CONF_ASSERT_OK(device(side).SwiGlu(g[side], u[side], n, dst[side]));
      CONF_ASSIGN_OR_FAIL(auto got, ReadBoth(dst, n));
      ExpectRowsClose(got[0], got[1], n, 1, kElementwise, alias ? "SwiGlu in place" : "SwiGlu");
      if (!alias) {
        CONF_ASSIGN_OR_FAIL(auto all, ReadBoth(out, n + 8));
        ExpectUntouched(std::span(all[0]).subspan(n), Nans(8), "SwiGlu past n");
      }
    }
    // Add: x[:n] += y[:n] exactly; x past n untouched.
    std::vector<float> x = RandomVector(n + 8, rng_);
    CONF_ASSIGN_OR_FAIL(auto xb, Buffers(x));
    CONF_ASSIGN_OR_FAIL(auto yb, Buffers(up));
    for (int side = 0; side < kSides; ++side) CONF_ASSERT_OK(device(side).Add(xb[side], yb[side], n));
    CONF_ASSIGN_OR_FAIL(auto sum, ReadBoth(xb, n + 8));
    ExpectRowsClose(sum[0], sum[1], n, 1, kExact, "Add");
    ExpectUntouched(std::span(sum[0]).subspan(n), std::span(x).subspan(n), "Add past n");
    // Copy: n floats from an offset to an offset; the rest of dst untouched.
    const std::vector<float> src = RandomVector(n + 17, rng_);
    CONF_ASSIGN_OR_FAIL(auto sb, Buffers(src));
    CONF_ASSIGN_OR_FAIL(auto db, Buffers(Nans(n + 40)));
    for (int side = 0; side < kSides; ++side) CONF_ASSERT_OK(device(side).Copy(sb[side], 17, db[side], 31, n));
    CONF_ASSIGN_OR_FAIL(auto dst, ReadBoth(db, n + 40));
    ExpectRowsClose(std::span(dst[0]).subspan(31, n), std::span(src).subspan(17, n), n, 1, kExact, "Copy");
    ExpectUntouched(std::span(dst[0]).first(31), Nans(31), "Copy before dst_offset");
    ExpectUntouched(std::span(dst[0]).subspan(31 + n), Nans(9), "Copy past n");
  }
}

// --- LoRA and the sparse FFN ---

// Four adapters of F32/BF16/F16 weights, rank 4..16; segments with a row in two of them, rows in
// none, an empty segment, each row its own weight.
struct LoraScene {
  static constexpr int kRows = 8, kIn = 72, kOut = 100;
  std::vector<HostWeight> a, b;
  std::vector<DType> dtypes = {DType::kF32, DType::kBF16, DType::kF16, DType::kF32};
  std::vector<std::vector<int32_t>> rows = {{0, 3, 5}, {6, 3, 1}, {}, {7}};
  std::vector<std::vector<float>> weights;
  std::vector<float> scales = {2.0f, 0.5f, 1.0f, 1.5f};

  explicit LoraScene(std::mt19937& rng) {
    const int ranks[] = {8, 16, 4, 8};
    for (size_t s = 0; s < dtypes.size(); ++s) {
      a.push_back(RandomWeight(dtypes[s], {ranks[s], kIn}, rng, 1.0f / std::sqrt(float(kIn))));
      b.push_back(RandomWeight(dtypes[s], {ranks[s], kOut}, rng, 1.0f / std::sqrt(float(ranks[s]))));
      std::vector<float> w;
      for (size_t i = 0; i < rows[s].size(); ++i) w.push_back(std::uniform_real_distribution<float>(-1.0f, 1.5f)(rng));
      weights.push_back(std::move(w));
    }
  }
  // The segments over uploaded `aw`/`bw`, restricted to the rows `keep` says (all by default).
  std::vector<LoraSegment> Segments(const std::vector<Weight>& aw, const std::vector<Weight>& bw,
                                    std::vector<std::vector<int32_t>>* storage_rows,
                                    std::vector<std::vector<float>>* storage_w, int only_row = -1,
                                    int32_t renumber_to = 0) const {
    std::vector<LoraSegment> segs;
    storage_rows->assign(rows.size(), {});
    storage_w->assign(rows.size(), {});
    for (size_t s = 0; s < rows.size(); ++s) {
      for (size_t i = 0; i < rows[s].size(); ++i) {
        if (only_row >= 0 && rows[s][i] != only_row) continue;
        (*storage_rows)[s].push_back(only_row >= 0 ? renumber_to : rows[s][i]);
        (*storage_w)[s].push_back(weights[s][i]);
      }
      segs.push_back({&aw[s], &bw[s], scales[s], (*storage_rows)[s], (*storage_w)[s]});
    }
    return segs;
  }
};

TEST_F(DeviceConformance, AddLoraAddsEachSegmentToItsRowsOnly) {
  const LoraScene scene(rng_);
  Pair<std::vector<Weight>> aw, bw;
  for (size_t s = 0; s < scene.a.size(); ++s) {
    CONF_ASSIGN_OR_FAIL(auto a, Upload(scene.a[s]));
    CONF_ASSIGN_OR_FAIL(auto b, Upload(scene.b[s]));
    for (int side = 0; side < kSides; ++side) aw[side].push_back(a[side]), bw[side].push_back(b[side]);
  }
  const std::vector<float> x = RandomVector(LoraScene::kRows * LoraScene::kIn, rng_);
  const std::vector<float> y0 = RandomVector(LoraScene::kRows * LoraScene::kOut, rng_);  // y is accumulated into
  CONF_ASSIGN_OR_FAIL(auto xb, Buffers(x));
  CONF_ASSIGN_OR_FAIL(auto yb, Buffers(y0));
  std::vector<std::vector<int32_t>> seg_rows;
  std::vector<std::vector<float>> seg_weights;
  for (int side = 0; side < kSides; ++side) {
    const auto segs = scene.Segments(aw[side], bw[side], &seg_rows, &seg_weights);
    CONF_ASSERT_OK(device(side).AddLora(xb[side], segs, yb[side]));
  }
  CONF_ASSIGN_OR_FAIL(auto got, ReadBoth(yb, y0.size()));
  for (int r = 0; r < LoraScene::kRows; ++r) {
    // A row's tolerance: that of the least precise adapter it uses.
    std::optional<DType> dtype;
    for (size_t s = 0; s < scene.rows.size(); ++s) {
      if (std::find(scene.rows[s].begin(), scene.rows[s].end(), r) == scene.rows[s].end()) continue;
      if (!dtype || scene.dtypes[s] != DType::kF32) dtype = scene.dtypes[s];
    }
    const auto row = [&](const std::vector<float>& v) { return Rows(v, r, 1, LoraScene::kOut); };
    if (dtype) {
      ExpectRowsClose(row(got[0]), row(got[1]), 1, LoraScene::kOut, WeightTolerance(*dtype),
                      absl::StrCat("AddLora row ", r));
    } else {
      ExpectUntouched(row(got[0]), row(y0), absl::StrCat("AddLora row ", r, " (in no segment)"));
    }
  }
}

// Groups sharing rows, a group of more than 64 neurons, a group without rows, an output row in no
// group (its output is the empty sum, 0) and rows outside out_rows (left as they are).
struct FfnScene {
  static constexpr int kRows = 8, kHidden = 72, kFf = 200;
  std::vector<std::vector<int32_t>> neurons, rows = {{0, 3}, {3, 5, 2}, {}, {5}};
  std::vector<int32_t> out_rows = {6, 0, 2, 3, 5};

  explicit FfnScene(std::mt19937& rng) {
    std::vector<int32_t> all(kFf);
    std::iota(all.begin(), all.end(), 0);
    for (int count : {70, 30, 5, 1}) {
      std::shuffle(all.begin(), all.end(), rng);
      neurons.emplace_back(all.begin(), all.begin() + count);
    }
  }
  std::vector<FfnNeuronGroup> Groups() const {
    std::vector<FfnNeuronGroup> g;
    for (size_t i = 0; i < rows.size(); ++i) g.push_back({neurons[i], rows[i]});
    return g;
  }
};

TEST_F(DeviceConformance, SparseFfnWritesOutRowsOnly) {
  const FfnScene scene(rng_);
  constexpr int H = FfnScene::kHidden, I = FfnScene::kFf, R = FfnScene::kRows;
  for (DType t : kWeightTypes) {
    SCOPED_TRACE(DTypeName(t));
    const float sd = 1.0f / std::sqrt(float(H));
    CONF_ASSIGN_OR_FAIL(auto gate, Upload(RandomWeight(t, {I, H}, rng_, sd)));
    CONF_ASSIGN_OR_FAIL(auto up, Upload(RandomWeight(t, {I, H}, rng_, sd)));
    CONF_ASSIGN_OR_FAIL(auto down_t, Upload(RandomWeight(t, {I, H}, rng_, 1.0f / std::sqrt(float(I)))));
    CONF_ASSIGN_OR_FAIL(auto x, Buffers(RandomVector(R * H, rng_)));
    CONF_ASSIGN_OR_FAIL(auto out, Buffers(Nans(R * H)));
    const auto groups = scene.Groups();
    for (int side = 0; side < kSides; ++side) {
      CONF_ASSERT_OK(
          device(side).SparseFfn(x[side], gate[side], up[side], down_t[side], groups, scene.out_rows, out[side]));
    }
    CONF_ASSIGN_OR_FAIL(auto got, ReadBoth(out, R * H));
    for (int r = 0; r < R; ++r) {
      const bool written = std::count(scene.out_rows.begin(), scene.out_rows.end(), r) > 0;
      if (written) {
        ExpectRowsClose(Rows(got[0], r, 1, H), Rows(got[1], r, 1, H), 1, H, WeightTolerance(t),
                        absl::StrCat("SparseFfn row ", r));
      } else {
        ExpectUntouched(Rows(got[0], r, 1, H), Nans(H), absl::StrCat("SparseFfn row ", r, " (not in out_rows)"));
      }
    }
  }
}

// --- batch invariance ---

// Runs on the DUT's batch-invariant twin (same kind, batch_invariant = true): a row's result must be
// bit-identical alone and inside any batch, so a request's output never depends on its neighbours.
class BatchInvariance : public DeviceConformance {
 protected:
  void SetUp() override {
    DeviceConformance::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    DeviceOptions options = choice_.options;
    if (!options.batch_invariant) {
      std::cout << "[   NOTE   ] " << choice_.name << " runs with batch_invariant = false, which promises no "
                << "invariance: checking its batch-invariant twin instead (for cpu-gemm, the CPU row-wise "
                << "kernels, which proves this check's logic)\n";
    }
    options.batch_invariant = true;
    auto twin = CreateDevice(options);
    ASSERT_TRUE(twin.ok()) << twin.status();
    twin_ = *std::move(twin);
  }
  std::unique_ptr<Device> twin_;
};

TEST_F(BatchInvariance, MatMulRowAloneEqualsRowInBatch) {
  Device& d = *twin_;
  const int64_t out_dim = 100, in = 72;
  const int batch = 130;
  for (DType t : kWeightTypes) {
    for (bool matmul_only : {false, true}) {
      SCOPED_TRACE(absl::StrCat(DTypeName(t), matmul_only ? " matmul_only" : ""));
      HostTensor host_w = RandomWeight(t, {out_dim, in}, rng_, 0.12f).tensor();
      host_w.matmul_only = matmul_only;
      CONF_ASSIGN_OR_FAIL(Weight w, d.UploadWeight(host_w));
      CONF_ASSIGN_OR_FAIL(Weight bias, d.UploadWeight(RandomWeight(t, {out_dim}, rng_, 0.5f).tensor()));
      const std::vector<float> x = RandomVector(batch * in, rng_);
      auto run = [&](int first, int rows) -> absl::StatusOr<std::vector<float>> {
        auto xb = BufferWith(d, Rows(x, first, rows, in));
        auto out = d.AllocBuffer(rows * out_dim);
        if (!xb.ok() || !out.ok()) return xb.ok() ? out.status() : xb.status();
        if (auto s = d.MatMul(*xb, rows, w, &bias, *out); !s.ok()) return s;
        return Read(d, *out, rows * out_dim);
      };
      CONF_ASSIGN_OR_FAIL(auto all, run(0, batch));
      const std::pair<int, int> parts[] = {{0, 1}, {8, 1}, {64, 1}, {129, 1}, {0, 9}, {40, 33}};  // (first, rows)
      for (auto [first, rows] : parts) {
        CONF_ASSIGN_OR_FAIL(auto part, run(first, rows));
        ExpectRowsClose(part, Rows(all, first, rows, out_dim), rows, out_dim, kExact,
                        absl::StrCat("MatMul rows [", first, ", ", first + rows, ") vs the same rows of ", batch));
      }
    }
  }
}

TEST_F(BatchInvariance, AttentionSeqAloneOrChunkedEqualsSeqInBatch) {
  Device& d = *twin_;
  for (HeadShape hs : kHeadShapes) {
    const AttentionScene scene(hs, RandomPlans(BatchKind::kMixed, rng_), rng_);
    SCOPED_TRACE(absl::StrCat("heads ", hs.heads, "/", hs.kv_heads, " head_dim ", hs.head_dim));
    CONF_ASSIGN_OR_FAIL(KvCache cache, scene.Fill(d, rng_));
    CONF_ASSIGN_OR_FAIL(auto all, scene.Run(d, cache, 1, scene.seqs, scene.q, scene.total_q));
    for (const AttentionSeq& s : scene.seqs) {
      // Alone, then split into up to three chunks (as a scheduler may chunk a prompt differently).
      const int cut1 = RandomInt(rng_, 0, s.q_len), cut2 = RandomInt(rng_, cut1, s.q_len);
      const std::pair<int, int> parts[] = {{0, s.q_len}, {0, cut1}, {cut1, cut2}, {cut2, s.q_len}};  // [b, e)
      for (auto [b, e] : parts) {
        if (b == e) continue;
        const AttentionSeq part{0, e - b, s.context_len - s.q_len + e, s.block_table};
        const auto q = Rows(scene.q, s.q_begin + b, e - b, scene.q_dim());
        CONF_ASSIGN_OR_FAIL(auto got, scene.Run(d, cache, 1, {&part, 1}, q, e - b));
        ExpectRowsClose(got, Rows(all, s.q_begin + b, e - b, scene.q_dim()), e - b, scene.q_dim(), kExact,
                        absl::StrCat("Attention (ctx ", s.context_len, ", q ", s.q_len, ") rows [", b, ", ", e,
                                     ") alone vs in the batch"));
      }
    }
  }
}

TEST_F(BatchInvariance, SparseFfnRowAloneEqualsRowInBatch) {
  Device& d = *twin_;
  const FfnScene scene(rng_);
  constexpr int H = FfnScene::kHidden, I = FfnScene::kFf, R = FfnScene::kRows;
  for (DType t : kWeightTypes) {
    SCOPED_TRACE(DTypeName(t));
    const float sd = 1.0f / std::sqrt(float(H));
    CONF_ASSIGN_OR_FAIL(Weight gate, d.UploadWeight(RandomWeight(t, {I, H}, rng_, sd).tensor()));
    CONF_ASSIGN_OR_FAIL(Weight up, d.UploadWeight(RandomWeight(t, {I, H}, rng_, sd).tensor()));
    CONF_ASSIGN_OR_FAIL(Weight down_t, d.UploadWeight(RandomWeight(t, {I, H}, rng_, sd).tensor()));
    const std::vector<float> x = RandomVector(R * H, rng_);
    auto run = [&](std::span<const float> xh, std::span<const FfnNeuronGroup> groups, std::span<const int32_t> out_rows,
                   int rows) -> absl::StatusOr<std::vector<float>> {
      auto xb = BufferWith(d, xh);
      auto out = BufferWith(d, Nans(rows * H));
      if (!xb.ok() || !out.ok()) return xb.ok() ? out.status() : xb.status();
      if (auto s = d.SparseFfn(*xb, gate, up, down_t, groups, out_rows, *out); !s.ok()) return s;
      return Read(d, *out, rows * H);
    };
    CONF_ASSIGN_OR_FAIL(auto all, run(x, scene.Groups(), scene.out_rows, R));
    for (int32_t r : scene.out_rows) {
      // The row alone as row 0, with the groups that hold it, in the same order.
      std::vector<FfnNeuronGroup> groups;
      const int32_t zero = 0;
      for (const FfnNeuronGroup& g : scene.Groups()) {
        const bool has = std::find(g.rows.begin(), g.rows.end(), r) != g.rows.end();
        groups.push_back({g.neurons, has ? std::span<const int32_t>(&zero, 1) : std::span<const int32_t>()});
      }
      CONF_ASSIGN_OR_FAIL(auto alone, run(Rows(x, r, 1, H), groups, {&zero, 1}, 1));
      ExpectRowsClose(alone, Rows(all, r, 1, H), 1, H, kExact,
                      absl::StrCat("SparseFfn row ", r, " alone vs in the batch"));
    }
  }
}

TEST_F(BatchInvariance, AddLoraRowAloneEqualsRowInBatch) {
  Device& d = *twin_;
  const LoraScene scene(rng_);
  constexpr int R = LoraScene::kRows, In = LoraScene::kIn, Out = LoraScene::kOut;
  std::vector<Weight> aw, bw;
  for (size_t s = 0; s < scene.a.size(); ++s) {
    CONF_ASSIGN_OR_FAIL(Weight a, d.UploadWeight(scene.a[s].tensor()));
    CONF_ASSIGN_OR_FAIL(Weight b, d.UploadWeight(scene.b[s].tensor()));
    aw.push_back(a), bw.push_back(b);
  }
  const std::vector<float> x = RandomVector(R * In, rng_), y0 = RandomVector(R * Out, rng_);
  auto run = [&](std::span<const float> xh, std::span<const float> yh,
                 std::span<const LoraSegment> segs) -> absl::StatusOr<std::vector<float>> {
    auto xb = BufferWith(d, xh);
    auto yb = BufferWith(d, yh);
    if (!xb.ok() || !yb.ok()) return xb.ok() ? yb.status() : xb.status();
    if (auto s = d.AddLora(*xb, segs, *yb); !s.ok()) return s;
    return Read(d, *yb, yh.size());
  };
  std::vector<std::vector<int32_t>> rows;
  std::vector<std::vector<float>> weights;
  CONF_ASSIGN_OR_FAIL(auto all, run(x, y0, scene.Segments(aw, bw, &rows, &weights)));
  for (int r = 0; r < R; ++r) {
    const auto segs = scene.Segments(aw, bw, &rows, &weights, /*only_row=*/r, /*renumber_to=*/0);
    CONF_ASSIGN_OR_FAIL(auto alone, run(Rows(x, r, 1, In), Rows(y0, r, 1, Out), segs));
    ExpectRowsClose(alone, Rows(all, r, 1, Out), 1, Out, kExact,
                    absl::StrCat("AddLora row ", r, " alone vs in the batch"));
  }
}

}  // namespace
}  // namespace brickserve::conformance
