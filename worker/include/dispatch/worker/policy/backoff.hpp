#pragma once

// Exponential backoff with jitter between retries of the same target.
//
//   delay(n) = min(base_ms · 2^n, max_ms) × U(0.75, 1]        n = 0 for the first retry
//
// With the defaults (backoff_base_ms 500, backoff_max_ms 8000) the waits are about
// 0.5 s, 1 s, 2 s, 4 s, 8 s, 8 s ... each shortened by up to a quarter. The jitter only ever
// shortens a wait, so the configured values stay upper bounds a user can rely on, and jobs that
// failed together (a provider blip) do not come back in lock-step. A Retry-After from the
// provider replaces this value (see job_runner.hpp). The result is at least 1 ms: a retry always
// goes through the event loop, never a tight loop.

#include <cstdint>

#include "dispatch/common/clock.hpp"

namespace dispatch::worker {

uint64_t backoff_delay_ms(uint32_t retry_index, uint32_t base_ms, uint32_t max_ms, Random& random);

}  // namespace dispatch::worker
