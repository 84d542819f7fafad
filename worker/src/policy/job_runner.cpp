#include "dispatch/worker/policy/job_runner.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <utility>
#include <vector>

#include "dispatch/common/strings.hpp"
#include "dispatch/common/time.hpp"
#include "dispatch/worker/policy/backoff.hpp"
#include "dispatch/worker/policy/circuit_breaker.hpp"
#include "dispatch/worker/policy/retry_rules.hpp"
#include "dispatch/worker/policy/targets.hpp"

namespace dispatch::worker {

namespace {

using protocol::ErrorKind;
using std::chrono::milliseconds;

// request.retry_count is client input; a huge value must not turn one job into a flood.
constexpr uint32_t kMaxRetriesPerTarget = 16;
// Attempt records travel with every result; provider messages can be long HTML pages.
constexpr std::size_t kMaxAttemptMessage = 500;
constexpr std::size_t kMaxErrorMessage = 4000;

std::string join_notes(const std::vector<std::string>& notes) {
  std::string joined;
  for (const auto& note : notes) {
    if (note.empty()) continue;
    if (!joined.empty()) joined += "; ";
    joined += note;
  }
  return joined;
}

std::string target_name(const protocol::Target& target) {
  return target.provider + "/" + target.model;
}

bool has_payload(const protocol::Chunk& delta) {
  return !delta.content.empty() || !delta.thinking.empty() || !delta.tool_calls.empty();
}

class Job;

// One per attempt, so that a late event of an earlier attempt can never be taken for the
// current one's (the serial is checked), and holding only a weak reference so that an event
// never keeps a destroyed job's state alive beyond the callback.
class AttemptObserver final : public AttemptListener {
 public:
  AttemptObserver(std::weak_ptr<Job> job, uint64_t serial)
      : job_(std::move(job)), serial_(serial) {}
  void on_activity() override;
  void on_delta(const protocol::Chunk& delta) override;
  void on_complete(AttemptOutput output) override;
  void on_failed(Failure failure, std::vector<std::string> notes) override;

 private:
  std::weak_ptr<Job> job_;
  uint64_t serial_;
};

// The state of one job. Owned by a shared_ptr so that every callback (observer, timer, a
// cancel() from the handle) holds the state alive for its own duration: a listener call may
// re-enter (cancel) or destroy the JobRunner handle, and the code after it must still be able
// to see `finished_` and stop.
class Job final : public std::enable_shared_from_this<Job> {
 public:
  Job(JobContext context, std::string job_id, protocol::Request request, bool send_chunks,
      JobListener& listener)
      : scheduler_(context.scheduler),
        launcher_(context.launcher),
        breakers_(context.breakers),
        random_(context.random),
        config_(context.config),
        feedback_(context.feedback),
        open_targets_(std::move(context.open_targets)),
        trace_(job_trace_of(context.traceparent)),
        job_id_(std::move(job_id)),
        log_id_(job_id_ + " trace " + trace_.trace_id),
        request_(std::move(request)),
        send_chunks_(send_chunks),
        listener_(listener) {}

  void begin();
  void cancel();
  void shutdown_silently();

  void attempt_activity(uint64_t serial);
  void attempt_delta(uint64_t serial, const protocol::Chunk& delta);
  void attempt_complete(uint64_t serial, AttemptOutput output);
  void attempt_failed(uint64_t serial, Failure failure, std::vector<std::string> notes);

 private:
  struct InFlight {
    AttemptHandle handle = 0;
    uint64_t serial = 0;
    std::size_t target_index = 0;
    Clock::time_point started{};
    Clock::time_point last_activity{};
    bool probe = false;  // holds the breaker's half-open probe slot
    bool got_delta = false;
  };
  struct LastFailure {
    Failure failure;
    protocol::Target target;
  };

  Clock::time_point now() const { return scheduler_.clock().now(); }
  const PolicySettings& policy_of(const PlannedTarget& planned) const {
    return planned.provider != nullptr ? planned.provider->policy : config_.defaults;
  }
  uint32_t retry_limit(const PlannedTarget& planned) const {
    return std::min(request_.retry_count.value_or(policy_of(planned).retry_count),
                    kMaxRetriesPerTarget);
  }
  // What the answer cost by the price table: the requested model's price, else the price of the
  // model the provider reported (a dated snapshot behind an alias); nullopt when neither has one.
  std::optional<double> answer_cost(const PlannedTarget& planned, std::string_view reported_model,
                                    const protocol::Usage& usage) const {
    if (planned.provider == nullptr) return std::nullopt;
    const std::string& type = planned.provider->type;
    const Price* price = config_.prices.find(type, planned.target.model);
    if (price == nullptr && !reported_model.empty())
      price = config_.prices.find(type, reported_model);
    if (price == nullptr) return std::nullopt;
    return cost_usd(usage, *price);
  }
  bool is_current(uint64_t serial) const {
    return !finished_ && in_flight_ && in_flight_->serial == serial;
  }

  template <typename Fn>
  TimerId schedule_in(uint64_t delay_ms, Fn fn) {
    return scheduler_.schedule_after(milliseconds(delay_ms),
                                     [weak = weak_from_this(), fn = std::move(fn)] {
                                       if (auto job = weak.lock()) fn(*job);
                                     });
  }
  void cancel_timer(TimerId& id) {
    if (id != kNoTimer) scheduler_.cancel(id);
    id = kNoTimer;
  }
  void cancel_all_timers() {
    cancel_timer(start_timer_);
    cancel_timer(deadline_timer_);
    cancel_timer(retry_timer_);
    cancel_timer(first_token_timer_);
    cancel_timer(idle_timer_);
  }

  void start();
  void try_current_target();
  void launch(const PlannedTarget& planned, bool probe);
  void skip_target(const PlannedTarget& planned, std::string outcome, std::string message);
  bool fleet_open(const protocol::Target& target) const;
  void report_circuit(const protocol::Target& target, const BreakerChange& change);
  void report_limits(const protocol::Target& target, const Failure& failure);
  std::optional<std::size_t> find_usable_target(std::size_t from) const;
  void advance_target() {
    ++index_;
    retries_used_ = 0;
  }

  InFlight end_attempt();
  InFlight abort_attempt();
  void release_probe(const InFlight& attempt);
  void arm_idle_timer(uint64_t serial);
  void on_first_token_timeout(uint64_t serial);
  void on_idle_check(uint64_t serial);
  void on_deadline();

  void handle_failure(const InFlight& attempt, Failure failure, std::vector<std::string> notes);
  void record_health(const InFlight& attempt, const PlannedTarget& planned, const Failure& failure);
  std::optional<uint64_t> retry_wait(const PlannedTarget& planned, const Failure& failure,
                                     std::vector<std::string>& notes);
  void retry_after(const PlannedTarget& planned, const Failure& failure, uint64_t wait_ms);
  void move_on(const Failure& failure, std::optional<std::size_t> next);
  std::optional<uint64_t> plan_wait(const Failure& failure, const PolicySettings& policy,
                                    std::vector<std::string>& notes);
  void emit_reset(std::string reason);

  protocol::Attempt make_record(const protocol::Target& target, Clock::time_point started,
                                std::string outcome) const;
  void record_interrupted(const InFlight& attempt, ErrorKind kind, std::string_view code,
                          std::string message);
  protocol::Error error_from_last_failure() const;
  void fail_exhausted();
  void finish_result(protocol::Response response);
  void finish_error(protocol::Error error);
  void close_out();

  Scheduler& scheduler_;
  AttemptLauncher& launcher_;
  CircuitBreakers& breakers_;
  Random& random_;
  const WorkerConfig& config_;
  ProviderFeedback* const feedback_;
  const std::vector<std::string> open_targets_;
  const JobTrace trace_;
  const std::string job_id_;
  const std::string log_id_;  // "<job id> trace <trace id>": every log line of the job has both
  const protocol::Request request_;  // every attempt is sent exactly this request
  const bool send_chunks_;
  JobListener& listener_;

  Clock::time_point started_{};
  std::optional<Clock::time_point> deadline_;
  uint32_t deadline_ms_ = 0;

  std::vector<PlannedTarget> targets_;
  std::size_t index_ = 0;
  uint32_t retries_used_ = 0;  // of targets_[index_]
  std::vector<protocol::Attempt> attempts_;
  std::optional<LastFailure> last_failure_;
  std::optional<protocol::Target> last_circuit_open_;

  std::optional<InFlight> in_flight_;
  uint64_t next_serial_ = 1;
  std::vector<std::unique_ptr<AttemptObserver>> observers_;  // bounded by the attempt count

  uint64_t next_seq_ = 0;
  bool chunks_visible_ = false;  // chunks reached the listener since the start or the last reset
  bool finished_ = false;

  TimerId start_timer_ = kNoTimer;
  TimerId deadline_timer_ = kNoTimer;
  TimerId retry_timer_ = kNoTimer;
  TimerId first_token_timer_ = kNoTimer;
  TimerId idle_timer_ = kNoTimer;
};

void AttemptObserver::on_activity() {
  if (auto job = job_.lock()) job->attempt_activity(serial_);
}
void AttemptObserver::on_delta(const protocol::Chunk& delta) {
  if (auto job = job_.lock()) job->attempt_delta(serial_, delta);
}
void AttemptObserver::on_complete(AttemptOutput output) {
  if (auto job = job_.lock()) job->attempt_complete(serial_, std::move(output));
}
void AttemptObserver::on_failed(Failure failure, std::vector<std::string> notes) {
  if (auto job = job_.lock()) job->attempt_failed(serial_, std::move(failure), std::move(notes));
}

// ---- lifecycle ------------------------------------------------------------------------------

void Job::begin() {
  started_ = now();
  targets_ = plan_targets(request_, config_);
  const ProviderConfig* primary = config_.provider(request_.provider);
  // A request's 0 means "not set" (clients send 0 for "default"): a client cannot switch the
  // deadline off. Only a config value of 0 (not accepted by the YAML loader) disables it.
  deadline_ms_ = request_.timeout_ms.value_or(0);
  if (deadline_ms_ == 0) {
    deadline_ms_ = primary != nullptr ? primary->policy.timeout_ms : config_.defaults.timeout_ms;
  }
  if (deadline_ms_ > 0) {
    deadline_ = started_ + milliseconds(deadline_ms_);
    deadline_timer_ = scheduler_.schedule_at(*deadline_, [weak = weak_from_this()] {
      if (auto job = weak.lock()) job->on_deadline();
    });
  }
  // The first step runs on the loop's next turn: the caller gets its JobRunner before any
  // listener call can happen (a job may end at once, e.g. when every target is unusable).
  start_timer_ = schedule_in(0, [](Job& job) {
    job.start_timer_ = kNoTimer;
    job.start();
  });
}

void Job::start() {
  if (finished_) return;
  if (request_.provider.empty() || request_.model.empty()) {
    protocol::Error error;
    error.kind = ErrorKind::invalid_request;
    error.code = "missing_target";
    error.message = "the request needs a provider and a model";
    error.provider = request_.provider;
    error.model = request_.model;
    finish_error(std::move(error));
    return;
  }
  spdlog::debug("job {}: {} target(s), deadline {} ms", log_id_, targets_.size(), deadline_ms_);
  try_current_target();
}

void Job::cancel() {
  if (finished_) return;
  if (in_flight_) {
    record_interrupted(*in_flight_, ErrorKind::cancelled, policy_code::cancelled,
                       "cancelled while in flight");
  }
  protocol::Error error;
  error.kind = ErrorKind::cancelled;
  error.code = std::string(policy_code::cancelled);
  error.message = "job cancelled";
  if (index_ < targets_.size()) {
    error.provider = targets_[index_].target.provider;
    error.model = targets_[index_].target.model;
  }
  finish_error(std::move(error));
}

void Job::shutdown_silently() {
  if (finished_) return;
  spdlog::debug("job {}: dropped while running; aborting silently", log_id_);
  finished_ = true;
  close_out();
}

// ---- targets and attempts -------------------------------------------------------------------

void Job::try_current_target() {
  while (!finished_ && index_ < targets_.size()) {
    const PlannedTarget& planned = targets_[index_];
    if (planned.provider == nullptr) {
      skip_target(planned, std::string(protocol::to_string(ErrorKind::unsupported_provider)),
                  "provider '" + planned.target.provider + "' is not configured on this worker");
      advance_target();
      continue;
    }
    if (fleet_open(planned.target)) {
      last_circuit_open_ = planned.target;
      skip_target(planned, std::string(policy_code::circuit_open),
                  "circuit open for the fleet (broker) for " + target_name(planned.target));
      advance_target();
      continue;
    }
    const auto admission = breakers_.admit(planned.target.provider, planned.target.model);
    if (admission == CircuitBreakers::Admission::reject) {
      last_circuit_open_ = planned.target;
      skip_target(planned, std::string(policy_code::circuit_open),
                  "circuit open for " + target_name(planned.target));
      advance_target();
      continue;
    }
    launch(planned, admission == CircuitBreakers::Admission::probe);
    return;
  }
  if (!finished_) fail_exhausted();
}

std::optional<std::size_t> Job::find_usable_target(std::size_t from) const {
  for (std::size_t i = from; i < targets_.size(); ++i) {
    const PlannedTarget& planned = targets_[i];
    if (planned.provider != nullptr && !fleet_open(planned.target) &&
        breakers_.would_admit(planned.target.provider, planned.target.model)) {
      return i;
    }
  }
  return std::nullopt;
}

bool Job::fleet_open(const protocol::Target& target) const {
  for (const std::string& key : open_targets_) {
    if (key.size() == target.provider.size() + 1 + target.model.size() &&
        key.starts_with(target.provider) && key[target.provider.size()] == '/' &&
        key.ends_with(target.model)) {
      return true;
    }
  }
  return false;
}

void Job::report_circuit(const protocol::Target& target, const BreakerChange& change) {
  if (feedback_ != nullptr && change.kind != BreakerChange::Kind::none) {
    feedback_->on_circuit(target, change);
  }
}

// A rate limit goes to the broker at once (it pauses the target for the fleet); any other
// answer's remaining-quota headers tighten its view.
void Job::report_limits(const protocol::Target& target, const Failure& failure) {
  if (feedback_ == nullptr) return;
  if (failure.kind == ErrorKind::rate_limited) {
    feedback_->on_rate_limited(target, failure);
  } else if (failure.limits.any()) {
    feedback_->on_quota(target, failure.limits);
  }
}

void Job::skip_target(const PlannedTarget& planned, std::string outcome, std::string message) {
  spdlog::debug("job {}: skipping {}: {}", log_id_, target_name(planned.target), message);
  protocol::Attempt record = make_record(planned.target, now(), std::move(outcome));
  record.message = std::move(message);
  attempts_.push_back(std::move(record));
}

void Job::launch(const PlannedTarget& planned, bool probe) {
  const PolicySettings& policy = policy_of(planned);
  const uint64_t serial = next_serial_++;
  observers_.push_back(std::make_unique<AttemptObserver>(weak_from_this(), serial));

  AttemptSpec spec;
  spec.request = &request_;
  spec.target = planned.target;
  spec.provider = planned.provider;
  spec.stream_upstream = true;  // even for stream=false: the first-token and idle timers need it
  spec.connect_timeout_ms = policy.connect_timeout_ms;
  spec.traceparent = trace_.provider_traceparent;

  const auto started = now();
  in_flight_ = InFlight{0, serial, index_, started, started, probe, false};
  spdlog::debug("job {}: attempt {} on {}{}", log_id_, serial, target_name(planned.target),
                probe ? " (circuit probe)" : "");
  in_flight_->handle = launcher_.start(spec, *observers_.back());
  // A provider configured with `stream_upstream: false` sends the whole answer at once: there
  // is no first token to wait for, and the job's deadline bounds the attempt instead.
  if (policy.first_token_timeout_ms > 0 && planned.provider->stream_upstream) {
    first_token_timer_ = schedule_in(policy.first_token_timeout_ms,
                                     [serial](Job& job) { job.on_first_token_timeout(serial); });
  }
}

Job::InFlight Job::end_attempt() {
  cancel_timer(first_token_timer_);
  cancel_timer(idle_timer_);
  InFlight ended = *in_flight_;
  in_flight_.reset();
  return ended;
}

Job::InFlight Job::abort_attempt() {
  launcher_.abort(in_flight_->handle);
  return end_attempt();
}

void Job::release_probe(const InFlight& attempt) {
  if (!attempt.probe) return;
  const auto& target = targets_[attempt.target_index].target;
  breakers_.release_probe(target.provider, target.model);
}

// ---- events of the in-flight attempt --------------------------------------------------------

void Job::attempt_activity(uint64_t serial) {
  if (!is_current(serial)) return;
  in_flight_->last_activity = now();
}

void Job::attempt_delta(uint64_t serial, const protocol::Chunk& delta) {
  if (!is_current(serial)) return;
  in_flight_->last_activity = now();
  if (!in_flight_->got_delta) {
    in_flight_->got_delta = true;
    cancel_timer(first_token_timer_);
    arm_idle_timer(serial);
  }
  if (!send_chunks_ || !has_payload(delta)) return;
  protocol::Chunk chunk = delta;
  chunk.job_id = job_id_;
  chunk.seq = next_seq_++;
  chunks_visible_ = true;
  listener_.on_chunk(chunk);  // may cancel or drop the job: nothing follows here
}

void Job::attempt_complete(uint64_t serial, AttemptOutput output) {
  if (!is_current(serial)) return;
  const InFlight attempt = end_attempt();
  if (!output.saw_terminator && output.finish_reason.empty()) {
    // The body ended cleanly at the HTTP level, but the answer did not: a truncated answer is
    // a failure, never a success.
    Failure failure;
    failure.kind = ErrorKind::stream_interrupted;
    failure.code = std::string(policy_code::missing_terminator);
    failure.message = "stream ended without a finish reason or terminator";
    handle_failure(attempt, std::move(failure), std::move(output.notes));
    return;
  }
  const PlannedTarget planned = targets_[attempt.target_index];
  report_circuit(planned.target,
                 breakers_.record_success(planned.target.provider, planned.target.model,
                                          policy_of(planned), attempt.probe));
  if (feedback_ != nullptr && output.limits.any())
    feedback_->on_quota(planned.target, output.limits);
  std::vector<std::string> notes = std::move(output.notes);
  if (!output.saw_terminator) notes.emplace_back("stream ended without terminator");

  protocol::Attempt record = make_record(planned.target, attempt.started, "ok");
  record.note = join_notes(notes);
  attempts_.push_back(std::move(record));

  protocol::Response response;
  response.content = std::move(output.content);
  response.thinking = std::move(output.thinking);
  response.tool_calls = std::move(output.tool_calls);
  response.provider = planned.target.provider;
  response.model = planned.target.model;  // the name the user asked for, not the provider's echo
  response.usage.prompt_tokens = output.usage.prompt_tokens;
  response.usage.completion_tokens = output.usage.completion_tokens;
  response.usage.total_tokens = output.usage.prompt_tokens + output.usage.completion_tokens;
  response.usage.cached_tokens = output.usage.cached_tokens;
  response.cost_usd = answer_cost(planned, output.model, response.usage);
  response.finish_reason = std::move(output.finish_reason);
  response.raw_finish_reason = std::move(output.raw_finish_reason);
  response.request_id = std::move(output.request_id);
  response.created_at =
      output.created_at != 0 ? output.created_at : scheduler_.clock().unix_ms() / 1000;
  response.total_duration_ns = static_cast<uint64_t>(std::max<int64_t>(
      0, std::chrono::duration_cast<std::chrono::nanoseconds>(now() - started_).count()));
  response.skipped_events = output.skipped_events;
  response.attempts = attempts_;
  spdlog::debug("job {}: answered by {} after {} attempt record(s)", log_id_,
                target_name(planned.target), attempts_.size());
  finish_result(std::move(response));
}

void Job::attempt_failed(uint64_t serial, Failure failure, std::vector<std::string> notes) {
  if (!is_current(serial)) return;
  const InFlight attempt = end_attempt();
  handle_failure(attempt, std::move(failure), std::move(notes));
}

// ---- timers ---------------------------------------------------------------------------------

void Job::arm_idle_timer(uint64_t serial) {
  const auto& policy = policy_of(targets_[in_flight_->target_index]);
  if (policy.idle_timeout_ms == 0) return;
  // Not moved on every byte: on expiry it checks the last activity and re-arms itself for the
  // remainder. Moving a timer per chunk would cost a heap operation per chunk per stream.
  const auto due = in_flight_->last_activity + milliseconds(policy.idle_timeout_ms);
  idle_timer_ = scheduler_.schedule_at(due, [weak = weak_from_this(), serial] {
    if (auto job = weak.lock()) job->on_idle_check(serial);
  });
}

void Job::on_idle_check(uint64_t serial) {
  idle_timer_ = kNoTimer;
  if (!is_current(serial)) return;
  const auto& policy = policy_of(targets_[in_flight_->target_index]);
  if (now() < in_flight_->last_activity + milliseconds(policy.idle_timeout_ms)) {
    arm_idle_timer(serial);
    return;
  }
  const InFlight attempt = abort_attempt();
  Failure failure;
  failure.kind = ErrorKind::timeout;
  failure.code = std::string(policy_code::idle_timeout);
  failure.message = "no data for " + std::to_string(policy.idle_timeout_ms) + " ms";
  handle_failure(attempt, std::move(failure), {});
}

void Job::on_first_token_timeout(uint64_t serial) {
  first_token_timer_ = kNoTimer;
  if (!is_current(serial)) return;
  const auto& policy = policy_of(targets_[in_flight_->target_index]);
  const InFlight attempt = abort_attempt();
  Failure failure;
  failure.kind = ErrorKind::timeout;
  failure.code = std::string(policy_code::first_token_timeout);
  failure.message =
      "no first token within " + std::to_string(policy.first_token_timeout_ms) + " ms";
  handle_failure(attempt, std::move(failure), {});
}

void Job::on_deadline() {
  deadline_timer_ = kNoTimer;
  if (finished_) return;
  protocol::Error error;
  error.kind = ErrorKind::timeout;
  error.code = std::string(policy_code::deadline);
  error.message = "job deadline of " + std::to_string(deadline_ms_) + " ms exceeded";
  if (in_flight_) {
    const auto& target = targets_[in_flight_->target_index].target;
    error.provider = target.provider;
    error.model = target.model;
    record_interrupted(*in_flight_, ErrorKind::timeout, policy_code::deadline,
                       "aborted at the job deadline");
  } else if (last_failure_) {
    error.provider = last_failure_->target.provider;
    error.model = last_failure_->target.model;
  } else {
    error.provider = request_.provider;
    error.model = request_.model;
  }
  spdlog::debug("job {}: deadline of {} ms reached", log_id_, deadline_ms_);
  finish_error(std::move(error));
}

// ---- the decision after a failed attempt ----------------------------------------------------

void Job::handle_failure(const InFlight& attempt, Failure failure, std::vector<std::string> notes) {
  const PlannedTarget planned = targets_[attempt.target_index];  // a copy: targets may reorder
  const PolicySettings& policy = policy_of(planned);
  record_health(attempt, planned, failure);
  spdlog::debug("job {}: attempt on {} failed: {} status {} code '{}'", log_id_,
                target_name(planned.target), protocol::to_string(failure.kind), failure.status,
                failure.code);

  protocol::Attempt record =
      make_record(planned.target, attempt.started, std::string(protocol::to_string(failure.kind)));
  record.status = failure.status;
  record.code = failure.code;
  record.message = clip_marked(failure.message, kMaxAttemptMessage);
  last_failure_ = LastFailure{failure, planned.target};

  if (failure.kind == ErrorKind::content_filtered && !policy.failover_on_content_filter) {
    record.note = join_notes(notes);
    attempts_.push_back(std::move(record));
    finish_error(error_from_last_failure());
    return;
  }
  if (failure.kind == ErrorKind::context_length_exceeded) {
    prefer_larger_context(targets_, index_ + 1,
                          planned.provider != nullptr ? planned.provider->context_window : 0);
  }

  // After chunks reached the client the answer restarts anyway, so another target is preferred
  // to the route that just broke; the same target is the last resort.
  const bool visible = chunks_visible_;
  const std::optional<std::size_t> next = visible ? find_usable_target(index_ + 1) : std::nullopt;
  const std::optional<uint64_t> wait_ms =
      visible && next ? std::nullopt : retry_wait(planned, failure, notes);
  record.note = join_notes(notes);
  attempts_.push_back(std::move(record));
  if (wait_ms) {
    retry_after(planned, failure, *wait_ms);
  } else {
    move_on(failure, next);
  }
}

// Health failures count against the target's circuit; a 4xx (a 429 included: that is the
// account's quota) says nothing about health, and gives a half-open probe back for the next job.
void Job::record_health(const InFlight& attempt, const PlannedTarget& planned,
                        const Failure& failure) {
  if (is_health_failure(failure.kind)) {
    report_circuit(planned.target, breakers_.record_failure(
                                       planned.target.provider, planned.target.model,
                                       policy_of(planned), failure.retry_after_ms, attempt.probe));
  } else {
    release_probe(attempt);
  }
  report_limits(planned.target, failure);
}

// How long to wait before trying the same target again, or nullopt to move on.
std::optional<uint64_t> Job::retry_wait(const PlannedTarget& planned, const Failure& failure,
                                        std::vector<std::string>& notes) {
  if (!is_retryable(failure) || retries_used_ >= retry_limit(planned)) return std::nullopt;
  if (!breakers_.would_admit(planned.target.provider, planned.target.model)) {
    // This failure (or another job's) opened the circuit: waiting out a backoff only to be
    // refused would spend the job's deadline for nothing.
    notes.emplace_back("circuit open: not retrying");
    return std::nullopt;
  }
  return plan_wait(failure, policy_of(planned), notes);
}

void Job::retry_after(const PlannedTarget& planned, const Failure& failure, uint64_t wait_ms) {
  ++retries_used_;
  if (chunks_visible_) {
    emit_reset("retry of " + target_name(planned.target) + " after " +
               std::string(protocol::to_string(failure.kind)));
    if (finished_) return;
  }
  retry_timer_ = schedule_in(wait_ms, [](Job& job) {
    job.retry_timer_ = kNoTimer;
    job.try_current_target();
  });
}

// To the next target (`next` when chunks were visible), or the end of the job.
void Job::move_on(const Failure& failure, std::optional<std::size_t> next) {
  if (chunks_visible_) {
    if (!next) {
      finish_error(error_from_last_failure());
      return;
    }
    emit_reset("fallback to " + target_name(targets_[*next].target) + ": " +
               std::string(protocol::to_string(failure.kind)));
    if (finished_) return;
  }
  advance_target();
  try_current_target();
}

std::optional<uint64_t> Job::plan_wait(const Failure& failure, const PolicySettings& policy,
                                       std::vector<std::string>& notes) {
  uint64_t wait_ms = 0;
  std::string note;
  if (failure.retry_after_ms) {
    wait_ms = *failure.retry_after_ms;
    if (wait_ms > policy.retry_after_cap_ms) {
      notes.push_back("retry-after " + std::to_string(wait_ms) + " ms exceeds the cap of " +
                      std::to_string(policy.retry_after_cap_ms) + " ms: not waiting");
      return std::nullopt;
    }
    note = "retry-after " + std::to_string(wait_ms) + " ms honoured";
  } else {
    wait_ms =
        backoff_delay_ms(retries_used_, policy.backoff_base_ms, policy.backoff_max_ms, random_);
    note = "backoff " + std::to_string(wait_ms) + " ms";
  }
  if (deadline_ && now() + milliseconds(wait_ms) >= *deadline_) {
    notes.push_back("retry in " + std::to_string(wait_ms) + " ms would pass the deadline");
    return std::nullopt;
  }
  notes.push_back(std::move(note));
  return wait_ms;
}

void Job::emit_reset(std::string reason) {
  spdlog::debug("job {}: stream reset at seq {}: {}", log_id_, next_seq_, reason);
  chunks_visible_ = false;
  protocol::StreamReset reset;
  reset.job_id = job_id_;
  reset.next_seq = next_seq_;
  reset.reason = std::move(reason);
  listener_.on_reset(reset);
}

// ---- endings --------------------------------------------------------------------------------

protocol::Attempt Job::make_record(const protocol::Target& target, Clock::time_point started,
                                   std::string outcome) const {
  protocol::Attempt record;
  record.provider = target.provider;
  record.model = target.model;
  record.outcome = std::move(outcome);
  record.start_offset_ms = to_ms(started - started_);
  record.duration_ms = to_ms(now() - started);
  return record;
}

void Job::record_interrupted(const InFlight& attempt, ErrorKind kind, std::string_view code,
                             std::string message) {
  protocol::Attempt record = make_record(targets_[attempt.target_index].target, attempt.started,
                                         std::string(protocol::to_string(kind)));
  record.code = std::string(code);
  record.message = std::move(message);
  attempts_.push_back(std::move(record));
}

protocol::Error Job::error_from_last_failure() const {
  protocol::Error error;
  const Failure& failure = last_failure_->failure;
  error.kind = failure.kind;
  error.status = failure.status;
  error.code = failure.code;
  error.message = failure.message.empty() ? std::string(protocol::to_string(failure.kind)) +
                                                " from " + target_name(last_failure_->target)
                                          : clip_marked(failure.message, kMaxErrorMessage);
  error.provider = last_failure_->target.provider;
  error.model = last_failure_->target.model;
  return error;
}

void Job::fail_exhausted() {
  if (last_failure_) {
    finish_error(error_from_last_failure());
    return;
  }
  protocol::Error error;
  if (last_circuit_open_) {
    error.kind = ErrorKind::overloaded;
    error.code = std::string(policy_code::circuit_open);
    error.message =
        "every target of the job is cooling down after repeated failures (circuit open)";
    error.provider = last_circuit_open_->provider;
    error.model = last_circuit_open_->model;
  } else {
    error.kind = ErrorKind::unsupported_provider;
    error.message = "no provider of this job is configured on this worker";
    if (!targets_.empty()) {
      error.provider = targets_.back().target.provider;
      error.model = targets_.back().target.model;
    }
  }
  finish_error(std::move(error));
}

// Stops everything the job still has running. Leaves `finished_` to the caller.
void Job::close_out() {
  if (in_flight_) {
    const InFlight attempt = abort_attempt();
    release_probe(attempt);
  }
  cancel_all_timers();
}

void Job::finish_result(protocol::Response response) {
  finished_ = true;
  close_out();
  listener_.on_result(std::move(response));  // last statement: the listener may drop the job
}

void Job::finish_error(protocol::Error error) {
  finished_ = true;
  close_out();
  error.attempts = attempts_;
  spdlog::debug("job {}: failed: {} ({})", log_id_, protocol::to_string(error.kind), error.code);
  listener_.on_error(std::move(error));  // last statement: the listener may drop the job
}

class JobHandle final : public JobRunner {
 public:
  explicit JobHandle(std::shared_ptr<Job> job) : job_(std::move(job)) {}
  ~JobHandle() override { job_->shutdown_silently(); }
  JobHandle(const JobHandle&) = delete;
  JobHandle& operator=(const JobHandle&) = delete;

  void cancel() override {
    auto job = job_;  // the listener's on_error may destroy this handle
    job->cancel();
  }

 private:
  std::shared_ptr<Job> job_;
};

}  // namespace

std::unique_ptr<JobRunner> start_job(JobContext context, std::string job_id,
                                     protocol::Request request, bool send_chunks,
                                     JobListener& listener) {
  auto job =
      std::make_shared<Job>(context, std::move(job_id), std::move(request), send_chunks, listener);
  job->begin();
  return std::make_unique<JobHandle>(std::move(job));
}

}  // namespace dispatch::worker
