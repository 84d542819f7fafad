// Pure parts of `dispatch batch`: line parsing and validation, output shaping, resume scan,
// progress text. No I/O here, so all of it is unit-tested.

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "dispatch/cli/batch.hpp"
#include "dispatch/cli/json_output.hpp"
#include "dispatch/formats/json_text.hpp"
#include "dispatch/formats/openai.hpp"
#include "dispatch/protocol/text.hpp"
#include "dispatch/request.hpp"

namespace dispatch::cli {

using nlohmann::json;

namespace {

constexpr std::string_view kChatUrl = "/v1/chat/completions";

LineProblem problem(std::string reason) {
  return LineProblem{std::move(reason)};
}

}  // namespace

Result<BatchItem, LineProblem> parse_batch_line(std::string_view line, std::size_t line_number) {
  auto parsed = formats::parse_json_body(line);
  if (!parsed) return problem(parsed.error().message);
  const json& document = *parsed;
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
  auto request = formats::request_from_openai_body(document["body"]);
  if (!request) {
    // The formats name fields from the body's root; a batch line nests the body one deeper.
    const auto& error = request.error();
    return problem("custom_id '" + item.custom_id + "': " + (error.param.empty() ? "" : "body.") +
                   error.message);
  }
  item.request = std::move(*request);
  item.request.metadata["custom_id"] = item.custom_id;
  return item;
}

std::string format_success_line(std::size_t line_number, const std::string& custom_id,
                                const DispatchResponse& response) {
  json line{{"id", "batch_req_" + std::to_string(line_number)},
            {"custom_id", custom_id},
            {"response",
             {{"status_code", 200},
              {"request_id", response.job_id},
              {"body", formats::chat_completion_body(response)}}},
            {"error", nullptr}};
  // Our extension of the Batch API's line: what the answer cost, when the worker had a price.
  if (response.cost_usd) line["x_dispatch"] = json{{"cost_usd", *response.cost_usd}};
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
  out += fmt::format("\ntokens: prompt {} | completion {} | total {}\n", c.prompt_tokens,
                     c.completion_tokens, c.prompt_tokens + c.completion_tokens);
  const std::size_t answers = c.succeeded;
  if (c.priced == 0) {
    out += fmt::format("cost: unknown (no price for any of the {} answers)\n", answers);
  } else {
    out +=
        fmt::format("cost: {:.6g} USD ({} of {} answers priced)\n", c.cost_usd, c.priced, answers);
  }
  out += fmt::format("wall time {:.2f} s | {:.1f} jobs/s\n", c.elapsed_seconds, rate);
  return out;
}

}  // namespace dispatch::cli
