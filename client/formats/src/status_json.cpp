#include "dispatch/formats/status_json.hpp"

#include <algorithm>
#include <string>

#include "dispatch/request.hpp"

namespace dispatch::formats {

using nlohmann::json;

namespace {

json quotas_to_json(const std::vector<protocol::QuotaStatus>& quotas) {
  json rows = json::array();
  const auto optional = [](const auto& value) { return value ? json(*value) : json(nullptr); };
  for (const auto& q : quotas) {
    rows.push_back(json{{"key", q.key},
                        {"rpm", optional(q.rpm)},
                        {"tpm", optional(q.tpm)},
                        {"concurrency", optional(q.concurrency)},
                        {"requests_last_minute", q.requests_last_minute},
                        {"tokens_last_minute", q.tokens_last_minute},
                        {"running", q.running},
                        {"waiting", q.waiting},
                        {"paused_ms", optional(q.paused_ms)},
                        {"paused_reason", q.paused_reason},
                        {"breaker", q.breaker.empty() ? "closed" : q.breaker},
                        {"breaker_ms", optional(q.breaker_ms)}});
  }
  return rows;
}

}  // namespace

json status_to_json(const protocol::StatusReply& status) {
  json queue = json::object();
  for (std::size_t level = 0; level < status.queue_depth.size(); ++level) {
    const auto name = level < protocol::kPriorityLevels
                          ? std::string(to_string(static_cast<Priority>(level)))
                          : "level_" + std::to_string(level);
    queue[name] = status.queue_depth[level];
  }
  json workers = json::array();
  for (const auto& worker : status.workers) {
    workers.push_back(json{{"worker_id", worker.worker_id},
                           {"host", worker.host},
                           {"pid", worker.pid},
                           {"capacity", worker.capacity},
                           {"in_flight", worker.in_flight},
                           {"providers", worker.providers},
                           {"last_heartbeat_ms_ago", worker.last_heartbeat_ms_ago},
                           {"state", worker.state}});
  }
  json providers = json::object();
  for (const auto& [name, counters] : status.providers) {
    providers[name] = json{{"submitted", counters.submitted},
                           {"succeeded", counters.succeeded},
                           {"failed", counters.failed},
                           {"retried", counters.retried},
                           {"fell_over", counters.fell_over},
                           {"prompt_tokens", counters.prompt_tokens},
                           {"completion_tokens", counters.completion_tokens}};
  }
  json clients = json::object();
  for (const auto& [name, counters] : status.clients) {
    clients[name] = json{{"queued", counters.queued},       {"running", counters.running},
                         {"submitted", counters.submitted}, {"succeeded", counters.succeeded},
                         {"failed", counters.failed},       {"rejected", counters.rejected}};
  }
  return json{{"broker_id", status.broker_id},
              {"uptime_ms", status.uptime_ms},
              {"queue_depth", std::move(queue)},
              {"queue_limit", status.queue_limit},
              {"in_flight", status.in_flight},
              {"finished_kept", status.finished_kept},
              {"workers", std::move(workers)},
              {"providers", std::move(providers)},
              {"payload_bytes", status.payload_bytes},
              {"payload_bytes_limit", status.payload_bytes_limit},
              {"rejected", json(status.rejected)},
              {"broker_errors", json(status.broker_errors)},
              {"worker_count", std::max<uint64_t>(status.worker_count, status.workers.size())},
              {"identity", status.identity},
              {"clients", std::move(clients)},
              {"insecure", status.insecure},
              {"quotas", quotas_to_json(status.quotas)},
              {"failed_by_kind", json(status.failed_by_kind)}};
}

}  // namespace dispatch::formats
