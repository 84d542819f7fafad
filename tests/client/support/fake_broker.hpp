#pragma once

// A scripted stand-in for dispatch-broker, in the test process: a ROUTER socket on an ephemeral
// loopback port and a thread that records what clients send and answers as the test says.
// Lets the client library, the CLI and the batch runner be tested without broker or worker.

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "dispatch/protocol/messages.hpp"
#include "dispatch/protocol/types.hpp"

namespace dispatch::test {

class FakeBroker {
 public:
  struct Submitted {
    std::string route;
    protocol::Submit submit;
    protocol::Request request;
  };
  // Runs on the broker thread for every submit; use the send helpers below from it.
  using OnSubmit = std::function<void(FakeBroker&, const Submitted&)>;

  explicit FakeBroker(std::string broker_id = "fake-broker-1");
  ~FakeBroker();
  FakeBroker(const FakeBroker&) = delete;
  FakeBroker& operator=(const FakeBroker&) = delete;

  std::string endpoint() const { return endpoint_; }

  void set_on_submit(OnSubmit handler);
  void set_broker_id(std::string id);
  // Silent: receive and record everything, answer nothing (a hung broker).
  void set_silent(bool silent) { silent_ = silent; }
  // Runs `task` on the broker thread (to send something unprompted).
  void post(std::function<void(FakeBroker&)> task);

  // The default answer: accepted, then (for stream jobs) one chunk per word of the reply, then
  // result. The reply is "echo: <last message>". A model named "error:<kind>[:<status>]"
  // gets that error instead.
  static void answer(FakeBroker& broker, const Submitted& job);
  static protocol::Response echo_response(const protocol::Request& request);

  // Send helpers (broker thread only).
  void accept(const Submitted& job, bool duplicate = false);
  void send_result(const std::string& route, const std::string& job_id,
                   const protocol::Response& response);
  void send_error(const std::string& route, const std::string& job_id,
                  const protocol::Error& error);
  void send_chunk(const std::string& route, const protocol::Chunk& chunk);
  void send_reset(const std::string& route, const protocol::StreamReset& reset);
  void send_heartbeat(const std::string& route);
  void send_rejected(const std::string& route, const protocol::Rejected& rejected);

  // What was received (thread-safe copies).
  std::vector<Submitted> submits() const;
  std::size_t submit_count(const std::string& job_id = {}) const;
  std::vector<std::string> cancels() const;
  std::size_t heartbeats() const;
  std::size_t status_requests() const;
  std::set<std::string> routes() const;  // distinct client sockets seen
  // The last route a job was submitted from.
  std::optional<std::string> route_of(const std::string& job_id) const;

  // Polls `predicate` every few ms until true or `timeout`; returns its last value.
  static bool eventually(const std::function<bool()>& predicate,
                         std::chrono::milliseconds timeout = std::chrono::seconds(5));

 private:
  void run();
  void handle(std::string_view route, std::span<const std::string_view> frames);

  zmq::context_t context_{1};
  zmq::socket_t socket_;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> silent_{false};
  mutable std::mutex mutex_;
  std::string broker_id_;
  OnSubmit on_submit_;
  std::vector<std::function<void(FakeBroker&)>> tasks_;
  std::vector<Submitted> submits_;
  std::vector<std::string> cancels_;
  std::size_t heartbeats_ = 0;
  std::size_t status_requests_ = 0;
  std::set<std::string> routes_;
  std::thread thread_;
};

}  // namespace dispatch::test
