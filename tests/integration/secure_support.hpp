#pragma once

// Helpers for tests of a broker with CURVE: the key directories an operator lays out, DEALER
// sockets with CURVE options (the honest client and the attacker are the same few lines of
// cppzmq), the handshake outcome read from a socket monitor, and a worker played by the test.

#include <zmq.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "dispatch/protocol/codec.hpp"
#include "dispatch/protocol/curve.hpp"
#include "dispatch/protocol/messages.hpp"
#include "dispatch/protocol/zmq_io.hpp"
#include "system_support.hpp"

namespace dispatch::test {

// keys/broker.key{,_secret}, keys/secrets/NAME.key{,_secret} for every identity, and one
// directory per role (clients, workers, gateways, admins) holding the NAME.key of each identity
// that has it: what README's "Running across hosts securely" tells an operator to make.
class KeyRing {
 public:
  explicit KeyRing(std::string root) : root_(std::move(root)) {
    for (const char* sub : {"secrets", "clients", "workers", "gateways", "admins"}) {
      std::filesystem::create_directories(root_ + "/" + sub);
    }
    broker_ = make_pair(root_ + "/broker");
  }

  // A new identity listed in each of `roles` ("clients", "workers", "gateways", "admins").
  protocol::CurveKeys add(const std::string& name, std::initializer_list<std::string> roles) {
    protocol::CurveKeys keys = make_pair(secret_base(name));
    for (const std::string& role : roles) list(name, role);
    return keys;
  }
  // Copies NAME's public certificate into a role directory.
  void list(const std::string& name, const std::string& role) {
    std::filesystem::copy_file(secret_base(name) + ".key", dir(role) + "/" + name + ".key",
                               std::filesystem::copy_options::overwrite_existing);
  }
  void unlist(const std::string& name, const std::string& role) {
    std::filesystem::remove(dir(role) + "/" + name + ".key");
  }
  // A key pair that no list knows.
  static protocol::CurveKeys stranger() {
    auto keys = protocol::generate_curve_keys();
    if (!keys) throw std::runtime_error(keys.error());
    return *keys;
  }

  std::string dir(const std::string& role) const { return root_ + "/" + role; }
  std::string secret_file(const std::string& name) const {
    return secret_base(name) + ".key_secret";
  }
  const protocol::CurveKeys& broker() const { return broker_; }
  std::string broker_secret_file() const { return root_ + "/broker.key_secret"; }
  std::string broker_public_file() const { return root_ + "/broker.key"; }

  // dispatch-broker's flags for this ring.
  std::vector<std::string> broker_args() const {
    return {"--curve-secret",  broker_secret_file(), "--allow-clients",  dir("clients"),
            "--allow-workers", dir("workers"),       "--allow-gateways", dir("gateways"),
            "--allow-admins",  dir("admins")};
  }

 private:
  std::string secret_base(const std::string& name) const { return root_ + "/secrets/" + name; }
  static protocol::CurveKeys make_pair(const std::string& base) {
    auto keys = protocol::generate_curve_keys();
    if (!keys) throw std::runtime_error(keys.error());
    auto saved = protocol::save_certificate(base, *keys);
    if (!saved) throw std::runtime_error(saved.error());
    return *keys;
  }

  std::string root_;
  protocol::CurveKeys broker_;
};

// CURVE client options for a socket that talks to `broker` with key pair `own`.
inline std::function<void(zmq::socket_t&)> curve_as(const protocol::CurveKeys& own,
                                                    const protocol::CurveKeys& broker) {
  return [own, broker](zmq::socket_t& socket) {
    protocol::make_curve_client(socket, own, broker.public_key);
  };
}

// What became of a socket's connection attempts, from its monitor (attach before connecting).
class HandshakeMonitor {
 public:
  HandshakeMonitor(zmq::context_t& context, zmq::socket_t& watched)
      : pair_(context, zmq::socket_type::pair) {
    static std::atomic<int> counter{0};
    const std::string endpoint = "inproc://handshake-monitor-" + std::to_string(++counter);
    if (zmq_socket_monitor(watched.handle(), endpoint.c_str(), ZMQ_EVENT_ALL) != 0) {
      throw std::runtime_error("zmq_socket_monitor failed");
    }
    pair_.set(zmq::sockopt::linger, 0);
    pair_.connect(endpoint);
  }

  // The first event among `wanted` within `timeout` (0 if none came); its value in *value.
  int wait_for(std::initializer_list<int> wanted, milliseconds timeout, uint32_t* value = nullptr) {
    const auto deadline = SteadyClock::now() + timeout;
    pair_.set(zmq::sockopt::rcvtimeo, 50);
    while (SteadyClock::now() < deadline) {
      zmq::message_t event;
      if (!pair_.recv(event)) continue;
      zmq::message_t address;
      (void)pair_.recv(address);
      uint16_t id = 0;
      uint32_t event_value = 0;
      std::memcpy(&id, event.data(), sizeof id);
      std::memcpy(&event_value, static_cast<const char*>(event.data()) + sizeof id,
                  sizeof event_value);
      for (int w : wanted) {
        if (id != w) continue;
        if (value != nullptr) *value = event_value;
        return id;
      }
    }
    return 0;
  }

 private:
  zmq::socket_t pair_;
};

// A worker played by the test over a raw DEALER: registers, records the jobs it gets, answers
// them when told to.
class ScriptedWorker {
 public:
  ScriptedWorker(zmq::context_t& context, const std::string& endpoint,
                 const std::function<void(zmq::socket_t&)>& before_connect)
      : socket_(context, zmq::socket_type::dealer) {
    protocol::apply_protocol_socket_options(socket_);
    socket_.set(zmq::sockopt::linger, 0);
    if (before_connect) before_connect(socket_);
    monitor_.emplace(context, socket_);
    socket_.connect(endpoint);
  }

  void ready(const std::string& worker_id, uint32_t capacity,
             std::vector<std::string> providers = {"openai"}) {
    protocol::Ready ready{worker_id, "scripted", 1, capacity, std::move(providers), "test", {}};
    protocol::send_message(socket_, protocol::Command::ready, protocol::encode(ready), {},
                           protocol::SendMode::nonblocking);
  }

  void heartbeat() {
    protocol::send_message(socket_, protocol::Command::heartbeat,
                           protocol::encode(protocol::Heartbeat{"scripted", 0}), {},
                           protocol::SendMode::nonblocking);
  }

  void answer(const protocol::JobHeader& job, const std::string& content) {
    protocol::Response response;
    response.content = content;
    response.provider = "openai";
    response.model = "m";
    protocol::send_message(socket_, protocol::Command::result,
                           protocol::encode(protocol::JobEnd{job.job_id, job.delivery}),
                           protocol::encode(response), protocol::SendMode::blocking);
  }

  // Receives what is waiting (at most `wait` for the first message), heartbeating so that the
  // broker keeps it registered.
  void pump(milliseconds wait) {
    heartbeat();
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, wait);
    while (incoming_.receive(socket_, false)) {
      auto parsed = incoming_.parse();
      if (!parsed) continue;
      ++received_[parsed.value().command];
      if (parsed.value().command == protocol::Command::job) {
        auto header = protocol::decode<protocol::JobHeader>(parsed.value().header);
        if (header) jobs.push_back(header.value());
      } else if (parsed.value().command == protocol::Command::rejected) {
        auto rejected = protocol::decode<protocol::Rejected>(parsed.value().header);
        if (rejected) rejections.push_back(rejected.value());
      } else if (parsed.value().command == protocol::Command::cancel) {
        auto cancel = protocol::decode<protocol::Cancel>(parsed.value().header);
        if (cancel) cancels.push_back(cancel.value().job_id);
      }
    }
  }

  int received(protocol::Command command) const {
    auto it = received_.find(command);
    return it == received_.end() ? 0 : it->second;
  }
  HandshakeMonitor& monitor() { return *monitor_; }

  std::vector<protocol::JobHeader> jobs;
  std::vector<protocol::Rejected> rejections;
  std::vector<std::string> cancels;

 private:
  zmq::socket_t socket_;
  std::optional<HandshakeMonitor> monitor_;
  protocol::IncomingMessage incoming_;
  std::map<protocol::Command, int> received_;
};

}  // namespace dispatch::test
