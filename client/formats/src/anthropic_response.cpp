// DispatchResponse -> Anthropic's `message` object and its stream events.

#include <array>

#include "dispatch/formats/anthropic.hpp"
#include "dispatch/formats/json_text.hpp"

namespace dispatch::formats {

using nlohmann::json;

std::string anthropic_stop_reason(const DispatchResponse& response) {
  static constexpr std::array<std::string_view, 6> kNative = {
      "end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"};
  for (const std::string_view native : kNative) {
    if (response.raw_finish_reason == native) return std::string(native);
  }
  if (response.finish_reason == "length") return "max_tokens";
  if (response.finish_reason == "tool_calls") return "tool_use";
  if (response.finish_reason == "content_filter") return "refusal";
  return "end_turn";
}

std::string anthropic_message_id(const DispatchResponse& response, std::string_view job_id) {
  if (response.request_id.rfind("msg_", 0) == 0) return response.request_id;
  return "msg_" + std::string(job_id);
}

json anthropic_message_body(const DispatchResponse& response) {
  json content = json::array();
  if (!response.thinking.empty()) {
    content.push_back(
        json{{"type", "thinking"}, {"thinking", response.thinking}, {"signature", ""}});
  }
  if (!response.content.empty() || (response.tool_calls.empty() && response.thinking.empty())) {
    content.push_back(json{{"type", "text"}, {"text", response.content}});
  }
  for (const auto& call : response.tool_calls) {
    json input = json::parse(call.arguments.empty() ? "{}" : call.arguments, nullptr, false);
    if (!input.is_object()) input = json::object();  // a model's malformed arguments
    content.push_back(json{
        {"type", "tool_use"}, {"id", call.id}, {"name", call.name}, {"input", std::move(input)}});
  }
  return json{{"id", anthropic_message_id(response, response.job_id)},
              {"type", "message"},
              {"role", "assistant"},
              {"model", response.provider + "/" + response.model},
              {"content", std::move(content)},
              {"stop_reason", anthropic_stop_reason(response)},
              {"stop_sequence", nullptr},
              {"usage",
               {{"input_tokens", response.usage.prompt_tokens},
                {"output_tokens", response.usage.completion_tokens}}}};
}

namespace {

void append_event(std::string& out, std::string_view name, std::string_view data) {
  out += "event: ";
  out += name;
  out += "\ndata: ";
  out += data;
  out += "\n\n";
}

}  // namespace

AnthropicStreamWriter::AnthropicStreamWriter(std::string message_id, std::string model)
    : message_id_(std::move(message_id)), model_(std::move(model)) {}

void AnthropicStreamWriter::start(std::string& out) {
  std::string data = "{\"type\":\"message_start\",\"message\":{\"id\":";
  append_json_string(data, message_id_);
  data += ",\"type\":\"message\",\"role\":\"assistant\",\"model\":";
  append_json_string(data, model_);
  data +=
      ",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,"
      "\"usage\":{\"input_tokens\":0,\"output_tokens\":0}}}";
  append_event(out, "message_start", data);
  append_event(out, "ping", "{\"type\":\"ping\"}");
}

void AnthropicStreamWriter::open(std::string& out, Block kind,
                                 const protocol::ToolCallDelta* call) {
  close(out);
  block_ = kind;
  ++index_;
  std::string data = "{\"type\":\"content_block_start\",\"index\":" + std::to_string(index_) +
                     ",\"content_block\":";
  if (kind == Block::thinking) {
    data += "{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}";
  } else if (kind == Block::text) {
    data += "{\"type\":\"text\",\"text\":\"\"}}";
  } else {
    tool_call_ = call->index;
    data += "{\"type\":\"tool_use\",\"id\":";
    append_json_string(data, call->id);
    data += ",\"name\":";
    append_json_string(data, call->name);
    data += ",\"input\":{}}}";
  }
  append_event(out, "content_block_start", data);
}

void AnthropicStreamWriter::close(std::string& out) {
  if (block_ == Block::none) return;
  append_event(out, "content_block_stop",
               "{\"type\":\"content_block_stop\",\"index\":" + std::to_string(index_) + "}");
  block_ = Block::none;
}

void AnthropicStreamWriter::block_delta(std::string& out, std::string_view type,
                                        std::string_view field, std::string_view text) {
  std::string data = "{\"type\":\"content_block_delta\",\"index\":" + std::to_string(index_) +
                     ",\"delta\":{\"type\":\"";
  data += type;
  data += "\",\"";
  data += field;
  data += "\":";
  append_json_string(data, text);
  data += "}}";
  append_event(out, "content_block_delta", data);
}

void AnthropicStreamWriter::delta(std::string& out, std::string_view content,
                                  std::string_view thinking,
                                  const std::vector<protocol::ToolCallDelta>& tool_calls) {
  if (!thinking.empty()) {
    if (block_ != Block::thinking) open(out, Block::thinking, nullptr);
    block_delta(out, "thinking_delta", "thinking", thinking);
  }
  if (!content.empty()) {
    if (block_ != Block::text) open(out, Block::text, nullptr);
    block_delta(out, "text_delta", "text", content);
  }
  for (const auto& call : tool_calls) {
    const bool new_call = !call.id.empty() || !call.name.empty();
    if (block_ != Block::tool_use || (new_call && call.index != tool_call_)) {
      open(out, Block::tool_use, &call);
    }
    if (!call.arguments.empty())
      block_delta(out, "input_json_delta", "partial_json", call.arguments);
  }
}

void AnthropicStreamWriter::finish(std::string& out, const DispatchResponse& response) {
  // An answer with no block at all still gets an (empty) text block: SDK helpers such as
  // finalText() expect one.
  if (index_ < 0) open(out, Block::text, nullptr);
  close(out);
  std::string data = "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":";
  append_json_string(data, anthropic_stop_reason(response));
  data += ",\"stop_sequence\":null},\"usage\":{\"input_tokens\":" +
          std::to_string(response.usage.prompt_tokens) +
          ",\"output_tokens\":" + std::to_string(response.usage.completion_tokens) + "}}";
  append_event(out, "message_delta", data);
  append_event(out, "message_stop", "{\"type\":\"message_stop\"}");
}

}  // namespace dispatch::formats
