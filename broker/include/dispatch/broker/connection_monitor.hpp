#pragma once

// Counts the TCP/IPC connections a listening socket accepts and loses, for the broker's
// `dispatch_client_connections` metric. ZeroMQ hides connections behind the socket; a socket
// monitor (an inproc PAIR fed by libzmq, read by the broker's poll loop) reports them.
//
// libzmq posts monitor events without blocking and drops them when the PAIR's queue is full
// (1,000 events by default), so under a burst of connects and disconnects between two reads the
// count can drift; `open()` never goes below zero. The loop reads the PAIR every turn, so a
// burst would have to exceed 1,000 events within one turn.

#include <cstdint>
#include <zmq.hpp>

namespace dispatch::broker {

class ConnectionMonitor {
 public:
  // Starts monitoring `socket` (call before it binds, or connections made earlier are not
  // counted). Throws zmq::error_t.
  ConnectionMonitor(zmq::context_t& context, zmq::socket_ref socket);
  ConnectionMonitor(const ConnectionMonitor&) = delete;
  ConnectionMonitor& operator=(const ConnectionMonitor&) = delete;

  // The PAIR to poll for ZMQ_POLLIN.
  zmq::socket_ref socket() noexcept { return pair_; }

  struct Changes {
    uint64_t accepted = 0;
    uint64_t closed = 0;
  };
  // Reads every event waiting (never blocks): the connections accepted and closed since the
  // last call.
  Changes read();

  uint64_t open() const noexcept { return open_; }

 private:
  zmq::socket_t pair_;
  uint64_t open_ = 0;
};

}  // namespace dispatch::broker
