#include "dispatch/common/token_bucket.hpp"

#include <gtest/gtest.h>

namespace dispatch {
namespace {

using std::chrono::milliseconds;

TEST(TokenBucket, StartsFullAndRefillsAtItsRate) {
  ManualClock clock;
  TokenBucket bucket(10.0, 5.0, clock.now());  // 10 per second, 5 at once
  EXPECT_DOUBLE_EQ(bucket.balance(clock.now()), 5.0);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(bucket.can_take(1, clock.now()));
    bucket.take(1, clock.now());
  }
  EXPECT_FALSE(bucket.can_take(1, clock.now()));
  EXPECT_EQ(bucket.wait_for(1, clock.now()), milliseconds(100));
  clock.advance(milliseconds(100));
  EXPECT_TRUE(bucket.can_take(1, clock.now()));
  clock.advance(std::chrono::seconds(10));
  EXPECT_DOUBLE_EQ(bucket.balance(clock.now()), 5.0);  // never above the capacity
}

TEST(TokenBucket, ACostAboveTheCapacityGoesWhenFullAndLeavesADebt) {
  ManualClock clock;
  TokenBucket bucket(100.0, 50.0, clock.now());
  ASSERT_TRUE(bucket.can_take(400, clock.now()));  // full: may go
  bucket.take(400, clock.now());
  EXPECT_DOUBLE_EQ(bucket.balance(clock.now()), -350.0);
  EXPECT_FALSE(bucket.can_take(1, clock.now()));
  // Back to 1 token: 351 tokens at 100/s.
  EXPECT_EQ(bucket.wait_for(1, clock.now()), milliseconds(3510));
  // A second large cost waits until the bucket is full again: 400 tokens at 100/s.
  EXPECT_EQ(bucket.wait_for(400, clock.now()), milliseconds(4000));
}

TEST(TokenBucket, GiveBackAndReconfigure) {
  ManualClock clock;
  TokenBucket bucket(1.0, 10.0, clock.now());
  bucket.take(8, clock.now());
  bucket.give_back(5, clock.now());
  EXPECT_DOUBLE_EQ(bucket.balance(clock.now()), 7.0);
  bucket.give_back(100, clock.now());
  EXPECT_DOUBLE_EQ(bucket.balance(clock.now()), 10.0);
  bucket.reconfigure(2.0, 4.0, clock.now());
  EXPECT_DOUBLE_EQ(bucket.balance(clock.now()), 4.0);
  EXPECT_DOUBLE_EQ(bucket.rate(), 2.0);
  TokenBucket never(0.0, 1.0, clock.now());
  never.take(1, clock.now());
  EXPECT_EQ(never.wait_for(1, clock.now()), Clock::duration::max());
}

}  // namespace
}  // namespace dispatch
