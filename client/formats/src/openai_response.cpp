// DispatchResponse -> OpenAI's chat.completion object and chat.completion.chunk events.

#include "dispatch/formats/json_text.hpp"
#include "dispatch/formats/openai.hpp"

namespace dispatch::formats {

using nlohmann::json;

json chat_completion_body(const DispatchResponse& response) {
  json message{{"role", "assistant"}};
  if (response.tool_calls.empty()) {
    message["content"] = response.content;
  } else {
    message["content"] = response.content.empty() ? json(nullptr) : json(response.content);
    message["tool_calls"] = tool_calls_to_openai(response.tool_calls);
  }
  if (!response.thinking.empty()) message["reasoning_content"] = response.thinking;
  json choice{{"index", 0},
              {"message", std::move(message)},
              {"finish_reason",
               response.finish_reason.empty() ? json(nullptr) : json(response.finish_reason)},
              {"logprobs", nullptr}};
  return json{
      {"id", response.request_id.empty() ? "chatcmpl-" + response.job_id : response.request_id},
      {"object", "chat.completion"},
      {"created", response.created_at},
      {"model", response.provider + "/" + response.model},
      {"choices", json::array({std::move(choice)})},
      {"usage", usage_to_json(response.usage)}};
}

namespace {

void append_tool_delta(std::string& out, const protocol::ToolCallDelta& delta) {
  out += "{\"index\":";
  out += std::to_string(delta.index);
  if (!delta.id.empty()) {
    out += ",\"id\":";
    append_json_string(out, delta.id);
    out += ",\"type\":\"function\"";
  }
  out += ",\"function\":{";
  if (!delta.name.empty()) {
    out += "\"name\":";
    append_json_string(out, delta.name);
    out += ',';
  }
  out += "\"arguments\":";
  append_json_string(out, delta.arguments);
  out += "}}";
}

}  // namespace

OpenAiChunkWriter::OpenAiChunkWriter(std::string id, int64_t created, std::string model,
                                     bool include_usage)
    : id_(std::move(id)),
      created_(created),
      model_(std::move(model)),
      include_usage_(include_usage) {}

void OpenAiChunkWriter::append_prefix(std::string& out, std::string_view model) const {
  out += "data: {\"id\":";
  append_json_string(out, id_);
  out += ",\"object\":\"chat.completion.chunk\",\"created\":";
  out += std::to_string(created_);
  out += ",\"model\":";
  append_json_string(out, model);
}

void OpenAiChunkWriter::delta(std::string& out, std::string_view content, std::string_view thinking,
                              const std::vector<protocol::ToolCallDelta>& tool_calls) {
  append_prefix(out, model_);
  out += ",\"choices\":[{\"index\":0,\"delta\":{";
  bool first = true;
  const auto field = [&](std::string_view name) {
    if (!first) out += ',';
    first = false;
    out += '"';
    out += name;
    out += "\":";
  };
  if (!role_sent_) {
    field("role");
    out += "\"assistant\"";
    role_sent_ = true;
  }
  if (!thinking.empty()) {
    field("reasoning_content");
    append_json_string(out, thinking);
  }
  if (!content.empty() || (thinking.empty() && tool_calls.empty())) {
    field("content");
    append_json_string(out, content);
  }
  if (!tool_calls.empty()) {
    field("tool_calls");
    out += '[';
    for (std::size_t i = 0; i < tool_calls.size(); ++i) {
      if (i != 0) out += ',';
      append_tool_delta(out, tool_calls[i]);
    }
    out += ']';
  }
  out += "},\"logprobs\":null,\"finish_reason\":null}]}\n\n";
}

void OpenAiChunkWriter::finish(std::string& out, const DispatchResponse& response) {
  const std::string model = response.provider + "/" + response.model;
  if (!role_sent_) delta(out, "", "", {});  // an empty answer still names its role
  append_prefix(out, model);
  out += ",\"choices\":[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":";
  if (response.finish_reason.empty()) {
    out += "null";
  } else {
    append_json_string(out, response.finish_reason);
  }
  out += "}]}\n\n";
  if (include_usage_) {
    append_prefix(out, model);
    out += ",\"choices\":[],\"usage\":";
    out += dump_line(usage_to_json(response.usage));
    out += "}\n\n";
  }
  out += "data: [DONE]\n\n";
}

}  // namespace dispatch::formats
