// Perplexity of held-out text under a router policy, and the functional-partition experiment
// (CONCEPTS.md §1): the pieces of `brickserve modules eval`, kept out of the command so that tests
// can run them.
//
// Perplexity follows the reference of ../shared/models/brick-tiny: the text is tokenized without
// special tokens, its first `chunks` chunks of `chunk_tokens` tokens are each prefixed with BOS and
// scored, and ppl = exp(-mean log p) over every scored token of every chunk.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "engine/modules/module_trace.h"
#include "engine/modules/router_policy.h"

namespace brickserve {

class Engine;

using TokenChunks = std::vector<std::vector<int32_t>>;

// The first `max_chunks` chunks (<= 0: all) of `chunk_tokens` tokens of `ids`, each prefixed with
// `bos` when there is one. A shorter last chunk is kept when it still has a token to score.
TokenChunks MakeEvalChunks(std::span<const int32_t> ids, std::optional<int32_t> bos, int max_chunks,
                           int chunk_tokens);
// `text` tokenized by the engine's tokenizer without special tokens, then MakeEvalChunks with the
// tokenizer's BOS. INVALID_ARGUMENT when chunk_tokens < 1, when a chunk would not fit the context,
// or when the text yields nothing to score.
absl::StatusOr<TokenChunks> TokenizeEvalChunks(const Engine& engine, std::string_view text, int max_chunks,
                                               int chunk_tokens);
// The tokens of every chunk, up to `max_tokens` of the text (0: all), in chunks (BOS-prefixed) of
// `chunk_tokens`: what `modules stats` scores.
absl::StatusOr<TokenChunks> TokenizeAllChunks(const Engine& engine, std::string_view text, int chunk_tokens,
                                              int64_t max_tokens);

struct PerplexityResult {
  double ppl = 0;
  double mean_logprob = 0;  // over the scored tokens
  int64_t tokens = 0;       // scored tokens (every token of a chunk after its first)
  int chunks = 0;
};

// Scores every chunk, one after the other, under `policy` (null: dense); `trace` (optional)
// accumulates the module usage of every chunk.
absl::StatusOr<PerplexityResult> Perplexity(Engine& engine, const TokenChunks& chunks,
                                            const RouterPolicy* policy = nullptr, ModuleTrace* trace = nullptr);

// --- the selector x density grid ---------------------------------------------------------------

struct EvalDomain {
  std::string name;
  TokenChunks chunks;
};

struct EvalCell {
  ModuleSelector selector = ModuleSelector::kRouter;
  float density = 1.0f;
  std::vector<PerplexityResult> per_domain;  // in the order of the domains
  std::vector<ModuleTrace> traces;           // per domain
  ModuleTrace trace;                         // every domain together
};

struct EvalGrid {
  std::vector<std::string> domains;
  std::vector<PerplexityResult> dense;  // per domain
  std::vector<EvalCell> cells;          // selector-major, densities in the order given
};

// Dense, then every selector at every density (RouterPolicy{kDensity, selector, density}); without
// a module set in the engine only dense. `progress` (optional) hears about each run.
absl::StatusOr<EvalGrid> RunEvalGrid(Engine& engine, const std::vector<EvalDomain>& domains,
                                     const std::vector<ModuleSelector>& selectors, const std::vector<float>& densities,
                                     const std::function<void(const std::string&)>& progress = {});
// The markdown table (rows: domains; columns: dense, then "selector density" with ppl and the change
// vs dense) and a line per cell with the measured effective density.
std::string FormatEvalGrid(const EvalGrid& grid);

// --- the functional-partition experiment --------------------------------------------------------

// Modules in a layer's top set: round(top_fraction * num_modules), at least 1, at most all.
int TopModuleCount(int num_modules, double top_fraction);
// Per layer, the TopModuleCount most used modules of `trace` (ties to the lower id), as a mask
// [layer * num_modules + m] (the shape of RouterPolicy::disabled).
std::vector<uint8_t> TopModuleMask(const ModuleTrace& trace, double top_fraction);
// The mean over layers of the Jaccard overlap |A ∩ B| / |A ∪ B| of two masks (1 for two empty sets).
double MeanJaccard(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, int num_layers, int num_modules);
// A mask with `per_layer` modules per layer drawn at random (a fixed seed): the control column.
std::vector<uint8_t> RandomModuleMask(int num_layers, int num_modules, int per_layer, uint64_t seed);

struct PartitionResult {
  std::string policy;                          // the policy the traces ran under
  double top_fraction = 0;
  int top_per_layer = 0;
  std::vector<std::string> domains;
  std::vector<double> dense_ppl;               // per domain
  std::vector<ModuleTrace> traces;             // per domain, under `policy`
  std::vector<std::vector<uint8_t>> top;       // per domain: its top modules (mask)
  std::vector<std::vector<double>> overlap;    // [a][b]: MeanJaccard(top[a], top[b])
  std::vector<std::vector<double>> pruned_ppl; // [a][b]: ppl of domain a with b's top modules off
  std::vector<double> random_pruned_ppl;       // [a]: ppl of a with a random set of the same size off
};

// Needs a module set in the engine. `dense_ppl` (optional, per domain) saves the dense runs.
absl::StatusOr<PartitionResult> RunPartitionExperiment(Engine& engine, const std::vector<EvalDomain>& domains,
                                                       const RouterPolicy& policy, double top_fraction,
                                                       const std::vector<double>* dense_ppl = nullptr,
                                                       const std::function<void(const std::string&)>& progress = {});
// (a) the overlap matrix, (b) the pruning matrix as % change vs dense, and whether each diagonal
// entry is its row's largest (reported, not asserted).
std::string FormatPartition(const PartitionResult& result);

}  // namespace brickserve
