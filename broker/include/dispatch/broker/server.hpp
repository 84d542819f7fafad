#pragma once

// BrokerServer: the ZeroMQ shell around BrokerCore. One thread, two ROUTER sockets, one
// zmq::poll with a timeout from the core's next timer. Sends never block (see ClientOutbox).
//
// With CURVE (BrokerConfig::curve_secret) both sockets are CURVE servers, and the ZAP handler
// (RFC 27) is a REP socket on inproc://zeromq.zap.01 in the broker's own context, bound before
// either socket and answered by the same poll loop: no thread, no lock on the allow-lists. Each
// message's identity is its ZAP user id (the `User-Id` property of a received protocol frame),
// looked up in the current allow-lists, which SIGHUP re-reads.

#include <chrono>
#include <functional>
#include <optional>
#include <string>

#include "dispatch/broker/auth.hpp"
#include "dispatch/broker/client_outbox.hpp"
#include "dispatch/broker/config.hpp"
#include "dispatch/broker/connection_monitor.hpp"
#include "dispatch/broker/core.hpp"
#include "dispatch/broker/heap_trim.hpp"
#include "dispatch/broker/transport.hpp"
#include "dispatch/common/clock.hpp"
#include "dispatch/common/fd.hpp"
#include "dispatch/common/result.hpp"
#include "dispatch/protocol/zmq_io.hpp"

namespace dispatch::broker {

// SIGTERM and SIGINT signal `stop` (the first starts a drain, the second ends it): an eventfd
// write is async-signal-safe. SIGPIPE is ignored. `stop` must outlive the handlers' use; the
// destructor of StopSignals puts the default handlers back.
class StopSignals {
 public:
  explicit StopSignals(const WakeupFd& stop);
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
};

// SIGHUP signals `reload` (the allow-lists are read again). While it lives SIGHUP no longer
// ends the process; the destructor puts the default handler back.
class ReloadSignal {
 public:
  explicit ReloadSignal(const WakeupFd& reload);
  ~ReloadSignal();
  ReloadSignal(const ReloadSignal&) = delete;
  ReloadSignal& operator=(const ReloadSignal&) = delete;
};

// Whether `config` may serve its endpoints: without CURVE only loopback ones, unless
// `insecure`. The refusal says how to make keys.
Result<void, std::string> check_exposure(const BrokerConfig& config);

class BrokerServer final : private Transport {
 public:
  // Loads the keys (CURVE), starts the ZAP handler and binds both sockets. Throws
  // std::runtime_error when it cannot (a refused exposure, a bad key file or allow-list, an
  // address in use).
  BrokerServer(BrokerConfig config, std::string broker_id,
               const Clock& clock = SystemClock::instance());
  ~BrokerServer() override;
  BrokerServer(const BrokerServer&) = delete;
  BrokerServer& operator=(const BrokerServer&) = delete;

  // The endpoints actually bound (an ephemeral port resolved; a wildcard host shown as
  // 127.0.0.1 so that the string can be connected to).
  const std::string& frontend_endpoint() const noexcept { return frontend_endpoint_; }
  const std::string& backend_endpoint() const noexcept { return backend_endpoint_; }

  // Serves until a drain has ended. Each signal() of `stop` is one stop request: the first
  // begins the drain, the second ends it at once. A signal() of `reload` re-reads the
  // allow-lists. nullptr: no such requests.
  void run(const WakeupFd* stop = nullptr, const WakeupFd* reload = nullptr);
  // Re-reads the allow-lists (as on SIGHUP). On an error the lists in force stay.
  void reload_allow_lists();
  bool curve() const noexcept { return auth_.has_value(); }
  // Also called on each reload request (SIGHUP), after the allow-lists, on this thread between
  // events: dispatch-broker re-reads its --config quotas there.
  void on_reload(std::function<void(BrokerCore&)> hook) { on_reload_ = std::move(hook); }

  const BrokerCore& core() const noexcept { return core_; }
  // Count into `metrics` from now on (see BrokerCore::set_metrics).
  void set_metrics(BrokerMetrics* metrics) {
    metrics_ = metrics;
    core_.set_metrics(metrics);
  }
  const OutboxStats& outbox_stats() const noexcept { return outbox_.stats(); }

 private:
  void send_to_client(std::string_view route, protocol::Command command, Frames frames) override;
  SendStatus send_to_worker(std::string_view route, Frames frames) override;
  bool worker_input_pending() override;
  static SendStatus try_send(zmq::socket_t& socket, std::string_view route, Frames& frames);
  void start_curve();
  void bind_sockets();
  // Who sent the message in `incoming` (see identity.hpp).
  Peer peer_of(protocol::IncomingMessage& incoming);
  void receive_batch(zmq::socket_t& socket, protocol::IncomingMessage& incoming, bool frontend);
  void answer_zap();
  void count_client_connections();
  // How long the loop may sleep in poll.
  std::chrono::milliseconds poll_wait() const;
  void on_stop_request(const WakeupFd& stop, unsigned long long& requests);
  void flush_before_exit();

  BrokerConfig config_;
  const Clock& clock_;
  zmq::context_t context_;
  std::optional<Authenticator> auth_;  // with CURVE only
  std::function<void(BrokerCore&)> on_reload_;
  zmq::socket_t zap_;             // the ZAP handler's REP socket, with CURVE only
  std::string unlisted_user_id_;  // the user id of the message in hand, when not listed
  zmq::socket_t frontend_;
  zmq::socket_t backend_;
  ConnectionMonitor client_connections_;  // of frontend_, from before it binds
  std::string frontend_endpoint_;
  std::string backend_endpoint_;
  protocol::IncomingMessage frontend_in_;
  protocol::IncomingMessage backend_in_;
  ClientOutbox outbox_;
  BrokerCore core_;
  BrokerMetrics* metrics_ = nullptr;
  HeapTrimmer heap_trimmer_;
};

}  // namespace dispatch::broker
