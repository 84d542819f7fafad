// Fleet-wide quotas end to end: the real broker with --config limits, four real workers and a
// fake provider that enforces a per-key quota (--limit-rpm). The shapes of issue 15's tests,
// scaled down in time (6,000 rpm instead of 600) so that CI stays fast; the full-size runs
// are in BENCHMARKS.md.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "dispatch/client.hpp"
#include "system_support.hpp"

namespace dispatch {
namespace {

using std::chrono::milliseconds;
using test::poll_until;

constexpr int kLimitRpm = 6'000;  // 100 a second, at most 200 in any second at the fake

class QuotaTest : public ::testing::Test {
 protected:
  void start(const std::string& broker_yaml, const std::string& worker_defaults) {
    const auto binaries = test::StackBinaries::from_build();
    if (!binaries.missing().empty()) GTEST_SKIP() << "not built: " << binaries.missing();
    stack_ = std::make_unique<test::Stack>(binaries);
    stack_->start_fake_provider({"--limit-rpm", std::to_string(kLimitRpm), "--quiet"});
    std::vector<std::string> broker_args{"--heartbeat-ms", "200"};
    if (!broker_yaml.empty()) {
      const std::string path = stack_->dir().file("broker.yaml");
      test::write_text_file(path, broker_yaml);
      broker_args.insert(broker_args.end(), {"--config", path});
    }
    stack_->start_broker(broker_args);
    stack_->start_workers(4, stack_->default_worker_config(worker_defaults));
    stack_->wait_for_workers(4);
    ClientOptions options;
    options.broker_endpoint = stack_->frontend();
    client_ = std::make_unique<Client>(options);
  }

  void TearDown() override {
    client_.reset();
    stack_.reset();
  }

  // Submits `jobs` batch jobs at once; returns how many succeeded once all ended.
  int run_batch(int jobs, const std::string& model, uint32_t retry_count,
                const std::function<void(int done)>& on_progress = {}) {
    std::atomic<int> done{0};
    std::atomic<int> succeeded{0};
    for (int i = 0; i < jobs; ++i) {
      auto request = DispatchRequest("openai", model, {Message::user("q" + std::to_string(i))})
                         .with_priority(Priority::batch)
                         .with_retry_count(retry_count)
                         .with_queue_timeout_ms(120'000);
      client_->dispatch_async(request, [&](DispatchOutcome outcome) {
        if (outcome.ok()) ++succeeded;
        ++done;
      });
    }
    int reported = 0;
    EXPECT_TRUE(poll_until(
        [&] {
          if (on_progress && done.load() != reported) on_progress(reported = done.load());
          return done.load() == jobs;
        },
        milliseconds(180'000)));
    return succeeded.load();
  }

  std::unique_ptr<test::Stack> stack_;
  std::unique_ptr<Client> client_;
};

// 4 workers, limits configured at the broker: a batch of 1,000 jobs (10 s of quota) with
// retry_count 5 all succeed, with at most 0.5 % of the provider's attempts refused; an
// interactive job submitted mid-batch goes ahead of the waiting batch.
TEST_F(QuotaTest, ABatchAtTheLimitSeesNo429AndInteractiveJobsGoFirst) {
  start("limits:\n  openai: {rpm: " + std::to_string(kLimitRpm) + "}\n", "");
  std::optional<PendingDispatch> interactive;
  const int succeeded = run_batch(1'000, "gpt-4o-mini", 5, [&](int done) {
    if (done < 300 || interactive) return;
    interactive.emplace(client_->dispatch_async(
        DispatchRequest("openai", "gpt-4o-mini~tokens=5", {Message::user("now")})));
  });
  EXPECT_EQ(succeeded, 1'000);
  ASSERT_TRUE(interactive);
  ASSERT_EQ(interactive->wait_for(milliseconds(0)), std::future_status::ready);
  EXPECT_NO_THROW(interactive->get());

  const nlohmann::json stats = test::fake_stats(stack_->fake().host_url());
  const double attempts = stats.at("attempts_total").get<double>();
  const double refused = stats.at("status_429_total").get<double>();
  EXPECT_LE(refused, attempts * 0.005) << stats.dump();
  // The interactive job did not wait for the ~700 batch jobs queued before it: it reached the
  // provider long before the last batch job did (700 jobs are 7 s of quota).
  const nlohmann::json log = stack_->fake_log();
  double interactive_t = -1;
  double last_t = 0;
  for (const auto& attempt : log) {
    last_t = std::max(last_t, attempt.at("t_ms").get<double>());
    if (attempt.at("model") == "gpt-4o-mini~tokens=5") {
      interactive_t = attempt.at("t_ms").get<double>();
    }
  }
  ASSERT_GE(interactive_t, 0) << "the interactive job never reached the provider";
  EXPECT_LT(interactive_t + 3'000, last_t);
}

// No limits configured: a 429 with Retry-After: 2 seen by one worker pauses the target for
// every worker; the provider receives nothing for it for 2 s, and the breaker stays closed.
TEST_F(QuotaTest, A429PausesTheTargetForTheWholeFleet) {
  start("", "");
  const std::string model = "gpt~fail_first=1~status=429~retry_after=2";
  auto first = client_->dispatch_async(DispatchRequest("openai", model, {Message::user("a")}));
  // Wait until the broker holds the pause (the report arrived), then load every worker.
  ASSERT_TRUE(poll_until(
      [&] {
        const auto status = stack_->status();
        if (!status) return false;
        for (const auto& q : status->quotas) {
          if (q.paused_ms) return true;
        }
        return false;
      },
      milliseconds(10'000)));
  std::vector<PendingDispatch> rest;
  for (int i = 0; i < 12; ++i) {
    rest.push_back(client_->dispatch_async(
        DispatchRequest("openai", model, {Message::user("b" + std::to_string(i))})));
  }
  EXPECT_NO_THROW(first.get());
  for (auto& job : rest) EXPECT_NO_THROW(job.get());

  const nlohmann::json log = stack_->fake_log();
  ASSERT_GE(log.size(), 14u);
  double refused_at = -1;
  for (const auto& attempt : log) {
    if (attempt.value("status", 0) == 429) refused_at = attempt.at("t_ms").get<double>();
  }
  ASSERT_GE(refused_at, 0) << log.dump();
  for (const auto& attempt : log) {
    const double t = attempt.at("t_ms").get<double>();
    if (t == refused_at) continue;
    EXPECT_GE(t, refused_at + 2'000) << attempt.dump();
  }
  const auto status = stack_->status();
  ASSERT_TRUE(status);
  for (const auto& q : status->quotas) EXPECT_TRUE(q.breaker.empty()) << q.key;
}

}  // namespace
}  // namespace dispatch
