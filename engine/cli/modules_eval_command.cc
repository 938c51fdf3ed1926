// `brickserve modules eval`: perplexity of held-out text per domain, dense and under each module
// selector at each density, and the functional-partition experiment (CONCEPTS.md §1).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "engine/cli/flags.h"
#include "engine/cli/modules_command.h"
#include "engine/cli/perplexity.h"
#include "engine/engine.h"
#include "engine/modules/module_set.h"
#include "engine/util/read_file.h"
#include "nlohmann/json.hpp"

namespace brickserve {
namespace {

constexpr const char* kCmd = "brickserve modules eval";

absl::StatusOr<std::vector<float>> ParseDensities(const std::string& text) {
  std::vector<float> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    float d = 0;
    if (!absl::SimpleAtof(absl::StripAsciiWhitespace(part), &d) || !(d > 0.0f && d <= 1.0f)) {
      return absl::InvalidArgumentError(absl::StrCat("--densities: \"", part, "\" is not a density in (0, 1]"));
    }
    out.push_back(d);
  }
  return out;
}

absl::StatusOr<std::vector<ModuleSelector>> ParseSelectors(const std::string& text) {
  std::vector<ModuleSelector> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    const std::optional<ModuleSelector> s = ModuleSelectorFromName(absl::StripAsciiWhitespace(part));
    if (!s) {
      return absl::InvalidArgumentError(
          absl::StrCat("--selectors: unknown selector \"", part, "\" (router, oracle, threshold or random)"));
    }
    out.push_back(*s);
  }
  return out;
}

// NAME=FILE, or FILE (named after its stem).
std::pair<std::string, std::string> SplitText(const std::string& spec) {
  const size_t eq = spec.find('=');
  if (eq != std::string::npos && eq > 0) return {spec.substr(0, eq), spec.substr(eq + 1)};
  return {std::filesystem::path(spec).stem().string(), spec};
}

nlohmann::json PplJson(const PerplexityResult& r, double dense) {
  return {{"ppl", r.ppl},
          {"mean_logprob", r.mean_logprob},
          {"tokens", r.tokens},
          {"chunks", r.chunks},
          {"change_vs_dense_pct", dense > 0 ? 100.0 * (r.ppl / dense - 1.0) : 0.0}};
}

nlohmann::json TraceJson(const ModuleTrace& t) {
  return {{"tokens", t.tokens}, {"effective_density", t.density()}, {"neurons_computed", t.neurons_computed},
          {"neurons_total", t.neurons_total}};
}

}  // namespace

int ModulesEvalCommand(int argc, char** argv, int first) {
  EngineOptions eo;
  std::vector<std::string> texts;
  int chunks = 8, chunk_tokens = 255;
  std::string densities_text = "1.0,0.5,0.3,0.2", selectors_text = "router,oracle,threshold,random";
  std::string json_path, partition_policy_text = "density:0.3:router";
  bool partition = false;
  float top_fraction = 0.2f;
  FlagSet flags(kCmd,
                "Perplexity of held-out text per domain: dense, and with a module set under each selector at each "
                "density (a markdown table with the change vs dense and the measured effective density). "
                "--partition adds the functional-partition experiment: each domain's most used modules, their "
                "overlap between domains, and the perplexity of every domain with another domain's top modules "
                "switched off.");
  flags.String("model", &eo.model_dir, "model directory in Hugging Face layout (required)");
  flags.String("modules", &eo.modules_path, "module set (`brickserve modules build`); without it only dense runs");
  flags.List("text", &texts,
             "NAME=FILE: a domain's held-out text (repeatable; default: every eval/*.txt of the model directory)");
  flags.Int("chunks", &chunks, "chunks scored per text (the first ones; <= 0: all)");
  flags.Int("chunk-tokens", &chunk_tokens, "tokens per chunk (each chunk is prefixed with BOS)");
  flags.String("densities", &densities_text, "comma-separated module densities in (0, 1]");
  flags.String("selectors", &selectors_text, "comma-separated selectors: router, oracle, threshold, random");
  flags.String("json", &json_path, "also write the results as JSON to this file");
  flags.String("device", &eo.device.kind, "backend: cpu, cuda or auto");
  flags.Int("threads", &eo.device.threads, "CPU threads (0 = all cores)");
  flags.Bool("partition", &partition, "run the functional-partition experiment (needs --modules)");
  flags.String("partition-policy", &partition_policy_text,
               "router policy whose module usage defines each domain's top modules");
  flags.Float("top-fraction", &top_fraction, "a domain's top modules per layer: this most used fraction of them");
  if (std::optional<int> exit_code = flags.ParseForCommand(argc, argv, first)) return *exit_code;
  if (eo.model_dir.empty()) {
    std::cerr << kCmd << ": --model is required\n" << flags.Usage();
    return 2;
  }
  auto densities = ParseDensities(densities_text);
  auto selectors = ParseSelectors(selectors_text);
  auto partition_policy = ParseRouterPolicy(partition_policy_text);
  for (const absl::Status& s : {densities.status(), selectors.status(), partition_policy.status()}) {
    if (!s.ok()) {
      std::cerr << kCmd << ": " << s.message() << "\n";
      return 2;
    }
  }
  if (partition && eo.modules_path.empty()) {
    std::cerr << kCmd << ": --partition needs --modules\n";
    return 2;
  }
  if (partition && !(top_fraction > 0.0f && top_fraction <= 1.0f)) {
    std::cerr << kCmd << ": --top-fraction must be in (0, 1], got " << top_fraction << "\n";
    return 2;
  }
  if (chunk_tokens < 1) {
    std::cerr << kCmd << ": --chunk-tokens must be >= 1\n";
    return 2;
  }
  if (texts.empty()) {
    const std::filesystem::path eval_dir = std::filesystem::path(eo.model_dir) / "eval";
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator(eval_dir, ec)) {
      if (entry.path().extension() == ".txt") texts.push_back(entry.path().string());
    }
    std::sort(texts.begin(), texts.end());
    if (texts.empty()) {
      std::cerr << kCmd << ": no --text given and no eval/*.txt in " << eo.model_dir << "\n";
      return 2;
    }
  }
  std::vector<std::pair<std::string, std::string>> text_files;
  for (const std::string& spec : texts) {
    auto [name, path] = SplitText(spec);
    for (const auto& [other, unused] : text_files) {
      if (other == name) {
        std::cerr << kCmd << ": two --text domains are named \"" << name << "\"\n";
        return 2;
      }
    }
    text_files.emplace_back(name, path);
  }

  auto loaded = Engine::Load(eo);
  if (!loaded.ok()) {
    std::cerr << kCmd << ": " << loaded.status() << "\n";
    return 1;
  }
  Engine& engine = **loaded;
  if (!engine.info().bos_id) {
    std::cerr << kCmd << ": warning: the tokenizer has no BOS token; chunks are scored without one\n";
  }

  std::vector<EvalDomain> domains;
  for (const auto& [name, path] : text_files) {
    auto text = ReadFileToString(path);
    if (!text.ok()) {
      std::cerr << kCmd << ": cannot read --text " << name << "=" << path << ": " << text.status().message() << "\n";
      return 2;
    }
    auto c = TokenizeEvalChunks(engine, *text, chunks, chunk_tokens);
    if (!c.ok()) {
      std::cerr << kCmd << ": --text " << name << "=" << path << ": " << c.status().message() << "\n";
      return 2;
    }
    if (chunks > 0 && static_cast<int>(c->size()) < chunks) {
      std::cerr << kCmd << ": note: " << path << " has only " << c->size() << " chunks of " << chunk_tokens
                << " tokens\n";
    }
    domains.push_back({name, *std::move(c)});
  }

  std::vector<ModuleSelector> run_selectors;
  if (engine.modules() != nullptr) {
    for (ModuleSelector s : *selectors) {
      if (s == ModuleSelector::kThreshold && engine.modules()->threshold_densities.empty()) {
        std::cerr << kCmd << ": note: the module set has no calibrated thresholds; skipping the threshold selector\n";
        continue;
      }
      run_selectors.push_back(s);
    }
  }
  const size_t total_runs = domains.size() * (1 + run_selectors.size() * densities->size());
  size_t run = 0;
  auto progress = [&](const std::string& what) {
    std::cerr << "[" << ++run << "/" << total_runs << "] " << what << "\n";
  };
  auto grid = RunEvalGrid(engine, domains, run_selectors, *densities, progress);
  if (!grid.ok()) {
    std::cerr << kCmd << ": " << grid.status() << "\n";
    return 1;
  }

  std::cout << "## perplexity: " << eo.model_dir << (eo.modules_path.empty() ? "" : " with " + eo.modules_path)
            << "\n\n";
  if (engine.modules() == nullptr) std::cout << "no --modules: dense only\n\n";
  else {
    const ModuleSet& m = *engine.modules();
    std::cout << m.num_layers << " layers x " << m.num_modules << " modules of " << m.module_size << " neurons ("
              << m.clustering << " clustering, " << m.router << " router)\n\n";
  }
  std::cout << FormatEvalGrid(*grid);

  std::optional<PartitionResult> part;
  if (partition) {
    std::vector<double> dense_ppl;
    for (const auto& d : grid->dense) dense_ppl.push_back(d.ppl);
    const size_t D = domains.size();
    run = 0;
    const size_t part_runs = D + D * D + D;
    auto part_progress = [&](const std::string& what) {
      std::cerr << "[" << ++run << "/" << part_runs << "] " << what << "\n";
    };
    auto r = RunPartitionExperiment(engine, domains, *partition_policy, top_fraction, &dense_ppl, part_progress);
    if (!r.ok()) {
      std::cerr << kCmd << ": " << r.status() << "\n";
      return 1;
    }
    std::cout << "\n## " << FormatPartition(*r);
    part = *std::move(r);
  }

  if (!json_path.empty()) {
    nlohmann::json j;
    j["model"] = eo.model_dir;
    j["modules"] = eo.modules_path;
    j["chunks"] = chunks;
    j["chunk_tokens"] = chunk_tokens;
    j["domains"] = nlohmann::json::array();
    for (size_t d = 0; d < grid->domains.size(); ++d) {
      j["domains"].push_back({{"name", grid->domains[d]}, {"file", text_files[d].second}});
      j["dense"][grid->domains[d]] = PplJson(grid->dense[d], grid->dense[d].ppl);
    }
    j["cells"] = nlohmann::json::array();
    for (const EvalCell& c : grid->cells) {
      nlohmann::json cell = {{"selector", std::string(ModuleSelectorName(c.selector))},
                             {"density", c.density},
                             {"trace", TraceJson(c.trace)}};
      for (size_t d = 0; d < grid->domains.size(); ++d) {
        nlohmann::json v = PplJson(c.per_domain[d], grid->dense[d].ppl);
        v["effective_density"] = c.traces[d].density();
        cell["per_domain"][grid->domains[d]] = v;
      }
      j["cells"].push_back(cell);
    }
    if (part) {
      nlohmann::json p = {{"policy", part->policy},
                          {"top_fraction", part->top_fraction},
                          {"top_per_layer", part->top_per_layer},
                          {"domains", part->domains},
                          {"dense_ppl", part->dense_ppl},
                          {"overlap", part->overlap},
                          {"pruned_ppl", part->pruned_ppl},
                          {"random_pruned_ppl", part->random_pruned_ppl}};
      for (size_t d = 0; d < part->domains.size(); ++d) {
        const ModuleTrace& t = part->traces[d];
        nlohmann::json top = nlohmann::json::array();
        for (int l = 0; l < t.num_layers; ++l) {
          std::vector<int> ids;
          for (int m = 0; m < t.num_modules; ++m) {
            if (part->top[d][static_cast<size_t>(l) * t.num_modules + m]) ids.push_back(m);
          }
          top.push_back(ids);
        }
        p["top_modules"][part->domains[d]] = top;
        p["traces"][part->domains[d]] = TraceJson(t);
        p["traces"][part->domains[d]]["counts"] = t.counts;
      }
      j["partition"] = p;
    }
    std::ofstream out(json_path);
    out << j.dump(2) << "\n";
    if (!out) {
      std::cerr << kCmd << ": cannot write --json " << json_path << "\n";
      return 1;
    }
    std::cout << "\nwrote " << json_path << "\n";
  }
  return 0;
}

}  // namespace brickserve
