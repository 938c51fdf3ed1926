// A small command-line flag parser for the `brickserve` subcommands: `--name value` or
// `--name=value`, typed targets, and a generated --help that lists every flag.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace brickserve {

class FlagSet {
 public:
  FlagSet(std::string command, std::string summary) : command_(std::move(command)), summary_(std::move(summary)) {}

  void String(const std::string& name, std::string* target, const std::string& help);
  void Int(const std::string& name, int* target, const std::string& help);
  void Float(const std::string& name, float* target, const std::string& help);
  void OptionalU64(const std::string& name, std::optional<uint64_t>* target, const std::string& help);
  void Bool(const std::string& name, bool* target, const std::string& help);
  // Repeatable: each occurrence appends.
  void List(const std::string& name, std::vector<std::string>* target, const std::string& help);

  // Parses argv[first..argc). Returns INVALID_ARGUMENT naming the flag on a bad or unknown flag.
  // Sets help_requested() on --help / -h.
  absl::Status Parse(int argc, char** argv, int first);
  bool help_requested() const { return help_; }
  // Parse for a subcommand's main: on a bad flag prints "COMMAND: message" to stderr (exit code 2),
  // on --help prints the usage (exit code 0), and returns that code; nullopt means go on.
  std::optional<int> ParseForCommand(int argc, char** argv, int first);
  std::string Usage() const;

 private:
  struct Flag {
    std::string name, help, kind, default_text;
    bool is_bool = false;
    std::function<absl::Status(const std::string&)> set;
  };
  void Add(Flag flag) { flags_.push_back(std::move(flag)); }

  std::string command_, summary_;
  std::vector<Flag> flags_;
  bool help_ = false;
};

}  // namespace brickserve
