#include "engine/tokenizer/clean_up.h"

#include <algorithm>
#include <array>
#include <utility>

namespace brickserve {
namespace {

struct Replacement {
  std::string_view from, to;
};
// In transformers.js' order; each is a global replace over the previous one's output.
constexpr std::array<Replacement, 10> kReplacements = {{{" .", "."},
                                                        {" ?", "?"},
                                                        {" !", "!"},
                                                        {" ,", ","},
                                                        {" ' ", "'"},
                                                        {" n't", "n't"},
                                                        {" 'm", "'m"},
                                                        {" 's", "'s"},
                                                        {" 've", "'ve"},
                                                        {" 're", "'re"}}};

// One replacement on a stream: replaces the matches in held + piece, and holds back the longest
// tail that is a proper prefix of the pattern (no earlier position can still start a match).
std::string ReplaceStreaming(const Replacement& r, std::string_view piece, std::string* held) {
  std::string buf = std::move(*held);
  buf.append(piece);
  held->clear();
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = buf.find(r.from, pos)) != std::string::npos; pos = hit + r.from.size()) {
    out.append(buf, pos, hit - pos);
    out.append(r.to);
  }
  size_t keep = 0;
  for (size_t k = std::min(r.from.size() - 1, buf.size() - pos); k > 0; --k) {
    if (std::string_view(buf).substr(buf.size() - k) == r.from.substr(0, k)) {
      keep = k;
      break;
    }
  }
  out.append(buf, pos, buf.size() - pos - keep);
  held->assign(buf, buf.size() - keep, keep);
  return out;
}

}  // namespace

std::string CleanUpPush(std::string_view piece, std::vector<std::string>* held) {
  held->resize(kReplacements.size());
  std::string text(piece);
  for (size_t i = 0; i < kReplacements.size(); ++i) text = ReplaceStreaming(kReplacements[i], text, &(*held)[i]);
  return text;
}

std::string CleanUpFlush(std::vector<std::string>* held) {
  held->resize(kReplacements.size());
  // What stage i held can no longer match there; it still passes through the later stages.
  std::string text;
  for (size_t i = 0; i < kReplacements.size(); ++i) {
    text = ReplaceStreaming(kReplacements[i], text, &(*held)[i]);
    text += std::exchange((*held)[i], std::string());
  }
  return text;
}

std::string CleanUpTokenization(std::string_view text) {
  std::vector<std::string> held;
  std::string out = CleanUpPush(text, &held);
  return out + CleanUpFlush(&held);
}

}  // namespace brickserve
