#include "engine/cli/perplexity.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <memory>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "engine/engine.h"
#include "engine/modules/module_set.h"

namespace brickserve {
namespace {

std::string Fmt(const char* format, ...) {
  char buf[256];
  va_list args;
  va_start(args, format);
  std::vsnprintf(buf, sizeof(buf), format, args);
  va_end(args);
  return buf;
}

// Percent change; what would print as -0.0 prints as +0.0.
double PctChange(double value, double base) {
  const double pct = base > 0 ? 100.0 * (value / base - 1.0) : 0.0;
  return std::fabs(pct) < 0.05 ? 0.0 : pct;
}

// "0.3", "1.0".
std::string DensityLabel(float d) {
  std::string s = Fmt("%g", static_cast<double>(d));
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

absl::Status CheckChunks(const Engine& engine, int chunk_tokens) {
  if (chunk_tokens < 1) return absl::InvalidArgumentError(absl::StrCat("--chunk-tokens must be >= 1, got ", chunk_tokens));
  const int need = chunk_tokens + (engine.info().bos_id ? 1 : 0);
  if (need > engine.max_context()) {
    return absl::InvalidArgumentError(absl::StrCat("a chunk of ", chunk_tokens, " tokens", engine.info().bos_id ? " plus BOS" : "",
                                                   " exceeds the model's context of ", engine.max_context()));
  }
  return absl::OkStatus();
}

}  // namespace

TokenChunks MakeEvalChunks(std::span<const int32_t> ids, std::optional<int32_t> bos, int max_chunks,
                           int chunk_tokens) {
  TokenChunks out;
  if (chunk_tokens < 1) return out;
  for (size_t off = 0; off < ids.size(); off += static_cast<size_t>(chunk_tokens)) {
    if (max_chunks > 0 && static_cast<int>(out.size()) >= max_chunks) break;
    const size_t n = std::min(static_cast<size_t>(chunk_tokens), ids.size() - off);
    std::vector<int32_t> chunk;
    chunk.reserve(n + 1);
    if (bos) chunk.push_back(*bos);
    chunk.insert(chunk.end(), ids.begin() + off, ids.begin() + off + n);
    if (chunk.size() < 2) break;  // nothing to score
    out.push_back(std::move(chunk));
  }
  return out;
}

absl::StatusOr<TokenChunks> TokenizeEvalChunks(const Engine& engine, std::string_view text, int max_chunks,
                                               int chunk_tokens) {
  if (auto s = CheckChunks(engine, chunk_tokens); !s.ok()) return s;
  const std::vector<int32_t> ids = engine.tokenizer().Encode(text, /*add_special_tokens=*/false);
  TokenChunks chunks = MakeEvalChunks(ids, engine.info().bos_id, max_chunks, chunk_tokens);
  if (chunks.empty()) return absl::InvalidArgumentError("the text has no tokens to score");
  return chunks;
}

absl::StatusOr<TokenChunks> TokenizeAllChunks(const Engine& engine, std::string_view text, int chunk_tokens,
                                              int64_t max_tokens) {
  if (auto s = CheckChunks(engine, chunk_tokens); !s.ok()) return s;
  std::vector<int32_t> ids = engine.tokenizer().Encode(text, /*add_special_tokens=*/false);
  if (max_tokens > 0 && static_cast<int64_t>(ids.size()) > max_tokens) ids.resize(static_cast<size_t>(max_tokens));
  TokenChunks chunks = MakeEvalChunks(ids, engine.info().bos_id, 0, chunk_tokens);
  if (chunks.empty()) return absl::InvalidArgumentError("the text has no tokens to score");
  return chunks;
}

absl::StatusOr<PerplexityResult> Perplexity(Engine& engine, const TokenChunks& chunks, const RouterPolicy* policy,
                                            ModuleTrace* trace) {
  PerplexityResult r;
  double sum = 0;
  for (const auto& chunk : chunks) {
    auto scored = engine.Score(chunk, /*top_logprobs=*/0, policy, trace);
    if (!scored.ok()) return scored.status();
    for (const GeneratedToken& t : scored->tokens) sum += static_cast<double>(t.logprob);
    r.tokens += static_cast<int64_t>(scored->tokens.size());
    ++r.chunks;
  }
  if (r.tokens == 0) return absl::InvalidArgumentError("perplexity: no tokens to score");
  r.mean_logprob = sum / static_cast<double>(r.tokens);
  r.ppl = std::exp(-r.mean_logprob);
  return r;
}

// --- grid ----------------------------------------------------------------------------------------

absl::StatusOr<EvalGrid> RunEvalGrid(Engine& engine, const std::vector<EvalDomain>& domains,
                                     const std::vector<ModuleSelector>& selectors, const std::vector<float>& densities,
                                     const std::function<void(const std::string&)>& progress) {
  EvalGrid grid;
  for (const auto& d : domains) {
    grid.domains.push_back(d.name);
    if (progress) progress(absl::StrCat("dense ", d.name));
    auto r = Perplexity(engine, d.chunks);
    if (!r.ok()) return absl::Status(r.status().code(), absl::StrCat(d.name, ": dense: ", r.status().message()));
    grid.dense.push_back(*r);
  }
  if (engine.modules() == nullptr) return grid;
  for (ModuleSelector s : selectors) {
    for (float density : densities) {
      EvalCell cell;
      cell.selector = s;
      cell.density = density;
      RouterPolicy p;
      p.mode = RouterMode::kDensity;
      p.selector = s;
      p.density = density;
      if (auto st = ValidateRouterPolicy(p, engine.modules()); !st.ok()) return st;
      for (const auto& d : domains) {
        if (progress) progress(absl::StrCat(ModuleSelectorName(s), " ", DensityLabel(density), " ", d.name));
        ModuleTrace trace;
        auto r = Perplexity(engine, d.chunks, &p, &trace);
        if (!r.ok()) {
          return absl::Status(r.status().code(), absl::StrCat(d.name, ": ", RouterPolicyToString(p), ": ",
                                                              r.status().message()));
        }
        cell.per_domain.push_back(*r);
        cell.trace.Merge(trace);
        cell.traces.push_back(std::move(trace));
      }
      grid.cells.push_back(std::move(cell));
    }
  }
  return grid;
}

std::string FormatEvalGrid(const EvalGrid& grid) {
  std::string out = "| domain | dense |";
  std::string rule = "|---|---:|";
  for (const EvalCell& c : grid.cells) {
    absl::StrAppend(&out, " ", ModuleSelectorName(c.selector), " ", DensityLabel(c.density), " |");
    rule += "---:|";
  }
  absl::StrAppend(&out, "\n", rule, "\n");
  for (size_t d = 0; d < grid.domains.size(); ++d) {
    const double base = grid.dense[d].ppl;
    absl::StrAppend(&out, "| ", grid.domains[d], " | ", Fmt("%.2f", base), " |");
    for (const EvalCell& c : grid.cells) {
      const double v = c.per_domain[d].ppl;
      absl::StrAppend(&out, " ", Fmt("%.2f (%+.1f%%)", v, PctChange(v, base)), " |");
    }
    out += "\n";
  }
  out += "\n";
  for (size_t d = 0; d < grid.domains.size(); ++d) {
    absl::StrAppend(&out, d == 0 ? "scored tokens: " : ", ", grid.domains[d], " ", grid.dense[d].tokens, " in ",
                    grid.dense[d].chunks, " chunks");
  }
  out += "\n";
  if (grid.cells.empty()) return out;
  out += "\nmeasured effective density (FFN neurons computed / dense, resident neurons included):\n";
  for (const EvalCell& c : grid.cells) {
    absl::StrAppend(&out, "- ", ModuleSelectorName(c.selector), " ", DensityLabel(c.density), ": ",
                    Fmt("%.3f", c.trace.density()), " (");
    for (size_t d = 0; d < c.traces.size(); ++d) {
      absl::StrAppend(&out, d ? ", " : "", grid.domains[d], " ", Fmt("%.3f", c.traces[d].density()));
    }
    out += ")\n";
  }
  for (const EvalCell& c : grid.cells) {
    if (c.selector != ModuleSelector::kRouter || c.density != 1.0f) continue;
    double worst = 0;
    for (size_t d = 0; d < grid.domains.size(); ++d) {
      worst = std::max(worst, std::fabs(c.per_domain[d].ppl / grid.dense[d].ppl - 1.0));
    }
    absl::StrAppend(&out, "\nrouter 1.0 runs every module (the sparse path computing the whole FFN): ",
                    worst < 1e-4 ? "it equals dense within float rounding" : "it differs from dense by MORE than float rounding",
                    Fmt(" (largest |ppl / dense - 1| = %.2g).\n", worst));
  }
  return out;
}

// --- partition -----------------------------------------------------------------------------------

int TopModuleCount(int num_modules, double top_fraction) {
  const int k = static_cast<int>(std::floor(top_fraction * num_modules + 0.5));
  return std::clamp(k, 1, std::max(1, num_modules));
}

std::vector<uint8_t> TopModuleMask(const ModuleTrace& trace, double top_fraction) {
  const int L = trace.num_layers, N = trace.num_modules;
  std::vector<uint8_t> mask(static_cast<size_t>(L) * N, 0);
  if (N == 0) return mask;
  const int k = TopModuleCount(N, top_fraction);
  std::vector<int> order(N);
  for (int l = 0; l < L; ++l) {
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return trace.at(l, a) > trace.at(l, b); });
    for (int i = 0; i < k; ++i) mask[static_cast<size_t>(l) * N + order[i]] = 1;
  }
  return mask;
}

double MeanJaccard(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, int num_layers, int num_modules) {
  if (num_layers <= 0) return 0;
  double sum = 0;
  for (int l = 0; l < num_layers; ++l) {
    int inter = 0, uni = 0;
    for (int m = 0; m < num_modules; ++m) {
      const size_t i = static_cast<size_t>(l) * num_modules + m;
      inter += a[i] && b[i];
      uni += a[i] || b[i];
    }
    sum += uni ? static_cast<double>(inter) / uni : 1.0;
  }
  return sum / num_layers;
}

std::vector<uint8_t> RandomModuleMask(int num_layers, int num_modules, int per_layer, uint64_t seed) {
  std::vector<uint8_t> mask(static_cast<size_t>(num_layers) * num_modules, 0);
  uint64_t state = seed;
  auto next = [&state] {  // SplitMix64
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  std::vector<int> ids(num_modules);
  per_layer = std::clamp(per_layer, 0, num_modules);
  for (int l = 0; l < num_layers; ++l) {
    std::iota(ids.begin(), ids.end(), 0);
    for (int i = 0; i < per_layer; ++i) {
      std::swap(ids[i], ids[i + next() % (num_modules - i)]);
      mask[static_cast<size_t>(l) * num_modules + ids[i]] = 1;
    }
  }
  return mask;
}

absl::StatusOr<PartitionResult> RunPartitionExperiment(Engine& engine, const std::vector<EvalDomain>& domains,
                                                       const RouterPolicy& policy, double top_fraction,
                                                       const std::vector<double>* dense_ppl,
                                                       const std::function<void(const std::string&)>& progress) {
  const ModuleSet* set = engine.modules();
  if (set == nullptr) return absl::FailedPreconditionError("the partition experiment needs a module set (--modules)");
  if (!(top_fraction > 0 && top_fraction <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("--top-fraction must be in (0, 1], got ", top_fraction));
  }
  if (auto s = ValidateRouterPolicy(policy, set); !s.ok()) return s;
  if (dense_ppl != nullptr && dense_ppl->size() != domains.size()) {
    return absl::InvalidArgumentError("partition: one dense perplexity per domain expected");
  }
  PartitionResult r;
  r.policy = RouterPolicyToString(policy);
  r.top_fraction = top_fraction;
  r.top_per_layer = TopModuleCount(set->num_modules, top_fraction);
  const int L = set->num_layers, N = set->num_modules;
  for (size_t a = 0; a < domains.size(); ++a) {
    const EvalDomain& d = domains[a];
    r.domains.push_back(d.name);
    if (dense_ppl != nullptr) {
      r.dense_ppl.push_back((*dense_ppl)[a]);
    } else {
      if (progress) progress(absl::StrCat("partition: dense ", d.name));
      auto dense = Perplexity(engine, d.chunks);
      if (!dense.ok()) return dense.status();
      r.dense_ppl.push_back(dense->ppl);
    }
    if (progress) progress(absl::StrCat("partition: trace ", d.name, " under ", r.policy));
    ModuleTrace trace;
    auto traced = Perplexity(engine, d.chunks, &policy, &trace);
    if (!traced.ok()) return traced.status();
    if (trace.num_layers != L || trace.num_modules != N) {
      return absl::InternalError(absl::StrCat("partition: the trace of ", d.name, " has no module counts"));
    }
    r.top.push_back(TopModuleMask(trace, top_fraction));
    r.traces.push_back(std::move(trace));
  }
  const size_t D = domains.size();
  r.overlap.assign(D, std::vector<double>(D, 0));
  for (size_t a = 0; a < D; ++a) {
    for (size_t b = 0; b < D; ++b) r.overlap[a][b] = MeanJaccard(r.top[a], r.top[b], L, N);
  }
  r.pruned_ppl.assign(D, std::vector<double>(D, 0));
  const auto random_mask =
      std::make_shared<const std::vector<uint8_t>>(RandomModuleMask(L, N, r.top_per_layer, 0x5eed5eedULL));
  for (size_t b = 0; b < D; ++b) {
    RouterPolicy off;  // dense, minus b's top modules
    off.disabled = std::make_shared<const std::vector<uint8_t>>(r.top[b]);
    for (size_t a = 0; a < D; ++a) {
      if (progress) progress(absl::StrCat("partition: ", domains[a].name, " without the top modules of ", domains[b].name));
      auto p = Perplexity(engine, domains[a].chunks, &off);
      if (!p.ok()) return p.status();
      r.pruned_ppl[a][b] = p->ppl;
    }
  }
  RouterPolicy off_random;
  off_random.disabled = random_mask;
  for (size_t a = 0; a < D; ++a) {
    if (progress) progress(absl::StrCat("partition: ", domains[a].name, " without random modules"));
    auto p = Perplexity(engine, domains[a].chunks, &off_random);
    if (!p.ok()) return p.status();
    r.random_pruned_ppl.push_back(p->ppl);
  }
  return r;
}

std::string FormatPartition(const PartitionResult& r) {
  const size_t D = r.domains.size();
  std::string out = absl::StrCat("functional partition: top ", r.top_per_layer, " modules per layer (top fraction ",
                                 Fmt("%g", r.top_fraction), ") of each domain's usage under ", r.policy, "\n\n");
  out += "(a) mean over layers of the Jaccard overlap of the domains' top modules\n\n|  |";
  std::string rule = "|---|";
  for (const auto& d : r.domains) {
    absl::StrAppend(&out, " ", d, " |");
    rule += "---:|";
  }
  absl::StrAppend(&out, "\n", rule, "\n");
  for (size_t a = 0; a < D; ++a) {
    absl::StrAppend(&out, "| ", r.domains[a], " |");
    for (size_t b = 0; b < D; ++b) absl::StrAppend(&out, " ", Fmt("%.2f", r.overlap[a][b]), " |");
    out += "\n";
  }
  out += "\n(b) perplexity of the row's domain with the column domain's top modules switched off, % change vs "
         "its dense perplexity (random: as many modules per layer drawn at random, the control)\n\n| domain | dense |";
  rule = "|---|---:|";
  for (const auto& d : r.domains) {
    absl::StrAppend(&out, " -", d, " |");
    rule += "---:|";
  }
  absl::StrAppend(&out, " -random |\n", rule, "---:|\n");
  int diagonal_worst = 0;
  std::vector<std::string> exceptions;
  for (size_t a = 0; a < D; ++a) {
    absl::StrAppend(&out, "| ", r.domains[a], " | ", Fmt("%.2f", r.dense_ppl[a]), " |");
    size_t worst = 0;
    for (size_t b = 0; b < D; ++b) {
      const double pct = PctChange(r.pruned_ppl[a][b], r.dense_ppl[a]);
      absl::StrAppend(&out, " ", Fmt(a == b ? "**%+.1f%%**" : "%+.1f%%", pct), " |");
      if (r.pruned_ppl[a][b] > r.pruned_ppl[a][worst]) worst = b;
    }
    absl::StrAppend(&out, " ", Fmt("%+.1f%%", PctChange(r.random_pruned_ppl[a], r.dense_ppl[a])), " |\n");
    if (worst == a) {
      ++diagonal_worst;
    } else {
      exceptions.push_back(absl::StrCat(r.domains[a], " (hurt most by -", r.domains[worst], ")"));
    }
  }
  absl::StrAppend(&out, "\nCONCEPTS.md §1 expects the diagonal (a domain losing its own top modules) to hurt most: ",
                  "it does for ", diagonal_worst, " of ", D, " domains");
  if (!exceptions.empty()) {
    out += "; not for ";
    for (size_t i = 0; i < exceptions.size(); ++i) absl::StrAppend(&out, i ? ", " : "", exceptions[i]);
  }
  out += ".\n";
  return out;
}

}  // namespace brickserve
