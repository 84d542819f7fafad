#pragma once

// BrokerCore: every decision of the broker — queue, worker registry, job table, dispatch,
// liveness, redelivery, deduplication, stream relay, cancel, drain, status — with no sockets.
// Input: decoded-on-demand frames from the two ROUTER sockets and the passing of time (an
// injected Clock). Output: messages handed to a Transport. The socket loop (BrokerServer) is a
// thin shell around it, and unit tests drive it directly with a ManualClock.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/broker/config.hpp"
#include "dispatch/broker/detail/job.hpp"
#include "dispatch/broker/health.hpp"
#include "dispatch/broker/identity.hpp"
#include "dispatch/broker/metrics.hpp"
#include "dispatch/broker/quota.hpp"
#include "dispatch/broker/rate_limiter.hpp"
#include "dispatch/broker/transport.hpp"
#include "dispatch/common/clock.hpp"
#include "dispatch/common/result.hpp"
#include "dispatch/protocol/codec.hpp"
#include "dispatch/protocol/messages.hpp"

namespace dispatch::broker {

// Counters about the broker itself (not per provider), for logs, tests and the bench.
struct BrokerCounters {
  uint64_t jobs_accepted = 0;
  uint64_t duplicates = 0;
  uint64_t hostile_messages = 0;   // undecodable or out-of-place input on either socket
  uint64_t zombie_messages = 0;    // traffic for a delivery that is no longer current
  uint64_t redeliveries = 0;       // jobs re-queued after losing their worker
  uint64_t workers_lost = 0;       // silent, disconnected, unreachable or replaced
  uint64_t jobs_kept = 0;          // running jobs a re-registering worker still held, kept
  uint64_t liveness_deferred = 0;  // liveness verdicts put off: our loop stalled or was behind
  uint64_t malformed_results = 0;  // a worker's result/error payload that did not decode
  uint64_t refused_messages = 0;   // from an identity without the role the command needs
};

class BrokerCore {
 public:
  BrokerCore(BrokerConfig config, std::string broker_id, const Clock& clock, Transport& transport);
  ~BrokerCore();
  BrokerCore(const BrokerCore&) = delete;
  BrokerCore& operator=(const BrokerCore&) = delete;

  // One message from a client (frontend) or worker (backend), routing frame removed. `peer` says
  // who sent it (see identity.hpp); a bare route is a peer of a broker without CURVE.
  void on_frontend(const Peer& peer, Frames frames);
  void on_backend(const Peer& peer, Frames frames);
  void on_frontend(std::string_view route, Frames frames) {
    on_frontend(Peer::plaintext(route), std::move(frames));
  }
  void on_backend(std::string_view route, Frames frames) {
    on_backend(Peer::plaintext(route), std::move(frames));
  }
  // The allow-lists changed (SIGHUP): a registered worker whose identity no longer has the
  // worker role (`roles_of` its key) is told to disconnect and lost; its jobs are redelivered.
  void revoke_workers(const std::function<Roles(std::string_view key)>& roles_of);
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

  // Applies a (re)loaded broker.yaml (SIGHUP): running counts and spent budgets are kept, and
  // waiting jobs are looked at again under the new limits.
  void configure_quotas(const QuotaConfig& quotas);
  const QuotaBook& quotas() const noexcept { return quota_; }
  const FleetHealth& health() const noexcept { return health_; }

  // The whole status, as an admin sees it.
  protocol::StatusReply status() const;
  // The status `asker` may see: everything for an admin (and for everyone without CURVE);
  // otherwise the number of workers and its own counts only.
  protocol::StatusReply status_for(const Peer& asker) const;
  const std::string& broker_id() const noexcept { return broker_id_; }
  const BrokerCounters& counters() const noexcept { return counters_; }
  // Prometheus metrics to count into (nullptr: none). Not owned; outlives the core. Gauges of
  // the worker registry and the quota rows are sampled on the tick and here.
  void set_metrics(BrokerMetrics* metrics);
  // Samples the sampled gauges now (a scrape right after a change sees it; tests).
  void sample_metrics();

  std::size_t queued() const noexcept { return queued_total_; }
  std::size_t running() const noexcept { return running_total_; }
  std::size_t finished_kept() const noexcept { return finished_.size(); }
  std::size_t worker_count() const noexcept { return workers_.size(); }
  // Worker ids mapped to their connection (one per registered worker that sent an id).
  std::size_t worker_ids_known() const noexcept { return worker_routes_.size(); }
  const detail::Job* find_job(std::string_view job_id) const;
  const detail::Worker* find_worker(std::string_view route) const;

 private:
  enum class Side { frontend, backend };
  using Job = detail::Job;
  using Worker = detail::Worker;
  using ProviderState = detail::ProviderState;
  using ClientKey = detail::ClientKey;
  using ClientUsage = detail::ClientUsage;

  // Input handling.
  std::optional<protocol::FrameView> parse(Side side, std::string_view route, const Frames& frames);
  void on_client_message(const Peer& peer, const protocol::FrameView& message, Frames& frames);
  // Whether `peer` has a role that may send `command` on the frontend; refuses it when not.
  bool client_may(const Peer& peer, const protocol::FrameView& message);
  // A message from an identity without the role it needs: counted, logged, answered `rejected`
  // kind authentication code not_allowed (all rate-limited).
  void refuse_identity(Side side, const Peer& peer, const protocol::FrameView& message,
                       std::string_view why);
  void on_status(const Peer& peer, const protocol::FrameView& message);
  void on_submit(const Peer& peer, const protocol::FrameView& view, Frames& frames);
  // A submit of a job id that exists: the owner's resubmit, or another owner's collision.
  void resubmit(const Peer& peer, const detail::Owner& owner, const protocol::Submit& submit,
                Job& job);
  void answer_duplicate(std::string_view route, Job& job);
  // Whether the bounds let a new job in; the rejection to send when not.
  Result<void, protocol::Rejected> admission(const protocol::Submit& submit,
                                             std::size_t payload_bytes,
                                             const ClientKey& client) const;
  void refuse(const Peer& peer, protocol::Rejected rejected,
              protocol::ClientCounters* counts = nullptr);
  void admit(const Peer& peer, ClientKey client, detail::Owner owner,
             protocol::ClientCounters* counts, protocol::Submit submit, zmq::message_t& payload);
  // The job's trace: the client's traceparent when valid, else a fresh one (logged).
  void start_trace(Job& job, std::string_view traceparent);
  // Who a submit from `peer` for `tenant` is charged to (see detail::ClientKey).
  static ClientKey client_key_of(const Peer& peer, std::string_view tenant);
  // The status counters of `owner` (created on first use, bounded); nullptr when it has no
  // name to show (a client of a broker without CURVE that names no tenant).
  protocol::ClientCounters* owner_counters(const Peer& peer, const detail::Owner& owner);
  ClientUsage client_usage(const ClientKey& client) const;
  void on_cancel(const Peer& peer, const protocol::FrameView& view);
  void answer_unknown_worker(std::string_view route, protocol::Command command);
  void on_worker_message(Worker& worker, const protocol::FrameView& message, Frames frames);
  void on_ready(const Peer& peer, const protocol::FrameView& view);
  // A `ready` that reuses a worker id another identity registered: refused (true).
  bool refuse_taken_worker_id(const Peer& peer, const protocol::Ready& ready);
  // A message on the backend from an identity that is not (or no longer) a worker.
  void refuse_non_worker(const Peer& peer, const protocol::FrameView& message);
  // job id -> delivery, from Ready.jobs.
  using HeldDeliveries = detail::StringMap<uint32_t>;
  // Moves the deliveries `held` lists out of `previous` (the same worker on its old session).
  void take_held(Worker& previous, std::string_view worker_id, const HeldDeliveries& held,
                 std::vector<Job*>& kept);
  void adopt_kept(Worker& worker, const std::vector<Job*>& kept);
  void cancel_foreign_held(Worker& worker, const HeldDeliveries& held);
  void on_credit(Worker& worker, const protocol::FrameView& view);
  // Provider feedback from a worker: a 429's pause, remaining quota, its breaker's changes.
  void on_provider_health(Worker& worker, const protocol::FrameView& view);
  void apply_remaining(const std::string& key, const protocol::ProviderHealth& health);
  void apply_circuit(const std::string& key, const protocol::ProviderHealth& health,
                     const Worker& worker);
  void on_stream_event(Worker& worker, const protocol::FrameView& view, Frames frames);
  void on_job_end(Worker& worker, const protocol::FrameView& view, Frames frames);
  void drop_zombie(const Worker& worker, protocol::Command command, std::string_view job_id,
                   uint32_t delivery);
  // An `error` kind cancelled answering a cancel we sent (the client's, or ours at the running
  // deadline); with `unknown_job`, only the worker's "I do not hold it" (code unknown_job).
  bool answers_our_cancel(const Job& job, const protocol::FrameView& message,
                          bool unknown_job) const;
  // Ends a job whose cancel was answered or timed out: running_deadline or cancelled.
  void end_cancelled(Job& job, std::string_view how);

  // Queue and dispatch.
  ProviderState& provider_state(std::string_view name);
  void maybe_forget_provider(ProviderState& state);
  void enqueue(Job& job, bool urgent);
  void dequeue(Job& job);  // a queued job leaves the queue (not via pop)
  void after_pop(Job& job);
  bool ever_advertised(std::string_view provider) const;
  void expire_queued(Job& job, Clock::time_point now);
  void dispatch_provider(ProviderState& state);
  // Quotas and shared health at dispatch (see next_admissible).
  struct JobGate {
    bool allowed = true;
    bool provider_wide = false;  // the provider's own key holds it: no job of it may go
    bool probe = false;          // it would go as the fleet's half-open probe of its target
    Clock::time_point retry_at = Clock::time_point::max();
  };
  bool gates_active() const noexcept { return !quota_.empty() || !health_.empty(); }
  JobGate gate_of(Job& job);
  uint64_t tokens_of(Job& job);
  // The job `state` should dispatch next (left queued), or nullptr when none may go now; then
  // the provider's wake-up is armed for the earliest time one might.
  Job* next_admissible(ProviderState& state);
  Job* best_in_lanes(ProviderState& state, Job* best, Clock::time_point& wake);
  bool joins_lane(const ProviderState& state, const Job& job) const;
  void park(ProviderState& state, Job& job);
  void arm_wake(ProviderState& state, Clock::time_point at);
  void wake_due(Clock::time_point now);
  bool has_waiting(const ProviderState& state) const noexcept;
  // Out of its queue or lane (`served`: taken from the head for a worker).
  void leave_lane(Job& job, bool served);
  // Some waiting job of `state` (the drain rejects them all), nullptr when none waits.
  Job* first_waiting(ProviderState& state);
  // A queued job leaves the queue for a worker: its quota is reserved and, where it goes as the
  // probe, the probe is taken.
  void take_queued(Job& job);
  void release_reservation(Job& job);
  void record_probe(Job& job, const std::vector<protocol::Attempt>* attempts);
  void add_quota_status(protocol::StatusReply& reply) const;
  void dispatch_worker(Worker& worker);
  void assign(Job& job, Worker& worker);
  void update_availability(Worker& worker);
  // A running job leaves its worker (returned; nullptr when it had none); no availability
  // update, that is the caller's.
  Worker* leave_worker(Job& job);
  void arm_run_deadline(Job& job, Clock::time_point at);
  void on_run_deadline(Job& job);

  // Workers.
  Worker& register_worker(const Peer& peer, protocol::Ready ready);
  void lose_worker(std::string_view route, std::string_view reason);
  // A job of a lost worker: re-queued (its provider returned) or ended (nullptr).
  ProviderState* requeue_or_end(Job& job, std::string_view lost_worker);
  void process_lost_workers();
  void send_worker(Worker& worker, Frames frames);
  void check_workers(Clock::time_point now, bool stalled);
  Clock::duration tick_period() const;

  // Job endings.
  void complete_job(Job& job, protocol::Command command, Frames frames);
  void fail_job(Job& job, protocol::ErrorKind kind, std::string_view code, std::string message);
  void reject_job(Job& job, std::string_view code, std::string message);  // and forget it
  // Out of the queue or off its worker, and its payload released.
  void leave_broker_state(Job& job);
  void evict_finished(Job& job);
  // Counts a worker's result/error; the reason when its payload does not decode.
  Result<void, std::string> record_outcome(Job& job, protocol::Command command,
                                           std::string_view payload);

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
  detail::StringMap<std::unique_ptr<Worker>> workers_;    // by routing id
  detail::StringMap<std::string> worker_routes_;          // worker_id -> routing id
  std::multimap<Clock::time_point, Job*> deadlines_;      // queued jobs only
  std::multimap<Clock::time_point, Job*> run_deadlines_;  // running jobs only
  detail::JobList finished_;                              // oldest first
  std::map<std::string, protocol::ProviderCounters, std::less<>> provider_counters_;

  std::size_t queued_total_ = 0;
  std::size_t queued_by_priority_[protocol::kPriorityLevels] = {};
  std::size_t running_total_ = 0;
  std::size_t payload_bytes_ = 0;                // of every job that still holds its request
  detail::StringMap<ClientUsage> client_usage_;  // by ClientKey; clients with waiting jobs only
  detail::StringMap<detail::OwnerStats> owner_stats_;      // by owner key NUL tenant; bounded
  std::set<std::string, std::less<>> advertised_;          // providers some worker offered, ever
  std::map<std::string, uint64_t, std::less<>> rejected_;  // submits refused, by code
  std::map<std::string, uint64_t, std::less<>> broker_errors_;  // our own job endings, by code
  // Every job ending with `error`, by kind: a fixed set of names, so bounded.
  std::map<std::string, uint64_t, std::less<>> failed_by_kind_;
  uint64_t enqueue_seq_ = 0;
  uint64_t dispatch_seq_ = 0;

  Clock::time_point next_tick_;
  bool stall_grace_used_ = false;  // the last liveness check was skipped after a stall
  bool draining_ = false;
  bool drained_ = false;
  Clock::time_point drain_deadline_{};

  std::vector<std::string> lost_workers_;  // pipe full on send; handled after the event
  std::vector<std::string> redispatch_;    // providers of jobs a detached worker never got

  QuotaBook quota_;
  FleetHealth health_;
  std::set<std::pair<Clock::time_point, ProviderState*>> wakeups_;  // armed ProviderState::wake_at

  RateLimiter frontend_replies_;
  RateLimiter backend_replies_;
  RateLimiter hostile_log_;
  RateLimiter zombie_log_;
  RateLimiter worker_log_;
  RateLimiter identity_replies_;
  RateLimiter identity_log_;
  BrokerCounters counters_;
  BrokerMetrics* metrics_ = nullptr;
};

// Routing ids are binary; logs show them as hex.
std::string route_hex(std::string_view route);

}  // namespace dispatch::broker
