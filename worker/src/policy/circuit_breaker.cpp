#include "dispatch/worker/policy/circuit_breaker.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <tuple>

#include "dispatch/common/time.hpp"

namespace dispatch::worker {

namespace {

using protocol::ErrorKind;

}  // namespace

std::string_view to_string(BreakerState state) noexcept {
  switch (state) {
    case BreakerState::closed:
      return "closed";
    case BreakerState::open:
      return "open";
    case BreakerState::half_open:
      return "half_open";
  }
  return "closed";
}

bool is_health_failure(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::network:
    case ErrorKind::timeout:
    case ErrorKind::overloaded:
    case ErrorKind::server_error:
    case ErrorKind::stream_interrupted:
      return true;
    default:
      return false;
  }
}

CircuitBreakers::CircuitBreakers(const Clock& clock) : clock_(clock) {}

std::string CircuitBreakers::key_of(std::string_view provider, std::string_view model) {
  // The unit separator cannot appear in a provider name from config; it keeps "a/b"+"c" and
  // "a"+"b/c" apart.
  std::string key;
  key.reserve(provider.size() + model.size() + 1);
  key.append(provider).push_back('\x1f');
  key.append(model);
  return key;
}

CircuitBreakers::Entry* CircuitBreakers::find(std::string_view provider, std::string_view model) {
  auto it = entries_.find(key_of(provider, model));
  return it == entries_.end() ? nullptr : &it->second;
}

const CircuitBreakers::Entry* CircuitBreakers::find(std::string_view provider,
                                                    std::string_view model) const {
  auto it = entries_.find(key_of(provider, model));
  return it == entries_.end() ? nullptr : &it->second;
}

CircuitBreakers::Entry* CircuitBreakers::find_or_create(std::string_view provider,
                                                        std::string_view model) {
  auto key = key_of(provider, model);
  if (auto it = entries_.find(key); it != entries_.end()) return &it->second;
  if (entries_.size() >= kMaxEntries) {
    // Forgetting a closed breaker loses at most a few counted failures; an open one is kept.
    std::erase_if(entries_, [](const auto& item) {
      return !item.second.open && item.second.consecutive_failures == 0;
    });
    if (entries_.size() >= kMaxEntries) {
      std::erase_if(entries_, [](const auto& item) { return !item.second.open; });
    }
    if (entries_.size() >= kMaxEntries) return nullptr;  // all open: do not track newcomers
  }
  Entry entry;
  entry.provider = std::string(provider);
  entry.model = std::string(model);
  return &entries_.emplace(std::move(key), std::move(entry)).first->second;
}

BreakerState CircuitBreakers::state_of(const Entry& entry) const {
  if (!entry.open) return BreakerState::closed;
  return clock_.now() < entry.open_until ? BreakerState::open : BreakerState::half_open;
}

BreakerStatus CircuitBreakers::status_of(const Entry& entry) const {
  BreakerStatus status;
  status.provider = entry.provider;
  status.model = entry.model;
  status.state = state_of(entry);
  status.consecutive_failures = entry.consecutive_failures;
  status.window_samples = static_cast<uint32_t>(entry.window.size());
  status.window_failures =
      static_cast<uint32_t>(std::count(entry.window.begin(), entry.window.end(), true));
  if (status.state == BreakerState::open)
    status.open_remaining_ms = to_ms(entry.open_until - clock_.now());
  status.probe_in_flight = entry.probe_in_flight;
  status.times_opened = entry.times_opened;
  return status;
}

CircuitBreakers::Admission CircuitBreakers::admit(std::string_view provider,
                                                  std::string_view model) {
  std::lock_guard lock(mutex_);
  Entry* entry = find(provider, model);
  if (entry == nullptr) return Admission::allow;
  switch (state_of(*entry)) {
    case BreakerState::closed:
      return Admission::allow;
    case BreakerState::open:
      return Admission::reject;
    case BreakerState::half_open:
      if (entry->probe_in_flight) return Admission::reject;
      entry->probe_in_flight = true;
      spdlog::info("circuit {}/{} half-open: letting one probe through", provider, model);
      return Admission::probe;
  }
  return Admission::allow;
}

bool CircuitBreakers::would_admit(std::string_view provider, std::string_view model) const {
  std::lock_guard lock(mutex_);
  const Entry* entry = find(provider, model);
  if (entry == nullptr) return true;
  switch (state_of(*entry)) {
    case BreakerState::closed:
      return true;
    case BreakerState::open:
      return false;
    case BreakerState::half_open:
      return !entry->probe_in_flight;
  }
  return true;
}

void CircuitBreakers::push_outcome(Entry& entry, const PolicySettings& settings, bool failure) {
  if (settings.breaker_window == 0) {
    entry.window.clear();
    return;
  }
  entry.window.push_back(failure);
  while (entry.window.size() > settings.breaker_window) entry.window.pop_front();
}

BreakerChange CircuitBreakers::open(Entry& entry, const PolicySettings& settings,
                                    std::optional<uint64_t> retry_after_ms, std::string_view why) {
  uint64_t cooldown_ms = settings.breaker_cooldown_ms;
  if (retry_after_ms) {
    // The provider said when to come back; a longer cooldown than asked would waste capacity,
    // a shorter one would hammer it. Capped like every Retry-After we honour.
    cooldown_ms = std::max<uint64_t>(
        cooldown_ms, std::min<uint64_t>(*retry_after_ms, settings.retry_after_cap_ms));
  }
  entry.open = true;
  entry.open_until = clock_.now() + std::chrono::milliseconds(cooldown_ms);
  entry.probe_in_flight = false;
  entry.consecutive_failures = 0;
  entry.window.clear();
  ++entry.times_opened;
  spdlog::warn("circuit {}/{} opened for {} ms ({})", entry.provider, entry.model, cooldown_ms,
               why);
  return BreakerChange{BreakerChange::Kind::opened, cooldown_ms};
}

BreakerChange CircuitBreakers::record_success(std::string_view provider, std::string_view model,
                                              const PolicySettings& settings, bool probe) {
  std::lock_guard lock(mutex_);
  Entry* entry = probe ? find(provider, model) : find_or_create(provider, model);
  if (entry == nullptr) return {};
  if (entry->open) {
    if (!probe) return {};  // a straggler from before it opened: only the probe decides
    entry->open = false;
    entry->probe_in_flight = false;
    entry->consecutive_failures = 0;
    entry->window.clear();
    spdlog::info("circuit {}/{} closed: probe succeeded", provider, model);
    return BreakerChange{BreakerChange::Kind::closed, 0};
  }
  entry->consecutive_failures = 0;
  push_outcome(*entry, settings, false);
  return {};
}

BreakerChange CircuitBreakers::record_failure(std::string_view provider, std::string_view model,
                                              const PolicySettings& settings,
                                              std::optional<uint64_t> retry_after_ms, bool probe) {
  std::lock_guard lock(mutex_);
  Entry* entry = probe ? find(provider, model) : find_or_create(provider, model);
  if (entry == nullptr) return {};
  if (entry->open) {
    if (probe) return open(*entry, settings, retry_after_ms, "probe failed");
    return {};
  }
  ++entry->consecutive_failures;
  push_outcome(*entry, settings, true);
  if (settings.breaker_failures > 0 && entry->consecutive_failures >= settings.breaker_failures) {
    return open(*entry, settings, retry_after_ms,
                std::to_string(entry->consecutive_failures) + " consecutive failures");
  }
  const std::size_t min_samples = std::max<std::size_t>(1, settings.breaker_window / 2);
  if (settings.breaker_window > 0 && settings.breaker_failure_rate > 0.0 &&
      entry->window.size() >= min_samples) {
    const auto failures = std::count(entry->window.begin(), entry->window.end(), true);
    const double rate = static_cast<double>(failures) / static_cast<double>(entry->window.size());
    if (rate >= settings.breaker_failure_rate) {
      return open(
          *entry, settings, retry_after_ms,
          "failure rate " + std::to_string(failures) + "/" + std::to_string(entry->window.size()));
    }
  }
  return {};
}

void CircuitBreakers::release_probe(std::string_view provider, std::string_view model) {
  std::lock_guard lock(mutex_);
  if (Entry* entry = find(provider, model)) entry->probe_in_flight = false;
}

BreakerState CircuitBreakers::state(std::string_view provider, std::string_view model) const {
  std::lock_guard lock(mutex_);
  const Entry* entry = find(provider, model);
  return entry == nullptr ? BreakerState::closed : state_of(*entry);
}

BreakerStatus CircuitBreakers::status(std::string_view provider, std::string_view model) const {
  std::lock_guard lock(mutex_);
  if (const Entry* entry = find(provider, model)) return status_of(*entry);
  BreakerStatus status;
  status.provider = std::string(provider);
  status.model = std::string(model);
  return status;
}

std::vector<BreakerStatus> CircuitBreakers::snapshot() const {
  std::lock_guard lock(mutex_);
  std::vector<BreakerStatus> out;
  for (const auto& [key, entry] : entries_) {
    if (entry.open || entry.consecutive_failures > 0) out.push_back(status_of(entry));
  }
  std::sort(out.begin(), out.end(), [](const BreakerStatus& a, const BreakerStatus& b) {
    return std::tie(a.provider, a.model) < std::tie(b.provider, b.model);
  });
  return out;
}

}  // namespace dispatch::worker
