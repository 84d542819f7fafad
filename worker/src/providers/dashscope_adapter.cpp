// DashScope native text generation (Alibaba Model Studio, Qwen).
// See reference/providers.md "DashScope (Alibaba Model Studio, Qwen)".

#include <fmt/format.h>

#include "adapter_common.hpp"
#include "adapters.hpp"
#include "dispatch/worker/stream_parsers.hpp"
#include "text_util.hpp"

namespace dispatch::worker::detail {
namespace {

// DashScope documents temperature as [0, 2): 2.0 itself is rejected.
constexpr double kMaxTemperature = 1.99;

std::variant<Json, Failure> build_messages(const protocol::Request& request) {
  Json messages = Json::array();
  for (std::size_t i = 0; i < request.messages.size(); ++i) {
    const protocol::Message& m = request.messages[i];
    const std::string where = fmt::format("messages[{}]", i);
    if (m.role != "system" && m.role != "user" && m.role != "assistant" && m.role != "tool") {
      return invalid_request(fmt::format("{}.role: unknown role '{}'", where, m.role));
    }
    if (!m.images.empty()) {
      // Vision models live on a separate multimodal endpoint with another message shape.
      return invalid_request(where +
                             ": images are not supported by the dashscope text-generation "
                             "endpoint (use an openai-compatible provider on compatible-mode/v1)");
    }
    Json message = {{"role", m.role}, {"content", m.content}};
    if (m.role == "assistant" && !m.tool_calls.empty()) {
      Json calls = Json::array();
      for (std::size_t j = 0; j < m.tool_calls.size(); ++j) {
        const protocol::ToolCall& call = m.tool_calls[j];
        calls.push_back(Json{{"id", call.id},
                             {"type", "function"},
                             {"index", j},
                             {"function",
                              {{"name", call.name},
                               {"arguments", call.arguments.empty() ? "{}" : call.arguments}}}});
      }
      message["tool_calls"] = std::move(calls);
    } else if (m.role == "tool") {
      std::string call_id = m.tool_call_id;
      if (call_id.empty()) call_id = call_id_for_tool_name(request.messages, i, m.tool_name);
      std::string name = m.tool_name;
      if (name.empty()) name = tool_name_for_call_id(request.messages, i, m.tool_call_id);
      if (!call_id.empty()) message["tool_call_id"] = std::move(call_id);
      if (!name.empty()) message["name"] = std::move(name);
    }
    messages.push_back(std::move(message));
  }
  return messages;
}

class DashScopeDecoder final : public DecoderBase {
 public:
  using DecoderBase::DecoderBase;

 protected:
  void feed_stream(std::string_view bytes, DecodeSink& sink) override {
    parser_.feed(bytes, [&](const SseEvent& event) { on_event(event, sink); });
    fail_if_overflowed(parser_.overflowed(), "event", sink);
  }

  std::optional<Failure> decode_whole(const Json& body, DecodeSink& sink) override {
    if (is_error(body)) return classify(extract_error(&body, {}));
    decode_object(body, sink);
    return std::nullopt;
  }

  // Flat {"code","message","request_id"}.
  ProviderError extract_error(const Json* body, std::string_view /*raw*/) const override {
    ProviderError error;
    if (body == nullptr) return error;
    error.code = json_string(*body, "code");
    error.message = json_string(*body, "message");
    if (const Json* inner = json_object(*body, "error")) {  // compatible-mode shape, defensively
      error.code = json_string(*inner, "code");
      error.type = json_string(*inner, "type");
      error.message = json_string(*inner, "message");
    }
    return error;
  }

 private:
  template <class JsonT>
  static bool is_error(const JsonT& body) {
    return json_object(body, "output") == nullptr &&
           (!json_string(body, "code").empty() || json_object(body, "error") != nullptr);
  }

  void on_event(const SseEvent& event, DecodeSink& sink) {
    if (stopped()) return;
    const JsonValue* root = event_document().parse(event.data);
    if (root == nullptr || !root->is_object()) {
      if (event.event == "error") {
        ProviderError error;
        error.message = std::string(trim(event.data));
        fail_stream(sink, classify(error));
      } else {
        malformed(sink, "stream event is not a JSON object");
      }
      return;
    }
    if (event.event == "error" || is_error(*root)) {
      // Rare: the error readers work on nlohmann's DOM.
      const Json full = Json::parse(event.data, nullptr, /*allow_exceptions=*/false);
      fail_stream(sink, classify(extract_error(&full, {})));
      return;
    }
    decode_object(*root, sink);
  }

  // A whole body (nlohmann Json) or a stream event (JsonValue).
  template <class JsonT>
  void decode_object(const JsonT& body, DecodeSink& sink) {
    if (!metadata_sent_) {
      if (auto id = json_string(body, "request_id"); !id.empty()) {
        metadata_sent_ = true;
        sink.on_metadata(id, json_string(body, "model"), 0);
      }
    }
    std::string_view finish_reason;
    if (const JsonT* output = json_object(body, "output")) {
      const JsonT* choices = json_array(*output, "choices");
      if (choices != nullptr && !choices->empty()) {
        const JsonT& choice = choices->front();
        if (const JsonT* message = json_object(choice, "message")) {
          if (auto thinking = json_string(*message, "reasoning_content"); !thinking.empty()) {
            sink.on_thinking(thinking);
          }
          if (auto content = json_string(*message, "content"); !content.empty()) {
            sink.on_content(content);
          }
          if (const JsonT* calls = json_array(*message, "tool_calls")) {
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
        finish_reason = json_string(choice, "finish_reason");
      } else {
        // result_format "text"
        if (auto text = json_string(*output, "text"); !text.empty()) sink.on_content(text);
        finish_reason = json_string(*output, "finish_reason");
      }
    }
    if (const JsonT* usage = json_object(body, "usage")) {
      sink.on_usage(json_uint(*usage, "input_tokens").value_or(0),
                    json_uint(*usage, "output_tokens").value_or(0));
    }
    // The string "null" means the answer goes on; there is no other end marker.
    if (!finish_reason.empty() && finish_reason != "null") {
      sink.on_finish(normalise_finish_reason(finish_reason), finish_reason);
      sink.on_terminator();
    }
  }

  SseParser parser_;
  bool metadata_sent_ = false;
};

class DashScopeAdapter final : public Adapter {
 public:
  std::string_view type() const override { return "dashscope"; }

  std::variant<BuiltRequest, Failure> build(const protocol::Request& request,
                                            const std::string& model, bool stream,
                                            const ProviderConfig& provider) const override {
    if (auto failure = check_key(provider, /*required=*/true)) return *failure;
    if (request.messages.empty()) return invalid_request("messages: empty");
    BuiltRequest built;
    auto messages = build_messages(request);
    if (auto* failure = std::get_if<Failure>(&messages)) return *failure;

    Json parameters = {{"result_format", "message"}};
    // Without incremental_output every event repeats the whole text so far.
    if (stream) parameters["incremental_output"] = true;
    if (request.max_tokens) parameters["max_tokens"] = *request.max_tokens;
    if (auto temperature = effective_temperature(request, provider)) {
      parameters["temperature"] = clamp_temperature(*temperature, 0.0, kMaxTemperature,
                                                    "dashscope range [0, 2)", built.notes);
    }
    if (request.top_p) parameters["top_p"] = *request.top_p;
    if (!request.stop.empty()) parameters["stop"] = request.stop;
    auto tools = openai_style_tools(request);
    if (auto* failure = std::get_if<Failure>(&tools)) return *failure;
    if (!std::get<Json>(tools).is_null()) parameters["tools"] = std::move(std::get<Json>(tools));
    auto tool_choice = openai_style_tool_choice(request);
    if (auto* failure = std::get_if<Failure>(&tool_choice)) return *failure;
    if (!std::get<Json>(tool_choice).is_null()) {
      parameters["tool_choice"] = std::move(std::get<Json>(tool_choice));
    }
    if (request.think) {
      parameters["enable_thinking"] = *request.think;
      if (*request.think && request.thinking_budget) {
        parameters["thinking_budget"] = *request.thinking_budget;
      }
    }
    const std::string& format = request.response_format;
    if (format == "json_object") {
      parameters["response_format"] = {{"type", "json_object"}};
    } else if (format == "json_schema") {
      return invalid_request("response_format: 'json_schema' is not supported by dashscope native");
    } else if (!format.empty() && format != "text") {
      return invalid_request(fmt::format(
          "response_format: unknown value '{}' (expected text, json_object or json_schema)",
          format));
    }

    const Json body = {{"model", model},
                       {"input", {{"messages", std::move(std::get<Json>(messages))}}},
                       {"parameters", std::move(parameters)}};
    built.http.method = "POST";
    built.http.url = join_url(provider.base_url, "/services/aigc/text-generation/generation");
    built.http.headers.push_back({"Content-Type", "application/json"});
    built.http.headers.push_back({"Authorization", "Bearer " + provider.api_key});
    if (stream) {
      built.http.headers.push_back({"Accept", "text/event-stream"});
      built.http.headers.push_back({"X-DashScope-SSE", "enable"});
    } else {
      built.http.headers.push_back({"Accept", "application/json"});
    }
    apply_extra_headers(built.http.headers, provider);
    built.http.body = dump(body);
    return built;
  }

  std::unique_ptr<ResponseDecoder> make_decoder(bool stream, const ProviderConfig& provider,
                                                const Clock& clock) const override {
    return std::make_unique<DashScopeDecoder>(stream, provider, clock);
  }
};

}  // namespace

AdapterPtr make_dashscope_adapter() {
  return std::make_unique<DashScopeAdapter>();
}

}  // namespace dispatch::worker::detail
