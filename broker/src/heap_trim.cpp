#include "dispatch/broker/heap_trim.hpp"

#include <cstddef>
#include <utility>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

// jemalloc's control interface, declared weak: it resolves when the process runs on jemalloc
// (dispatch-broker links it, cmake/Allocator.cmake; or LD_PRELOAD) and is null otherwise (the
// unit tests, the sanitizer build), so one library serves both without a compile-time switch.
extern "C" int mallctl(const char* name, void* oldp, std::size_t* oldlenp, void* newp,
                       std::size_t newlen) __attribute__((weak));

namespace dispatch::broker {

namespace {
// "arena.<MALLCTL_ARENAS_ALL>.purge": every arena's unused dirty pages back to the system now,
// rather than when jemalloc's decay gets to them (its decay only runs on allocator activity).
constexpr const char* kPurgeAllArenas = "arena.4096.purge";
}  // namespace

const char* heap_allocator_name() noexcept {
  return mallctl != nullptr ? "jemalloc" : "libc";
}

void release_free_heap() noexcept {
  if (mallctl != nullptr) {
    mallctl(kPurgeAllArenas, nullptr, nullptr, nullptr, 0);
    return;
  }
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
