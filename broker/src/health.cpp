#include "dispatch/broker/health.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "dispatch/common/time.hpp"

namespace dispatch::broker {

bool is_health_outcome(std::string_view outcome) noexcept {
  return outcome == "network" || outcome == "timeout" || outcome == "overloaded" ||
         outcome == "server_error" || outcome == "stream_interrupted";
}

FleetHealth::FleetHealth(const Clock& clock) : clock_(clock) {}

FleetHealth::Gate FleetHealth::check(std::string_view key) const {
  Gate gate;
  auto it = circuits_.find(key);
  if (it == circuits_.end()) return gate;
  const Circuit& circuit = it->second;
  if (clock_.now() < circuit.open_until) {
    gate.verdict = Gate::Verdict::held;
    gate.retry_at = circuit.open_until;
  } else if (!circuit.probe_job.empty()) {
    gate.verdict = Gate::Verdict::held;
    gate.retry_at = Clock::time_point::max();
  } else {
    gate.verdict = Gate::Verdict::probe;
  }
  return gate;
}

void FleetHealth::open(std::string_view key, Clock::duration cooldown, std::string reason) {
  auto it = circuits_.find(key);
  if (it == circuits_.end()) {
    if (circuits_.size() >= kMaxKeys) return;
    it = circuits_.emplace(std::string(key), Circuit{}).first;
  }
  Circuit& circuit = it->second;
  const Clock::time_point until = clock_.now() + cooldown;
  if (until > circuit.open_until) {
    circuit.open_until = until;
    circuit.cooldown = cooldown;
    circuit.reason = std::move(reason);
    spdlog::warn("circuit {} open for the fleet for {} ms ({})", key, to_ms(cooldown),
                 circuit.reason);
  }
}

void FleetHealth::close(std::string_view key) {
  auto it = circuits_.find(key);
  if (it == circuits_.end()) return;
  circuits_.erase(it);
  spdlog::info("circuit {} closed for the fleet", key);
}

void FleetHealth::take_probe(std::string_view key, std::string_view job_id) {
  auto it = circuits_.find(key);
  if (it == circuits_.end()) return;
  it->second.probe_job = std::string(job_id);
  spdlog::info("circuit {} half-open: job {} is the fleet's probe", key, job_id);
}

bool FleetHealth::probe_ended(std::string_view key, std::string_view job_id,
                              const std::vector<protocol::Attempt>* attempts) {
  auto it = circuits_.find(key);
  if (it == circuits_.end() || it->second.probe_job != job_id) return false;
  Circuit& circuit = it->second;
  circuit.probe_job.clear();
  if (attempts == nullptr) return false;
  // The last attempt on the target itself decides; one the worker skipped decides nothing.
  const auto slash = key.find('/');
  const std::string_view provider = key.substr(0, slash);
  const std::string_view model = slash == std::string_view::npos ? "" : key.substr(slash + 1);
  for (auto a = attempts->rbegin(); a != attempts->rend(); ++a) {
    if (a->provider != provider || a->model != model) continue;
    if (a->outcome == "ok") {
      close(key);
      return true;
    }
    if (is_health_outcome(a->outcome)) {
      open(key, circuit.cooldown, "the fleet's probe failed: " + a->outcome);
      return false;
    }
    break;
  }
  return false;
}

std::vector<std::string> FleetHealth::open_keys(std::string_view except, std::size_t limit) const {
  std::vector<std::string> keys;
  const Clock::time_point now = clock_.now();
  for (const auto& [key, circuit] : circuits_) {
    if (keys.size() >= limit) break;
    if (key == except) continue;
    if (now < circuit.open_until || !circuit.probe_job.empty()) keys.push_back(key);
  }
  return keys;
}

std::vector<FleetHealth::KeyStatus> FleetHealth::status() const {
  std::vector<KeyStatus> out;
  const Clock::time_point now = clock_.now();
  for (const auto& [key, circuit] : circuits_) {
    KeyStatus s;
    s.key = key;
    s.reason = circuit.reason;
    if (now < circuit.open_until) {
      s.state = "open";
      s.open_ms = to_ms(circuit.open_until - now);
    } else {
      s.state = "half_open";
    }
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace dispatch::broker
