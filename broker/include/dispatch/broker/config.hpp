#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace dispatch::broker {

// Every tunable of the broker with its default. The CLI flags of dispatch-broker map 1:1 onto
// these fields (see broker/main.cpp and PROTOCOL.md "Broker behaviour").
struct BrokerConfig {
  std::string frontend = "tcp://127.0.0.1:5555";  // clients (ROUTER)
  std::string backend = "tcp://127.0.0.1:5556";   // workers (ROUTER)

  // Jobs waiting for a worker, over all providers and priorities. Running jobs do not count:
  // they are bounded by the workers' advertised capacity.
  std::size_t queue_limit = 100'000;
  // Default of submit.queue_timeout_ms (0 there). Counts from each (re)queueing.
  std::chrono::milliseconds queue_timeout{60'000};

  std::chrono::milliseconds heartbeat_interval{1'000};
  // A worker silent for this many intervals is dead (3-5 is usual: one lost heartbeat or a
  // short GC-like stall must not cost a redelivery).
  uint32_t liveness = 4;
  // Re-queues after losing the worker; the next loss ends the job (internal/redelivery_limit).
  uint32_t redelivery_limit = 3;

  // Finished jobs are kept this long (and at most result_keep of them) so that a client that
  // resubmits after a lost reply gets the stored answer instead of a second provider call.
  std::chrono::milliseconds result_ttl{300'000};
  std::size_t result_keep = 100'000;

  // Messages buffered per client when its ZeroMQ pipe is full (a slow reader). Over it chunks
  // are dropped; final messages (result/error/reset) are always kept.
  std::size_t client_buffer = 10'000;

  // After SIGTERM: how long running jobs get to finish.
  std::chrono::milliseconds drain_timeout{30'000};

  // ZeroMQ high-water marks (messages) of both ROUTER sockets. Large so that bursts of
  // submits and chunks are absorbed by ZeroMQ before the broker's own client buffer is used.
  int hwm = 100'000;

  // Replies to undecodable input and the log lines about it are rate-limited so a hostile peer
  // cannot turn the broker into an amplifier or flood the log.
  double hostile_replies_per_second = 200.0;
  double log_lines_per_second = 5.0;
};

}  // namespace dispatch::broker
