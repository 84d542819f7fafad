// The circuit breaker as jobs see it: skipping, failing fast, single probes, recovery.

#include <gtest/gtest.h>

#include "policy_test_support.hpp"

namespace dispatch::worker::test {
namespace {

protocol::Target t(std::string provider, std::string model) {
  return {std::move(provider), std::move(model)};
}

std::vector<std::string> outcomes(const std::vector<protocol::Attempt>& attempts) {
  std::vector<std::string> out;
  for (const auto& a : attempts) out.push_back(a.provider + ":" + a.outcome);
  return out;
}

// Policy: breaker after 3 consecutive failures, cooldown 5000 ms, 2 retries per target.
class JobBreakerTest : public ::testing::Test {
 protected:
  JobHarness h{make_config({"a", "b"})};

  // Opens a/m1's circuit with one job that ends on b.
  void open_primary() {
    h.start_main(make_request("a", "m1", {t("b", "m2")}));
    for (int i = 0; i < 3; ++i) {
      h.launcher.fail(h.launcher.count() - 1, failure(ErrorKind::overloaded, 529));
      h.scheduler.advance_by(500ms);  // past the backoff (100, 200 ms), not a first-token timeout
    }
    ASSERT_EQ(h.breakers.state("a", "m1"), BreakerState::open);
    h.launcher.complete(h.launcher.count() - 1, ok_output());
    ASSERT_TRUE(h.listener.result);
  }
};

TEST_F(JobBreakerTest, RepeatedFailuresOpenTheCircuitAndTheJobMovesOn) {
  open_primary();
  EXPECT_EQ(outcomes(h.listener.result->attempts),
            (std::vector<std::string>{"a:overloaded", "a:overloaded", "a:overloaded", "b:ok"}));
  EXPECT_EQ(h.launcher.count_for("a", "m1"), 3u);
}

TEST_F(JobBreakerTest, RetryIsSkippedOnceTheCircuitOpened) {
  auto request = make_request("a", "m1", {t("b", "m2")});
  request.retry_count = 5;
  h.start_main(request);
  for (int i = 0; i < 3; ++i) {
    h.launcher.fail(h.launcher.count() - 1, failure(ErrorKind::network));
    h.scheduler.advance_by(500ms);
  }
  EXPECT_EQ(h.launcher.count_for("a", "m1"), 3u);  // retries remained, but the circuit opened
  h.launcher.complete(h.launcher.count() - 1, ok_output());
  ASSERT_TRUE(h.listener.result);
  EXPECT_EQ(outcomes(h.listener.result->attempts),
            (std::vector<std::string>{"a:network", "a:network", "a:network", "b:ok"}));
  EXPECT_EQ(h.listener.result->attempts[2].note, "circuit open: not retrying");
  EXPECT_EQ(h.launcher.last().started_ms, 1000);  // when a failed the 3rd time: no backoff
}

TEST_F(JobBreakerTest, OpenTargetIsSkippedWithoutACall) {
  open_primary();
  const auto calls_before = h.launcher.count();
  RecordingListener listener;
  auto runner = h.start(make_request("a", "m1", {t("b", "m2")}), listener, "job-2");
  ASSERT_EQ(h.launcher.count(), calls_before + 1);
  EXPECT_EQ(h.launcher.last().spec.target, t("b", "m2"));
  h.launcher.complete(h.launcher.count() - 1, ok_output());
  ASSERT_TRUE(listener.result);
  EXPECT_EQ(outcomes(listener.result->attempts),
            (std::vector<std::string>{"a:circuit_open", "b:ok"}));
  EXPECT_EQ(listener.result->attempts[0].duration_ms, 0u);
}

TEST_F(JobBreakerTest, EveryTargetOpenFailsFast) {
  open_primary();
  RecordingListener listener;
  auto runner = h.start(make_request("a", "m1"), listener, "job-2");
  ASSERT_TRUE(listener.has_error());
  EXPECT_EQ(listener.error().kind, ErrorKind::overloaded);
  EXPECT_EQ(listener.error().code, "circuit_open");
  EXPECT_EQ(listener.error().provider, "a");
  EXPECT_EQ(outcomes(listener.error().attempts), (std::vector<std::string>{"a:circuit_open"}));
  EXPECT_EQ(h.scheduler.pending_timers(), 0u);
}

TEST_F(JobBreakerTest, FailFastReportsTheLastRealFailure) {
  open_primary();
  RecordingListener listener;
  auto runner = h.start(make_request("b", "m2", {t("a", "m1")}), listener, "job-2");
  h.launcher.fail(h.launcher.count() - 1, failure(ErrorKind::authentication, 401, "bad_key"));
  ASSERT_TRUE(listener.has_error());
  EXPECT_EQ(listener.error().kind, ErrorKind::authentication);
  EXPECT_EQ(listener.error().provider, "b");
  EXPECT_EQ(outcomes(listener.error().attempts),
            (std::vector<std::string>{"b:authentication", "a:circuit_open"}));
}

TEST_F(JobBreakerTest, HalfOpenLetsOneJobProbeWhileOthersSkip) {
  open_primary();
  h.scheduler.advance_by(5s);
  ASSERT_EQ(h.breakers.state("a", "m1"), BreakerState::half_open);

  RecordingListener probe_sink;
  auto probe_job = h.start(make_request("a", "m1", {t("b", "m2")}), probe_sink, "probe");
  const std::size_t probe = h.launcher.count() - 1;
  EXPECT_EQ(h.launcher.at(probe).spec.target, t("a", "m1"));

  RecordingListener other_sink;
  auto other_job = h.start(make_request("a", "m1", {t("b", "m2")}), other_sink, "other");
  EXPECT_EQ(h.launcher.last().spec.target, t("b", "m2"));  // skipped while the probe runs

  h.launcher.complete(probe, ok_output("back"));
  ASSERT_TRUE(probe_sink.result);
  EXPECT_EQ(probe_sink.result->provider, "a");
  EXPECT_EQ(h.breakers.state("a", "m1"), BreakerState::closed);

  RecordingListener later_sink;
  auto later_job = h.start(make_request("a", "m1", {t("b", "m2")}), later_sink, "later");
  EXPECT_EQ(h.launcher.last().spec.target, t("a", "m1"));
}

TEST_F(JobBreakerTest, FailedProbeReopensAndTheProbeJobFallsBack) {
  open_primary();
  h.scheduler.advance_by(5s);
  RecordingListener listener;
  auto runner = h.start(make_request("a", "m1", {t("b", "m2")}), listener, "probe");
  h.launcher.fail(h.launcher.count() - 1, failure(ErrorKind::server_error, 500));
  // No retry of a (open again): b answers at once.
  EXPECT_EQ(h.breakers.state("a", "m1"), BreakerState::open);
  EXPECT_EQ(h.launcher.last().spec.target, t("b", "m2"));
  h.launcher.complete(h.launcher.count() - 1, ok_output());
  ASSERT_TRUE(listener.result);
  EXPECT_EQ(outcomes(listener.result->attempts),
            (std::vector<std::string>{"a:server_error", "b:ok"}));
  h.scheduler.advance_by(4999ms);
  EXPECT_EQ(h.breakers.state("a", "m1"), BreakerState::open);
  h.scheduler.advance_by(1ms);
  EXPECT_EQ(h.breakers.state("a", "m1"), BreakerState::half_open);
}

TEST_F(JobBreakerTest, CancelledProbeFreesTheSlotForTheNextJob) {
  open_primary();
  h.scheduler.advance_by(5s);
  RecordingListener listener;
  auto runner = h.start(make_request("a", "m1", {t("b", "m2")}), listener, "probe");
  EXPECT_EQ(h.launcher.last().spec.target, t("a", "m1"));
  runner->cancel();
  RecordingListener next_sink;
  auto next = h.start(make_request("a", "m1", {t("b", "m2")}), next_sink, "next");
  EXPECT_EQ(h.launcher.last().spec.target, t("a", "m1"));  // the new probe
}

TEST_F(JobBreakerTest, ProbeEndingInAClientErrorFreesTheSlot) {
  open_primary();
  h.scheduler.advance_by(5s);
  RecordingListener listener;
  auto runner = h.start(make_request("a", "m1"), listener, "probe");
  h.launcher.fail(h.launcher.count() - 1, failure(ErrorKind::invalid_request, 400));
  EXPECT_EQ(h.breakers.state("a", "m1"), BreakerState::half_open);
  EXPECT_TRUE(h.breakers.would_admit("a", "m1"));
}

TEST_F(JobBreakerTest, BreakerIsPerProviderAndModel) {
  open_primary();
  RecordingListener listener;
  auto runner = h.start(make_request("a", "m-other"), listener, "sibling");
  EXPECT_EQ(h.launcher.last().spec.target, t("a", "m-other"));
}

TEST_F(JobBreakerTest, ClientErrorsNeverOpenTheCircuit) {
  for (int i = 0; i < 6; ++i) {
    RecordingListener listener;
    auto runner = h.start(make_request("a", "m1"), listener, "job-" + std::to_string(i));
    h.launcher.fail(h.launcher.count() - 1, failure(ErrorKind::authentication, 401));
    ASSERT_TRUE(listener.has_error());
  }
  EXPECT_EQ(h.breakers.state("a", "m1"), BreakerState::closed);
  EXPECT_EQ(h.launcher.count(), 6u);
}

TEST_F(JobBreakerTest, FailureRateOpensTheCircuitAcrossJobs) {
  for (auto& [name, provider] : h.config.providers) {
    provider.policy.breaker_failures = 0;
    provider.policy.breaker_failure_rate = 0.5;
    provider.policy.breaker_window = 6;  // 3 samples at least
  }
  auto run_one = [&](bool ok) {
    RecordingListener listener;
    auto request = make_request("a", "m1");
    request.retry_count = 0;
    auto runner = h.start(request, listener, "job");
    if (ok) {
      h.launcher.complete(h.launcher.count() - 1, ok_output());
    } else {
      h.launcher.fail(h.launcher.count() - 1, failure(ErrorKind::server_error, 500));
    }
    return listener.ended();
  };
  ASSERT_TRUE(run_one(true));
  ASSERT_TRUE(run_one(false));
  EXPECT_EQ(h.breakers.state("a", "m1"), BreakerState::closed);  // 2 samples: too few
  ASSERT_TRUE(run_one(false));                                   // 2 of 3 failed
  EXPECT_EQ(h.breakers.state("a", "m1"), BreakerState::open);
}

TEST_F(JobBreakerTest, CooldownFollowsTheRetryAfterOfTheOpeningFailure) {
  h.config.providers.at("a").policy.retry_after_cap_ms = 60'000;
  auto request = make_request("a", "m1", {t("b", "m2")});
  request.retry_count = 0;
  for (int i = 0; i < 3; ++i) {
    RecordingListener listener;
    auto runner = h.start(request, listener, "job");
    h.launcher.fail(h.launcher.count() - 1,
                    with_retry_after(failure(ErrorKind::overloaded, 503), 9000));
    h.launcher.complete(h.launcher.count() - 1, ok_output());
  }
  ASSERT_EQ(h.breakers.state("a", "m1"), BreakerState::open);
  h.scheduler.advance_by(8999ms);  // past the 5000 ms cooldown, not past the Retry-After
  EXPECT_EQ(h.breakers.state("a", "m1"), BreakerState::open);
  h.scheduler.advance_by(1ms);
  EXPECT_EQ(h.breakers.state("a", "m1"), BreakerState::half_open);
}

// A provider that is down for 20 s while a job arrives every 250 ms: the fallback serves, the
// primary is probed once per cooldown, and traffic returns to it once it is back.
TEST_F(JobBreakerTest, FlappingPrimaryIsServedByTheFallbackThenRecovers) {
  constexpr int64_t kPrimaryBackAtMs = 20'000;
  struct Running {
    int64_t submitted_ms = 0;
    std::unique_ptr<RecordingListener> listener;
    std::unique_ptr<JobRunner> runner;  // destroyed before its listener
  };
  std::vector<Running> jobs;
  // Plays both providers: answers every live attempt once it has run for 20 ms.
  auto play = [&] {
    for (std::size_t i = 0; i < h.launcher.count(); ++i) {
      if (!h.launcher.live(i)) continue;
      const auto launch = h.launcher.at(i);
      if (h.scheduler.elapsed_ms() - launch.started_ms < 20) continue;
      if (launch.spec.target.provider == "a" && h.scheduler.elapsed_ms() < kPrimaryBackAtMs) {
        h.launcher.fail(i, failure(ErrorKind::overloaded, 529, "overloaded_error"));
      } else {
        h.launcher.delta(i, "x");
        h.launcher.complete(i, ok_output(launch.spec.target.provider));
      }
    }
  };
  for (int64_t now = 0; now <= 40'000; now += 10) {
    h.scheduler.advance_to_ms(now);
    if (now % 250 == 0 && now < 35'000) {
      Running job;
      job.submitted_ms = now;
      job.listener = std::make_unique<RecordingListener>();
      job.runner = h.start(make_request("a", "m1", {t("b", "m2")}), *job.listener,
                           "job-" + std::to_string(now));
      jobs.push_back(std::move(job));
    }
    play();
  }

  std::size_t calls_while_down = 0;
  for (std::size_t i = 0; i < h.launcher.count(); ++i) {
    const auto& launch = h.launcher.at(i);
    if (launch.spec.target.provider == "a" && launch.started_ms < kPrimaryBackAtMs) {
      ++calls_while_down;
    }
  }
  // 3 failures open it, then at most one probe per 5 s cooldown.
  EXPECT_LE(calls_while_down, 3u + kPrimaryBackAtMs / 5'000);
  EXPECT_GE(calls_while_down, 4u);  // it was probed, not abandoned

  std::size_t late_jobs = 0;
  for (const auto& job : jobs) {
    ASSERT_TRUE(job.listener->result) << "job submitted at " << job.submitted_ms << " ms";
    EXPECT_TRUE(job.listener->resets.empty());  // failures happened before any chunk
    if (job.submitted_ms < kPrimaryBackAtMs && job.submitted_ms > 1'000) {
      EXPECT_EQ(job.listener->result->provider, "b") << job.submitted_ms;
    }
    // Back on the primary within one cooldown (plus one job interval) of its recovery.
    if (job.submitted_ms >= kPrimaryBackAtMs + 5'000 + 250) {
      ++late_jobs;
      EXPECT_EQ(job.listener->result->provider, "a") << job.submitted_ms;
    }
  }
  EXPECT_GT(late_jobs, 0u);
  EXPECT_EQ(h.breakers.state("a", "m1"), BreakerState::closed);
  EXPECT_EQ(h.scheduler.pending_timers(), 0u);
}

}  // namespace
}  // namespace dispatch::worker::test
