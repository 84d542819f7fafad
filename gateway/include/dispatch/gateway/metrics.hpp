#pragma once

// Counters of one gateway process, served at GET /metrics in Prometheus' text format.

#include <atomic>
#include <cstdint>
#include <string>

namespace dispatch::gateway {

struct GatewayMetrics {
  std::atomic<uint64_t> connections_accepted{0};
  std::atomic<uint64_t> connections_refused{0};  // over limits.max_connections: 503
  std::atomic<int64_t> connections_open{0};
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> responses_2xx{0};
  std::atomic<uint64_t> responses_4xx{0};
  std::atomic<uint64_t> responses_5xx{0};
  std::atomic<uint64_t> hostile_requests{0};  // malformed, oversized, too slow
  std::atomic<int64_t> jobs_open{0};
  std::atomic<int64_t> streams_open{0};
  std::atomic<uint64_t> stream_splices{0};      // restarts continued seamlessly
  std::atomic<uint64_t> stream_divergences{0};  // restarts that ended the stream with an error
  std::atomic<uint64_t> stream_failures{0};     // streams ended by an error event (any cause)
  std::atomic<uint64_t> client_disconnects{0};  // jobs cancelled because their client left

  void count_status(int status);
  std::string render() const;
};

}  // namespace dispatch::gateway
