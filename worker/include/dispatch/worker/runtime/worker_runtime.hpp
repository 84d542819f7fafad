#pragma once

// The worker process: one event loop that owns the broker connection (ZeroMQ DEALER), the HTTP
// engine and every running job. Jobs come in as `job`, run through the policy, and leave as
// chunk / reset / result / error. See schemas/PROTOCOL.md ("Workers").

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "dispatch/protocol/broker_keys.hpp"
#include "dispatch/worker/config.hpp"
#include "dispatch/worker/runtime/termination_signals.hpp"
#include "dispatch/worker/runtime/worker_metrics.hpp"

namespace dispatch::worker {

struct RuntimeOptions {
  std::string broker_endpoint = "tcp://127.0.0.1:5556";
  // CURVE towards a broker started with --curve-secret: its public key and this worker's own
  // pair (the public half listed in the broker's --allow-workers directory). Empty: plaintext.
  // Every socket the runtime opens — reconnects make new ones — gets them. Holds a secret key:
  // never logged (only public-key fingerprints are).
  protocol::BrokerKeys curve;
  uint32_t concurrency = 0;  // 0: config `worker.concurrency`
  // Heartbeat every interval when nothing else was sent; the broker is presumed gone after
  // `liveness` silent intervals (3-5 is the usual range: fewer flaps on a busy host, more is
  // slow to notice a restart). Must match the broker's settings.
  std::chrono::milliseconds heartbeat_interval{1000};
  uint32_t liveness = 4;
  // Reconnect backoff after the broker went silent: doubles from min to max.
  std::chrono::milliseconds reconnect_min{250};
  std::chrono::milliseconds reconnect_max{8000};
  // SIGTERM: stop taking jobs, let running ones finish for at most this long, then leave (the
  // broker re-queues what is left). The results still queued for a slow broker are then given
  // up to the rest of this time - and at least final_flush_min - to leave before the process
  // exits.
  std::chrono::milliseconds drain_timeout{30000};
  std::chrono::milliseconds final_flush_min{1000};
  std::string worker_id;  // empty: host:pid:random (32 hex digits from getrandom)
  // Messages libzmq queues for the broker before sends would block (ZMQ_SNDHWM); beyond it they
  // wait in the runtime's own outbox. Tests lower it to play a slow broker.
  int send_high_water_mark = 100'000;
  // Where SIGTERM / SIGINT come from; tests force the fallback handler.
  TerminationSignals::Source signals = TerminationSignals::Source::signal_fd;
  // Prometheus metrics to count into (nullptr: none); not owned, outlives the runtime.
  WorkerMetrics* metrics = nullptr;
};

// Counters read from any thread while the runtime runs (for tests and diagnostics).
struct RuntimeStats {
  std::atomic<uint64_t> connects{0};           // connections opened, the first included
  std::atomic<uint64_t> pumps_scheduled{0};    // outbox pumps posted or put on a timer
  std::atomic<uint64_t> max_pending_pumps{0};  // most pumps waiting at once (1 by design)
  std::atomic<uint64_t> outbox_messages{0};    // waiting in the runtime's outbox now
  std::atomic<uint64_t> unknown_cancels_answered{0};
  std::atomic<uint64_t> unknown_cancels_suppressed{0};
  std::atomic<uint64_t> oversized_messages{0};  // replaced or dropped: over one protocol frame
  std::atomic<uint64_t> handshake_refusals{0};  // the broker refused a connection (CURVE keys)
  std::atomic<uint64_t> health_reports{0};      // provider_health messages sent to the broker
};

class WorkerRuntime {
 public:
  WorkerRuntime(WorkerConfig config, RuntimeOptions options);
  ~WorkerRuntime();
  WorkerRuntime(const WorkerRuntime&) = delete;
  WorkerRuntime& operator=(const WorkerRuntime&) = delete;

  // Runs until drained (SIGTERM / SIGINT, see TerminationSignals: the caller should have
  // blocked those signals in every thread, see block_termination_signals()) or
  // request_drain(). Returns the process exit code.
  int run();
  // Thread-safe: begin a graceful drain, as SIGTERM does.
  void request_drain();
  // Thread-safe.
  const RuntimeStats& stats() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Blocks SIGTERM, SIGINT and SIGPIPE in the calling thread (and so in threads it starts later,
// such as libzmq's) so that the event loop receives them through its signalfd. Call first in main.
void block_termination_signals();

// Raises the soft RLIMIT_NOFILE to the hard limit (each in-flight HTTP request is one fd) and
// returns the resulting soft limit.
uint64_t raise_open_file_limit();

}  // namespace dispatch::worker
