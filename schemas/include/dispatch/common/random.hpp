#pragma once

// Identifiers that must not collide or be guessed (job ids, worker ids, broker ids) come from
// the operating system's CSPRNG, never from a seeded PRNG: two processes whose generators drew
// the same seed would otherwise produce the same ids. Randomness that only needs to look random
// (backoff jitter) is the injectable dispatch::Random in clock.hpp.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace dispatch {

// Fills `out` from getrandom(2). Never fails short: retries on EINTR, throws std::system_error
// only if the kernel has no CSPRNG at all.
void secure_random_bytes(std::span<unsigned char> out);

// `bytes` random bytes as 2 * bytes lowercase hex digits. random_hex_id() is the 128-bit id
// (32 hex digits) used for job ids.
std::string random_hex_id(std::size_t bytes = 16);

// A seed for a PRNG that must differ between processes started at the same moment.
uint64_t secure_random_seed();

}  // namespace dispatch
