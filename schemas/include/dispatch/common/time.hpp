#pragma once

// Conversions between clock durations and the whole milliseconds the protocol and logs carry.

#include <chrono>
#include <cstdint>

namespace dispatch {

// Whole milliseconds of `d`, 0 for a negative duration.
template <class Rep, class Period>
constexpr uint64_t to_ms(std::chrono::duration<Rep, Period> d) noexcept {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  return ms <= 0 ? 0 : static_cast<uint64_t>(ms);
}

// Milliseconds from `from` to `to`, 0 when `to` is not later.
template <class Clock, class Duration>
constexpr uint64_t ms_between(std::chrono::time_point<Clock, Duration> from,
                              std::chrono::time_point<Clock, Duration> to) noexcept {
  return to <= from ? 0 : to_ms(to - from);
}

}  // namespace dispatch
