#pragma once

// Peak live heap bytes while a scope is open, counted through the global operator new/delete
// this test binary replaces (peak_alloc.cpp): what a piece of code holds at its worst moment,
// the figure the worker's memory bound is about (a total of bytes allocated would count a
// buffer that grows by doubling several times over).

#include <cstddef>

namespace dispatch::worker::test {

class PeakScope {
 public:
  PeakScope();
  PeakScope(const PeakScope&) = delete;
  PeakScope& operator=(const PeakScope&) = delete;
  // Most bytes live at once since the scope opened, above what was live when it opened.
  std::size_t peak_bytes() const;
  // Bytes live now above what was live when the scope opened.
  std::size_t live_bytes() const;

 private:
  std::size_t baseline_;
};

}  // namespace dispatch::worker::test
