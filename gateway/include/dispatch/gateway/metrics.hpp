#pragma once

// The metrics of one gateway process, served at GET /metrics in Prometheus' text format from a
// prometheus-cpp registry (the same helpers as the broker's and the worker's; README,
// "Metrics"). Counted from the I/O threads: every metric is thread-safe.

#include <prometheus/registry.h>

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>

#include "dispatch/metrics/metrics.hpp"

namespace dispatch::gateway {

// The `endpoint` label of a request path: a fixed set, never the client's text.
std::string_view endpoint_label(std::string_view path);
// For answers given before a request was read (408, 400, the connection limit's 503).
inline constexpr std::string_view kNoEndpoint = "none";

class GatewayMetrics {
 public:
  GatewayMetrics();
  GatewayMetrics(const GatewayMetrics&) = delete;
  GatewayMetrics& operator=(const GatewayMetrics&) = delete;

  // One response: dispatch_gateway_requests_total{endpoint, status}.
  void count_status(std::string_view endpoint, int status);
  uint64_t requests(std::string_view endpoint, int status) const;
  std::string render() const;
  prometheus::Registry& registry() const { return *registry_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>* requests_;
  mutable std::mutex mutex_;                                         // guards by_status_
  std::unordered_map<std::string, prometheus::Counter*> by_status_;  // endpoint NUL status

 public:
  metrics::CounterHandle connections_accepted;
  metrics::CounterHandle connections_refused;  // over limits.max_connections: 503
  metrics::GaugeHandle connections_open;
  metrics::CounterHandle hostile_requests;  // malformed, oversized, too slow
  metrics::GaugeHandle jobs_open;
  metrics::GaugeHandle streams_open;
  metrics::CounterHandle stream_splices;      // restarts continued seamlessly
  metrics::CounterHandle stream_divergences;  // restarts that ended the stream with an error
  metrics::CounterHandle stream_failures;     // streams ended by an error event (any cause)
  metrics::CounterHandle client_disconnects;  // jobs cancelled because their client left
};

}  // namespace dispatch::gateway
