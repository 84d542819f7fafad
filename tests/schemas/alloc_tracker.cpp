#include "alloc_tracker.hpp"

#include <cstdlib>
#include <new>

namespace dispatch::protocol::testing {
namespace {
thread_local bool tracking = false;
thread_local AllocStats current;

void* allocate(std::size_t size) {
  if (tracking) {
    ++current.count;
    current.bytes += size;
    if (size > current.largest) current.largest = size;
  }
  void* p = std::malloc(size == 0 ? 1 : size);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
}  // namespace

AllocScope::AllocScope() {
  current = AllocStats{};
  tracking = true;
}
AllocScope::~AllocScope() {
  tracking = false;
}
AllocStats AllocScope::stats() const {
  return current;
}

}  // namespace dispatch::protocol::testing

// Replacements of the global allocation functions (the aligned forms keep their defaults).
void* operator new(std::size_t size) {
  return dispatch::protocol::testing::allocate(size);
}
void* operator new[](std::size_t size) {
  return dispatch::protocol::testing::allocate(size);
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return dispatch::protocol::testing::allocate(size);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return dispatch::protocol::testing::allocate(size);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept {
  std::free(p);
}
void operator delete[](void* p) noexcept {
  std::free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  std::free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  std::free(p);
}
