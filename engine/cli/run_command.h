// `brickserve run`: load a model and generate from a prompt with the engine alone (no gRPC).
#pragma once

namespace brickserve {

// argv[first..] are the subcommand's flags. Returns the process exit code.
int RunCommand(int argc, char** argv, int first);

}  // namespace brickserve
