// OpenAI chat completions body -> ChatRequest / protocol::Request.

#include "dispatch/formats/openai.hpp"
#include "dispatch/request.hpp"
#include "fields.hpp"

namespace dispatch::formats {

using detail::member;
using nlohmann::json;

namespace {

using Step = Result<void, RequestError> (*)(const json&, ChatRequest&);

Result<std::string, RequestError> image_reference(const json& part, const std::string& where) {
  const json* image = member(part, "image_url");
  const json* url = nullptr;
  if (image != nullptr && image->is_string()) {
    url = image;  // a shorthand some clients send
  } else if (image != nullptr && image->is_object()) {
    url = member(*image, "url");
  }
  const std::string param = path_key(where, "image_url.url");
  if (url == nullptr || !url->is_string()) return wrong_type(param, "a string");
  return detail::checked_image(url->get_ref<const std::string&>(), param);
}

Result<void, RequestError> read_content_part(const json& part, const std::string& where,
                                             std::string& text, protocol::Message& message) {
  if (!part.is_object()) return wrong_type(where, "an object with a \"type\"");
  auto type = detail::read_string(part, "type", where);
  if (!type) return std::move(type).error();
  if (!*type) return wrong_type(path_key(where, "type"), "a string");
  if (**type == "text" || **type == "refusal") {
    const json* piece = member(part, **type);
    if (piece == nullptr || !piece->is_string())
      return wrong_type(path_key(where, **type), "a string");
    if (!text.empty()) text += "\n";
    text += piece->get_ref<const std::string&>();
    return {};
  }
  if (**type == "image_url") {
    auto image = image_reference(part, where);
    if (!image) return std::move(image).error();
    message.images.push_back(std::move(*image));
    return {};
  }
  return invalid_field(
      path_key(where, "type"),
      ": unsupported content part type '" + **type + "' (expected text or image_url)",
      "unsupported_value");
}

Result<void, RequestError> read_content(const json& item, const std::string& where,
                                        protocol::Message& message) {
  const json* content = member(item, "content");
  if (content == nullptr) return {};
  if (content->is_string()) {
    message.content = content->get<std::string>();
    return {};
  }
  if (!content->is_array()) {
    return wrong_type(path_key(where, "content"), "a string, an array of parts or null");
  }
  auto parts = detail::read_array(item, "content", where, kMaxContentParts);
  if (!parts) return std::move(parts).error();
  std::string text;
  for (std::size_t i = 0; i < (*parts)->size(); ++i) {
    const std::string part_where = path_index(path_key(where, "content"), i);
    auto part = read_content_part((**parts)[i], part_where, text, message);
    if (!part) return part;
  }
  message.content = std::move(text);
  return {};
}

Result<protocol::ToolCall, RequestError> read_tool_call(const json& call,
                                                        const std::string& where) {
  if (!call.is_object()) return wrong_type(where, "an object");
  const json* function = member(call, "function");
  if (function == nullptr || !function->is_object()) {
    return wrong_type(path_key(where, "function"), "an object");
  }
  protocol::ToolCall out;
  auto id = detail::read_string(call, "id", where);
  if (!id) return std::move(id).error();
  out.id = id->value_or("");
  auto name = detail::read_string(*function, "name", path_key(where, "function"));
  if (!name) return std::move(name).error();
  if (!*name) return wrong_type(path_key(where, "function.name"), "a string");
  out.name = std::move(**name);
  if (const json* arguments = member(*function, "arguments")) {
    out.arguments =
        arguments->is_string() ? arguments->get<std::string>() : detail::compact(*arguments);
  }
  return out;
}

Result<std::vector<protocol::ToolCall>, RequestError> read_tool_calls(const json& item,
                                                                      const std::string& where) {
  std::vector<protocol::ToolCall> calls;
  auto array = detail::read_array(item, "tool_calls", where, kMaxToolCalls);
  if (!array) return std::move(array).error();
  if (*array == nullptr) return calls;
  for (std::size_t i = 0; i < (*array)->size(); ++i) {
    auto call = read_tool_call((**array)[i], path_index(path_key(where, "tool_calls"), i));
    if (!call) return std::move(call).error();
    calls.push_back(std::move(*call));
  }
  return calls;
}

Result<std::string, RequestError> read_role(const json& item, const std::string& where) {
  auto role = detail::read_string(item, "role", where);
  if (!role) return std::move(role).error();
  if (!*role) return wrong_type(path_key(where, "role"), "a string");
  std::string name = std::move(**role);
  if (name == "developer") name = "system";  // OpenAI's newer name for it
  if (name != "system" && name != "user" && name != "assistant" && name != "tool") {
    return invalid_field(path_key(where, "role"),
                         "'" + name + "' is not system, developer, user, assistant or tool");
  }
  return name;
}

Result<protocol::Message, RequestError> read_message(const json& item, std::size_t index) {
  const std::string where = path_index("messages", index);
  if (!item.is_object()) return wrong_type(where, "an object");
  protocol::Message message;
  auto role = read_role(item, where);
  if (!role) return std::move(role).error();
  message.role = std::move(*role);
  if (auto content = read_content(item, where, message); !content) {
    return std::move(content).error();
  }
  auto calls = read_tool_calls(item, where);
  if (!calls) return std::move(calls).error();
  message.tool_calls = std::move(*calls);
  if (message.role == "tool") {
    auto call_id = detail::read_string(item, "tool_call_id", where);
    if (!call_id) return std::move(call_id).error();
    if (!*call_id)
      return wrong_type(path_key(where, "tool_call_id"), "a string for a tool message");
    message.tool_call_id = std::move(**call_id);
    auto name = detail::read_string(item, "name", where);
    if (name && *name) message.tool_name = std::move(**name);
  }
  if (message.role != "assistant" && message.content.empty() && message.images.empty()) {
    return invalid_field(path_key(where, "content"), "is empty");
  }
  return message;
}

Result<void, RequestError> read_messages(const json& body, ChatRequest& chat) {
  auto array = detail::read_array(body, "messages", "", kMaxMessages);
  if (!array) return std::move(array).error();
  if (*array == nullptr || (*array)->empty()) {
    return invalid_field("messages", "must be a non-empty array");
  }
  chat.request.messages.reserve((*array)->size());
  for (std::size_t i = 0; i < (*array)->size(); ++i) {
    auto message = read_message((**array)[i], i);
    if (!message) return std::move(message).error();
    chat.request.messages.push_back(std::move(*message));
  }
  return {};
}

Result<void, RequestError> read_sampling(const json& body, ChatRequest& chat) {
  protocol::Request& request = chat.request;
  auto temperature = detail::read_number(body, "temperature", "", 0.0, 2.0);
  if (!temperature) return std::move(temperature).error();
  request.temperature = *temperature;
  auto top_p = detail::read_number(body, "top_p", "", 0.0, 1.0);
  if (!top_p) return std::move(top_p).error();
  request.top_p = *top_p;
  // max_completion_tokens is the newer name; it wins when both are present.
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    auto max_tokens = detail::read_uint32(body, key, "");
    if (!max_tokens) return std::move(max_tokens).error();
    // The protocol refuses 0: accepted here, the job was bounced by the broker as malformed
    // (found by fuzzing: tests/fuzz/corpus/formats/crash-max-tokens-0).
    if (*max_tokens == 0u) return invalid_field(key, "must be at least 1");
    if (*max_tokens) request.max_tokens = *max_tokens;
  }
  if (const json* n = member(body, "n"); n != nullptr && *n != 1) {
    return invalid_field("n", ": only n = 1 is supported", "unsupported_value");
  }
  auto stop = detail::read_strings(body, "stop", "", kMaxStopSequences, true);
  if (!stop) return std::move(stop).error();
  request.stop = std::move(*stop);
  return {};
}

Result<protocol::Tool, RequestError> read_tool(const json& tool, const std::string& where) {
  if (!tool.is_object()) return wrong_type(where, "an object");
  auto type = detail::read_string(tool, "type", where);
  if (!type) return std::move(type).error();
  if (*type && **type != "function") {
    return invalid_field(path_key(where, "type"),
                         ": unsupported tool type '" + **type + "' (expected function)",
                         "unsupported_value");
  }
  const json* function = member(tool, "function");
  if (function == nullptr || !function->is_object()) {
    return wrong_type(path_key(where, "function"), "an object");
  }
  const std::string function_where = path_key(where, "function");
  auto name = detail::read_string(*function, "name", function_where);
  if (!name) return std::move(name).error();
  if (!*name) return wrong_type(path_key(function_where, "name"), "a string");
  auto description = detail::read_string(*function, "description", function_where);
  if (!description) return std::move(description).error();
  protocol::Tool out{std::move(**name), description->value_or(""), ""};
  if (const json* parameters = member(*function, "parameters")) {
    if (!parameters->is_object())
      return wrong_type(path_key(function_where, "parameters"), "an object");
    out.parameters = detail::compact(*parameters);
  }
  return out;
}

Result<void, RequestError> read_tools(const json& body, ChatRequest& chat) {
  return detail::read_each(body, "tools", kMaxTools, chat.request.tools, read_tool);
}

Result<void, RequestError> read_tool_choice(const json& body, ChatRequest& chat) {
  const json* choice = member(body, "tool_choice");
  if (choice == nullptr) return {};
  const auto refuse = [] {
    return invalid_field("tool_choice", "must be auto, none, required or a function object");
  };
  if (choice->is_string()) {
    const auto& mode = choice->get_ref<const std::string&>();
    if (mode != "auto" && mode != "none" && mode != "required") return refuse();
    chat.request.tool_choice = mode;
    return {};
  }
  const json* function = member(*choice, "function");
  const json* name = function != nullptr ? member(*function, "name") : nullptr;
  if (name == nullptr || !name->is_string()) return refuse();
  chat.request.tool_choice = "function";
  chat.request.tool_choice_function = name->get<std::string>();
  return {};
}

Result<void, RequestError> read_response_format(const json& body, ChatRequest& chat) {
  const json* format = member(body, "response_format");
  if (format == nullptr) return {};
  auto type = detail::read_string(*format, "type", "response_format");
  if (!type) return std::move(type).error();
  if (!format->is_object() || !*type) {
    return wrong_type("response_format", "an object with a \"type\"");
  }
  chat.request.response_format = **type;
  if (**type == "json_schema") {
    const json* spec = member(*format, "json_schema");
    const json* schema = spec != nullptr ? member(*spec, "schema") : nullptr;
    if (schema == nullptr) {
      return invalid_field("response_format.json_schema.schema", "is required");
    }
    chat.request.response_schema = detail::compact(*schema);
  } else if (**type != "text" && **type != "json_object") {
    return invalid_field("response_format.type", "must be text, json_object or json_schema");
  }
  return {};
}

Result<void, RequestError> read_metadata(const json& body, ChatRequest& chat) {
  if (const json* metadata = member(body, "metadata")) {
    if (!metadata->is_object()) return wrong_type("metadata", "an object");
    if (metadata->size() > kMaxMetadataKeys) {
      return invalid_field("metadata", "has more than 64 keys", "too_large");
    }
    for (const auto& [key, value] : metadata->items()) {
      chat.request.metadata[key] =
          value.is_string() ? value.get<std::string>() : detail::compact(value);
    }
  }
  auto user = detail::read_string(body, "user", "");
  if (!user) return std::move(user).error();
  if (*user) chat.request.metadata["user"] = std::move(**user);
  return {};
}

Result<void, RequestError> read_stream(const json& body, ChatRequest& chat) {
  auto stream = detail::read_bool(body, "stream", "");
  if (!stream) return std::move(stream).error();
  chat.stream = stream->value_or(false);
  chat.request.stream = chat.stream;
  if (const json* options = member(body, "stream_options")) {
    if (!options->is_object()) return wrong_type("stream_options", "an object");
    auto usage = detail::read_bool(*options, "include_usage", "stream_options");
    if (!usage) return std::move(usage).error();
    chat.include_usage = usage->value_or(false);
  }
  return {};
}

constexpr Step kSteps[] = {read_messages,        read_sampling, read_tools,  read_tool_choice,
                           read_response_format, read_metadata, read_stream, read_extensions};

}  // namespace

Result<ChatRequest, RequestError> parse_openai_chat(const json& body) {
  if (!body.is_object()) return RequestError{400, "body must be a JSON object", "", "invalid_type"};
  ChatRequest chat;
  auto model = detail::read_string(body, "model", "");
  if (!model) return std::move(model).error();
  if (!*model) return wrong_type("model", "a string");
  chat.model = std::move(**model);
  for (const Step step : kSteps) {
    if (auto done = step(body, chat); !done) return std::move(done).error();
  }
  return chat;
}

Result<protocol::Request, RequestError> request_from_openai_body(const json& body) {
  auto chat = parse_openai_chat(body);
  if (!chat) return std::move(chat).error();
  auto target = split_target(chat->model, "model");
  if (!target) return std::move(target).error();
  protocol::Request request = std::move(chat->request);
  request.provider = std::move(target->provider);
  request.model = std::move(target->model);
  request.stream = false;  // a batch line is answered whole
  if (!chat->fallbacks) return request;
  std::vector<protocol::Target> targets;
  for (std::size_t i = 0; i < chat->fallbacks->size(); ++i) {
    try {
      if (auto fallback = parse_optional_target((*chat->fallbacks)[i])) {
        targets.push_back(std::move(*fallback));
      }
    } catch (const InvalidTargetError& e) {
      return invalid_field(path_index("fallbacks", i), std::string(": ") + e.what());
    }
  }
  request.fallbacks = std::move(targets);
  return request;
}

}  // namespace dispatch::formats
