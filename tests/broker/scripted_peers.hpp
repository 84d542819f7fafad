#pragma once

// Scripted clients and workers for the broker's integration tests and bench: plain cppzmq
// DEALER sockets speaking LLMD/1 through the protocol library, driven by one poll loop (pump)
// so a test stays single-threaded and deterministic in what it checks.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "dispatch/protocol/codec.hpp"
#include "dispatch/protocol/messages.hpp"
#include "dispatch/protocol/zmq_io.hpp"

namespace dispatch::test {

using SteadyClock = std::chrono::steady_clock;

struct Received {
  protocol::Command command = protocol::Command::heartbeat;
  std::string header;
  std::string payload;

  template <class T>
  std::optional<T> as() const {
    auto decoded = protocol::decode<T>(header);
    if (!decoded) return std::nullopt;
    return std::move(decoded).value();
  }
  template <class T>
  std::optional<T> payload_as() const {
    auto decoded = protocol::decode<T>(payload);
    if (!decoded) return std::nullopt;
    return std::move(decoded).value();
  }
};

inline zmq::socket_t make_dealer(zmq::context_t& context, const std::string& endpoint) {
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  protocol::apply_protocol_socket_options(socket);
  socket.set(zmq::sockopt::linger, 0);
  socket.set(zmq::sockopt::sndhwm, 1'000'000);
  socket.set(zmq::sockopt::rcvhwm, 1'000'000);
  socket.connect(endpoint);
  return socket;
}

// Receives one message without blocking; messages that do not parse are returned as nullopt
// with `*got_any` set.
inline std::optional<Received> receive_one(zmq::socket_t& socket,
                                           protocol::IncomingMessage& incoming, bool* got_any) {
  *got_any = incoming.receive(socket, false);
  if (!*got_any) return std::nullopt;
  auto parsed = incoming.parse();
  if (!parsed) return std::nullopt;
  Received r;
  r.command = parsed.value().command;
  r.header = std::string(parsed.value().header);
  r.payload = std::string(parsed.value().payload);
  return r;
}

class Peer {
 public:
  virtual ~Peer() = default;
  virtual zmq::socket_t& socket() = 0;
  virtual void on_message(const Received& message) = 0;
  virtual void on_tick(SteadyClock::time_point /*now*/) {}
  // Drains everything waiting on the socket.
  void drain() {
    for (int i = 0; i < 100'000; ++i) {
      bool got_any = false;
      auto message = receive_one(socket(), incoming_, &got_any);
      if (!got_any) return;
      if (message) on_message(*message);
    }
  }

 private:
  protocol::IncomingMessage incoming_;
};

// Polls every peer until `done` or the timeout. Returns done().
inline bool pump(const std::vector<Peer*>& peers, const std::function<bool()>& done,
                 std::chrono::milliseconds timeout) {
  const auto deadline = SteadyClock::now() + timeout;
  while (!done()) {
    const auto now = SteadyClock::now();
    if (now >= deadline) return false;
    std::vector<zmq::pollitem_t> items;
    items.reserve(peers.size());
    for (Peer* peer : peers) items.push_back({peer->socket().handle(), 0, ZMQ_POLLIN, 0});
    zmq::poll(items.data(), items.size(), std::chrono::milliseconds(5));
    for (std::size_t i = 0; i < peers.size(); ++i) {
      if ((items[i].revents & ZMQ_POLLIN) != 0) peers[i]->drain();
    }
    for (Peer* peer : peers) peer->on_tick(SteadyClock::now());
  }
  return true;
}

// What a client saw of one job.
struct ClientJob {
  int accepted = 0;
  int duplicates = 0;
  std::string broker_id;
  std::vector<std::string> events;  // "chunk:<seq>", "reset:<next_seq>", "result", "error", ...
  std::optional<protocol::Response> response;
  std::optional<protocol::Error> error;
  std::optional<protocol::Rejected> rejected;
  int finals = 0;  // result + error + rejected

  bool done() const { return finals > 0; }
};

class ScriptedClient final : public Peer {
 public:
  ScriptedClient(zmq::context_t& context, std::string endpoint)
      : endpoint_(std::move(endpoint)), socket_(make_dealer(context, endpoint_)) {}

  zmq::socket_t& socket() override { return socket_; }

  void submit(const std::string& job_id, const std::string& provider = "openai",
              protocol::Priority priority = protocol::Priority::interactive, bool stream = false,
              uint32_t queue_timeout_ms = 0) {
    protocol::Submit s{job_id, provider, priority, queue_timeout_ms, stream, {}};
    protocol::Request request;
    request.provider = provider;
    request.model = "model-a";
    request.stream = stream;
    request.messages.push_back(protocol::Message{"user", "question " + job_id, {}, {}, {}, {}, {}});
    submitted_[job_id] = s;
    jobs[job_id];  // known from now on
    send(protocol::Command::submit, protocol::encode(s), protocol::encode(request));
  }
  // Sends the same submit again (as after a lost ack or a broker restart).
  void resubmit(const std::string& job_id) {
    const protocol::Submit& s = submitted_.at(job_id);
    protocol::Request request;
    request.provider = s.provider;
    request.model = "model-a";
    request.stream = s.stream;
    request.messages.push_back(protocol::Message{"user", "question " + job_id, {}, {}, {}, {}, {}});
    send(protocol::Command::submit, protocol::encode(s), protocol::encode(request));
  }
  void cancel(const std::string& job_id) {
    send(protocol::Command::cancel, protocol::encode(protocol::Cancel{job_id}));
  }
  void heartbeat() {
    send(protocol::Command::heartbeat, protocol::encode(protocol::Heartbeat{"", 0}));
  }
  void request_status() { send(protocol::Command::status, protocol::kEmptyMap); }

  void send(protocol::Command command, std::string_view header, std::string_view payload = {}) {
    protocol::send_message(socket_, command, header, payload, protocol::SendMode::blocking);
  }

  void on_message(const Received& m) override {
    using protocol::Command;
    ++received;
    switch (m.command) {
      case Command::accepted: {
        auto a = m.as<protocol::Accepted>();
        if (!a) break;
        ClientJob& job = jobs[a->job_id];
        ++job.accepted;
        if (a->duplicate) ++job.duplicates;
        job.broker_id = a->broker_id;
        broker_id = a->broker_id;
        break;
      }
      case Command::rejected: {
        auto r = m.as<protocol::Rejected>();
        if (!r) break;
        if (r->job_id.empty()) {
          anonymous_rejections.push_back(*r);
          break;
        }
        ClientJob& job = jobs[r->job_id];
        job.rejected = *r;
        ++job.finals;
        job.events.push_back("rejected:" + r->code);
        break;
      }
      case Command::chunk: {
        auto c = m.as<protocol::Chunk>();
        if (!c) break;
        jobs[c->job_id].events.push_back("chunk:" + std::to_string(c->seq));
        break;
      }
      case Command::reset: {
        auto r = m.as<protocol::StreamReset>();
        if (!r) break;
        jobs[r->job_id].events.push_back("reset:" + std::to_string(r->next_seq));
        break;
      }
      case Command::result: {
        auto end = m.as<protocol::JobEnd>();
        if (!end) break;
        ClientJob& job = jobs[end->job_id];
        job.response = m.payload_as<protocol::Response>();
        ++job.finals;
        job.events.push_back("result");
        break;
      }
      case Command::error: {
        auto end = m.as<protocol::JobEnd>();
        if (!end) break;
        ClientJob& job = jobs[end->job_id];
        job.error = m.payload_as<protocol::Error>();
        ++job.finals;
        job.events.push_back("error");
        break;
      }
      case Command::heartbeat: {
        auto h = m.as<protocol::Heartbeat>();
        if (h) broker_id = h->sender_id;
        ++heartbeats;
        break;
      }
      case Command::status:
        status = m.as<protocol::StatusReply>();
        break;
      default:
        break;
    }
  }

  std::size_t finished() const {
    std::size_t n = 0;
    for (const auto& [id, job] : jobs) n += job.done() ? 1 : 0;
    return n;
  }

  std::map<std::string, ClientJob> jobs;
  std::vector<protocol::Rejected> anonymous_rejections;
  std::optional<protocol::StatusReply> status;
  std::string broker_id;
  int heartbeats = 0;
  uint64_t received = 0;

 private:
  std::string endpoint_;
  zmq::socket_t socket_;
  std::map<std::string, protocol::Submit> submitted_;
};

class ScriptedWorker final : public Peer {
 public:
  enum class Mode {
    answer,  // answers every job (chunks first when streamed)
    hold,    // keeps jobs until answer_held(); still heartbeats and honours cancel
    silent,  // says nothing at all from now on (a hung or partitioned process)
  };

  ScriptedWorker(zmq::context_t& context, std::string endpoint, std::string worker_id,
                 uint32_t capacity, std::vector<std::string> providers,
                 std::chrono::milliseconds heartbeat)
      : context_(context),
        endpoint_(std::move(endpoint)),
        worker_id_(std::move(worker_id)),
        capacity_(capacity),
        providers_(std::move(providers)),
        heartbeat_(heartbeat),
        socket_(make_dealer(context_, endpoint_)) {
    send_ready();
  }

  zmq::socket_t& socket() override { return socket_; }
  const std::string& id() const { return worker_id_; }

  Mode mode = Mode::answer;
  int chunks_per_stream = 3;

  // A new connection (new routing id) and `ready`, as a worker does after losing the broker.
  void reconnect() {
    socket_ = make_dealer(context_, endpoint_);
    ++reconnects;
    held.clear();  // a real worker would keep them running; answers to them would be zombies
    send_ready();
  }

  void send_ready() {
    protocol::Ready r{worker_id_, "test-host", 1234, capacity_, providers_, "scripted", {}};
    send(protocol::Command::ready, protocol::encode(r));
    last_heard_ = SteadyClock::now();
  }

  void send_credit(uint32_t capacity) {
    send(protocol::Command::credit, protocol::encode(protocol::Credit{capacity}));
  }

  void answer_held() {
    auto jobs = std::move(held);
    held.clear();
    for (auto& [job_id, header] : jobs) run(header);
  }

  void send_chunk(const std::string& job_id, uint64_t seq, uint32_t delivery,
                  const std::string& text) {
    protocol::ChunkHeader header{protocol::Chunk{job_id, seq, text, {}, {}}, delivery};
    send(protocol::Command::chunk, protocol::encode(header));
  }

  void send_result(const std::string& job_id, uint32_t delivery) {
    protocol::Response response;
    response.content = "answer to " + job_id + " from " + worker_id_;
    response.provider = "openai";
    response.model = "model-a";
    response.usage = {3, 4, 7};
    response.finish_reason = "stop";
    response.attempts = {{"openai", "model-a", "ok", 200, {}, {}, 0, 1, {}}};
    send(protocol::Command::result, protocol::encode(protocol::JobEnd{job_id, delivery}),
         protocol::encode(response));
  }

  void send_error(const std::string& job_id, uint32_t delivery, protocol::ErrorKind kind) {
    protocol::Error error;
    error.kind = kind;
    error.message = std::string(protocol::to_string(kind));
    send(protocol::Command::error, protocol::encode(protocol::JobEnd{job_id, delivery}),
         protocol::encode(error));
  }

  void on_message(const Received& m) override {
    using protocol::Command;
    last_heard_ = SteadyClock::now();
    if (mode == Mode::silent) {
      ++ignored;
      return;
    }
    switch (m.command) {
      case Command::job: {
        auto header = m.as<protocol::JobHeader>();
        if (!header) break;
        jobs_received.push_back(*header);
        if (mode == Mode::hold) {
          held[header->job_id] = *header;
        } else {
          run(*header);
        }
        break;
      }
      case Command::cancel: {
        auto c = m.as<protocol::Cancel>();
        if (!c) break;
        cancels.push_back(c->job_id);
        auto it = held.find(c->job_id);
        if (it != held.end()) {
          send_error(c->job_id, it->second.delivery, protocol::ErrorKind::cancelled);
          held.erase(it);
        }
        break;
      }
      case Command::disconnect:
        ++disconnects;
        reconnect();
        break;
      case Command::rejected:
        ++rejections;
        break;
      default:
        break;
    }
  }

  void on_tick(SteadyClock::time_point now) override {
    if (mode == Mode::silent) return;
    // The broker is gone when it has been silent for 4 intervals: start over.
    if (now - last_heard_ > heartbeat_ * 4) {
      reconnect();
      return;
    }
    if (now - last_sent_ >= heartbeat_) {
      send(protocol::Command::heartbeat,
           protocol::encode(protocol::Heartbeat{worker_id_, static_cast<uint32_t>(held.size())}));
    }
  }

  std::vector<protocol::JobHeader> jobs_received;
  std::map<std::string, protocol::JobHeader> held;
  std::vector<std::string> cancels;
  int reconnects = 0;
  int disconnects = 0;
  int rejections = 0;
  uint64_t ignored = 0;

 private:
  void run(const protocol::JobHeader& header) {
    if (header.stream) {
      for (int i = 0; i < chunks_per_stream; ++i) {
        send_chunk(header.job_id, static_cast<uint64_t>(i), header.delivery,
                   "part" + std::to_string(i));
      }
    }
    send_result(header.job_id, header.delivery);
  }

  void send(protocol::Command command, std::string_view header, std::string_view payload = {}) {
    protocol::send_message(socket_, command, header, payload, protocol::SendMode::blocking);
    last_sent_ = SteadyClock::now();
  }

  zmq::context_t& context_;
  std::string endpoint_;
  std::string worker_id_;
  uint32_t capacity_;
  std::vector<std::string> providers_;
  std::chrono::milliseconds heartbeat_;
  zmq::socket_t socket_;
  SteadyClock::time_point last_heard_ = SteadyClock::now();
  SteadyClock::time_point last_sent_ = SteadyClock::now();
};

}  // namespace dispatch::test
