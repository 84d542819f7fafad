#pragma once

// Counts heap allocations made on this thread while a scope is open, so tests can assert that
// hostile input is rejected without allocating what it declares, and bound the peak memory a
// decode takes.
//
// Both ways into the heap are seen: operator new (replaced here) and malloc / calloc / realloc /
// free called from code linked statically into the test binary (msgpack-c's zone, for one,
// calls malloc directly). The binary must be linked with
//   -Wl,--wrap=malloc,--wrap=free,--wrap=calloc,--wrap=realloc
// (tests/schemas/CMakeLists.txt does it). Sizes are the allocator's usable sizes
// (malloc_usable_size): what a block really takes, not just what was asked for.

#include <cstddef>

namespace dispatch::protocol::testing {

struct AllocStats {
  std::size_t count = 0;    // allocations made in the scope
  std::size_t bytes = 0;    // their total size
  std::size_t largest = 0;  // the largest one
  std::size_t peak = 0;     // most bytes allocated in the scope and live at the same time
};

class AllocScope {
 public:
  AllocScope();
  ~AllocScope();
  AllocScope(const AllocScope&) = delete;
  AllocScope& operator=(const AllocScope&) = delete;
  AllocStats stats() const;
};

}  // namespace dispatch::protocol::testing
