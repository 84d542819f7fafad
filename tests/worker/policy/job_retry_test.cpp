// Retries, backoff, Retry-After, fallback order and accounting of JobRunner.

#include <gtest/gtest.h>

#include "policy_test_support.hpp"

namespace dispatch::worker::test {
namespace {

protocol::Target t(std::string provider, std::string model) {
  return {std::move(provider), std::move(model)};
}

class JobRetryTest : public ::testing::Test {
 protected:
  JobHarness h{make_config({"a", "b", "c"}, without_breaker())};
};

TEST_F(JobRetryTest, AnswerOnFirstTryCarriesFullAccounting) {
  auto request = make_request("a", "m1");
  h.start_main(request);
  ASSERT_EQ(h.launcher.count(), 1u);
  const auto& launch = h.launcher.at(0);
  EXPECT_EQ(launch.spec.target, t("a", "m1"));
  EXPECT_EQ(launch.spec.provider, h.config.provider("a"));
  EXPECT_EQ(launch.spec.connect_timeout_ms, 700u);
  EXPECT_TRUE(launch.spec.stream_upstream);
  EXPECT_EQ(launch.request, request);

  h.scheduler.advance_by(250ms);
  auto output = ok_output("hi there");
  output.model = "m1-2024-08-06";  // informational only
  output.usage = {12, 30, 999};    // a wrong total is recomputed
  output.raw_finish_reason = "end_turn";
  output.skipped_events = 2;
  output.notes = {"temperature clamped to 1.0"};
  h.launcher.complete(0, output);

  ASSERT_TRUE(h.listener.result);
  const auto& r = *h.listener.result;
  EXPECT_EQ(r.content, "hi there");
  EXPECT_EQ(r.provider, "a");
  EXPECT_EQ(r.model, "m1");
  EXPECT_EQ(r.usage, (protocol::Usage{12, 30, 42}));
  EXPECT_EQ(r.finish_reason, "stop");
  EXPECT_EQ(r.raw_finish_reason, "end_turn");
  EXPECT_EQ(r.request_id, "req-1");
  EXPECT_EQ(r.created_at, 1'700'000'123);
  EXPECT_EQ(r.total_duration_ns, 250'000'000u);
  EXPECT_EQ(r.skipped_events, 2u);
  ASSERT_EQ(r.attempts.size(), 1u);
  EXPECT_EQ(r.attempts[0],
            (protocol::Attempt{"a", "m1", "ok", 0, "", "", 0, 250, "temperature clamped to 1.0"}));
  EXPECT_EQ(h.scheduler.pending_timers(), 0u);
}

TEST_F(JobRetryTest, CreatedAtFallsBackToTheClock) {
  h.start_main(make_request("a", "m1"));
  auto output = ok_output();
  output.created_at = 0;
  h.launcher.complete(0, output);
  ASSERT_TRUE(h.listener.result);
  EXPECT_EQ(h.listener.result->created_at, h.scheduler.clock().unix_ms() / 1000);
}

class RetryableKindTest : public ::testing::TestWithParam<Failure> {};

TEST_P(RetryableKindTest, RetriedUpToRetryCountThenReported) {
  JobHarness h(make_config({"a"}, without_breaker()));
  auto request = make_request("a", "m1");
  request.retry_count = 3;
  h.start_main(request);
  for (std::size_t i = 0; i < 4; ++i) {
    ASSERT_EQ(h.launcher.count(), i + 1) << "attempt " << i;
    h.launcher.fail(i, GetParam());
    h.scheduler.advance_by(1s);  // past any backoff (max 800 ms)
  }
  EXPECT_EQ(h.launcher.count(), 4u);  // 1 + 3 retries
  ASSERT_TRUE(h.listener.has_error());
  const auto& error = h.listener.error();
  EXPECT_EQ(error.kind, GetParam().kind);
  EXPECT_EQ(error.status, GetParam().status);
  EXPECT_EQ(error.message, GetParam().message);
  EXPECT_EQ(error.provider, "a");
  EXPECT_EQ(error.model, "m1");
  ASSERT_EQ(error.attempts.size(), 4u);
  for (const auto& attempt : error.attempts) {
    EXPECT_EQ(attempt.outcome, protocol::to_string(GetParam().kind));
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, RetryableKindTest,
                         ::testing::Values(failure(ErrorKind::network),
                                           failure(ErrorKind::timeout),  // connect timeout
                                           failure(ErrorKind::rate_limited, 429),
                                           failure(ErrorKind::overloaded, 529),
                                           failure(ErrorKind::overloaded, 503),
                                           failure(ErrorKind::server_error, 500),
                                           failure(ErrorKind::server_error, 502),
                                           failure(ErrorKind::invalid_request, 408),
                                           failure(ErrorKind::invalid_request, 409)),
                         failure_test_name);

class NonRetryableKindTest : public ::testing::TestWithParam<Failure> {};

TEST_P(NonRetryableKindTest, MovesToTheNextTargetAtOnce) {
  JobHarness h(make_config({"a", "b"}, without_breaker()));
  h.start_main(make_request("a", "m1", {t("b", "m2")}));
  h.launcher.fail(0, GetParam());
  ASSERT_EQ(h.launcher.count(), 2u);
  EXPECT_EQ(h.launcher.at(1).spec.target, t("b", "m2"));
  EXPECT_EQ(h.launcher.at(1).started_ms, 0);  // no backoff before another target
  h.launcher.complete(1, ok_output());
  ASSERT_TRUE(h.listener.result);
  EXPECT_EQ(h.listener.result->provider, "b");
  ASSERT_EQ(h.listener.result->attempts.size(), 2u);
  EXPECT_EQ(h.listener.result->attempts[0].outcome, protocol::to_string(GetParam().kind));
  EXPECT_EQ(h.listener.result->attempts[0].status, GetParam().status);
  EXPECT_EQ(h.launcher.count_for("a", "m1"), 1u);
}

TEST_P(NonRetryableKindTest, WithoutFallbackTheErrorIsReportedAfterOneCall) {
  JobHarness h(make_config({"a"}, without_breaker()));
  h.start_main(make_request("a", "m1"));
  h.launcher.fail(0, GetParam());
  h.scheduler.advance_by(5s);
  EXPECT_EQ(h.launcher.count(), 1u);
  ASSERT_TRUE(h.listener.has_error());
  EXPECT_EQ(h.listener.error().kind, GetParam().kind);
  EXPECT_EQ(h.listener.error().status, GetParam().status);
  EXPECT_EQ(h.listener.error().code, GetParam().code);
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, NonRetryableKindTest,
    ::testing::Values(failure(ErrorKind::invalid_request, 400, "invalid_request_error"),
                      failure(ErrorKind::authentication, 401, "invalid_api_key"),
                      failure(ErrorKind::authentication, 403),
                      failure(ErrorKind::model_not_available, 404, "model_not_found"),
                      failure(ErrorKind::context_length_exceeded, 400, "context_length_exceeded")),
    failure_test_name);

TEST_F(JobRetryTest, LastFailureIsReportedWhenEveryTargetFails) {
  h.start_main(make_request("a", "m1", {t("b", "m2")}));
  h.launcher.fail(0, failure(ErrorKind::authentication, 401, "bad_key", "key rejected"));
  h.launcher.fail(1, failure(ErrorKind::model_not_available, 404, "nope", "no such model"));
  ASSERT_TRUE(h.listener.has_error());
  const auto& error = h.listener.error();
  EXPECT_EQ(error.kind, ErrorKind::model_not_available);
  EXPECT_EQ(error.status, 404);
  EXPECT_EQ(error.code, "nope");
  EXPECT_EQ(error.message, "no such model");
  EXPECT_EQ(error.provider, "b");
  EXPECT_EQ(error.model, "m2");
  ASSERT_EQ(error.attempts.size(), 2u);
  EXPECT_EQ(error.attempts[0].code, "bad_key");
  EXPECT_EQ(error.attempts[0].message, "key rejected");
}

TEST_F(JobRetryTest, RetryCountComesFromTheRequestElseTheTargetsProvider) {
  h.config.providers.at("a").policy.retry_count = 1;
  h.config.providers.at("b").policy.retry_count = 0;
  h.start_main(make_request("a", "m1", {t("b", "m2")}));
  h.launcher.fail(0, failure(ErrorKind::network));
  h.scheduler.advance_by(1s);
  ASSERT_EQ(h.launcher.count(), 2u);
  h.launcher.fail(1, failure(ErrorKind::network));  // a's one retry used: on to b
  ASSERT_EQ(h.launcher.count(), 3u);
  EXPECT_EQ(h.launcher.at(2).spec.target, t("b", "m2"));
  h.launcher.fail(2, failure(ErrorKind::network));  // b has no retries
  h.scheduler.advance_by(1s);
  EXPECT_EQ(h.launcher.count(), 3u);
  EXPECT_TRUE(h.listener.has_error());

  JobHarness h2(make_config({"a"}, without_breaker()));
  auto request = make_request("a", "m1");
  request.retry_count = 0;  // overrides the provider's 2
  h2.start_main(request);
  h2.launcher.fail(0, failure(ErrorKind::overloaded, 529));
  h2.scheduler.advance_by(1s);
  EXPECT_EQ(h2.launcher.count(), 1u);
  EXPECT_TRUE(h2.listener.has_error());
}

TEST_F(JobRetryTest, HugeRetryCountIsBounded) {
  JobHarness h1(make_config({"a"}, without_breaker()));
  auto request = make_request("a", "m1");
  request.retry_count = 1'000'000;
  h1.config.providers.at("a").policy.timeout_ms = 0;  // no deadline: only the retry bound
  h1.start_main(request);
  for (int i = 0; i < 100 && !h1.listener.ended(); ++i) {
    h1.launcher.fail(h1.launcher.count() - 1, failure(ErrorKind::network));
    h1.scheduler.advance_by(1s);
  }
  EXPECT_TRUE(h1.listener.has_error());
  EXPECT_EQ(h1.launcher.count(), 17u);  // 1 + 16
}

TEST_F(JobRetryTest, ExponentialBackoffWithExactDelays) {
  auto request = make_request("a", "m1");
  request.retry_count = 4;
  h.start_main(request);
  const int64_t expected_waits[] = {100, 200, 400, 800};  // base 100, cap 800, factor 1.0
  for (std::size_t i = 0; i < 4; ++i) {
    const int64_t failed_at = h.scheduler.elapsed_ms();
    h.launcher.fail(i, failure(ErrorKind::server_error, 500));
    h.scheduler.advance_by(std::chrono::milliseconds(expected_waits[i] - 1));
    EXPECT_EQ(h.launcher.count(), i + 1) << "retried too early";
    h.scheduler.advance_by(1ms);
    ASSERT_EQ(h.launcher.count(), i + 2) << "not retried after " << expected_waits[i] << " ms";
    EXPECT_EQ(h.launcher.last().started_ms, failed_at + expected_waits[i]);
  }
  h.launcher.complete(4, ok_output());
  ASSERT_TRUE(h.listener.result);
  const auto& attempts = h.listener.result->attempts;
  ASSERT_EQ(attempts.size(), 5u);
  EXPECT_EQ(attempts[0].note, "backoff 100 ms");
  EXPECT_EQ(attempts[3].note, "backoff 800 ms");
  EXPECT_EQ(attempts[1].start_offset_ms, 100u);
  EXPECT_EQ(attempts[4].start_offset_ms, 1500u);
}

TEST_F(JobRetryTest, JitterComesFromTheInjectedRandom) {
  h.random.push(0.5);  // 100 * 0.875 = 87.5 -> 88
  h.random.push(0.2);  // 200 * 0.95 = 190
  h.start_main(make_request("a", "m1"));
  h.launcher.fail(0, failure(ErrorKind::network));
  h.scheduler.advance_by(87ms);
  EXPECT_EQ(h.launcher.count(), 1u);
  h.scheduler.advance_by(1ms);
  ASSERT_EQ(h.launcher.count(), 2u);
  h.launcher.fail(1, failure(ErrorKind::network));
  h.scheduler.advance_by(190ms);
  ASSERT_EQ(h.launcher.count(), 3u);
  EXPECT_EQ(h.launcher.last().started_ms, 88 + 190);
}

TEST_F(JobRetryTest, RetryAfterIsHonouredInsteadOfTheBackoff) {
  h.start_main(make_request("a", "m1"));
  h.launcher.fail(0, with_retry_after(failure(ErrorKind::rate_limited, 429), 2000));
  h.scheduler.advance_by(1999ms);
  EXPECT_EQ(h.launcher.count(), 1u);
  h.scheduler.advance_by(1ms);
  ASSERT_EQ(h.launcher.count(), 2u);
  h.launcher.complete(1, ok_output());
  ASSERT_TRUE(h.listener.result);
  EXPECT_EQ(h.listener.result->attempts[0].note, "retry-after 2000 ms honoured");
  EXPECT_EQ(h.random.calls, 0);  // no jitter drawn for a Retry-After wait
}

TEST_F(JobRetryTest, RetryAfterAboveTheCapFailsOverInsteadOfWaiting) {
  h.start_main(make_request("a", "m1", {t("b", "m2")}));
  h.launcher.fail(0, with_retry_after(failure(ErrorKind::rate_limited, 429), 3001));
  ASSERT_EQ(h.launcher.count(), 2u);
  EXPECT_EQ(h.launcher.at(1).spec.target, t("b", "m2"));
  EXPECT_EQ(h.launcher.at(1).started_ms, 0);
  h.launcher.complete(1, ok_output());
  ASSERT_TRUE(h.listener.result);
  EXPECT_EQ(h.listener.result->attempts[0].note,
            "retry-after 3001 ms exceeds the cap of 3000 ms: not waiting");
}

TEST_F(JobRetryTest, RetryAfterAboveTheCapWithoutFallbackFailsAtOnce) {
  h.start_main(make_request("a", "m1"));
  h.launcher.fail(0, with_retry_after(failure(ErrorKind::rate_limited, 429, "rate_limit"), 60000));
  ASSERT_TRUE(h.listener.has_error());
  EXPECT_EQ(h.listener.error().kind, ErrorKind::rate_limited);
  EXPECT_EQ(h.listener.error().code, "rate_limit");
  EXPECT_EQ(h.scheduler.elapsed_ms(), 0);
}

TEST_F(JobRetryTest, WaitsNeverPassTheDeadline) {
  for (auto& [name, provider] : h.config.providers) provider.policy.first_token_timeout_ms = 0;
  auto request = make_request("a", "m1", {t("b", "m2")});
  request.timeout_ms = 3000;
  h.start_main(request);
  h.scheduler.advance_to_ms(1000);
  // 2000 ms from t=1000 would end exactly at the deadline: fail over instead.
  h.launcher.fail(0, with_retry_after(failure(ErrorKind::overloaded, 529), 2000));
  ASSERT_EQ(h.launcher.count(), 2u);
  EXPECT_EQ(h.launcher.at(1).spec.target, t("b", "m2"));
  EXPECT_EQ(h.launcher.at(1).started_ms, 1000);
  h.scheduler.advance_to_ms(2950);
  h.launcher.fail(1, failure(ErrorKind::network));  // backoff 100 ms would pass the deadline
  ASSERT_TRUE(h.listener.has_error());
  EXPECT_EQ(h.listener.error().kind, ErrorKind::network);  // the real failure, not a timeout
  EXPECT_EQ(h.scheduler.elapsed_ms(), 2950);
  const auto& attempts = h.listener.error().attempts;
  ASSERT_EQ(attempts.size(), 2u);
  EXPECT_EQ(attempts[0].note, "retry in 2000 ms would pass the deadline");
  EXPECT_EQ(attempts[1].note, "retry in 100 ms would pass the deadline");
  EXPECT_EQ(h.scheduler.pending_timers(), 0u);
}

TEST_F(JobRetryTest, ShouldRetryFalseVetoesTheRetry) {
  h.start_main(make_request("a", "m1", {t("b", "m2")}));
  auto f = failure(ErrorKind::server_error, 500);
  f.should_retry_header = true;
  f.should_retry = false;
  h.launcher.fail(0, f);
  ASSERT_EQ(h.launcher.count(), 2u);
  EXPECT_EQ(h.launcher.at(1).spec.target, t("b", "m2"));
}

TEST_F(JobRetryTest, ShouldRetryTrueForcesARetryOfAnUnclassifiedFailure) {
  h.start_main(make_request("a", "m1"));
  auto f = failure(ErrorKind::internal, 0);
  f.should_retry_header = true;
  f.should_retry = true;
  h.launcher.fail(0, f);
  h.scheduler.advance_by(100ms);
  ASSERT_EQ(h.launcher.count(), 2u);
  EXPECT_EQ(h.launcher.at(1).spec.target, t("a", "m1"));
}

TEST_F(JobRetryTest, ContextLengthGoesToALargerContextTarget) {
  h.config.providers.at("a").context_window = 8'000;
  h.config.providers.at("b").context_window = 4'000;
  h.config.providers.at("c").context_window = 128'000;
  h.start_main(make_request("a", "m1", {t("b", "m2"), t("c", "m3")}));
  h.launcher.fail(0, failure(ErrorKind::context_length_exceeded, 400, "context_length_exceeded"));
  ASSERT_EQ(h.launcher.count(), 2u);
  EXPECT_EQ(h.launcher.at(1).spec.target, t("c", "m3"));
  h.launcher.fail(1, failure(ErrorKind::network));
  h.scheduler.advance_by(100ms);
  ASSERT_EQ(h.launcher.count(), 3u);
  EXPECT_EQ(h.launcher.at(2).spec.target, t("c", "m3"));  // network on c: retried
  h.launcher.complete(2, ok_output());
  ASSERT_TRUE(h.listener.result);
  EXPECT_EQ(h.listener.result->provider, "c");
  EXPECT_EQ(h.launcher.count_for("a", "m1"), 1u);
}

TEST_F(JobRetryTest, ContentFilterEndsWithTheProvidersReason) {
  h.start_main(make_request("a", "m1", {t("b", "m2")}));
  h.launcher.fail(0, failure(ErrorKind::content_filtered, 400, "content_policy_violation",
                             "Your request was rejected by the safety system"));
  h.scheduler.advance_by(5s);
  EXPECT_EQ(h.launcher.count(), 1u);
  ASSERT_TRUE(h.listener.has_error());
  const auto& error = h.listener.error();
  EXPECT_EQ(error.kind, ErrorKind::content_filtered);
  EXPECT_EQ(error.status, 400);
  EXPECT_EQ(error.code, "content_policy_violation");
  EXPECT_EQ(error.message, "Your request was rejected by the safety system");
  EXPECT_EQ(error.provider, "a");
  ASSERT_EQ(error.attempts.size(), 1u);
}

TEST_F(JobRetryTest, ContentFilterFailsOverWhenConfigured) {
  h.config.providers.at("a").policy.failover_on_content_filter = true;
  h.start_main(make_request("a", "m1", {t("b", "m2")}));
  h.launcher.fail(0, failure(ErrorKind::content_filtered, 400));
  ASSERT_EQ(h.launcher.count(), 2u);
  EXPECT_EQ(h.launcher.at(1).spec.target, t("b", "m2"));
  h.launcher.complete(1, ok_output());
  EXPECT_TRUE(h.listener.result);
}

TEST_F(JobRetryTest, UnconfiguredProviderIsRecordedWithoutACall) {
  h.start_main(make_request("zz", "m0", {t("a", "m1")}));
  ASSERT_EQ(h.launcher.count(), 1u);
  EXPECT_EQ(h.launcher.at(0).spec.target, t("a", "m1"));
  h.launcher.complete(0, ok_output());
  ASSERT_TRUE(h.listener.result);
  ASSERT_EQ(h.listener.result->attempts.size(), 2u);
  EXPECT_EQ(h.listener.result->attempts[0].provider, "zz");
  EXPECT_EQ(h.listener.result->attempts[0].outcome, "unsupported_provider");
  EXPECT_EQ(h.listener.result->attempts[0].duration_ms, 0u);
}

TEST_F(JobRetryTest, OnlyUnconfiguredProvidersFailWithUnsupportedProvider) {
  h.start_main(make_request("zz", "m0", {t("yy", "m1")}));
  EXPECT_EQ(h.launcher.count(), 0u);
  ASSERT_TRUE(h.listener.has_error());
  EXPECT_EQ(h.listener.error().kind, ErrorKind::unsupported_provider);
  EXPECT_EQ(h.listener.error().attempts.size(), 2u);
}

TEST_F(JobRetryTest, ConfiguredDefaultChainIsUsedWhenTheRequestHasNone) {
  h.config.enable_fallback = true;
  h.config.fallback_providers = {"b"};
  h.config.providers.at("b").fallback_model = "b-default";
  auto request = make_request("a", "m1");
  request.fallbacks.reset();
  h.start_main(request);
  h.launcher.fail(0, failure(ErrorKind::authentication, 401));
  ASSERT_EQ(h.launcher.count(), 2u);
  EXPECT_EQ(h.launcher.at(1).spec.target, t("b", "b-default"));
}

TEST_F(JobRetryTest, EveryAttemptGetsTheOriginalRequest) {
  auto request = make_request("a", "m1", {t("b", "m2")});
  request.stream = true;
  request.temperature = 0.3;
  h.start_main(request);
  h.launcher.fail(0, failure(ErrorKind::network));
  h.scheduler.advance_by(100ms);
  h.launcher.fail(1, failure(ErrorKind::authentication, 401));
  ASSERT_EQ(h.launcher.count(), 3u);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(h.launcher.at(i).request, request);
}

TEST_F(JobRetryTest, MissingModelIsAnInvalidRequest) {
  h.start_main(make_request("a", ""));
  EXPECT_EQ(h.launcher.count(), 0u);
  ASSERT_TRUE(h.listener.has_error());
  EXPECT_EQ(h.listener.error().kind, ErrorKind::invalid_request);
}

}  // namespace
}  // namespace dispatch::worker::test
