#include "peak_alloc.hpp"

#include <malloc.h>

#include <atomic>
#include <cstdlib>
#include <new>

namespace dispatch::worker::test {
namespace {

// Every allocation of the process is counted (the test is single-threaded where it measures;
// other threads only add noise upwards, never hide a peak).
std::atomic<std::size_t> live{0};
std::atomic<std::size_t> peak{0};

void* allocate(std::size_t size) {
  void* p = std::malloc(size == 0 ? 1 : size);
  if (p == nullptr) throw std::bad_alloc();
  const std::size_t now = live.fetch_add(malloc_usable_size(p)) + malloc_usable_size(p);
  std::size_t seen = peak.load();
  while (now > seen && !peak.compare_exchange_weak(seen, now)) {
  }
  return p;
}

void release(void* p) noexcept {
  if (p == nullptr) return;
  live.fetch_sub(malloc_usable_size(p));
  std::free(p);
}

}  // namespace

PeakScope::PeakScope() : baseline_(live.load()) {
  peak.store(baseline_);
}

std::size_t PeakScope::peak_bytes() const {
  const std::size_t p = peak.load();
  return p > baseline_ ? p - baseline_ : 0;
}

std::size_t PeakScope::live_bytes() const {
  const std::size_t l = live.load();
  return l > baseline_ ? l - baseline_ : 0;
}

}  // namespace dispatch::worker::test

// Replacements of the global allocation functions (the aligned forms keep their defaults).
void* operator new(std::size_t size) {
  return dispatch::worker::test::allocate(size);
}
void* operator new[](std::size_t size) {
  return dispatch::worker::test::allocate(size);
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return dispatch::worker::test::allocate(size);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return dispatch::worker::test::allocate(size);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept {
  dispatch::worker::test::release(p);
}
void operator delete[](void* p) noexcept {
  dispatch::worker::test::release(p);
}
void operator delete(void* p, std::size_t) noexcept {
  dispatch::worker::test::release(p);
}
void operator delete[](void* p, std::size_t) noexcept {
  dispatch::worker::test::release(p);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  dispatch::worker::test::release(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  dispatch::worker::test::release(p);
}
