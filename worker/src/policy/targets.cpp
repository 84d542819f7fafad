#include "dispatch/worker/policy/targets.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace dispatch::worker {

std::vector<PlannedTarget> plan_targets(const protocol::Request& request,
                                        const WorkerConfig& config) {
  std::vector<PlannedTarget> targets;
  bool truncated = false;
  auto add = [&](const std::string& provider, const std::string& model) {
    if (provider.empty() || model.empty()) return;
    protocol::Target target{provider, model};
    auto same = [&](const PlannedTarget& planned) { return planned.target == target; };
    if (std::any_of(targets.begin(), targets.end(), same)) return;
    if (targets.size() >= kMaxTargets) {
      truncated = true;
      return;
    }
    targets.push_back(PlannedTarget{std::move(target), config.provider(provider)});
  };

  add(request.provider, request.model);
  if (request.fallbacks) {
    for (const auto& fallback : *request.fallbacks) add(fallback.provider, fallback.model);
  } else if (config.enable_fallback) {
    for (const auto& fallback : config.fallbacks) add(fallback.provider, fallback.model);
    for (const auto& name : config.fallback_providers) {
      // A provider without config has no fallback_model either: nothing to add.
      if (const ProviderConfig* provider = config.provider(name)) {
        add(name, provider->fallback_model);
      }
    }
  }
  if (truncated) {
    spdlog::warn("fallback chain of {}/{} cut to {} targets", request.provider, request.model,
                 kMaxTargets);
  }
  return targets;
}

void prefer_larger_context(std::vector<PlannedTarget>& targets, std::size_t from,
                           uint32_t current_window) {
  if (current_window == 0 || from >= targets.size()) return;
  auto first = targets.begin() + static_cast<std::ptrdiff_t>(from);
  auto larger = std::find_if(first, targets.end(), [&](const PlannedTarget& planned) {
    return planned.provider != nullptr && planned.provider->context_window > current_window;
  });
  if (larger != targets.end()) std::rotate(first, larger, larger + 1);
}

}  // namespace dispatch::worker
