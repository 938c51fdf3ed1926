// The one `brickserve` binary: subcommands dispatch here. Without gRPC at build time it carries
// only the engine's `run`, `core-map` and `modules`.
#include <cstring>
#include <iostream>

#include "engine/cli/core_map_command.h"
#include "engine/cli/modules_command.h"
#include "engine/cli/run_command.h"
#ifdef BRICKSERVE_HAVE_GRPC
#include "server/cli/bricks_command.h"
#include "server/cli/client_commands.h"
#include "server/cli/serve_command.h"
#endif

namespace {

struct Command {
  const char* name;
  int (*run)(int argc, char** argv, int first);
  const char* summary;
};

constexpr Command kCommands[] = {
#ifdef BRICKSERVE_HAVE_GRPC
    {"serve", brickserve::ServeCommand, "serve a model over gRPC (brickserve.v1.InferenceService)"},
    {"generate", brickserve::GenerateCommand, "generate text by calling a running server"},
    {"tokenize", brickserve::TokenizeCommand, "encode (or decode) with a running server's tokenizer"},
    {"bricks", brickserve::BricksCommand, "list, get, load, update or unload a running server's bricks"},
#endif
    {"run", brickserve::RunCommand, "generate from a prompt with the engine alone (no server)"},
    {"core-map", brickserve::CoreMapCommand, "find the model's core region and write it for the LoRA brick guard"},
#ifdef BRICKSERVE_HAVE_GRPC
    {"modules", brickserve::ModulesCommandWithServer, "build, evaluate and inspect the model's emergent FFN modules"},
#else
    {"modules", brickserve::ModulesCommand, "build, evaluate and inspect the model's emergent FFN modules"},
#endif
};

void PrintUsage() {
  std::cout << "usage: brickserve <command> [flags]\n\ncommands:\n";
  for (const auto& c : kCommands) std::cout << "  " << c.name << std::string(10 - std::strlen(c.name), ' ') << c.summary << "\n";
  std::cout << "\n`brickserve <command> --help` lists the command's flags.\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    PrintUsage();
    return argc < 2 ? 2 : 0;
  }
  for (const auto& c : kCommands) {
    if (std::strcmp(argv[1], c.name) == 0) return c.run(argc, argv, 2);
  }
  std::cerr << "brickserve: unknown command \"" << argv[1] << "\"\n";
  PrintUsage();
  return 2;
}
