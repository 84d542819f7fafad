// Pure parts of `dispatch batch`: line parsing and validation, output shaping, resume scan,
// progress text. No I/O here, so all of it is unit-tested.

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "dispatch/cli/batch.hpp"
#include "dispatch/cli/json_output.hpp"
#include "dispatch/protocol/text.hpp"
#include "dispatch/request.hpp"

namespace dispatch::cli {

using nlohmann::json;

namespace {

constexpr std::string_view kChatUrl = "/v1/chat/completions";

LineProblem problem(std::string reason) {
  return LineProblem{std::move(reason)};
}

// nlohmann's messages start with "[json.exception.parse_error.101] "; users need the rest.
std::string short_json_error(const std::exception& e) {
  std::string_view text = e.what();
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find("] ");
    if (close != std::string_view::npos) text.remove_prefix(close + 2);
  }
  return std::string(text);
}

std::optional<std::string> read_content(const json& content, const std::string& where,
                                        protocol::Message& message, std::string& error) {
  if (content.is_null()) return std::string();
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) {
    error = where + " must be a string, an array of parts or null";
    return std::nullopt;
  }
  std::string text;
  for (std::size_t i = 0; i < content.size(); ++i) {
    const auto& part = content[i];
    const std::string part_where = where + "[" + std::to_string(i) + "]";
    if (!part.is_object() || !part.contains("type") || !part["type"].is_string()) {
      error = part_where + " must be an object with a \"type\"";
      return std::nullopt;
    }
    const auto type = part["type"].get<std::string>();
    if (type == "text") {
      if (!part.contains("text") || !part["text"].is_string()) {
        error = part_where + ".text must be a string";
        return std::nullopt;
      }
      if (!text.empty()) text += "\n";
      text += part["text"].get<std::string>();
    } else if (type == "image_url") {
      const json* url = nullptr;
      if (part.contains("image_url")) {
        const auto& image = part["image_url"];
        if (image.is_string()) {
          url = &image;
        } else if (image.is_object() && image.contains("url") && image["url"].is_string()) {
          url = &image["url"];
        }
      }
      if (url == nullptr) {
        error = part_where + ".image_url.url must be a string";
        return std::nullopt;
      }
      const auto& url_text = url->get_ref<const std::string&>();
      if (url_text.rfind("data:", 0) != 0) {
        error = part_where + ": image_url must be a data: URL (remote images are not fetched)";
        return std::nullopt;
      }
      const auto base64 = protocol::strip_data_url(url_text);
      if (!protocol::is_base64(base64)) {
        error = part_where + ": image data is not base64";
        return std::nullopt;
      }
      message.images.emplace_back(base64);
    } else {
      error = part_where + ": unsupported content part type '" + type + "'";
      return std::nullopt;
    }
  }
  return text;
}

std::optional<std::string> read_message(const json& item, std::size_t index,
                                        protocol::Message& message) {
  const std::string where = "body.messages[" + std::to_string(index) + "]";
  if (!item.is_object()) return where + " must be an object";
  if (!item.contains("role") || !item["role"].is_string()) return where + ".role must be a string";
  message.role = item["role"].get<std::string>();
  if (message.role == "developer") message.role = "system";  // OpenAI's newer name for it
  if (message.role != "system" && message.role != "user" && message.role != "assistant" &&
      message.role != "tool") {
    return where + ".role '" + message.role + "' is not system, user, assistant or tool";
  }
  std::string error;
  const json null_content;
  auto content = read_content(item.contains("content") ? item["content"] : null_content,
                              where + ".content", message, error);
  if (!content) return error;
  message.content = std::move(*content);
  if (item.contains("tool_calls") && !item["tool_calls"].is_null()) {
    const auto& calls = item["tool_calls"];
    if (!calls.is_array()) return where + ".tool_calls must be an array";
    for (std::size_t i = 0; i < calls.size(); ++i) {
      const auto& call = calls[i];
      const std::string call_where = where + ".tool_calls[" + std::to_string(i) + "]";
      if (!call.is_object() || !call.contains("function") || !call["function"].is_object()) {
        return call_where + ".function must be an object";
      }
      const auto& function = call["function"];
      if (!function.contains("name") || !function["name"].is_string()) {
        return call_where + ".function.name must be a string";
      }
      protocol::ToolCall tool_call;
      tool_call.id = call.contains("id") && call["id"].is_string() ? call["id"].get<std::string>()
                                                                   : std::string();
      tool_call.name = function["name"].get<std::string>();
      if (function.contains("arguments")) {
        const auto& arguments = function["arguments"];
        tool_call.arguments =
            arguments.is_string() ? arguments.get<std::string>() : dump_line(arguments);
      }
      message.tool_calls.push_back(std::move(tool_call));
    }
  }
  if (message.role == "tool") {
    if (!item.contains("tool_call_id") || !item["tool_call_id"].is_string()) {
      return where + ".tool_call_id must be a string for a tool message";
    }
    message.tool_call_id = item["tool_call_id"].get<std::string>();
    if (item.contains("name") && item["name"].is_string()) {
      message.tool_name = item["name"].get<std::string>();
    }
  }
  if (message.role != "assistant" && message.content.empty() && message.images.empty()) {
    return where + ".content is empty";
  }
  return std::nullopt;
}

template <class T>
std::optional<std::string> read_uint(const json& body, const char* key, std::optional<T>& out) {
  if (!body.contains(key) || body[key].is_null()) return std::nullopt;
  const auto& value = body[key];
  if (!value.is_number_integer() || value.get<int64_t>() < 0 ||
      value.get<uint64_t>() > std::numeric_limits<T>::max()) {
    return std::string("body.") + key + " must be a non-negative integer";
  }
  out = value.get<T>();
  return std::nullopt;
}

std::optional<std::string> read_number(const json& body, const char* key,
                                       std::optional<double>& out, double low, double high) {
  if (!body.contains(key) || body[key].is_null()) return std::nullopt;
  const auto& value = body[key];
  if (!value.is_number()) return std::string("body.") + key + " must be a number";
  const double number = value.get<double>();
  if (!(number >= low && number <= high)) {
    return fmt::format("body.{} must be between {} and {}", key, low, high);
  }
  out = number;
  return std::nullopt;
}

}  // namespace

std::variant<protocol::Request, LineProblem> request_from_openai_body(const json& body) {
  protocol::Request request;
  if (!body.is_object()) return problem("body must be an object");
  if (!body.contains("model") || !body["model"].is_string()) {
    return problem("body.model must be a string \"provider/model\"");
  }
  try {
    auto target = parse_target(body["model"].get<std::string>());
    request.provider = std::move(target.provider);
    request.model = std::move(target.model);
  } catch (const InvalidTargetError& e) {
    return problem(std::string("body.model: ") + e.what());
  }
  if (!body.contains("messages") || !body["messages"].is_array() || body["messages"].empty()) {
    return problem("body.messages must be a non-empty array");
  }
  const auto& messages = body["messages"];
  for (std::size_t i = 0; i < messages.size(); ++i) {
    protocol::Message message;
    if (auto error = read_message(messages[i], i, message)) return problem(std::move(*error));
    request.messages.push_back(std::move(message));
  }
  if (auto error = read_number(body, "temperature", request.temperature, 0.0, 2.0)) {
    return problem(std::move(*error));
  }
  if (auto error = read_number(body, "top_p", request.top_p, 0.0, 1.0)) {
    return problem(std::move(*error));
  }
  // max_completion_tokens is the newer name; it wins when both are present.
  if (auto error = read_uint(body, "max_tokens", request.max_tokens)) {
    return problem(std::move(*error));
  }
  if (auto error = read_uint(body, "max_completion_tokens", request.max_tokens)) {
    return problem(std::move(*error));
  }
  if (auto error = read_uint(body, "timeout_ms", request.timeout_ms)) {
    return problem(std::move(*error));
  }
  if (auto error = read_uint(body, "retry_count", request.retry_count)) {
    return problem(std::move(*error));
  }
  if (body.contains("n") && !body["n"].is_null() && body["n"] != 1) {
    return problem("body.n: only n = 1 is supported");
  }
  if (body.contains("stop") && !body["stop"].is_null()) {
    const auto& stop = body["stop"];
    if (stop.is_string()) {
      request.stop.push_back(stop.get<std::string>());
    } else if (stop.is_array() &&
               std::all_of(stop.begin(), stop.end(), [](const json& s) { return s.is_string(); })) {
      for (const auto& s : stop) request.stop.push_back(s.get<std::string>());
    } else {
      return problem("body.stop must be a string or an array of strings");
    }
  }
  if (body.contains("tools") && !body["tools"].is_null()) {
    const auto& tools = body["tools"];
    if (!tools.is_array()) return problem("body.tools must be an array");
    for (std::size_t i = 0; i < tools.size(); ++i) {
      const auto& tool = tools[i];
      const std::string where = "body.tools[" + std::to_string(i) + "]";
      if (!tool.is_object() || !tool.contains("function") || !tool["function"].is_object()) {
        return problem(where + ".function must be an object");
      }
      const auto& function = tool["function"];
      if (!function.contains("name") || !function["name"].is_string()) {
        return problem(where + ".function.name must be a string");
      }
      protocol::Tool out;
      out.name = function["name"].get<std::string>();
      if (function.contains("description") && function["description"].is_string()) {
        out.description = function["description"].get<std::string>();
      }
      if (function.contains("parameters") && !function["parameters"].is_null()) {
        if (!function["parameters"].is_object()) {
          return problem(where + ".function.parameters must be an object");
        }
        out.parameters = dump_line(function["parameters"]);
      }
      request.tools.push_back(std::move(out));
    }
  }
  if (body.contains("tool_choice") && !body["tool_choice"].is_null()) {
    const auto& choice = body["tool_choice"];
    if (choice.is_string()) {
      const auto mode = choice.get<std::string>();
      if (mode != "auto" && mode != "none" && mode != "required") {
        return problem("body.tool_choice must be auto, none, required or a function object");
      }
      request.tool_choice = mode;
    } else if (choice.is_object() && choice.contains("function") &&
               choice["function"].is_object() && choice["function"].contains("name") &&
               choice["function"]["name"].is_string()) {
      request.tool_choice = "function";
      request.tool_choice_function = choice["function"]["name"].get<std::string>();
    } else {
      return problem("body.tool_choice must be auto, none, required or a function object");
    }
  }
  if (body.contains("response_format") && !body["response_format"].is_null()) {
    const auto& format = body["response_format"];
    if (!format.is_object() || !format.contains("type") || !format["type"].is_string()) {
      return problem("body.response_format must be an object with a \"type\"");
    }
    request.response_format = format["type"].get<std::string>();
    if (request.response_format == "json_schema") {
      if (!format.contains("json_schema") || !format["json_schema"].is_object() ||
          !format["json_schema"].contains("schema")) {
        return problem("body.response_format.json_schema.schema is required");
      }
      request.response_schema = dump_line(format["json_schema"]["schema"]);
    } else if (request.response_format != "text" && request.response_format != "json_object") {
      return problem("body.response_format.type must be text, json_object or json_schema");
    }
  }
  if (body.contains("fallbacks") && !body["fallbacks"].is_null()) {
    const auto& fallbacks = body["fallbacks"];
    if (!fallbacks.is_array())
      return problem("body.fallbacks must be an array of \"provider/model\"");
    std::vector<protocol::Target> targets;
    for (const auto& item : fallbacks) {
      if (!item.is_string())
        return problem("body.fallbacks must be an array of \"provider/model\"");
      try {
        if (auto target = parse_optional_target(item.get<std::string>())) {
          targets.push_back(std::move(*target));
        }
      } catch (const InvalidTargetError& e) {
        return problem(std::string("body.fallbacks: ") + e.what());
      }
    }
    request.fallbacks = std::move(targets);
  }
  if (body.contains("metadata") && body["metadata"].is_object()) {
    for (const auto& [key, value] : body["metadata"].items()) {
      request.metadata[key] = value.is_string() ? value.get<std::string>() : dump_line(value);
    }
  }
  // "stream" is ignored: a batch line is answered as a whole.
  return request;
}

std::variant<BatchItem, LineProblem> parse_batch_line(std::string_view line,
                                                      std::size_t line_number) {
  json document;
  try {
    document = json::parse(line);
  } catch (const json::exception& e) {
    return problem("invalid JSON: " + short_json_error(e));
  }
  if (!document.is_object()) return problem("not a JSON object");
  if (!document.contains("custom_id") || !document["custom_id"].is_string() ||
      document["custom_id"].get_ref<const std::string&>().empty()) {
    return problem("missing custom_id (a non-empty string)");
  }
  BatchItem item;
  item.line_number = line_number;
  item.custom_id = document["custom_id"].get<std::string>();
  if (!document.contains("method") || document["method"] != "POST") {
    return problem("custom_id '" + item.custom_id + "': method must be \"POST\"");
  }
  if (!document.contains("url") || document["url"] != kChatUrl) {
    return problem("custom_id '" + item.custom_id + "': url must be \"" + std::string(kChatUrl) +
                   "\"");
  }
  if (!document.contains("body")) {
    return problem("custom_id '" + item.custom_id + "': missing body");
  }
  auto request = request_from_openai_body(document["body"]);
  if (auto* bad = std::get_if<LineProblem>(&request)) {
    return problem("custom_id '" + item.custom_id + "': " + bad->reason);
  }
  item.request = std::move(std::get<protocol::Request>(request));
  item.request.metadata["custom_id"] = item.custom_id;
  return item;
}

json chat_completion_body(const DispatchResponse& response) {
  json message{{"role", "assistant"}};
  if (response.tool_calls.empty()) {
    message["content"] = response.content;
  } else {
    message["content"] = response.content.empty() ? json(nullptr) : json(response.content);
    message["tool_calls"] = tool_calls_to_openai(response.tool_calls);
  }
  if (!response.thinking.empty()) message["reasoning_content"] = response.thinking;
  json choice{{"index", 0},
              {"message", std::move(message)},
              {"finish_reason",
               response.finish_reason.empty() ? json(nullptr) : json(response.finish_reason)},
              {"logprobs", nullptr}};
  return json{
      {"id", response.request_id.empty() ? "chatcmpl-" + response.job_id : response.request_id},
      {"object", "chat.completion"},
      {"created", response.created_at},
      {"model", response.provider + "/" + response.model},
      {"choices", json::array({std::move(choice)})},
      {"usage", usage_to_json(response.usage)}};
}

std::string format_success_line(std::size_t line_number, const std::string& custom_id,
                                const DispatchResponse& response) {
  json line{{"id", "batch_req_" + std::to_string(line_number)},
            {"custom_id", custom_id},
            {"response",
             {{"status_code", 200},
              {"request_id", response.job_id},
              {"body", chat_completion_body(response)}}},
            {"error", nullptr}};
  return dump_line(line) + "\n";
}

std::string format_error_line(std::size_t line_number, const std::string& custom_id,
                              const DispatchError& error, const std::string& job_id) {
  const std::string kind(protocol::to_string(error.kind()));
  json response = nullptr;
  if (error.status() != 0) {
    // The provider answered with an HTTP error: show it the way the Batch API does.
    response = json{{"status_code", error.status()},
                    {"request_id", job_id},
                    {"body",
                     {{"error",
                       {{"message", error.message()},
                        {"type", kind},
                        {"code", error.code().empty() ? json(nullptr) : json(error.code())}}}}}};
  }
  json line{{"id", "batch_req_" + std::to_string(line_number)},
            {"custom_id", custom_id},
            {"response", std::move(response)},
            {"error", {{"code", kind}, {"message", error.message()}}}};
  return dump_line(line) + "\n";
}

ResumeState scan_output_text(std::string_view text) {
  ResumeState state;
  std::size_t start = 0;
  while (start < text.size()) {
    const auto end = text.find('\n', start);
    if (end == std::string_view::npos) {
      state.torn_tail = true;  // a write cut short by a kill: not a line yet
      break;
    }
    const auto line = text.substr(start, end - start);
    state.valid_bytes = end + 1;
    start = end + 1;
    if (line.empty()) continue;
    try {
      const auto document = json::parse(line);
      if (document.is_object() && document.contains("custom_id") &&
          document["custom_id"].is_string()) {
        state.done.insert(document["custom_id"].get<std::string>());
        continue;
      }
    } catch (const json::exception&) {
    }
    ++state.unreadable_lines;
  }
  return state;
}

std::string format_eta(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--";
  const auto whole = static_cast<uint64_t>(std::llround(seconds));
  if (whole < 60) return std::to_string(whole) + "s";
  if (whole < 3600) return fmt::format("{}m{:02}s", whole / 60, whole % 60);
  return fmt::format("{}h{:02}m", whole / 3600, (whole % 3600) / 60);
}

namespace {
struct ProgressNumbers {
  std::size_t done;
  double percent;
  double rate;
  double eta;
};
ProgressNumbers numbers_of(const BatchCounters& c) {
  ProgressNumbers n{};
  n.done = c.finished();
  n.percent =
      c.total == 0 ? 100.0 : 100.0 * static_cast<double>(n.done) / static_cast<double>(c.total);
  const auto processed = static_cast<double>(c.succeeded + c.failed);
  n.rate = c.elapsed_seconds > 0 ? processed / c.elapsed_seconds : 0.0;
  const auto remaining = static_cast<double>(c.total > n.done ? c.total - n.done : 0);
  n.eta = remaining == 0 ? 0.0 : (n.rate > 0 ? remaining / n.rate : -1.0);
  return n;
}
}  // namespace

std::string format_progress(const BatchCounters& c, bool tty) {
  const auto n = numbers_of(c);
  if (tty) {
    constexpr int kWidth = 24;
    const int filled = std::clamp(static_cast<int>(n.percent / 100.0 * kWidth), 0, kWidth);
    return fmt::format(
        "\r\x1b[K[{}{}] {}/{} {:3.0f}% | ok {} | failed {} | in flight {} | "
        "{:.1f}/s | ETA {}",
        std::string(static_cast<std::size_t>(filled), '#'),
        std::string(static_cast<std::size_t>(kWidth - filled), '-'), n.done, c.total, n.percent,
        c.succeeded, c.failed, c.in_flight, n.rate, format_eta(n.eta));
  }
  return fmt::format("progress {}/{} ({:.0f}%) ok {} failed {} in_flight {} rate {:.1f}/s eta {}\n",
                     n.done, c.total, n.percent, c.succeeded, c.failed, c.in_flight, n.rate,
                     format_eta(n.eta));
}

std::string format_summary(const BatchCounters& c) {
  const auto processed = static_cast<double>(c.succeeded + c.failed);
  const double rate = c.elapsed_seconds > 0 ? processed / c.elapsed_seconds : 0.0;
  std::string out = fmt::format(
      "batch summary: total {} | succeeded {} | failed {} | skipped {} (already done) | "
      "invalid {}",
      c.total, c.succeeded, c.failed, c.skipped, c.invalid);
  if (c.incomplete != 0) out += fmt::format(" | incomplete {}", c.incomplete);
  out += fmt::format(
      "\ntokens: prompt {} | completion {} | total {}\nwall time {:.2f} s | {:.1f} jobs/s\n",
      c.prompt_tokens, c.completion_tokens, c.prompt_tokens + c.completion_tokens,
      c.elapsed_seconds, rate);
  return out;
}

}  // namespace dispatch::cli
