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

#include "dispatch/protocol/curve.hpp"
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

  // CURVE, as `dispatch-broker --curve-secret` runs it: the server's key pair, and the client
  // public keys (Z85) its ZAP handler admits; every other handshake is refused (ZAP 400).
  struct Curve {
    protocol::CurveKeys server;
    std::set<std::string> allowed_clients;
  };

  explicit FakeBroker(std::string broker_id = "fake-broker-1",
                      std::optional<Curve> curve = std::nullopt);
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

  // CURVE only: replaces the admitted keys (as a broker's SIGHUP re-reads its lists).
  void set_allowed_clients(std::set<std::string> keys);
  // CURVE only: the ZAP user id (the client's public key) of every submit received, in order;
  // and how many handshakes the ZAP handler refused.
  std::vector<std::string> submit_user_ids() const;
  std::size_t zap_refusals() const;
  std::size_t zap_admissions() const;  // handshakes the ZAP handler let in
  // CURVE only: the ZAP user ids of every peer that sent anything (a worker's `ready` too).
  std::set<std::string> peer_user_ids() const;

  // Polls `predicate` every few ms until true or `timeout`; returns its last value.
  static bool eventually(const std::function<bool()>& predicate,
                         std::chrono::milliseconds timeout = std::chrono::seconds(5));

 private:
  void run();
  void handle(std::string_view route, std::span<const std::string_view> frames);
  void run_zap();
  std::vector<std::string> zap_reply(const std::vector<std::string>& request);

  zmq::context_t context_{1};
  std::optional<Curve> curve_;
  zmq::socket_t zap_;  // REP on inproc://zeromq.zap.01 when CURVE is on
  std::thread zap_thread_;
  std::string last_user_id_;  // of the message being handled (broker thread)
  std::vector<std::string> submit_user_ids_;
  std::set<std::string> peer_user_ids_;
  std::size_t zap_refusals_ = 0;
  std::size_t zap_admissions_ = 0;
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
