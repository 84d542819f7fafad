#include "dispatch/worker/policy/circuit_breaker.hpp"

#include <gtest/gtest.h>

#include "policy_test_support.hpp"

namespace dispatch::worker::test {
namespace {

using Admission = CircuitBreakers::Admission;

class BreakerTest : public ::testing::Test {
 protected:
  void fail(const std::string& model = "m", std::optional<uint64_t> retry_after = std::nullopt,
            bool probe = false) {
    breakers.record_failure("p", model, policy, retry_after, probe);
  }
  void succeed(const std::string& model = "m", bool probe = false) {
    breakers.record_success("p", model, policy, probe);
  }

  ManualClock clock;
  CircuitBreakers breakers{clock};
  PolicySettings policy = [] {
    auto p = fast_policy();        // 3 consecutive failures, cooldown 5000 ms
    p.breaker_failure_rate = 0.0;  // the rate rule has its own test
    return p;
  }();
};

TEST_F(BreakerTest, OpensAfterConsecutiveFailures) {
  EXPECT_EQ(breakers.state("p", "m"), BreakerState::closed);
  fail();
  fail();
  EXPECT_EQ(breakers.admit("p", "m"), Admission::allow);
  fail();
  EXPECT_EQ(breakers.state("p", "m"), BreakerState::open);
  EXPECT_EQ(breakers.admit("p", "m"), Admission::reject);
  EXPECT_FALSE(breakers.would_admit("p", "m"));
  EXPECT_EQ(breakers.status("p", "m").open_remaining_ms, 5000u);
}

TEST_F(BreakerTest, SuccessResetsTheConsecutiveCount) {
  fail();
  fail();
  succeed();
  fail();
  fail();
  EXPECT_EQ(breakers.state("p", "m"), BreakerState::closed);
  EXPECT_EQ(breakers.status("p", "m").consecutive_failures, 2u);
}

TEST_F(BreakerTest, KeyedByProviderAndModel) {
  fail("bad");
  fail("bad");
  fail("bad");
  EXPECT_EQ(breakers.state("p", "bad"), BreakerState::open);
  EXPECT_EQ(breakers.state("p", "good"), BreakerState::closed);
  EXPECT_EQ(breakers.admit("p", "good"), Admission::allow);
  EXPECT_EQ(breakers.admit("q", "bad"), Admission::allow);
  // The separator keeps look-alike keys apart.
  EXPECT_EQ(breakers.state("p/b", "ad"), BreakerState::closed);
}

TEST_F(BreakerTest, HalfOpenLetsExactlyOneProbeThrough) {
  for (int i = 0; i < 3; ++i) fail();
  clock.advance(4999ms);
  EXPECT_EQ(breakers.admit("p", "m"), Admission::reject);
  clock.advance(1ms);
  EXPECT_EQ(breakers.state("p", "m"), BreakerState::half_open);
  EXPECT_TRUE(breakers.would_admit("p", "m"));
  EXPECT_EQ(breakers.admit("p", "m"), Admission::probe);
  EXPECT_EQ(breakers.admit("p", "m"), Admission::reject);
  EXPECT_FALSE(breakers.would_admit("p", "m"));
  EXPECT_TRUE(breakers.status("p", "m").probe_in_flight);
}

TEST_F(BreakerTest, ProbeSuccessCloses) {
  for (int i = 0; i < 3; ++i) fail();
  clock.advance(5s);
  ASSERT_EQ(breakers.admit("p", "m"), Admission::probe);
  succeed("m", true);
  EXPECT_EQ(breakers.state("p", "m"), BreakerState::closed);
  EXPECT_EQ(breakers.admit("p", "m"), Admission::allow);
  // A clean slate: it takes three new failures to open again.
  fail();
  fail();
  EXPECT_EQ(breakers.state("p", "m"), BreakerState::closed);
}

TEST_F(BreakerTest, ProbeFailureReopensForAnotherCooldown) {
  for (int i = 0; i < 3; ++i) fail();
  clock.advance(5s);
  ASSERT_EQ(breakers.admit("p", "m"), Admission::probe);
  clock.advance(200ms);
  fail("m", std::nullopt, true);
  EXPECT_EQ(breakers.state("p", "m"), BreakerState::open);
  clock.advance(4999ms);
  EXPECT_EQ(breakers.admit("p", "m"), Admission::reject);
  clock.advance(1ms);
  EXPECT_EQ(breakers.admit("p", "m"), Admission::probe);
  EXPECT_EQ(breakers.status("p", "m").times_opened, 2u);
}

TEST_F(BreakerTest, ReleasedProbeFreesTheSlot) {
  for (int i = 0; i < 3; ++i) fail();
  clock.advance(5s);
  ASSERT_EQ(breakers.admit("p", "m"), Admission::probe);
  breakers.release_probe("p", "m");
  EXPECT_EQ(breakers.admit("p", "m"), Admission::probe);
}

TEST_F(BreakerTest, StragglersDoNotDecideWhileOpen) {
  for (int i = 0; i < 3; ++i) fail();
  succeed();  // an attempt that started before it opened
  EXPECT_EQ(breakers.state("p", "m"), BreakerState::open);
  clock.advance(5s);
  ASSERT_EQ(breakers.admit("p", "m"), Admission::probe);
  fail();  // not the probe
  EXPECT_EQ(breakers.state("p", "m"), BreakerState::half_open);
  succeed("m", true);
  EXPECT_EQ(breakers.state("p", "m"), BreakerState::closed);
}

TEST_F(BreakerTest, RetryAfterLengthensTheCooldownUpToTheCap) {
  fail("m");
  fail("m");
  fail("m", 8000);  // cap is 3000: cooldown stays 5000
  EXPECT_EQ(breakers.status("p", "m").open_remaining_ms, 5000u);

  policy.retry_after_cap_ms = 60'000;
  fail("x");
  fail("x");
  fail("x", 8000);
  EXPECT_EQ(breakers.status("p", "x").open_remaining_ms, 8000u);
  clock.advance(5s);
  EXPECT_EQ(breakers.admit("p", "x"), Admission::reject);
  clock.advance(3s);
  EXPECT_EQ(breakers.admit("p", "x"), Admission::probe);
}

TEST_F(BreakerTest, OpensOnFailureRateOverTheWindow) {
  policy.breaker_failures = 0;  // consecutive rule off
  policy.breaker_failure_rate = 0.5;
  policy.breaker_window = 10;  // at least 5 samples
  fail();
  succeed();
  fail();
  succeed();
  EXPECT_EQ(breakers.state("p", "m"), BreakerState::closed);  // 4 samples: too few
  fail();                                                     // 3 of 5
  EXPECT_EQ(breakers.state("p", "m"), BreakerState::open);
}

TEST_F(BreakerTest, RateBelowThresholdStaysClosedAndTheWindowSlides) {
  policy.breaker_failures = 0;
  policy.breaker_failure_rate = 0.5;
  policy.breaker_window = 4;  // at least 2 samples
  succeed();
  succeed();
  succeed();
  fail();  // 1 of 4
  EXPECT_EQ(breakers.state("p", "m"), BreakerState::closed);
  auto status = breakers.status("p", "m");
  EXPECT_EQ(status.window_samples, 4u);
  EXPECT_EQ(status.window_failures, 1u);
  fail();  // window now S S F F: 2 of 4
  EXPECT_EQ(breakers.state("p", "m"), BreakerState::open);
}

TEST_F(BreakerTest, SnapshotListsTroubledTargets) {
  fail("a");
  for (int i = 0; i < 3; ++i) fail("b");
  succeed("c");
  auto snapshot = breakers.snapshot();
  ASSERT_EQ(snapshot.size(), 2u);
  EXPECT_EQ(snapshot[0].model, "a");
  EXPECT_EQ(snapshot[0].state, BreakerState::closed);
  EXPECT_EQ(snapshot[0].consecutive_failures, 1u);
  EXPECT_EQ(snapshot[1].model, "b");
  EXPECT_EQ(snapshot[1].state, BreakerState::open);
  EXPECT_EQ(to_string(BreakerState::half_open), "half_open");
}

TEST_F(BreakerTest, EntriesAreBounded) {
  for (std::size_t i = 0; i < CircuitBreakers::kMaxEntries + 50; ++i) {
    breakers.record_success("p", "model-" + std::to_string(i), policy, false);
  }
  for (int i = 0; i < 3; ++i) fail("late");
  EXPECT_EQ(breakers.state("p", "late"), BreakerState::open);
}

}  // namespace
}  // namespace dispatch::worker::test
