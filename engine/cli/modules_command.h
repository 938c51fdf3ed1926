// `brickserve modules`: build a model's emergent-module set, measure it, and show module usage.
#pragma once

namespace brickserve {

// argv[first] is the subcommand (build, eval, stats). Returns the process exit code.
int ModulesCommand(int argc, char** argv, int first);

// The subcommands; argv[first..] are their flags.
int ModulesBuildCommand(int argc, char** argv, int first);
int ModulesEvalCommand(int argc, char** argv, int first);
int ModulesStatsCommand(int argc, char** argv, int first);

}  // namespace brickserve
