#include "dispatch/broker/metrics.hpp"

#include <string>

namespace dispatch::broker {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

constexpr std::array<const char*, protocol::kPriorityLevels> kPriorityNames{"interactive", "normal",
                                                                            "batch"};
// Refusal codes are the broker's own (PROTOCOL.md), but a bounded map costs nothing.
constexpr std::size_t kMaxRejectCodes = 64;

prometheus::Counter& plain_counter(prometheus::Registry& registry, const std::string& name,
                                   const std::string& help) {
  return BuildCounter().Name(name).Help(help).Register(registry).Add({});
}

prometheus::Gauge& plain_gauge(prometheus::Registry& registry, const std::string& name,
                               const std::string& help) {
  return BuildGauge().Name(name).Help(help).Register(registry).Add({});
}

prometheus::Family<prometheus::Gauge>& target_gauge(prometheus::Registry& registry,
                                                    const std::string& name,
                                                    const std::string& help) {
  return BuildGauge().Name(name).Help(help).Register(registry);
}

}  // namespace

BrokerMetrics::BrokerMetrics(prometheus::Registry& registry)
    : jobs_(BuildCounter()
                .Name("dispatch_jobs_total")
                .Help("Jobs ended, by the provider and model asked for and the outcome the client "
                      "saw (success, an error kind, rejected)")
                .Register(registry)),
      rejected_(BuildCounter()
                    .Name("dispatch_submits_rejected_total")
                    .Help("Submits refused at the door, by code")
                    .Register(registry)),
      target_requests_(target_gauge(registry, "dispatch_quota_requests_last_minute",
                                    "Requests started in the last minute per quota/breaker key")),
      target_tokens_(target_gauge(registry, "dispatch_quota_tokens_last_minute",
                                  "Tokens reserved or used in the last minute per quota key")),
      target_running_(
          target_gauge(registry, "dispatch_quota_running", "Jobs running per quota key")),
      breaker_(target_gauge(registry, "dispatch_breaker_state",
                            "Fleet circuit breaker per key: 0 closed, 1 open, 2 half-open")),
      providers_(metrics::kDefaultLabelLimit),
      models_(metrics::kDefaultLabelLimit),
      targets_(metrics::kDefaultLabelLimit),
      accepted_(&plain_counter(registry, "dispatch_jobs_accepted_total", "Submits accepted")),
      duplicates_(&plain_counter(registry, "dispatch_submits_duplicate_total",
                                 "Resubmits of a known job id, answered without a new run")),
      running_(&plain_gauge(registry, "dispatch_jobs_running", "Jobs at a worker now")),
      redeliveries_(&plain_counter(registry, "dispatch_redeliveries_total",
                                   "Jobs re-queued after losing their worker")),
      hostile_(&plain_counter(registry, "dispatch_hostile_messages_total",
                              "Undecodable or out-of-place messages dropped, both sockets")),
      refused_(&plain_counter(registry, "dispatch_refused_messages_total",
                              "Messages from an identity without the role they need")),
      workers_lost_(&plain_counter(registry, "dispatch_workers_lost_total",
                                   "Workers lost: silent, disconnected or replaced")),
      connections_accepted_(&plain_counter(registry, "dispatch_client_connections_accepted_total",
                                           "Connections accepted on the client socket")),
      connections_open_(&plain_gauge(registry, "dispatch_client_connections",
                                     "Connections open on the client socket")),
      workers_(&plain_gauge(registry, "dispatch_workers", "Workers registered")),
      capacity_(&plain_gauge(registry, "dispatch_worker_capacity",
                             "Job slots the registered workers offer (their credit)")),
      credit_(&plain_gauge(registry, "dispatch_worker_free_slots",
                           "Job slots free at the registered workers")) {
  add_priority_and_reset_series(registry);
}

void BrokerMetrics::add_priority_and_reset_series(prometheus::Registry& registry) {
  auto& depth = BuildGauge()
                    .Name("dispatch_queue_depth")
                    .Help("Jobs waiting for a worker, by priority")
                    .Register(registry);
  auto& wait = BuildHistogram()
                   .Name("dispatch_queue_wait_seconds")
                   .Help("Time jobs waited in the queue before a worker took them, by priority")
                   .Register(registry);
  for (std::size_t i = 0; i < kPriorityNames.size(); ++i) {
    depth_[i] = &depth.Add({{"priority", kPriorityNames[i]}});
    wait_[i] = &wait.Add({{"priority", kPriorityNames[i]}}, metrics::latency_buckets());
  }
  auto& resets = BuildCounter()
                     .Name("dispatch_stream_resets_total")
                     .Help(
                         "Streams told to start over: by the worker (a retry or fallback after "
                         "text) or by the broker (a redelivery)")
                     .Register(registry);
  worker_resets_ = &resets.Add({{"origin", "worker"}});
  broker_resets_ = &resets.Add({{"origin", "broker"}});
}

prometheus::Counter& BrokerMetrics::job_series(std::string_view provider, std::string_view model,
                                               std::string_view outcome) {
  std::string key;
  key.reserve(provider.size() + model.size() + outcome.size() + 2);
  key.append(provider).append(1, '\0').append(model).append(1, '\0').append(outcome);
  auto it = job_series_.find(key);
  if (it != job_series_.end()) return *it->second;
  // New names fold into "other" past the caps; the map stays bounded by the caps' product.
  prometheus::Counter& counter = jobs_.Add({{"provider", providers_.bound(provider)},
                                            {"model", models_.bound(model)},
                                            {"outcome", std::string(outcome)}});
  if (job_series_.size() < metrics::kDefaultLabelLimit * metrics::kDefaultLabelLimit) {
    job_series_.emplace(std::move(key), &counter);
  }
  return counter;
}

void BrokerMetrics::job_ended(std::string_view provider, std::string_view model,
                              std::string_view outcome) {
  job_series(provider, model, outcome).Increment();
}

void BrokerMetrics::rejected(std::string_view code) {
  auto it = rejected_series_.find(code);
  if (it == rejected_series_.end()) {
    const std::string label = rejected_series_.size() < kMaxRejectCodes
                                  ? std::string(code)
                                  : std::string(metrics::kOtherLabel);
    it = rejected_series_.emplace(std::string(code), &rejected_.Add({{"code", label}})).first;
  }
  it->second->Increment();
}

void BrokerMetrics::waited(protocol::Priority priority, std::chrono::nanoseconds waited) {
  wait_[static_cast<std::size_t>(priority)]->Observe(std::chrono::duration<double>(waited).count());
}

void BrokerMetrics::stream_reset(ResetOrigin origin) {
  (origin == ResetOrigin::worker ? worker_resets_ : broker_resets_)->Increment();
}

void BrokerMetrics::sample_workers(std::size_t registered, uint64_t capacity, uint64_t in_flight) {
  workers_->Set(static_cast<double>(registered));
  capacity_->Set(static_cast<double>(capacity));
  credit_->Set(capacity > in_flight ? static_cast<double>(capacity - in_flight) : 0.0);
}

void BrokerMetrics::sample_targets(const std::vector<protocol::QuotaStatus>& rows) {
  for (const protocol::QuotaStatus& row : rows) {
    const prometheus::Labels labels{{"key", targets_.bound(row.key)}};
    target_requests_.Add(labels).Set(static_cast<double>(row.requests_last_minute));
    target_tokens_.Add(labels).Set(static_cast<double>(row.tokens_last_minute));
    target_running_.Add(labels).Set(static_cast<double>(row.running));
    const double state = row.breaker == "open" ? 1.0 : row.breaker == "half_open" ? 2.0 : 0.0;
    breaker_.Add(labels).Set(state);
  }
}

}  // namespace dispatch::broker
