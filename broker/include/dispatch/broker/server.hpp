#pragma once

// BrokerServer: the ZeroMQ shell around BrokerCore. One thread, two ROUTER sockets, one
// zmq::poll with a timeout from the core's next timer. Sends never block (see ClientOutbox).

#include <string>

#include "dispatch/broker/client_outbox.hpp"
#include "dispatch/broker/config.hpp"
#include "dispatch/broker/core.hpp"
#include "dispatch/broker/transport.hpp"
#include "dispatch/common/clock.hpp"
#include "dispatch/protocol/zmq_io.hpp"

namespace dispatch::broker {

// Self-pipe for stop requests: notify() is async-signal-safe (one write(2)), so a signal
// handler or another thread can wake the loop, which polls read_fd().
class WakePipe {
 public:
  WakePipe();  // throws std::system_error
  ~WakePipe();
  WakePipe(const WakePipe&) = delete;
  WakePipe& operator=(const WakePipe&) = delete;

  int read_fd() const noexcept { return read_fd_; }
  int write_fd() const noexcept { return write_fd_; }
  void notify() const noexcept;

 private:
  int read_fd_ = -1;
  int write_fd_ = -1;
};

// SIGTERM and SIGINT call pipe.notify() (the first starts a drain, the second ends it);
// SIGPIPE is ignored. The pipe must outlive the process's use of the handlers.
void install_stop_signals(const WakePipe& pipe);

class BrokerServer final : private Transport {
 public:
  // Binds both sockets (throws zmq::error_t, e.g. address in use).
  BrokerServer(BrokerConfig config, std::string broker_id,
               const Clock& clock = SystemClock::instance());
  ~BrokerServer() override;
  BrokerServer(const BrokerServer&) = delete;
  BrokerServer& operator=(const BrokerServer&) = delete;

  // The endpoints actually bound (an ephemeral port resolved; a wildcard host shown as
  // 127.0.0.1 so that the string can be connected to).
  const std::string& frontend_endpoint() const noexcept { return frontend_endpoint_; }
  const std::string& backend_endpoint() const noexcept { return backend_endpoint_; }

  // Serves until a drain has ended. Each byte readable on `stop_fd` is one stop request: the
  // first begins the drain, the second ends it at once. -1: no stop fd.
  void run(int stop_fd = -1);

  const BrokerCore& core() const noexcept { return core_; }
  const OutboxStats& outbox_stats() const noexcept { return outbox_.stats(); }

 private:
  void send_to_client(std::string_view route, protocol::Command command, Frames frames) override;
  SendStatus send_to_worker(std::string_view route, Frames frames) override;
  bool worker_input_pending() override;
  static SendStatus try_send(zmq::socket_t& socket, std::string_view route, Frames& frames);
  void receive_batch(zmq::socket_t& socket, protocol::IncomingMessage& incoming, bool frontend);
  void flush_before_exit();

  BrokerConfig config_;
  const Clock& clock_;
  zmq::context_t context_;
  zmq::socket_t frontend_;
  zmq::socket_t backend_;
  std::string frontend_endpoint_;
  std::string backend_endpoint_;
  protocol::IncomingMessage frontend_in_;
  protocol::IncomingMessage backend_in_;
  ClientOutbox outbox_;
  BrokerCore core_;
};

}  // namespace dispatch::broker
