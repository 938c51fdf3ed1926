// `brickserve modules build`: the module set of a model, written next to it (or where --out says).
#include <filesystem>
#include <iostream>

#include "engine/cli/flags.h"
#include "engine/cli/modules_command.h"
#include "engine/modules/module_builder.h"
#include "engine/util/read_file.h"
#include "nlohmann/json.hpp"

namespace brickserve {

int ModulesBuildCommand(int argc, char** argv, int first) {
  EngineOptions eo;
  ModuleBuildOptions o;
  std::string calibration_file, out_path, core_map_path;
  int seed = static_cast<int>(o.seed);
  float lambda = static_cast<float>(o.ridge_lambda), top_fraction = static_cast<float>(o.coactivation_top_fraction);
  FlagSet flags("brickserve modules build",
                "Split each FFN layer of the model into equal-size emergent modules, fit a router per layer on "
                "calibration text, calibrate the threshold policy, and write the module set (safetensors).");
  flags.String("model", &eo.model_dir, "model directory in Hugging Face layout (required)");
  flags.String("calibration", &calibration_file, "calibration text file (required): text like the traffic to serve");
  flags.String("out", &out_path, "where to write the module set (default: MODEL/modules.safetensors)");
  flags.String("clustering", &o.clustering, "weights (k-means over gate/up rows) or coactivation");
  flags.String("router", &o.router, "linear, centroid, or auto (per layer, the better on held-out tokens)");
  flags.Int("module-size", &o.module_size, "neurons per module (0: the divisor of d_ff nearest d_ff / 96, at least 4)");
  flags.Int("max-tokens", &o.max_tokens, "calibration tokens used (memory: tokens x layers x (hidden + d_ff) floats)");
  flags.Float("coactivation-top-fraction", &top_fraction, "coactivation: the share of neurons marked per token");
  flags.Float("ridge-lambda", &lambda, "linear router: ridge regularisation, relative to the mean input energy");
  flags.String("core-map", &core_map_path, "core map JSON (`brickserve core-map`); default: computed on the text");
  flags.Int("seed", &seed, "k-means seed");
  flags.String("device", &eo.device.kind, "backend: cpu, cuda or auto");
  flags.Int("threads", &eo.device.threads, "CPU threads (0 = all cores)");
  if (std::optional<int> exit_code = flags.ParseForCommand(argc, argv, first)) return *exit_code;
  if (eo.model_dir.empty() || calibration_file.empty()) {
    std::cerr << "brickserve modules build: --model and --calibration are required\n" << flags.Usage();
    return 2;
  }
  o.seed = static_cast<uint64_t>(seed);
  o.ridge_lambda = lambda;
  o.coactivation_top_fraction = top_fraction;
  if (out_path.empty()) out_path = (std::filesystem::path(eo.model_dir) / "modules.safetensors").string();
  absl::StatusOr<std::string> text = ReadFileToString(calibration_file);
  if (!text.ok()) {
    std::cerr << "brickserve modules build: cannot read --calibration " << calibration_file << "\n";
    return 2;
  }
  auto engine = Engine::Load(eo);
  if (!engine.ok()) {
    std::cerr << "brickserve modules build: " << engine.status() << "\n";
    return 1;
  }
  const std::vector<int32_t> ids = (*engine)->tokenizer().Encode(*text, /*add_special_tokens=*/true);
  absl::StatusOr<CoreMap> core_map =
      core_map_path.empty() ? (*engine)->ComputeCoreMap(ids) : ReadCoreMapFor(core_map_path, eo.model_dir, (*engine)->config());
  if (!core_map.ok()) {
    std::cerr << "brickserve modules build: core map: " << core_map.status() << "\n";
    return 1;
  }
  auto set = BuildModuleSet(**engine, ids, *core_map, o);
  if (!set.ok()) {
    std::cerr << "brickserve modules build: " << set.status() << "\n";
    return 1;
  }
  if (auto s = WriteModuleSet(*set, out_path); !s.ok()) {
    std::cerr << "brickserve modules build: " << s << "\n";
    return 1;
  }
  const auto report = nlohmann::json::parse(set->report_json);
  std::cout << set->num_layers << " layers x " << set->num_modules << " modules of " << set->module_size
            << " neurons (" << set->clustering << " clustering, " << set->router << " router), "
            << set->calibration_tokens << " calibration tokens, "
            << report.value("build_seconds", 0.0) << " s\n";
  for (const auto& l : report["layers"]) {
    std::cout << "  layer " << l["layer"] << ": router recall at k=" << report["compare_k"] << " linear "
              << l["recall_linear"] << ", centroid " << l["recall_centroid"] << " -> " << l["router"].get<std::string>()
              << ", " << l["resident"] << " resident\n";
  }
  std::cout << "wrote " << out_path << "\n";
  return 0;
}

}  // namespace brickserve
