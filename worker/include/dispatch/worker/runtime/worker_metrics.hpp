#pragma once

// The worker's Prometheus metrics (README, "Metrics"): jobs by answering provider/model and
// outcome, attempts, retries, fallbacks, stream resets, time to first token, total duration,
// the worker's own added time, tokens in and out, cost. Fed from each job's final Response or Error
// on the event loop thread; read by the metrics endpoint's thread (prometheus-cpp metrics are
// thread-safe).

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "dispatch/metrics/metrics.hpp"
#include "dispatch/protocol/types.hpp"

namespace dispatch::worker {

class WorkerMetrics {
 public:
  explicit WorkerMetrics(prometheus::Registry& registry);
  WorkerMetrics(const WorkerMetrics&) = delete;
  WorkerMetrics& operator=(const WorkerMetrics&) = delete;

  void job_started() { running_->Increment(); }
  void job_stopped() { running_->Decrement(); }
  void stream_reset() { resets_->Increment(); }
  // `first_token`: from taking the job to the first chunk of the answer delivered (streamed
  // jobs only); `held`: from taking the job to its end.
  void job_succeeded(const protocol::Response& response,
                     std::optional<std::chrono::nanoseconds> first_token,
                     std::chrono::nanoseconds held);
  // `provider`/`model`: the error's, else the request's.
  void job_failed(const protocol::Error& error, std::string_view provider, std::string_view model,
                  std::chrono::nanoseconds held);

 private:
  // The histograms and counters of one provider/model, looked up once.
  struct TargetSeries {
    prometheus::Histogram* duration = nullptr;
    prometheus::Histogram* first_token = nullptr;
    prometheus::Counter* input_tokens = nullptr;
    prometheus::Counter* output_tokens = nullptr;
    prometheus::Counter* cost_usd = nullptr;
    prometheus::Counter* retries = nullptr;
    prometheus::Counter* fallbacks = nullptr;
  };
  TargetSeries& target(std::string_view provider, std::string_view model);
  prometheus::Counter& outcome_series(prometheus::Family<prometheus::Counter>& family,
                                      std::unordered_map<std::string, prometheus::Counter*>& cache,
                                      std::string_view provider, std::string_view model,
                                      std::string_view outcome);
  void count_attempts(const std::vector<protocol::Attempt>& attempts);
  // The worker's own time: held minus the provider's (the attempts' durations).
  void observe_overhead(const std::vector<protocol::Attempt>& attempts,
                        std::chrono::nanoseconds held);

  prometheus::Family<prometheus::Counter>& jobs_;
  prometheus::Family<prometheus::Counter>& attempts_;
  prometheus::Family<prometheus::Histogram>& duration_;
  prometheus::Family<prometheus::Histogram>& first_token_;
  prometheus::Family<prometheus::Counter>& input_tokens_;
  prometheus::Family<prometheus::Counter>& output_tokens_;
  prometheus::Family<prometheus::Counter>& cost_usd_;
  prometheus::Family<prometheus::Counter>& retries_;
  prometheus::Family<prometheus::Counter>& fallbacks_;
  prometheus::Gauge* running_;
  prometheus::Counter* resets_;
  prometheus::Histogram* overhead_;
  metrics::LabelCap providers_;
  metrics::LabelCap models_;
  std::unordered_map<std::string, TargetSeries> targets_;  // provider NUL model
  std::unordered_map<std::string, prometheus::Counter*> job_series_;
  std::unordered_map<std::string, prometheus::Counter*> attempt_series_;
};

}  // namespace dispatch::worker
