// `brickserve core-map`: find the base model's core region (massive-activation dims, super weights)
// on calibration text and write it as JSON, for the LoRA brick guard to load.
#pragma once

namespace brickserve {

// argv[first..] are the subcommand's flags. Returns the process exit code.
int CoreMapCommand(int argc, char** argv, int first);

}  // namespace brickserve
