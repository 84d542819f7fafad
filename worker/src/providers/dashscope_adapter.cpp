// DashScope native text generation (Alibaba Model Studio, Qwen).
// Wire format: docs/providers.md "DashScope (Alibaba Model Studio, Qwen)".

#include <fmt/format.h>

#include <array>

#include "adapter_common.hpp"
#include "dispatch/common/strings.hpp"
#include "dispatch/worker/stream_parsers.hpp"
#include "tool_links.hpp"

namespace dispatch::worker::detail {
namespace {

// DashScope documents temperature as [0, 2): 2.0 itself is rejected.
constexpr double kMaxTemperature = 1.99;

// DASHSCOPE_HTTP_BASE_URL is what the DashScope SDK reads; the other is a common alias.
constexpr std::array<std::string_view, 2> kBaseUrlEnv = {"DASHSCOPE_HTTP_BASE_URL",
                                                         "DASHSCOPE_BASE_URL"};

const AdapterDescriptor kDescriptor{
    .type = "dashscope",
    .default_base_url = "https://dashscope.aliyuncs.com/api/v1",
    .base_url_env = kBaseUrlEnv,
    .api_key_env = "DASHSCOPE_API_KEY",
    .key_required = true,
    .builtin_name = "ali",
    .default_model = "qwen-plus",
    .base_url_from_env = nullptr,
};

// ---- request --------------------------------------------------------------------------------

void write_tool_calls(JsonWriter& out, const protocol::Message& m) {
  out.key("tool_calls").begin_array();
  for (std::size_t j = 0; j < m.tool_calls.size(); ++j) {
    const protocol::ToolCall& call = m.tool_calls[j];
    out.begin_object().member("id", call.id).member("type", "function").member("index", j);
    out.key("function").begin_object().member("name", call.name);
    out.member("arguments", call.arguments.empty() ? std::string_view("{}") : call.arguments);
    out.end_object().end_object();
  }
  out.end_array();
}

// A result carries both sides of its call, each found from the other when missing.
void write_tool_result_links(JsonWriter& out, const protocol::Message& m, std::size_t i,
                             const ToolLinks& links) {
  std::string_view call_id = m.tool_call_id;
  if (call_id.empty()) call_id = links.call_id_for_name(i, m.tool_name);
  std::string_view name = m.tool_name;
  if (name.empty()) name = links.name_for_call_id(i, m.tool_call_id);
  if (!call_id.empty()) out.member("tool_call_id", call_id);
  if (!name.empty()) out.member("name", name);
}

Result<void, Failure> write_message(JsonWriter& out, const protocol::Request& request,
                                    std::size_t i, const ToolLinks& links) {
  const protocol::Message& m = request.messages[i];
  if (m.role != "system" && m.role != "user" && m.role != "assistant" && m.role != "tool") {
    return unknown_role(i, m.role);
  }
  if (!m.images.empty()) {
    // Vision models live on a separate multimodal endpoint with another message shape.
    return invalid_request(fmt::format(
        "messages[{}]: images are not supported by the dashscope text-generation endpoint (use "
        "an openai-compatible provider on compatible-mode/v1)",
        i));
  }
  out.begin_object().member("role", m.role).member("content", m.content);
  if (m.role == "assistant" && !m.tool_calls.empty()) {
    write_tool_calls(out, m);
  } else if (m.role == "tool") {
    write_tool_result_links(out, m, i, links);
  }
  out.end_object();
  return {};
}

Result<void, Failure> write_input(JsonWriter& out, const protocol::Request& request) {
  const ToolLinks links(request.messages);
  out.key("input").begin_object().key("messages").begin_array();
  for (std::size_t i = 0; i < request.messages.size(); ++i) {
    if (auto written = write_message(out, request, i, links); !written) return written;
  }
  out.end_array().end_object();
  return {};
}

void write_sampling(JsonWriter& out, const protocol::Request& request,
                    const ProviderConfig& provider, std::vector<std::string>& notes) {
  if (request.max_tokens) out.member("max_tokens", *request.max_tokens);
  if (auto temperature = effective_temperature(request, provider)) {
    out.member("temperature", clamp_temperature(*temperature, 0.0, kMaxTemperature,
                                                "dashscope range [0, 2)", notes));
  }
  if (request.top_p) out.member("top_p", *request.top_p);
  if (!request.stop.empty()) {
    out.key("stop").begin_array();
    for (const std::string& stop : request.stop) out.value(stop);
    out.end_array();
  }
}

Result<void, Failure> write_response_format(JsonWriter& out, const protocol::Request& request) {
  const std::string& format = request.response_format;
  if (format == "json_schema") {
    return invalid_request("response_format: 'json_schema' is not supported by dashscope native");
  }
  if (auto checked = check_response_format(request); !checked) return checked;
  if (format == "json_object") {
    out.key("response_format").begin_object().member("type", "json_object").end_object();
  }
  return {};
}

Result<void, Failure> write_parameters(JsonWriter& out, const protocol::Request& request,
                                       bool stream, const ProviderConfig& provider,
                                       std::vector<std::string>& notes) {
  out.key("parameters").begin_object().member("result_format", "message");
  // Without incremental_output every event repeats the whole text so far.
  if (stream) out.member("incremental_output", true);
  write_sampling(out, request, provider, notes);
  if (auto tools = write_openai_style_tools(out, request); !tools) return tools;
  if (auto choice = check_tool_choice(request); !choice) return choice;
  write_openai_style_tool_choice(out, request);
  if (request.think) {
    out.member("enable_thinking", *request.think);
    if (*request.think && request.thinking_budget) {
      out.member("thinking_budget", *request.thinking_budget);
    }
  }
  if (auto format = write_response_format(out, request); !format) return format;
  out.end_object();
  return {};
}

// ---- response -------------------------------------------------------------------------------

class DashScopeDecoder final : public DecoderBase {
 public:
  using DecoderBase::DecoderBase;

 protected:
  void feed_stream(std::string_view bytes, DecodeListener& listener) override {
    parser_.feed(bytes, [&](const SseEvent& event) { on_event(event, listener); });
    fail_if_overflowed(parser_.overflowed(), "event", listener);
  }

  Result<void, Failure> decode_whole(const Json& body, DecodeListener& listener) override {
    if (is_error(body)) return classify(extract_error(&body, {}));
    decode_object(body, listener);
    return {};
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

  void on_event(const SseEvent& event, DecodeListener& listener) {
    if (stopped()) return;
    const JsonValue* root = event_document().parse(event.data);
    if (root == nullptr || !root->is_object()) {
      if (event.event == "error") {
        ProviderError error;
        error.message = std::string(trim(event.data));
        fail_stream(listener, classify(error));
      } else {
        malformed(listener, "stream event is not a JSON object");
      }
      return;
    }
    if (event.event == "error" || is_error(*root)) {
      // Rare: the error readers work on nlohmann's DOM.
      const Json full = parse_json(event.data);
      fail_stream(listener, classify(extract_error(&full, {})));
      return;
    }
    decode_object(*root, listener);
  }

  // A whole body (nlohmann Json) or a stream event (JsonValue).
  template <class JsonT>
  void decode_object(const JsonT& body, DecodeListener& listener) {
    if (!metadata_sent_) {
      if (auto id = json_string(body, "request_id"); !id.empty()) {
        metadata_sent_ = true;
        listener.on_metadata(id, json_string(body, "model"), 0);
      }
    }
    std::string_view finish_reason;
    if (const JsonT* output = json_object(body, "output")) {
      finish_reason = decode_output(*output, listener);
    }
    if (const JsonT* usage = json_object(body, "usage")) {
      listener.on_usage(json_uint(*usage, "input_tokens").value_or(0),
                        json_uint(*usage, "output_tokens").value_or(0));
      if (const JsonT* details = json_object(*usage, "prompt_tokens_details")) {
        listener.on_cached_tokens(json_uint(*details, "cached_tokens").value_or(0));
      }
    }
    // The string "null" means the answer goes on; there is no other end marker.
    if (!finish_reason.empty() && finish_reason != "null") {
      listener.on_finish(normalise_finish_reason(finish_reason), finish_reason);
      listener.on_terminator();
    }
  }

  // Returns the finish reason, "" while the answer goes on.
  template <class JsonT>
  static std::string_view decode_output(const JsonT& output, DecodeListener& listener) {
    const JsonT* choices = json_array(output, "choices");
    if (choices == nullptr || choices->empty()) {
      // result_format "text"
      if (auto text = json_string(output, "text"); !text.empty()) listener.on_content(text);
      return json_string(output, "finish_reason");
    }
    const JsonT& choice = choices->front();
    if (const JsonT* message = json_object(choice, "message")) decode_message(*message, listener);
    return json_string(choice, "finish_reason");
  }

  template <class JsonT>
  static void decode_message(const JsonT& message, DecodeListener& listener) {
    if (auto thinking = json_string(message, "reasoning_content"); !thinking.empty()) {
      listener.on_thinking(thinking);
    }
    if (auto content = json_string(message, "content"); !content.empty()) {
      listener.on_content(content);
    }
    decode_openai_tool_calls(message, listener);
  }

  SseParser parser_;
  bool metadata_sent_ = false;
};

// ---- adapter --------------------------------------------------------------------------------

class DashScopeAdapter final : public Adapter {
 public:
  const AdapterDescriptor& descriptor() const override { return kDescriptor; }

  Result<BuiltRequest, Failure> build(const protocol::Request& request, const std::string& model,
                                      bool stream, const ProviderConfig& provider) const override {
    if (auto key = check_key(provider, kDescriptor.key_required); !key) return key.error();
    if (request.messages.empty()) return invalid_request("messages: empty");
    BuiltRequest built;
    JsonWriter out(estimate_request_body_bytes(request));
    out.begin_object().member("model", model);
    if (auto input = write_input(out, request); !input) return input.error();
    if (auto parameters = write_parameters(out, request, stream, provider, built.notes);
        !parameters) {
      return parameters.error();
    }
    out.end_object();

    HttpHeaders headers = {{"Authorization", "Bearer " + provider.api_key}};
    if (stream) headers.push_back({"X-DashScope-SSE", "enable"});
    built.http = json_post(join_url(provider.base_url, "/services/aigc/text-generation/generation"),
                           stream ? "text/event-stream" : "application/json", std::move(headers),
                           provider, out.take());
    return built;
  }

  std::unique_ptr<ResponseDecoder> make_decoder(const DecoderOptions& options,
                                                const ProviderConfig& provider,
                                                const Clock& clock) const override {
    return std::make_unique<DashScopeDecoder>(options, provider, clock);
  }
};

}  // namespace

AdapterPtr make_dashscope_adapter() {
  return std::make_unique<DashScopeAdapter>();
}

}  // namespace dispatch::worker::detail
