// Ollama /api/chat. Wire format: docs/providers.md "Ollama".

#include <fmt/format.h>

#include <array>

#include "adapter_common.hpp"
#include "dispatch/common/strings.hpp"
#include "dispatch/worker/stream_parsers.hpp"
#include "tool_links.hpp"

namespace dispatch::worker::detail {
namespace {

// OLLAMA_HOST is what `ollama serve` binds, so users set it without a scheme ("0.0.0.0:11434",
// "myhost", ":11434"); Ollama's own client fills in http://, 127.0.0.1 and port 11434.
std::string base_url_from_ollama_host(std::string_view value) {
  std::string url(trim(value));
  std::string scheme = "http";
  if (const std::size_t sep = url.find("://"); sep != std::string::npos) {
    scheme = to_lower(url.substr(0, sep));
    url = url.substr(sep + 3);
  }
  std::string host = url;
  std::string path;
  if (const std::size_t slash = url.find('/'); slash != std::string::npos) {
    host = url.substr(0, slash);
    path = url.substr(slash);
  }
  if (host.empty() || host.front() == ':') host = "127.0.0.1" + host;
  const std::size_t bracket = host.rfind(']');
  const std::size_t colon = host.rfind(':');
  const bool has_port =
      colon != std::string::npos && (bracket == std::string::npos || colon > bracket);
  if (!has_port && scheme == "http") host += ":11434";
  while (!path.empty() && path.back() == '/') path.pop_back();
  return scheme + "://" + host + path;
}

constexpr std::array<std::string_view, 1> kBaseUrlEnv = {"OLLAMA_HOST"};

const AdapterDescriptor kDescriptor{
    .type = "ollama",
    .default_base_url = "http://localhost:11434",
    .base_url_env = kBaseUrlEnv,
    .api_key_env = "",
    .key_required = false,  // local servers take none; ollama.com takes a Bearer key
    .builtin_name = "ollama",
    .default_model = "llama3.2",
    .base_url_from_env = &base_url_from_ollama_host,
};

// ---- request --------------------------------------------------------------------------------

Result<void, Failure> write_images(JsonWriter& out, const protocol::Message& m,
                                   const std::string& where) {
  out.key("images").begin_array();
  for (std::size_t j = 0; j < m.images.size(); ++j) {
    const std::string image_where = fmt::format("{}.images[{}]", where, j);
    auto image = parse_image(m.images[j], image_where);
    if (!image) return image.error();
    if (!image->url.empty()) {
      return invalid_request(image_where + ": ollama takes base64 images, not URLs");
    }
    out.value(image->base64);
  }
  out.end_array();
  return {};
}

// Calls carry their arguments as an object, and an index.
Result<void, Failure> write_tool_calls(JsonWriter& out, const protocol::Message& m,
                                       const std::string& where) {
  out.key("tool_calls").begin_array();
  for (std::size_t j = 0; j < m.tool_calls.size(); ++j) {
    const protocol::ToolCall& call = m.tool_calls[j];
    auto arguments =
        json_object_text(call.arguments, fmt::format("{}.tool_calls[{}].arguments", where, j));
    if (!arguments) return arguments.error();
    out.begin_object().key("function").begin_object().member("index", j);
    out.member("name", call.name).key("arguments").raw(*arguments).end_object();
    if (!call.id.empty()) out.member("id", call.id);
    out.end_object();
  }
  out.end_array();
  return {};
}

Result<void, Failure> write_message(JsonWriter& out, const protocol::Request& request,
                                    std::size_t i, const ToolLinks& links) {
  const protocol::Message& m = request.messages[i];
  const std::string where = fmt::format("messages[{}]", i);
  if (m.role != "system" && m.role != "user" && m.role != "assistant" && m.role != "tool") {
    return unknown_role(i, m.role);
  }
  if (auto images = check_images_only_in_user(m, i); !images) return images;
  out.begin_object().member("role", m.role).member("content", m.content);
  if (!m.images.empty()) {
    if (auto images = write_images(out, m, where); !images) return images;
  }
  if (m.role == "assistant") {
    if (!m.thinking.empty()) out.member("thinking", m.thinking);
    if (!m.tool_calls.empty()) {
      if (auto calls = write_tool_calls(out, m, where); !calls) return calls;
    }
  } else if (m.role == "tool") {
    // Ollama matches a result to its call by function name, not id.
    std::string_view name = m.tool_name;
    if (name.empty()) name = links.name_for_call_id(i, m.tool_call_id);
    if (!name.empty()) out.member("tool_name", name);
  }
  out.end_object();
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

void write_options(JsonWriter& out, const protocol::Request& request,
                   const ProviderConfig& provider, std::vector<std::string>& notes) {
  const auto temperature = effective_temperature(request, provider);
  if (!temperature && !request.top_p && request.stop.empty() && !request.max_tokens) return;
  out.key("options").begin_object();
  if (temperature) {
    out.member("temperature",
               clamp_temperature(*temperature, 0.0, 2.0, "request range 0–2", notes));
  }
  if (request.top_p) out.member("top_p", *request.top_p);
  if (!request.stop.empty()) {
    out.key("stop").begin_array();
    for (const std::string& stop : request.stop) out.value(stop);
    out.end_array();
  }
  if (request.max_tokens) out.member("num_predict", *request.max_tokens);
  out.end_object();
}

// json_object -> "json", json_schema -> the schema itself.
Result<void, Failure> write_format(JsonWriter& out, const protocol::Request& request) {
  if (auto checked = check_response_format(request); !checked) return checked;
  const std::string& format = request.response_format;
  if (format == "json_object") {
    out.member("format", "json");
  } else if (format == "json_schema") {
    auto schema = json_object_text(request.response_schema, "response_schema", false);
    if (!schema) return schema.error();
    out.key("format").raw(*schema);
  }
  return {};
}

// Ollama has no tool_choice: "none" is expressed by not offering the tools.
Result<void, Failure> write_tools(JsonWriter& out, const protocol::Request& request,
                                  std::vector<std::string>& notes) {
  if (auto tools = check_tools(request); !tools) return tools;
  if (auto choice = check_tool_choice(request); !choice) return choice;
  if (request.tool_choice == "required" || request.tool_choice == "function") {
    notes.push_back(
        fmt::format("tool_choice {} not sent (ollama has no tool_choice)", request.tool_choice));
  }
  if (request.tool_choice == "none") return {};
  return write_openai_style_tools(out, request);
}

// ---- response -------------------------------------------------------------------------------

class OllamaDecoder final : public DecoderBase {
 public:
  using DecoderBase::DecoderBase;

 protected:
  bool switch_to_whole_on_json() const override { return false; }

  void feed_stream(std::string_view bytes, DecodeListener& listener) override {
    parser_.feed(bytes, [&](std::string_view line) { on_line(line, listener); });
    check_overflow(listener);
  }

  void end_stream(DecodeListener& listener) override {
    parser_.finish([&](std::string_view line) { on_line(line, listener); });
    check_overflow(listener);
  }

  Result<void, Failure> decode_whole(const Json& body, DecodeListener& listener) override {
    if (body.contains("error")) return classify(extract_error(&body, {}));
    decode_object(body, listener);
    return {};
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
  void check_overflow(DecodeListener& listener) {
    fail_if_overflowed(parser_.overflowed(), "line", listener);
  }

  void on_line(std::string_view line, DecodeListener& listener) {
    if (stopped()) return;
    const JsonValue* object = event_document().parse(line);
    if (object == nullptr || !object->is_object()) {
      malformed(listener, "stream line is not a JSON object");
      return;
    }
    if (object->contains("error")) {
      // Rare: the error readers work on nlohmann's DOM.
      const Json full = parse_json(line);
      fail_stream(listener, classify(extract_error(&full, {})));
      return;
    }
    decode_object(*object, listener);
  }

  // A whole body (nlohmann Json) or a stream line (JsonValue).
  template <class JsonT>
  void decode_object(const JsonT& object, DecodeListener& listener) {
    if (!metadata_sent_) {
      metadata_sent_ = true;
      listener.on_metadata("", json_string(object, "model"),
                           parse_rfc3339_unix_s(json_string(object, "created_at")));
    }
    if (const JsonT* message = json_object(object, "message")) decode_message(*message, listener);
    if (json_true(object, "done")) {
      listener.on_usage(json_uint(object, "prompt_eval_count").value_or(0),
                        json_uint(object, "eval_count").value_or(0));
      const std::string_view raw = json_string(object, "done_reason");
      // Ollama ends a tool-calling turn with "stop"; the unified vocabulary says tool_calls.
      const std::string_view normalised = tool_calls_seen_ > 0 && (raw.empty() || raw == "stop")
                                              ? protocol::finish::tool_calls
                                              : normalise_finish_reason(raw);
      listener.on_finish(normalised, raw);
      listener.on_terminator();
    }
  }

  template <class JsonT>
  void decode_message(const JsonT& message, DecodeListener& listener) {
    if (auto thinking = json_string(message, "thinking"); !thinking.empty()) {
      listener.on_thinking(thinking);
    }
    if (auto content = json_string(message, "content"); !content.empty()) {
      listener.on_content(content);
    }
    if (const JsonT* calls = json_array(message, "tool_calls")) {
      for (const JsonT& call : *calls) decode_tool_call(call, listener);
    }
  }

  // Calls arrive whole, arguments as an object: one delta carries all of a call.
  template <class JsonT>
  void decode_tool_call(const JsonT& call, DecodeListener& listener) {
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
    listener.on_tool_call(delta);
  }

  NdjsonParser parser_;
  bool metadata_sent_ = false;
  uint32_t tool_calls_seen_ = 0;
};

// ---- adapter --------------------------------------------------------------------------------

class OllamaAdapter final : public Adapter {
 public:
  const AdapterDescriptor& descriptor() const override { return kDescriptor; }

  Result<BuiltRequest, Failure> build(const protocol::Request& request, const std::string& model,
                                      bool stream, const ProviderConfig& provider) const override {
    if (auto key = check_key(provider, kDescriptor.key_required); !key) return key.error();
    if (request.messages.empty()) return invalid_request("messages: empty");
    BuiltRequest built;
    JsonWriter out(estimate_request_body_bytes(request));
    out.begin_object().member("model", model);
    if (auto messages = write_messages(out, request); !messages) return messages.error();
    // stream is always explicit: Ollama streams when it is absent.
    out.member("stream", stream);
    write_options(out, request, provider, built.notes);
    if (request.think) out.member("think", *request.think);
    if (auto format = write_format(out, request); !format) return format.error();
    if (auto tools = write_tools(out, request, built.notes); !tools) return tools.error();
    out.end_object();

    HttpHeaders headers;
    if (!provider.api_key.empty())
      headers.push_back({"Authorization", "Bearer " + provider.api_key});
    built.http = json_post(join_url(provider.base_url, "/api/chat"),
                           stream ? "application/x-ndjson" : "application/json", std::move(headers),
                           provider, out.take());
    return built;
  }

  std::unique_ptr<ResponseDecoder> make_decoder(const DecoderOptions& options,
                                                const ProviderConfig& provider,
                                                const Clock& clock) const override {
    return std::make_unique<OllamaDecoder>(options, provider, clock);
  }
};

}  // namespace

AdapterPtr make_ollama_adapter() {
  return std::make_unique<OllamaAdapter>();
}

}  // namespace dispatch::worker::detail
