// BrokerCore with fleet-wide quotas and shared provider health, on a ManualClock: jobs held
// back and released on time by the broker's own timer, interactive before batch, per-model
// lanes, token reservations settled by usage, pauses reported by one worker applied to every
// worker, SIGHUP-style reloads, and the shared circuit with its single half-open probe.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core_fixture.hpp"
#include "dispatch/broker/metrics.hpp"
#include "dispatch/broker/quota.hpp"
#include "dispatch/metrics/metrics.hpp"
#include "dispatch/protocol/codec.hpp"
#include "dispatch/test/prometheus_text.hpp"

namespace dispatch::broker {
namespace {

QuotaConfig quotas_of(const char* yaml) {
  auto parsed = parse_quota_config(yaml, "broker.yaml");
  EXPECT_TRUE(parsed) << (parsed ? "" : parsed.error());
  return parsed ? *parsed : QuotaConfig{};
}

class QuotaCoreTest : public CoreTest {
 protected:
  // Workers that send no heartbeats stay alive through the long waits of these tests.
  void SetUp() override { make_with(""); }

  void make_with(const char* yaml) {
    BrokerConfig config;
    config.liveness = 1'000'000;
    config.quotas = quotas_of(yaml);
    make(config);
  }

  // A submit with a model and a Request of `max_tokens` (and fallbacks when asked).
  void submit_model(const std::string& client, const std::string& job_id, const std::string& model,
                    Priority priority = Priority::interactive,
                    std::optional<uint32_t> max_tokens = std::nullopt, bool fallbacks = false,
                    uint32_t queue_timeout_ms = 0) {
    protocol::Submit s{job_id, "openai", priority, queue_timeout_ms, false, {}, model};
    protocol::Request request;
    request.provider = "openai";
    request.model = model;
    request.messages.push_back(protocol::Message{"user", "hi", {}, {}, {}, {}, {}});
    request.max_tokens = max_tokens;
    if (fallbacks) request.fallbacks = std::vector<protocol::Target>{{"claude", "c"}};
    core_->on_frontend(
        client, make_frames(Command::submit, protocol::encode(s), protocol::encode(request)));
  }

  void report(const std::string& route, protocol::ProviderHealth health) {
    core_->on_backend(route, make_frames(Command::provider_health, protocol::encode(health)));
  }

  static protocol::ProviderHealth health(std::string model, std::string_view kind) {
    protocol::ProviderHealth h;
    h.provider = "openai";
    h.model = std::move(model);
    h.kind = std::string(kind);
    return h;
  }

  // Runs the broker's timer as its server would: to the next due time, never past `until`.
  void run_timers_until(Clock::time_point until) {
    while (true) {
      const Clock::time_point next = core_->next_timer();
      if (next > until) break;
      ASSERT_GT(next, clock_.now()) << "the timer asks to run again at once (a busy loop)";
      clock_.advance(next - clock_.now());
      core_->on_timer();
    }
    clock_.advance(until - clock_.now());
    core_->on_timer();
  }

  static protocol::Response answer_of(const std::string& model, uint64_t prompt,
                                      uint64_t completion) {
    protocol::Response response;
    response.content = "ok";
    response.provider = "openai";
    response.model = model;
    response.usage = {prompt, completion, prompt + completion};
    response.attempts.push_back(protocol::Attempt{"openai", model, "ok", 200, "", "", 0, 5, ""});
    return response;
  }

  const protocol::QuotaStatus* row(const protocol::StatusReply& reply, const std::string& key) {
    for (const auto& q : reply.quotas) {
      if (q.key == key) return &q;
    }
    return nullptr;
  }
};

// ---------------------------------------------------------------------------------------------

TEST_F(QuotaCoreTest, JobsAreHeldBackAndReleasedOnTimeByTheTimer) {
  make_with("limits: {openai: {rpm: 60, burst: 1}}");
  ready("w1", "w1", 10);
  for (int i = 0; i < 3; ++i) submit("c", "j" + std::to_string(i));
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j0"}));  // the burst: one at once
  // Then (60 - 1) / 60 per second: the next one after about a second, not before.
  const Clock::time_point start = clock_.now();
  run_timers_until(start + 900ms);
  EXPECT_TRUE(take_job_ids().empty());
  EXPECT_LE(core_->next_timer(), start + 1100ms);  // the wake-up is armed for the quota
  run_timers_until(start + 1100ms);
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j1"}));
  run_timers_until(start + 2200ms);
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j2"}));
  // Nothing waits: no wake-up is kept armed for quota.
  EXPECT_GT(core_->next_timer(), clock_.now() + 100ms);
}

TEST_F(QuotaCoreTest, InteractiveJobsGoBeforeBatchJobsWhenRoomComes) {
  make_with("limits: {openai: {rpm: 60, burst: 1}}");
  ready("w1", "w1", 10);
  for (int i = 0; i < 3; ++i) submit("c", "b" + std::to_string(i), "openai", Priority::batch);
  submit("c2", "i0", "openai", Priority::interactive);
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"b0"}));
  run_timers_until(clock_.now() + 1100ms);
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"i0"}));
  run_timers_until(clock_.now() + 1100ms);
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"b1"}));
}

TEST_F(QuotaCoreTest, QueueDeadlineRunsWhileAJobWaitsForQuota) {
  make_with("limits: {openai: {rpm: 6, burst: 1}}");  // one per ten seconds
  ready("w1", "w1", 10);
  submit("c", "j0");
  submit("c", "j1", "openai", Priority::interactive, false, 2'000);
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j0"}));
  run_timers_until(clock_.now() + 2'100ms);
  auto errors = take_of(Command::error);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(decode_or_die<protocol::Error>(errors[0].payload()).code, "queue_deadline");
  EXPECT_EQ(core_->queued(), 0u);
}

TEST_F(QuotaCoreTest, AHeldModelDoesNotBlockAnotherModelBehindIt) {
  make_with("limits: {openai/a: {rpm: 60, burst: 1}}");
  ready("w1", "w1", 10);
  submit_model("c", "a0", "a");
  submit_model("c", "a1", "a");
  submit_model("c", "a2", "a");
  submit_model("c", "b0", "b");
  submit_model("c", "b1", "b");
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"a0", "b0", "b1"}));
  auto status = core_->status();
  const protocol::QuotaStatus* a = row(status, "openai/a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->waiting, 2u);
  EXPECT_EQ(a->rpm, 60.0);
  EXPECT_EQ(a->requests_last_minute, 1u);
  // A new job of model a waits behind a1 and a2 (FIFO within the model).
  submit_model("c", "a3", "a");
  run_timers_until(clock_.now() + 1100ms);
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"a1"}));
}

TEST_F(QuotaCoreTest, ConcurrencyFreesRoomWhenAJobEnds) {
  make_with("limits: {openai: {concurrency: 1}}");
  ready("w1", "w1", 10);
  submit("c", "j0");
  submit("c", "j1");
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j0"}));
  run_timers_until(clock_.now() + 5s);
  EXPECT_TRUE(take_job_ids().empty());
  EXPECT_EQ(row(core_->status(), "openai")->running, 1u);
  result("w1", "j0", 1);
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j1"}));
}

TEST_F(QuotaCoreTest, TokensAreReservedAndSettledByTheAnswersUsage) {
  // ~1,000 tokens at once; each job reserves about 815: 800 (max_tokens) + its bytes / 4.
  make_with("limits: {openai: {tpm: 6000, token_burst: 1000}}");
  ready("w1", "w1", 10);
  submit_model("c", "j0", "m", Priority::interactive, 800);
  submit_model("c", "j1", "m", Priority::interactive, 800);
  submit_model("c", "j2", "m", Priority::interactive, 800);
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j0"}));
  // The answer used 100 tokens: the other ~715 come back and j1 fits at once.
  result("w1", "j0", 1, answer_of("m", 60, 40));
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j1"}));
  // A failed job keeps its whole reservation: j2 still waits for the refill.
  protocol::Error error;
  error.kind = ErrorKind::server_error;
  worker_error("w1", "j1", 1, error);
  run_timers_until(clock_.now() + 5s);  // ~730 tokens at 83 per second: not yet
  EXPECT_TRUE(take_job_ids().empty());
  run_timers_until(clock_.now() + 5s);
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j2"}));
}

TEST_F(QuotaCoreTest, AnInteractiveJobHeldByItsModelIsNotOvertakenBySmallerBatchJobs) {
  // An interactive job reserving more than the model's token burst waits for a full bucket; the
  // batch jobs of the same model queued before it must wait behind it, or their small
  // reservations keep the bucket from ever filling and starve it (issue 15's token-bound run).
  make_with("limits: {openai/m: {tpm: 12000, token_burst: 600}}");
  ready("w1", "w1", 1);
  for (int i = 0; i < 6; ++i) {
    submit_model("c", "b" + std::to_string(i), "m", Priority::batch, 100);
  }
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"b0"}));
  submit_model("c2", "i0", "m", Priority::interactive, 1000);  // ~1,015: over the burst
  // b0 ends: the worker has room again, and the bucket has enough for b1, not for i0.
  result("w1", "b0", 1, answer_of("m", 60, 40));
  EXPECT_TRUE(take_job_ids().empty()) << "a batch job overtook the waiting interactive one";
  // Full again within half a second (190 tokens per second): i0 goes first, then the batch.
  run_timers_until(clock_.now() + 1s);
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"i0"}));
  result("w1", "i0", 1, answer_of("m", 10, 10));
  run_timers_until(clock_.now() + 1s);
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"b1"}));
}

TEST_F(QuotaCoreTest, ARateLimitReportedByOneWorkerPausesEveryWorker) {
  ready("w1", "w1", 1);
  ready("w2", "w2", 1);
  protocol::ProviderHealth limited = health("", protocol::health_kind::rate_limited);
  limited.retry_after_ms = 2'000;
  report("w1", limited);
  for (int i = 0; i < 4; ++i) submit("c", "j" + std::to_string(i));
  const Clock::time_point start = clock_.now();
  run_timers_until(start + 1'900ms);
  EXPECT_TRUE(take_job_ids().empty());
  const auto status = core_->status();  // row() points into it: keep it alive
  const protocol::QuotaStatus* paused = row(status, "openai");
  ASSERT_NE(paused, nullptr);
  ASSERT_TRUE(paused->paused_ms);
  EXPECT_LE(*paused->paused_ms, 100u);
  EXPECT_NE(paused->paused_reason.find("w1"), std::string::npos);
  run_timers_until(start + 2'001ms);
  auto jobs = take_jobs();
  ASSERT_EQ(jobs.size(), 2u);  // one on each worker, the moment the pause ends
  EXPECT_NE(jobs[0].first, jobs[1].first);
}

TEST_F(QuotaCoreTest, RemainingQuotaOfAnAnswerTightensTheBrokersView) {
  ready("w1", "w1", 10);
  protocol::ProviderHealth quota = health("m", protocol::health_kind::quota);
  quota.limit_requests = 600;
  quota.remaining_requests = 0;
  quota.reset_requests_ms = 60'000;  // a full window used: room for one more after 100 ms
  report("w1", quota);
  submit_model("c", "j0", "m");
  submit_model("c", "j1", "other");
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j1"}));
  run_timers_until(clock_.now() + 150ms);
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j0"}));
}

TEST_F(QuotaCoreTest, ReloadAppliesNewLimitsAndKeepsRunningCounts) {
  make_with("limits: {openai: {rpm: 6, burst: 1, concurrency: 5}}");
  ready("w1", "w1", 10);
  for (int i = 0; i < 4; ++i) submit("c", "j" + std::to_string(i));
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j0"}));
  // A looser file: the waiting jobs go at once, up to the new concurrency (j0 still counts).
  core_->configure_quotas(quotas_of("limits: {openai: {concurrency: 3}}"));
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j1", "j2"}));
  EXPECT_EQ(row(core_->status(), "openai")->running, 3u);
  // No limits at all: the last one goes.
  core_->configure_quotas(QuotaConfig{});
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j3"}));
  EXPECT_EQ(row(core_->status(), "openai"), nullptr);
}

TEST_F(QuotaCoreTest, HostileOrUnknownReportsChangeNothing) {
  ready("w1", "w1", 10);
  report("w1", health("m", "weather_report"));  // a newer kind: ignored
  protocol::ProviderHealth long_name = health(std::string(300, 'x'), "rate_limited");
  report("w1", long_name);
  take();
  submit_model("c", "j0", std::string(300, 'x'));  // too long a model: rejected at submit
  auto rejected = take_of(Command::rejected);
  ASSERT_EQ(rejected.size(), 1u);
  submit_model("c", "j1", "m");
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j1"}));
  EXPECT_TRUE(core_->status().quotas.empty());
}

TEST_F(QuotaCoreTest, QuotaUseAndBreakerStateAreSampledIntoMetrics) {
  make_with("limits: {openai: {concurrency: 2}}");
  prometheus::Registry registry;
  BrokerMetrics metrics(registry);
  core_->set_metrics(&metrics);
  ready("w1", "w1", 10);
  for (const char* id : {"j0", "j1", "j2"}) submit_model("c", id, "m");
  protocol::ProviderHealth opened = health("m", protocol::health_kind::circuit_open);
  opened.cooldown_ms = 5'000;
  report("w1", opened);
  core_->sample_metrics();
  const std::string text = metrics::render_text(registry);
  using test::metric_value;
  EXPECT_EQ(metric_value(text, "dispatch_quota_running", {{"key", "openai"}}), 2) << text;
  EXPECT_EQ(metric_value(text, "dispatch_quota_requests_last_minute", {{"key", "openai"}}), 2);
  EXPECT_EQ(metric_value(text, "dispatch_breaker_state", {{"key", "openai"}}), 0);
  EXPECT_EQ(metric_value(text, "dispatch_breaker_state", {{"key", "openai/m"}}), 1);
  EXPECT_EQ(metric_value(text, "dispatch_queue_depth", {{"priority", "interactive"}}), 1);
}

TEST_F(QuotaCoreTest, AnOpenCircuitIsSharedAndOneProbeDecidesForAll) {
  ready("w1", "w1", 10);
  ready("w2", "w2", 10);
  protocol::ProviderHealth opened = health("m", protocol::health_kind::circuit_open);
  opened.cooldown_ms = 5'000;
  report("w1", opened);
  submit_model("c", "j0", "m");
  submit_model("c", "j1", "m");
  submit_model("c", "f0", "m", Priority::interactive, std::nullopt, true);
  // Only the job with a fallback goes, told to skip the open target.
  auto jobs = take_jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].second.job_id, "f0");
  EXPECT_EQ(jobs[0].second.open_targets, (std::vector<std::string>{"openai/m"}));
  EXPECT_EQ(row(core_->status(), "openai/m")->breaker, "open");

  // After the cooldown exactly one job goes, as the probe (not told to skip its own target).
  run_timers_until(clock_.now() + 5'100ms);
  jobs = take_jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].second.job_id, "j0");
  EXPECT_TRUE(jobs[0].second.open_targets.empty());
  EXPECT_EQ(row(core_->status(), "openai/m")->breaker, "half_open");
  // It fails on the target: open again for everyone.
  protocol::Error failed;
  failed.kind = ErrorKind::server_error;
  failed.attempts.push_back(
      protocol::Attempt{"openai", "m", "server_error", 500, "", "", 0, 5, ""});
  worker_error(jobs[0].first, "j0", 1, failed);
  run_timers_until(clock_.now() + 4'000ms);
  EXPECT_TRUE(take_job_ids().empty());
  // The next probe succeeds: the circuit closes and the rest go.
  submit_model("c", "j2", "m");
  run_timers_until(clock_.now() + 1'100ms);
  jobs = take_jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].second.job_id, "j1");
  result(jobs[0].first, "j1", 1, answer_of("m", 1, 1));
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j2"}));
  EXPECT_EQ(row(core_->status(), "openai/m"), nullptr);
}

TEST_F(QuotaCoreTest, AWorkersCircuitClosedReportClosesItForEveryone) {
  ready("w1", "w1", 10);
  protocol::ProviderHealth opened = health("m", protocol::health_kind::circuit_open);
  opened.cooldown_ms = 30'000;
  report("w1", opened);
  submit_model("c", "j0", "m");
  EXPECT_TRUE(take_job_ids().empty());
  report("w1", health("m", protocol::health_kind::circuit_closed));
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j0"}));
}

TEST_F(QuotaCoreTest, ARateLimitedProbeNeitherClosesNorReopensTheCircuit) {
  ready("w1", "w1", 10);
  protocol::ProviderHealth opened = health("m", protocol::health_kind::circuit_open);
  opened.cooldown_ms = 1'000;
  report("w1", opened);
  submit_model("c", "j0", "m");
  submit_model("c", "j1", "m");
  run_timers_until(clock_.now() + 1'100ms);
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j0"}));
  protocol::Error limited;
  limited.kind = ErrorKind::rate_limited;
  limited.attempts.push_back(
      protocol::Attempt{"openai", "m", "rate_limited", 429, "", "", 0, 5, ""});
  worker_error("w1", "j0", 1, limited);
  // The probe slot is free again: the next job is the probe, at once.
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j1"}));
  EXPECT_EQ(row(core_->status(), "openai/m")->breaker, "half_open");
}

}  // namespace
}  // namespace dispatch::broker
