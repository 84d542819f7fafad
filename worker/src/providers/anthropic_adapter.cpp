// Anthropic Messages API. See reference/providers.md "Anthropic Messages".

#include <fmt/format.h>

#include <unordered_map>

#include "adapter_common.hpp"
#include "adapters.hpp"
#include "dispatch/worker/stream_parsers.hpp"
#include "text_util.hpp"

namespace dispatch::worker::detail {
namespace {

constexpr std::string_view kApiVersion = "2023-06-01";
// Anthropic's documented minimum thinking budget.
constexpr uint32_t kMinThinkingBudget = 1024;

struct Turn {
  std::string role;
  Json blocks = Json::array();
};

Json text_block(const std::string& text) {
  return Json{{"type", "text"}, {"text", text}};
}

// Appends to the previous turn when the role repeats: the API wants user/assistant turns to
// alternate, and tool results (role tool here) travel inside user turns.
void add_turn(std::vector<Turn>& turns, const std::string& role, Json blocks) {
  if (turns.empty() || turns.back().role != role) {
    turns.push_back(Turn{role, Json::array()});
  }
  for (Json& block : blocks) turns.back().blocks.push_back(std::move(block));
}

std::variant<Json, Failure> image_block(const std::string& image, const std::string& where) {
  auto parsed = parse_image(image, where);
  if (auto* failure = std::get_if<Failure>(&parsed)) return std::move(*failure);
  const Image& img = std::get<Image>(parsed);
  if (!img.url.empty()) {
    return Json{{"type", "image"}, {"source", {{"type", "url"}, {"url", img.url}}}};
  }
  return Json{
      {"type", "image"},
      {"source", {{"type", "base64"}, {"media_type", img.media_type}, {"data", img.base64}}}};
}

struct Conversation {
  Json system;  // null, a string, or text blocks
  Json messages;
};

std::variant<Conversation, Failure> build_conversation(const protocol::Request& request) {
  std::vector<std::string> system_texts;
  std::vector<Turn> turns;
  for (std::size_t i = 0; i < request.messages.size(); ++i) {
    const protocol::Message& m = request.messages[i];
    const std::string where = fmt::format("messages[{}]", i);
    if (!m.images.empty() && m.role != "user") {
      return invalid_request(where + ": images are only supported in user messages");
    }
    if (m.role == "system" || m.role == "developer") {
      system_texts.push_back(m.content);
    } else if (m.role == "user") {
      Json blocks = Json::array();
      // Anthropic's guidance: images before the text that refers to them.
      for (std::size_t j = 0; j < m.images.size(); ++j) {
        auto block = image_block(m.images[j], fmt::format("{}.images[{}]", where, j));
        if (auto* failure = std::get_if<Failure>(&block)) return std::move(*failure);
        blocks.push_back(std::move(std::get<Json>(block)));
      }
      if (!m.content.empty() || blocks.empty()) blocks.push_back(text_block(m.content));
      add_turn(turns, "user", std::move(blocks));
    } else if (m.role == "assistant") {
      // Earlier thinking is not sent back: Anthropic only accepts it with its signature.
      Json blocks = Json::array();
      if (!m.content.empty() || m.tool_calls.empty()) blocks.push_back(text_block(m.content));
      for (std::size_t j = 0; j < m.tool_calls.size(); ++j) {
        const protocol::ToolCall& call = m.tool_calls[j];
        const std::string call_where = fmt::format("{}.tool_calls[{}]", where, j);
        if (call.id.empty()) return invalid_request(call_where + ".id: empty");
        auto input = parse_json_object(call.arguments, call_where + ".arguments");
        if (auto* failure = std::get_if<Failure>(&input)) return std::move(*failure);
        blocks.push_back(Json{{"type", "tool_use"},
                              {"id", call.id},
                              {"name", call.name},
                              {"input", std::move(std::get<Json>(input))}});
      }
      add_turn(turns, "assistant", std::move(blocks));
    } else if (m.role == "tool") {
      std::string call_id = m.tool_call_id;
      if (call_id.empty()) call_id = call_id_for_tool_name(request.messages, i, m.tool_name);
      if (call_id.empty()) {
        return invalid_request(where +
                               ": tool result needs tool_call_id (or a tool_name "
                               "matching an earlier assistant tool call)");
      }
      Json block = {{"type", "tool_result"}, {"tool_use_id", call_id}, {"content", m.content}};
      add_turn(turns, "user", Json::array({std::move(block)}));
    } else {
      return invalid_request(fmt::format("{}.role: unknown role '{}'", where, m.role));
    }
  }
  if (turns.empty()) return invalid_request("messages: no user or assistant message");

  Conversation out;
  out.messages = Json::array();
  for (Turn& turn : turns) {
    Json content = std::move(turn.blocks);
    // A lone text block is sent as the plain string form.
    if (content.size() == 1 && content[0]["type"] == "text") {
      content = content[0]["text"];
    }
    out.messages.push_back(Json{{"role", turn.role}, {"content", std::move(content)}});
  }
  if (system_texts.size() == 1) {
    out.system = system_texts.front();
  } else if (system_texts.size() > 1) {
    out.system = Json::array();
    for (const std::string& text : system_texts) out.system.push_back(text_block(text));
  }
  return out;
}

std::variant<Json, Failure> build_tools(const protocol::Request& request) {
  Json tools = Json::array();
  for (std::size_t i = 0; i < request.tools.size(); ++i) {
    const protocol::Tool& tool = request.tools[i];
    if (tool.name.empty()) return invalid_request(fmt::format("tools[{}].name: empty", i));
    auto schema = tool_parameters(tool, i);
    if (auto* failure = std::get_if<Failure>(&schema)) return std::move(*failure);
    Json entry = {{"name", tool.name}, {"input_schema", std::move(std::get<Json>(schema))}};
    if (!tool.description.empty()) entry["description"] = tool.description;
    tools.push_back(std::move(entry));
  }
  return tools;
}

std::variant<Json, Failure> build_tool_choice(const protocol::Request& request) {
  const std::string& choice = request.tool_choice;
  if (choice.empty()) return Json();
  if (choice == "auto" || choice == "none") return Json{{"type", choice}};
  if (choice == "required") return Json{{"type", "any"}};
  if (choice == "function") {
    if (request.tool_choice_function.empty()) {
      return invalid_request("tool_choice_function: empty while tool_choice is 'function'");
    }
    return Json{{"type", "tool"}, {"name", request.tool_choice_function}};
  }
  return invalid_request(fmt::format(
      "tool_choice: unknown value '{}' (expected auto, none, required or function)", choice));
}

class AnthropicDecoder final : public DecoderBase {
 public:
  using DecoderBase::DecoderBase;

 protected:
  void feed_stream(std::string_view bytes, DecodeSink& sink) override {
    parser_.feed(bytes, [&](const SseEvent& event) { on_event(event, sink); });
    fail_if_overflowed(parser_.overflowed(), "event", sink);
  }

  std::optional<Failure> decode_whole(const Json& body, DecodeSink& sink) override {
    if (json_string(body, "type") == "error") return classify(extract_error(&body, {}));
    sink.on_metadata(json_string(body, "id"), json_string(body, "model"), 0);
    uint32_t tool_ordinal = 0;
    if (const Json* content = json_array(body, "content")) {
      for (const Json& block : *content) {
        const std::string_view type = json_string(block, "type");
        if (type == "text") {
          if (auto text = json_string(block, "text"); !text.empty()) sink.on_content(text);
        } else if (type == "thinking") {
          if (auto text = json_string(block, "thinking"); !text.empty()) sink.on_thinking(text);
        } else if (type == "tool_use") {
          protocol::ToolCallDelta call;
          call.index = tool_ordinal++;
          call.id = json_string(block, "id");
          call.name = json_string(block, "name");
          const Json* input = json_object(block, "input");
          call.arguments = input != nullptr ? dump(*input) : "{}";
          sink.on_tool_call(call);
        }
      }
    }
    if (auto raw = json_string(body, "stop_reason"); !raw.empty()) {
      sink.on_finish(normalise_finish_reason(raw), raw);
    }
    if (const Json* usage = json_object(body, "usage")) {
      sink.on_usage(json_uint(*usage, "input_tokens").value_or(0),
                    json_uint(*usage, "output_tokens").value_or(0));
    }
    return std::nullopt;
  }

  // {"type":"error","error":{"type","message"},"request_id"}
  ProviderError extract_error(const Json* body, std::string_view /*raw*/) const override {
    ProviderError error;
    if (body == nullptr) return error;
    if (const Json* inner = json_object(*body, "error")) {
      error.type = json_string(*inner, "type");
      error.message = json_string(*inner, "message");
    } else {
      error.message = json_string(*body, "error");
      if (error.message.empty()) error.message = json_string(*body, "message");
    }
    return error;
  }

 private:
  struct ToolBlock {
    uint32_t ordinal = 0;
    bool had_fragment = false;
    std::string start_input;  // used when no input_json_delta follows
  };

  void on_event(const SseEvent& event, DecodeSink& sink) {
    if (stopped()) return;
    const JsonValue* root = event_document().parse(event.data);
    if (root == nullptr || !root->is_object()) {
      malformed(sink, "stream event is not a JSON object");
      return;
    }
    const JsonValue& data = *root;
    std::string_view type = json_string(data, "type");
    if (type.empty()) type = event.event;
    if (type == "content_block_delta") {
      on_block_delta(data, sink);
    } else if (type == "content_block_start") {
      on_block_start(data, sink);
    } else if (type == "content_block_stop") {
      on_block_stop(data, sink);
    } else if (type == "message_start") {
      const JsonValue* message = json_object(data, "message");
      if (message == nullptr) {
        malformed(sink, "message_start without message");
        return;
      }
      sink.on_metadata(json_string(*message, "id"), json_string(*message, "model"), 0);
      if (const JsonValue* usage = json_object(*message, "usage")) {
        input_tokens_ = json_uint(*usage, "input_tokens").value_or(0);
        output_tokens_ = json_uint(*usage, "output_tokens").value_or(0);
        sink.on_usage(input_tokens_, output_tokens_);
      }
    } else if (type == "message_delta") {
      if (const JsonValue* delta = json_object(data, "delta")) {
        if (auto raw = json_string(*delta, "stop_reason"); !raw.empty()) {
          sink.on_finish(normalise_finish_reason(raw), raw);
        }
      }
      if (const JsonValue* usage = json_object(data, "usage")) {
        // output_tokens is cumulative; newer API versions repeat input_tokens here too.
        input_tokens_ = json_uint(*usage, "input_tokens").value_or(input_tokens_);
        output_tokens_ = json_uint(*usage, "output_tokens").value_or(output_tokens_);
        sink.on_usage(input_tokens_, output_tokens_);
      }
    } else if (type == "message_stop") {
      sink.on_terminator();
    } else if (type == "error") {
      // Rare: the error readers work on nlohmann's DOM.
      const Json full = Json::parse(event.data, nullptr, /*allow_exceptions=*/false);
      fail_stream(sink, classify(extract_error(&full, {})));
    }
    // ping and event types newer than this build are ignored, as the API asks.
  }

  void on_block_start(const JsonValue& data, DecodeSink& sink) {
    const JsonValue* block = json_object(data, "content_block");
    const auto index = json_uint(data, "index");
    if (block == nullptr || !index) {
      malformed(sink, "content_block_start without index or content_block");
      return;
    }
    const std::string_view type = json_string(*block, "type");
    if (type == "text") {
      if (auto text = json_string(*block, "text"); !text.empty()) sink.on_content(text);
    } else if (type == "thinking") {
      if (auto text = json_string(*block, "thinking"); !text.empty()) sink.on_thinking(text);
    } else if (type == "tool_use") {
      ToolBlock tool;
      tool.ordinal = next_tool_ordinal_++;
      const JsonValue* input = json_object(*block, "input");
      tool.start_input = input != nullptr && !input->empty() ? dump(*input) : "{}";
      protocol::ToolCallDelta delta;
      delta.index = tool.ordinal;
      delta.id = json_string(*block, "id");
      delta.name = json_string(*block, "name");
      tool_blocks_[*index] = std::move(tool);
      sink.on_tool_call(delta);
    }
  }

  void on_block_delta(const JsonValue& data, DecodeSink& sink) {
    const JsonValue* delta = json_object(data, "delta");
    const auto index = json_uint(data, "index");
    if (delta == nullptr || !index) {
      malformed(sink, "content_block_delta without index or delta");
      return;
    }
    const std::string_view type = json_string(*delta, "type");
    if (type == "text_delta") {
      if (auto text = json_string(*delta, "text"); !text.empty()) sink.on_content(text);
    } else if (type == "thinking_delta") {
      if (auto text = json_string(*delta, "thinking"); !text.empty()) sink.on_thinking(text);
    } else if (type == "input_json_delta") {
      auto it = tool_blocks_.find(*index);
      if (it == tool_blocks_.end()) {
        malformed(sink, "input_json_delta for a block that is not a tool_use");
        return;
      }
      const std::string_view fragment = json_string(*delta, "partial_json");
      if (fragment.empty()) return;
      it->second.had_fragment = true;
      protocol::ToolCallDelta call;
      call.index = it->second.ordinal;
      call.arguments = fragment;
      sink.on_tool_call(call);
    }
  }

  void on_block_stop(const JsonValue& data, DecodeSink& sink) {
    const auto index = json_uint(data, "index");
    if (!index) return;
    auto it = tool_blocks_.find(*index);
    if (it == tool_blocks_.end()) return;
    if (!it->second.had_fragment) {
      protocol::ToolCallDelta call;
      call.index = it->second.ordinal;
      call.arguments = it->second.start_input;
      sink.on_tool_call(call);
    }
    tool_blocks_.erase(it);
  }

  SseParser parser_;
  uint64_t input_tokens_ = 0;
  uint64_t output_tokens_ = 0;
  uint32_t next_tool_ordinal_ = 0;
  std::unordered_map<uint64_t, ToolBlock> tool_blocks_;  // by content block index
};

class AnthropicAdapter final : public Adapter {
 public:
  std::string_view type() const override { return "anthropic"; }

  std::variant<BuiltRequest, Failure> build(const protocol::Request& request,
                                            const std::string& model, bool stream,
                                            const ProviderConfig& provider) const override {
    if (auto failure = check_key(provider, /*required=*/true)) return *failure;
    if (request.messages.empty()) return invalid_request("messages: empty");
    if (request.max_tokens && *request.max_tokens == 0) {
      return invalid_request("max_tokens: must be positive");
    }
    if (request.response_format == "json_object" || request.response_format == "json_schema") {
      return invalid_request(fmt::format("response_format: '{}' is not supported by anthropic",
                                         request.response_format));
    }
    if (!request.response_format.empty() && request.response_format != "text") {
      return invalid_request(fmt::format(
          "response_format: unknown value '{}' (expected text, json_object or json_schema)",
          request.response_format));
    }
    BuiltRequest built;
    auto conversation = build_conversation(request);
    if (auto* failure = std::get_if<Failure>(&conversation)) return *failure;
    Conversation& conv = std::get<Conversation>(conversation);

    // max_tokens is required by the API: the request's, else the provider's configured default.
    const uint32_t max_tokens = request.max_tokens.value_or(provider.default_max_tokens);
    Json body = {
        {"model", model}, {"max_tokens", max_tokens}, {"messages", std::move(conv.messages)}};
    if (!conv.system.is_null()) body["system"] = std::move(conv.system);
    if (stream) body["stream"] = true;

    const bool thinking = request.think.value_or(false);
    if (thinking) {
      uint32_t budget = request.thinking_budget.value_or(
          std::max(kMinThinkingBudget, std::min(max_tokens / 2, max_tokens - 1)));
      if (budget < kMinThinkingBudget) {
        built.notes.push_back(fmt::format("thinking_budget {} raised to {} (anthropic minimum)",
                                          budget, kMinThinkingBudget));
        budget = kMinThinkingBudget;
      }
      if (budget >= max_tokens) {
        return invalid_request(fmt::format(
            "thinking_budget: {} must be below max_tokens ({}) for anthropic", budget, max_tokens));
      }
      body["thinking"] = {{"type", "enabled"}, {"budget_tokens", budget}};
    }
    if (auto temperature = effective_temperature(request, provider)) {
      if (thinking) {
        // The API rejects a temperature with extended thinking enabled.
        if (request.temperature) {
          built.notes.push_back("temperature not sent (anthropic thinking requires the default)");
        }
      } else {
        body["temperature"] =
            clamp_temperature(*temperature, 0.0, 1.0, "anthropic range 0–1", built.notes);
      }
    }
    if (request.top_p) body["top_p"] = *request.top_p;
    if (!request.stop.empty()) body["stop_sequences"] = request.stop;
    if (!request.tools.empty()) {
      auto tools = build_tools(request);
      if (auto* failure = std::get_if<Failure>(&tools)) return *failure;
      body["tools"] = std::move(std::get<Json>(tools));
    }
    auto tool_choice = build_tool_choice(request);
    if (auto* failure = std::get_if<Failure>(&tool_choice)) return *failure;
    if (!std::get<Json>(tool_choice).is_null()) {
      body["tool_choice"] = std::move(std::get<Json>(tool_choice));
    }

    built.http.method = "POST";
    built.http.url = join_url(provider.base_url, "/v1/messages");
    built.http.headers.push_back({"Content-Type", "application/json"});
    built.http.headers.push_back({"Accept", stream ? "text/event-stream" : "application/json"});
    built.http.headers.push_back({"x-api-key", provider.api_key});
    built.http.headers.push_back({"anthropic-version", std::string(kApiVersion)});
    apply_extra_headers(built.http.headers, provider);
    built.http.body = dump(body);
    return built;
  }

  std::unique_ptr<ResponseDecoder> make_decoder(bool stream, const ProviderConfig& provider,
                                                const Clock& clock) const override {
    return std::make_unique<AnthropicDecoder>(stream, provider, clock);
  }
};

}  // namespace

AdapterPtr make_anthropic_adapter() {
  return std::make_unique<AnthropicAdapter>();
}

}  // namespace dispatch::worker::detail
