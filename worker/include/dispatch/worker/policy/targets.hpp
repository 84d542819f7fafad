#pragma once

// The ordered list of provider/model targets a job may use.
//
//   1. the request's own provider/model;
//   2. its fallbacks: request.fallbacks when present (present and empty = no fallback at all);
//      otherwise, when config.enable_fallback, the configured default chain: config.fallbacks,
//      then each of config.fallback_providers with that provider's `fallback_model`.
// Entries with an empty model and duplicates of an earlier target are dropped. A provider this
// worker has no config for stays in the list with `provider == nullptr`: the job records it as
// an "unsupported_provider" attempt without calling anything, and moves on.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "dispatch/protocol/types.hpp"
#include "dispatch/worker/config.hpp"

namespace dispatch::worker {

struct PlannedTarget {
  protocol::Target target;
  const ProviderConfig* provider = nullptr;  // nullptr: not configured on this worker

  bool operator==(const PlannedTarget&) const = default;
};

// At most this many targets per job (primary included); a longer chain is cut with a warning.
inline constexpr std::size_t kMaxTargets = 32;

std::vector<PlannedTarget> plan_targets(const protocol::Request& request,
                                        const WorkerConfig& config);

// After a context-length failure on a target whose provider has a context window of
// `current_window` tokens (0 = unknown: nothing to compare, order kept): moves the first target
// at or after `from` whose provider's context_window is larger to position `from`, keeping the
// rest in order.
void prefer_larger_context(std::vector<PlannedTarget>& targets, std::size_t from,
                           uint32_t current_window);

}  // namespace dispatch::worker
