#include "dispatch/broker/connection_monitor.hpp"

#include <zmq.h>

#include <cstring>
#include <string>

#include "dispatch/common/random.hpp"

namespace dispatch::broker {
namespace {

// A monitor event's first frame: uint16 event id, uint32 value (native byte order).
constexpr std::size_t kEventFrameSize = 6;

}  // namespace

ConnectionMonitor::ConnectionMonitor(zmq::context_t& context, zmq::socket_ref socket)
    : pair_(context, zmq::socket_type::pair) {
  // Unique per monitored socket: inproc names are per context.
  const std::string address = "inproc://dispatch-connections-" + random_hex_id(8);
  if (zmq_socket_monitor(socket.handle(), address.c_str(),
                         ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED) != 0) {
    throw zmq::error_t();
  }
  pair_.set(zmq::sockopt::linger, 0);
  pair_.connect(address);
}

ConnectionMonitor::Changes ConnectionMonitor::read() {
  Changes changes;
  while (true) {
    zmq::message_t event;
    if (!pair_.recv(event, zmq::recv_flags::dontwait)) break;
    bool more = event.more();
    while (more) {  // the peer's address
      zmq::message_t address;
      if (!pair_.recv(address, zmq::recv_flags::dontwait)) break;
      more = address.more();
    }
    if (event.size() < kEventFrameSize) continue;
    uint16_t id = 0;
    std::memcpy(&id, event.data(), sizeof id);
    if (id == ZMQ_EVENT_ACCEPTED) {
      ++changes.accepted;
      ++open_;
    } else if (id == ZMQ_EVENT_DISCONNECTED) {
      ++changes.closed;
      if (open_ > 0) --open_;
    }
  }
  return changes;
}

}  // namespace dispatch::broker
