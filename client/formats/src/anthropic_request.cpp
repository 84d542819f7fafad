// Anthropic Messages body -> ChatRequest.

#include <map>

#include "dispatch/formats/anthropic.hpp"
#include "fields.hpp"

namespace dispatch::formats {

using detail::member;
using nlohmann::json;

namespace {

using Step = Result<void, RequestError> (*)(const json&, ChatRequest&);
// tool_use id -> tool name, so that a tool_result's message can name its function (Ollama
// keys tool results on it).
using ToolNames = std::map<std::string, std::string, std::less<>>;

Result<std::string, RequestError> block_type(const json& block, const std::string& where) {
  if (!block.is_object()) return wrong_type(where, "an object with a \"type\"");
  auto type = detail::read_string(block, "type", where);
  if (!type) return std::move(type).error();
  if (!*type) return wrong_type(path_key(where, "type"), "a string");
  return std::move(**type);
}

Result<std::string, RequestError> text_of(const json& block, const std::string& where) {
  const json* text = member(block, "text");
  if (text == nullptr || !text->is_string()) return wrong_type(path_key(where, "text"), "a string");
  return text->get<std::string>();
}

Result<std::string, RequestError> image_of(const json& block, const std::string& where) {
  const std::string source_where = path_key(where, "source");
  const json* source = member(block, "source");
  if (source == nullptr || !source->is_object()) return wrong_type(source_where, "an object");
  auto type = detail::read_string(*source, "type", source_where);
  if (!type) return std::move(type).error();
  if (*type == "url") {
    auto url = detail::read_string(*source, "url", source_where);
    if (!url) return std::move(url).error();
    if (!*url) return wrong_type(path_key(source_where, "url"), "a string");
    return detail::checked_image(**url, path_key(source_where, "url"));
  }
  if (*type != "base64") {
    return invalid_field(path_key(source_where, "type"), "must be base64 or url");
  }
  auto media_type = detail::read_string(*source, "media_type", source_where);
  if (!media_type) return std::move(media_type).error();
  auto data = detail::read_string(*source, "data", source_where);
  if (!data) return std::move(data).error();
  if (!*data) return wrong_type(path_key(source_where, "data"), "a string");
  const std::string url = "data:" + media_type->value_or("image/png") + ";base64," + **data;
  return detail::checked_image(url, path_key(source_where, "data"));
}

// A tool_result's content: a string, or text blocks (images in tool results are refused: the
// providers take images in user messages only).
Result<std::string, RequestError> tool_result_text(const json& block, const std::string& where) {
  const json* content = member(block, "content");
  if (content == nullptr) return std::string();
  if (content->is_string()) return content->get<std::string>();
  auto blocks = detail::read_array(block, "content", where, kMaxContentParts);
  if (!blocks) return std::move(blocks).error();
  std::string text;
  for (std::size_t i = 0; i < (*blocks)->size(); ++i) {
    const std::string item_where = path_index(path_key(where, "content"), i);
    auto type = block_type((**blocks)[i], item_where);
    if (!type) return std::move(type).error();
    if (*type != "text") {
      return invalid_field(path_key(item_where, "type"),
                           ": only text blocks are supported inside tool_result",
                           "unsupported_value");
    }
    auto piece = text_of((**blocks)[i], item_where);
    if (!piece) return std::move(piece).error();
    if (!text.empty()) text += "\n";
    text += *piece;
  }
  return text;
}

Result<protocol::Message, RequestError> read_tool_result(const json& block,
                                                         const std::string& where,
                                                         const ToolNames& names) {
  auto id = detail::read_string(block, "tool_use_id", where);
  if (!id) return std::move(id).error();
  if (!*id) return wrong_type(path_key(where, "tool_use_id"), "a string");
  auto text = tool_result_text(block, where);
  if (!text) return std::move(text).error();
  protocol::Message message;
  message.role = "tool";
  message.tool_call_id = std::move(**id);
  message.content = std::move(*text);
  if (const auto name = names.find(message.tool_call_id); name != names.end()) {
    message.tool_name = name->second;
  }
  return message;
}

Result<protocol::ToolCall, RequestError> read_tool_use(const json& block,
                                                       const std::string& where) {
  auto id = detail::read_string(block, "id", where);
  if (!id) return std::move(id).error();
  auto name = detail::read_string(block, "name", where);
  if (!name) return std::move(name).error();
  if (!*id || !*name) return wrong_type(path_key(where, *id ? "name" : "id"), "a string");
  const json* input = member(block, "input");
  if (input != nullptr && !input->is_object())
    return wrong_type(path_key(where, "input"), "an object");
  return protocol::ToolCall{std::move(**id), std::move(**name),
                            input != nullptr ? detail::compact(*input) : "{}"};
}

// What one Anthropic message becomes: tool results first (each a `tool` message), then the
// user's or assistant's own text, images, thinking and tool calls.
struct Translated {
  std::vector<protocol::Message> tool_results;
  protocol::Message message;
  std::string text;
};

Result<void, RequestError> read_block(const json& block, const std::string& where, ToolNames& names,
                                      Translated& out) {
  auto type = block_type(block, where);
  if (!type) return std::move(type).error();
  const bool user = out.message.role == "user";
  if (*type == "text") {
    auto text = text_of(block, where);
    if (!text) return std::move(text).error();
    if (!out.text.empty()) out.text += "\n";
    out.text += *text;
  } else if (*type == "image" && user) {
    auto image = image_of(block, where);
    if (!image) return std::move(image).error();
    out.message.images.push_back(std::move(*image));
  } else if (*type == "tool_result" && user) {
    auto result = read_tool_result(block, where, names);
    if (!result) return std::move(result).error();
    out.tool_results.push_back(std::move(*result));
  } else if (*type == "tool_use" && !user) {
    auto call = read_tool_use(block, where);
    if (!call) return std::move(call).error();
    names[call->id] = call->name;
    out.message.tool_calls.push_back(std::move(*call));
  } else if (*type == "thinking" && !user) {
    const json* thinking = member(block, "thinking");
    if (thinking != nullptr && thinking->is_string())
      out.message.thinking += thinking->get<std::string>();
  } else if (*type != "redacted_thinking" || user) {
    return invalid_field(
        path_key(where, "type"),
        ": unsupported content block type '" + *type + "' in a " + out.message.role + " message",
        "unsupported_value");
  }
  return {};
}

Result<void, RequestError> read_content(const json& item, const std::string& where,
                                        ToolNames& names, Translated& out) {
  const json* content = member(item, "content");
  if (content != nullptr && content->is_string()) {
    out.text = content->get<std::string>();
    return {};
  }
  if (content == nullptr || !content->is_array()) {
    return wrong_type(path_key(where, "content"), "a string or an array of content blocks");
  }
  auto blocks = detail::read_array(item, "content", where, kMaxContentParts);
  if (!blocks) return std::move(blocks).error();
  for (std::size_t i = 0; i < (*blocks)->size(); ++i) {
    auto block = read_block((**blocks)[i], path_index(path_key(where, "content"), i), names, out);
    if (!block) return block;
  }
  return {};
}

Result<void, RequestError> read_message(const json& item, std::size_t index, ToolNames& names,
                                        std::vector<protocol::Message>& messages) {
  const std::string where = path_index("messages", index);
  if (!item.is_object()) return wrong_type(where, "an object");
  auto role = detail::read_string(item, "role", where);
  if (!role) return std::move(role).error();
  if (!*role || (**role != "user" && **role != "assistant")) {
    return invalid_field(path_key(where, "role"),
                         "must be user or assistant (a system prompt is the top-level `system`)");
  }
  Translated out;
  out.message.role = **role;
  if (auto content = read_content(item, where, names, out); !content) return content;
  out.message.content = std::move(out.text);
  for (auto& result : out.tool_results) messages.push_back(std::move(result));
  const protocol::Message& message = out.message;
  const bool has_own = !message.content.empty() || !message.images.empty() ||
                       !message.tool_calls.empty() || !message.thinking.empty();
  if (has_own) messages.push_back(std::move(out.message));
  if (!has_own && out.tool_results.empty())
    return invalid_field(path_key(where, "content"), "is empty");
  return {};
}

Result<void, RequestError> read_system(const json& body, ChatRequest& chat) {
  const json* system = member(body, "system");
  if (system == nullptr) return {};
  protocol::Message message;
  message.role = "system";
  if (system->is_string()) {
    message.content = system->get<std::string>();
  } else {
    auto blocks = detail::read_array(body, "system", "", kMaxContentParts);
    if (!blocks) return wrong_type("system", "a string or an array of text blocks");
    for (std::size_t i = 0; i < (*blocks)->size(); ++i) {
      auto text = text_of((**blocks)[i], path_index("system", i));
      if (!text) return std::move(text).error();
      if (!message.content.empty()) message.content += "\n";
      message.content += *text;
    }
  }
  if (!message.content.empty()) chat.request.messages.push_back(std::move(message));
  return {};
}

Result<void, RequestError> read_messages(const json& body, ChatRequest& chat) {
  auto array = detail::read_array(body, "messages", "", kMaxMessages);
  if (!array) return std::move(array).error();
  if (*array == nullptr || (*array)->empty()) {
    return invalid_field("messages", "must be a non-empty array");
  }
  ToolNames names;
  for (std::size_t i = 0; i < (*array)->size(); ++i) {
    auto message = read_message((**array)[i], i, names, chat.request.messages);
    if (!message) return message;
  }
  return {};
}

Result<void, RequestError> read_sampling(const json& body, ChatRequest& chat) {
  auto max_tokens = detail::read_uint32(body, "max_tokens", "");
  if (!max_tokens) return std::move(max_tokens).error();
  if (!*max_tokens) return invalid_field("max_tokens", ": field required", "missing_field");
  if (**max_tokens == 0) return invalid_field("max_tokens", "must be at least 1");
  chat.request.max_tokens = *max_tokens;
  auto temperature = detail::read_number(body, "temperature", "", 0.0, 1.0);
  if (!temperature) return std::move(temperature).error();
  chat.request.temperature = *temperature;
  auto top_p = detail::read_number(body, "top_p", "", 0.0, 1.0);
  if (!top_p) return std::move(top_p).error();
  chat.request.top_p = *top_p;
  auto stop = detail::read_strings(body, "stop_sequences", "", kMaxStopSequences, false);
  if (!stop) return std::move(stop).error();
  chat.request.stop = std::move(*stop);
  return {};
}

Result<protocol::Tool, RequestError> read_tool(const json& tool, const std::string& where) {
  if (!tool.is_object()) return wrong_type(where, "an object");
  auto type = detail::read_string(tool, "type", where);
  if (!type) return std::move(type).error();
  if (*type && **type != "custom") {
    return invalid_field(path_key(where, "type"),
                         ": unsupported tool type '" + **type + "' (only custom tools)",
                         "unsupported_value");
  }
  auto name = detail::read_string(tool, "name", where);
  if (!name) return std::move(name).error();
  if (!*name) return wrong_type(path_key(where, "name"), "a string");
  auto description = detail::read_string(tool, "description", where);
  if (!description) return std::move(description).error();
  const json* schema = member(tool, "input_schema");
  if (schema == nullptr || !schema->is_object()) {
    return wrong_type(path_key(where, "input_schema"), "an object");
  }
  return protocol::Tool{std::move(**name), description->value_or(""), detail::compact(*schema)};
}

Result<void, RequestError> read_tools(const json& body, ChatRequest& chat) {
  return detail::read_each(body, "tools", kMaxTools, chat.request.tools, read_tool);
}

Result<void, RequestError> read_tool_choice(const json& body, ChatRequest& chat) {
  const json* choice = member(body, "tool_choice");
  if (choice == nullptr) return {};
  auto type = detail::read_string(*choice, "type", "tool_choice");
  if (!choice->is_object() || !type || !*type) {
    return wrong_type("tool_choice", "an object with a \"type\"");
  }
  static const std::map<std::string, std::string, std::less<>> kModes = {
      {"auto", "auto"}, {"any", "required"}, {"none", "none"}, {"tool", "function"}};
  const auto mode = kModes.find(**type);
  if (mode == kModes.end())
    return invalid_field("tool_choice.type", "must be auto, any, tool or none");
  chat.request.tool_choice = mode->second;
  if (mode->second == "function") {
    auto name = detail::read_string(*choice, "name", "tool_choice");
    if (!name || !*name) return wrong_type("tool_choice.name", "a string");
    chat.request.tool_choice_function = std::move(**name);
  }
  return {};
}

Result<void, RequestError> read_thinking(const json& body, ChatRequest& chat) {
  const json* thinking = member(body, "thinking");
  if (thinking == nullptr) return {};
  auto type = detail::read_string(*thinking, "type", "thinking");
  if (!thinking->is_object() || !type || !*type) {
    return wrong_type("thinking", "an object with a \"type\"");
  }
  if (**type == "disabled") {
    chat.request.think = false;
    return {};
  }
  if (**type != "enabled" && **type != "adaptive") {
    return invalid_field("thinking.type", "must be enabled, adaptive or disabled");
  }
  chat.request.think = true;
  auto budget = detail::read_uint32(*thinking, "budget_tokens", "thinking");
  if (!budget) return std::move(budget).error();
  chat.request.thinking_budget = *budget;
  return {};
}

Result<void, RequestError> read_metadata_and_stream(const json& body, ChatRequest& chat) {
  if (const json* metadata = member(body, "metadata")) {
    if (!metadata->is_object()) return wrong_type("metadata", "an object");
    auto user = detail::read_string(*metadata, "user_id", "metadata");
    if (!user) return std::move(user).error();
    if (*user) chat.request.metadata["user_id"] = std::move(**user);
  }
  auto stream = detail::read_bool(body, "stream", "");
  if (!stream) return std::move(stream).error();
  chat.stream = stream->value_or(false);
  chat.request.stream = chat.stream;
  return {};
}

constexpr Step kSteps[] = {read_system,
                           read_messages,
                           read_sampling,
                           read_tools,
                           read_tool_choice,
                           read_thinking,
                           read_metadata_and_stream,
                           read_extensions};

}  // namespace

Result<ChatRequest, RequestError> parse_anthropic_messages(const json& body) {
  if (!body.is_object()) return RequestError{400, "body must be a JSON object", "", "invalid_type"};
  ChatRequest chat;
  auto model = detail::read_string(body, "model", "");
  if (!model) return std::move(model).error();
  if (!*model) return invalid_field("model", ": field required", "missing_field");
  chat.model = std::move(**model);
  for (const Step step : kSteps) {
    if (auto done = step(body, chat); !done) return std::move(done).error();
  }
  return chat;
}

}  // namespace dispatch::formats
