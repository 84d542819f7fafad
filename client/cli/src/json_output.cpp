#include "dispatch/cli/json_output.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <sstream>

#include "dispatch/request.hpp"

namespace dispatch::cli {

using nlohmann::json;

json attempt_to_json(const Attempt& attempt) {
  json out{{"provider", attempt.provider},
           {"model", attempt.model},
           {"outcome", attempt.outcome},
           {"start_offset_ms", attempt.start_offset_ms},
           {"duration_ms", attempt.duration_ms}};
  if (attempt.status != 0) out["status"] = attempt.status;
  if (!attempt.code.empty()) out["code"] = attempt.code;
  if (!attempt.message.empty()) out["message"] = attempt.message;
  if (!attempt.note.empty()) out["note"] = attempt.note;
  return out;
}

json response_to_json(const DispatchResponse& response) {
  json attempts = json::array();
  for (const auto& attempt : response.attempts) attempts.push_back(attempt_to_json(attempt));
  json out{{"content", response.content},
           {"provider", response.provider},
           {"model", response.model},
           {"usage", usage_to_json(response.usage)},
           {"finish_reason", response.finish_reason},
           {"raw_finish_reason", response.raw_finish_reason},
           {"attempts", std::move(attempts)},
           {"request_id", response.request_id},
           {"job_id", response.job_id},
           {"created_at", response.created_at},
           {"total_duration_ns", response.total_duration_ns}};
  if (!response.tool_calls.empty()) out["tool_calls"] = tool_calls_to_openai(response.tool_calls);
  if (!response.thinking.empty()) out["thinking"] = response.thinking;
  if (response.stream_resets != 0) out["stream_resets"] = response.stream_resets;
  if (response.stream_gap) out["stream_gap"] = true;
  if (response.cost_usd) out["cost_usd"] = *response.cost_usd;
  return out;
}

json error_to_json(const DispatchError& error) {
  json body{{"kind", std::string(protocol::to_string(error.kind()))}, {"message", error.message()}};
  if (error.status() != 0) body["status"] = error.status();
  if (!error.code().empty()) body["code"] = error.code();
  if (!error.provider().empty()) body["provider"] = error.provider();
  if (!error.model().empty()) body["model"] = error.model();
  if (!error.attempts().empty()) {
    json attempts = json::array();
    for (const auto& attempt : error.attempts()) attempts.push_back(attempt_to_json(attempt));
    body["attempts"] = std::move(attempts);
  }
  return json{{"error", std::move(body)}};
}

json event_to_json(const StreamEvent& event) {
  switch (event.type) {
    case StreamEvent::Type::chunk: {
      json out{{"event", "chunk"}, {"seq", event.seq}, {"content", event.content}};
      if (!event.thinking.empty()) out["thinking"] = event.thinking;
      if (!event.tool_calls.empty()) {
        json deltas = json::array();
        for (const auto& delta : event.tool_calls) {
          json item{{"index", delta.index}, {"arguments", delta.arguments}};
          if (!delta.id.empty()) item["id"] = delta.id;
          if (!delta.name.empty()) item["name"] = delta.name;
          deltas.push_back(std::move(item));
        }
        out["tool_calls"] = std::move(deltas);
      }
      return out;
    }
    case StreamEvent::Type::reset:
      return json{{"event", "reset"}, {"next_seq", event.next_seq}, {"reason", event.reason}};
    case StreamEvent::Type::gap:
      return json{{"event", "gap"}, {"expected_seq", event.expected_seq}, {"seq", event.seq}};
  }
  return json{{"event", "unknown"}};
}

std::string format_duration_ms(uint64_t milliseconds) {
  if (milliseconds < 1000) return std::to_string(milliseconds) + "ms";
  const uint64_t seconds = milliseconds / 1000;
  if (seconds < 60) return fmt::format("{:.1f}s", static_cast<double>(milliseconds) / 1000.0);
  if (seconds < 3600) return fmt::format("{}m{:02}s", seconds / 60, seconds % 60);
  if (seconds < 86400) return fmt::format("{}h{:02}m", seconds / 3600, (seconds % 3600) / 60);
  return fmt::format("{}d{:02}h", seconds / 86400, (seconds % 86400) / 3600);
}

namespace {

std::string join(const std::vector<std::string>& items, std::string_view separator) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i != 0) out += separator;
    out += items[i];
  }
  return out;
}

// "name count, name count" of a counter map.
std::string join_counts(const std::map<std::string, uint64_t>& counts) {
  std::string out;
  for (const auto& [name, count] : counts) {
    if (!out.empty()) out += ", ";
    out += name + " " + std::to_string(count);
  }
  return out;
}

std::string format_mib(uint64_t bytes) {
  return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
}

// Left-aligned columns sized to their widest cell.
std::string render_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(widths[i] - row[i].size() + 2, ' ');
    }
    out += line + "\n";
  }
  return out;
}

std::string format_number(double value) {
  return value == static_cast<double>(static_cast<uint64_t>(value))
             ? std::to_string(static_cast<uint64_t>(value))
             : fmt::format("{:.1f}", value);
}

// "used/limit", or just "used" without a limit.
std::string used_of(uint64_t used, std::optional<double> limit) {
  return limit ? std::to_string(used) + "/" + format_number(*limit) : std::to_string(used);
}

std::string format_quota_table(const std::vector<protocol::QuotaStatus>& quotas) {
  std::vector<std::vector<std::string>> rows{
      {"QUOTA", "RPM", "TPM", "RUNNING", "WAITING", "PAUSED", "BREAKER"}};
  for (const auto& q : quotas) {
    const std::string running =
        q.concurrency ? fmt::format("{}/{}", q.running, *q.concurrency) : std::to_string(q.running);
    std::string paused = "-";
    if (q.paused_ms) paused = format_duration_ms(*q.paused_ms) + " (" + q.paused_reason + ")";
    std::string breaker = q.breaker.empty() ? "closed" : q.breaker;
    if (q.breaker_ms) breaker += " " + format_duration_ms(*q.breaker_ms);
    rows.push_back({q.key, used_of(q.requests_last_minute, q.rpm),
                    used_of(q.tokens_last_minute, q.tpm), running, std::to_string(q.waiting),
                    paused, breaker});
  }
  return render_table(rows);
}

}  // namespace

namespace {

// Per-identity counts (a CURVE broker): every one for an admin, the asker's own otherwise.
std::string format_clients_table(const protocol::StatusReply& status) {
  if (status.clients.empty()) return {};
  std::vector<std::vector<std::string>> rows{
      {"CLIENT", "QUEUED", "RUNNING", "SUBMITTED", "SUCCEEDED", "FAILED", "REJECTED"}};
  for (const auto& [name, c] : status.clients) {
    rows.push_back({name, std::to_string(c.queued), std::to_string(c.running),
                    std::to_string(c.submitted), std::to_string(c.succeeded),
                    std::to_string(c.failed), std::to_string(c.rejected)});
  }
  return "\n" + render_table(rows);
}

std::string format_workers_table(const protocol::StatusReply& status) {
  if (status.workers.empty()) return {};
  std::vector<std::vector<std::string>> rows{
      {"WORKER", "HOST", "PID", "STATE", "CAPACITY", "IN FLIGHT", "HEARTBEAT", "PROVIDERS"}};
  for (const auto& worker : status.workers) {
    rows.push_back({worker.worker_id, worker.host, std::to_string(worker.pid), worker.state,
                    std::to_string(worker.capacity), std::to_string(worker.in_flight),
                    format_duration_ms(worker.last_heartbeat_ms_ago) + " ago",
                    join(worker.providers, ",")});
  }
  return "\n" + render_table(rows);
}

// What a CURVE broker shows an identity that is not an admin: no queue, workers or providers.
std::string format_scoped_status(const protocol::StatusReply& status) {
  return fmt::format(
             "broker {}  up {}\nworkers: {}  (details, the queue and other clients: "
             "admins only)\n",
             status.broker_id, format_duration_ms(status.uptime_ms), status.worker_count) +
         format_clients_table(status);
}

}  // namespace

std::string format_status_table(const protocol::StatusReply& status) {
  std::string out;
  if (status.insecure) {
    out +=
        "WARNING: this broker runs without CURVE on an endpoint other hosts can reach "
        "(--insecure): nothing is encrypted or authenticated\n";
  }
  if (!status.identity.empty()) out += "you are: " + status.identity + "\n";
  // A broker always sends the queue depth per priority, except to a non-admin identity.
  if (status.queue_depth.empty() && !status.identity.empty()) {
    return out + format_scoped_status(status);
  }
  std::vector<std::string> depth;
  for (std::size_t level = 0; level < status.queue_depth.size(); ++level) {
    const auto name = level < protocol::kPriorityLevels
                          ? std::string(to_string(static_cast<Priority>(level)))
                          : "level_" + std::to_string(level);
    depth.push_back(name + " " + std::to_string(status.queue_depth[level]));
  }
  uint64_t capacity = 0;
  for (const auto& worker : status.workers) capacity += worker.capacity;
  out += fmt::format("broker {}  up {}  in flight {}  results kept {}\n", status.broker_id,
                     format_duration_ms(status.uptime_ms), status.in_flight, status.finished_kept);
  out += fmt::format("queue: {}  (limit {})\n", depth.empty() ? "empty" : join(depth, ", "),
                     status.queue_limit);
  if (status.payload_bytes_limit > 0) {
    out += fmt::format("payload held: {}  (limit {})\n", format_mib(status.payload_bytes),
                       format_mib(status.payload_bytes_limit));
  }
  if (!status.rejected.empty()) out += "rejected: " + join_counts(status.rejected) + "\n";
  if (!status.failed_by_kind.empty()) {
    out += "failed by kind: " + join_counts(status.failed_by_kind) + "\n";
  }
  if (!status.broker_errors.empty()) {
    out += "ended by the broker: " + join_counts(status.broker_errors) + "\n";
  }
  out += fmt::format("workers: {}  capacity {}\n", status.workers.size(), capacity);
  out += format_workers_table(status);
  if (!status.providers.empty()) {
    std::vector<std::vector<std::string>> rows{{"PROVIDER", "SUBMITTED", "SUCCEEDED", "FAILED",
                                                "RETRIED", "FELL OVER", "PROMPT TOKENS",
                                                "COMPLETION TOKENS"}};
    for (const auto& [name, counters] : status.providers) {
      rows.push_back({name, std::to_string(counters.submitted), std::to_string(counters.succeeded),
                      std::to_string(counters.failed), std::to_string(counters.retried),
                      std::to_string(counters.fell_over), std::to_string(counters.prompt_tokens),
                      std::to_string(counters.completion_tokens)});
    }
    out += '\n';
    out += render_table(rows);
  }
  if (!status.quotas.empty()) {
    out += '\n';
    out += format_quota_table(status.quotas);
  }
  return out + format_clients_table(status);
}

}  // namespace dispatch::cli
