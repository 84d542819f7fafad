// A job's answer carries its cost from the price table, and every attempt carries the job's
// trace context to the provider with this worker's span as the parent.

#include <gtest/gtest.h>

#include "dispatch/common/trace.hpp"
#include "policy_test_support.hpp"

namespace dispatch::worker::test {
namespace {

constexpr const char* kTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

class JobCostTraceTest : public ::testing::Test {
 protected:
  JobCostTraceTest() {
    h.config.providers.at("a").type = "openai";
    h.config.providers.at("b").type = "anthropic";
    h.config.prices.set("openai", "gpt-4o-mini", Price{0.15, 0.60, 0.075});
    h.config.prices.set("anthropic", "claude-haiku-4-5", Price{1.00, 5.00, 0.10});
  }
  JobHarness h{make_config({"a", "b"}, without_breaker())};
};

TEST_F(JobCostTraceTest, TheAnswerCarriesItsCostWithCachedTokens) {
  h.start_main(make_request("a", "gpt-4o-mini"));
  AttemptOutput output = ok_output();
  output.usage = {1200, 80, 1280, 1024};
  h.launcher.complete(0, output);
  ASSERT_TRUE(h.listener.result.has_value());
  EXPECT_EQ(h.listener.result->usage, (protocol::Usage{1200, 80, 1280, 1024}));
  ASSERT_TRUE(h.listener.result->cost_usd.has_value());
  // (1200 - 1024) x 0.15 + 1024 x 0.075 + 80 x 0.60 = 151.2 per million.
  EXPECT_NEAR(*h.listener.result->cost_usd, 0.0001512, 1e-15);
}

TEST_F(JobCostTraceTest, ASnapshotTheProviderReportsIsPricedByItsFamily) {
  // An alias the table does not know, answered by a dated snapshot of a model it knows.
  h.start_main(make_request("b", "my-haiku"));
  AttemptOutput output = ok_output();
  output.model = "claude-haiku-4-5-20251001";
  output.usage = {1000, 100, 1100, 0};
  h.launcher.complete(0, output);
  ASSERT_TRUE(h.listener.result.has_value());
  ASSERT_TRUE(h.listener.result->cost_usd.has_value());
  EXPECT_NEAR(*h.listener.result->cost_usd, (1000 * 1.00 + 100 * 5.00) / 1e6, 1e-15);
}

TEST_F(JobCostTraceTest, NoPriceNoCost) {
  h.start_main(make_request("a", "gpt-unknown"));
  h.launcher.complete(0, ok_output());
  ASSERT_TRUE(h.listener.result.has_value());
  EXPECT_FALSE(h.listener.result->cost_usd.has_value());
}

TEST_F(JobCostTraceTest, AFallbackIsPricedAsTheTargetThatAnswered) {
  h.start_main(make_request("a", "gpt-4o-mini", {{"b", "claude-haiku-4-5"}}));
  h.launcher.fail(0, failure(ErrorKind::authentication, 401));
  ASSERT_EQ(h.launcher.count(), 2u);
  AttemptOutput output = ok_output();
  output.usage = {10, 10, 20, 0};
  h.launcher.complete(1, output);
  ASSERT_TRUE(h.listener.result.has_value());
  EXPECT_EQ(h.listener.result->provider, "b");
  EXPECT_NEAR(*h.listener.result->cost_usd, (10 * 1.00 + 10 * 5.00) / 1e6, 1e-15);
}

TEST_F(JobCostTraceTest, EveryAttemptSendsTheTraceWithTheWorkersSpan) {
  h.traceparent = kTraceparent;
  h.start_main(make_request("a", "gpt-4o-mini", {{"b", "claude-haiku-4-5"}}));
  h.launcher.fail(0, failure(ErrorKind::authentication, 401));
  ASSERT_EQ(h.launcher.count(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    auto sent = parse_traceparent(h.launcher.at(i).spec.traceparent);
    ASSERT_TRUE(sent) << h.launcher.at(i).spec.traceparent;
    EXPECT_EQ(sent->trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    EXPECT_NE(sent->parent_id, "00f067aa0ba902b7");  // the worker's span, not the client's
    EXPECT_EQ(sent->flags, "01");
  }
  // One span for the job at this worker: both attempts name it as their parent.
  EXPECT_EQ(h.launcher.at(0).spec.traceparent, h.launcher.at(1).spec.traceparent);
}

TEST_F(JobCostTraceTest, AJobWithoutOrWithABrokenTraceGetsAFreshOne) {
  for (const char* given : {"", "00-not-a-trace-01"}) {
    JobHarness harness{make_config({"a"}, without_breaker())};
    harness.traceparent = given;
    harness.start_main(make_request("a", "m"));
    ASSERT_EQ(harness.launcher.count(), 1u);
    auto sent = parse_traceparent(harness.launcher.at(0).spec.traceparent);
    ASSERT_TRUE(sent) << "'" << harness.launcher.at(0).spec.traceparent << "' for '" << given
                      << "'";
  }
}

}  // namespace
}  // namespace dispatch::worker::test
