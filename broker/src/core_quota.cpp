// BrokerCore's quota and shared-health part: which waiting job may go now (QuotaBook,
// FleetHealth), the wake-ups of jobs held back, reservations and their settling, provider
// feedback from workers, and the quota rows of `status`. The rest of the core is in core.cpp.

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "dispatch/broker/core.hpp"
#include "dispatch/common/strings.hpp"
#include "dispatch/common/time.hpp"
#include "dispatch/protocol/peek.hpp"

namespace dispatch::broker {

namespace {

using std::chrono::milliseconds;

constexpr std::size_t kMaxReportedProvider = 128;
constexpr std::size_t kMaxReportedModel = 256;
constexpr std::size_t kMaxFeedbackKeys = 10'000;

bool runs_before(const detail::Job& a, const detail::Job& b) noexcept {
  if (a.priority != b.priority) return a.priority < b.priority;
  if (a.urgent != b.urgent) return a.urgent;
  return a.enqueue_seq < b.enqueue_seq;
}

// How long a remaining-quota report binds. OpenAI-style reset headers give the time until the
// window is back to its initial state; a provider refills continuously, so room for `units`
// more comes after about reset × units / used. Without the limit the whole reset is the only
// safe reading.
milliseconds remaining_window(uint64_t remaining, uint64_t reset_ms, std::optional<uint64_t> limit,
                              double units) {
  if (!limit || *limit <= remaining) return milliseconds(reset_ms);
  const double used = static_cast<double>(*limit - remaining);
  const double share = std::min(1.0, std::max(1.0, units) / used);
  return milliseconds(static_cast<int64_t>(std::ceil(static_cast<double>(reset_ms) * share)));
}

}  // namespace

void BrokerCore::configure_quotas(const QuotaConfig& quotas) {
  config_.quotas = quotas;
  quota_.configure(quotas);
  spdlog::info("quotas: {} limit(s) in force, default answer {} tokens", quotas.limits.size(),
               quotas.default_answer_tokens);
  for (auto& [name, state] : providers_) dispatch_provider(*state);
  process_lost_workers();
}

uint64_t BrokerCore::tokens_of(Job& job) {
  if (!job.tokens) {
    job.tokens =
        estimate_tokens(job.payload_bytes, protocol::peek_request_max_tokens(view(job.request)),
                        quota_.config().default_answer_tokens);
  }
  return *job.tokens;
}

BrokerCore::JobGate BrokerCore::gate_of(Job& job) {
  JobGate gate;
  if (!quota_.empty()) {
    const QuotaBook::Admission admission = quota_.check(job.provider, job.model, tokens_of(job));
    if (!admission.allowed) {
      gate.allowed = false;
      gate.provider_wide = admission.by_provider;
      gate.retry_at = admission.retry_at;
      if (gate.provider_wide) return gate;
    }
  }
  if (!job.model.empty() && !health_.empty()) {
    const FleetHealth::Gate health = health_.check(model_key(job.provider, job.model));
    if (health.verdict == FleetHealth::Gate::Verdict::held && !job.has_fallbacks) {
      gate.allowed = false;
      gate.retry_at = std::min(gate.retry_at, health.retry_at);
    }
    gate.probe = health.verdict == FleetHealth::Gate::Verdict::probe;
  }
  return gate;
}

detail::Job* BrokerCore::next_admissible(ProviderState& state) {
  if (!gates_active() && state.lanes.empty()) return state.queue.peek();
  Clock::time_point wake = Clock::time_point::max();
  Job* best = nullptr;
  while (Job* head = state.queue.peek()) {
    if (joins_lane(state, *head)) {
      park(state, *head);
      continue;
    }
    const JobGate gate = gate_of(*head);
    if (gate.allowed) {
      best = head;
      break;
    }
    if (gate.provider_wide) {
      arm_wake(state, gate.retry_at);
      return nullptr;
    }
    // Held by its model's own key: out of the way of the other models' jobs behind it.
    wake = std::min(wake, gate.retry_at);
    park(state, *head);
  }
  best = best_in_lanes(state, best, wake);
  arm_wake(state, best == nullptr ? wake : Clock::time_point::max());
  return best;
}

bool BrokerCore::joins_lane(const ProviderState& state, const Job& job) const {
  // A job of a model already held by its own key waits in that model's lane, in priority
  // order, like the model's new jobs (see enqueue): one queued before the lane existed must not
  // overtake the lane's head, or small batch reservations keep taking the room a larger
  // interactive one waits for, and starve it.
  return !job.model.empty() && !job.has_fallbacks && state.lanes.contains(job.model);
}

detail::Job* BrokerCore::best_in_lanes(ProviderState& state, Job* best, Clock::time_point& wake) {
  for (auto& [model, lane] : state.lanes) {
    Job* head = lane->peek();
    if (best != nullptr && !runs_before(*head, *best)) continue;
    const JobGate gate = gate_of(*head);
    if (gate.allowed) {
      best = head;
    } else {
      wake = std::min(wake, gate.retry_at);
    }
  }
  return best;
}

void BrokerCore::park(ProviderState& state, Job& job) {
  std::unique_ptr<detail::ProviderQueue>& lane = state.lanes[job.model];
  if (!lane) lane = std::make_unique<detail::ProviderQueue>();
  const bool urgent = job.urgent;
  state.queue.erase(job);  // not pop(): its client's turn in the round-robin is not used up
  if (urgent) {
    lane->push_urgent(job);
  } else {
    lane->push(job, job.client.id);
  }
  job.lane = lane.get();
}

void BrokerCore::arm_wake(ProviderState& state, Clock::time_point at) {
  // Never "now": a bucket a hair short of a token would wake the loop again and again.
  if (at != Clock::time_point::max()) at = std::max(at, clock_.now() + milliseconds(1));
  if (state.wake_at == at) return;
  if (state.wake_at != Clock::time_point::max()) wakeups_.erase({state.wake_at, &state});
  state.wake_at = at;
  if (at != Clock::time_point::max()) wakeups_.emplace(at, &state);
}

void BrokerCore::wake_due(Clock::time_point now) {
  while (!wakeups_.empty() && wakeups_.begin()->first <= now) {
    ProviderState& state = *wakeups_.begin()->second;
    wakeups_.erase(wakeups_.begin());
    state.wake_at = Clock::time_point::max();
    dispatch_provider(state);
  }
}

void BrokerCore::take_queued(Job& job) {
  if (!job.model.empty() && !health_.empty()) {
    const std::string key = model_key(job.provider, job.model);
    if (health_.check(key).verdict == FleetHealth::Gate::Verdict::probe) {
      health_.take_probe(key, job.id);
      job.probe = true;
    }
  }
  if (!quota_.empty()) job.ticket = quota_.take(job.provider, job.model, tokens_of(job));
  leave_lane(job, true);
  if (metrics_ != nullptr) metrics_->waited(job.priority, clock_.now() - job.queued_at);
  after_pop(job);
}

void BrokerCore::release_reservation(Job& job) {
  if (job.probe) record_probe(job, nullptr);
  if (!job.ticket.held) return;
  quota_.settle(job.ticket, job.used_tokens);
  job.used_tokens.reset();
  // Room freed (concurrency, tokens given back): its provider's waiting jobs may go, on any
  // worker - after the current event, not from inside it.
  auto it = providers_.find(job.provider);
  if (it != providers_.end() && has_waiting(*it->second)) redispatch_.push_back(job.provider);
}

void BrokerCore::record_probe(Job& job, const std::vector<protocol::Attempt>* attempts) {
  job.probe = false;
  health_.probe_ended(model_key(job.provider, job.model), job.id, attempts);
  redispatch_.push_back(job.provider);
}

// ---------------------------------------------------------------------------------------------
// Provider feedback

void BrokerCore::on_provider_health(Worker& worker, const protocol::FrameView& message) {
  auto decoded = protocol::decode<protocol::ProviderHealth>(message.header);
  if (!decoded) {
    hostile(Side::backend, worker.route, decoded.error());
    return;
  }
  const protocol::ProviderHealth& report = decoded.value();
  if (report.provider.size() > kMaxReportedProvider || report.model.size() > kMaxReportedModel) {
    hostile(Side::backend, worker.route,
            protocol::DecodeError{protocol::DecodeError::Code::invalid_value,
                                  "provider_health: provider or model name too long"});
    return;
  }
  if (quota_.feedback_keys() >= kMaxFeedbackKeys) quota_.forget_expired();
  const std::string key =
      report.model.empty() ? report.provider : model_key(report.provider, report.model);
  if (report.kind == protocol::health_kind::rate_limited) {
    milliseconds pause =
        report.retry_after_ms ? milliseconds(*report.retry_after_ms) : config_.default_pause;
    pause = std::min(pause, config_.max_pause);
    if (quota_.feedback_keys() < kMaxFeedbackKeys) {
      quota_.pause(key, pause, "rate_limited at worker " + worker.worker_id);
    }
    if (worker_log_.allow(clock_.now())) {
      spdlog::info("{} rate-limited at worker {}: paused for the fleet for {} ms", key,
                   worker.worker_id, pause.count());
    }
    apply_remaining(key, report);
  } else if (report.kind == protocol::health_kind::quota) {
    apply_remaining(key, report);
  } else if (report.kind == protocol::health_kind::circuit_open ||
             report.kind == protocol::health_kind::circuit_closed) {
    apply_circuit(key, report, worker);
  } else {
    spdlog::debug("provider_health of kind '{}' from {} ignored", clip(report.kind, 64),
                  worker.worker_id);
    return;
  }
  if (auto it = providers_.find(report.provider); it != providers_.end()) {
    dispatch_provider(*it->second);
  }
}

void BrokerCore::apply_remaining(const std::string& key, const protocol::ProviderHealth& report) {
  if (quota_.feedback_keys() >= kMaxFeedbackKeys) return;
  if (report.remaining_requests && report.reset_requests_ms) {
    quota_.observe_remaining_requests(
        key, *report.remaining_requests,
        remaining_window(*report.remaining_requests, *report.reset_requests_ms,
                         report.limit_requests, 1.0));
  }
  if (report.remaining_tokens && report.reset_tokens_ms) {
    // Tokens come in jobs of many: room for half a second's worth is what matters.
    const double half_second =
        report.limit_tokens ? static_cast<double>(*report.limit_tokens) / 120.0 : 1.0;
    quota_.observe_remaining_tokens(
        key, *report.remaining_tokens,
        remaining_window(*report.remaining_tokens, *report.reset_tokens_ms, report.limit_tokens,
                         half_second));
  }
}

void BrokerCore::apply_circuit(const std::string& key, const protocol::ProviderHealth& report,
                               const Worker& worker) {
  if (report.kind == protocol::health_kind::circuit_closed) {
    health_.close(key);
    return;
  }
  const milliseconds cooldown = std::clamp(
      milliseconds(static_cast<int64_t>(std::min<uint64_t>(report.cooldown_ms, 3'600'000))),
      milliseconds(1), config_.max_pause);
  health_.open(key, cooldown, "breaker opened at worker " + worker.worker_id);
}

// ---------------------------------------------------------------------------------------------
// Status

void BrokerCore::add_quota_status(protocol::StatusReply& reply) const {
  std::map<std::string, protocol::QuotaStatus, std::less<>> rows;
  for (const QuotaKeyStatus& q : quota_.status()) {
    protocol::QuotaStatus& row = rows[q.key];
    row.key = q.key;
    row.rpm = q.limit.rpm;
    row.tpm = q.limit.tpm;
    row.concurrency = q.limit.concurrency;
    row.requests_last_minute = static_cast<uint64_t>(std::llround(q.requests_last_minute));
    row.tokens_last_minute = static_cast<uint64_t>(std::llround(q.tokens_last_minute));
    row.running = q.running;
    row.paused_ms = q.paused_ms;
    row.paused_reason = q.paused_reason;
  }
  for (const FleetHealth::KeyStatus& h : health_.status()) {
    protocol::QuotaStatus& row = rows[h.key];
    row.key = h.key;
    row.breaker = h.state;
    row.breaker_ms = h.open_ms;
  }
  for (const auto& [name, state] : providers_) {
    uint64_t waiting = state->queue.size();
    for (const auto& [model, lane] : state->lanes) {
      waiting += lane->size();
      if (auto row = rows.find(model_key(name, model)); row != rows.end()) {
        row->second.waiting = lane->size();
      }
    }
    if (auto row = rows.find(name); row != rows.end()) row->second.waiting = waiting;
  }
  reply.quotas.reserve(rows.size());
  for (auto& [key, row] : rows) reply.quotas.push_back(std::move(row));
}

}  // namespace dispatch::broker
