// WorkerMetrics: the cost of answered jobs is counted per answering target from each result's
// cost_usd, and results without a known price add nothing.

#include "dispatch/worker/runtime/worker_metrics.hpp"

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <chrono>
#include <optional>
#include <string>

namespace dispatch::worker {
namespace {

std::optional<double> counter_value(prometheus::Registry& registry, const std::string& name,
                                    const std::string& model) {
  for (const prometheus::MetricFamily& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const prometheus::ClientMetric& metric : family.metric) {
      for (const prometheus::ClientMetric::Label& label : metric.label) {
        if (label.name == "model" && label.value == model) return metric.counter.value;
      }
    }
  }
  return std::nullopt;
}

protocol::Response answer(const std::string& model, std::optional<double> cost_usd) {
  protocol::Response response;
  response.provider = "openai";
  response.model = model;
  response.usage = {10, 20, 30};
  response.cost_usd = cost_usd;
  return response;
}

TEST(WorkerMetricsTest, CostIsSummedPerAnsweringTargetFromEachResult) {
  prometheus::Registry registry;
  WorkerMetrics metrics(registry);
  metrics.job_succeeded(answer("gpt-4o-mini", 0.25), std::nullopt, std::chrono::milliseconds(5));
  metrics.job_succeeded(answer("gpt-4o-mini", 0.125), std::nullopt, std::chrono::milliseconds(5));
  metrics.job_succeeded(answer("unpriced", std::nullopt), std::nullopt,
                        std::chrono::milliseconds(5));
  EXPECT_DOUBLE_EQ(counter_value(registry, "dispatch_cost_usd_total", "gpt-4o-mini").value_or(-1),
                   0.375);
  EXPECT_DOUBLE_EQ(counter_value(registry, "dispatch_cost_usd_total", "unpriced").value_or(-1), 0);
  EXPECT_DOUBLE_EQ(
      counter_value(registry, "dispatch_output_tokens_total", "gpt-4o-mini").value_or(-1), 40);
}

}  // namespace
}  // namespace dispatch::worker
