#include "dispatch/worker/runtime/worker_metrics.hpp"

#include <algorithm>

namespace dispatch::worker {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

double seconds(std::chrono::nanoseconds d) {
  return std::chrono::duration<double>(d).count();
}

std::string series_key(std::string_view provider, std::string_view model,
                       std::string_view outcome = {}) {
  std::string key;
  key.reserve(provider.size() + model.size() + outcome.size() + 2);
  key.append(provider).append(1, '\0').append(model).append(1, '\0').append(outcome);
  return key;
}

// Caches stop growing here; the label caps already bound the series behind them.
constexpr std::size_t kMaxCached = 10'000;

}  // namespace

WorkerMetrics::WorkerMetrics(prometheus::Registry& registry)
    : jobs_(BuildCounter()
                .Name("dispatch_jobs_total")
                .Help("Jobs ended at this worker, by the provider and model that answered (or "
                      "failed last) and the outcome (success or an error kind)")
                .Register(registry)),
      attempts_(BuildCounter()
                    .Name("dispatch_attempts_total")
                    .Help("Provider attempts, by target and outcome (ok, an error kind, "
                          "circuit_open)")
                    .Register(registry)),
      duration_(BuildHistogram()
                    .Name("dispatch_job_duration_seconds")
                    .Help("From the worker taking a job to its answer, by answering target")
                    .Register(registry)),
      first_token_(BuildHistogram()
                       .Name("dispatch_time_to_first_token_seconds")
                       .Help("Streamed jobs: from the worker taking the job to the first chunk "
                             "of the delivered answer, by answering target")
                       .Register(registry)),
      input_tokens_(BuildCounter()
                        .Name("dispatch_input_tokens_total")
                        .Help("Prompt tokens of answered jobs, by answering target")
                        .Register(registry)),
      output_tokens_(BuildCounter()
                         .Name("dispatch_output_tokens_total")
                         .Help("Completion tokens of answered jobs, by answering target")
                         .Register(registry)),
      cost_usd_(BuildCounter()
                    .Name("dispatch_cost_usd_total")
                    .Help("Cost in US dollars of answered jobs with a known price (cost_usd), by "
                          "answering target")
                    .Register(registry)),
      retries_(BuildCounter()
                   .Name("dispatch_retries_total")
                   .Help("Attempts that retried the target of the attempt before")
                   .Register(registry)),
      fallbacks_(BuildCounter()
                     .Name("dispatch_fallbacks_total")
                     .Help("Attempts that moved to another target (labels: the one moved to)")
                     .Register(registry)),
      running_(&BuildGauge()
                    .Name("dispatch_worker_jobs_running")
                    .Help("Jobs this worker runs now")
                    .Register(registry)
                    .Add({})),
      resets_(&BuildCounter()
                   .Name("dispatch_stream_resets_total")
                   .Help("Streams this worker told to start over (a retry or fallback after text)")
                   .Register(registry)
                   .Add({{"origin", "worker"}})),
      overhead_(&BuildHistogram()
                     .Name("dispatch_worker_overhead_seconds")
                     .Help("Time a job spent at the worker outside provider attempts (queueing "
                           "on the loop, backoff waits, encoding)")
                     .Register(registry)
                     .Add({}, metrics::overhead_buckets())) {}

WorkerMetrics::TargetSeries& WorkerMetrics::target(std::string_view provider,
                                                   std::string_view model) {
  std::string key = series_key(provider, model);
  auto it = targets_.find(key);
  if (it != targets_.end()) return it->second;
  const prometheus::Labels labels{{"provider", providers_.bound(provider)},
                                  {"model", models_.bound(model)}};
  TargetSeries series;
  series.duration = &duration_.Add(labels, metrics::latency_buckets());
  series.first_token = &first_token_.Add(labels, metrics::latency_buckets());
  series.input_tokens = &input_tokens_.Add(labels);
  series.output_tokens = &output_tokens_.Add(labels);
  series.cost_usd = &cost_usd_.Add(labels);
  series.retries = &retries_.Add(labels);
  series.fallbacks = &fallbacks_.Add(labels);
  if (targets_.size() >= kMaxCached) targets_.clear();
  return targets_.emplace(std::move(key), series).first->second;
}

prometheus::Counter& WorkerMetrics::outcome_series(
    prometheus::Family<prometheus::Counter>& family,
    std::unordered_map<std::string, prometheus::Counter*>& cache, std::string_view provider,
    std::string_view model, std::string_view outcome) {
  std::string key = series_key(provider, model, outcome);
  auto it = cache.find(key);
  if (it != cache.end()) return *it->second;
  prometheus::Counter& counter = family.Add({{"provider", providers_.bound(provider)},
                                             {"model", models_.bound(model)},
                                             {"outcome", std::string(outcome)}});
  if (cache.size() >= kMaxCached) cache.clear();
  cache.emplace(std::move(key), &counter);
  return counter;
}

void WorkerMetrics::count_attempts(const std::vector<protocol::Attempt>& attempts) {
  const protocol::Attempt* previous = nullptr;
  for (const protocol::Attempt& attempt : attempts) {
    outcome_series(attempts_, attempt_series_, attempt.provider, attempt.model, attempt.outcome)
        .Increment();
    if (previous != nullptr) {
      TargetSeries& series = target(attempt.provider, attempt.model);
      const bool same = previous->provider == attempt.provider && previous->model == attempt.model;
      (same ? series.retries : series.fallbacks)->Increment();
    }
    previous = &attempt;
  }
}

void WorkerMetrics::observe_overhead(const std::vector<protocol::Attempt>& attempts,
                                     std::chrono::nanoseconds held) {
  std::chrono::nanoseconds provider{0};
  for (const protocol::Attempt& attempt : attempts) {
    provider += std::chrono::milliseconds(attempt.duration_ms);
  }
  overhead_->Observe(seconds(std::max(held - provider, std::chrono::nanoseconds{0})));
}

void WorkerMetrics::job_succeeded(const protocol::Response& response,
                                  std::optional<std::chrono::nanoseconds> first_token,
                                  std::chrono::nanoseconds held) {
  outcome_series(jobs_, job_series_, response.provider, response.model, "success").Increment();
  TargetSeries& series = target(response.provider, response.model);
  series.duration->Observe(seconds(held));
  if (first_token) series.first_token->Observe(seconds(*first_token));
  series.input_tokens->Increment(static_cast<double>(response.usage.prompt_tokens));
  series.output_tokens->Increment(static_cast<double>(response.usage.completion_tokens));
  if (response.cost_usd) series.cost_usd->Increment(*response.cost_usd);
  count_attempts(response.attempts);
  observe_overhead(response.attempts, held);
}

void WorkerMetrics::job_failed(const protocol::Error& error, std::string_view provider,
                               std::string_view model, std::chrono::nanoseconds held) {
  const std::string_view p = error.provider.empty() ? provider : std::string_view(error.provider);
  const std::string_view m = error.model.empty() ? model : std::string_view(error.model);
  outcome_series(jobs_, job_series_, p, m, protocol::to_string(error.kind)).Increment();
  target(p, m).duration->Observe(seconds(held));
  count_attempts(error.attempts);
  observe_overhead(error.attempts, held);
}

}  // namespace dispatch::worker
