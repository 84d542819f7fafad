#include "dispatch/formats/json_text.hpp"

#include <fmt/format.h>

#include "dispatch/protocol/text.hpp"

namespace dispatch::formats {

namespace {

// One pass over the raw text, before any allocation that scales with it: nesting depth and an
// approximate value count (container openings + commas), and the top-level key being read, so
// a refusal can name the field (`param`). Strings are skipped with their escapes.
class ShapeScanner {
 public:
  explicit ShapeScanner(const JsonLimits& limits) : limits_(limits) {}

  Result<void, RequestError> scan(std::string_view text) {
    for (const char c : text) {
      if (in_string_) {
        string_byte(c);
        continue;
      }
      if (c == '"') {
        in_string_ = true;
        reading_key_ = depth_ == 1 && expect_key_;
        if (reading_key_) top_key_.clear();
        expect_key_ = false;
      } else if (c == '{' || c == '[') {
        ++values_;
        if (++depth_ > limits_.max_depth) return too_deep();
        if (depth_ == 1) expect_key_ = c == '{';
      } else if (c == '}' || c == ']') {
        if (depth_ > 0) --depth_;
      } else if (c == ',') {
        ++values_;
        if (depth_ == 1) expect_key_ = true;
      }
      if (values_ > limits_.max_values) return too_many();
    }
    return {};
  }

 private:
  void string_byte(char c) {
    if (escaped_) {
      escaped_ = false;
    } else if (c == '\\') {
      escaped_ = true;
    } else if (c == '"') {
      in_string_ = false;
      reading_key_ = false;
    } else if (reading_key_ && top_key_.size() < 64) {
      top_key_ += c;
    }
  }

  RequestError refusal(std::string_view problem, std::string code) const {
    if (top_key_.empty()) {
      return RequestError{400, "request body " + std::string(problem), "", std::move(code)};
    }
    return invalid_field(top_key_, problem, std::move(code));
  }
  RequestError too_deep() const {
    return refusal(fmt::format("nests deeper than {} levels", limits_.max_depth), "too_deep");
  }
  RequestError too_many() const {
    return refusal(fmt::format("has too many elements (a body may hold at most {} JSON values)",
                               limits_.max_values),
                   "too_large");
  }

  const JsonLimits& limits_;
  std::size_t depth_ = 0;
  std::size_t values_ = 0;
  bool in_string_ = false;
  bool escaped_ = false;
  bool expect_key_ = false;
  bool reading_key_ = false;
  std::string top_key_;
};

// nlohmann's messages start with "[json.exception.parse_error.101] "; users need the rest.
std::string short_json_error(const std::exception& e) {
  std::string_view text = e.what();
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find("] ");
    if (close != std::string_view::npos) text.remove_prefix(close + 2);
  }
  return std::string(text);
}

void append_escaped(std::string& out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  std::size_t run = 0;  // start of the pending run of bytes that need no escape
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(text.data() + run, i - run);
    run = i + 1;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        out += "\\u00";
        out += kHex[c >> 4];
        out += kHex[c & 0xf];
    }
  }
  out.append(text.data() + run, text.size() - run);
  out += '"';
}

}  // namespace

Result<json, RequestError> parse_json_body(std::string_view text, const JsonLimits& limits) {
  ShapeScanner scanner(limits);
  if (auto shape = scanner.scan(text); !shape) return std::move(shape).error();
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    return RequestError{400, "invalid JSON: " + short_json_error(e), "", "invalid_json"};
  }
}

std::string dump_line(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

void append_json_string(std::string& out, std::string_view text) {
  if (protocol::is_valid_utf8(text)) {
    append_escaped(out, text);
  } else {
    append_escaped(out, protocol::make_valid_utf8(text));
  }
}

json usage_to_json(const protocol::Usage& usage) {
  json out{{"prompt_tokens", usage.prompt_tokens},
           {"completion_tokens", usage.completion_tokens},
           {"total_tokens", usage.total_tokens}};
  // OpenAI's shape for the cached part of the prompt; only when the provider reported one.
  if (usage.cached_tokens != 0) {
    out["prompt_tokens_details"] = json{{"cached_tokens", usage.cached_tokens}};
  }
  return out;
}

json tool_calls_to_openai(const std::vector<protocol::ToolCall>& calls) {
  json out = json::array();
  for (const auto& call : calls) {
    out.push_back(json{{"id", call.id},
                       {"type", "function"},
                       {"function", {{"name", call.name}, {"arguments", call.arguments}}}});
  }
  return out;
}

}  // namespace dispatch::formats
