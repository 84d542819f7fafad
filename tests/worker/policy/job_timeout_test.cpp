// First-token, idle and total-deadline timeouts of JobRunner (connect timeouts are the
// launcher's and come back as retryable failures: see job_retry_test).

#include <gtest/gtest.h>

#include "policy_test_support.hpp"

namespace dispatch::worker::test {
namespace {

protocol::Target t(std::string provider, std::string model) {
  return {std::move(provider), std::move(model)};
}

class JobTimeoutTest : public ::testing::Test {
 protected:
  // first token 1000 ms, idle 500 ms, deadline 10000 ms, 2 retries per target
  JobHarness h{make_config({"a", "b"}, without_breaker())};
};

TEST_F(JobTimeoutTest, FirstTokenTimeoutFailsOverWithoutRetryingTheSameTarget) {
  h.start_main(make_request("a", "m1", {t("b", "m2")}));
  h.scheduler.advance_by(999ms);
  EXPECT_TRUE(h.launcher.live(0));
  h.launcher.activity(0);  // bytes that are not a token do not count
  h.scheduler.advance_by(1ms);
  EXPECT_TRUE(h.launcher.at(0).aborted);
  ASSERT_EQ(h.launcher.count(), 2u);
  EXPECT_EQ(h.launcher.at(1).spec.target, t("b", "m2"));
  EXPECT_EQ(h.launcher.at(1).started_ms, 1000);
  h.launcher.delta(1, "x");
  h.launcher.complete(1, ok_output());
  ASSERT_TRUE(h.listener.result);
  const auto& first = h.listener.result->attempts.at(0);
  EXPECT_EQ(first.outcome, "timeout");
  EXPECT_EQ(first.code, "first_token_timeout");
  EXPECT_EQ(first.duration_ms, 1000u);
  EXPECT_EQ(h.launcher.count_for("a", "m1"), 1u);
}

TEST_F(JobTimeoutTest, FirstTokenTimeoutWithoutFallbackEndsTheJob) {
  h.start_main(make_request("a", "m1"));
  h.scheduler.advance_by(1000ms);
  h.scheduler.advance_by(5s);
  EXPECT_EQ(h.launcher.count(), 1u);  // retries remain, but a silent route is not retried
  ASSERT_TRUE(h.listener.has_error());
  EXPECT_EQ(h.listener.error().kind, ErrorKind::timeout);
  EXPECT_EQ(h.listener.error().code, "first_token_timeout");
  EXPECT_EQ(h.scheduler.pending_timers(), 0u);
}

TEST_F(JobTimeoutTest, FirstTokenTimerStopsAtTheFirstDelta) {
  h.start_main(make_request("a", "m1"));
  h.scheduler.advance_by(900ms);
  h.launcher.delta(0, "a");
  for (int i = 0; i < 10; ++i) {  // 4 s of steady chunks: neither timer fires
    h.scheduler.advance_by(400ms);
    h.launcher.delta(0, "b");
  }
  EXPECT_TRUE(h.launcher.live(0));
  h.launcher.complete(0, ok_output());
  EXPECT_TRUE(h.listener.result);
}

TEST_F(JobTimeoutTest, IdleTimerIsResetByActivityAndDeltas) {
  h.start_main(make_request("a", "m1", {t("b", "m2")}));
  h.launcher.delta(0, "a");
  h.scheduler.advance_by(499ms);
  h.launcher.activity(0);  // a keep-alive ping
  h.scheduler.advance_by(499ms);
  h.launcher.delta(0, "b");
  h.scheduler.advance_by(499ms);
  EXPECT_TRUE(h.launcher.live(0));
  EXPECT_EQ(h.launcher.count(), 1u);
  h.scheduler.advance_by(1ms);  // 500 ms since the last byte (at 998 ms)
  EXPECT_TRUE(h.launcher.at(0).aborted);
  ASSERT_EQ(h.launcher.count(), 2u);
  EXPECT_EQ(h.launcher.at(1).spec.target, t("b", "m2"));  // failed over, not retried
  EXPECT_EQ(h.launcher.at(1).started_ms, 1498);
  h.launcher.fail(1, failure(ErrorKind::authentication, 401));
  ASSERT_TRUE(h.listener.has_error());
  const auto& first = h.listener.error().attempts.at(0);
  EXPECT_EQ(first.outcome, "timeout");
  EXPECT_EQ(first.code, "idle_timeout");
}

TEST_F(JobTimeoutTest, DisabledTimersNeverFire) {
  h.config.providers.at("a").policy.first_token_timeout_ms = 0;
  h.config.providers.at("a").policy.idle_timeout_ms = 0;
  h.start_main(make_request("a", "m1"));
  h.scheduler.advance_by(5s);
  h.launcher.delta(0, "a");
  h.scheduler.advance_by(4s);
  EXPECT_TRUE(h.launcher.live(0));
  EXPECT_EQ(h.scheduler.pending_timers(), 1u);  // only the deadline
}

TEST_F(JobTimeoutTest, NoFirstTokenTimerWhenTheProviderDoesNotStreamUpstream) {
  h.config.providers.at("a").stream_upstream = false;
  h.start_main(make_request("a", "m1"));
  h.scheduler.advance_by(5s);  // a long whole-body answer: only the deadline bounds it
  EXPECT_TRUE(h.launcher.live(0));
  h.launcher.delta(0, "all of it");
  h.launcher.complete(0, ok_output("all of it"));
  EXPECT_TRUE(h.listener.result);
}

TEST_F(JobTimeoutTest, DeadlineEndsTheJobInTimeWithAttemptsListed) {
  auto request = make_request("a", "m1", {t("b", "m2")});
  request.timeout_ms = 2500;
  h.start_main(request);
  h.launcher.fail(0, failure(ErrorKind::network));
  h.scheduler.advance_by(100ms);  // backoff
  ASSERT_EQ(h.launcher.count(), 2u);
  h.scheduler.advance_by(200ms);
  h.launcher.delta(1, "partial");
  for (int i = 0; i < 10 && !h.listener.ended(); ++i) {
    h.scheduler.advance_by(300ms);
    if (h.launcher.live(1)) h.launcher.delta(1, "more");
  }
  ASSERT_TRUE(h.listener.has_error());
  EXPECT_EQ(h.listener.end_ms, 2500);
  EXPECT_TRUE(h.launcher.at(1).aborted);
  const auto& error = h.listener.error();
  EXPECT_EQ(error.kind, ErrorKind::timeout);
  EXPECT_EQ(error.code, "deadline");
  EXPECT_EQ(error.provider, "a");
  ASSERT_EQ(error.attempts.size(), 2u);
  EXPECT_EQ(error.attempts[0].outcome, "network");
  EXPECT_EQ(error.attempts[1].outcome, "timeout");
  EXPECT_EQ(error.attempts[1].code, "deadline");
  EXPECT_EQ(error.attempts[1].start_offset_ms, 100u);
  EXPECT_EQ(error.attempts[1].duration_ms, 2400u);
  EXPECT_EQ(h.scheduler.pending_timers(), 0u);
  EXPECT_EQ(h.launcher.count(), 2u);
}

TEST_F(JobTimeoutTest, DeadlineComesFromThePrimaryProviderWhenTheRequestHasNone) {
  h.config.providers.at("a").policy.timeout_ms = 1500;
  h.config.providers.at("a").policy.first_token_timeout_ms = 0;
  h.start_main(make_request("a", "m1"));
  h.scheduler.advance_by(1499ms);
  EXPECT_FALSE(h.listener.ended());
  h.scheduler.advance_by(1ms);
  ASSERT_TRUE(h.listener.has_error());
  EXPECT_EQ(h.listener.error().code, "deadline");
}

TEST_F(JobTimeoutTest, JobEndsWithinItsDeadlineWhateverTheProvidersDo) {
  // A provider that fails slowly, over and over, on every target: the job still ends by the
  // deadline, and no timer is left behind.
  h.config.providers.at("a").policy.retry_count = 10;
  h.config.providers.at("b").policy.retry_count = 10;
  auto request = make_request("a", "m1", {t("b", "m2")});
  request.timeout_ms = 4000;
  h.start_main(request);
  for (int step = 0; step < 1000 && !h.listener.ended(); ++step) {
    const std::size_t last = h.launcher.count() - 1;
    if (h.launcher.live(last) && step % 7 == 3)
      h.launcher.fail(last, failure(ErrorKind::overloaded, 529));
    h.scheduler.advance_by(50ms);
  }
  ASSERT_TRUE(h.listener.ended());
  EXPECT_LE(h.listener.end_ms, 4000);
  EXPECT_EQ(h.scheduler.pending_timers(), 0u);
}

TEST_F(JobTimeoutTest, RequestTimeoutOfZeroMeansTheConfiguredOne) {
  h.config.providers.at("a").policy.timeout_ms = 1200;
  auto request = make_request("a", "m1");
  request.timeout_ms = 0;
  h.start_main(request);
  h.launcher.delta(0, "a");
  for (int i = 0; i < 10 && !h.listener.ended(); ++i) {
    h.scheduler.advance_by(400ms);
    if (h.launcher.live(0)) h.launcher.delta(0, "b");
  }
  ASSERT_TRUE(h.listener.has_error());
  EXPECT_EQ(h.listener.error().code, "deadline");
  EXPECT_EQ(h.listener.end_ms, 1200);
}

TEST_F(JobTimeoutTest, ConfiguredTimeoutOfZeroMeansNoTotalDeadline) {
  h.config.providers.at("a").policy.timeout_ms = 0;
  h.start_main(make_request("a", "m1"));
  h.launcher.delta(0, "a");
  for (int i = 0; i < 100; ++i) {
    h.scheduler.advance_by(400ms);
    h.launcher.delta(0, "b");
  }
  EXPECT_FALSE(h.listener.ended());
  h.launcher.complete(0, ok_output());
  EXPECT_TRUE(h.listener.result);
}

}  // namespace
}  // namespace dispatch::worker::test
