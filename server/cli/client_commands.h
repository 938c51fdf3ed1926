// The client subcommands: `brickserve generate` and `brickserve tokenize` call a running server.
#pragma once

namespace brickserve {

// Each returns the process exit code: 0 ok, 1 the call failed, 2 bad flags.
int GenerateCommand(int argc, char** argv, int first);
int TokenizeCommand(int argc, char** argv, int first);
// `brickserve modules`: `stats --server ADDR` reads a running server's counters; everything else
// is the engine's ModulesCommand.
int ModulesCommandWithServer(int argc, char** argv, int first);

}  // namespace brickserve
