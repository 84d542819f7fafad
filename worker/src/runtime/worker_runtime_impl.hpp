#pragma once

// WorkerRuntime's state and the shape of what it does; the bodies are in worker_runtime.cpp,
// grouped as declared here: the broker connection, sending, what the broker sends, liveness,
// drain.

#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>
#include <zmq.hpp>

#include "dispatch/common/clock.hpp"
#include "dispatch/protocol/codec.hpp"
#include "dispatch/protocol/handshake_monitor.hpp"
#include "dispatch/protocol/zmq_io.hpp"
#include "dispatch/worker/event_loop.hpp"
#include "dispatch/worker/http_engine.hpp"
#include "dispatch/worker/policy/circuit_breaker.hpp"
#include "dispatch/worker/policy/job_runner.hpp"
#include "dispatch/worker/providers/launcher.hpp"
#include "dispatch/worker/runtime/termination_signals.hpp"
#include "dispatch/worker/runtime/worker_runtime.hpp"

namespace dispatch::worker {

// One message for the broker, kept until libzmq takes it.
struct OutMessage {
  protocol::Command command;
  std::string header;
  std::string payload;
  // For result / error: the delivery it ends. A reconnect lists it as still held, so that the
  // broker keeps the delivery and accepts the result when it follows the new `ready`.
  std::string job_id;
  uint32_t delivery = 0;
};

// Answers to `cancel` for jobs this worker does not hold, at most `per_second` a second: a
// broker (or something posing as one) must not make the worker flood it.
class AnswerBudget {
 public:
  explicit AnswerBudget(uint32_t per_second) : per_second_(per_second) {}
  // True when one more answer may go out at `now`.
  bool take(Clock::time_point now);

 private:
  uint32_t per_second_;
  Clock::time_point window_start_{};
  uint32_t used_ = 0;
};

// Provider feedback of the jobs, as `provider_health` for the broker. Rate limits and circuit
// changes go at once; remaining-quota headers at most once per target per `quota_interval`
// (an answer each at 20k jobs/s would be a second message per job).
class HealthReporter final : public ProviderFeedback {
 public:
  using Send = std::function<void(const protocol::ProviderHealth&)>;
  HealthReporter(const Clock& clock, std::chrono::milliseconds quota_interval, Send send);

  void on_rate_limited(const protocol::Target& target, const Failure& failure) override;
  void on_quota(const protocol::Target& target, const RateLimitHeaders& limits) override;
  void on_circuit(const protocol::Target& target, const BreakerChange& change) override;

 private:
  const Clock& clock_;
  std::chrono::milliseconds quota_interval_;
  Send send_;
  std::unordered_map<std::string, Clock::time_point> last_quota_;  // by provider/model
};

class WorkerRuntime::Impl {
 public:
  Impl(WorkerConfig config, RuntimeOptions options);
  ~Impl();

  int run();
  void request_drain();
  const RuntimeStats& stats() const { return stats_; }

 private:
  class JobForwarder;
  struct RunningJob {
    uint32_t delivery = 0;
    std::unique_ptr<JobForwarder> forwarder;
    std::unique_ptr<JobRunner> runner;  // declared after forwarder: destroyed first
    bool finished = false;
  };
  struct SentEnd {
    OutMessage message;
    Clock::time_point sent_at;
  };

  // ---- the broker connection
  void connect();
  void close_socket();
  void wait_for_final_flush();
  void check_handshakes();
  void log_refusal(const protocol::HandshakeProblem& problem);
  void remember_end(OutMessage& message);
  void prune_recent_ends();
  void replay_recent_ends();
  void reconnect();
  void rejoin();
  protocol::Ready ready_message() const;
  void send_ready();

  // ---- sending
  void send(protocol::Command command, std::string header, std::string payload = {});
  void send_final(const std::string& job_id, uint32_t delivery, protocol::Command command,
                  std::string payload);
  void enqueue_or_send(OutMessage message);
  bool fits_one_frame(const OutMessage& message);
  void queue(OutMessage message);
  void after_send();
  void request_pump(std::chrono::milliseconds delay);
  void flush_outbox();
  void pump();

  // ---- what the broker sends
  void handle_incoming();
  void handle_job(std::string_view header_bytes, std::string_view payload);
  void refuse_job(const protocol::JobHeader& job, protocol::Error error);
  void start_job_run(const protocol::JobHeader& job, protocol::Request request);
  void handle_cancel(std::string_view header_bytes);
  void handle_rejected(std::string_view header_bytes);
  void send_health(const protocol::ProviderHealth& report);
  void answer_unknown_cancel(const std::string& job_id);
  void job_finished(const std::string& job_id, uint32_t delivery);
  std::size_t running_jobs() const;
  void log_bad_input(std::string_view what, const std::string& detail);

  // ---- liveness
  Clock::duration tick_period() const;
  void schedule_heartbeat();
  void on_heartbeat_tick();
  bool broker_silent(Clock::time_point now);
  bool broker_unreachable();

  // ---- drain and signals
  void watch_signals();
  void on_signals();
  void begin_drain();
  Clock::time_point flush_deadline() const;
  void finish_drain(const char* reason, Clock::time_point flush_until);
  void flush_before_leaving(Clock::time_point until);
  void leave(Clock::time_point until);

  WorkerConfig config_;
  RuntimeOptions options_;
  RuntimeStats stats_;
  EventLoop loop_;
  HttpEngine engine_;
  ProviderAttemptLauncher launcher_;
  CircuitBreakers breakers_;
  DefaultRandom random_;
  zmq::context_t context_;
  std::optional<zmq::socket_t> socket_;
  int zmq_fd_ = -1;
  std::unique_ptr<protocol::HandshakeMonitor> monitor_;  // of socket_
  int monitor_fd_ = -1;
  protocol::HandshakeMonitor::History handshake_history_;  // of the socket replaced last
  Clock::time_point last_refusal_log_{};
  uint64_t suppressed_refusals_ = 0;
  bool refused_since_success_ = false;
  std::optional<TerminationSignals> signals_;
  protocol::IncomingMessage incoming_;
  std::deque<OutMessage> outbox_;
  std::deque<SentEnd> recent_ends_;
  std::size_t recent_end_bytes_ = 0;
  std::vector<std::string> providers_;
  std::unordered_map<std::string, RunningJob> jobs_;
  AnswerBudget unknown_cancel_answers_;
  HealthReporter health_reporter_;
  // The broker answered a provider_health with unknown_command (it is older): no more reports
  // on this connection.
  bool broker_takes_health_ = true;
  Clock::time_point last_heard_{};
  Clock::time_point last_sent_{};
  Clock::time_point tick_due_{};
  Clock::time_point drain_deadline_{};
  bool stall_grace_used_ = false;
  Clock::time_point last_bad_input_log_{};
  uint64_t suppressed_bad_input_ = 0;
  uint64_t dropped_chunks_ = 0;
  std::chrono::milliseconds reconnect_delay_;
  uint64_t pending_pumps_ = 0;  // posted or on a timer: at most one
  bool draining_ = false;
  bool stopping_ = false;  // jobs dropped; only the outbox is being flushed
  bool rejoin_posted_ = false;
};

}  // namespace dispatch::worker
