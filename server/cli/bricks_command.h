// `brickserve bricks load|unload|list|get`: the Bricks admin service from the command line.
#pragma once

namespace brickserve {

// The process exit code: 0 ok, 1 the call failed, 2 bad flags.
int BricksCommand(int argc, char** argv, int first);

}  // namespace brickserve
