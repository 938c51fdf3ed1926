// Finds stop strings in streamed text. Text that might be the start of a stop string is held back
// until it is clear, so a caller never sees part of a stop string.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace brickserve {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stop_strings);

  // Adds newly decoded text; returns the text that is now safe to emit.
  std::string Push(const std::string& text);
  // Set once a stop string was found; nothing after it is ever emitted.
  const std::optional<std::string>& matched() const { return matched_; }
  // At the end of generation: whatever was held back (empty after a match).
  std::string Flush();

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  std::optional<std::string> matched_;
};

}  // namespace brickserve
