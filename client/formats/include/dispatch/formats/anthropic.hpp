#pragma once

// Anthropic's Messages format: the request body in, the `message` answer and the stream of
// message_start / content_block_* / message_delta / message_stop events out — so that
// Anthropic-format SDKs and tools can use every provider, not only Claude.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/common/result.hpp"
#include "dispatch/formats/chat_request.hpp"
#include "dispatch/formats/request_error.hpp"
#include "dispatch/protocol/types.hpp"
#include "dispatch/response.hpp"

namespace dispatch::formats {

// The body of POST /v1/messages. Understood: model, max_tokens (required), system (a string
// or text blocks), messages (roles user and assistant; content as a string or blocks of type
// text, image (base64 or url source), tool_use, tool_result, thinking), tools (custom tools
// with input_schema), tool_choice (auto, any, tool, none), stop_sequences, temperature (0–1),
// top_p, thinking, metadata.user_id, stream, and the extensions of read_extensions. Each
// tool_result becomes a `tool` message of its own, named after the tool_use it answers.
Result<ChatRequest, RequestError> parse_anthropic_messages(const nlohmann::json& body);

// end_turn | max_tokens | stop_sequence | tool_use | refusal (the provider's own when it is
// Anthropic's, else mapped from our finish reason).
std::string anthropic_stop_reason(const DispatchResponse& response);

// "msg_…": the provider's id when it is one, else "msg_<job id>".
std::string anthropic_message_id(const DispatchResponse& response, std::string_view job_id);

// The `message` object: content blocks (thinking, text, tool_use with `input` as an object),
// stop_reason, usage.input_tokens / output_tokens; `model` is the provider/model that answered.
nlohmann::json anthropic_message_body(const DispatchResponse& response);

// Writes one streamed answer as Anthropic's server-sent events. A change of kind (thinking,
// text, another tool call) closes the open content block and opens the next.
class AnthropicStreamWriter {
 public:
  AnthropicStreamWriter(std::string message_id, std::string model);

  // message_start (usage not known yet: zeros) and a ping.
  void start(std::string& out);
  void delta(std::string& out, std::string_view content, std::string_view thinking,
             const std::vector<protocol::ToolCallDelta>& tool_calls);
  // Closes the open block, then message_delta (stop_reason, usage) and message_stop.
  void finish(std::string& out, const DispatchResponse& response);

 private:
  enum class Block { none, thinking, text, tool_use };
  void open(std::string& out, Block kind, const protocol::ToolCallDelta* call);
  void close(std::string& out);
  void block_delta(std::string& out, std::string_view type, std::string_view field,
                   std::string_view text);

  std::string message_id_;
  std::string model_;
  Block block_ = Block::none;
  int index_ = -1;          // the open (or last) block's index
  uint32_t tool_call_ = 0;  // the open tool_use block's call index
};

}  // namespace dispatch::formats
