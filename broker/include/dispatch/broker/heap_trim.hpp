#pragma once

// Gives the heap's free pages back to the operating system now and then.
//
// Why: the broker's live heap is flat under steady load, but its RSS is not. Every client
// connection costs libzmq per-connection buffers (engine batches, pipes, session) that are freed
// when the client leaves; between them sit longer-lived allocations (results kept for
// deduplication for --result-ttl-ms), so glibc's malloc keeps the freed space as holes in its
// arenas and never returns it. With a new client every few seconds (the 30-minute soak of
// issue 11), the free space inside the heap grew from 0.4 to 1.2 MiB in 8 minutes while the live
// heap stayed at 4.8 MiB (BENCHMARKS.md, "Soak"). malloc_trim(0) releases every whole free page
// of every arena (madvise), so RSS follows the live heap instead of its high-water mark of holes.
// That halved the growth but left the pages only partly free; the shipped broker therefore runs
// on jemalloc (cmake/Allocator.cmake), whose size-class slabs keep such pages rare, and the
// trim becomes jemalloc's purge of every arena's dirty pages, which its own decay would
// otherwise return only as allocations happen.

#include <functional>

#include "dispatch/common/clock.hpp"

namespace dispatch::broker {

// The allocator's "give free pages back now": jemalloc's purge of every arena when the process
// runs on jemalloc (the shipped broker does, cmake/Allocator.cmake), malloc_trim(0) with glibc's
// malloc, nothing otherwise.
void release_free_heap() noexcept;

// "jemalloc" or "libc": which malloc this process runs on (logged at start).
const char* heap_allocator_name() noexcept;

class HeapTrimmer {
 public:
  using TrimFn = std::function<void()>;

  // The first trim is due one `period` after construction.
  HeapTrimmer(Clock::duration period, const Clock& clock, TrimFn trim = release_free_heap);

  // Trims when `period` has passed since the last trim (or the start); true when it did.
  bool maybe_trim();
  Clock::time_point next_due() const noexcept { return next_due_; }

 private:
  Clock::duration period_;
  const Clock& clock_;
  TrimFn trim_;
  Clock::time_point next_due_;
};

}  // namespace dispatch::broker
