// BrokerCore's Prometheus metrics after a scripted workload: exact values, read back from the
// text exposition that GET /metrics serves.

#include "dispatch/broker/metrics.hpp"

#include <gtest/gtest.h>

#include <string>

#include "core_fixture.hpp"
#include "dispatch/metrics/metrics.hpp"
#include "dispatch/test/prometheus_text.hpp"

namespace dispatch::broker {
namespace {

using test::metric_value;

class BrokerMetricsTest : public CoreTest {
 protected:
  void SetUp() override {
    BrokerConfig config;
    config.queue_limit = 4;
    make(config);
    core_->set_metrics(&metrics_);
  }

  void submit_model(const std::string& job_id, Priority priority, bool stream = false) {
    protocol::Submit s{job_id, "openai", priority, 0, stream, {}, "gpt-4o"};
    core_->on_frontend(
        "c1", make_frames(Command::submit, protocol::encode(s), request_payload("openai")));
  }

  double value(const std::string& name, const test::MetricLabels& labels = {}) {
    const std::string text = metrics::render_text(registry_);
    auto found = metric_value(text, name, labels);
    EXPECT_TRUE(found.has_value()) << name << " missing in:\n" << text;
    return found.value_or(-1);
  }
  double jobs(const std::string& outcome) {
    return value("dispatch_jobs_total",
                 {{"provider", "openai"}, {"model", "gpt-4o"}, {"outcome", outcome}});
  }
  double depth(const std::string& priority) {
    return value("dispatch_queue_depth", {{"priority", priority}});
  }

  prometheus::Registry registry_;
  BrokerMetrics metrics_{registry_};
};

TEST_F(BrokerMetricsTest, ScriptedWorkloadGivesExactValues) {
  // Four jobs wait (three interactive, one batch); the fifth finds the queue full.
  submit_model("j1", Priority::interactive);
  submit_model("j2", Priority::interactive);
  submit_model("j3", Priority::interactive, true);
  submit_model("j4", Priority::batch);
  submit_model("j5", Priority::interactive);
  EXPECT_EQ(value("dispatch_jobs_accepted_total"), 4);
  EXPECT_EQ(value("dispatch_submits_rejected_total", {{"code", "queue_full"}}), 1);
  EXPECT_EQ(depth("interactive"), 3);
  EXPECT_EQ(depth("batch"), 1);

  // After 250 ms a worker with three slots takes the interactive jobs.
  clock_.advance(250ms);
  ready("w1", "worker-1", 3);
  core_->sample_metrics();
  EXPECT_EQ(depth("interactive"), 0);
  EXPECT_EQ(value("dispatch_jobs_running"), 3);
  EXPECT_EQ(value("dispatch_queue_wait_seconds_count", {{"priority", "interactive"}}), 3);
  EXPECT_DOUBLE_EQ(value("dispatch_queue_wait_seconds_sum", {{"priority", "interactive"}}), 0.75);
  EXPECT_EQ(
      value("dispatch_queue_wait_seconds_bucket", {{"priority", "interactive"}, {"le", "0.1"}}), 0);
  EXPECT_EQ(
      value("dispatch_queue_wait_seconds_bucket", {{"priority", "interactive"}, {"le", "0.25"}}),
      3);
  EXPECT_EQ(value("dispatch_workers"), 1);
  EXPECT_EQ(value("dispatch_worker_capacity"), 3);
  EXPECT_EQ(value("dispatch_worker_free_slots"), 0);

  // j1 succeeds (its slot goes to the batch job), j2 fails rate_limited, j3 streams and resets.
  result("w1", "j1", 1);
  EXPECT_EQ(value("dispatch_queue_wait_seconds_count", {{"priority", "batch"}}), 1);
  protocol::Error limited;
  limited.kind = ErrorKind::rate_limited;
  worker_error("w1", "j2", 1, limited);
  chunk("w1", "j3", 0, 1);
  reset("w1", "j3", 0, 1);
  EXPECT_EQ(jobs("success"), 1);
  EXPECT_EQ(jobs("rate_limited"), 1);
  EXPECT_EQ(value("dispatch_jobs_running"), 2);
  EXPECT_EQ(value("dispatch_stream_resets_total", {{"origin", "worker"}}), 1);

  // The worker leaves with j3 and j4: both re-queued, j3's client told to start over.
  disconnect("w1");
  core_->sample_metrics();
  EXPECT_EQ(value("dispatch_redeliveries_total"), 2);
  EXPECT_EQ(value("dispatch_stream_resets_total", {{"origin", "broker"}}), 1);
  EXPECT_EQ(value("dispatch_workers_lost_total"), 1);
  EXPECT_EQ(value("dispatch_workers"), 0);
  EXPECT_EQ(value("dispatch_jobs_running"), 0);
  EXPECT_EQ(depth("interactive"), 1);
  EXPECT_EQ(depth("batch"), 1);

  // Garbage on the frontend is dropped and counted.
  core_->on_frontend("c1", make_frames(Command::submit, std::string("\xc1", 1)));
  EXPECT_EQ(value("dispatch_hostile_messages_total"), 1);
  EXPECT_EQ(core_->counters().hostile_messages, 1u);

  // The drain rejects the two waiting jobs.
  core_->begin_drain();
  EXPECT_EQ(jobs("rejected"), 2);
  EXPECT_EQ(depth("interactive"), 0);
  EXPECT_EQ(depth("batch"), 0);
}

TEST_F(BrokerMetricsTest, ModelNamesFromClientsAreBounded) {
  BrokerConfig config;
  config.queue_limit = 1000;
  make(config);
  core_->set_metrics(&metrics_);
  ready("w1", "worker-1", 1000);
  for (int i = 0; i < 150; ++i) {
    const std::string id = "j" + std::to_string(i);
    protocol::Submit s{id, "openai", Priority::normal, 0, false, {}, "model-" + std::to_string(i)};
    core_->on_frontend(
        "c1", make_frames(Command::submit, protocol::encode(s), request_payload("openai")));
    result("w1", id, 1);
  }
  const std::string text = metrics::render_text(registry_);
  EXPECT_EQ(metric_value(text, "dispatch_jobs_total",
                         {{"provider", "openai"}, {"model", "model-0"}, {"outcome", "success"}}),
            1);
  EXPECT_EQ(metric_value(text, "dispatch_jobs_total",
                         {{"provider", "openai"}, {"model", "other"}, {"outcome", "success"}}),
            150 - metrics::kDefaultLabelLimit);
}

TEST_F(BrokerMetricsTest, WithoutMetricsNothingIsCounted) {
  make({});  // no set_metrics
  submit_model("j1", Priority::interactive);
  ready("w1", "worker-1", 1);
  result("w1", "j1", 1);
  EXPECT_EQ(metric_value(metrics::render_text(registry_), "dispatch_jobs_accepted_total"), 0);
}

}  // namespace
}  // namespace dispatch::broker
