#pragma once

// The broker's Prometheus metrics (README, "Metrics"). BrokerCore counts into it through a
// pointer it is given (none: metrics off, nothing counted); the metric objects are looked up
// once and kept, so the hot path is an atomic add, plus one hash lookup per job end for its
// provider/model/outcome series.

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/broker/detail/job.hpp"
#include "dispatch/metrics/metrics.hpp"
#include "dispatch/protocol/messages.hpp"
#include "dispatch/protocol/types.hpp"

namespace dispatch::broker {

// Who ended a stream early: the worker (its reset, relayed) or the broker (a redelivery).
enum class ResetOrigin { worker, broker };

class BrokerMetrics {
 public:
  explicit BrokerMetrics(prometheus::Registry& registry);
  BrokerMetrics(const BrokerMetrics&) = delete;
  BrokerMetrics& operator=(const BrokerMetrics&) = delete;

  // A job's end as its client sees it: "success", an error kind name, or "rejected" (the drain).
  void job_ended(std::string_view provider, std::string_view model, std::string_view outcome);
  void accepted() { accepted_->Increment(); }
  void duplicate() { duplicates_->Increment(); }
  // A submit refused at the door (its code: queue_full, client_jobs, draining ...).
  void rejected(std::string_view code);
  void queued(protocol::Priority priority) { depth(priority).Increment(); }
  void unqueued(protocol::Priority priority) { depth(priority).Decrement(); }
  // A job left the queue for a worker after waiting `waited`.
  void waited(protocol::Priority priority, std::chrono::nanoseconds waited);
  void started() { running_->Increment(); }
  void stopped() { running_->Decrement(); }
  void redelivered() { redeliveries_->Increment(); }
  void stream_reset(ResetOrigin origin);
  void hostile() { hostile_->Increment(); }
  void refused() { refused_->Increment(); }
  void worker_lost() { workers_lost_->Increment(); }
  // The client socket's connections: `accepted` more since the last call, `open` now.
  void client_connections(uint64_t accepted, uint64_t open) {
    connections_accepted_->Increment(static_cast<double>(accepted));
    connections_open_->Set(static_cast<double>(open));
  }
  // Sampled on the broker's tick: the worker registry and the quota/breaker rows of `status`.
  void sample_workers(std::size_t registered, uint64_t capacity, uint64_t in_flight);
  void sample_targets(const std::vector<protocol::QuotaStatus>& rows);

 private:
  prometheus::Gauge& depth(protocol::Priority priority) {
    return *depth_[static_cast<std::size_t>(priority)];
  }
  void add_priority_and_reset_series(prometheus::Registry& registry);
  prometheus::Counter& job_series(std::string_view provider, std::string_view model,
                                  std::string_view outcome);

  prometheus::Family<prometheus::Counter>& jobs_;
  prometheus::Family<prometheus::Counter>& rejected_;
  prometheus::Family<prometheus::Gauge>& target_requests_;
  prometheus::Family<prometheus::Gauge>& target_tokens_;
  prometheus::Family<prometheus::Gauge>& target_running_;
  prometheus::Family<prometheus::Gauge>& breaker_;
  detail::StringMap<prometheus::Counter*> job_series_;  // provider NUL model NUL outcome
  detail::StringMap<prometheus::Counter*> rejected_series_;
  metrics::LabelCap providers_;
  metrics::LabelCap models_;
  metrics::LabelCap targets_;
  prometheus::Counter* accepted_;
  prometheus::Counter* duplicates_;
  std::array<prometheus::Gauge*, protocol::kPriorityLevels> depth_{};
  std::array<prometheus::Histogram*, protocol::kPriorityLevels> wait_{};
  prometheus::Gauge* running_;
  prometheus::Counter* redeliveries_;
  prometheus::Counter* worker_resets_;
  prometheus::Counter* broker_resets_;
  prometheus::Counter* hostile_;
  prometheus::Counter* refused_;
  prometheus::Counter* workers_lost_;
  prometheus::Counter* connections_accepted_;
  prometheus::Gauge* connections_open_;
  prometheus::Gauge* workers_;
  prometheus::Gauge* capacity_;
  prometheus::Gauge* credit_;
};

}  // namespace dispatch::broker
