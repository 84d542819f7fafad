// QuotaLimiter on a ManualClock: sliding minute and second windows for requests and tokens,
// per-key isolation, reconciliation, Retry-After and the x-ratelimit-* header values.

#include "dispatch/fake_provider/quota.hpp"

#include <gtest/gtest.h>

#include <map>

namespace dispatch::fake_provider::test {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

std::map<std::string, std::string> header_map(const QuotaDecision& d, bool anthropic = false,
                                              int64_t unix_ms = 1'700'000'000'000) {
  std::map<std::string, std::string> out;
  for (auto& [name, value] : quota_headers(d, anthropic, unix_ms)) out[name] = value;
  return out;
}

TEST(Quota, PerSecondCeilingIsTwiceTheAverageRateAtLeastOne) {
  EXPECT_EQ(QuotaLimiter::per_second(600), 20);
  EXPECT_EQ(QuotaLimiter::per_second(1200), 40);
  EXPECT_EQ(QuotaLimiter::per_second(60), 2);
  EXPECT_EQ(QuotaLimiter::per_second(45), 1);
  EXPECT_EQ(QuotaLimiter::per_second(1), 1);
}

TEST(Quota, DisabledAdmitsEverythingWithoutHeaders) {
  ManualClock clock;
  QuotaLimiter quota({}, clock);
  EXPECT_FALSE(quota.enabled());
  for (int i = 0; i < 1000; ++i) EXPECT_TRUE(quota.admit("k", 1'000'000).admitted);
  EXPECT_TRUE(quota_headers(quota.admit("k", 1), false, 0).empty());
}

TEST(Quota, RequestsPerSecondBindBeforeTheMinute) {
  ManualClock clock;
  QuotaLimiter quota({.rpm = 600}, clock);  // 20 in any second
  for (int i = 0; i < 20; ++i) {
    const QuotaDecision d = quota.admit("k", 0);
    ASSERT_TRUE(d.admitted) << i;
    EXPECT_EQ(d.requests->remaining, 600 - (i + 1));
  }
  const QuotaDecision refused = quota.admit("k", 0);
  EXPECT_FALSE(refused.admitted);
  EXPECT_TRUE(refused.requests_exceeded);
  EXPECT_FALSE(refused.tokens_exceeded);
  EXPECT_EQ(refused.retry_after, seconds(1));  // all 20 were charged at the same instant
  EXPECT_EQ(refused.requests->remaining, 580) << "a refusal charges nothing";

  clock.advance(milliseconds(999));
  EXPECT_FALSE(quota.admit("k", 0).admitted);
  clock.advance(milliseconds(1));  // the first 20 leave the second window exactly now
  EXPECT_TRUE(quota.admit("k", 0).admitted);
}

TEST(Quota, RequestsSlideOverTheMinute) {
  ManualClock clock;
  QuotaLimiter quota({.rpm = 3}, clock);      // per second: 1
  ASSERT_TRUE(quota.admit("k", 0).admitted);  // t = 0
  clock.advance(seconds(10));
  ASSERT_TRUE(quota.admit("k", 0).admitted);  // t = 10
  clock.advance(seconds(10));
  ASSERT_TRUE(quota.admit("k", 0).admitted);  // t = 20
  clock.advance(seconds(5));
  const QuotaDecision refused = quota.admit("k", 0);  // t = 25: the one at t = 0 leaves at 60
  ASSERT_FALSE(refused.admitted);
  EXPECT_EQ(refused.retry_after, seconds(35));
  EXPECT_EQ(refused.requests->remaining, 0);
  EXPECT_EQ(refused.requests->reset, seconds(55)) << "the window is empty 60 s after t = 20";
  const auto headers = header_map(refused);
  EXPECT_EQ(headers.at("x-ratelimit-limit-requests"), "3");
  EXPECT_EQ(headers.at("x-ratelimit-remaining-requests"), "0");
  EXPECT_EQ(headers.at("x-ratelimit-reset-requests"), "55s");
  EXPECT_EQ(headers.at("retry-after"), "35");
  EXPECT_EQ(headers.at("retry-after-ms"), "35000");
  EXPECT_EQ(headers.count("x-ratelimit-limit-tokens"), 0u) << "tokens are not limited";

  clock.advance(seconds(35));  // t = 60
  const QuotaDecision again = quota.admit("k", 0);
  ASSERT_TRUE(again.admitted);
  EXPECT_EQ(again.requests->remaining, 0);
  EXPECT_EQ(again.requests->reset, seconds(60));
  EXPECT_EQ(header_map(again).count("retry-after"), 0u) << "only refusals carry Retry-After";
}

TEST(Quota, KeysAreIsolated) {
  ManualClock clock;
  QuotaLimiter quota({.rpm = 1}, clock);
  EXPECT_TRUE(quota.admit("alice", 0).admitted);
  EXPECT_FALSE(quota.admit("alice", 0).admitted);
  EXPECT_TRUE(quota.admit("bob", 0).admitted);
  EXPECT_TRUE(quota.admit("", 0).admitted) << "no key is a key of its own";
  EXPECT_FALSE(quota.admit("bob", 0).admitted);
}

TEST(Quota, TokensPerMinuteAndPerSecond) {
  ManualClock clock;
  QuotaLimiter quota({.tpm = 600}, clock);  // 20 tokens in any second
  QuotaDecision d = quota.admit("k", 15);
  ASSERT_TRUE(d.admitted);
  EXPECT_EQ(d.tokens->remaining, 585);
  EXPECT_FALSE(d.requests.has_value()) << "requests are not limited";
  d = quota.admit("k", 10);  // 25 > 20 in this second
  EXPECT_FALSE(d.admitted);
  EXPECT_TRUE(d.tokens_exceeded);
  EXPECT_EQ(d.retry_after, seconds(1));
  clock.advance(milliseconds(400));
  EXPECT_TRUE(quota.admit("k", 5).admitted) << "20 fits";
  clock.advance(milliseconds(600));  // the 15 leaves the second window
  d = quota.admit("k", 16);          // 5 + 16 = 21 > 20: waits for the 5 (charged at 400 ms)
  EXPECT_FALSE(d.admitted);
  EXPECT_EQ(d.retry_after, milliseconds(400));
  EXPECT_EQ(header_map(d).at("retry-after"), "1") << "whole seconds, rounded up";
  EXPECT_EQ(header_map(d).at("retry-after-ms"), "400");
}

TEST(Quota, ALargeChargeGoesIntoAnEmptySecondButNeverBeyondTheMinute) {
  ManualClock clock;
  QuotaLimiter quota({.tpm = 600}, clock);
  EXPECT_TRUE(quota.admit("k", 300).admitted) << "larger than 20/s, but the second is empty";
  const QuotaDecision busy = quota.admit("k", 250);
  EXPECT_FALSE(busy.admitted);
  EXPECT_EQ(busy.retry_after, seconds(1));
  clock.advance(seconds(1));
  EXPECT_TRUE(quota.admit("k", 250).admitted);
  clock.advance(seconds(1));
  const QuotaDecision over = quota.admit("k", 100);  // 550 + 100 > 600 in the minute
  EXPECT_FALSE(over.admitted);
  EXPECT_EQ(over.tokens->remaining, 50);
  EXPECT_EQ(over.retry_after, seconds(58)) << "the 300 charged at t = 0 must leave";

  const QuotaDecision never = quota.admit("other", 601);
  EXPECT_FALSE(never.admitted);
  EXPECT_EQ(never.retry_after, seconds(60)) << "more than a minute's quota: never admitted";
}

TEST(Quota, ReconcileReplacesTheEstimate) {
  ManualClock clock;
  QuotaLimiter quota({.tpm = 6000}, clock);  // 200 per second
  const QuotaDecision d = quota.admit("k", 150);
  ASSERT_TRUE(d.admitted);
  EXPECT_FALSE(quota.admit("k", 100).admitted) << "150 + 100 > 200 in this second";
  quota.reconcile("k", d.ticket, 40);  // e.g. the client went away after a few chunks
  const QuotaDecision after = quota.admit("k", 100);
  ASSERT_TRUE(after.admitted) << "40 + 100 fits";
  EXPECT_EQ(after.tokens->remaining, 6000 - 140);
  // Reconciling a charge that left both windows, or an unknown key, changes nothing.
  clock.advance(seconds(61));
  quota.reconcile("k", d.ticket, 5000);
  quota.reconcile("nobody", 1, 5000);
  EXPECT_EQ(quota.admit("k", 1).tokens->remaining, 5999);
}

TEST(Quota, BothLimitsReportBothHeaderSets) {
  ManualClock clock;
  QuotaLimiter quota({.rpm = 60, .tpm = 1000}, clock);
  const QuotaDecision d = quota.admit("k", 30);
  ASSERT_TRUE(d.admitted);
  const auto headers = header_map(d);
  EXPECT_EQ(headers.at("x-ratelimit-limit-requests"), "60");
  EXPECT_EQ(headers.at("x-ratelimit-remaining-requests"), "59");
  EXPECT_EQ(headers.at("x-ratelimit-reset-requests"), "1m0s");
  EXPECT_EQ(headers.at("x-ratelimit-limit-tokens"), "1000");
  EXPECT_EQ(headers.at("x-ratelimit-remaining-tokens"), "970");
  EXPECT_EQ(headers.at("x-ratelimit-reset-tokens"), "1m0s");
  // A refusal by both limits says both.
  clock.advance(milliseconds(10));
  ASSERT_TRUE(quota.admit("k", 1).admitted);  // 2 requests: the per-second ceiling
  const QuotaDecision refused = quota.admit("k", 2000);
  EXPECT_TRUE(refused.requests_exceeded);
  EXPECT_TRUE(refused.tokens_exceeded);
}

TEST(Quota, AnthropicAlsoGetsItsOwnHeaders) {
  ManualClock clock;
  QuotaLimiter quota({.rpm = 10}, clock);
  const QuotaDecision d = quota.admit("k", 0);
  const auto headers = header_map(d, true, 1'700'000'000'000);  // 2023-11-14T22:13:20Z
  EXPECT_EQ(headers.at("x-ratelimit-remaining-requests"), "9");
  EXPECT_EQ(headers.at("anthropic-ratelimit-requests-limit"), "10");
  EXPECT_EQ(headers.at("anthropic-ratelimit-requests-remaining"), "9");
  EXPECT_EQ(headers.at("anthropic-ratelimit-requests-reset"), "2023-11-14T22:14:20Z");
  EXPECT_EQ(headers.count("anthropic-ratelimit-tokens-limit"), 0u);
}

TEST(Quota, IdleKeysAreForgotten) {
  ManualClock clock;
  QuotaLimiter quota({.rpm = 10}, clock);
  for (int i = 0; i < 100; ++i) quota.admit("key-" + std::to_string(i), 0);
  EXPECT_EQ(quota.tracked_keys(), 100u);
  clock.advance(seconds(60));
  EXPECT_EQ(quota.tracked_keys(), 0u);
  quota.admit("k", 0);
  quota.clear();
  EXPECT_EQ(quota.tracked_keys(), 0u);
  EXPECT_EQ(quota.admit("k", 0).requests->remaining, 9);
}

TEST(Quota, GoDurations) {
  EXPECT_EQ(go_duration(milliseconds(0)), "0s");
  EXPECT_EQ(go_duration(milliseconds(-5)), "0s");
  EXPECT_EQ(go_duration(milliseconds(6)), "6ms");
  EXPECT_EQ(go_duration(milliseconds(999)), "999ms");
  EXPECT_EQ(go_duration(milliseconds(1000)), "1s");
  EXPECT_EQ(go_duration(milliseconds(1500)), "1.5s");
  EXPECT_EQ(go_duration(milliseconds(17'123)), "17.123s");
  EXPECT_EQ(go_duration(milliseconds(17'050)), "17.05s");
  EXPECT_EQ(go_duration(seconds(360)), "6m0s");
  EXPECT_EQ(go_duration(milliseconds(179'560)), "2m59.56s");
  EXPECT_EQ(go_duration(seconds(3600)), "1h0m0s");
}

}  // namespace
}  // namespace dispatch::fake_provider::test
