#pragma once

// The resilience policy: runs one job over its targets with retries, backoff, timeouts,
// fallback, mid-stream recovery and the circuit breaker. Knows no provider JSON: it decides on
// error kinds (Failure), time (Scheduler) and configuration (WorkerConfig).
// User-facing description: worker/src/policy/POLICY.md. In short, per job:
//
//  Targets   the request's provider/model, then request.fallbacks (present and empty: none),
//            else — with `enable_fallback` — the config's `fallbacks`, then `fallback_providers`
//            (each with its provider's `fallback_model`). See targets.hpp.
//  Retries   per target up to `retry_count` (request, else the target provider's config), only
//            for retryable failures (network, connect timeout, 408/409/429/5xx/529, overloaded,
//            stream_interrupted; see retry_rules.hpp). Waits: exponential backoff with jitter,
//            min(backoff_base_ms·2^n, backoff_max_ms) × U(0.75, 1] (backoff.hpp), or the
//            provider's Retry-After when it sent one and it is <= `retry_after_cap_ms` (a longer
//            one fails over instead of waiting). No wait reaches the job's deadline: the job
//            moves to the next target, or ends with the failure, instead.
//            No retry on invalid_request / authentication / model_not_available (next target),
//            context_length_exceeded (next target, one with a larger `context_window` first),
//            content_filtered (ends the job with the provider's reason, or fails over when
//            `failover_on_content_filter`).
//  Timeouts  `connect_timeout_ms` (the launcher's, retryable); `first_token_timeout_ms` (attempt
//            start -> first delta) and `idle_timeout_ms` (gap between any two bytes once the
//            first delta came) fail the provider over, never retry it: it accepted the request
//            and went silent. `timeout_ms` (request, else the primary provider's) is the whole
//            job's deadline from start_job(): on expiry the job ends with timeout/"deadline".
//            0 disables the first-token, idle or total timer.
//  Streams   deltas become chunks (when start_job's send_chunks says so), seq from 0. A failure
//  before the first
//            chunk reached the listener is retried / failed over invisibly. After it, another
//            target is preferred (the same one only when none is left and retries remain), and the
//            answer restarts from scratch: on_reset{next_seq} first, then the new attempt's
//            chunks. Every attempt gets the ORIGINAL request. An attempt that completes without
//            finish reason and terminator is a stream_interrupted failure ("missing_terminator"),
//            never a success.
//  Breaker   per (provider, model), shared by all jobs (circuit_breaker.hpp): an open target is
//            skipped without a call (attempt outcome "circuit_open"); when nothing usable is
//            left the job fails fast with its last real failure, or overloaded/"circuit_open".
//            A rate limit never counts against the circuit. Targets the broker lists as open
//            for the fleet (JobContext::open_targets) are skipped the same way.
//  Feedback  429s, remaining-quota headers and this worker's circuit changes go to
//            JobContext::feedback (the runtime reports them to the broker).
//  Result    Response / Error list every attempt and skipped target (Attempt records).
//
// Threading and lifetime: everything runs on the scheduler's (event loop's) thread.
// start_job() calls neither the listener nor the launcher inline: the job starts on the loop's next
// turn. The JobContext's members and `listener` must outlive the job (until it ended or the
// JobRunner is destroyed); the config must not change while jobs run (targets point into it).
// The listener may cancel or destroy the JobRunner from inside any of its callbacks.

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dispatch/common/clock.hpp"
#include "dispatch/protocol/types.hpp"
#include "dispatch/worker/attempt.hpp"
#include "dispatch/worker/config.hpp"
#include "dispatch/worker/policy/circuit_breaker.hpp"
#include "dispatch/worker/scheduler.hpp"

namespace dispatch::worker {

// Where a job's provider feedback goes: the runtime reports it to the broker, which acts for
// the whole fleet (pauses a rate-limited target, shares an open circuit).
class ProviderFeedback {
 public:
  virtual ~ProviderFeedback() = default;
  // A rate-limit refusal (429, or a provider's rate-limit error) from `target`.
  virtual void on_rate_limited(const protocol::Target& target, const Failure& failure) = 0;
  // Remaining-quota headers of any other answer from `target`.
  virtual void on_quota(const protocol::Target& target, const RateLimitHeaders& limits) = 0;
  // This worker's circuit for `target` opened or closed.
  virtual void on_circuit(const protocol::Target& target, const BreakerChange& change) = 0;
};

// Where a job's output goes (the runtime sends it to the broker).
class JobListener {
 public:
  virtual ~JobListener() = default;
  virtual void on_chunk(const protocol::Chunk& chunk) = 0;  // job_id and seq filled in
  virtual void on_reset(const protocol::StreamReset& reset) = 0;
  // Exactly one of on_result / on_error ends the job.
  virtual void on_result(protocol::Response response) = 0;
  virtual void on_error(protocol::Error error) = 0;
};

struct JobContext {
  Scheduler& scheduler;
  AttemptLauncher& launcher;
  CircuitBreakers& breakers;
  Random& random;
  const WorkerConfig& config;
  ProviderFeedback* feedback = nullptr;  // optional
  // "provider/model" targets the broker holds open for the fleet (JobHeader.open_targets).
  std::vector<std::string> open_targets = {};
  // JobHeader.traceparent: the job's W3C trace context (see job_trace_of()).
  std::string traceparent = {};
};

// A job's place in its W3C trace: the trace id every log line of the job carries, and the
// `traceparent` header sent to providers, whose parent id is this worker's own span id for the
// job (the spec's rule for a hop: the trace id stays, the parent id becomes ours).
struct JobTrace {
  std::string trace_id;
  std::string provider_traceparent;
};
// From the job header's traceparent. Empty or invalid (an older or a broken broker): a fresh
// trace, so that the worker's lines and the provider still share one.
JobTrace job_trace_of(std::string_view traceparent);

class JobRunner {
 public:
  // Destroying a running job aborts its attempt and timers silently: no listener call follows.
  virtual ~JobRunner() = default;
  // Aborts in-flight transfers and pending timers at once and ends the job with `cancelled`
  // (on_error is called from inside cancel()). A no-op once the job has ended.
  virtual void cancel() = 0;
};

// Starts the job; output goes to `listener` (which must outlive the job or until cancel()).
// `send_chunks`: the answer is also streamed as chunks (the job header's `stream`, which the
// broker copies from Submit.stream; Request.stream is informational). Chunk numbering starts
// at 0 for each delivery of the job.
std::unique_ptr<JobRunner> start_job(JobContext context, std::string job_id,
                                     protocol::Request request, bool send_chunks,
                                     JobListener& listener);

}  // namespace dispatch::worker
