#include "engine/tokenizer/post_processor.h"

#include "absl/strings/str_cat.h"
#include "engine/tokenizer/json_fields.h"
#include "engine/util/status_macros.h"
#include "nlohmann/json.hpp"

namespace brickserve {
namespace {

using nlohmann::json;
namespace jf = json_fields;

// Wraps `frame` in `outer` (a later processor sees the earlier one's output as its sequence).
void Wrap(const SpecialTokenFrame& outer, SpecialTokenFrame* frame) {
  frame->prefix.insert(frame->prefix.begin(), outer.prefix.begin(), outer.prefix.end());
  frame->suffix.insert(frame->suffix.end(), outer.suffix.begin(), outer.suffix.end());
}

absl::StatusOr<SpecialTokenFrame> ParseTemplate(const json& config, const std::string& where) {
  BS_ASSIGN_OR_RETURN(const json* single, jf::Array(config, "single", where));
  SpecialTokenFrame frame;
  int sequences = 0;
  for (size_t i = 0; i < single->size(); ++i) {
    const json& item = (*single)[i];
    const std::string item_where = jf::Path(jf::Path(where, "single"), i);
    if (item.is_object() && item.contains("SpecialToken")) {
      BS_ASSIGN_OR_RETURN(std::string id, jf::String(item["SpecialToken"], "id", item_where + ".SpecialToken"));
      (sequences == 0 ? frame.prefix : frame.suffix).push_back(std::move(id));
    } else if (item.is_object() && item.contains("Sequence")) {
      BS_ASSIGN_OR_RETURN(const std::string id, jf::String(item["Sequence"], "id", item_where + ".Sequence"));
      if (id != "A") return jf::Unsupported(item_where + ".Sequence", "id", id, "A");
      ++sequences;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(item_where, " must hold SpecialToken or Sequence"));
    }
  }
  if (sequences != 1) return absl::InvalidArgumentError(absl::StrCat(where, ".single must hold $A exactly once"));
  return frame;
}

// BertProcessing / RobertaProcessing: "cls": [token, id], "sep": [token, id].
absl::StatusOr<SpecialTokenFrame> ParseClsSep(const json& config, const std::string& where) {
  SpecialTokenFrame frame;
  for (const char* field : {"cls", "sep"}) {
    const json& v = config.contains(field) ? config[field] : json();
    if (!v.is_array() || v.empty() || !v[0].is_string()) return jf::Unsupported(where, field, v, "[token, id]");
    (std::string(field) == "cls" ? frame.prefix : frame.suffix).push_back(v[0].get<std::string>());
  }
  return frame;
}

}  // namespace

absl::StatusOr<SpecialTokenFrame> ParsePostProcessor(const json& config, const std::string& where) {
  if (config.is_null()) return SpecialTokenFrame();
  if (!config.is_object()) return absl::InvalidArgumentError(absl::StrCat(where, " must be an object or null"));
  BS_ASSIGN_OR_RETURN(const std::string type, jf::String(config, "type", where));
  if (type == "ByteLevel") return SpecialTokenFrame();  // offsets only
  if (type == "TemplateProcessing") return ParseTemplate(config, where);
  if (type == "BertProcessing" || type == "RobertaProcessing") return ParseClsSep(config, where);
  if (type == "Sequence") {
    BS_ASSIGN_OR_RETURN(const json* list, jf::Array(config, "processors", where));
    SpecialTokenFrame frame;
    for (size_t i = 0; i < list->size(); ++i) {
      BS_ASSIGN_OR_RETURN(const SpecialTokenFrame step, ParsePostProcessor((*list)[i], jf::Path(jf::Path(where, "processors"), i)));
      Wrap(step, &frame);
    }
    return frame;
  }
  return jf::Unsupported(where, "type", type, "TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence");
}

}  // namespace brickserve
