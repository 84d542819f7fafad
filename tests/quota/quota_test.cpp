#include "dispatch/broker/quota.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <vector>

namespace dispatch::broker {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

QuotaConfig config_of(const char* yaml) {
  auto parsed = parse_quota_config(yaml, "broker.yaml");
  EXPECT_TRUE(parsed) << (parsed ? "" : parsed.error());
  return parsed ? *parsed : QuotaConfig{};
}

// Dispatches as fast as the book allows for `horizon`, stepping the clock to each retry time;
// returns the dispatch times.
std::vector<Clock::time_point> run_paced(QuotaBook& book, ManualClock& clock, std::size_t jobs,
                                         uint64_t tokens, Clock::duration horizon) {
  std::vector<Clock::time_point> sent;
  const auto end = clock.now() + horizon;
  while (sent.size() < jobs && clock.now() < end) {
    auto admission = book.check("openai", "gpt-4o", tokens);
    if (admission.allowed) {
      auto ticket = book.take("openai", "gpt-4o", tokens);
      book.settle(ticket, tokens);
      sent.push_back(clock.now());
      continue;
    }
    EXPECT_NE(admission.retry_at, Clock::time_point::max()) << admission.blocked_by;
    EXPECT_GT(admission.retry_at, clock.now());
    clock.advance(admission.retry_at - clock.now());
  }
  return sent;
}

std::size_t max_in_window(const std::vector<Clock::time_point>& times, Clock::duration window) {
  std::size_t best = 0;
  std::size_t first = 0;
  for (std::size_t i = 0; i < times.size(); ++i) {
    while (times[i] - times[first] >= window) ++first;
    best = std::max(best, i - first + 1);
  }
  return best;
}

TEST(QuotaConfig, ParsesLimitsAndNamesEveryMistake) {
  const QuotaConfig config = config_of(
      "default_answer_tokens: 256\n"
      "limits:\n"
      "  openai: {rpm: 600, tpm: 90000, concurrency: 50}\n"
      "  openai/gpt-4o: {rpm: 100, burst: 2}\n");
  EXPECT_EQ(config.default_answer_tokens, 256u);
  ASSERT_EQ(config.limits.size(), 2u);
  EXPECT_EQ(*config.limits.at("openai").rpm, 600);
  EXPECT_EQ(*config.limits.at("openai").concurrency, 50u);
  EXPECT_FALSE(config.limits.at("openai").burst);
  EXPECT_EQ(*config.limits.at("openai/gpt-4o").burst, 2);

  const std::pair<const char*, const char*> bad[] = {
      {"limits: {openai: {rpm: -1}}", "limits.openai.rpm: must be a positive number"},
      {"limits: {openai: {rpm: fast}}", "limits.openai.rpm: must be a number"},
      {"limits: {openai: {concurrency: 2.5}}", "limits.openai.concurrency: must be a whole number"},
      {"limits: {openai: {rpn: 5}}", "limits.openai.rpn: unknown key"},
      {"limits: {openai: {burst: 5}}", "limits.openai.burst: needs rpm"},
      {"limits: [openai]", "limits: must be a map"},
      {"limits: {openai: 5}", "limits.openai: must be a map"},
      {"limits: {openai/: {rpm: 1}}", "a key is `provider` or `provider/model`"},
      {"limits: {openai: {rpm: 1}", "not valid YAML"},
  };
  for (const auto& [yaml, expected] : bad) {
    auto parsed = parse_quota_config(yaml, "broker.yaml");
    ASSERT_FALSE(parsed) << yaml;
    EXPECT_NE(parsed.error().find(expected), std::string::npos) << parsed.error();
    EXPECT_EQ(parsed.error().rfind("broker.yaml: ", 0), 0u) << parsed.error();
  }
  EXPECT_TRUE(parse_quota_config("", "broker.yaml"));
}

TEST(QuotaBook, PacesRequestsWithinASecondAndAMinuteFromAColdStart) {
  ManualClock clock;
  QuotaBook book(clock);
  book.configure(config_of("limits: {openai: {rpm: 600}}"));  // burst 5
  const auto sent = run_paced(book, clock, 1200, 1, seconds(150));
  ASSERT_EQ(sent.size(), 1200u);
  EXPECT_EQ(std::count(sent.begin(), sent.end(), sent.front()), 5);  // the burst
  // No sliding second over 1.5 x rpm/60, no sliding minute over rpm.
  EXPECT_LE(max_in_window(sent, seconds(1)), 15u);
  EXPECT_LE(max_in_window(sent, seconds(60)), 600u);
  // And the limit is used: 1200 jobs take about two minutes, not more.
  EXPECT_LE(sent.back() - sent.front(), seconds(121));
}

TEST(QuotaBook, TokensReservedFromTheEstimateAndCorrectedByUsage) {
  ManualClock clock;
  QuotaBook book(clock);
  book.configure(config_of("limits: {openai: {tpm: 60000}}"));  // 1000/s refill, burst 500
  EXPECT_EQ(estimate_tokens(4000, 1000, 256), 2000u);
  EXPECT_EQ(estimate_tokens(4001, std::nullopt, 256), 1257u);

  ASSERT_TRUE(book.check("openai", "", 2000).allowed);  // full bucket: may go into debt
  auto ticket = book.take("openai", "", 2000);
  auto blocked = book.check("openai", "", 100);
  ASSERT_FALSE(blocked.allowed);
  EXPECT_EQ(blocked.blocked_by, "openai tpm");
  // It used 300 tokens, not 2000: 1700 come back at once.
  book.settle(ticket, 300);
  EXPECT_TRUE(book.check("openai", "", 100).allowed);
  // An answer that used more than reserved is charged the difference.
  auto small = book.take("openai", "", 100);
  book.settle(small, 5100);
  EXPECT_FALSE(book.check("openai", "", 100).allowed);
  const auto status = book.status();
  ASSERT_EQ(status.size(), 1u);
  EXPECT_DOUBLE_EQ(status[0].tokens_last_minute, 5400.0);
}

TEST(QuotaBook, ModelKeysAndProviderKeysBothApply) {
  ManualClock clock;
  QuotaBook book(clock);
  book.configure(config_of("limits: {openai: {concurrency: 3}, openai/gpt-4o: {concurrency: 1}}"));
  auto a = book.take("openai", "gpt-4o", 1);
  auto blocked = book.check("openai", "gpt-4o", 1);
  ASSERT_FALSE(blocked.allowed);
  EXPECT_EQ(blocked.blocked_by, "openai/gpt-4o concurrency");
  EXPECT_EQ(blocked.retry_at, Clock::time_point::max());  // only an end frees it
  auto b = book.take("openai", "gpt-4o-mini", 1);
  auto c = book.take("openai", "o3", 1);
  EXPECT_EQ(book.check("openai", "o4", 1).blocked_by, "openai concurrency");
  book.settle(a, std::nullopt);
  EXPECT_TRUE(book.check("openai", "gpt-4o", 1).allowed);
  book.settle(a, std::nullopt);  // settling twice releases once
  EXPECT_EQ(book.status()[0].running, 2u);
  book.settle(b, 1);
  book.settle(c, 1);
  EXPECT_TRUE(book.check("anthropic", "claude", 1).allowed);  // no limit configured
}

TEST(QuotaBook, ProviderFeedbackPausesAndTightens) {
  ManualClock clock;
  QuotaBook book(clock);
  book.pause("openai/gpt-4o", seconds(2), "429 retry-after 2 s");
  auto paused = book.check("openai", "gpt-4o", 1);
  ASSERT_FALSE(paused.allowed);
  EXPECT_EQ(paused.retry_at, clock.now() + seconds(2));
  EXPECT_TRUE(book.check("openai", "gpt-4o-mini", 1).allowed);
  book.pause("openai/gpt-4o", seconds(1), "an earlier report");  // the later end stands
  clock.advance(milliseconds(1500));
  EXPECT_FALSE(book.check("openai", "gpt-4o", 1).allowed);
  ASSERT_EQ(book.status().size(), 1u);
  EXPECT_EQ(*book.status()[0].paused_ms, 500u);
  clock.advance(milliseconds(500));
  EXPECT_TRUE(book.check("openai", "gpt-4o", 1).allowed);

  book.observe_remaining_requests("openai", 2, seconds(6));
  book.take("openai", "x", 1);
  book.take("openai", "x", 1);
  auto exhausted = book.check("openai", "x", 1);
  ASSERT_FALSE(exhausted.allowed);
  EXPECT_EQ(exhausted.retry_at, clock.now() + seconds(6));
  clock.advance(seconds(6));
  EXPECT_TRUE(book.check("openai", "x", 1).allowed);
}

TEST(QuotaBook, ReloadKeepsRunningCountsOfKeysThatStay) {
  ManualClock clock;
  QuotaBook book(clock);
  book.configure(config_of("limits: {openai: {concurrency: 2, rpm: 60}}"));
  auto t1 = book.take("openai", "", 1);
  auto t2 = book.take("openai", "", 1);
  book.configure(config_of("limits: {openai: {concurrency: 3}}"));
  EXPECT_EQ(book.status()[0].running, 2u);
  EXPECT_TRUE(book.check("openai", "", 1).allowed);  // rpm gone, one more slot
  book.configure(config_of("limits: {}"));
  EXPECT_TRUE(book.status().empty());
  book.settle(t1, 1);  // a ticket of a removed key is harmless
  book.settle(t2, 1);
}

}  // namespace
}  // namespace dispatch::broker
