#pragma once

// Test doubles for the policy: a Scheduler over a ManualClock, a scriptable AttemptLauncher,
// a JobListener that records everything, and a Random that returns scripted values.

#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "dispatch/common/clock.hpp"
#include "dispatch/protocol/types.hpp"
#include "dispatch/worker/attempt.hpp"
#include "dispatch/worker/config.hpp"
#include "dispatch/worker/policy/circuit_breaker.hpp"
#include "dispatch/worker/policy/job_runner.hpp"
#include "dispatch/worker/scheduler.hpp"

namespace dispatch::protocol {
// Readable gtest output for targets.
inline void PrintTo(const Target& target, std::ostream* os) {
  *os << target.provider << "/" << target.model;
}
}  // namespace dispatch::protocol

namespace dispatch::worker {
inline void PrintTo(const Failure& failure, std::ostream* os) {
  *os << protocol::to_string(failure.kind) << " " << failure.status << " '" << failure.code << "'";
}
}  // namespace dispatch::worker

namespace dispatch::worker::test {

using namespace std::chrono_literals;
using protocol::ErrorKind;

// Timers run only when the test moves time, in due order (ties in scheduling order), with the
// clock set to each timer's due time while it runs.
class ManualScheduler final : public Scheduler {
 public:
  const Clock& clock() const override { return clock_; }
  ManualClock& manual_clock() { return clock_; }

  TimerId schedule_at(Clock::time_point at, std::function<void()> fn) override {
    const TimerId id = next_id_++;
    timers_.emplace(Key{at, id}, std::move(fn));
    due_of_.emplace(id, at);
    return id;
  }
  void cancel(TimerId id) override {
    auto it = due_of_.find(id);
    if (it == due_of_.end()) return;
    timers_.erase(Key{it->second, id});
    due_of_.erase(it);
  }

  void advance_to(Clock::time_point target) {
    // Bounded: a job that keeps scheduling zero-delay work would otherwise hang the test.
    for (int ran = 0; !timers_.empty() && timers_.begin()->first.at <= target; ++ran) {
      if (ran >= 100'000) {
        ADD_FAILURE() << "ManualScheduler: runaway timers";
        return;
      }
      auto it = timers_.begin();
      const Key key = it->first;
      auto fn = std::move(it->second);
      timers_.erase(it);
      due_of_.erase(key.id);
      if (key.at > clock_.now()) clock_.advance(key.at - clock_.now());
      fn();
    }
    if (target > clock_.now()) clock_.advance(target - clock_.now());
  }
  void advance_by(Clock::duration d) { advance_to(clock_.now() + d); }
  void run_due() { advance_by(Clock::duration::zero()); }

  std::size_t pending_timers() const { return timers_.size(); }
  std::optional<Clock::time_point> next_due() const {
    if (timers_.empty()) return std::nullopt;
    return timers_.begin()->first.at;
  }
  // Milliseconds since the scheduler was made (the job tests start their jobs at 0).
  int64_t elapsed_ms() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(clock_.now() - origin_).count();
  }
  Clock::time_point origin() const { return origin_; }
  void advance_to_ms(int64_t ms) { advance_to(origin_ + std::chrono::milliseconds(ms)); }

 private:
  struct Key {
    Clock::time_point at;
    TimerId id;
    bool operator<(const Key& other) const {
      return at != other.at ? at < other.at : id < other.id;
    }
  };
  ManualClock clock_;
  Clock::time_point origin_ = clock_.now();
  std::map<Key, std::function<void()>> timers_;
  std::map<TimerId, Clock::time_point> due_of_;
  TimerId next_id_ = 1;
};

// Records every attempt the policy starts and lets the test play the provider's side.
class FakeLauncher final : public AttemptLauncher {
 public:
  struct Launch {
    AttemptSpec spec;
    protocol::Request request;  // a copy of *spec.request at start()
    AttemptListener* events = nullptr;
    AttemptHandle handle = 0;
    int64_t started_ms = 0;
    bool aborted = false;
    bool ended = false;
  };

  explicit FakeLauncher(const ManualScheduler& scheduler) : scheduler_(scheduler) {}

  AttemptHandle start(const AttemptSpec& spec, AttemptListener& events) override {
    Launch launch;
    launch.spec = spec;
    if (spec.request != nullptr) launch.request = *spec.request;
    launch.events = &events;
    launch.handle = next_handle_++;
    launch.started_ms = scheduler_.elapsed_ms();
    launches_.push_back(std::move(launch));
    return launches_.back().handle;
  }
  void abort(AttemptHandle handle) override {
    for (auto& launch : launches_) {
      if (launch.handle == handle) launch.aborted = true;
    }
  }

  std::size_t count() const { return launches_.size(); }
  const Launch& at(std::size_t i) const { return launches_.at(i); }
  const Launch& last() const { return launches_.back(); }
  std::size_t count_for(const std::string& provider, const std::string& model) const {
    std::size_t n = 0;
    for (const auto& launch : launches_) {
      if (launch.spec.target.provider == provider && launch.spec.target.model == model) ++n;
    }
    return n;
  }
  bool live(std::size_t i) const {
    const auto& launch = launches_.at(i);
    return !launch.aborted && !launch.ended;
  }

  // The provider's side of attempt i. Driving an aborted or ended attempt is a test bug.
  void activity(std::size_t i) { events_of(i)->on_activity(); }
  void delta(std::size_t i, std::string content) {
    protocol::Chunk chunk;
    chunk.content = std::move(content);
    events_of(i)->on_delta(chunk);
  }
  void complete(std::size_t i, AttemptOutput output) {
    auto* events = events_of(i);
    launches_.at(i).ended = true;
    events->on_complete(std::move(output));
  }
  void fail(std::size_t i, Failure failure, std::vector<std::string> notes = {}) {
    auto* events = events_of(i);
    launches_.at(i).ended = true;
    events->on_failed(std::move(failure), std::move(notes));
  }

 private:
  AttemptListener* events_of(std::size_t i) {
    static NullEvents null_events;
    if (i >= launches_.size() || !live(i)) {
      ADD_FAILURE() << "attempt " << i << " is not live";
      return &null_events;
    }
    return launches_[i].events;
  }
  struct NullEvents final : AttemptListener {
    void on_activity() override {}
    void on_delta(const protocol::Chunk&) override {}
    void on_complete(AttemptOutput) override {}
    void on_failed(Failure, std::vector<std::string>) override {}
  };

  const ManualScheduler& scheduler_;
  std::vector<Launch> launches_;
  AttemptHandle next_handle_ = 100;
};

class RecordingListener final : public JobListener {
 public:
  void on_chunk(const protocol::Chunk& chunk) override {
    check_open("chunk");
    chunks.push_back(chunk);
    log.push_back("chunk " + std::to_string(chunk.seq) + " " + chunk.content);
    if (on_chunk_hook) on_chunk_hook(chunk);
  }
  void on_reset(const protocol::StreamReset& reset) override {
    check_open("reset");
    resets.push_back(reset);
    log.push_back("reset " + std::to_string(reset.next_seq));
    if (on_reset_hook) on_reset_hook(reset);
  }
  void on_result(protocol::Response response) override {
    check_open("result");
    ++ends;
    if (now_ms) end_ms = now_ms();
    log.push_back("result " + response.content);
    result = std::move(response);
    if (on_end_hook) on_end_hook();
  }
  void on_error(protocol::Error error) override {
    check_open("error");
    ++ends;
    if (now_ms) end_ms = now_ms();
    log.push_back("error " + std::string(protocol::to_string(error.kind)));
    error_ = std::move(error);
    if (on_end_hook) on_end_hook();
  }

  bool ended() const { return ends > 0; }
  const protocol::Error& error() const { return *error_; }
  bool has_error() const { return error_.has_value(); }

  std::vector<protocol::Chunk> chunks;
  std::vector<protocol::StreamReset> resets;
  std::optional<protocol::Response> result;
  std::optional<protocol::Error> error_;
  std::vector<std::string> log;
  int ends = 0;
  std::function<int64_t()> now_ms;  // when set, the time of the job's end goes to end_ms
  int64_t end_ms = -1;
  std::function<void(const protocol::Chunk&)> on_chunk_hook;
  std::function<void(const protocol::StreamReset&)> on_reset_hook;
  std::function<void()> on_end_hook;

 private:
  void check_open(const char* what) {
    if (ends > 0) ADD_FAILURE() << "listener got " << what << " after the job ended";
  }
};

// Returns the scripted values in order, then `fallback` forever.
class ScriptedRandom final : public Random {
 public:
  explicit ScriptedRandom(double fallback = 0.0) : fallback_(fallback) {}
  void push(double value) { values_.push_back(value); }
  double uniform() override {
    ++calls;
    if (values_.empty()) return fallback_;
    const double value = values_.front();
    values_.pop_front();
    return value;
  }
  int calls = 0;

 private:
  std::deque<double> values_;
  double fallback_;
};

// Scaled-down timings so that numbers in tests read easily.
inline PolicySettings fast_policy() {
  PolicySettings policy;
  policy.timeout_ms = 10'000;
  policy.retry_count = 2;
  policy.connect_timeout_ms = 700;
  policy.first_token_timeout_ms = 1'000;
  policy.idle_timeout_ms = 500;
  policy.backoff_base_ms = 100;
  policy.backoff_max_ms = 800;
  policy.retry_after_cap_ms = 3'000;
  policy.breaker_failures = 3;
  policy.breaker_failure_rate = 0.5;
  policy.breaker_window = 20;
  policy.breaker_cooldown_ms = 5'000;
  return policy;
}

// For tests about something else than the breaker, which would otherwise open after 3 failures.
inline PolicySettings without_breaker(PolicySettings policy = fast_policy()) {
  policy.breaker_failures = 0;
  policy.breaker_failure_rate = 0.0;
  return policy;
}

inline WorkerConfig make_config(const std::vector<std::string>& provider_names,
                                PolicySettings policy = fast_policy()) {
  WorkerConfig config;
  config.defaults = policy;
  config.enable_fallback = false;
  for (const auto& name : provider_names) {
    ProviderConfig provider;
    provider.name = name;
    provider.type = "openai-compatible";
    provider.base_url = "http://127.0.0.1:1/v1";
    provider.policy = policy;
    config.providers.emplace(name, provider);
  }
  return config;
}

inline protocol::Request make_request(std::string provider, std::string model,
                                      std::vector<protocol::Target> fallbacks = {}) {
  protocol::Request request;
  request.provider = std::move(provider);
  request.model = std::move(model);
  request.messages.push_back(protocol::Message{"user", "hello", "", {}, {}, "", ""});
  request.fallbacks = std::move(fallbacks);
  return request;
}

inline AttemptOutput ok_output(std::string content = "answer") {
  AttemptOutput output;
  output.content = std::move(content);
  output.finish_reason = "stop";
  output.raw_finish_reason = "stop";
  output.saw_terminator = true;
  output.usage = {10, 5, 15};
  output.request_id = "req-1";
  output.created_at = 1'700'000'123;
  return output;
}

inline Failure failure(ErrorKind kind, uint16_t status = 0, std::string code = "",
                       std::string message = "") {
  Failure f;
  f.kind = kind;
  f.status = status;
  f.code = std::move(code);
  f.message =
      message.empty() ? std::string(protocol::to_string(kind)) + " happened" : std::move(message);
  return f;
}

// Stable, readable names for tests parameterised by a Failure (CTest lists them by name).
inline std::string failure_test_name(const ::testing::TestParamInfo<Failure>& info) {
  return std::string(protocol::to_string(info.param.kind)) + "_" +
         std::to_string(info.param.status) + "_" + std::to_string(info.index);
}

inline Failure with_retry_after(Failure f, uint64_t ms) {
  f.retry_after_ms = ms;
  return f;
}

// Records the provider feedback a job gives (what the runtime reports to the broker).
class RecordingFeedback final : public ProviderFeedback {
 public:
  struct RateLimited {
    protocol::Target target;
    std::optional<uint64_t> retry_after_ms;
    RateLimitHeaders limits;
  };
  void on_rate_limited(const protocol::Target& target, const Failure& failure) override {
    rate_limited.push_back({target, failure.retry_after_ms, failure.limits});
  }
  void on_quota(const protocol::Target& target, const RateLimitHeaders& limits) override {
    quota.emplace_back(target, limits);
  }
  void on_circuit(const protocol::Target& target, const BreakerChange& change) override {
    circuit.emplace_back(target, change);
  }

  std::vector<RateLimited> rate_limited;
  std::vector<std::pair<protocol::Target, RateLimitHeaders>> quota;
  std::vector<std::pair<protocol::Target, BreakerChange>> circuit;
};

// Everything a job test needs; `start()` launches a job and runs the loop's first turn.
class JobHarness {
 public:
  explicit JobHarness(WorkerConfig cfg) : config(std::move(cfg)) {
    listener.now_ms = [this] { return scheduler.elapsed_ms(); };
  }

  // Chunks are sent as a broker would ask: for a request that says stream.
  std::unique_ptr<JobRunner> start(protocol::Request request, RecordingListener& into,
                                   std::string job_id = "job-1") {
    const bool send_chunks = request.stream;
    auto job = start_job(JobContext{scheduler, launcher, breakers, random, config, &feedback,
                                    open_targets, traceparent},
                         std::move(job_id), std::move(request), send_chunks, into);
    scheduler.run_due();
    return job;
  }
  void start_main(protocol::Request request) { runner = start(std::move(request), listener); }

  ManualScheduler scheduler;
  FakeLauncher launcher{scheduler};
  CircuitBreakers breakers{scheduler.clock()};
  ScriptedRandom random{0.0};  // jitter factor 1.0: exact backoff values
  WorkerConfig config;
  RecordingListener listener;
  RecordingFeedback feedback;
  std::vector<std::string> open_targets;  // as a job header from the broker lists them
  std::string traceparent;                // JobHeader.traceparent
  std::unique_ptr<JobRunner> runner;
};

}  // namespace dispatch::worker::test
