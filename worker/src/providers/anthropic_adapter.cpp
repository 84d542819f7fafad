// Anthropic Messages API. Wire format: docs/providers.md "Anthropic Messages".

#include <fmt/format.h>

#include <array>
#include <optional>
#include <unordered_map>

#include "adapter_common.hpp"
#include "dispatch/worker/stream_parsers.hpp"
#include "tool_links.hpp"

namespace dispatch::worker::detail {
namespace {

constexpr std::string_view kApiVersion = "2023-06-01";
// Anthropic's documented minimum thinking budget.
constexpr uint32_t kMinThinkingBudget = 1024;

constexpr std::array<std::string_view, 1> kBaseUrlEnv = {"ANTHROPIC_BASE_URL"};

const AdapterDescriptor kDescriptor{
    .type = "anthropic",
    .default_base_url = "https://api.anthropic.com",
    .base_url_env = kBaseUrlEnv,
    .api_key_env = "ANTHROPIC_API_KEY",
    .key_required = true,
    .builtin_name = "claude",
    .default_model = "claude-3-5-haiku-latest",
    .base_url_from_env = nullptr,
};

// Anthropic counts cache reads and cache writes apart from input_tokens: the prompt is all
// three, and the reads are the cached part (billed at the cached-input price).
struct PromptUsage {
  uint64_t prompt = 0;
  uint64_t cached = 0;
};
template <class JsonT>
std::optional<PromptUsage> prompt_usage(const JsonT& usage) {
  const std::optional<uint64_t> input = json_uint(usage, "input_tokens");
  if (!input) return std::nullopt;
  const uint64_t read = json_uint(usage, "cache_read_input_tokens").value_or(0);
  const uint64_t written = json_uint(usage, "cache_creation_input_tokens").value_or(0);
  return PromptUsage{*input + read + written, read};
}

// ---- request --------------------------------------------------------------------------------

// The API wants user and assistant turns to alternate, and tool results (role tool here) travel
// inside user turns: consecutive messages of one side are merged into one turn of content
// blocks (system messages between them do not count: they go to `system`). A turn whose only
// block is text is sent in the plain string form.
class TurnWriter {
 public:
  TurnWriter(JsonWriter& out, const std::vector<protocol::Message>& messages)
      : out_(out), messages_(messages) {}

  // Opens the turn message i belongs to, unless it is the open one.
  void enter(std::size_t i) {
    const std::string_view side = side_of(messages_[i]);
    if (side == side_) return;
    close();
    side_ = side;
    lone_text_ = is_lone_text(i);
    out_.begin_object().member("role", side).key("content");
    if (!lone_text_) out_.begin_array();
  }
  void text(std::string_view text) {
    if (lone_text_) {
      out_.value(text);
    } else {
      out_.begin_object().member("type", "text").member("text", text).end_object();
    }
  }
  // Where a block other than text is written.
  JsonWriter& block() { return out_; }
  void close() {
    if (side_.empty()) return;
    if (!lone_text_) out_.end_array();
    out_.end_object();
    side_ = {};
  }

 private:
  static bool is_system(const protocol::Message& m) {
    return m.role == "system" || m.role == "developer";
  }
  static std::string_view side_of(const protocol::Message& m) {
    return m.role == "assistant" ? "assistant" : "user";
  }
  // Message i alone makes its turn, and makes it of one text block.
  bool is_lone_text(std::size_t i) const {
    const protocol::Message& m = messages_[i];
    const bool one_text =
        (m.role == "user" && m.images.empty()) || (m.role == "assistant" && m.tool_calls.empty());
    if (!one_text) return false;
    for (std::size_t j = i + 1; j < messages_.size(); ++j) {
      if (!is_system(messages_[j])) return side_of(messages_[j]) != side_of(m);
    }
    return true;
  }

  JsonWriter& out_;
  const std::vector<protocol::Message>& messages_;
  std::string_view side_;
  bool lone_text_ = false;
};

Result<void, Failure> write_image_block(JsonWriter& out, std::string_view image,
                                        const std::string& where) {
  auto parsed = parse_image(image, where);
  if (!parsed) return parsed.error();
  out.begin_object().member("type", "image").key("source").begin_object();
  if (!parsed->url.empty()) {
    out.member("type", "url").member("url", parsed->url);
  } else {
    out.member("type", "base64").member("media_type", parsed->media_type);
    out.member("data", parsed->base64);
  }
  out.end_object().end_object();
  return {};
}

Result<void, Failure> write_user(TurnWriter& turn, const protocol::Message& m,
                                 const std::string& where) {
  // Anthropic's guidance: images before the text that refers to them.
  for (std::size_t j = 0; j < m.images.size(); ++j) {
    auto image =
        write_image_block(turn.block(), m.images[j], fmt::format("{}.images[{}]", where, j));
    if (!image) return image;
  }
  if (!m.content.empty() || m.images.empty()) turn.text(m.content);
  return {};
}

Result<void, Failure> write_assistant(TurnWriter& turn, const protocol::Message& m,
                                      const std::string& where) {
  // Earlier thinking is not sent back: Anthropic only accepts it with its signature.
  if (!m.content.empty() || m.tool_calls.empty()) turn.text(m.content);
  for (std::size_t j = 0; j < m.tool_calls.size(); ++j) {
    const protocol::ToolCall& call = m.tool_calls[j];
    const std::string call_where = fmt::format("{}.tool_calls[{}]", where, j);
    if (call.id.empty()) return invalid_request(call_where + ".id: empty");
    auto input = json_object_text(call.arguments, call_where + ".arguments");
    if (!input) return input.error();
    JsonWriter& out = turn.block();
    out.begin_object().member("type", "tool_use").member("id", call.id);
    out.member("name", call.name).key("input").raw(*input).end_object();
  }
  return {};
}

Result<void, Failure> write_tool_result(TurnWriter& turn, const protocol::Request& request,
                                        std::size_t i, const ToolLinks& links) {
  const protocol::Message& m = request.messages[i];
  std::string_view call_id = m.tool_call_id;
  if (call_id.empty()) call_id = links.call_id_for_name(i, m.tool_name);
  if (call_id.empty()) {
    return invalid_request(fmt::format(
        "messages[{}]: tool result needs tool_call_id (or a tool_name matching an earlier "
        "assistant tool call)",
        i));
  }
  JsonWriter& out = turn.block();
  out.begin_object().member("type", "tool_result").member("tool_use_id", call_id);
  out.member("content", m.content).end_object();
  return {};
}

Result<void, Failure> write_turn_content(TurnWriter& turn, const protocol::Request& request,
                                         std::size_t i, const ToolLinks& links) {
  const protocol::Message& m = request.messages[i];
  const std::string where = fmt::format("messages[{}]", i);
  if (m.role == "user") return write_user(turn, m, where);
  if (m.role == "assistant") return write_assistant(turn, m, where);
  return write_tool_result(turn, request, i, links);
}

// System (and developer) messages go to `system` (write_system); the rest become turns.
Result<void, Failure> write_turns(JsonWriter& out, const protocol::Request& request) {
  const ToolLinks links(request.messages);
  TurnWriter turn(out, request.messages);
  bool any_turn = false;
  out.key("messages").begin_array();
  for (std::size_t i = 0; i < request.messages.size(); ++i) {
    const protocol::Message& m = request.messages[i];
    if (auto images = check_images_only_in_user(m, i); !images) return images;
    if (m.role == "system" || m.role == "developer") continue;
    if (m.role != "user" && m.role != "assistant" && m.role != "tool") {
      return unknown_role(i, m.role);
    }
    turn.enter(i);
    if (auto written = write_turn_content(turn, request, i, links); !written) return written;
    any_turn = true;
  }
  turn.close();
  out.end_array();
  if (!any_turn) return invalid_request("messages: no user or assistant message");
  return {};
}

// One system message is sent as a string, several as text blocks.
void write_system(JsonWriter& out, const protocol::Request& request) {
  std::vector<const std::string*> texts;
  for (const protocol::Message& m : request.messages) {
    if (m.role == "system" || m.role == "developer") texts.push_back(&m.content);
  }
  if (texts.empty()) return;
  out.key("system");
  if (texts.size() == 1) {
    out.value(*texts.front());
    return;
  }
  out.begin_array();
  for (const std::string* text : texts) {
    out.begin_object().member("type", "text").member("text", *text).end_object();
  }
  out.end_array();
}

Result<void, Failure> write_tools(JsonWriter& out, const protocol::Request& request) {
  if (request.tools.empty()) return {};
  out.key("tools").begin_array();
  for (std::size_t i = 0; i < request.tools.size(); ++i) {
    const protocol::Tool& tool = request.tools[i];
    if (tool.name.empty()) return invalid_request(fmt::format("tools[{}].name: empty", i));
    auto schema = tool_parameters(tool, i);
    if (!schema) return schema.error();
    out.begin_object().member("name", tool.name);
    if (!tool.description.empty()) out.member("description", tool.description);
    out.key("input_schema").raw(*schema).end_object();
  }
  out.end_array();
  return {};
}

Result<void, Failure> write_tool_choice(JsonWriter& out, const protocol::Request& request) {
  if (auto checked = check_tool_choice(request); !checked) return checked;
  const std::string& choice = request.tool_choice;
  if (choice.empty()) return {};
  out.key("tool_choice").begin_object();
  if (choice == "required") {
    out.member("type", "any");
  } else if (choice == "function") {
    out.member("type", "tool").member("name", request.tool_choice_function);
  } else {
    out.member("type", choice);
  }
  out.end_object();
  return {};
}

Result<void, Failure> check_request(const protocol::Request& request) {
  if (request.messages.empty()) return invalid_request("messages: empty");
  if (request.max_tokens && *request.max_tokens == 0) {
    return invalid_request("max_tokens: must be positive");
  }
  if (request.response_format == "json_object" || request.response_format == "json_schema") {
    return invalid_request(fmt::format("response_format: '{}' is not supported by anthropic",
                                       request.response_format));
  }
  return check_response_format(request);
}

// Extended thinking, and the temperature it allows (none: the API rejects one with thinking).
Result<void, Failure> write_thinking_and_temperature(JsonWriter& out,
                                                     const protocol::Request& request,
                                                     const ProviderConfig& provider,
                                                     uint32_t max_tokens,
                                                     std::vector<std::string>& notes) {
  const bool thinking = request.think.value_or(false);
  if (thinking) {
    uint32_t budget = request.thinking_budget.value_or(
        std::max(kMinThinkingBudget, std::min(max_tokens / 2, max_tokens - 1)));
    if (budget < kMinThinkingBudget) {
      notes.push_back(fmt::format("thinking_budget {} raised to {} (anthropic minimum)", budget,
                                  kMinThinkingBudget));
      budget = kMinThinkingBudget;
    }
    if (budget >= max_tokens) {
      return invalid_request(fmt::format(
          "thinking_budget: {} must be below max_tokens ({}) for anthropic", budget, max_tokens));
    }
    out.key("thinking").begin_object().member("type", "enabled");
    out.member("budget_tokens", budget).end_object();
  }
  if (auto temperature = effective_temperature(request, provider)) {
    if (!thinking) {
      out.member("temperature",
                 clamp_temperature(*temperature, 0.0, 1.0, "anthropic range 0–1", notes));
    } else if (request.temperature) {
      notes.push_back("temperature not sent (anthropic thinking requires the default)");
    }
  }
  return {};
}

// ---- response -------------------------------------------------------------------------------

class AnthropicDecoder final : public DecoderBase {
 public:
  using DecoderBase::DecoderBase;

 protected:
  void feed_stream(std::string_view bytes, DecodeListener& listener) override {
    parser_.feed(bytes, [&](const SseEvent& event) { on_event(event, listener); });
    fail_if_overflowed(parser_.overflowed(), "event", listener);
  }

  Result<void, Failure> decode_whole(const Json& body, DecodeListener& listener) override {
    if (json_string(body, "type") == "error") return classify(extract_error(&body, {}));
    listener.on_metadata(json_string(body, "id"), json_string(body, "model"), 0);
    if (const Json* content = json_array(body, "content")) decode_whole_content(*content, listener);
    if (auto raw = json_string(body, "stop_reason"); !raw.empty()) {
      listener.on_finish(normalise_finish_reason(raw), raw);
    }
    if (const Json* usage = json_object(body, "usage")) {
      const PromptUsage prompt = prompt_usage(*usage).value_or(PromptUsage{});
      listener.on_usage(prompt.prompt, json_uint(*usage, "output_tokens").value_or(0));
      listener.on_cached_tokens(prompt.cached);
    }
    return {};
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

  static void decode_whole_content(const Json& content, DecodeListener& listener) {
    uint32_t tool_ordinal = 0;
    for (const Json& block : content) {
      const std::string_view type = json_string(block, "type");
      if (type == "text") {
        if (auto text = json_string(block, "text"); !text.empty()) listener.on_content(text);
      } else if (type == "thinking") {
        if (auto text = json_string(block, "thinking"); !text.empty()) listener.on_thinking(text);
      } else if (type == "tool_use") {
        protocol::ToolCallDelta call;
        call.index = tool_ordinal++;
        call.id = json_string(block, "id");
        call.name = json_string(block, "name");
        const Json* input = json_object(block, "input");
        call.arguments = input != nullptr ? dump(*input) : "{}";
        listener.on_tool_call(call);
      }
    }
  }

  void on_event(const SseEvent& event, DecodeListener& listener) {
    if (stopped()) return;
    const JsonValue* root = event_document().parse(event.data);
    if (root == nullptr || !root->is_object()) {
      malformed(listener, "stream event is not a JSON object");
      return;
    }
    const JsonValue& data = *root;
    std::string_view type = json_string(data, "type");
    if (type.empty()) type = event.event;
    if (type == "content_block_delta") {
      on_block_delta(data, listener);
    } else if (type == "content_block_start") {
      on_block_start(data, listener);
    } else if (type == "content_block_stop") {
      on_block_stop(data, listener);
    } else if (type == "message_start") {
      on_message_start(data, listener);
    } else if (type == "message_delta") {
      on_message_delta(data, listener);
    } else if (type == "message_stop") {
      listener.on_terminator();
    } else if (type == "error") {
      // Rare: the error readers work on nlohmann's DOM.
      const Json full = parse_json(event.data);
      fail_stream(listener, classify(extract_error(&full, {})));
    }
    // ping and event types newer than this build are ignored, as the API asks.
  }

  void on_message_start(const JsonValue& data, DecodeListener& listener) {
    const JsonValue* message = json_object(data, "message");
    if (message == nullptr) {
      malformed(listener, "message_start without message");
      return;
    }
    listener.on_metadata(json_string(*message, "id"), json_string(*message, "model"), 0);
    if (const JsonValue* usage = json_object(*message, "usage")) {
      const PromptUsage prompt = prompt_usage(*usage).value_or(PromptUsage{});
      input_tokens_ = prompt.prompt;
      cached_tokens_ = prompt.cached;
      output_tokens_ = json_uint(*usage, "output_tokens").value_or(0);
      listener.on_usage(input_tokens_, output_tokens_);
      listener.on_cached_tokens(cached_tokens_);
    }
  }

  void on_message_delta(const JsonValue& data, DecodeListener& listener) {
    if (const JsonValue* delta = json_object(data, "delta")) {
      if (auto raw = json_string(*delta, "stop_reason"); !raw.empty()) {
        listener.on_finish(normalise_finish_reason(raw), raw);
      }
    }
    if (const JsonValue* usage = json_object(data, "usage")) {
      // output_tokens is cumulative; newer API versions repeat input_tokens here too.
      if (auto prompt = prompt_usage(*usage)) {
        input_tokens_ = prompt->prompt;
        cached_tokens_ = prompt->cached;
      }
      output_tokens_ = json_uint(*usage, "output_tokens").value_or(output_tokens_);
      listener.on_usage(input_tokens_, output_tokens_);
      listener.on_cached_tokens(cached_tokens_);
    }
  }

  void on_block_start(const JsonValue& data, DecodeListener& listener) {
    const JsonValue* block = json_object(data, "content_block");
    const auto index = json_uint(data, "index");
    if (block == nullptr || !index) {
      malformed(listener, "content_block_start without index or content_block");
      return;
    }
    const std::string_view type = json_string(*block, "type");
    if (type == "text") {
      if (auto text = json_string(*block, "text"); !text.empty()) listener.on_content(text);
    } else if (type == "thinking") {
      if (auto text = json_string(*block, "thinking"); !text.empty()) listener.on_thinking(text);
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
      listener.on_tool_call(delta);
    }
  }

  void on_block_delta(const JsonValue& data, DecodeListener& listener) {
    const JsonValue* delta = json_object(data, "delta");
    const auto index = json_uint(data, "index");
    if (delta == nullptr || !index) {
      malformed(listener, "content_block_delta without index or delta");
      return;
    }
    const std::string_view type = json_string(*delta, "type");
    if (type == "text_delta") {
      if (auto text = json_string(*delta, "text"); !text.empty()) listener.on_content(text);
    } else if (type == "thinking_delta") {
      if (auto text = json_string(*delta, "thinking"); !text.empty()) listener.on_thinking(text);
    } else if (type == "input_json_delta") {
      on_input_json_delta(*delta, *index, listener);
    }
  }

  void on_input_json_delta(const JsonValue& delta, uint64_t index, DecodeListener& listener) {
    auto it = tool_blocks_.find(index);
    if (it == tool_blocks_.end()) {
      malformed(listener, "input_json_delta for a block that is not a tool_use");
      return;
    }
    const std::string_view fragment = json_string(delta, "partial_json");
    if (fragment.empty()) return;
    it->second.had_fragment = true;
    protocol::ToolCallDelta call;
    call.index = it->second.ordinal;
    call.arguments = fragment;
    listener.on_tool_call(call);
  }

  void on_block_stop(const JsonValue& data, DecodeListener& listener) {
    const auto index = json_uint(data, "index");
    if (!index) return;
    auto it = tool_blocks_.find(*index);
    if (it == tool_blocks_.end()) return;
    if (!it->second.had_fragment) {
      protocol::ToolCallDelta call;
      call.index = it->second.ordinal;
      call.arguments = it->second.start_input;
      listener.on_tool_call(call);
    }
    tool_blocks_.erase(it);
  }

  SseParser parser_;
  uint64_t input_tokens_ = 0;
  uint64_t cached_tokens_ = 0;
  uint64_t output_tokens_ = 0;
  uint32_t next_tool_ordinal_ = 0;
  std::unordered_map<uint64_t, ToolBlock> tool_blocks_;  // by content block index
};

// ---- adapter --------------------------------------------------------------------------------

class AnthropicAdapter final : public Adapter {
 public:
  const AdapterDescriptor& descriptor() const override { return kDescriptor; }

  Result<BuiltRequest, Failure> build(const protocol::Request& request, const std::string& model,
                                      bool stream, const ProviderConfig& provider) const override {
    if (auto key = check_key(provider, kDescriptor.key_required); !key) return key.error();
    if (auto checked = check_request(request); !checked) return checked.error();
    BuiltRequest built;
    // max_tokens is required by the API: the request's, else the provider's configured default.
    const uint32_t max_tokens = request.max_tokens.value_or(provider.default_max_tokens);
    JsonWriter out(estimate_request_body_bytes(request));
    out.begin_object().member("model", model).member("max_tokens", max_tokens);
    if (auto turns = write_turns(out, request); !turns) return turns.error();
    write_system(out, request);
    if (stream) out.member("stream", true);
    if (auto thinking =
            write_thinking_and_temperature(out, request, provider, max_tokens, built.notes);
        !thinking) {
      return thinking.error();
    }
    if (request.top_p) out.member("top_p", *request.top_p);
    if (!request.stop.empty()) {
      out.key("stop_sequences").begin_array();
      for (const std::string& stop : request.stop) out.value(stop);
      out.end_array();
    }
    if (auto tools = write_tools(out, request); !tools) return tools.error();
    if (auto choice = write_tool_choice(out, request); !choice) return choice.error();
    out.end_object();

    HttpHeaders headers = {{"x-api-key", provider.api_key},
                           {"anthropic-version", std::string(kApiVersion)}};
    built.http = json_post(join_url(provider.base_url, "/v1/messages"),
                           stream ? "text/event-stream" : "application/json", std::move(headers),
                           provider, out.take());
    return built;
  }

  std::unique_ptr<ResponseDecoder> make_decoder(const DecoderOptions& options,
                                                const ProviderConfig& provider,
                                                const Clock& clock) const override {
    return std::make_unique<AnthropicDecoder>(options, provider, clock);
  }
};

}  // namespace

AdapterPtr make_anthropic_adapter() {
  return std::make_unique<AnthropicAdapter>();
}

}  // namespace dispatch::worker::detail
