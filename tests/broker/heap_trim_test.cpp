// HeapTrimmer: the broker gives free heap pages back at most once a period (see heap_trim.hpp).

#include "dispatch/broker/heap_trim.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <memory>

namespace dispatch::broker {
namespace {

using std::chrono::seconds;

TEST(HeapTrimmerTest, TrimsOncePerPeriodAndNeverBeforeTheFirstIsDue) {
  ManualClock clock;
  int trims = 0;
  HeapTrimmer trimmer(seconds(10), clock, [&] { ++trims; });

  EXPECT_FALSE(trimmer.maybe_trim());
  clock.advance(seconds(9));
  EXPECT_FALSE(trimmer.maybe_trim());
  EXPECT_EQ(trims, 0);

  clock.advance(seconds(1));
  EXPECT_TRUE(trimmer.maybe_trim());
  EXPECT_FALSE(trimmer.maybe_trim());  // the same instant: not again
  EXPECT_EQ(trims, 1);
  EXPECT_EQ(trimmer.next_due(), clock.now() + seconds(10));
}

TEST(HeapTrimmerTest, AStalledLoopTrimsOnceNotOncePerMissedPeriod) {
  ManualClock clock;
  int trims = 0;
  HeapTrimmer trimmer(seconds(10), clock, [&] { ++trims; });

  clock.advance(seconds(95));  // nine periods missed
  EXPECT_TRUE(trimmer.maybe_trim());
  EXPECT_FALSE(trimmer.maybe_trim());
  EXPECT_EQ(trims, 1);
  EXPECT_EQ(trimmer.next_due(), clock.now() + seconds(10));
}

TEST(HeapTrimmerTest, ReleasingTheFreeHeapIsSafeToCallAtAnyTime) {
  // The real trim: nothing to observe portably but that it returns and the heap still works.
  release_free_heap();
  auto kept = std::make_unique<int>(7);
  release_free_heap();
  EXPECT_EQ(*kept, 7);
}

}  // namespace
}  // namespace dispatch::broker
