// DashScope native text generation: POST /api/v1/services/aigc/text-generation/generation.
// SSE without spaces after colons (`id:1`, `event:result`, `:HTTP_STATUS/200`, `data:{..}`),
// finish_reason "null" until the last event, cumulative usage, flat error bodies.

#include <set>

#include "format_common.hpp"
#include "formats.hpp"

namespace dispatch::fake_provider {
namespace {

using detail::json;
using detail::member;
using detail::present;

FakeError bad(std::string message) {
  return invalid_request(std::move(message));
}

struct Validation {
  ChatRequest request;
  std::optional<FakeError> error;

  bool fail(FakeError e) {
    if (!error) error = std::move(e);
    return false;
  }

  bool content(const json& value, const std::string& path, std::string& text) {
    if (value.is_string()) {
      text = value.get<std::string>();
      return true;
    }
    if (!value.is_array()) return fail(bad(path + " must be a string or a list"));
    for (const auto& item : value) {
      if (!item.is_object()) return fail(bad(path + " items must be objects"));
      if (const json* t = member(item, "text"); t != nullptr) {
        if (!t->is_string()) return fail(bad(path + ".text must be a string"));
        if (!text.empty()) text += ' ';
        text += t->get<std::string>();
      } else if (const json* image = member(item, "image"); image != nullptr) {
        if (!image->is_string() || image->get<std::string>().empty()) {
          return fail(bad(path + ".image must be a non-empty string"));
        }
        ++request.image_count;
      } else {
        return fail(bad(path + " items must carry text or image"));
      }
    }
    return true;
  }

  bool tool_calls(const json& calls, const std::string& path) {
    if (!calls.is_array()) return fail(bad(path + " must be a list"));
    for (const auto& call : calls) {
      const json* function = call.is_object() ? member(call, "function") : nullptr;
      if (function == nullptr || !function->is_object())
        return fail(bad(path + ".function is required"));
      const json* name = member(*function, "name");
      if (name == nullptr || !name->is_string())
        return fail(bad(path + ".function.name must be a string"));
      const json* arguments = member(*function, "arguments");
      if (arguments == nullptr || !arguments->is_string()) {
        return fail(bad(path + ".function.arguments must be a string"));
      }
    }
    return true;
  }

  bool messages(const json& input) {
    const json* list = present(input, "messages");
    const json* prompt = present(input, "prompt");
    if (list == nullptr && prompt == nullptr) {
      return fail(bad("Either \"prompt\" or \"messages\" must exist and cannot both be none"));
    }
    if (prompt != nullptr && list == nullptr) {
      if (!prompt->is_string()) return fail(bad("input.prompt must be a string"));
      request.last_user_text = prompt->get<std::string>();
      request.prompt_tokens = count_words(request.last_user_text);
      return true;
    }
    if (!list->is_array() || list->empty())
      return fail(bad("input.messages must be a non-empty list"));
    static const std::set<std::string, std::less<>> roles{"system", "user", "assistant", "tool"};
    for (size_t i = 0; i < list->size(); ++i) {
      const json& m = (*list)[i];
      const std::string path = "input.messages[" + std::to_string(i) + "]";
      if (!m.is_object()) return fail(bad(path + " must be an object"));
      const json* role = member(m, "role");
      if (role == nullptr || !role->is_string() || !roles.count(role->get<std::string>())) {
        return fail(bad("Role must be in [user, assistant, system, tool]"));
      }
      const std::string r = role->get<std::string>();
      std::string text;
      const json* c = present(m, "content");
      const json* calls = present(m, "tool_calls");
      if (c == nullptr && !(r == "assistant" && calls != nullptr)) {
        return fail(bad(path + ".content is required"));
      }
      if (c != nullptr && !content(*c, path + ".content", text)) return false;
      if (calls != nullptr) {
        if (r != "assistant") return fail(bad(path + ".tool_calls is only allowed for assistant"));
        if (!tool_calls(*calls, path + ".tool_calls")) return false;
      }
      request.prompt_tokens += count_words(text);
      request.last_is_tool_result = r == "tool";
      if (r == "tool") request.tool_result_text = text;
      if (r == "user") request.last_user_text = text;
    }
    return true;
  }

  bool tools(const json& parameters) {
    const json* list = present(parameters, "tools");
    if (list != nullptr) {
      if (!list->is_array()) return fail(bad("parameters.tools must be a list"));
      for (const auto& tool : *list) {
        const json* function = tool.is_object() ? member(tool, "function") : nullptr;
        const json* name = function != nullptr ? member(*function, "name") : nullptr;
        if (name == nullptr || !name->is_string()) {
          return fail(bad("parameters.tools[].function.name is required"));
        }
        const json* schema = present(*function, "parameters");
        request.tools.push_back(ToolSpec{name->get<std::string>(), schema ? *schema : json()});
      }
    }
    const json* choice = present(parameters, "tool_choice");
    if (choice == nullptr) return true;
    if (*choice == "none") {
      request.tool_choice = ToolChoice::none;
    } else if (choice->is_object()) {
      const json* function = member(*choice, "function");
      const json* name = function != nullptr ? member(*function, "name") : nullptr;
      if (name == nullptr || !name->is_string())
        return fail(bad("tool_choice.function.name is required"));
      request.tool_choice = ToolChoice::required;
      request.forced_tool = name->get<std::string>();
    } else if (*choice != "auto") {
      return fail(bad("tool_choice must be \"auto\", \"none\" or an object naming a function"));
    }
    return true;
  }

  bool parameters(const json& body) {
    const json* p = present(body, "parameters");
    if (p == nullptr) return true;
    if (!p->is_object()) return fail(bad("parameters must be an object"));
    if (const json* format = present(*p, "result_format"); format != nullptr) {
      if (*format != "text" && *format != "message") {
        return fail(bad("result_format must be 'text' or 'message'"));
      }
      request.text_result_format = *format == "text";
    }
    if (const json* incremental = present(*p, "incremental_output"); incremental != nullptr) {
      if (!incremental->is_boolean()) return fail(bad("incremental_output must be a boolean"));
      request.incremental_output = incremental->get<bool>();
    }
    if (const json* max = present(*p, "max_tokens"); max != nullptr) {
      if (!max->is_number_integer() || max->get<int64_t>() < 1) {
        return fail(bad("Range of max_tokens should be [1, 8192]"));
      }
      request.max_tokens = max->get<int64_t>();
    }
    if (const json* stop = present(*p, "stop"); stop != nullptr) {
      if (stop->is_string()) {
        request.stop.push_back(stop->get<std::string>());
      } else if (stop->is_array()) {
        for (const auto& s : *stop) {
          if (!s.is_string()) return fail(bad("stop must be a string or a list of strings"));
          request.stop.push_back(s.get<std::string>());
        }
      } else {
        return fail(bad("stop must be a string or a list of strings"));
      }
    }
    if (const json* t = present(*p, "temperature"); t != nullptr) {
      if (!t->is_number() || t->get<double>() < 0 || t->get<double>() >= 2) {
        return fail(bad("Range of temperature should be [0.0, 2.0)"));
      }
    }
    if (const json* t = present(*p, "top_p"); t != nullptr) {
      if (!t->is_number() || t->get<double>() <= 0 || t->get<double>() > 1) {
        return fail(bad("Range of top_p should be (0.0, 1.0]"));
      }
    }
    if (const json* thinking = present(*p, "enable_thinking"); thinking != nullptr) {
      if (!thinking->is_boolean()) return fail(bad("enable_thinking must be a boolean"));
      request.thinking = thinking->get<bool>();
      if (request.thinking && !request.stream) {
        return fail(bad("parameter.enable_thinking must be set to false for non-streaming calls"));
      }
    }
    return tools(*p);
  }

  bool run(const json& body, bool stream) {
    if (body.is_discarded()) return fail(bad("Request body is not valid JSON"));
    if (!body.is_object()) return fail(bad("Request body must be a JSON object"));
    const json* model = member(body, "model");
    if (model == nullptr || !model->is_string() || model->get<std::string>().empty()) {
      return fail(bad("Model must be provided"));
    }
    request.model = model->get<std::string>();
    request.stream = stream;
    const json* input = member(body, "input");
    if (input == nullptr || !input->is_object()) {
      return fail(bad("Either \"prompt\" or \"messages\" must exist and cannot both be none"));
    }
    if (!messages(*input) || !parameters(body)) return false;
    if (!request.tools.empty()) request.text_result_format = false;  // tool calls need messages
    return true;
  }
};

class DashScopeFormat final : public WireFormat {
 public:
  Format format() const override { return Format::dashscope; }

  bool wants_stream(const json&, const Headers& headers) const override {
    const auto sse = headers.get("x-dashscope-sse");
    if (sse && *sse == "enable") return true;
    const auto accept = headers.get("accept");
    return accept && accept->find("text/event-stream") != std::string_view::npos;
  }

  std::optional<FakeError> check_auth(const Headers& headers,
                                      std::string_view required_key) const override {
    const auto key = detail::bearer_token(headers);
    if (!key || key->empty()) {
      return FakeError{401, ErrorKind::authentication, "No API-key provided.", {}};
    }
    if (!required_key.empty() && *key != required_key) {
      return FakeError{401, ErrorKind::authentication, "Invalid API-key provided.", {}};
    }
    return std::nullopt;
  }

  std::variant<ChatRequest, FakeError> parse(const json& body,
                                             const Headers& headers) const override {
    Validation v;
    if (!v.run(body, wants_stream(body, headers))) return *v.error;
    return std::move(v.request);
  }

  HttpReply error_reply(const FakeError& error, const ResponseContext& context) const override {
    HttpReply reply;
    reply.status = error.status;
    reply.body = error_json(error, context).dump();
    return reply;
  }

  HttpReply reply(const ChatRequest& request, const ReplyPlan& plan,
                  const ResponseContext& context) const override {
    HttpReply reply;
    reply.body = event_json(request, plan, context, Snapshot::whole(plan), true).dump();
    return reply;
  }

  std::string stream_content_type() const override { return "text/event-stream;charset=UTF-8"; }

  std::vector<StreamEvent> stream(const ChatRequest& request, const ReplyPlan& plan,
                                  const ResponseContext& context) const override {
    using Kind = StreamEvent::Kind;
    std::vector<StreamEvent> events;
    const bool incremental = request.incremental_output;
    Snapshot so_far;  // what has been produced up to the current event
    const auto emit = [&](Kind kind, const Snapshot& delta, bool last) {
      const Snapshot& shown = incremental ? delta : so_far;
      const json data = event_json(request, plan, context, shown, last, so_far.output_tokens);
      events.push_back({kind, result_event(events.size() + 1, data.dump()), {}});
    };
    if (!request.text_result_format) {
      for (const auto& thought : plan.thinking_chunks) {
        so_far.thinking += thought;
        emit(Kind::content, Snapshot{{}, thought, false, {}, 0}, false);
      }
    }
    for (const auto& text : plan.text_chunks) {
      so_far.text += text;
      ++so_far.output_tokens;
      emit(Kind::content, Snapshot{text, {}, false, {}, 0}, false);
    }
    if (plan.tool_call) {
      so_far.tool_started = true;
      emit(Kind::content, Snapshot{{}, {}, true, {}, 0}, false);
      for (const auto& fragment : plan.tool_call->fragments) {
        so_far.arguments += fragment;
        ++so_far.output_tokens;
        Snapshot delta{{}, {}, false, fragment, 0};
        emit(Kind::content, delta, false);
      }
    }
    emit(Kind::terminator, Snapshot{}, true);
    return events;
  }

  std::string malformed_event(const ResponseContext&, size_t event_number) const override {
    return "id:" + std::to_string(event_number) +
           "\nevent:result\n:HTTP_STATUS/200\ndata:{\"output\":{\"choices\":[{\"message\":\n\n";
  }

  std::string error_event(const FakeError& error, const ResponseContext& context,
                          size_t event_number) const override {
    return "id:" + std::to_string(event_number) + "\nevent:error\n:HTTP_STATUS/" +
           std::to_string(error.status) + "\ndata:" + error_json(error, context).dump() + "\n\n";
  }

  FakeError mid_stream_error() const override {
    return FakeError{500,
                     ErrorKind::internal,
                     "An internal error has occured, please try again later or contact service "
                     "support.",
                     {}};
  }

  HeaderList common_headers(const ResponseContext& context) const override {
    return {{"x-request-id", context.request_id}};
  }

  std::string request_id(uint64_t instance, uint64_t seq) const override {
    return detail::uuid_like(instance, seq);
  }

 private:
  // Text, reasoning and tool-call arguments carried by one event (a delta or everything so far).
  struct Snapshot {
    std::string text;
    std::string thinking;
    bool tool_started = false;  // the event carries the tool call's id and name
    std::string arguments;
    int64_t output_tokens = 0;

    static Snapshot whole(const ReplyPlan& plan) {
      return Snapshot{plan.text(), plan.thinking(), plan.tool_call.has_value(),
                      plan.tool_call ? plan.tool_call->arguments_json : "", plan.completion_tokens};
    }
  };

  static std::string result_event(size_t id, const std::string& data) {
    return "id:" + std::to_string(id) + "\nevent:result\n:HTTP_STATUS/200\ndata:" + data + "\n\n";
  }

  static std::string_view finish(const ReplyPlan& plan, bool last) {
    return last ? detail::openai_finish(plan.finish) : std::string_view("null");
  }

  // One response object; `output_tokens` is the cumulative count (the whole count when last).
  static json event_json(const ChatRequest& request, const ReplyPlan& plan,
                         const ResponseContext& context, const Snapshot& shown, bool last,
                         std::optional<int64_t> output_tokens = std::nullopt) {
    const int64_t output = last ? plan.completion_tokens : output_tokens.value_or(0);
    json output_json;
    if (request.text_result_format) {
      output_json = json{{"text", shown.text}, {"finish_reason", finish(plan, last)}};
    } else {
      json message{{"role", "assistant"}, {"content", shown.text}};
      if (!shown.thinking.empty()) message["reasoning_content"] = shown.thinking;
      if (plan.tool_call && (shown.tool_started || !shown.arguments.empty())) {
        json function{{"arguments", shown.arguments}};
        if (shown.tool_started) function["name"] = plan.tool_call->name;
        message["tool_calls"] = json::array(
            {json{{"index", 0},
                  {"id", shown.tool_started ? "call_" + std::to_string(context.seq) : ""},
                  {"type", "function"},
                  {"function", std::move(function)}}});
      }
      output_json = json{{"choices", json::array({json{{"finish_reason", finish(plan, last)},
                                                       {"message", std::move(message)}}})}};
    }
    return json{{"output", std::move(output_json)},
                {"usage",
                 {{"input_tokens", plan.prompt_tokens},
                  {"output_tokens", output},
                  {"total_tokens", plan.prompt_tokens + output}}},
                {"request_id", context.request_id}};
  }

  static json error_json(const FakeError& error, const ResponseContext& context) {
    std::string_view code;
    std::string message;
    switch (error.kind) {
      case ErrorKind::invalid_request:
        code = "InvalidParameter";
        message = "Invalid parameter.";
        break;
      case ErrorKind::authentication:
        code = "InvalidApiKey";
        message = "Invalid API-key provided.";
        break;
      case ErrorKind::permission:
        code = "AccessDenied";
        message = "Access denied.";
        break;
      case ErrorKind::not_found:
        code = "ModelNotFound";
        message = "Model not exist.";
        break;
      case ErrorKind::request_timeout:
        code = "RequestTimeOut";
        message = "Request timed out, please try again later.";
        break;
      case ErrorKind::conflict:
        code = "Conflict";
        message = "Conflict.";
        break;
      case ErrorKind::request_too_large:
        code = "RequestTooLarge";
        message = "Request body too large.";
        break;
      case ErrorKind::unprocessable:
        code = "InvalidParameter";
        message = "Unprocessable request.";
        break;
      case ErrorKind::rate_limited:
        code = "Throttling.RateQuota";
        message = "Requests rate limit exceeded, please try again later.";
        break;
      case ErrorKind::rate_limited_tokens:
        code = "Throttling.AllocationQuota";
        message = "Allocated quota exceeded, please increase your quota limit.";
        break;
      case ErrorKind::internal:
        code = "InternalError";
        message =
            "An internal error has occured, please try again later or contact service support.";
        break;
      case ErrorKind::bad_gateway:
        code = "BadGateway";
        message = "Bad gateway.";
        break;
      case ErrorKind::unavailable:
        code = "ServiceUnavailable";
        message = "Service unavailable, please try again later.";
        break;
      case ErrorKind::overloaded:
        code = "Overloaded";
        message = "Model is overloaded, please try again later.";
        break;
      case ErrorKind::context_length:
        code = "InvalidParameter";
        message = "Range of input length should be [1, 129024]";
        break;
      case ErrorKind::content_filter:
        code = "DataInspectionFailed";
        message = "Input data may contain inappropriate content.";
        break;
    }
    return json{{"code", code},
                {"message", error.message.empty() ? message : error.message},
                {"request_id", context.request_id}};
  }
};

}  // namespace

const WireFormat& dashscope_format() {
  static const DashScopeFormat format;
  return format;
}

}  // namespace dispatch::fake_provider
