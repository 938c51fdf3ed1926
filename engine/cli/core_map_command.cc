#include "engine/cli/core_map_command.h"

#include <iostream>

#include "engine/cli/flags.h"
#include "engine/engine.h"
#include "engine/util/read_file.h"
#include "engine/model/calibration_text.h"

namespace brickserve {

int CoreMapCommand(int argc, char** argv, int first) {
  EngineOptions eo;
  std::string calibration_file, out_path;
  CoreMapOptions cm;
  float ratio = static_cast<float>(cm.ratio);
  FlagSet flags("brickserve core-map",
                "Find the model's massive-activation dims and super weights on calibration text and write the core "
                "map (JSON) that the LoRA brick guard checks adapters against.");
  flags.String("model", &eo.model_dir, "model directory in Hugging Face layout (required)");
  flags.String("calibration", &calibration_file, "calibration text file (default: the built-in text)");
  flags.Float("ratio", &ratio, "a dim is massive when its max |value| is >= ratio x the median of per-dim maxima");
  flags.String("out", &out_path, "where to write the JSON map (required)");
  flags.String("device", &eo.device.kind, "backend: cpu, cuda or auto");
  flags.Int("threads", &eo.device.threads, "CPU threads (0 = all cores)");
  if (std::optional<int> exit_code = flags.ParseForCommand(argc, argv, first)) return *exit_code;
  if (eo.model_dir.empty() || out_path.empty()) {
    std::cerr << "brickserve core-map: --model and --out are required\n" << flags.Usage();
    return 2;
  }
  cm.ratio = ratio;
  std::string text(DefaultCalibrationText());
  if (!calibration_file.empty()) {
    absl::StatusOr<std::string> read = ReadFileToString(calibration_file);
    if (!read.ok()) {
      std::cerr << "brickserve core-map: cannot read --calibration " << calibration_file << "\n";
      return 2;
    }
    text = *std::move(read);
  }
  auto engine = Engine::Load(eo);
  if (!engine.ok()) {
    std::cerr << "brickserve core-map: " << engine.status() << "\n";
    return 1;
  }
  const std::vector<int32_t> ids = (*engine)->tokenizer().Encode(text, /*add_special_tokens=*/true);
  auto map = (*engine)->ComputeCoreMap(ids, cm);
  if (!map.ok()) {
    std::cerr << "brickserve core-map: " << map.status() << "\n";
    return 1;
  }
  if (auto s = WriteCoreMap(*map, out_path); !s.ok()) {
    std::cerr << "brickserve core-map: " << s << "\n";
    return 1;
  }
  std::cout << map->Summary() << "\nwrote " << out_path << "\n";
  return 0;
}

}  // namespace brickserve
