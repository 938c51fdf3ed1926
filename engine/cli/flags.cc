#include "engine/cli/flags.h"

#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace brickserve {
namespace {

absl::Status BadValue(const std::string& name, const std::string& value, const char* want) {
  return absl::InvalidArgumentError(absl::StrCat("--", name, ": \"", value, "\" is not ", want));
}

}  // namespace

void FlagSet::String(const std::string& name, std::string* t, const std::string& help) {
  Add({name, help, "string", *t, false, [t](const std::string& v) { *t = v; return absl::OkStatus(); }});
}

void FlagSet::Int(const std::string& name, int* t, const std::string& help) {
  Add({name, help, "int", absl::StrCat(*t), false, [t, name](const std::string& v) {
         return absl::SimpleAtoi(v, t) ? absl::OkStatus() : BadValue(name, v, "an integer");
       }});
}

void FlagSet::Float(const std::string& name, float* t, const std::string& help) {
  Add({name, help, "float", absl::StrCat(*t), false, [t, name](const std::string& v) {
         return absl::SimpleAtof(v, t) ? absl::OkStatus() : BadValue(name, v, "a number");
       }});
}

void FlagSet::OptionalU64(const std::string& name, std::optional<uint64_t>* t, const std::string& help) {
  Add({name, help, "uint64", "unset", false, [t, name](const std::string& v) {
         uint64_t x = 0;
         if (!absl::SimpleAtoi(v, &x)) return BadValue(name, v, "a non-negative integer");
         *t = x;
         return absl::OkStatus();
       }});
}

void FlagSet::Bool(const std::string& name, bool* t, const std::string& help) {
  Add({name, help, "bool", *t ? "true" : "false", true, [t, name](const std::string& v) {
         if (v == "true" || v == "1" || v.empty()) *t = true;
         else if (v == "false" || v == "0") *t = false;
         else return BadValue(name, v, "true or false");
         return absl::OkStatus();
       }});
}

void FlagSet::List(const std::string& name, std::vector<std::string>* t, const std::string& help) {
  Add({name, help, "string, repeatable", "none", false, [t](const std::string& v) {
         t->push_back(v);
         return absl::OkStatus();
       }});
}

absl::Status FlagSet::Parse(int argc, char** argv, int first) {
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help_ = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("unexpected argument \"", arg, "\" (flags start with --)"));
    }
    std::string name = arg.substr(2), value;
    const size_t eq = name.find('=');
    const bool has_value = eq != std::string::npos;
    if (has_value) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    const Flag* flag = nullptr;
    for (const auto& f : flags_) {
      if (f.name == name) flag = &f;
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " (see ", command_, " --help)"));
    }
    if (!has_value && !flag->is_bool) {
      if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      value = argv[++i];
    }
    if (auto s = flag->set(value); !s.ok()) return s;
  }
  return absl::OkStatus();
}

std::string FlagSet::Usage() const {
  std::string out = absl::StrCat("usage: ", command_, " [flags]\n\n", summary_, "\n\nflags:\n");
  for (const auto& f : flags_) {
    absl::StrAppend(&out, "  --", f.name, " (", f.kind, ", default: ", f.default_text.empty() ? "\"\"" : f.default_text,
                    ")\n      ", f.help, "\n");
  }
  absl::StrAppend(&out, "  --help\n      print this help\n");
  return out;
}

std::optional<int> FlagSet::ParseForCommand(int argc, char** argv, int first) {
  if (absl::Status s = Parse(argc, argv, first); !s.ok()) {
    std::cerr << command_ << ": " << s.message() << "\n";
    return 2;
  }
  if (help_) {
    std::cout << Usage();
    return 0;
  }
  return std::nullopt;
}

}  // namespace brickserve
