#pragma once

// A broker played by the test: a ROUTER socket on an ephemeral loopback port that a real
// WorkerRuntime (in a thread of the test) connects to. It records what the worker sends and
// sends what the test says - so a test sees the worker's side of the protocol exactly, and can
// play a broker that is slow (not reading) or gone (socket closed, then bound again).

#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "dispatch/protocol/codec.hpp"
#include "dispatch/protocol/zmq_io.hpp"
#include "dispatch/worker/runtime/worker_runtime.hpp"

namespace dispatch::worker::test {

using namespace std::chrono_literals;

struct WorkerMessage {
  protocol::Command command;
  std::string header;
  std::string payload;
};

class FakeBroker {
 public:
  FakeBroker();
  const std::string& endpoint() const { return endpoint_; }

  // The next message from the worker, waiting at most `timeout`.
  std::optional<WorkerMessage> receive(std::chrono::milliseconds timeout = 10s);
  // Messages until one of `command` arrives (returned last), or nullopt at the deadline; the
  // ones before it are kept in `seen`.
  std::optional<WorkerMessage> receive_until(protocol::Command command,
                                             std::chrono::milliseconds timeout = 10s);
  void send(protocol::Command command, const std::string& header, const std::string& payload = {});
  void send_job(const std::string& job_id, const protocol::Request& request, bool stream,
                uint32_t delivery = 1);

  // Closes the socket (the worker's connection drops) and binds the same endpoint again.
  void close();
  void reopen();

  std::vector<WorkerMessage> seen;  // everything received, in order
  std::size_t count(protocol::Command command) const;

 private:
  void open();

  zmq::context_t context_{1};
  std::optional<zmq::socket_t> socket_;
  std::string endpoint_;
  std::string worker_;  // routing id of the worker, from its first message
  protocol::IncomingMessage incoming_;
};

// A WorkerRuntime running in a thread; drained and joined on destruction.
class RunningWorker {
 public:
  RunningWorker(WorkerConfig config, RuntimeOptions options);
  ~RunningWorker();
  WorkerRuntime& runtime() { return runtime_; }
  // Waits at most `timeout` for run() to return.
  bool wait_for_exit(std::chrono::milliseconds timeout);

 private:
  WorkerRuntime runtime_;
  std::atomic<bool> exited_{false};  // before thread_, which sets it
  std::thread thread_;
};

// Options for a worker that never reconnects on its own during a test (liveness far beyond the
// test) and heartbeats rarely, connected to `broker`.
RuntimeOptions quiet_options(const FakeBroker& broker);

// Checks `done` until it holds or `timeout` passes.
template <class Predicate>
bool poll_until(Predicate&& done, std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

}  // namespace dispatch::worker::test
