// Anthropic Messages API: POST /v1/messages with x-api-key (or Authorization: Bearer) +
// anthropic-version.

#include <algorithm>
#include <set>

#include "format_common.hpp"
#include "formats.hpp"

namespace dispatch::fake_provider {
namespace {

using detail::json;
using detail::member;
using detail::present;

const std::set<std::string, std::less<>>& known_fields() {
  static const std::set<std::string, std::less<>> fields{
      "model",    "messages",       "max_tokens", "system",      "temperature",       "top_p",
      "top_k",    "stop_sequences", "stream",     "tools",       "tool_choice",       "thinking",
      "metadata", "service_tier",   "container",  "mcp_servers", "context_management"};
  return fields;
}

const std::set<std::string, std::less<>>& image_media_types() {
  static const std::set<std::string, std::less<>> types{"image/jpeg", "image/png", "image/gif",
                                                        "image/webp"};
  return types;
}

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

  bool image(const json& block, const std::string& path) {
    const json* source = member(block, "source");
    if (source == nullptr) return fail(bad(path + ".source: Field required"));
    if (!source->is_object()) return fail(bad(path + ".source: Input should be an object"));
    const json* type = member(*source, "type");
    if (type != nullptr && *type == "url") {
      const json* url = member(*source, "url");
      if (url == nullptr || !url->is_string()) {
        return fail(bad(path + ".source.url: Field required"));
      }
    } else if (type != nullptr && *type == "base64") {
      const json* media = member(*source, "media_type");
      if (media == nullptr || !media->is_string() ||
          !image_media_types().count(media->get<std::string>())) {
        return fail(bad(path + ".source.base64.media_type: Input should be 'image/jpeg', "
                               "'image/png', 'image/gif' or 'image/webp'"));
      }
      const json* data = member(*source, "data");
      if (data == nullptr || !data->is_string()) {
        return fail(bad(path + ".source.base64.data: Field required"));
      }
      if (data->get<std::string>().empty() || !detail::is_base64(data->get<std::string>())) {
        return fail(bad(path + ".source.base64.data: The image data is not valid base64."));
      }
    } else {
      return fail(bad(path + ".source.type: Input tag found using 'type' does not match any of "
                             "the expected tags: 'base64', 'url'"));
    }
    ++request.image_count;
    return true;
  }

  // Text of a tool_result's content (string or text/image blocks).
  bool tool_result_content(const json& content, const std::string& path, std::string& text) {
    if (content.is_string()) {
      text = content.get<std::string>();
      return true;
    }
    if (!content.is_array()) return fail(bad(path + ": Input should be a valid string or list"));
    for (size_t k = 0; k < content.size(); ++k) {
      const json& part = content[k];
      const std::string pp = path + "." + std::to_string(k);
      const json* type = member(part, "type");
      if (type != nullptr && *type == "text" && member(part, "text") != nullptr &&
          part["text"].is_string()) {
        if (!text.empty()) text += ' ';
        text += part["text"].get<std::string>();
      } else if (type != nullptr && *type == "image") {
        if (!image(part, pp)) return false;
      } else {
        return fail(bad(pp + ": Input should be a text or image block"));
      }
    }
    return true;
  }

  bool messages(const json& body) {
    const json* list = member(body, "messages");
    if (list == nullptr) return fail(bad("messages: Field required"));
    if (!list->is_array()) return fail(bad("messages: Input should be a valid list"));
    if (list->empty()) return fail(bad("messages: at least one message is required"));
    std::vector<std::string> previous_tool_uses;  // tool_use ids of the previous message
    for (size_t i = 0; i < list->size(); ++i) {
      const json& message = (*list)[i];
      const std::string mp = "messages." + std::to_string(i);
      if (!message.is_object()) return fail(bad(mp + ": Input should be a valid dictionary"));
      const json* role = member(message, "role");
      if (role == nullptr) return fail(bad(mp + ".role: Field required"));
      if (*role == "system") {
        return fail(
            bad("messages: Unexpected role \"system\". The Messages API accepts a "
                "top-level `system` parameter, not \"system\" as an input message role."));
      }
      if (*role != "user" && *role != "assistant") {
        return fail(bad(mp + ".role: Input should be 'user' or 'assistant'"));
      }
      const bool user = *role == "user";
      const bool last = i + 1 == list->size();
      const json* content = member(message, "content");
      if (content == nullptr) return fail(bad(mp + ".content: Field required"));
      std::string text;
      std::string result_text;
      bool has_tool_result = false;
      std::vector<std::string> tool_uses;
      std::vector<std::string> results;
      if (content->is_string()) {
        text = content->get<std::string>();
        if (text.empty() && !(last && !user)) {
          return fail(bad(mp + ": all messages must have non-empty content except for the "
                               "optional final assistant message"));
        }
      } else if (content->is_array()) {
        if (content->empty() && !(last && !user)) {
          return fail(bad(mp + ": all messages must have non-empty content except for the "
                               "optional final assistant message"));
        }
        for (size_t j = 0; j < content->size(); ++j) {
          const json& block = (*content)[j];
          const std::string bp = mp + ".content." + std::to_string(j);
          if (!block.is_object()) return fail(bad(bp + ": Input should be a valid dictionary"));
          const json* type = member(block, "type");
          if (type == nullptr) return fail(bad(bp + ".type: Field required"));
          const std::string t = type->is_string() ? type->get<std::string>() : "";
          if (t == "text") {
            const json* value = member(block, "text");
            if (value == nullptr || !value->is_string()) {
              return fail(bad(bp + ".text: Field required"));
            }
            if (!text.empty()) text += ' ';
            text += value->get<std::string>();
          } else if (t == "image") {
            if (!image(block, bp)) return false;
          } else if (t == "tool_use") {
            if (user)
              return fail(bad(bp + ": tool_use blocks are only allowed in assistant messages"));
            const json* id = member(block, "id");
            const json* name = member(block, "name");
            const json* input = member(block, "input");
            if (id == nullptr || !id->is_string()) return fail(bad(bp + ".id: Field required"));
            if (name == nullptr || !name->is_string())
              return fail(bad(bp + ".name: Field required"));
            if (input == nullptr) return fail(bad(bp + ".input: Field required"));
            if (!input->is_object())
              return fail(bad(bp + ".input: Input should be a valid dictionary"));
            tool_uses.push_back(id->get<std::string>());
          } else if (t == "tool_result") {
            if (!user)
              return fail(bad(bp + ": tool_result blocks are only allowed in user messages"));
            const json* id = member(block, "tool_use_id");
            if (id == nullptr || !id->is_string()) {
              return fail(bad(bp + ".tool_use_id: Field required"));
            }
            if (const json* is_error = present(block, "is_error");
                is_error != nullptr && !is_error->is_boolean()) {
              return fail(bad(bp + ".is_error: Input should be a valid boolean"));
            }
            if (std::find(previous_tool_uses.begin(), previous_tool_uses.end(),
                          id->get<std::string>()) == previous_tool_uses.end()) {
              return fail(bad(bp + ": unexpected `tool_use_id` found in `tool_result` blocks: " +
                              id->get<std::string>() +
                              ". Each `tool_result` block must have a corresponding `tool_use` "
                              "block in the previous message."));
            }
            results.push_back(id->get<std::string>());
            std::string one;
            if (const json* c = present(block, "content");
                c != nullptr && !tool_result_content(*c, bp + ".content", one)) {
              return false;
            }
            result_text = one;
            has_tool_result = true;
            request.prompt_tokens += count_words(one);
          } else if (t == "thinking") {
            if (user)
              return fail(bad(bp + ": thinking blocks are only allowed in assistant messages"));
            const json* thinking = member(block, "thinking");
            const json* signature = member(block, "signature");
            if (thinking == nullptr || !thinking->is_string()) {
              return fail(bad(bp + ".thinking: Field required"));
            }
            if (signature == nullptr || !signature->is_string()) {
              return fail(bad(bp + ".signature: Field required"));
            }
          } else if (t == "redacted_thinking" || t == "document" || t == "search_result") {
            // Accepted; carries no prompt text here.
          } else {
            return fail(bad(bp + ".type: Input tag '" + t +
                            "' found using 'type' does not match any of the expected tags: "
                            "'text', 'image', 'document', 'search_result', 'thinking', "
                            "'redacted_thinking', 'tool_use', 'tool_result'"));
          }
        }
      } else {
        return fail(bad(mp + ".content: Input should be a valid string or list"));
      }
      if (!previous_tool_uses.empty()) {
        std::string missing;
        for (const auto& id : previous_tool_uses) {
          if (std::find(results.begin(), results.end(), id) == results.end()) {
            missing += (missing.empty() ? "" : ", ") + id;
          }
        }
        if (!missing.empty()) {
          return fail(bad(mp +
                          ": `tool_use` ids were found without `tool_result` blocks "
                          "immediately after: " +
                          missing +
                          ". Each `tool_use` block must have a corresponding `tool_result` "
                          "block in the next message."));
        }
      }
      previous_tool_uses = std::move(tool_uses);
      request.prompt_tokens += count_words(text);
      if (user) {
        request.last_user_text = text;
        request.last_is_tool_result = has_tool_result;
        request.tool_result_text = result_text;
      } else {
        request.last_is_tool_result = false;
      }
    }
    return true;
  }

  bool system(const json& body) {
    const json* value = present(body, "system");
    if (value == nullptr) return true;
    if (value->is_string()) {
      request.prompt_tokens += count_words(value->get<std::string>());
      return true;
    }
    if (!value->is_array()) return fail(bad("system: Input should be a valid string or list"));
    for (size_t k = 0; k < value->size(); ++k) {
      const json& block = (*value)[k];
      if (!block.is_object() || member(block, "type") == nullptr || block["type"] != "text" ||
          member(block, "text") == nullptr || !block["text"].is_string()) {
        return fail(bad("system." + std::to_string(k) + ": Input should be a text block"));
      }
      request.prompt_tokens += count_words(block["text"].get<std::string>());
    }
    return true;
  }

  bool tools(const json& body) {
    const json* list = present(body, "tools");
    if (list != nullptr) {
      if (!list->is_array()) return fail(bad("tools: Input should be a valid list"));
      for (size_t t = 0; t < list->size(); ++t) {
        const json& tool = (*list)[t];
        const std::string tp = "tools." + std::to_string(t);
        if (!tool.is_object()) return fail(bad(tp + ": Input should be a valid dictionary"));
        const json* name = member(tool, "name");
        if (name == nullptr || !name->is_string()) return fail(bad(tp + ".name: Field required"));
        const json* type = present(tool, "type");
        const bool custom = type == nullptr || *type == "custom";
        const json* schema = member(tool, "input_schema");
        if (custom) {
          if (schema == nullptr) return fail(bad(tp + ".custom.input_schema: Field required"));
          if (!schema->is_object()) {
            return fail(bad(tp + ".custom.input_schema: Input should be a valid dictionary"));
          }
        }
        request.tools.push_back(
            ToolSpec{name->get<std::string>(), schema != nullptr ? *schema : json()});
      }
    }
    const json* choice = present(body, "tool_choice");
    if (choice == nullptr) return true;
    const json* type = choice->is_object() ? member(*choice, "type") : nullptr;
    if (type == nullptr) return fail(bad("tool_choice.type: Field required"));
    if (*type == "none") {
      request.tool_choice = ToolChoice::none;
    } else if (*type == "any") {
      request.tool_choice = ToolChoice::required;
    } else if (*type == "tool") {
      const json* name = member(*choice, "name");
      if (name == nullptr || !name->is_string())
        return fail(bad("tool_choice.tool.name: Field required"));
      request.tool_choice = ToolChoice::required;
      request.forced_tool = name->get<std::string>();
    } else if (*type != "auto") {
      return fail(
          bad("tool_choice: Input tag found using 'type' does not match any of the "
              "expected tags: 'auto', 'any', 'tool', 'none'"));
    }
    return true;
  }

  bool number_in(const json& body, const std::string& name, double min, double max) {
    const json* value = present(body, name);
    if (value == nullptr) return true;
    if (!value->is_number()) return fail(bad(name + ": Input should be a valid number"));
    if (value->get<double>() < min) {
      return fail(bad(name + ": Input should be greater than or equal to " + json(min).dump()));
    }
    if (value->get<double>() > max) {
      return fail(bad(name + ": Input should be less than or equal to " + json(max).dump()));
    }
    return true;
  }

  bool scalars(const json& body) {
    const json* max_tokens = member(body, "max_tokens");
    if (max_tokens == nullptr) return fail(bad("max_tokens: Field required"));
    if (!max_tokens->is_number_integer())
      return fail(bad("max_tokens: Input should be a valid integer"));
    if (max_tokens->get<int64_t>() < 1) {
      return fail(bad("max_tokens: Input should be greater than or equal to 1"));
    }
    request.max_tokens = max_tokens->get<int64_t>();
    const json* stream = present(body, "stream");
    if (stream != nullptr && !stream->is_boolean())
      return fail(bad("stream: Input should be a valid boolean"));
    request.stream = stream != nullptr && stream->get<bool>();
    if (const json* top_k = present(body, "top_k");
        top_k != nullptr && (!top_k->is_number_integer() || top_k->get<int64_t>() < 0)) {
      return fail(bad("top_k: Input should be greater than or equal to 0"));
    }
    if (const json* stops = present(body, "stop_sequences"); stops != nullptr) {
      if (!stops->is_array()) return fail(bad("stop_sequences: Input should be a valid list"));
      for (size_t s = 0; s < stops->size(); ++s) {
        if (!(*stops)[s].is_string()) {
          return fail(
              bad("stop_sequences." + std::to_string(s) + ": Input should be a valid string"));
        }
        request.stop.push_back((*stops)[s].get<std::string>());
      }
    }
    if (const json* metadata = present(body, "metadata");
        metadata != nullptr && !metadata->is_object()) {
      return fail(bad("metadata: Input should be a valid dictionary"));
    }
    return number_in(body, "temperature", 0, 1) && number_in(body, "top_p", 0, 1);
  }

  bool thinking(const json& body) {
    const json* value = present(body, "thinking");
    if (value == nullptr) return true;
    const json* type = value->is_object() ? member(*value, "type") : nullptr;
    if (type == nullptr) return fail(bad("thinking.type: Field required"));
    if (*type == "disabled") return true;
    if (*type == "enabled") {
      const json* budget = member(*value, "budget_tokens");
      if (budget == nullptr) return fail(bad("thinking.enabled.budget_tokens: Field required"));
      if (!budget->is_number_integer() || budget->get<int64_t>() < 1024) {
        return fail(
            bad("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"));
      }
      if (request.max_tokens && budget->get<int64_t>() >= *request.max_tokens) {
        return fail(
            bad("`max_tokens` must be greater than `thinking.budget_tokens`. Please "
                "consult our documentation at "
                "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"));
      }
    } else if (*type != "adaptive") {
      return fail(
          bad("thinking: Input tag found using 'type' does not match any of the expected "
              "tags: 'enabled', 'disabled', 'adaptive'"));
    }
    if (const json* t = present(body, "temperature"); t != nullptr && *t != 1) {
      return fail(
          bad("`temperature` may only be set to 1 when thinking is enabled or in "
              "adaptive mode. Please consult our documentation at "
              "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"));
    }
    if (request.tool_choice == ToolChoice::required) {
      return fail(bad("Thinking may not be enabled when tool_choice forces tool use."));
    }
    request.thinking = true;
    return true;
  }

  bool run(const json& body) {
    if (body.is_discarded()) return fail(bad("The request body is not valid JSON."));
    if (!body.is_object()) return fail(bad("The request body must be a JSON object."));
    for (const auto& [key, value] : body.items()) {
      if (!known_fields().count(key)) return fail(bad(key + ": Extra inputs are not permitted"));
    }
    const json* model = member(body, "model");
    if (model == nullptr) return fail(bad("model: Field required"));
    if (!model->is_string()) return fail(bad("model: Input should be a valid string"));
    request.model = model->get<std::string>();
    return scalars(body) && system(body) && messages(body) && tools(body) && thinking(body);
  }
};

std::string_view stop_reason(Finish finish) {
  switch (finish) {
    case Finish::length:
      return "max_tokens";
    case Finish::stop_sequence:
      return "stop_sequence";
    case Finish::tool_calls:
      return "tool_use";
    case Finish::stop:
    case Finish::load:
      return "end_turn";
  }
  return "end_turn";
}

class AnthropicFormat final : public WireFormat {
 public:
  Format format() const override { return Format::anthropic; }

  bool wants_stream(const json& body, const Headers&) const override {
    const json* stream = present(body, "stream");
    return stream != nullptr && stream->is_boolean() && stream->get<bool>();
  }

  std::optional<FakeError> check_auth(const Headers& headers,
                                      std::string_view required_key) const override {
    // The service takes the key as x-api-key or as Authorization: Bearer (what SDK 1.x sends);
    // x-api-key wins when both are present.
    std::optional<std::string> key;
    if (const auto header = headers.get("x-api-key"); header && !header->empty()) {
      key = std::string(*header);
    } else {
      key = detail::bearer_token(headers);
    }
    if (!key || key->empty()) {
      return FakeError{401, ErrorKind::authentication, "x-api-key header is required", {}};
    }
    if (!required_key.empty() && *key != required_key) {
      return FakeError{401, ErrorKind::authentication, "invalid x-api-key", {}};
    }
    // Any version is accepted (SDK 1.x sends 2026-10-21, older ones 2023-06-01); only its
    // absence is an error, as on the service.
    const auto version = headers.get("anthropic-version");
    if (!version || version->empty()) {
      return invalid_request("anthropic-version: header is required");
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
    reply.body = error_json(error, context).dump();
    return reply;
  }

  HttpReply reply(const ChatRequest&, const ReplyPlan& plan,
                  const ResponseContext& context) const override {
    json content = json::array();
    if (!plan.thinking_chunks.empty()) {
      content.push_back(
          {{"type", "thinking"}, {"thinking", plan.thinking()}, {"signature", signature(context)}});
    }
    if (plan.tool_call) {
      content.push_back({{"type", "tool_use"},
                         {"id", tool_id(context)},
                         {"name", plan.tool_call->name},
                         {"input", plan.tool_call->arguments}});
    } else {
      content.push_back({{"type", "text"}, {"text", plan.text()}});
    }
    json body{{"id", message_id(context)},
              {"type", "message"},
              {"role", "assistant"},
              {"model", context.model},
              {"content", std::move(content)},
              {"stop_reason", stop_reason(plan.finish)},
              {"stop_sequence", stop_sequence(plan)},
              {"usage", usage(plan.prompt_tokens, plan.completion_tokens)}};
    HttpReply reply;
    reply.body = body.dump();
    return reply;
  }

  std::string stream_content_type() const override { return "text/event-stream; charset=utf-8"; }

  std::vector<StreamEvent> stream(const ChatRequest&, const ReplyPlan& plan,
                                  const ResponseContext& context) const override {
    using Kind = StreamEvent::Kind;
    std::vector<StreamEvent> events;
    const auto event = [](Kind kind, std::string_view name, const json& data) {
      return StreamEvent{kind, detail::sse_event(name, data.dump()), {}};
    };
    json start{{"type", "message_start"},
               {"message",
                {{"id", message_id(context)},
                 {"type", "message"},
                 {"role", "assistant"},
                 {"model", context.model},
                 {"content", json::array()},
                 {"stop_reason", nullptr},
                 {"stop_sequence", nullptr},
                 {"usage", usage(plan.prompt_tokens, 0)}}}};
    events.push_back(event(Kind::preamble, "message_start", start));
    events.push_back(event(Kind::preamble, "ping", json{{"type", "ping"}}));

    int index = 0;
    const auto block_start = [&](json block) {
      events.push_back(event(Kind::structural, "content_block_start",
                             json{{"type", "content_block_start"},
                                  {"index", index},
                                  {"content_block", std::move(block)}}));
    };
    const auto delta = [&](Kind kind, json d) {
      events.push_back(
          event(kind, "content_block_delta",
                json{{"type", "content_block_delta"}, {"index", index}, {"delta", std::move(d)}}));
    };
    const auto block_stop = [&] {
      events.push_back(event(Kind::structural, "content_block_stop",
                             json{{"type", "content_block_stop"}, {"index", index}}));
      ++index;
    };
    // A token's delta differs from the next only in its text: serialise the rest once.
    const auto build_delta = [](json d, json i) {
      return json{
          {"type", "content_block_delta"}, {"index", std::move(i)}, {"delta", std::move(d)}};
    };
    const std::optional<detail::SplicedJson> spliced = detail::SplicedJson::make(build_delta);
    std::string delta_json;
    // {"<field>":"<text>","type":"<type>"}: "text" and "thinking" sort before "type".
    const auto text_delta = [&](std::string_view type, std::string_view field,
                                const std::string& text) {
      if (!spliced) return delta(Kind::content, json{{"type", type}, {field, text}});
      delta_json.assign("{\"").append(field).append("\":");
      detail::append_json_string(delta_json, text);
      delta_json.append(",\"type\":\"").append(type).append("\"}");
      const std::string index_json = std::to_string(index);
      std::string out;
      out.reserve(spliced->fixed_size() + delta_json.size() + 48);
      out.append("event: content_block_delta\ndata: ");
      spliced->append(out, delta_json, index_json);
      out.append("\n\n");
      events.push_back(StreamEvent{Kind::content, std::move(out), {}});
    };
    if (!plan.thinking_chunks.empty()) {
      block_start(json{{"type", "thinking"}, {"thinking", ""}, {"signature", ""}});
      for (const auto& thought : plan.thinking_chunks) {
        text_delta("thinking_delta", "thinking", thought);
      }
      delta(Kind::structural, json{{"type", "signature_delta"}, {"signature", signature(context)}});
      block_stop();
    }
    if (plan.tool_call) {
      block_start(json{{"type", "tool_use"},
                       {"id", tool_id(context)},
                       {"name", plan.tool_call->name},
                       {"input", json::object()}});
      for (const auto& fragment : plan.tool_call->fragments) {
        delta(Kind::content, json{{"type", "input_json_delta"}, {"partial_json", fragment}});
      }
      block_stop();
    } else {
      block_start(json{{"type", "text"}, {"text", ""}});
      for (const auto& text : plan.text_chunks) text_delta("text_delta", "text", text);
      block_stop();
    }
    events.push_back(event(
        Kind::trailer, "message_delta",
        json{{"type", "message_delta"},
             {"delta",
              {{"stop_reason", stop_reason(plan.finish)}, {"stop_sequence", stop_sequence(plan)}}},
             {"usage", {{"output_tokens", plan.completion_tokens}}}}));
    events.push_back(event(Kind::terminator, "message_stop", json{{"type", "message_stop"}}));
    return events;
  }

  std::string malformed_event(const ResponseContext&, size_t) const override {
    return "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
           "\"delta\":{\"type\":\"text_del\n\n";
  }

  std::string error_event(const FakeError& error, const ResponseContext& context,
                          size_t) const override {
    return detail::sse_event("error", error_json(error, context).dump());
  }

  FakeError mid_stream_error() const override {
    return FakeError{529, ErrorKind::overloaded, "Overloaded", {}};
  }

  HeaderList common_headers(const ResponseContext& context) const override {
    return {{"request-id", context.request_id},
            {"anthropic-ratelimit-requests-limit", "4000"},
            {"anthropic-ratelimit-requests-remaining", "3999"}};
  }

  std::string request_id(uint64_t instance, uint64_t seq) const override {
    return detail::short_request_id(instance, seq);
  }

 private:
  static std::string message_id(const ResponseContext& c) { return "msg_" + std::to_string(c.seq); }
  static std::string tool_id(const ResponseContext& c) { return "toolu_" + std::to_string(c.seq); }
  static std::string signature(const ResponseContext& c) {
    return "ZmFrZS1zaWduYXR1cmU=" + std::to_string(c.seq);
  }
  static json stop_sequence(const ReplyPlan& plan) {
    return plan.finish == Finish::stop_sequence ? json(plan.stop_sequence) : json(nullptr);
  }
  static json usage(int64_t input, int64_t output) {
    return json{{"input_tokens", input},
                {"cache_creation_input_tokens", 0},
                {"cache_read_input_tokens", 0},
                {"output_tokens", output},
                {"service_tier", "standard"}};
  }

  static std::pair<std::string_view, std::string> shape(const FakeError& error,
                                                        const ResponseContext& context) {
    switch (error.kind) {
      case ErrorKind::invalid_request:
        return {"invalid_request_error", "Invalid request."};
      case ErrorKind::authentication:
        return {"authentication_error", "invalid x-api-key"};
      case ErrorKind::permission:
        return {"permission_error",
                "Your API key does not have permission to use the specified "
                "resource."};
      case ErrorKind::not_found:
        return {"not_found_error", "model: " + context.model};
      case ErrorKind::request_timeout:
        return {"timeout_error", "Request timed out."};
      case ErrorKind::conflict:
        return {"invalid_request_error", "Conflict."};
      case ErrorKind::request_too_large:
        return {"request_too_large", "Request exceeds the maximum allowed number of bytes."};
      case ErrorKind::unprocessable:
        return {"invalid_request_error", "Unprocessable request."};
      case ErrorKind::rate_limited:
        return {"rate_limit_error",
                "This request would exceed the rate limit for your "
                "organization. Please try again later."};
      case ErrorKind::rate_limited_tokens:
        return {"rate_limit_error",
                "This request would exceed the token rate limit for your organization. Please "
                "try again later."};
      case ErrorKind::internal:
        return {"api_error", "Internal server error"};
      case ErrorKind::bad_gateway:
        return {"api_error", "Bad gateway"};
      case ErrorKind::unavailable:
        return {"api_error", "Service unavailable"};
      case ErrorKind::overloaded:
        return {"overloaded_error", "Overloaded"};
      case ErrorKind::context_length:
        return {"invalid_request_error", "prompt is too long: 200001 tokens > 200000 maximum"};
      case ErrorKind::content_filter:
        return {"invalid_request_error", "Output blocked by content filtering policy"};
    }
    return {"api_error", "error"};
  }

  static json error_json(const FakeError& error, const ResponseContext& context) {
    auto [type, message] = shape(error, context);
    return json{
        {"type", "error"},
        {"error", {{"type", type}, {"message", error.message.empty() ? message : error.message}}},
        {"request_id", context.request_id}};
  }
};

}  // namespace

const WireFormat& anthropic_format() {
  static const AnthropicFormat format;
  return format;
}

}  // namespace dispatch::fake_provider
