#include "engine/cli/run_command.h"

#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "engine/cli/flags.h"
#include "engine/engine.h"

namespace brickserve {

int RunCommand(int argc, char** argv, int first) {
  EngineOptions eo;
  GenerationRequest req;
  std::string prompt, prompt_file, prompt_ids, logits_out;
  bool no_special = false, show_ids = false, show_stats = false;
  req.max_new_tokens = 64;
  FlagSet flags("brickserve run", "Generate text from a prompt with the engine alone (no server).");
  flags.String("model", &eo.model_dir, "model directory in Hugging Face layout (required)");
  flags.String("prompt", &prompt, "prompt text");
  flags.String("prompt-file", &prompt_file, "read the prompt from this file instead");
  flags.String("prompt-ids", &prompt_ids, "comma-separated prompt token ids instead of text");
  flags.Bool("no-special-tokens", &no_special, "do not add BOS/EOS to the prompt");
  flags.String("device", &eo.device.kind, "backend: cpu, cuda or auto");
  flags.Int("threads", &eo.device.threads, "CPU threads (0 = all cores)");
  flags.Int("max-context", &eo.max_context, "context length limit (0 = the model's)");
  flags.Int("max-batch-tokens", &eo.max_batch_tokens, "tokens per forward step (prefill chunk size)");
  flags.Int("max-new-tokens", &req.max_new_tokens, "tokens to generate at most");
  flags.Float("temperature", &req.sampling.temperature, "0 = greedy");
  flags.Int("top-k", &req.sampling.top_k, "keep the k most likely tokens (0 = off)");
  flags.Float("top-p", &req.sampling.top_p, "nucleus sampling mass (1 = off)");
  flags.Float("min-p", &req.sampling.min_p, "drop tokens below min_p * p_max (0 = off)");
  flags.Float("repetition-penalty", &req.sampling.repetition_penalty, "HF repetition penalty (1 = off)");
  flags.Float("presence-penalty", &req.sampling.presence_penalty, "OpenAI presence penalty");
  flags.Float("frequency-penalty", &req.sampling.frequency_penalty, "OpenAI frequency penalty");
  flags.OptionalU64("seed", &req.sampling.seed, "random seed (same seed, same output)");
  flags.List("stop", &req.stop_strings, "stop string");
  flags.Bool("ignore-eos", &req.ignore_eos, "keep generating past EOS");
  flags.Int("top-logprobs", &req.top_logprobs, "print the n most likely tokens per step");
  flags.Bool("show-ids", &show_ids, "print the generated token ids");
  flags.Bool("stats", &show_stats, "print timing and throughput to stderr");
  flags.String("logits-out", &logits_out, "write each generated token's raw logits (float32, little-endian, "
                                          "vocab_size per token, no header) to this file");
  if (auto s = flags.Parse(argc, argv, first); !s.ok()) {
    std::cerr << "brickserve run: " << s.message() << "\n";
    return 2;
  }
  if (flags.help_requested()) {
    std::cout << flags.Usage();
    return 0;
  }
  if (eo.model_dir.empty()) {
    std::cerr << "brickserve run: --model is required\n" << flags.Usage();
    return 2;
  }
  if (!prompt_file.empty()) {
    std::ifstream in(prompt_file, std::ios::binary);
    if (!in) {
      std::cerr << "brickserve run: cannot read --prompt-file " << prompt_file << "\n";
      return 2;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    prompt = ss.str();
  }
  auto engine = Engine::Load(eo);
  if (!engine.ok()) {
    std::cerr << "brickserve run: " << engine.status() << "\n";
    return 1;
  }
  if (!prompt_ids.empty()) {
    for (absl::string_view part : absl::StrSplit(prompt_ids, ',')) {
      int id = 0;
      if (!absl::SimpleAtoi(part, &id)) {
        std::cerr << "brickserve run: --prompt-ids: \"" << std::string(part) << "\" is not a token id\n";
        return 2;
      }
      req.prompt_ids.push_back(id);
    }
  } else {
    req.prompt_ids = (*engine)->tokenizer().Encode(prompt, !no_special);
  }
  std::ofstream logits_file;
  if (!logits_out.empty()) {
    logits_file.open(logits_out, std::ios::binary | std::ios::trunc);
    if (!logits_file) {
      std::cerr << "brickserve run: cannot write --logits-out " << logits_out << "\n";
      return 2;
    }
    req.on_logits = [&logits_file](std::span<const float> row) {
      logits_file.write(reinterpret_cast<const char*>(row.data()), static_cast<std::streamsize>(row.size_bytes()));
    };
  }
  auto result = (*engine)->Generate(req, [](const StreamPiece& piece) {
    std::cout << piece.text << std::flush;
    return true;
  });
  if (!result.ok()) {
    std::cerr << "\nbrickserve run: " << result.status() << "\n";
    return 1;
  }
  std::cout << "\n";
  if (logits_file.is_open() && !logits_file.flush()) {
    std::cerr << "brickserve run: writing --logits-out " << logits_out << " failed\n";
    return 1;
  }
  if (show_ids) std::cout << "ids: " << absl::StrJoin(result->token_ids(), ",") << "\n";
  if (req.top_logprobs > 0) {
    for (const auto& t : result->tokens) {
      std::cout << t.id << " " << t.logprob << " |";
      for (const auto& alt : t.top) std::cout << " " << alt.id << ":" << alt.logprob;
      std::cout << "\n";
    }
  }
  if (show_stats) {
    const auto& r = *result;
    const double decode_s = r.total_time_s - r.time_to_first_token_s;
    std::cerr << absl::StrCat("device: ", (*engine)->info().device, "\nprompt tokens: ", r.prompt_tokens,
                              "  generated: ", r.completion_tokens, "  finish: ", FinishReasonName(r.finish_reason),
                              "\ntime to first token: ", r.time_to_first_token_s * 1e3, " ms",
                              "\ndecode: ", r.completion_tokens > 1 ? (r.completion_tokens - 1) / decode_s : 0.0,
                              " tokens/s\n");
  }
  return 0;
}

}  // namespace brickserve
