// What a job tells the broker about its providers (ProviderFeedback): rate limits at once,
// remaining-quota headers, its worker's circuit changes; a rate limit never opens the circuit;
// targets the broker holds open for the fleet are skipped without a call.

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

RateLimitHeaders remaining(uint64_t requests_left) {
  RateLimitHeaders limits;
  limits.limit_requests = 600;
  limits.remaining_requests = requests_left;
  limits.reset_requests_ms = 100;
  return limits;
}

class JobFeedbackTest : public ::testing::Test {
 protected:
  JobHarness h{make_config({"a", "b"})};
};

// The scenario in one worker: a job with retry_count 5 against a provider that answers
// nothing but 429s. Every 429 counts against retry_count as before, but the circuit stays
// closed (the next job is tried, not failed fast), and each 429 is reported with its headers.
TEST_F(JobFeedbackTest, RateLimitsNeverOpenTheCircuitAndAreReportedAtOnce) {
  auto request = make_request("a", "m1");
  request.retry_count = 5;
  h.start_main(request);
  for (int i = 0; i < 6; ++i) {
    ASSERT_EQ(h.launcher.count(), static_cast<std::size_t>(i + 1));
    Failure limited = with_retry_after(failure(ErrorKind::rate_limited, 429), 1'000);
    limited.limits = remaining(0);
    h.launcher.fail(h.launcher.count() - 1, limited);
    ASSERT_EQ(h.feedback.rate_limited.size(), static_cast<std::size_t>(i + 1));  // at once
    h.scheduler.advance_by(1'100ms);
  }
  ASSERT_TRUE(h.listener.has_error());
  EXPECT_EQ(h.listener.error().kind, ErrorKind::rate_limited);
  EXPECT_EQ(h.breakers.state("a", "m1"), BreakerState::closed);
  EXPECT_TRUE(h.feedback.circuit.empty());
  const auto& first = h.feedback.rate_limited.front();
  EXPECT_EQ(first.target, t("a", "m1"));
  EXPECT_EQ(first.retry_after_ms, 1'000u);
  EXPECT_EQ(first.limits, remaining(0));

  // The next job calls the provider (no circuit_open without a call).
  RecordingListener listener;
  auto runner = h.start(make_request("a", "m1"), listener, "job-2");
  EXPECT_EQ(h.launcher.count(), 7u);
}

TEST_F(JobFeedbackTest, RemainingQuotaOfASuccessfulAnswerIsReported) {
  h.start_main(make_request("a", "m1"));
  AttemptOutput output = ok_output();
  output.limits = remaining(42);
  h.launcher.complete(0, output);
  ASSERT_TRUE(h.listener.result);
  ASSERT_EQ(h.feedback.quota.size(), 1u);
  EXPECT_EQ(h.feedback.quota[0].first, t("a", "m1"));
  EXPECT_EQ(h.feedback.quota[0].second, remaining(42));
  // An answer without such headers reports nothing.
  RecordingListener listener;
  auto runner = h.start(make_request("a", "m1"), listener, "job-2");
  h.launcher.complete(1, ok_output());
  EXPECT_EQ(h.feedback.quota.size(), 1u);
  EXPECT_TRUE(h.feedback.rate_limited.empty());
}

TEST_F(JobFeedbackTest, TheWorkersCircuitChangesAreReported) {
  auto request = make_request("a", "m1", {t("b", "m2")});
  h.start_main(request);
  for (int i = 0; i < 3; ++i) {
    h.launcher.fail(h.launcher.count() - 1, failure(ErrorKind::overloaded, 529));
    h.scheduler.advance_by(500ms);
  }
  ASSERT_EQ(h.feedback.circuit.size(), 1u);
  EXPECT_EQ(h.feedback.circuit[0].first, t("a", "m1"));
  EXPECT_EQ(h.feedback.circuit[0].second.kind, BreakerChange::Kind::opened);
  EXPECT_EQ(h.feedback.circuit[0].second.cooldown_ms, 5'000u);
  h.launcher.complete(h.launcher.count() - 1, ok_output());

  // After the cooldown this worker's probe succeeds: the close is reported too.
  h.scheduler.advance_by(5'000ms);
  RecordingListener listener;
  auto runner = h.start(make_request("a", "m1"), listener, "job-2");
  h.launcher.complete(h.launcher.count() - 1, ok_output());
  ASSERT_TRUE(listener.result);
  ASSERT_EQ(h.feedback.circuit.size(), 2u);
  EXPECT_EQ(h.feedback.circuit[1].second.kind, BreakerChange::Kind::closed);
}

TEST_F(JobFeedbackTest, TargetsOpenForTheFleetAreSkippedWithoutACall) {
  h.open_targets = {"a/m1"};
  h.start_main(make_request("a", "m1", {t("b", "m2")}));
  ASSERT_EQ(h.launcher.count(), 1u);
  EXPECT_EQ(h.launcher.last().spec.target, t("b", "m2"));
  h.launcher.complete(0, ok_output());
  ASSERT_TRUE(h.listener.result);
  EXPECT_EQ(outcomes(h.listener.result->attempts),
            (std::vector<std::string>{"a:circuit_open", "b:ok"}));
  // The worker's own circuit is untouched: the broker's view is the broker's.
  EXPECT_EQ(h.breakers.state("a", "m1"), BreakerState::closed);
}

TEST_F(JobFeedbackTest, OnlyTheExactTargetIsSkipped) {
  h.open_targets = {"a/m", "a/m1x", "b"};
  h.start_main(make_request("a", "m1", {t("b", "m2")}));
  ASSERT_EQ(h.launcher.count(), 1u);
  EXPECT_EQ(h.launcher.last().spec.target, t("a", "m1"));
}

TEST_F(JobFeedbackTest, EveryTargetOpenForTheFleetFailsFast) {
  h.open_targets = {"a/m1", "b/m2"};
  h.start_main(make_request("a", "m1", {t("b", "m2")}));
  EXPECT_EQ(h.launcher.count(), 0u);
  ASSERT_TRUE(h.listener.has_error());
  EXPECT_EQ(outcomes(h.listener.error().attempts),
            (std::vector<std::string>{"a:circuit_open", "b:circuit_open"}));
}

}  // namespace
}  // namespace dispatch::worker::test
