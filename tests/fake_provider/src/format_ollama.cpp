// Ollama: POST /api/chat (NDJSON stream by default), errors {"error":"text"} in Go's wording.

#include "format_common.hpp"
#include "formats.hpp"

namespace dispatch::fake_provider {
namespace {

using detail::json;
using detail::member;
using detail::present;

// The JSON kind as Go's encoding/json names it in unmarshal errors.
std::string go_kind(const json& value) {
  if (value.is_boolean()) return "bool";
  if (value.is_number()) return "number";
  if (value.is_string()) return "string";
  if (value.is_array()) return "array";
  if (value.is_object()) return "object";
  return "null";
}

FakeError unmarshal(const json& value, std::string_view field, std::string_view go_type) {
  return invalid_request("json: cannot unmarshal " + go_kind(value) + " into Go struct field " +
                         std::string(field) + " of type " + std::string(go_type));
}

struct Validation {
  ChatRequest request;
  std::optional<FakeError> error;

  bool fail(FakeError e) {
    if (!error) error = std::move(e);
    return false;
  }

  bool message(const json& m) {
    if (!m.is_object()) return fail(unmarshal(m, "ChatRequest.messages", "api.Message"));
    const json* role = present(m, "role");
    if (role != nullptr && !role->is_string())
      return fail(unmarshal(*role, "Message.messages.role", "string"));
    const json* content = present(m, "content");
    if (content != nullptr && !content->is_string()) {
      return fail(unmarshal(*content, "Message.messages.content", "string"));
    }
    if (const json* images = present(m, "images"); images != nullptr) {
      if (!images->is_array()) {
        return fail(unmarshal(*images, "Message.messages.images", "[]api.ImageData"));
      }
      for (const auto& image : *images) {
        if (!image.is_string())
          return fail(unmarshal(image, "Message.messages.images", "api.ImageData"));
        size_t bad_at = 0;
        if (!detail::is_base64(image.get<std::string>(), &bad_at)) {
          return fail(
              invalid_request("illegal base64 data at input byte " + std::to_string(bad_at)));
        }
        ++request.image_count;
      }
    }
    if (const json* calls = present(m, "tool_calls"); calls != nullptr) {
      if (!calls->is_array())
        return fail(unmarshal(*calls, "Message.messages.tool_calls", "[]api.ToolCall"));
      for (const auto& call : *calls) {
        if (!call.is_object())
          return fail(unmarshal(call, "Message.messages.tool_calls", "api.ToolCall"));
        const json* function = present(call, "function");
        if (function == nullptr) continue;
        if (!function->is_object()) {
          return fail(unmarshal(*function, "ToolCall.messages.tool_calls.function",
                                "api.ToolCallFunction"));
        }
        if (const json* name = present(*function, "name"); name != nullptr && !name->is_string()) {
          return fail(
              unmarshal(*name, "ToolCallFunction.messages.tool_calls.function.name", "string"));
        }
        if (const json* arguments = present(*function, "arguments");
            arguments != nullptr && !arguments->is_object()) {
          return fail(unmarshal(*arguments,
                                "ToolCallFunction.messages.tool_calls.function.arguments",
                                "api.ToolCallFunctionArguments"));
        }
      }
    }
    const std::string r = role != nullptr ? role->get<std::string>() : "";
    const std::string text = content != nullptr ? content->get<std::string>() : "";
    request.prompt_tokens += count_words(text);
    request.last_is_tool_result = r == "tool";
    if (r == "tool") request.tool_result_text = text;
    if (r == "user") request.last_user_text = text;
    return true;
  }

  bool tools(const json& body) {
    const json* list = present(body, "tools");
    if (list == nullptr) return true;
    if (!list->is_array()) return fail(unmarshal(*list, "ChatRequest.tools", "api.Tools"));
    for (const auto& tool : *list) {
      if (!tool.is_object()) return fail(unmarshal(tool, "ChatRequest.tools", "api.Tool"));
      const json* function = present(tool, "function");
      if (function == nullptr) continue;
      if (!function->is_object())
        return fail(unmarshal(*function, "Tool.tools.function", "api.ToolFunction"));
      const json* name = present(*function, "name");
      if (name != nullptr && !name->is_string()) {
        return fail(unmarshal(*name, "ToolFunction.tools.function.name", "string"));
      }
      const json* parameters = present(*function, "parameters");
      if (parameters != nullptr && !parameters->is_object()) {
        return fail(unmarshal(*parameters, "ToolFunction.tools.function.parameters",
                              "api.ToolFunctionParameters"));
      }
      request.tools.push_back(ToolSpec{name != nullptr ? name->get<std::string>() : "",
                                       parameters != nullptr ? *parameters : json()});
    }
    return true;
  }

  bool options(const json& body) {
    const json* opts = present(body, "options");
    if (opts == nullptr) return true;
    if (!opts->is_object())
      return fail(unmarshal(*opts, "ChatRequest.options", "map[string]interface {}"));
    if (const json* n = present(*opts, "num_predict"); n != nullptr) {
      const auto value = detail::as_integer(*n);
      if (!value) {
        return fail(invalid_request("option \"num_predict\" must be of type integer"));
      }
      // -1 (and any negative) means no limit; 0 generates nothing.
      if (*value >= 0) request.max_tokens = *value;
    }
    if (const json* stop = present(*opts, "stop"); stop != nullptr) {
      if (stop->is_string()) {
        request.stop.push_back(stop->get<std::string>());
      } else if (stop->is_array()) {
        for (const auto& s : *stop) {
          if (!s.is_string())
            return fail(invalid_request("option \"stop\" must be of type array of strings"));
          request.stop.push_back(s.get<std::string>());
        }
      } else {
        return fail(invalid_request("option \"stop\" must be of type array"));
      }
    }
    if (const json* t = present(*opts, "temperature"); t != nullptr && !t->is_number()) {
      return fail(invalid_request("option \"temperature\" must be of type float"));
    }
    return true;
  }

  bool run(const json& body) {
    if (body.is_discarded())
      return fail(invalid_request("invalid character looking for beginning of value"));
    if (!body.is_object()) return fail(unmarshal(body, "", "api.ChatRequest"));
    const json* model = present(body, "model");
    if (model != nullptr && !model->is_string())
      return fail(unmarshal(*model, "ChatRequest.model", "string"));
    if (model == nullptr || model->get<std::string>().empty())
      return fail(invalid_request("model is required"));
    request.model = model->get<std::string>();
    const json* stream = present(body, "stream");
    if (stream != nullptr && !stream->is_boolean())
      return fail(unmarshal(*stream, "ChatRequest.stream", "bool"));
    request.stream = stream == nullptr || stream->get<bool>();
    if (const json* think = present(body, "think"); think != nullptr) {
      if (think->is_boolean()) {
        request.thinking = think->get<bool>();
      } else if (think->is_string() &&
                 (*think == "high" || *think == "medium" || *think == "low")) {
        request.thinking = true;
      } else {
        return fail(invalid_request("invalid think value: " + think->dump() +
                                    " (must be \"high\", \"medium\", \"low\", true, or false)"));
      }
    }
    const json* messages = present(body, "messages");
    if (messages != nullptr && !messages->is_array()) {
      return fail(unmarshal(*messages, "ChatRequest.messages", "[]api.Message"));
    }
    if (messages == nullptr || messages->empty()) {
      request.load_only = true;  // Ollama loads the model and answers done_reason "load"
    } else {
      for (const auto& m : *messages) {
        if (!message(m)) return false;
      }
    }
    return tools(body) && options(body);
  }
};

std::string_view done_reason(Finish finish) {
  switch (finish) {
    case Finish::length:
      return "length";
    case Finish::load:
      return "load";
    default:
      return "stop";
  }
}

class OllamaFormat final : public WireFormat {
 public:
  Format format() const override { return Format::ollama; }

  bool wants_stream(const json& body, const Headers&) const override {
    const json* stream = present(body, "stream");
    return stream == nullptr || !stream->is_boolean() || stream->get<bool>();
  }

  std::optional<FakeError> check_auth(const Headers& headers,
                                      std::string_view required_key) const override {
    // A local Ollama has no auth. With --require-key a Bearer token, when sent, must match (as
    // ollama.com checks it).
    const auto key = detail::bearer_token(headers);
    if (!required_key.empty() && key && *key != required_key) {
      return FakeError{401, ErrorKind::authentication, "unauthorized", {}};
    }
    return std::nullopt;
  }

  std::variant<ChatRequest, FakeError> parse(const json& body, const Headers&) const override {
    Validation v;
    if (!v.run(body)) return *v.error;
    return std::move(v.request);
  }

  HttpReply error_reply(const FakeError& error, const ResponseContext& context) const override {
    HttpReply reply;
    reply.status = error.status;
    reply.content_type = "application/json; charset=utf-8";
    reply.body = error_json(error, context).dump();
    return reply;
  }

  HttpReply reply(const ChatRequest&, const ReplyPlan& plan,
                  const ResponseContext& context) const override {
    json message = assistant(plan.tool_call ? "" : plan.text());
    if (!plan.thinking_chunks.empty()) message["thinking"] = plan.thinking();
    if (plan.tool_call) message["tool_calls"] = tool_calls(plan, context);
    HttpReply reply;
    reply.content_type = "application/json; charset=utf-8";
    reply.body = final_line(plan, context, std::move(message)).dump();
    return reply;
  }

  std::string stream_content_type() const override { return "application/x-ndjson"; }

  std::vector<StreamEvent> stream(const ChatRequest&, const ReplyPlan& plan,
                                  const ResponseContext& context) const override {
    using Kind = StreamEvent::Kind;
    std::vector<StreamEvent> events;
    // Rendered at send time so created_at and the durations are real.
    const auto line = [&](Kind kind, json message) {
      return StreamEvent{
          kind, {}, [context, message = std::move(message)] {
            json l{{"model", context.model},
                   {"created_at", detail::rfc3339_nanos(context.unix_ns + context.elapsed_ns())},
                   {"message", message},
                   {"done", false}};
            return l.dump() + "\n";
          }};
    };
    for (const auto& thought : plan.thinking_chunks) {
      json m = assistant("");
      m["thinking"] = thought;
      events.push_back(line(Kind::content, std::move(m)));
    }
    for (const auto& text : plan.text_chunks)
      events.push_back(line(Kind::content, assistant(text)));
    if (plan.tool_call) {
      json m = assistant("");
      m["tool_calls"] = tool_calls(plan, context);
      events.push_back(line(Kind::content, std::move(m)));
    }
    events.push_back(StreamEvent{Kind::terminator, {}, [plan, context] {
                                   return final_line(plan, context, assistant("")).dump() + "\n";
                                 }});
    return events;
  }

  std::string malformed_event(const ResponseContext& context, size_t) const override {
    return "{\"model\":" + json(context.model).dump() + ",\"message\":{\"role\":\"assis\n";
  }

  std::string error_event(const FakeError& error, const ResponseContext& context,
                          size_t) const override {
    return error_json(error, context).dump() + "\n";
  }

  FakeError mid_stream_error() const override {
    return FakeError{500,
                     ErrorKind::internal,
                     "an error was encountered while running the model: unexpected EOF",
                     {}};
  }

  HeaderList common_headers(const ResponseContext&) const override { return {}; }

  std::string request_id(uint64_t instance, uint64_t seq) const override {
    return detail::uuid_like(instance, seq);
  }

 private:
  static json assistant(std::string content) {
    return json{{"role", "assistant"}, {"content", std::move(content)}};
  }

  static json tool_calls(const ReplyPlan& plan, const ResponseContext& context) {
    return json::array({json{{"id", "call_" + std::to_string(context.seq)},
                             {"function",
                              {{"index", 0},
                               {"name", plan.tool_call->name},
                               {"arguments", plan.tool_call->arguments}}}}});
  }

  static json final_line(const ReplyPlan& plan, const ResponseContext& context, json message) {
    const int64_t elapsed = std::max<int64_t>(1000, context.elapsed_ns());
    json line{{"model", context.model},
              {"created_at", detail::rfc3339_nanos(context.unix_ns + context.elapsed_ns())},
              {"message", std::move(message)},
              {"done_reason", done_reason(plan.finish)},
              {"done", true}};
    if (plan.finish == Finish::load) return line;
    // The split of the measured time is nominal; the total is real.
    line["total_duration"] = elapsed;
    line["load_duration"] = elapsed / 20;
    line["prompt_eval_count"] = plan.prompt_tokens;
    line["prompt_eval_duration"] = elapsed / 20;
    line["eval_count"] = plan.completion_tokens;
    line["eval_duration"] = elapsed - 2 * (elapsed / 20);
    return line;
  }

  static json error_json(const FakeError& error, const ResponseContext& context) {
    if (!error.message.empty()) return json{{"error", error.message}};
    std::string text;
    switch (error.kind) {
      case ErrorKind::invalid_request:
        text = "invalid request";
        break;
      case ErrorKind::authentication:
        text = "unauthorized";
        break;
      case ErrorKind::permission:
        text = "forbidden";
        break;
      case ErrorKind::not_found:
        text = "model '" + context.model + "' not found";
        break;
      case ErrorKind::request_timeout:
        text = "request timed out";
        break;
      case ErrorKind::conflict:
        text = "conflict";
        break;
      case ErrorKind::request_too_large:
        text = "request entity too large";
        break;
      case ErrorKind::unprocessable:
        text = "unprocessable entity";
        break;
      case ErrorKind::rate_limited:
      case ErrorKind::rate_limited_tokens:
        text = "too many requests, please retry later";
        break;
      case ErrorKind::internal:
        text = "an error was encountered while running the model";
        break;
      case ErrorKind::bad_gateway:
        text = "bad gateway";
        break;
      case ErrorKind::unavailable:
        text = "server busy, please try again.  maximum pending requests exceeded";
        break;
      case ErrorKind::overloaded:
        text = "server overloaded, please try again later";
        break;
      case ErrorKind::context_length:
        text = "the input length exceeds the context length (num_ctx 4096)";
        break;
      case ErrorKind::content_filter:
        text = "content blocked by safety filter";
        break;
    }
    return json{{"error", text}};
  }
};

}  // namespace

const WireFormat& ollama_format() {
  static const OllamaFormat format;
  return format;
}

}  // namespace dispatch::fake_provider
