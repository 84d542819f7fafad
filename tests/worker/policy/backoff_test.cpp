#include "dispatch/worker/policy/backoff.hpp"

#include <gtest/gtest.h>

#include "policy_test_support.hpp"

namespace dispatch::worker::test {
namespace {

TEST(Backoff, DoublesFromBaseUpToTheCapWithoutJitterAtZero) {
  ScriptedRandom random(0.0);  // factor 1.0
  const uint64_t expected[] = {500, 1000, 2000, 4000, 8000, 8000, 8000};
  for (uint32_t n = 0; n < 7; ++n) {
    EXPECT_EQ(backoff_delay_ms(n, 500, 8000, random), expected[n]) << "retry " << n;
  }
}

TEST(Backoff, JitterShortensByUpToAQuarter) {
  ScriptedRandom random;
  random.push(0.5);                                         // factor 0.875
  random.push(0.2);                                         // factor 0.95
  random.push(0.999999);                                    // factor just above 0.75
  EXPECT_EQ(backoff_delay_ms(0, 500, 8000, random), 438u);  // 437.5 rounded
  EXPECT_EQ(backoff_delay_ms(1, 500, 8000, random), 950u);
  EXPECT_EQ(backoff_delay_ms(2, 500, 8000, random), 1500u);  // 1500.0005 rounded
}

TEST(Backoff, SeededRandomStaysInsideTheDocumentedBounds) {
  DefaultRandom random(42);
  for (uint32_t n = 0; n < 12; ++n) {
    for (int i = 0; i < 200; ++i) {
      const uint64_t ceiling = std::min<uint64_t>(500ull << n, 8000);
      const uint64_t delay = backoff_delay_ms(n, 500, 8000, random);
      EXPECT_LE(delay, ceiling);
      EXPECT_GE(delay, ceiling * 3 / 4);
    }
  }
}

TEST(Backoff, HugeRetryIndexStaysAtTheCap) {
  ScriptedRandom random(0.0);
  EXPECT_EQ(backoff_delay_ms(4'000'000'000u, 500, 8000, random), 8000u);
}

TEST(Backoff, NeverZeroSoARetryAlwaysWaitsForTheLoop) {
  ScriptedRandom random(0.0);
  EXPECT_EQ(backoff_delay_ms(0, 0, 0, random), 1u);
}

}  // namespace
}  // namespace dispatch::worker::test
