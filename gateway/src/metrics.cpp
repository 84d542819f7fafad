#include "dispatch/gateway/metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>

namespace dispatch::gateway {
namespace {

prometheus::Counter& counter(prometheus::Registry& registry, const std::string& name,
                             const std::string& help) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(registry).Add({});
}

prometheus::Gauge& gauge(prometheus::Registry& registry, const std::string& name,
                         const std::string& help) {
  return prometheus::BuildGauge().Name(name).Help(help).Register(registry).Add({});
}

std::string status_key(std::string_view endpoint, int status) {
  return std::string(endpoint) + '\0' + std::to_string(status);
}

}  // namespace

std::string_view endpoint_label(std::string_view path) {
  if (path == "/v1/chat/completions") return "chat_completions";
  if (path == "/v1/messages") return "messages";
  if (path == "/v1/models") return "models";
  if (path == "/healthz") return "healthz";
  if (path == "/readyz") return "readyz";
  if (path == "/metrics") return "metrics";
  if (path == "/status") return "status";
  if (path == "/status.json") return "status_json";
  return "other";
}

// The registry is built before the handles point into it (members initialise in order).
GatewayMetrics::GatewayMetrics()
    : registry_(std::make_shared<prometheus::Registry>()),
      requests_(&prometheus::BuildCounter()
                     .Name("dispatch_gateway_requests_total")
                     .Help("HTTP responses, by endpoint and status code")
                     .Register(*registry_)),
      connections_accepted(counter(*registry_, "dispatch_gateway_connections_accepted_total",
                                   "TCP connections accepted")),
      connections_refused(counter(*registry_, "dispatch_gateway_connections_refused_total",
                                  "Connections refused with 503 at the connection limit")),
      connections_open(
          gauge(*registry_, "dispatch_gateway_connections_open", "Client connections open")),
      hostile_requests(counter(*registry_, "dispatch_gateway_hostile_requests_total",
                               "Malformed, oversized or too slow requests dropped")),
      jobs_open(gauge(*registry_, "dispatch_gateway_jobs_open", "Jobs in flight at the broker")),
      streams_open(
          gauge(*registry_, "dispatch_gateway_streams_open", "Streamed responses in progress")),
      stream_splices(counter(*registry_, "dispatch_gateway_stream_splices_total",
                             "Restarted answers continued seamlessly after bytes were sent")),
      stream_divergences(
          counter(*registry_, "dispatch_gateway_stream_divergences_total",
                  "Restarted answers that differed from what was sent (stream ended with an "
                  "error)")),
      stream_failures(counter(*registry_, "dispatch_gateway_stream_failures_total",
                              "Streams ended with an error event after bytes were sent")),
      client_disconnects(counter(*registry_, "dispatch_gateway_client_disconnects_total",
                                 "Jobs cancelled because their HTTP client went away")) {}

void GatewayMetrics::count_status(std::string_view endpoint, int status) {
  prometheus::Counter* series = nullptr;
  {
    const std::lock_guard lock(mutex_);
    std::string key = status_key(endpoint, status);
    auto it = by_status_.find(key);
    if (it == by_status_.end()) {
      // Endpoints are a fixed set and statuses the gateway's own: bounded.
      series = &requests_->Add(
          {{"endpoint", std::string(endpoint)}, {"status", std::to_string(status)}});
      by_status_.emplace(std::move(key), series);
    } else {
      series = it->second;
    }
  }
  series->Increment();
}

uint64_t GatewayMetrics::requests(std::string_view endpoint, int status) const {
  const std::lock_guard lock(mutex_);
  auto it = by_status_.find(status_key(endpoint, status));
  return it == by_status_.end() ? 0 : static_cast<uint64_t>(it->second->Value());
}

std::string GatewayMetrics::render() const {
  return metrics::render_text(*registry_);
}

}  // namespace dispatch::gateway
