// OpenAI Chat Completions, and the same format on OpenAI-compatible servers (vLLM, LM Studio,
// DashScope compatible-mode, ...). Wire format: docs/providers.md "OpenAI Chat Completions".

#include <fmt/format.h>

#include <array>

#include "adapter_common.hpp"
#include "dispatch/common/strings.hpp"
#include "dispatch/worker/stream_parsers.hpp"
#include "tool_links.hpp"

namespace dispatch::worker::detail {
namespace {

// OpenAI rejects a fifth stop sequence; compatible servers document no limit.
constexpr std::size_t kOpenAiMaxStop = 4;
constexpr double kCompatibleMaxTemperature = 1.99;

constexpr std::array<std::string_view, 1> kOpenAiBaseUrlEnv = {"OPENAI_BASE_URL"};

const AdapterDescriptor kOpenAiDescriptor{
    .type = "openai",
    .default_base_url = "https://api.openai.com/v1",
    .base_url_env = kOpenAiBaseUrlEnv,
    .api_key_env = "OPENAI_API_KEY",
    .key_required = true,
    .builtin_name = "openai",
    .default_model = "gpt-4o-mini",
    .base_url_from_env = nullptr,
};

// Any server speaking the format: no default address, a key only when the config names one.
const AdapterDescriptor kCompatibleDescriptor{
    .type = "openai-compatible",
    .default_base_url = "",
    .base_url_env = {},
    .api_key_env = "",
    .key_required = false,
    .builtin_name = "",
    .default_model = "",
    .base_url_from_env = nullptr,
};

// ---- request --------------------------------------------------------------------------------

Result<void, Failure> write_user_content(JsonWriter& out, const protocol::Message& m,
                                         std::string_view where) {
  out.key("content");
  if (m.images.empty()) {
    out.value(m.content);
    return {};
  }
  out.begin_array();
  if (!m.content.empty())
    out.begin_object().member("type", "text").member("text", m.content).end_object();
  for (std::size_t j = 0; j < m.images.size(); ++j) {
    auto image = parse_image(m.images[j], fmt::format("{}.images[{}]", where, j));
    if (!image) return image.error();
    out.begin_object().member("type", "image_url").key("image_url").begin_object().key("url");
    if (!image->url.empty()) {
      out.value(image->url);
    } else {
      out.value(fmt::format("data:{};base64,{}", image->media_type, image->base64));
    }
    out.end_object().end_object();
  }
  out.end_array();
  return {};
}

void write_assistant(JsonWriter& out, const protocol::Message& m) {
  out.member("role", "assistant").key("content");
  // OpenAI wants null, not "", beside tool calls.
  if (m.content.empty() && !m.tool_calls.empty()) {
    out.null();
  } else {
    out.value(m.content);
  }
  if (m.tool_calls.empty()) return;
  out.key("tool_calls").begin_array();
  for (const protocol::ToolCall& call : m.tool_calls) {
    out.begin_object().member("id", call.id).member("type", "function");
    out.key("function").begin_object().member("name", call.name);
    out.member("arguments", call.arguments.empty() ? std::string_view("{}") : call.arguments);
    out.end_object().end_object();
  }
  out.end_array();
}

Result<void, Failure> write_message(JsonWriter& out, const protocol::Request& request,
                                    std::size_t i, const ToolLinks& links) {
  const protocol::Message& m = request.messages[i];
  const std::string where = fmt::format("messages[{}]", i);
  if (auto images = check_images_only_in_user(m, i); !images) return images;
  if (m.role == "system" || m.role == "developer") {
    out.begin_object().member("role", m.role).member("content", m.content).end_object();
  } else if (m.role == "user") {
    out.begin_object().member("role", "user");
    if (auto content = write_user_content(out, m, where); !content) return content;
    out.end_object();
  } else if (m.role == "assistant") {
    out.begin_object();
    write_assistant(out, m);
    out.end_object();
  } else if (m.role == "tool") {
    std::string_view call_id = m.tool_call_id;
    if (call_id.empty()) call_id = links.call_id_for_name(i, m.tool_name);
    if (call_id.empty()) {
      return invalid_request(where +
                             ": tool result needs tool_call_id (or a tool_name matching an "
                             "earlier assistant tool call)");
    }
    out.begin_object().member("role", "tool").member("tool_call_id", call_id);
    out.member("content", m.content).end_object();
  } else {
    return unknown_role(i, m.role);
  }
  return {};
}

Result<void, Failure> write_messages(JsonWriter& out, const protocol::Request& request) {
  const ToolLinks links(request.messages);
  out.key("messages").begin_array();
  for (std::size_t i = 0; i < request.messages.size(); ++i) {
    if (auto written = write_message(out, request, i, links); !written) return written;
  }
  out.end_array();
  return {};
}

Result<void, Failure> write_response_format(JsonWriter& out, const protocol::Request& request) {
  if (auto checked = check_response_format(request); !checked) return checked;
  const std::string& format = request.response_format;
  if (format.empty()) return {};
  out.key("response_format").begin_object().member("type", format);
  if (format == "json_schema") {
    auto schema = json_object_text(request.response_schema, "response_schema", false);
    if (!schema) return schema.error();
    out.key("json_schema").begin_object().member("name", "response");
    out.key("schema").raw(*schema).end_object();
  }
  out.end_object();
  return {};
}

// ---- response -------------------------------------------------------------------------------

std::string json_scalar_text(const Json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_number()) return value.dump();
  return {};
}

class OpenAiDecoder final : public DecoderBase {
 public:
  using DecoderBase::DecoderBase;

 protected:
  void feed_stream(std::string_view bytes, DecodeListener& listener) override {
    parser_.feed(bytes, [&](const SseEvent& event) { on_event(event, listener); });
    fail_if_overflowed(parser_.overflowed(), "event", listener);
  }

  Result<void, Failure> decode_whole(const Json& body, DecodeListener& listener) override {
    if (body.contains("error") && !body.contains("choices")) {
      return classify(extract_error(&body, {}));
    }
    decode_completion(body, false, listener);
    return {};
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
  void on_event(const SseEvent& event, DecodeListener& listener) {
    if (stopped()) return;
    const std::string_view data = trim(event.data);
    if (data == "[DONE]") {
      listener.on_terminator();
      return;
    }
    const JsonValue* chunk = event_document().parse(data);
    if (chunk == nullptr || !chunk->is_object()) {
      malformed(listener, "stream event is not a JSON object");
      return;
    }
    if (chunk->contains("error")) {
      // Rare: the error readers work on nlohmann's DOM.
      const Json full = parse_json(data);
      fail_stream(listener, classify(extract_error(&full, {})));
      return;
    }
    decode_completion(*chunk, true, listener);
  }

  // One chat.completion (whole, an nlohmann Json) or chat.completion.chunk (stream, a
  // JsonValue) object.
  template <class JsonT>
  void decode_completion(const JsonT& body, bool streaming, DecodeListener& listener) {
    decode_metadata(body, listener);
    if (const JsonT* choices = json_array(body, "choices");
        choices != nullptr && !choices->empty()) {
      // n is never set, so the answer is choice 0.
      const JsonT& choice = choices->front();
      if (const JsonT* part = json_object(choice, streaming ? "delta" : "message")) {
        decode_part(*part, listener);
      }
      if (auto raw = json_string(choice, "finish_reason"); !raw.empty()) {
        listener.on_finish(normalise_finish_reason(raw), raw);
      }
    }
    if (const JsonT* usage = json_object(body, "usage")) {
      listener.on_usage(json_uint(*usage, "prompt_tokens").value_or(0),
                        json_uint(*usage, "completion_tokens").value_or(0));
      // A subset of prompt_tokens, billed at the cached-input price.
      if (const JsonT* details = json_object(*usage, "prompt_tokens_details")) {
        listener.on_cached_tokens(json_uint(*details, "cached_tokens").value_or(0));
      }
    }
  }

  template <class JsonT>
  void decode_metadata(const JsonT& body, DecodeListener& listener) {
    if (metadata_sent_) return;
    const std::string_view id = json_string(body, "id");
    const std::string_view model = json_string(body, "model");
    if (id.empty() && model.empty()) return;
    metadata_sent_ = true;
    listener.on_metadata(id, model, static_cast<int64_t>(json_uint(body, "created").value_or(0)));
  }

  // A message (whole) or a delta (stream).
  template <class JsonT>
  static void decode_part(const JsonT& part, DecodeListener& listener) {
    if (auto thinking = json_string(part, "reasoning_content"); !thinking.empty()) {
      listener.on_thinking(thinking);
    } else if (auto reasoning = json_string(part, "reasoning"); !reasoning.empty()) {
      listener.on_thinking(reasoning);
    }
    if (auto content = json_string(part, "content"); !content.empty()) listener.on_content(content);
    decode_openai_tool_calls(part, listener);
  }

  SseParser parser_;
  bool metadata_sent_ = false;
};

// ---- adapter --------------------------------------------------------------------------------

class OpenAiAdapter final : public Adapter {
 public:
  explicit OpenAiAdapter(bool compatible) : compatible_(compatible) {}

  const AdapterDescriptor& descriptor() const override {
    return compatible_ ? kCompatibleDescriptor : kOpenAiDescriptor;
  }

  Result<BuiltRequest, Failure> build(const protocol::Request& request, const std::string& model,
                                      bool stream, const ProviderConfig& provider) const override {
    if (auto key = check_key(provider, descriptor().key_required); !key) return key.error();
    if (request.messages.empty()) return invalid_request("messages: empty");
    BuiltRequest built;
    JsonWriter out(estimate_request_body_bytes(request));
    out.begin_object().member("model", model);
    if (auto messages = write_messages(out, request); !messages) return messages.error();
    out.member("stream", stream);
    if (stream) out.key("stream_options").begin_object().member("include_usage", true).end_object();
    write_sampling(out, request, provider, built.notes);
    if (auto stop = write_stop(out, request); !stop) return stop.error();
    if (auto tools = write_tools(out, request); !tools) return tools.error();
    if (auto format = write_response_format(out, request); !format) return format.error();
    write_thinking(out, request, built.notes);
    out.end_object();

    HttpHeaders headers;
    if (!provider.api_key.empty())
      headers.push_back({"Authorization", "Bearer " + provider.api_key});
    built.http = json_post(join_url(provider.base_url, "/chat/completions"),
                           stream ? "text/event-stream" : "application/json", std::move(headers),
                           provider, out.take());
    return built;
  }

  std::unique_ptr<ResponseDecoder> make_decoder(const DecoderOptions& options,
                                                const ProviderConfig& provider,
                                                const Clock& clock) const override {
    return std::make_unique<OpenAiDecoder>(options, provider, clock);
  }

 private:
  void write_sampling(JsonWriter& out, const protocol::Request& request,
                      const ProviderConfig& provider, std::vector<std::string>& notes) const {
    if (auto temperature = effective_temperature(request, provider)) {
      // DashScope compatible-mode rejects 2.0 itself ([0, 2)); 1.99 samples the same for any
      // other compatible server.
      out.member("temperature",
                 compatible_
                     ? clamp_temperature(*temperature, 0.0, kCompatibleMaxTemperature,
                                         "openai-compatible range [0, 2)", notes)
                     : clamp_temperature(*temperature, 0.0, 2.0, "openai range 0–2", notes));
    }
    if (request.top_p) out.member("top_p", *request.top_p);
    if (request.max_tokens) {
      out.member(compatible_ ? "max_tokens" : "max_completion_tokens", *request.max_tokens);
    }
  }

  Result<void, Failure> write_stop(JsonWriter& out, const protocol::Request& request) const {
    if (request.stop.empty()) return {};
    if (!compatible_ && request.stop.size() > kOpenAiMaxStop) {
      return invalid_request(fmt::format("stop: openai accepts at most {} stop sequences (got {})",
                                         kOpenAiMaxStop, request.stop.size()));
    }
    out.key("stop").begin_array();
    for (const std::string& stop : request.stop) out.value(stop);
    out.end_array();
    return {};
  }

  static Result<void, Failure> write_tools(JsonWriter& out, const protocol::Request& request) {
    if (auto tools = write_openai_style_tools(out, request); !tools) return tools;
    if (auto choice = check_tool_choice(request); !choice) return choice;
    write_openai_style_tool_choice(out, request);
    return {};
  }

  void write_thinking(JsonWriter& out, const protocol::Request& request,
                      std::vector<std::string>& notes) const {
    if (!request.think) return;
    if (compatible_) {
      // DashScope compatible-mode (Qwen3) and vLLM's Qwen templates read these top-level.
      out.member("enable_thinking", *request.think);
      if (*request.think && request.thinking_budget) {
        out.member("thinking_budget", *request.thinking_budget);
      }
    } else if (*request.think) {
      notes.push_back(
          "think not sent (openai chat completions has no switch; reasoning models think by "
          "default)");
    }
  }

  bool compatible_;
};

}  // namespace

AdapterPtr make_openai_adapter() {
  return std::make_unique<OpenAiAdapter>(/*compatible=*/false);
}

AdapterPtr make_openai_compatible_adapter() {
  return std::make_unique<OpenAiAdapter>(/*compatible=*/true);
}

}  // namespace dispatch::worker::detail
