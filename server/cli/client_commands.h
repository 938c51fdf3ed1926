// The client subcommands: `brickserve generate` and `brickserve tokenize` call a running server.
#pragma once

namespace brickserve {

// Each returns the process exit code: 0 ok, 1 the call failed, 2 bad flags.
int GenerateCommand(int argc, char** argv, int first);
int TokenizeCommand(int argc, char** argv, int first);

}  // namespace brickserve
