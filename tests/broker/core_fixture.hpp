#pragma once

// The fixture of the BrokerCore unit tests: a fake Transport that records every message, a
// ManualClock, and helpers that play clients and workers. No sockets.

#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "dispatch/broker/core.hpp"
#include "dispatch/protocol/codec.hpp"

namespace dispatch::broker {

using namespace std::chrono_literals;
using protocol::Command;
using protocol::ErrorKind;
using protocol::Priority;

struct Sent {
  bool to_client = false;
  std::string route;
  Command command = Command::heartbeat;
  Frames frames;

  std::string_view header() const { return view(frames.at(2)); }
  std::string_view payload() const { return view(frames.at(3)); }
};

class FakeTransport final : public Transport {
 public:
  void send_to_client(std::string_view route, Command command, Frames frames) override {
    sent.push_back(Sent{true, std::string(route), command, std::move(frames)});
  }
  SendStatus send_to_worker(std::string_view route, Frames frames) override {
    if (unreachable.contains(std::string(route))) return SendStatus::unreachable;
    const auto command = protocol::command_from_string(view(frames.at(1)));
    sent.push_back(Sent{false, std::string(route), command.value(), std::move(frames)});
    return SendStatus::sent;
  }

  bool worker_input_pending() override { return input_pending; }

  std::deque<Sent> sent;
  std::set<std::string> unreachable;
  bool input_pending = false;
};

template <class T>
inline T decode_or_die(std::string_view bytes) {
  auto decoded = protocol::decode<T>(bytes);
  EXPECT_TRUE(decoded.ok()) << (decoded.ok() ? "" : decoded.error().message);
  if (!decoded.ok()) return T{};
  return std::move(decoded).value();
}

// An encoded Request; `prompt_bytes` sizes it, `timeout_ms` is its total deadline.
inline std::string request_payload(const std::string& provider, std::size_t prompt_bytes = 2,
                                   std::optional<uint32_t> timeout_ms = std::nullopt) {
  protocol::Request request;
  request.provider = provider;
  request.model = "m";
  const std::string prompt = prompt_bytes == 2 ? "hi" : std::string(prompt_bytes, 'x');
  request.messages.push_back(protocol::Message{"user", prompt, {}, {}, {}, {}, {}});
  request.timeout_ms = timeout_ms;
  return protocol::encode(request);
}

class CoreTest : public ::testing::Test {
 protected:
  void SetUp() override { make({}); }

  void make(BrokerConfig config) {
    config.hostile_replies_per_second = 1e9;  // tests count every reply
    config_ = config;
    transport_.sent.clear();
    core_ = std::make_unique<BrokerCore>(config, "broker-1", clock_, transport_);
  }

  void submit(const std::string& client, const std::string& job_id,
              const std::string& provider = "openai", Priority priority = Priority::interactive,
              bool stream = false, uint32_t queue_timeout_ms = 0) {
    protocol::Submit s{job_id, provider, priority, queue_timeout_ms, stream, {}};
    core_->on_frontend(
        client, make_frames(Command::submit, protocol::encode(s), request_payload(provider)));
  }

  // A submit with its own payload bytes.
  void submit_payload(const std::string& client, const std::string& job_id,
                      const std::string& provider, const std::string& payload,
                      uint32_t queue_timeout_ms = 0, bool stream = false) {
    protocol::Submit s{job_id, provider, Priority::interactive, queue_timeout_ms, stream, {}};
    core_->on_frontend(client, make_frames(Command::submit, protocol::encode(s), payload));
  }

  void ready(const std::string& route, const std::string& worker_id, uint32_t capacity,
             std::vector<std::string> providers = {"openai"},
             std::vector<protocol::HeldJob> held = {}) {
    protocol::Ready r{worker_id, "host-a",       42, capacity, std::move(providers),
                      "test",    std::move(held)};
    core_->on_backend(route, make_frames(Command::ready, protocol::encode(r)));
  }

  void credit(const std::string& route, uint32_t capacity) {
    core_->on_backend(route,
                      make_frames(Command::credit, protocol::encode(protocol::Credit{capacity})));
  }

  void worker_heartbeat(const std::string& route) {
    core_->on_backend(
        route, make_frames(Command::heartbeat, protocol::encode(protocol::Heartbeat{route, 0})));
  }

  void result(const std::string& route, const std::string& job_id, uint32_t delivery,
              protocol::Response response = {}) {
    if (response.content.empty()) response.content = "answer to " + job_id;
    core_->on_backend(
        route, make_frames(Command::result, protocol::encode(protocol::JobEnd{job_id, delivery}),
                           protocol::encode(response)));
  }

  void worker_error(const std::string& route, const std::string& job_id, uint32_t delivery,
                    protocol::Error error) {
    core_->on_backend(
        route, make_frames(Command::error, protocol::encode(protocol::JobEnd{job_id, delivery}),
                           protocol::encode(error)));
  }

  void chunk(const std::string& route, const std::string& job_id, uint64_t seq, uint32_t delivery) {
    protocol::ChunkHeader header{protocol::Chunk{job_id, seq, "piece", {}, {}}, delivery};
    core_->on_backend(route, make_frames(Command::chunk, protocol::encode(header)));
  }

  void reset(const std::string& route, const std::string& job_id, uint64_t next_seq,
             uint32_t delivery) {
    protocol::ResetHeader header{protocol::StreamReset{job_id, next_seq, "failover"}, delivery};
    core_->on_backend(route, make_frames(Command::reset, protocol::encode(header)));
  }

  void disconnect(const std::string& route) {
    core_->on_backend(
        route, make_frames(Command::disconnect, protocol::encode(protocol::Disconnect{"bye"})));
  }

  // The code of the one `rejected` (kind queue_full) among `sent`.
  static std::string rejection_code(std::vector<Sent>& sent) {
    auto rejected = of(sent, Command::rejected);
    if (rejected.size() != 1u) return "(" + std::to_string(rejected.size()) + " rejections)";
    auto r = decode_or_die<protocol::Rejected>(rejected[0].header());
    EXPECT_EQ(r.kind, ErrorKind::queue_full);
    return r.code;
  }

  void cancel(const std::string& client, const std::string& job_id) {
    core_->on_frontend(client,
                       make_frames(Command::cancel, protocol::encode(protocol::Cancel{job_id})));
  }

  std::vector<Sent> take() {
    std::vector<Sent> out(std::make_move_iterator(transport_.sent.begin()),
                          std::make_move_iterator(transport_.sent.end()));
    transport_.sent.clear();
    return out;
  }

  // Jobs sent to workers (in order) as (route, job header), and everything else dropped.
  std::vector<std::pair<std::string, protocol::JobHeader>> take_jobs() {
    std::vector<std::pair<std::string, protocol::JobHeader>> jobs;
    for (Sent& s : take()) {
      if (!s.to_client && s.command == Command::job) {
        jobs.emplace_back(s.route, decode_or_die<protocol::JobHeader>(s.header()));
      }
    }
    return jobs;
  }

  std::vector<std::string> take_job_ids() {
    std::vector<std::string> ids;
    for (auto& [route, header] : take_jobs()) ids.push_back(header.job_id);
    return ids;
  }

  std::vector<Sent> take_of(Command command, bool to_client = true) {
    auto all = take();
    return of(all, command, to_client);
  }

  // Messages to clients of one command.
  static std::vector<Sent> of(std::vector<Sent>& all, Command command, bool to_client = true) {
    std::vector<Sent> out;
    for (Sent& s : all) {
      if (s.command == command && s.to_client == to_client) out.push_back(std::move(s));
    }
    return out;
  }

  void advance(std::chrono::milliseconds d) {
    clock_.advance(d);
    core_->on_timer();
  }

  ManualClock clock_;
  FakeTransport transport_;
  BrokerConfig config_;
  std::unique_ptr<BrokerCore> core_;
};

}  // namespace dispatch::broker
