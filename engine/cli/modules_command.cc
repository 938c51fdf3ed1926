#include "engine/cli/modules_command.h"

#include <cstring>
#include <iostream>

namespace brickserve {

int ModulesCommand(int argc, char** argv, int first) {
  struct Sub {
    const char* name;
    int (*run)(int, char**, int);
    const char* summary;
  };
  static constexpr Sub kSubs[] = {
      {"build", ModulesBuildCommand, "split each FFN into modules and fit the routers (writes the module set)"},
      {"eval", ModulesEvalCommand, "perplexity per text and router policy; the functional-partition experiment"},
      {"stats", ModulesStatsCommand, "module usage per layer for a text file (or a server's traffic)"},
  };
  if (first < argc) {
    for (const Sub& s : kSubs) {
      if (std::strcmp(argv[first], s.name) == 0) return s.run(argc, argv, first + 1);
    }
  }
  std::cerr << "usage: brickserve modules <build|eval|stats> [flags]\n";
  for (const Sub& s : kSubs) std::cerr << "  " << s.name << std::string(7 - std::strlen(s.name), ' ') << s.summary << "\n";
  return 2;
}

}  // namespace brickserve
