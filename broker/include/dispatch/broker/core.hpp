#pragma once

// BrokerCore: every decision of the broker — queue, worker registry, job table, dispatch,
// liveness, redelivery, deduplication, stream relay, cancel, drain, status — with no sockets.
// Input: decoded-on-demand frames from the two ROUTER sockets and the passing of time (an
// injected Clock). Output: messages handed to a Transport. The socket loop (BrokerServer) is a
// thin shell around it, and unit tests drive it directly with a ManualClock.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/broker/config.hpp"
#include "dispatch/broker/detail/job.hpp"
#include "dispatch/broker/rate_limiter.hpp"
#include "dispatch/broker/transport.hpp"
#include "dispatch/common/clock.hpp"
#include "dispatch/protocol/codec.hpp"
#include "dispatch/protocol/messages.hpp"

namespace dispatch::broker {

// Counters about the broker itself (not per provider), for logs, tests and the bench.
struct BrokerCounters {
  uint64_t jobs_accepted = 0;
  uint64_t duplicates = 0;
  uint64_t rejected_queue_full = 0;
  uint64_t rejected_draining = 0;
  uint64_t hostile_messages = 0;   // undecodable or out-of-place input on either socket
  uint64_t zombie_messages = 0;    // traffic for a delivery that is no longer current
  uint64_t redeliveries = 0;       // jobs re-queued after losing their worker
  uint64_t workers_lost = 0;       // silent, disconnected, unreachable or replaced
  uint64_t jobs_kept = 0;          // running jobs a re-registering worker still held, kept
  uint64_t liveness_deferred = 0;  // liveness verdicts put off: our loop stalled or was behind
  uint64_t malformed_results = 0;  // a worker's result/error payload that did not decode
};

class BrokerCore {
 public:
  BrokerCore(BrokerConfig config, std::string broker_id, const Clock& clock, Transport& transport);
  ~BrokerCore();
  BrokerCore(const BrokerCore&) = delete;
  BrokerCore& operator=(const BrokerCore&) = delete;

  // One message from a client (frontend) or worker (backend), routing frame removed.
  void on_frontend(std::string_view route, Frames frames);
  void on_backend(std::string_view route, Frames frames);
  // Runs everything due at clock.now(): queue deadlines, result expiry, heartbeats and worker
  // liveness, the drain deadline.
  void on_timer();
  // When on_timer() next has something to do.
  Clock::time_point next_timer() const;

  // Graceful shutdown: no new submits, waiting jobs are rejected (queue_full/"draining") so
  // their clients resubmit elsewhere, running jobs get drain_timeout to finish.
  void begin_drain();
  // Ends the drain now (timeout or a second signal): running jobs are cancelled at their
  // workers and rejected ("draining") to their clients, workers get `disconnect`.
  void end_drain();
  bool draining() const noexcept { return draining_; }
  // True once the drain has ended: the process may exit.
  bool drained() const noexcept { return drained_; }

  protocol::StatusReply status() const;
  const std::string& broker_id() const noexcept { return broker_id_; }
  const BrokerCounters& counters() const noexcept { return counters_; }

  std::size_t queued() const noexcept { return queued_total_; }
  std::size_t running() const noexcept { return running_total_; }
  std::size_t finished_kept() const noexcept { return finished_.size(); }
  std::size_t worker_count() const noexcept { return workers_.size(); }
  const detail::Job* find_job(std::string_view job_id) const;
  const detail::Worker* find_worker(std::string_view route) const;

 private:
  enum class Side { frontend, backend };
  using Job = detail::Job;
  using Worker = detail::Worker;
  using ProviderState = detail::ProviderState;

  // Input handling.
  std::optional<protocol::FrameView> parse(Side side, std::string_view route, const Frames& frames);
  void on_submit(std::string_view route, const protocol::FrameView& view, Frames& frames);
  void on_cancel(std::string_view route, const protocol::FrameView& view);
  void on_ready(std::string_view route, const protocol::FrameView& view);
  void on_credit(Worker& worker, const protocol::FrameView& view);
  void on_stream_event(Worker& worker, const protocol::FrameView& view, Frames frames);
  void on_job_end(Worker& worker, const protocol::FrameView& view, Frames frames);

  // Queue and dispatch.
  ProviderState& provider_state(std::string_view name);
  void maybe_forget_provider(ProviderState& state);
  void enqueue(Job& job, bool urgent);
  void dequeue(Job& job);  // a queued job leaves the queue (not via pop)
  void after_pop(Job& job);
  void dispatch_provider(ProviderState& state);
  void dispatch_worker(Worker& worker);
  void assign(Job& job, Worker& worker);
  void update_availability(Worker& worker);

  // Workers.
  Worker& register_worker(std::string_view route, protocol::Ready ready);
  void lose_worker(std::string_view route, std::string_view reason);
  void process_lost_workers();
  void send_worker(Worker& worker, Frames frames);
  void check_workers(Clock::time_point now, bool stalled);
  Clock::duration tick_period() const;

  // Job endings.
  void complete_job(Job& job, protocol::Command command, Frames frames);
  void fail_job(Job& job, protocol::ErrorKind kind, std::string_view code, std::string message);
  void reject_job(Job& job, std::string_view code, std::string message);  // and forget it
  void evict_finished(Job& job);
  void record_outcome(Job& job, protocol::Command command, std::string_view payload,
                      bool& payload_ok);

  // Replies.
  void send_client(std::string_view route, protocol::Command command, std::string header);
  // Undecodable or out-of-place input: counted, logged and answered `rejected` (all
  // rate-limited). `code` overrides the reply code; an empty one means "log, do not reply".
  void hostile(Side side, std::string_view route, const protocol::DecodeError& error,
               std::string job_id = {}, std::optional<std::string_view> code = std::nullopt);
  void unexpected(Side side, std::string_view route, protocol::Command command);
  protocol::ProviderCounters& provider_counters(std::string_view provider);

  BrokerConfig config_;
  std::string broker_id_;
  const Clock& clock_;
  Transport& transport_;
  Clock::time_point started_;

  detail::StringMap<std::unique_ptr<Job>> jobs_;
  detail::StringMap<std::unique_ptr<ProviderState>> providers_;
  detail::StringMap<std::unique_ptr<Worker>> workers_;  // by routing id
  detail::StringMap<std::string> worker_routes_;        // worker_id -> routing id
  std::multimap<Clock::time_point, Job*> deadlines_;    // queued jobs only
  detail::JobList finished_;                            // oldest first
  std::map<std::string, protocol::ProviderCounters, std::less<>> provider_counters_;

  std::size_t queued_total_ = 0;
  std::size_t queued_by_priority_[protocol::kPriorityLevels] = {};
  std::size_t running_total_ = 0;
  uint64_t enqueue_seq_ = 0;
  uint64_t dispatch_seq_ = 0;

  Clock::time_point next_tick_;
  bool stall_grace_used_ = false;  // the last liveness check was skipped after a stall
  bool draining_ = false;
  bool drained_ = false;
  Clock::time_point drain_deadline_{};

  std::vector<std::string> lost_workers_;  // pipe full on send; handled after the event
  std::vector<std::string> redispatch_;    // providers of jobs a detached worker never got

  RateLimiter frontend_replies_;
  RateLimiter backend_replies_;
  RateLimiter hostile_log_;
  RateLimiter zombie_log_;
  RateLimiter worker_log_;
  BrokerCounters counters_;
};

// Routing ids are binary; logs show them as hex.
std::string route_hex(std::string_view route);

}  // namespace dispatch::broker
