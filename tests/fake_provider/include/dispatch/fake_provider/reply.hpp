#pragma once

// What the fake model answers, decided once per request and independent of the wire format.
// Deterministic: one word = one token = one streamed content chunk.
//
// Words: ["[N", "images]"] when any message carries images, then "reply", "to:" and the words of
// the last user message (or "tool", "result:" and the result's words when the last message is
// a tool result), then filler ("lorem", "ipsum", ... cycling) up to the token count. The
// request's max tokens cut earlier (finish length); a stop sequence cuts before itself (finish
// stop / stop_sequence). Offered tools plus a prompt naming "tool" or a tool yield a tool call
// with fake arguments instead of text.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace dispatch::fake_provider {

struct ToolSpec {
  std::string name;
  nlohmann::json parameters;  // JSON Schema object (null when absent)
};

enum class ToolChoice { automatic, none, required };

// A request reduced to what the reply depends on; each wire format fills it while validating.
struct ChatRequest {
  std::string model;  // the full model string, directives included
  bool stream = false;
  int64_t prompt_tokens = 0;  // whitespace-separated words of every message text (+ system)
  std::string last_user_text;
  bool last_is_tool_result = false;
  std::string tool_result_text;
  int64_t image_count = 0;
  std::vector<ToolSpec> tools;
  ToolChoice tool_choice = ToolChoice::automatic;
  std::string forced_tool;  // tool_choice naming one tool
  std::optional<int64_t> max_tokens;
  std::vector<std::string> stop;
  bool thinking = false;
  bool include_usage = false;       // OpenAI stream_options.include_usage
  bool incremental_output = false;  // DashScope native parameters.incremental_output
  bool text_result_format = false;  // DashScope native parameters.result_format == "text"
  bool load_only = false;           // Ollama: no messages, the model is just loaded
};

enum class Finish { stop, length, stop_sequence, tool_calls, load };

struct ToolCallPlan {
  std::string name;
  nlohmann::json arguments;            // object
  std::string arguments_json;          // compact serialisation of `arguments`
  std::vector<std::string> fragments;  // arguments_json split for streaming (2 or more)
};

struct ReplyPlan {
  std::vector<std::string> thinking_chunks;
  std::vector<std::string> text_chunks;  // each a word plus a space, except the last word
  std::optional<ToolCallPlan> tool_call;
  Finish finish = Finish::stop;
  std::string stop_sequence;  // the sequence that matched, for Finish::stop_sequence
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;  // answer chunks (thinking is not counted)

  std::string text() const;
  std::string thinking() const;
};

// The token count cap a reply may use (guards memory against `tokens=1e9`).
inline constexpr int64_t kMaxReplyTokens = 100'000;

ReplyPlan plan_reply(const ChatRequest& request, int64_t token_count);

// ASCII-whitespace separated words.
std::vector<std::string> split_words(std::string_view text);
int64_t count_words(std::string_view text);

// Arguments for a tool call: per schema property, string -> "fake-<name>", number/integer -> 1,
// boolean -> true, anything else -> null.
nlohmann::json fake_arguments(const nlohmann::json& schema);

// The deterministic reasoning text emitted when thinking is enabled.
inline constexpr std::string_view kThinkingText = "Let me think about this request step by step.";

}  // namespace dispatch::fake_provider
