#include "dispatch/broker/heap_trim.hpp"

#include <utility>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace dispatch::broker {

void release_free_heap() noexcept {
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
}

HeapTrimmer::HeapTrimmer(Clock::duration period, const Clock& clock, TrimFn trim)
    : period_(period), clock_(clock), trim_(std::move(trim)), next_due_(clock.now() + period) {}

bool HeapTrimmer::maybe_trim() {
  const Clock::time_point now = clock_.now();
  if (now < next_due_) return false;
  trim_();
  // From now, not from the missed due time: a stalled loop must not trim several times in a row.
  next_due_ = now + period_;
  return true;
}

}  // namespace dispatch::broker
