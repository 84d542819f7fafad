// OpenAI Chat Completions, and the same format on OpenAI-compatible servers (vLLM, LM Studio,
// DashScope compatible-mode, ...). See reference/providers.md "OpenAI Chat Completions".

#include <fmt/format.h>

#include "adapter_common.hpp"
#include "adapters.hpp"
#include "dispatch/worker/stream_parsers.hpp"
#include "text_util.hpp"

namespace dispatch::worker::detail {
namespace {

// OpenAI rejects a fifth stop sequence; compatible servers document no limit.
constexpr std::size_t kOpenAiMaxStop = 4;
constexpr double kCompatibleMaxTemperature = 1.99;

std::variant<Json, Failure> build_messages(const protocol::Request& request) {
  Json messages = Json::array();
  for (std::size_t i = 0; i < request.messages.size(); ++i) {
    const protocol::Message& m = request.messages[i];
    const std::string where = fmt::format("messages[{}]", i);
    if (!m.images.empty() && m.role != "user") {
      return invalid_request(where + ": images are only supported in user messages");
    }
    if (m.role == "system" || m.role == "developer") {
      messages.push_back(Json{{"role", m.role}, {"content", m.content}});
    } else if (m.role == "user") {
      if (m.images.empty()) {
        messages.push_back(Json{{"role", "user"}, {"content", m.content}});
        continue;
      }
      Json parts = Json::array();
      if (!m.content.empty()) parts.push_back(Json{{"type", "text"}, {"text", m.content}});
      for (std::size_t j = 0; j < m.images.size(); ++j) {
        auto image = parse_image(m.images[j], fmt::format("{}.images[{}]", where, j));
        if (auto* failure = std::get_if<Failure>(&image)) return std::move(*failure);
        const Image& img = std::get<Image>(image);
        std::string url = img.url.empty()
                              ? fmt::format("data:{};base64,{}", img.media_type, img.base64)
                              : img.url;
        parts.push_back(Json{{"type", "image_url"}, {"image_url", {{"url", std::move(url)}}}});
      }
      messages.push_back(Json{{"role", "user"}, {"content", std::move(parts)}});
    } else if (m.role == "assistant") {
      Json message = {{"role", "assistant"}};
      // OpenAI wants null, not "", beside tool calls.
      message["content"] = m.content.empty() && !m.tool_calls.empty() ? Json() : Json(m.content);
      if (!m.tool_calls.empty()) {
        Json calls = Json::array();
        for (const protocol::ToolCall& call : m.tool_calls) {
          calls.push_back(Json{{"id", call.id},
                               {"type", "function"},
                               {"function",
                                {{"name", call.name},
                                 {"arguments", call.arguments.empty() ? "{}" : call.arguments}}}});
        }
        message["tool_calls"] = std::move(calls);
      }
      messages.push_back(std::move(message));
    } else if (m.role == "tool") {
      std::string call_id = m.tool_call_id;
      if (call_id.empty()) call_id = call_id_for_tool_name(request.messages, i, m.tool_name);
      if (call_id.empty()) {
        return invalid_request(where +
                               ": tool result needs tool_call_id (or a tool_name "
                               "matching an earlier assistant tool call)");
      }
      messages.push_back(
          Json{{"role", "tool"}, {"tool_call_id", std::move(call_id)}, {"content", m.content}});
    } else {
      return invalid_request(fmt::format("{}.role: unknown role '{}'", where, m.role));
    }
  }
  return messages;
}

std::variant<Json, Failure> build_response_format(const protocol::Request& request) {
  const std::string& format = request.response_format;
  if (format.empty()) return Json();
  if (format == "text" || format == "json_object") return Json{{"type", format}};
  if (format == "json_schema") {
    auto schema = parse_json_object(request.response_schema, "response_schema", false);
    if (auto* failure = std::get_if<Failure>(&schema)) return std::move(*failure);
    return Json{
        {"type", "json_schema"},
        {"json_schema", {{"name", "response"}, {"schema", std::move(std::get<Json>(schema))}}}};
  }
  return invalid_request(fmt::format(
      "response_format: unknown value '{}' (expected text, json_object or json_schema)", format));
}

// Decodes one chat.completion (whole, an nlohmann Json) or chat.completion.chunk (stream, a
// JsonValue) object.
template <class JsonT>
void decode_completion(const JsonT& body, bool streaming, bool& metadata_sent, DecodeSink& sink) {
  if (!metadata_sent) {
    const std::string_view id = json_string(body, "id");
    const std::string_view model = json_string(body, "model");
    if (!id.empty() || !model.empty()) {
      metadata_sent = true;
      sink.on_metadata(id, model, static_cast<int64_t>(json_uint(body, "created").value_or(0)));
    }
  }
  if (const JsonT* choices = json_array(body, "choices"); choices != nullptr && !choices->empty()) {
    // n is never set, so the answer is choice 0.
    const JsonT& choice = choices->front();
    const JsonT* part = json_object(choice, streaming ? "delta" : "message");
    if (part != nullptr) {
      if (auto thinking = json_string(*part, "reasoning_content"); !thinking.empty()) {
        sink.on_thinking(thinking);
      } else if (auto reasoning = json_string(*part, "reasoning"); !reasoning.empty()) {
        sink.on_thinking(reasoning);
      }
      if (auto content = json_string(*part, "content"); !content.empty()) sink.on_content(content);
      if (const JsonT* calls = json_array(*part, "tool_calls")) {
        std::size_t i = 0;
        for (const JsonT& call : *calls) {
          protocol::ToolCallDelta delta;
          delta.index = static_cast<uint32_t>(json_uint(call, "index").value_or(i));
          delta.id = json_string(call, "id");
          if (const JsonT* function = json_object(call, "function")) {
            delta.name = json_string(*function, "name");
            delta.arguments = json_string(*function, "arguments");
          }
          sink.on_tool_call(delta);
          ++i;
        }
      }
    }
    if (auto raw = json_string(choice, "finish_reason"); !raw.empty()) {
      sink.on_finish(normalise_finish_reason(raw), raw);
    }
  }
  if (const JsonT* usage = json_object(body, "usage")) {
    sink.on_usage(json_uint(*usage, "prompt_tokens").value_or(0),
                  json_uint(*usage, "completion_tokens").value_or(0));
  }
}

std::string json_scalar_text(const Json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_number()) return value.dump();
  return {};
}

class OpenAiDecoder final : public DecoderBase {
 public:
  using DecoderBase::DecoderBase;

 protected:
  void feed_stream(std::string_view bytes, DecodeSink& sink) override {
    parser_.feed(bytes, [&](const SseEvent& event) { on_event(event, sink); });
    fail_if_overflowed(parser_.overflowed(), "event", sink);
  }

  std::optional<Failure> decode_whole(const Json& body, DecodeSink& sink) override {
    if (body.contains("error") && !body.contains("choices"))
      return classify(extract_error(&body, {}));
    decode_completion(body, false, metadata_sent_, sink);
    return std::nullopt;
  }

  // {"error":{"message","type","param","code"}}, an {"error":"text"} or vLLM's flat
  // {"object":"error","message","type","code"}.
  ProviderError extract_error(const Json* body, std::string_view /*raw*/) const override {
    ProviderError error;
    if (body == nullptr || !body->is_object()) return error;
    const Json* source = body;
    if (auto it = body->find("error"); it != body->end()) {
      if (it->is_object()) {
        source = &*it;
      } else if (it->is_string()) {
        error.message = it->get<std::string>();
        return error;
      }
    }
    error.message = json_string(*source, "message");
    error.type = json_string(*source, "type");
    if (auto it = source->find("code"); it != source->end()) error.code = json_scalar_text(*it);
    return error;
  }

 private:
  void on_event(const SseEvent& event, DecodeSink& sink) {
    if (stopped()) return;
    const std::string_view data = trim(event.data);
    if (data == "[DONE]") {
      sink.on_terminator();
      return;
    }
    const JsonValue* chunk = event_document().parse(data);
    if (chunk == nullptr || !chunk->is_object()) {
      malformed(sink, "stream event is not a JSON object");
      return;
    }
    if (chunk->contains("error")) {
      // Rare: the error readers work on nlohmann's DOM.
      const Json full = Json::parse(data, nullptr, /*allow_exceptions=*/false);
      fail_stream(sink, classify(extract_error(&full, {})));
      return;
    }
    decode_completion(*chunk, true, metadata_sent_, sink);
  }

  SseParser parser_;
  bool metadata_sent_ = false;
};

class OpenAiAdapter final : public Adapter {
 public:
  explicit OpenAiAdapter(bool compatible) : compatible_(compatible) {}

  std::string_view type() const override { return compatible_ ? "openai-compatible" : "openai"; }

  std::variant<BuiltRequest, Failure> build(const protocol::Request& request,
                                            const std::string& model, bool stream,
                                            const ProviderConfig& provider) const override {
    if (auto failure = check_key(provider, /*required=*/!compatible_)) return *failure;
    if (request.messages.empty()) return invalid_request("messages: empty");
    BuiltRequest built;
    auto messages = build_messages(request);
    if (auto* failure = std::get_if<Failure>(&messages)) return *failure;
    Json body = {{"model", model}, {"messages", std::move(std::get<Json>(messages))}};
    body["stream"] = stream;
    if (stream) body["stream_options"] = {{"include_usage", true}};
    if (auto temperature = effective_temperature(request, provider)) {
      // DashScope compatible-mode rejects 2.0 itself ([0, 2)); 1.99 samples the same for any
      // other compatible server.
      body["temperature"] =
          compatible_ ? clamp_temperature(*temperature, 0.0, kCompatibleMaxTemperature,
                                          "openai-compatible range [0, 2)", built.notes)
                      : clamp_temperature(*temperature, 0.0, 2.0, "openai range 0–2", built.notes);
    }
    if (request.top_p) body["top_p"] = *request.top_p;
    if (request.max_tokens) {
      body[compatible_ ? "max_tokens" : "max_completion_tokens"] = *request.max_tokens;
    }
    if (!request.stop.empty()) {
      if (!compatible_ && request.stop.size() > kOpenAiMaxStop) {
        return invalid_request(
            fmt::format("stop: openai accepts at most {} stop sequences (got {})", kOpenAiMaxStop,
                        request.stop.size()));
      }
      body["stop"] = request.stop;
    }
    auto tools = openai_style_tools(request);
    if (auto* failure = std::get_if<Failure>(&tools)) return *failure;
    if (!std::get<Json>(tools).is_null()) body["tools"] = std::move(std::get<Json>(tools));
    auto tool_choice = openai_style_tool_choice(request);
    if (auto* failure = std::get_if<Failure>(&tool_choice)) return *failure;
    if (!std::get<Json>(tool_choice).is_null()) {
      body["tool_choice"] = std::move(std::get<Json>(tool_choice));
    }
    auto response_format = build_response_format(request);
    if (auto* failure = std::get_if<Failure>(&response_format)) return *failure;
    if (!std::get<Json>(response_format).is_null()) {
      body["response_format"] = std::move(std::get<Json>(response_format));
    }
    if (request.think) {
      if (compatible_) {
        // DashScope compatible-mode (Qwen3) and vLLM's Qwen templates read these top-level.
        body["enable_thinking"] = *request.think;
        if (*request.think && request.thinking_budget) {
          body["thinking_budget"] = *request.thinking_budget;
        }
      } else if (*request.think) {
        built.notes.push_back(
            "think not sent (openai chat completions has no switch; reasoning models think "
            "by default)");
      }
    }

    built.http.method = "POST";
    built.http.url = join_url(provider.base_url, "/chat/completions");
    built.http.headers.push_back({"Content-Type", "application/json"});
    built.http.headers.push_back({"Accept", stream ? "text/event-stream" : "application/json"});
    if (!provider.api_key.empty()) {
      built.http.headers.push_back({"Authorization", "Bearer " + provider.api_key});
    }
    apply_extra_headers(built.http.headers, provider);
    built.http.body = dump(body);
    return built;
  }

  std::unique_ptr<ResponseDecoder> make_decoder(bool stream, const ProviderConfig& provider,
                                                const Clock& clock) const override {
    return std::make_unique<OpenAiDecoder>(stream, provider, clock);
  }

 private:
  bool compatible_;
};

}  // namespace

AdapterPtr make_openai_adapter(bool compatible) {
  return std::make_unique<OpenAiAdapter>(compatible);
}

}  // namespace dispatch::worker::detail
