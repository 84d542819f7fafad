#pragma once

// The client's connection to the broker on one thread: a DEALER socket with its handshake
// monitor, and the Session it feeds. No thread and no waiting of its own: whoever owns it
// (ClientEngine's I/O thread in client.cpp, or a caller's event loop through LoopClient) calls
// pump() when the socket may have something and when the session's next wakeup is due, and
// waits in between on the descriptors it exposes. Every call must come from the same thread.

#include <cstdint>
#include <deque>
#include <memory>
#include <zmq.hpp>

#include "dispatch/client.hpp"
#include "dispatch/protocol/broker_keys.hpp"
#include "dispatch/protocol/handshake_monitor.hpp"
#include "dispatch/protocol/zmq_io.hpp"
#include "session.hpp"

namespace dispatch::detail {

class BrokerConnection {
 public:
  // Connects at once (ZeroMQ connects in the background). Throws std::invalid_argument for
  // keys that do not pair up or an endpoint ZeroMQ cannot parse.
  BrokerConnection(const ClientOptions& options, zmq::context_t& context, Clock& clock,
                   Random& random);
  BrokerConnection(const BrokerConnection&) = delete;
  BrokerConnection& operator=(const BrokerConnection&) = delete;

  Session& session() noexcept { return session_; }
  const SessionSettings& settings() const noexcept { return settings_; }

  // Call before handing the session new work: libzmq gives up after some refusals (a mechanism
  // mismatch), so new work after a refused handshake gets a fresh socket and a new try.
  void before_new_work();

  // Receives what arrived (bounded), reads handshake failures, runs the session's timers,
  // replaces the socket when the broker went silent, and sends what the session queued.
  // Returns true when it stopped early with messages still waiting to be read: call again
  // soon, without waiting.
  bool pump();

  // ZeroMQ's edge-triggered notification: after pump(), true when the socket already holds a
  // message, which its descriptor will not announce again. (libzmq: ZMQ_FD signals changes of
  // ZMQ_EVENTS; a send or receive may consume the edge.)
  bool readable_now();

  // Ends every job (cancels go to the broker, best effort within `linger`) and closes the socket.
  void close(std::chrono::milliseconds linger);

  bool has_unsent() const noexcept { return !unsent_.empty(); }
  zmq::socket_t& socket() noexcept { return socket_; }
  zmq::socket_ref monitor_socket() noexcept { return monitor_->socket(); }
  int monitor_fd() const { return monitor_->fd(); }
  // Incremented when the socket is replaced: its descriptors change with it.
  uint64_t generation() const noexcept { return generation_; }

 private:
  void open_socket();
  void replace_socket();
  void check_handshakes();
  bool receive_available();
  void flush();

  ClientOptions options_;
  SessionSettings settings_;
  Session session_;
  protocol::BrokerKeys keys_;  // plaintext when empty; holds a secret key: never logged
  zmq::context_t& context_;
  zmq::socket_t socket_;
  std::unique_ptr<protocol::HandshakeMonitor> monitor_;  // of socket_
  bool refused_ = false;  // the last handshake was refused; new work replaces the socket
  protocol::IncomingMessage incoming_;
  std::deque<EncodedMessage> unsent_;  // messages the socket could not take yet (HWM)
  uint64_t generation_ = 0;
};

}  // namespace dispatch::detail
