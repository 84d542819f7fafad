#pragma once

// Counts heap allocations made through operator new on this thread while a scope is open, so
// tests can assert that hostile input is rejected without allocating what it declares.

#include <cstddef>

namespace dispatch::protocol::testing {

struct AllocStats {
  std::size_t count = 0;
  std::size_t bytes = 0;
  std::size_t largest = 0;
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
