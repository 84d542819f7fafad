// Ollama /api/chat. See reference/providers.md "Ollama".

#include <fmt/format.h>

#include "adapter_common.hpp"
#include "adapters.hpp"
#include "dispatch/worker/stream_parsers.hpp"
#include "text_util.hpp"

namespace dispatch::worker::detail {
namespace {

std::variant<Json, Failure> build_messages(const protocol::Request& request) {
  Json messages = Json::array();
  for (std::size_t i = 0; i < request.messages.size(); ++i) {
    const protocol::Message& m = request.messages[i];
    const std::string where = fmt::format("messages[{}]", i);
    if (m.role != "system" && m.role != "user" && m.role != "assistant" && m.role != "tool") {
      return invalid_request(fmt::format("{}.role: unknown role '{}'", where, m.role));
    }
    if (!m.images.empty() && m.role != "user") {
      return invalid_request(where + ": images are only supported in user messages");
    }
    Json message = {{"role", m.role}, {"content", m.content}};
    if (!m.images.empty()) {
      Json images = Json::array();
      for (std::size_t j = 0; j < m.images.size(); ++j) {
        const std::string image_where = fmt::format("{}.images[{}]", where, j);
        auto parsed = parse_image(m.images[j], image_where);
        if (auto* failure = std::get_if<Failure>(&parsed)) return std::move(*failure);
        Image& img = std::get<Image>(parsed);
        if (!img.url.empty()) {
          return invalid_request(image_where + ": ollama takes base64 images, not URLs");
        }
        images.push_back(std::move(img.base64));
      }
      message["images"] = std::move(images);
    }
    if (m.role == "assistant") {
      if (!m.thinking.empty()) message["thinking"] = m.thinking;
      if (!m.tool_calls.empty()) {
        Json calls = Json::array();
        for (std::size_t j = 0; j < m.tool_calls.size(); ++j) {
          const protocol::ToolCall& call = m.tool_calls[j];
          auto arguments = parse_json_object(call.arguments,
                                             fmt::format("{}.tool_calls[{}].arguments", where, j));
          if (auto* failure = std::get_if<Failure>(&arguments)) return std::move(*failure);
          Json entry = {{"function",
                         {{"index", j},
                          {"name", call.name},
                          {"arguments", std::move(std::get<Json>(arguments))}}}};
          if (!call.id.empty()) entry["id"] = call.id;
          calls.push_back(std::move(entry));
        }
        message["tool_calls"] = std::move(calls);
      }
    } else if (m.role == "tool") {
      // Ollama matches a result to its call by function name, not id.
      std::string name = m.tool_name;
      if (name.empty()) name = tool_name_for_call_id(request.messages, i, m.tool_call_id);
      if (!name.empty()) message["tool_name"] = std::move(name);
    }
    messages.push_back(std::move(message));
  }
  return messages;
}

class OllamaDecoder final : public DecoderBase {
 public:
  using DecoderBase::DecoderBase;

 protected:
  bool switch_to_whole_on_json() const override { return false; }

  void feed_stream(std::string_view bytes, DecodeSink& sink) override {
    parser_.feed(bytes, [&](std::string_view line) { on_line(line, sink); });
    check_overflow(sink);
  }

  void end_stream(DecodeSink& sink) override {
    parser_.finish([&](std::string_view line) { on_line(line, sink); });
    check_overflow(sink);
  }

  std::optional<Failure> decode_whole(const Json& body, DecodeSink& sink) override {
    if (body.contains("error")) return classify(extract_error(&body, {}));
    decode_object(body, sink);
    return std::nullopt;
  }

  // {"error":"text"}
  ProviderError extract_error(const Json* body, std::string_view /*raw*/) const override {
    ProviderError error;
    if (body == nullptr) return error;
    error.message = json_string(*body, "error");
    if (const Json* inner = json_object(*body, "error")) {
      error.message = json_string(*inner, "message");
      error.type = json_string(*inner, "type");
    }
    return error;
  }

 private:
  void check_overflow(DecodeSink& sink) { fail_if_overflowed(parser_.overflowed(), "line", sink); }

  void on_line(std::string_view line, DecodeSink& sink) {
    if (stopped()) return;
    const JsonValue* object = event_document().parse(line);
    if (object == nullptr || !object->is_object()) {
      malformed(sink, "stream line is not a JSON object");
      return;
    }
    if (object->contains("error")) {
      // Rare: the error readers work on nlohmann's DOM.
      const Json full = Json::parse(line, nullptr, /*allow_exceptions=*/false);
      fail_stream(sink, classify(extract_error(&full, {})));
      return;
    }
    decode_object(*object, sink);
  }

  // A whole body (nlohmann Json) or a stream line (JsonValue).
  template <class JsonT>
  void decode_object(const JsonT& object, DecodeSink& sink) {
    if (!metadata_sent_) {
      metadata_sent_ = true;
      sink.on_metadata("", json_string(object, "model"),
                       parse_rfc3339_unix_s(json_string(object, "created_at")));
    }
    if (const JsonT* message = json_object(object, "message")) {
      if (auto thinking = json_string(*message, "thinking"); !thinking.empty()) {
        sink.on_thinking(thinking);
      }
      if (auto content = json_string(*message, "content"); !content.empty()) {
        sink.on_content(content);
      }
      if (const JsonT* calls = json_array(*message, "tool_calls")) {
        for (const JsonT& call : *calls) decode_tool_call(call, sink);
      }
    }
    if (json_true(object, "done")) {
      sink.on_usage(json_uint(object, "prompt_eval_count").value_or(0),
                    json_uint(object, "eval_count").value_or(0));
      const std::string_view raw = json_string(object, "done_reason");
      // Ollama ends a tool-calling turn with "stop"; the unified vocabulary says tool_calls.
      const std::string_view normalised = tool_calls_seen_ > 0 && (raw.empty() || raw == "stop")
                                              ? protocol::finish::tool_calls
                                              : normalise_finish_reason(raw);
      sink.on_finish(normalised, raw);
      sink.on_terminator();
    }
  }

  // Calls arrive whole, arguments as an object: one delta carries all of a call.
  template <class JsonT>
  void decode_tool_call(const JsonT& call, DecodeSink& sink) {
    const JsonT* function = json_object(call, "function");
    if (function == nullptr) return;
    protocol::ToolCallDelta delta;
    delta.index = tool_calls_seen_++;
    delta.id = json_string(call, "id");
    // Older Ollama sends no ids; other formats need one to pair results with calls.
    if (delta.id.empty()) delta.id = fmt::format("call_{}", delta.index);
    delta.name = json_string(*function, "name");
    if (auto arguments = json_text_or_dump(*function, "arguments")) {
      delta.arguments = std::move(*arguments);
    }
    if (delta.arguments.empty()) delta.arguments = "{}";
    sink.on_tool_call(delta);
  }

  NdjsonParser parser_;
  bool metadata_sent_ = false;
  uint32_t tool_calls_seen_ = 0;
};

class OllamaAdapter final : public Adapter {
 public:
  std::string_view type() const override { return "ollama"; }

  std::variant<BuiltRequest, Failure> build(const protocol::Request& request,
                                            const std::string& model, bool stream,
                                            const ProviderConfig& provider) const override {
    if (auto failure = check_key(provider, /*required=*/false)) return *failure;
    if (request.messages.empty()) return invalid_request("messages: empty");
    BuiltRequest built;
    auto messages = build_messages(request);
    if (auto* failure = std::get_if<Failure>(&messages)) return *failure;
    // stream is always explicit: Ollama streams when it is absent.
    Json body = {
        {"model", model}, {"messages", std::move(std::get<Json>(messages))}, {"stream", stream}};
    Json options = Json::object();
    if (auto temperature = effective_temperature(request, provider)) {
      options["temperature"] =
          clamp_temperature(*temperature, 0.0, 2.0, "request range 0–2", built.notes);
    }
    if (request.top_p) options["top_p"] = *request.top_p;
    if (!request.stop.empty()) options["stop"] = request.stop;
    if (request.max_tokens) options["num_predict"] = *request.max_tokens;
    if (!options.empty()) body["options"] = std::move(options);
    if (request.think) body["think"] = *request.think;

    const std::string& format = request.response_format;
    if (format == "json_object") {
      body["format"] = "json";
    } else if (format == "json_schema") {
      auto schema = parse_json_object(request.response_schema, "response_schema", false);
      if (auto* failure = std::get_if<Failure>(&schema)) return *failure;
      body["format"] = std::move(std::get<Json>(schema));
    } else if (!format.empty() && format != "text") {
      return invalid_request(fmt::format(
          "response_format: unknown value '{}' (expected text, json_object or json_schema)",
          format));
    }

    auto tools = openai_style_tools(request);
    if (auto* failure = std::get_if<Failure>(&tools)) return *failure;
    auto tool_choice = openai_style_tool_choice(request);  // validates the value
    if (auto* failure = std::get_if<Failure>(&tool_choice)) return *failure;
    // Ollama has no tool_choice: "none" is expressed by not offering the tools.
    if (request.tool_choice == "required" || request.tool_choice == "function") {
      built.notes.push_back(
          fmt::format("tool_choice {} not sent (ollama has no tool_choice)", request.tool_choice));
    }
    if (!std::get<Json>(tools).is_null() && request.tool_choice != "none") {
      body["tools"] = std::move(std::get<Json>(tools));
    }

    built.http.method = "POST";
    built.http.url = join_url(provider.base_url, "/api/chat");
    built.http.headers.push_back({"Content-Type", "application/json"});
    built.http.headers.push_back({"Accept", stream ? "application/x-ndjson" : "application/json"});
    // Local servers take no key; ollama.com takes a Bearer key.
    if (!provider.api_key.empty()) {
      built.http.headers.push_back({"Authorization", "Bearer " + provider.api_key});
    }
    apply_extra_headers(built.http.headers, provider);
    built.http.body = dump(body);
    return built;
  }

  std::unique_ptr<ResponseDecoder> make_decoder(bool stream, const ProviderConfig& provider,
                                                const Clock& clock) const override {
    return std::make_unique<OllamaDecoder>(stream, provider, clock);
  }
};

}  // namespace

AdapterPtr make_ollama_adapter() {
  return std::make_unique<OllamaAdapter>();
}

}  // namespace dispatch::worker::detail
