#include "alloc_tracker.hpp"

#include <malloc.h>

#include <cstdint>
#include <cstdlib>
#include <new>

// The allocator under the wrappers (ld --wrap=malloc makes every other call site reach
// __wrap_malloc, and __real_malloc the original).
extern "C" {
void* __real_malloc(std::size_t size);
void* __real_calloc(std::size_t count, std::size_t size);
void* __real_realloc(void* p, std::size_t size);
void __real_free(void* p);
}

namespace dispatch::protocol::testing {
namespace {

thread_local bool tracking = false;
thread_local AllocStats current;
thread_local int64_t live = 0;  // bytes allocated in the scope and not freed yet

void note_allocation(void* p) {
  if (!tracking || p == nullptr) return;
  const std::size_t size = malloc_usable_size(p);
  ++current.count;
  current.bytes += size;
  if (size > current.largest) current.largest = size;
  live += static_cast<int64_t>(size);
  if (live > static_cast<int64_t>(current.peak)) current.peak = static_cast<std::size_t>(live);
}

// A block freed in the scope lowers the live total. One allocated before the scope opened
// lowers it too (it cannot be told apart cheaply); decoding frees none of those, and the
// peak only ever grows, so that can only understate what was freed, never the peak.
void note_free(void* p) {
  if (!tracking || p == nullptr) return;
  live -= static_cast<int64_t>(malloc_usable_size(p));
}

void* allocate(std::size_t size) {
  void* p = __real_malloc(size == 0 ? 1 : size);
  note_allocation(p);
  return p;
}

}  // namespace

AllocScope::AllocScope() {
  current = AllocStats{};
  live = 0;
  tracking = true;
}
AllocScope::~AllocScope() {
  tracking = false;
}
AllocStats AllocScope::stats() const {
  return current;
}

}  // namespace dispatch::protocol::testing

using dispatch::protocol::testing::allocate;
using dispatch::protocol::testing::note_allocation;
using dispatch::protocol::testing::note_free;

extern "C" {
void* __wrap_malloc(std::size_t size) {
  return allocate(size);
}
void* __wrap_calloc(std::size_t count, std::size_t size) {
  void* p = __real_calloc(count, size);
  note_allocation(p);
  return p;
}
void* __wrap_realloc(void* p, std::size_t size) {
  note_free(p);
  void* moved = __real_realloc(p, size);
  note_allocation(moved != nullptr ? moved : (size == 0 ? nullptr : p));
  return moved;
}
void __wrap_free(void* p) {
  note_free(p);
  __real_free(p);
}
}

// Replacements of the global allocation functions (the aligned forms keep their defaults).
void* operator new(std::size_t size) {
  void* p = allocate(size);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void* operator new[](std::size_t size) {
  void* p = allocate(size);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  return allocate(size);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  return allocate(size);
}
void operator delete(void* p) noexcept {
  __wrap_free(p);
}
void operator delete[](void* p) noexcept {
  __wrap_free(p);
}
void operator delete(void* p, std::size_t) noexcept {
  __wrap_free(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  __wrap_free(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  __wrap_free(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  __wrap_free(p);
}
