#include "dispatch/protocol/handshake_monitor.hpp"

#include <zmq.h>

#include <cstring>
#include <utility>

#include "dispatch/common/random.hpp"

namespace dispatch::protocol {
namespace {

constexpr int kWatchedEvents = ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH |
                               ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL;

// A monitor event's first frame: uint16 event id, uint32 value (native byte order).
constexpr std::size_t kEventFrameSize = 6;

}  // namespace

std::string_view handshake_failure_code(HandshakeFailure failure) {
  switch (failure) {
    case HandshakeFailure::auth_refused:
      return "broker_auth_refused";
    case HandshakeFailure::curve_required:
      return "broker_requires_curve";
    case HandshakeFailure::curve_not_used:
      return "broker_without_curve";
    case HandshakeFailure::curve_failed:
      return "curve_handshake_failed";
    case HandshakeFailure::protocol_error:
      return "handshake_failed";
  }
  return "handshake_failed";
}

HandshakeMonitor::HandshakeMonitor(zmq::context_t& context, zmq::socket_ref socket,
                                   std::string endpoint, bool curve)
    : pair_(context, zmq::socket_type::pair), endpoint_(std::move(endpoint)), curve_(curve) {
  // Unique per monitored socket: inproc names are per context, and sockets get replaced.
  const std::string address = "inproc://dispatch-handshake-" + random_hex_id(8);
  if (zmq_socket_monitor(socket.handle(), address.c_str(), kWatchedEvents) != 0) {
    throw zmq::error_t();
  }
  pair_.set(zmq::sockopt::linger, 0);
  pair_.connect(address);
}

int HandshakeMonitor::fd() const {
  return pair_.get(zmq::sockopt::fd);
}

std::vector<HandshakeProblem> HandshakeMonitor::read() {
  std::vector<HandshakeProblem> problems;
  while (true) {
    zmq::message_t event;
    if (!pair_.recv(event, zmq::recv_flags::dontwait)) break;
    bool more = event.more();
    while (more) {  // the peer's address; not needed: messages name the configured endpoint
      zmq::message_t address;
      if (!pair_.recv(address, zmq::recv_flags::dontwait)) break;
      more = address.more();
    }
    if (event.size() < kEventFrameSize) continue;
    uint16_t id = 0;
    uint32_t value = 0;
    std::memcpy(&id, event.data(), sizeof id);
    std::memcpy(&value, static_cast<const char*>(event.data()) + sizeof id, sizeof value);
    if (auto problem = on_event(id, value)) problems.push_back(std::move(*problem));
  }
  return problems;
}

std::optional<HandshakeProblem> HandshakeMonitor::on_event(uint16_t event, uint32_t value) {
  switch (event) {
    case ZMQ_EVENT_HANDSHAKE_SUCCEEDED:
      succeeded_ = true;
      silent_failures_ = 0;
      mismatch_.reset();
      return std::nullopt;
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
      silent_failures_ = 0;
      return problem(HandshakeFailure::auth_refused);
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
      silent_failures_ = 0;
      if (value != ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
        return problem(HandshakeFailure::protocol_error);
      }
      mismatch_ = curve_ ? HandshakeFailure::curve_not_used : HandshakeFailure::curve_required;
      return problem(*mismatch_);
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
      // In plaintext this is only a connection lost mid-handshake; the reconnect handles it.
      if (!curve_ || ++silent_failures_ < kSilentFailuresReported) return std::nullopt;
      return problem(mismatch_.value_or(HandshakeFailure::curve_failed));
    default:
      return std::nullopt;
  }
}

HandshakeProblem HandshakeMonitor::problem(HandshakeFailure failure) const {
  std::string message;
  switch (failure) {
    case HandshakeFailure::auth_refused:
      message = "authentication refused by the broker at " + endpoint_;
      break;
    case HandshakeFailure::curve_required:
      message =
          "the broker at " + endpoint_ + " requires CURVE: give --broker-key and --curve-secret";
      break;
    case HandshakeFailure::curve_not_used:
      message = "the broker at " + endpoint_ + " does not use CURVE";
      break;
    case HandshakeFailure::curve_failed:
      message = "CURVE handshake with the broker at " + endpoint_ + " failed (wrong broker key?)";
      break;
    case HandshakeFailure::protocol_error:
      message = "the ZeroMQ handshake with " + endpoint_ +
                " failed with a protocol error (is a dispatch-broker listening there?)";
      break;
  }
  return {failure, std::move(message)};
}

}  // namespace dispatch::protocol
