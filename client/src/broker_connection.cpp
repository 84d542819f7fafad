#include "broker_connection.hpp"

#include <spdlog/spdlog.h>

#include <stdexcept>
#include <string_view>
#include <utility>
#include <vector>

namespace dispatch::detail {

namespace {

// Messages read in one pump() at most, so that timers and queued work are looked at even under
// a flood of replies.
constexpr int kMaxReceivesPerPump = 10000;

protocol::BrokerKeys curve_keys_of(const ClientOptions& options) {
  protocol::BrokerKeys keys;
  keys.broker_public_key = options.broker_public_key;
  keys.own = options.curve_keys;
  if (auto checked = protocol::check_broker_keys(keys); !checked) {
    throw std::invalid_argument("dispatch client: " + checked.error());
  }
  return keys;
}

}  // namespace

BrokerConnection::BrokerConnection(const ClientOptions& options, zmq::context_t& context,
                                   Clock& clock, Random& random)
    : options_(options),
      settings_(SessionSettings::from(options)),
      session_(settings_, clock, random),
      keys_(curve_keys_of(options)),
      context_(context) {
  open_socket();
}

// A new DEALER with its handshake monitor, replacing the old pair only once both exist (on
// failure the old ones stay and the error is thrown).
void BrokerConnection::open_socket() {
  zmq::socket_t socket(context_, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 0);
  protocol::apply_protocol_socket_options(socket);
  socket.set(zmq::sockopt::reconnect_ivl, 100);
  socket.set(zmq::sockopt::reconnect_ivl_max, 2000);
  protocol::apply_broker_keys(socket, keys_);
  // Before connect, so that the first handshake is seen.
  auto monitor = std::make_unique<protocol::HandshakeMonitor>(
      context_, socket, options_.broker_endpoint, keys_.enabled());
  try {
    socket.connect(options_.broker_endpoint);
  } catch (const zmq::error_t& e) {
    throw std::invalid_argument("dispatch client: cannot connect to '" + options_.broker_endpoint +
                                "': " + e.what());
  }
  if (monitor_) monitor->carry_over(monitor_->history());
  monitor_ = std::move(monitor);
  socket_ = std::move(socket);
  ++generation_;
}

// The broker went silent, or refused the last connection and new work came: a fresh socket
// (a fresh handshake), and every unfinished job is sent again on it.
void BrokerConnection::replace_socket() {
  unsent_.clear();  // they were for the old socket; on_reconnected resends what matters
  try {
    open_socket();
  } catch (const std::exception& e) {
    spdlog::error("{}", e.what());
  }
  session_.on_reconnected();
}

void BrokerConnection::before_new_work() {
  if (!refused_) return;
  refused_ = false;
  replace_socket();
}

// A refused handshake fails everything waiting at once: nothing sent on this connection will
// be answered, and the user should learn why now rather than after the ack timeouts.
void BrokerConnection::check_handshakes() {
  for (const protocol::HandshakeProblem& problem : monitor_->read()) {
    spdlog::info("dispatch client: {}", problem.message);
    const ErrorKind kind = problem.failure == protocol::HandshakeFailure::protocol_error
                               ? ErrorKind::network
                               : ErrorKind::authentication;
    session_.fail_all(make_wire_error(
        kind, std::string(protocol::handshake_failure_code(problem.failure)), problem.message));
    refused_ = true;
  }
}

bool BrokerConnection::pump() {
  const bool more = receive_available();
  check_handshakes();
  session_.tick();
  if (session_.take_reconnect_request()) replace_socket();
  for (auto& frames : session_.take_outbox()) unsent_.push_back(std::move(frames));
  flush();
  return more;
}

bool BrokerConnection::readable_now() {
  try {
    return (socket_.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0;
  } catch (const zmq::error_t& e) {
    spdlog::warn("dispatch client: reading ZMQ_EVENTS failed: {}", e.what());
    return false;
  }
}

bool BrokerConnection::receive_available() {
  for (int i = 0; i < kMaxReceivesPerPump; ++i) {
    try {
      if (!incoming_.receive(socket_, /*routed=*/false)) return false;
    } catch (const zmq::error_t& e) {
      spdlog::warn("dispatch client: receive failed: {}", e.what());
      return false;
    }
    session_.on_message(incoming_.protocol_frames());
  }
  return true;
}

void BrokerConnection::flush() {
  std::vector<std::string_view> views;
  while (!unsent_.empty()) {
    const auto& frames = unsent_.front();
    views.assign(frames.begin(), frames.end());
    try {
      if (!protocol::send_frames(socket_, views, protocol::SendMode::nonblocking)) return;
    } catch (const zmq::error_t& e) {
      spdlog::warn("dispatch client: send failed: {}", e.what());
    }
    unsent_.pop_front();
  }
}

void BrokerConnection::close(std::chrono::milliseconds linger) {
  session_.shutdown();
  for (auto& frames : session_.take_outbox()) unsent_.push_back(std::move(frames));
  // Give the cancels a moment to leave; the broker ends those jobs itself otherwise.
  socket_.set(zmq::sockopt::linger, static_cast<int>(linger.count()));
  flush();
  socket_.close();
}

}  // namespace dispatch::detail
