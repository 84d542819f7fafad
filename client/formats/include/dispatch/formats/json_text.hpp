#pragma once

// JSON plumbing shared by the API formats: hostile-body checks before anything is built, the
// compact dump every writer uses, and the two objects both OpenAI writers print (usage, tool
// calls).

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/common/result.hpp"
#include "dispatch/formats/request_error.hpp"
#include "dispatch/protocol/types.hpp"

namespace dispatch::formats {

using nlohmann::json;

// What an untrusted body may cost before it is parsed. Nesting is bounded because nlohmann's
// serializer and our translation recurse; the value count because the DOM costs ~60 bytes per
// value whatever the body's size (a 10 MiB body of "{}," would otherwise take ~200 MiB).
struct JsonLimits {
  std::size_t max_depth = 64;
  std::size_t max_values = 200'000;
};

// Parses a request body. Refuses, with a 400 naming the top-level field at fault, nesting
// deeper than max_depth, more than max_values values, and text that is not JSON.
Result<json, RequestError> parse_json_body(std::string_view text, const JsonLimits& limits = {});

// One line of text: compact, invalid UTF-8 replaced (never throws on odd provider output).
std::string dump_line(const json& value);

// Appends `text` as a JSON string literal (quotes included); invalid UTF-8 becomes U+FFFD.
// The stream writers use it to build chunks without a DOM per chunk.
void append_json_string(std::string& out, std::string_view text);

// {"prompt_tokens","completion_tokens","total_tokens"}
json usage_to_json(const protocol::Usage& usage);
// [{"id","type":"function","function":{"name","arguments"}}]
json tool_calls_to_openai(const std::vector<protocol::ToolCall>& calls);

}  // namespace dispatch::formats
