#pragma once

// The worker process: one event loop that owns the broker connection (ZeroMQ DEALER), the HTTP
// engine and every running job. Jobs come in as `job`, run through the policy, and leave as
// chunk / reset / result / error. See schemas/PROTOCOL.md ("Workers").

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "dispatch/worker/config.hpp"

namespace dispatch::worker {

struct RuntimeOptions {
  std::string broker_endpoint = "tcp://127.0.0.1:5556";
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
  // broker re-queues what is left).
  std::chrono::milliseconds drain_timeout{30000};
  std::string worker_id;  // empty: host:pid:random
};

class WorkerRuntime {
 public:
  WorkerRuntime(WorkerConfig config, RuntimeOptions options);
  ~WorkerRuntime();
  WorkerRuntime(const WorkerRuntime&) = delete;
  WorkerRuntime& operator=(const WorkerRuntime&) = delete;

  // Runs until drained (SIGTERM / SIGINT, handled through a signalfd: the caller must have
  // blocked those signals in every thread, see block_termination_signals()) or stop().
  // Returns the process exit code.
  int run();
  // Thread-safe: begin a graceful drain, as SIGTERM does.
  void request_drain();

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
