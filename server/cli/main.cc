// The one `brickserve` binary: subcommands dispatch here.
#include <cstring>
#include <iostream>

#include "engine/cli/run_command.h"

namespace {

void PrintUsage() {
  std::cout << "usage: brickserve <command> [flags]\n\n"
               "commands:\n"
               "  run     generate from a prompt with the engine alone (no server)\n\n"
               "`brickserve <command> --help` lists the command's flags.\n";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    PrintUsage();
    return argc < 2 ? 2 : 0;
  }
  if (std::strcmp(argv[1], "run") == 0) return brickserve::RunCommand(argc, argv, 2);
  std::cerr << "brickserve: unknown command \"" << argv[1] << "\"\n";
  PrintUsage();
  return 2;
}
