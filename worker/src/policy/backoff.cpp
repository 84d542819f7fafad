#include "dispatch/worker/policy/backoff.hpp"

#include <algorithm>
#include <cmath>

namespace dispatch::worker {

uint64_t backoff_delay_ms(uint32_t retry_index, uint32_t base_ms, uint32_t max_ms, Random& random) {
  // Past 2^40 the cap always wins; stopping there keeps the double exact and finite.
  const double exponent = static_cast<double>(std::min<uint32_t>(retry_index, 40));
  const double ceiling =
      std::min(static_cast<double>(base_ms) * std::exp2(exponent), static_cast<double>(max_ms));
  // uniform() is in [0, 1), so the factor is in (0.75, 1].
  const double jitter = 1.0 - 0.25 * std::clamp(random.uniform(), 0.0, 1.0);
  const auto delay = static_cast<uint64_t>(std::llround(ceiling * jitter));
  return std::max<uint64_t>(delay, 1);
}

}  // namespace dispatch::worker
