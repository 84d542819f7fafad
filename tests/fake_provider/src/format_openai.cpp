// OpenAI Chat Completions, and DashScope's OpenAI-compatible mode (same schema; extras:
// enable_thinking -> reasoning_content, request_id in bodies, usage null on non-final chunks,
// DashScope error codes in the OpenAI error shape).

#include <algorithm>
#include <set>

#include "format_common.hpp"
#include "formats.hpp"

namespace dispatch::fake_provider {
namespace {

using detail::json;
using detail::json_type;
using detail::member;
using detail::present;

// Real OpenAI rejects request fields it does not know ("Unrecognized request argument").
const std::set<std::string, std::less<>>& openai_known_fields() {
  static const std::set<std::string, std::less<>> fields{"model",
                                                         "messages",
                                                         "audio",
                                                         "frequency_penalty",
                                                         "function_call",
                                                         "functions",
                                                         "logit_bias",
                                                         "logprobs",
                                                         "max_completion_tokens",
                                                         "max_tokens",
                                                         "metadata",
                                                         "modalities",
                                                         "n",
                                                         "parallel_tool_calls",
                                                         "prediction",
                                                         "presence_penalty",
                                                         "prompt_cache_key",
                                                         "reasoning_effort",
                                                         "response_format",
                                                         "safety_identifier",
                                                         "seed",
                                                         "service_tier",
                                                         "stop",
                                                         "store",
                                                         "stream",
                                                         "stream_options",
                                                         "temperature",
                                                         "tool_choice",
                                                         "tools",
                                                         "top_logprobs",
                                                         "top_p",
                                                         "user",
                                                         "verbosity",
                                                         "web_search_options"};
  return fields;
}

std::string a_type(const json& value) {
  const std::string_view type = json_type(value);
  const bool vowel = type == "integer" || type == "array" || type == "object";
  return std::string(vowel ? "an " : "a ") + std::string(type);
}

FakeError type_error(const std::string& param, std::string_view expected, const json& got) {
  return invalid_request("Invalid type for '" + param + "': expected " + std::string(expected) +
                             ", but got " + a_type(got) + " instead.",
                         param);
}

FakeError missing(const std::string& param) {
  return invalid_request("Missing required parameter: '" + param + "'.", param);
}

struct Validation {
  bool dashscope = false;
  ChatRequest request;
  std::optional<FakeError> error;

  bool fail(FakeError e) {
    if (!error) error = std::move(e);
    return false;
  }

  // Appends the text of a content value (string or text parts); validates parts.
  bool content_text(const json& content, const std::string& param, bool images_allowed,
                    std::string& text) {
    if (content.is_string()) {
      text = content.get<std::string>();
      return true;
    }
    if (!content.is_array()) return fail(type_error(param, "one of an array or a string", content));
    for (size_t p = 0; p < content.size(); ++p) {
      const json& part = content[p];
      const std::string part_param = param + "[" + std::to_string(p) + "]";
      if (!part.is_object()) return fail(type_error(part_param, "an object", part));
      const json* type = member(part, "type");
      if (type == nullptr) return fail(missing(part_param + ".type"));
      if (*type == "text") {
        const json* t = member(part, "text");
        if (t == nullptr) return fail(missing(part_param + ".text"));
        if (!t->is_string()) return fail(type_error(part_param + ".text", "a string", *t));
        if (!text.empty()) text += ' ';
        text += t->get<std::string>();
      } else if (*type == "image_url" && images_allowed) {
        const json* image = member(part, "image_url");
        if (image == nullptr) return fail(missing(part_param + ".image_url"));
        if (!image->is_object()) {
          return fail(type_error(part_param + ".image_url", "an object", *image));
        }
        const json* url = member(*image, "url");
        if (url == nullptr) return fail(missing(part_param + ".image_url.url"));
        if (!url->is_string()) {
          return fail(type_error(part_param + ".image_url.url", "a string", *url));
        }
        const std::string u = url->get<std::string>();
        const bool http = u.rfind("http://", 0) == 0 || u.rfind("https://", 0) == 0;
        if (!http && !detail::is_image_data_url(u)) {
          return fail(invalid_request(
              "Invalid 'image_url.url': expected an URL (http:// or https://) or a base64 data "
              "URL (data:image/<type>;base64,<data>).",
              part_param + ".image_url.url"));
        }
        if (const json* detail = member(*image, "detail");
            detail != nullptr && *detail != "auto" && *detail != "low" && *detail != "high") {
          return fail(
              invalid_request("Invalid value for 'detail': expected one of 'auto', 'low' "
                              "or 'high'.",
                              part_param + ".image_url.detail"));
        }
        ++request.image_count;
      } else if ((*type == "input_audio" || *type == "file") && images_allowed) {
        // Accepted; carries no text.
      } else if (*type == "refusal" && !images_allowed) {
        // Assistant refusal parts carry no prompt text.
      } else {
        return fail(invalid_request(
            "Invalid value: '" + (type->is_string() ? type->get<std::string>() : type->dump()) +
                "'. Supported values are: 'text'" + (images_allowed ? ", 'image_url'" : "") + ".",
            part_param + ".type"));
      }
    }
    return true;
  }

  bool tool_calls(const json& calls, const std::string& param, std::vector<std::string>& ids) {
    if (!calls.is_array()) return fail(type_error(param, "an array", calls));
    for (size_t c = 0; c < calls.size(); ++c) {
      const json& call = calls[c];
      const std::string cp = param + "[" + std::to_string(c) + "]";
      if (!call.is_object()) return fail(type_error(cp, "an object", call));
      const json* id = member(call, "id");
      if (id == nullptr) return fail(missing(cp + ".id"));
      if (!id->is_string()) return fail(type_error(cp + ".id", "a string", *id));
      const json* type = member(call, "type");
      if (type == nullptr) return fail(missing(cp + ".type"));
      if (*type != "function") {
        return fail(invalid_request(
            "Invalid value: '" + type->dump() + "'. Supported values are: 'function'.",
            cp + ".type"));
      }
      const json* function = member(call, "function");
      if (function == nullptr) return fail(missing(cp + ".function"));
      if (!function->is_object()) return fail(type_error(cp + ".function", "an object", *function));
      const json* name = member(*function, "name");
      if (name == nullptr) return fail(missing(cp + ".function.name"));
      if (!name->is_string()) return fail(type_error(cp + ".function.name", "a string", *name));
      const json* arguments = member(*function, "arguments");
      if (arguments == nullptr) return fail(missing(cp + ".function.arguments"));
      if (!arguments->is_string()) {
        return fail(type_error(cp + ".function.arguments", "a string", *arguments));
      }
      ids.push_back(id->get<std::string>());
    }
    return true;
  }

  bool messages(const json& body) {
    const json* list = member(body, "messages");
    if (list == nullptr) return fail(missing("messages"));
    if (!list->is_array()) return fail(type_error("messages", "an array of objects", *list));
    if (list->empty()) {
      return fail(
          invalid_request("Invalid 'messages': empty array. Expected an array with "
                          "minimum length 1, but got an empty array instead.",
                          "messages"));
    }
    std::vector<std::string> unanswered;  // tool_call ids awaiting a tool message
    bool tool_turn = false;               // right after an assistant message with tool_calls
    for (size_t i = 0; i < list->size(); ++i) {
      const json& message = (*list)[i];
      const std::string mp = "messages[" + std::to_string(i) + "]";
      if (!message.is_object()) return fail(type_error(mp, "an object", message));
      const json* role_value = member(message, "role");
      if (role_value == nullptr) return fail(missing(mp + ".role"));
      const std::string role = role_value->is_string() ? role_value->get<std::string>() : "";
      static const std::set<std::string, std::less<>> roles{"system",    "developer", "user",
                                                            "assistant", "tool",      "function"};
      if (!roles.count(role)) {
        return fail(invalid_request("Invalid value: '" +
                                        (role.empty() ? role_value->dump() : role) +
                                        "'. Supported values are: 'system', 'assistant', "
                                        "'user', 'function', 'tool', and 'developer'.",
                                    mp + ".role"));
      }
      if (role != "tool" && tool_turn && !unanswered.empty()) {
        return fail(unanswered_error(unanswered));
      }
      if (role != "tool") tool_turn = false;

      std::string text;
      const json* content = member(message, "content");
      if (role == "assistant") {
        const json* calls = present(message, "tool_calls");
        if ((content == nullptr || content->is_null()) && calls == nullptr &&
            present(message, "function_call") == nullptr) {
          return fail(missing(mp + ".content"));
        }
        if (content != nullptr && !content->is_null() &&
            !content_text(*content, mp + ".content", false, text)) {
          return false;
        }
        if (calls != nullptr) {
          std::vector<std::string> ids;
          if (!tool_calls(*calls, mp + ".tool_calls", ids)) return false;
          unanswered = ids;
          tool_turn = !ids.empty();
        }
      } else if (role == "tool") {
        if (content == nullptr) return fail(missing(mp + ".content"));
        if (!content_text(*content, mp + ".content", false, text)) return false;
        const json* call_id = member(message, "tool_call_id");
        if (call_id == nullptr) return fail(missing(mp + ".tool_call_id"));
        if (!call_id->is_string())
          return fail(type_error(mp + ".tool_call_id", "a string", *call_id));
        if (!tool_turn) {
          return fail(
              invalid_request("Invalid parameter: messages with role 'tool' must be a "
                              "response to a preceeding message with 'tool_calls'.",
                              "messages.[" + std::to_string(i) + "].role"));
        }
        const auto it =
            std::find(unanswered.begin(), unanswered.end(), call_id->get<std::string>());
        if (it == unanswered.end()) {
          return fail(invalid_request("Invalid parameter: 'tool_call_id' of '" +
                                          call_id->get<std::string>() +
                                          "' not found in 'tool_calls' of previous message.",
                                      "messages.[" + std::to_string(i) + "].tool_call_id"));
        }
        unanswered.erase(it);
      } else {
        if (content == nullptr) return fail(missing(mp + ".content"));
        if (!content_text(*content, mp + ".content", role == "user", text)) return false;
      }
      if (role == "function" && member(message, "name") == nullptr) {
        return fail(missing(mp + ".name"));
      }
      request.prompt_tokens += count_words(text);
      request.last_is_tool_result = role == "tool" || role == "function";
      if (request.last_is_tool_result) request.tool_result_text = text;
      if (role == "user") request.last_user_text = text;
    }
    if (!unanswered.empty()) return fail(unanswered_error(unanswered));
    return true;
  }

  static FakeError unanswered_error(const std::vector<std::string>& ids) {
    std::string list;
    for (const auto& id : ids) list += (list.empty() ? "" : ", ") + id;
    return invalid_request(
        "An assistant message with 'tool_calls' must be followed by tool "
        "messages responding to each 'tool_call_id'. The following "
        "tool_call_ids did not have response messages: " +
            list,
        "messages");
  }

  bool tools(const json& body) {
    const json* list = present(body, "tools");
    if (list != nullptr) {
      if (!list->is_array()) return fail(type_error("tools", "an array", *list));
      if (list->empty()) {
        return fail(
            invalid_request("Invalid 'tools': empty array. Expected an array with "
                            "minimum length 1, but got an empty array instead.",
                            "tools"));
      }
      for (size_t t = 0; t < list->size(); ++t) {
        const json& tool = (*list)[t];
        const std::string tp = "tools[" + std::to_string(t) + "]";
        if (!tool.is_object()) return fail(type_error(tp, "an object", tool));
        const json* type = member(tool, "type");
        if (type == nullptr) return fail(missing(tp + ".type"));
        if (*type != "function") {
          return fail(invalid_request(
              "Invalid value: '" + type->dump() + "'. Supported values are: 'function'.",
              tp + ".type"));
        }
        const json* function = member(tool, "function");
        if (function == nullptr) return fail(missing(tp + ".function"));
        if (!function->is_object())
          return fail(type_error(tp + ".function", "an object", *function));
        const json* name = member(*function, "name");
        if (name == nullptr) return fail(missing(tp + ".function.name"));
        if (!name->is_string()) return fail(type_error(tp + ".function.name", "a string", *name));
        const std::string n = name->get<std::string>();
        const bool valid_name =
            !n.empty() && n.size() <= 64 && std::all_of(n.begin(), n.end(), [](char c) {
              return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     c == '_' || c == '-';
            });
        if (!valid_name) {
          return fail(invalid_request("Invalid '" + tp +
                                          ".function.name': string does not "
                                          "match pattern. Expected a string that matches the "
                                          "pattern '^[a-zA-Z0-9_-]{1,64}$'.",
                                      tp + ".function.name"));
        }
        const json* parameters = present(*function, "parameters");
        if (parameters != nullptr && !parameters->is_object()) {
          return fail(type_error(tp + ".function.parameters", "an object", *parameters));
        }
        request.tools.push_back(ToolSpec{n, parameters != nullptr ? *parameters : json()});
      }
    }
    const json* choice = present(body, "tool_choice");
    if (choice == nullptr) return true;
    if (request.tools.empty()) {
      return fail(
          invalid_request("Invalid value for 'tool_choice': 'tool_choice' is only "
                          "allowed when 'tools' are specified.",
                          "tool_choice"));
    }
    if (choice->is_string()) {
      const std::string c = choice->get<std::string>();
      if (c == "none") {
        request.tool_choice = ToolChoice::none;
      } else if (c == "required") {
        request.tool_choice = ToolChoice::required;
      } else if (c != "auto") {
        return fail(invalid_request(
            "Invalid value: '" + c + "'. Supported values are: 'none', 'auto', and 'required'.",
            "tool_choice"));
      }
      return true;
    }
    const json* function = choice->is_object() ? present(*choice, "function") : nullptr;
    const json* name = function != nullptr ? present(*function, "name") : nullptr;
    if (name == nullptr || !name->is_string() || member(*choice, "type") == nullptr ||
        (*choice)["type"] != "function") {
      return fail(
          invalid_request("Invalid 'tool_choice': expected 'none', 'auto', 'required' "
                          "or {\"type\": \"function\", \"function\": {\"name\": ...}}.",
                          "tool_choice"));
    }
    const std::string forced = name->get<std::string>();
    const bool known = std::any_of(request.tools.begin(), request.tools.end(),
                                   [&](const ToolSpec& t) { return t.name == forced; });
    if (!known) {
      return fail(invalid_request("Invalid value for 'tool_choice': tool '" + forced +
                                      "' is not one of the provided tools.",
                                  "tool_choice"));
    }
    request.tool_choice = ToolChoice::required;
    request.forced_tool = forced;
    return true;
  }

  bool number_in(const json& body, const std::string& name, double min, double max,
                 bool max_exclusive) {
    const json* value = present(body, name);
    if (value == nullptr) return true;
    if (!value->is_number()) return fail(type_error(name, "a number", *value));
    const double v = value->get<double>();
    if (v < min) {
      return fail(invalid_request("Invalid '" + name +
                                      "': decimal below minimum value. Expected "
                                      "a value >= " +
                                      json(min).dump() + ", but got " + value->dump() + " instead.",
                                  name));
    }
    if (v > max || (max_exclusive && v >= max)) {
      if (dashscope) {
        return fail(invalid_request("Range of " + name + " should be [" + json(min).dump() + ", " +
                                        json(max).dump() + (max_exclusive ? ")" : "]"),
                                    name));
      }
      return fail(invalid_request("Invalid '" + name +
                                      "': decimal above maximum value. Expected "
                                      "a value <= " +
                                      json(max).dump() + ", but got " + value->dump() + " instead.",
                                  name));
    }
    return true;
  }

  bool max_tokens(const json& body, const std::string& name) {
    const json* value = present(body, name);
    if (value == nullptr) return true;
    if (!value->is_number_integer()) return fail(type_error(name, "an integer", *value));
    const int64_t v = value->get<int64_t>();
    if (v < 1) {
      return fail(invalid_request("Invalid '" + name +
                                      "': integer below minimum value. Expected a "
                                      "value >= 1, but got " +
                                      std::to_string(v) + " instead.",
                                  name));
    }
    request.max_tokens = request.max_tokens ? std::min(*request.max_tokens, v) : v;
    return true;
  }

  bool stop(const json& body) {
    const json* value = present(body, "stop");
    if (value == nullptr) return true;
    if (value->is_string()) {
      request.stop.push_back(value->get<std::string>());
      return true;
    }
    if (!value->is_array()) return fail(type_error("stop", "one of a string or an array", *value));
    if (value->size() > 4) {
      return fail(
          invalid_request("Invalid 'stop': array too long. Expected an array with "
                          "maximum length 4, but got an array with length " +
                              std::to_string(value->size()) + " instead.",
                          "stop"));
    }
    for (size_t s = 0; s < value->size(); ++s) {
      if (!(*value)[s].is_string()) {
        return fail(type_error("stop[" + std::to_string(s) + "]", "a string", (*value)[s]));
      }
      request.stop.push_back((*value)[s].get<std::string>());
    }
    return true;
  }

  bool stream_flags(const json& body) {
    const json* stream = present(body, "stream");
    if (stream != nullptr && !stream->is_boolean())
      return fail(type_error("stream", "a boolean", *stream));
    request.stream = stream != nullptr && stream->get<bool>();
    const json* options = present(body, "stream_options");
    if (options != nullptr) {
      if (!request.stream) {
        return fail(
            invalid_request("The 'stream_options' parameter is only allowed when "
                            "'stream' is enabled.",
                            "stream_options"));
      }
      if (!options->is_object()) return fail(type_error("stream_options", "an object", *options));
      const json* usage = present(*options, "include_usage");
      if (usage != nullptr && !usage->is_boolean()) {
        return fail(type_error("stream_options.include_usage", "a boolean", *usage));
      }
      request.include_usage = usage != nullptr && usage->get<bool>();
    }
    if (dashscope) {
      const json* thinking = present(body, "enable_thinking");
      if (thinking != nullptr && !thinking->is_boolean()) {
        return fail(type_error("enable_thinking", "a boolean", *thinking));
      }
      request.thinking = thinking != nullptr && thinking->get<bool>();
      if (request.thinking && !request.stream) {
        return fail(invalid_request(
            "parameter.enable_thinking must be set to false for non-streaming calls",
            "enable_thinking"));
      }
    }
    return true;
  }

  bool run(const json& body) {
    if (body.is_discarded()) {
      return fail(
          invalid_request("We could not parse the JSON body of your request. (HINT: This "
                          "likely means you aren't using your HTTP library correctly. "
                          "The API expects a JSON payload, but what was sent was not "
                          "valid JSON.)"));
    }
    if (!body.is_object()) return fail(type_error("body", "an object", body));
    if (!dashscope) {
      for (const auto& [key, value] : body.items()) {
        if (!openai_known_fields().count(key)) {
          return fail(invalid_request("Unrecognized request argument supplied: " + key, key));
        }
      }
    }
    const json* model = member(body, "model");
    if (model == nullptr)
      return fail(invalid_request("you must provide a model parameter", "model"));
    if (!model->is_string()) return fail(type_error("model", "a string", *model));
    request.model = model->get<std::string>();
    if (const json* n = present(body, "n"); n != nullptr && (!n->is_number_integer() || *n != 1)) {
      return fail(invalid_request("fake-provider supports only n=1", "n"));
    }
    return messages(body) && tools(body) && stream_flags(body) && stop(body) &&
           max_tokens(body, "max_tokens") && max_tokens(body, "max_completion_tokens") &&
           number_in(body, "temperature", 0, 2, dashscope) &&
           number_in(body, "top_p", 0, 1, false) &&
           number_in(body, "presence_penalty", -2, 2, false) &&
           number_in(body, "frequency_penalty", -2, 2, false);
  }
};

struct ErrorShape {
  std::string_view type;
  std::string_view code;  // empty -> null
  std::string message;
};

class OpenAiFormat final : public WireFormat {
 public:
  explicit OpenAiFormat(bool dashscope) : dashscope_(dashscope) {}

  Format format() const override {
    return dashscope_ ? Format::dashscope_compatible : Format::openai;
  }

  bool wants_stream(const json& body, const Headers&) const override {
    const json* stream = present(body, "stream");
    return stream != nullptr && stream->is_boolean() && stream->get<bool>();
  }

  std::optional<FakeError> check_auth(const Headers& headers,
                                      std::string_view required_key) const override {
    const std::optional<std::string> key = detail::bearer_token(headers);
    if (!key || key->empty()) {
      return FakeError{401,
                       ErrorKind::authentication,
                       dashscope_ ? "You didn't provide an API key."
                                  : "You didn't provide an API key. You need to provide your API "
                                    "key in an Authorization header using Bearer auth (i.e. "
                                    "Authorization: Bearer YOUR_KEY).",
                       {}};
    }
    if (!required_key.empty() && *key != required_key) {
      // As OpenAI does, the message quotes the key it received: the worker must scrub it.
      return FakeError{
          401, ErrorKind::authentication, "Incorrect API key provided: " + *key + ".", {}};
    }
    return std::nullopt;
  }

  std::variant<ChatRequest, FakeError> parse(const json& body, const Headers&) const override {
    Validation v;
    v.dashscope = dashscope_;
    if (!v.run(body)) return *v.error;
    return std::move(v.request);
  }

  HttpReply error_reply(const FakeError& error, const ResponseContext& context) const override {
    HttpReply reply;
    reply.status = error.status;
    reply.body = error_json(error, context).dump();
    return reply;
  }

  HttpReply reply(const ChatRequest&, const ReplyPlan& plan,
                  const ResponseContext& context) const override {
    json message{{"role", "assistant"}};
    if (plan.tool_call) {
      message["content"] = nullptr;
      message["tool_calls"] = json::array({json{
          {"id", call_id(context)},
          {"type", "function"},
          {"function",
           {{"name", plan.tool_call->name}, {"arguments", plan.tool_call->arguments_json}}}}});
    } else {
      message["content"] = plan.text();
    }
    if (dashscope_ && !plan.thinking_chunks.empty()) message["reasoning_content"] = plan.thinking();
    if (!dashscope_) message["refusal"] = nullptr;
    json body{
        {"id", completion_id(context)},
        {"object", "chat.completion"},
        {"created", context.created_unix_s},
        {"model", context.model},
        {"choices", json::array({json{{"index", 0},
                                      {"message", std::move(message)},
                                      {"logprobs", nullptr},
                                      {"finish_reason", detail::openai_finish(plan.finish)}}})},
        {"usage", detail::usage_openai(plan)}};
    if (dashscope_) {
      body["request_id"] = context.request_id;
    } else {
      body["system_fingerprint"] = "fp_fake";
    }
    HttpReply reply;
    reply.body = body.dump();
    return reply;
  }

  std::string stream_content_type() const override { return "text/event-stream; charset=utf-8"; }

  std::vector<StreamEvent> stream(const ChatRequest& request, const ReplyPlan& plan,
                                  const ResponseContext& context) const override {
    using Kind = StreamEvent::Kind;
    std::vector<StreamEvent> events;
    // Usage is null on every chunk but the usage chunk: always for DashScope, with
    // include_usage for OpenAI (as the real API does).
    const bool null_usage = dashscope_ || request.include_usage;
    const std::string id = completion_id(context);
    const auto build = [&](json delta, json finish) {
      json c{{"id", id},
             {"object", "chat.completion.chunk"},
             {"created", context.created_unix_s},
             {"model", context.model},
             {"system_fingerprint", dashscope_ ? json(nullptr) : json("fp_fake")},
             {"choices", json::array({json{{"index", 0},
                                           {"delta", std::move(delta)},
                                           {"logprobs", nullptr},
                                           {"finish_reason", std::move(finish)}}})}};
      if (null_usage) c["usage"] = nullptr;
      return c;
    };
    // Chunks differ only in delta and finish_reason: serialise the rest once.
    const std::optional<detail::SplicedJson> spliced = detail::SplicedJson::make(build);
    const auto render = [&](std::string_view delta_json, std::string_view finish_json) {
      std::string out;
      out.reserve(spliced->fixed_size() + delta_json.size() + finish_json.size() + 8);
      out.append("data: ");
      spliced->append(out, delta_json, finish_json);
      out.append("\n\n");
      return out;
    };
    const auto chunk = [&](json delta, json finish) {
      if (!spliced) return detail::sse_data(build(std::move(delta), std::move(finish)).dump());
      return render(delta.dump(), finish.dump());
    };
    // {"<key>":"<text>"} without a json value per token.
    std::string delta_json;
    const auto text_chunk = [&](std::string_view key, const std::string& text) {
      if (!spliced) return chunk(json{{key, text}}, nullptr);
      delta_json.assign("{\"").append(key).append("\":");
      detail::append_json_string(delta_json, text);
      delta_json.push_back('}');
      return render(delta_json, "null");
    };
    events.reserve(plan.thinking_chunks.size() + plan.text_chunks.size() +
                   (plan.tool_call ? plan.tool_call->fragments.size() + 1 : 0) + 6);
    events.push_back({Kind::preamble, ": keep-alive\n\n", {}});
    events.push_back(
        {Kind::preamble,
         chunk(json{{"role", "assistant"}, {"content", plan.tool_call ? json(nullptr) : json("")}},
               nullptr),
         {}});
    for (const auto& thought : plan.thinking_chunks) {
      events.push_back({Kind::content, text_chunk("reasoning_content", thought), {}});
    }
    for (const auto& text : plan.text_chunks) {
      events.push_back({Kind::content, text_chunk("content", text), {}});
    }
    if (plan.tool_call) {
      events.push_back(
          {Kind::content,
           chunk(json{{"tool_calls",
                       json::array({json{
                           {"index", 0},
                           {"id", call_id(context)},
                           {"type", "function"},
                           {"function", {{"name", plan.tool_call->name}, {"arguments", ""}}}}})}},
                 nullptr),
           {}});
      for (const auto& fragment : plan.tool_call->fragments) {
        events.push_back(
            {Kind::content,
             chunk(
                 json{{"tool_calls",
                       json::array({json{{"index", 0}, {"function", {{"arguments", fragment}}}}})}},
                 nullptr),
             {}});
      }
    }
    events.push_back(
        {Kind::trailer, chunk(json::object(), detail::openai_finish(plan.finish)), {}});
    if (request.include_usage) {
      json usage_chunk{{"id", id},
                       {"object", "chat.completion.chunk"},
                       {"created", context.created_unix_s},
                       {"model", context.model},
                       {"system_fingerprint", dashscope_ ? json(nullptr) : json("fp_fake")},
                       {"choices", json::array()},
                       {"usage", detail::usage_openai(plan)}};
      events.push_back({Kind::trailer, detail::sse_data(usage_chunk.dump()), {}});
    }
    events.push_back({Kind::terminator, "data: [DONE]\n\n", {}});
    return events;
  }

  std::string malformed_event(const ResponseContext& context, size_t) const override {
    return "data: {\"id\":\"" + completion_id(context) +
           "\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"delta\":\n\n";
  }

  std::string error_event(const FakeError& error, const ResponseContext& context,
                          size_t) const override {
    return detail::sse_data(error_json(error, context).dump());
  }

  FakeError mid_stream_error() const override {
    return FakeError{500,
                     ErrorKind::internal,
                     "The server had an error while processing your request. Sorry about that!",
                     {}};
  }

  HeaderList common_headers(const ResponseContext& context) const override {
    if (dashscope_) return {{"x-request-id", context.request_id}};
    return {
        {"x-request-id", context.request_id},         {"openai-processing-ms", "1"},
        {"x-ratelimit-limit-requests", "10000"},      {"x-ratelimit-remaining-requests", "9999"},
        {"x-ratelimit-reset-requests", "6ms"},        {"x-ratelimit-limit-tokens", "30000000"},
        {"x-ratelimit-remaining-tokens", "29999000"}, {"x-ratelimit-reset-tokens", "2ms"}};
  }

  std::string request_id(uint64_t instance, uint64_t seq) const override {
    return dashscope_ ? detail::uuid_like(instance, seq) : detail::short_request_id(instance, seq);
  }

 private:
  static std::string completion_id(const ResponseContext& c) {
    return "chatcmpl-" + std::to_string(c.seq);
  }
  static std::string call_id(const ResponseContext& c) { return "call_" + std::to_string(c.seq); }

  ErrorShape shape(const FakeError& error, const ResponseContext& context) const {
    const std::string model =
        "The model `" + context.model + "` does not exist or you do not have access to it.";
    switch (error.kind) {
      case ErrorKind::invalid_request:
        return {"invalid_request_error", dashscope_ ? "invalid_parameter_error" : "",
                "Invalid request."};
      case ErrorKind::authentication:
        return {"invalid_request_error", "invalid_api_key", "Incorrect API key provided."};
      case ErrorKind::permission:
        return {"invalid_request_error", dashscope_ ? "AccessDenied" : "permission_denied",
                "You are not allowed to access this model."};
      case ErrorKind::not_found:
        return {"invalid_request_error", "model_not_found", model};
      case ErrorKind::request_timeout:
        return {"timeout", dashscope_ ? "RequestTimeOut" : "request_timeout", "Request timed out."};
      case ErrorKind::conflict:
        return {"invalid_request_error", dashscope_ ? "Conflict" : "conflict",
                "The request conflicts with another request."};
      case ErrorKind::request_too_large:
        return {"invalid_request_error", dashscope_ ? "RequestTooLarge" : "request_too_large",
                "Request too large."};
      case ErrorKind::unprocessable:
        return {"invalid_request_error",
                dashscope_ ? "invalid_parameter_error" : "unprocessable_entity",
                "The request could not be processed."};
      case ErrorKind::rate_limited:
        return {"requests", dashscope_ ? "Throttling.RateQuota" : "rate_limit_exceeded",
                dashscope_ ? "Requests rate limit exceeded, please try again later."
                           : "Rate limit reached for requests. Please try again later."};
      case ErrorKind::rate_limited_tokens:
        return {"tokens", dashscope_ ? "Throttling.AllocationQuota" : "rate_limit_exceeded",
                dashscope_ ? "Allocated quota exceeded, please increase your quota limit."
                           : "Rate limit reached for tokens. Please try again later."};
      case ErrorKind::internal:
        return {dashscope_ ? "internal_error" : "server_error", dashscope_ ? "internal_error" : "",
                "The server had an error while processing your request. Sorry about that!"};
      case ErrorKind::bad_gateway:
        return {"server_error", dashscope_ ? "BadGateway" : "bad_gateway", "Bad gateway."};
      case ErrorKind::unavailable:
        return {"server_error", dashscope_ ? "ServiceUnavailable" : "service_unavailable",
                "The server is overloaded or not ready yet."};
      case ErrorKind::overloaded:
        return {"server_error", dashscope_ ? "Overloaded" : "overloaded",
                "The engine is currently overloaded, please try again later."};
      case ErrorKind::context_length:
        if (dashscope_) {
          return {"invalid_request_error", "invalid_parameter_error",
                  "<400> InternalError.Algo.InvalidParameter: Range of input length should be "
                  "[1, 129024]"};
        }
        return {"invalid_request_error", "context_length_exceeded",
                "This model's maximum context length is 128000 tokens. However, your messages "
                "resulted in 128001 tokens. Please reduce the length of the messages."};
      case ErrorKind::content_filter:
        if (dashscope_) {
          return {"data_inspection_failed", "data_inspection_failed",
                  "Input data may contain inappropriate content."};
        }
        return {"invalid_request_error", "content_policy_violation",
                "Your request was rejected as a result of our safety system."};
    }
    return {"server_error", "", "error"};
  }

  json error_json(const FakeError& error, const ResponseContext& context) const {
    ErrorShape s = shape(error, context);
    json param = nullptr;
    if (!error.param.empty()) param = error.param;
    if (error.kind == ErrorKind::context_length && !dashscope_) param = "messages";
    json body{{"error",
               {{"message", error.message.empty() ? s.message : error.message},
                {"type", s.type},
                {"param", std::move(param)},
                {"code", s.code.empty() ? json(nullptr) : json(s.code)}}}};
    if (dashscope_) body["request_id"] = context.request_id;
    return body;
  }

  bool dashscope_;
};

}  // namespace

const WireFormat& openai_format() {
  static const OpenAiFormat format(false);
  return format;
}

const WireFormat& dashscope_compatible_format() {
  static const OpenAiFormat format(true);
  return format;
}

}  // namespace dispatch::fake_provider
