// The worker runtime against a broker played by the test (fake_broker.hpp) and the real fake
// provider: what the worker sends for each case the protocol and issue 11 name.

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "dispatch/test/fake_provider_process.hpp"
#include "dispatch/test/stack.hpp"
#include "fake_broker.hpp"

namespace dispatch::worker::test {
namespace {

namespace proto = dispatch::protocol;
using dispatch::test::FakeProviderProcess;

class RuntimeTest : public ::testing::Test {
 protected:
  // One provider "local" (Ollama's format) on the fake provider; no retries, no fallback.
  WorkerConfig config(const std::string& worker_keys = {}, const std::string& provider_keys = {}) {
    const std::string yaml = "worker: {concurrency: 100" + worker_keys +
                             "}\n"
                             "defaults: {retry_count: 0, enable_fallback: false}\n"
                             "providers:\n  local: {type: ollama, base_url: '" +
                             fake_.host_url() + "'" + provider_keys + "}\n";
    return parse_config(yaml, "test.yaml", ProcessEnvironment{});
  }

  static proto::Request request(const std::string& model, const std::string& prompt = "hi") {
    proto::Request request;
    request.provider = "local";
    request.model = model;
    request.messages.push_back({"user", prompt, "", {}, {}, "", ""});
    return request;
  }

  // Connects, reads the worker's `ready`.
  void await_ready() { ASSERT_TRUE(broker_.receive_until(proto::Command::ready)); }

  // The final message of `job_id`: result or error, with everything before it in broker_.seen.
  std::optional<WorkerMessage> final_of(const std::string& job_id) {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < deadline) {
      auto message = broker_.receive(1s);
      if (!message) continue;
      if (message->command != proto::Command::result && message->command != proto::Command::error)
        continue;
      auto end = proto::decode<proto::JobEnd>(message->header);
      if (end && end.value().job_id == job_id) return message;
    }
    return std::nullopt;
  }

  static proto::Error error_of(const WorkerMessage& message) {
    EXPECT_EQ(message.command, proto::Command::error);
    auto error = proto::decode<proto::Error>(message.payload);
    EXPECT_TRUE(error.ok());
    return error.ok() ? error.value() : proto::Error{};
  }

  // Chat requests (attempts) the fake provider has read so far.
  uint64_t provider_requests() {
    const auto reply = dispatch::test::http_request("GET", fake_.host_url() + "/_fake/stats");
    return nlohmann::json::parse(reply.body).value("attempts_total", uint64_t{0});
  }

  FakeProviderProcess fake_{FAKE_PROVIDER_BINARY};
  FakeBroker broker_;
};

TEST_F(RuntimeTest, ChunksFollowTheJobHeaderNotTheRequest) {
  RunningWorker worker(config(), quiet_options(broker_));
  await_ready();
  proto::Request quiet = request("m~tokens=3");
  quiet.stream = false;
  broker_.send_job("header-says-stream", quiet, /*stream=*/true);
  ASSERT_TRUE(final_of("header-says-stream"));
  EXPECT_EQ(broker_.count(proto::Command::chunk), 3u);

  broker_.seen.clear();
  proto::Request loud = request("m~tokens=3");
  loud.stream = true;
  broker_.send_job("header-says-no", loud, /*stream=*/false);
  auto final = final_of("header-says-no");
  ASSERT_TRUE(final);
  EXPECT_EQ(final->command, proto::Command::result);
  EXPECT_EQ(broker_.count(proto::Command::chunk), 0u);
}

// Issue 15: a 429 goes to the broker at once as provider_health (with its Retry-After); an
// older broker answers unknown_command, and the worker then stops reporting on that
// connection, quietly, and goes on serving jobs.
TEST_F(RuntimeTest, A429IsReportedAndAnOlderBrokersRefusalIsTolerated) {
  RunningWorker worker(config(), quiet_options(broker_));
  await_ready();
  broker_.send_job("limited-1", request("m~status=429~retry_after=1"), false);
  auto report = broker_.receive_until(proto::Command::provider_health);
  ASSERT_TRUE(report);
  auto health = proto::decode<proto::ProviderHealth>(report->header);
  ASSERT_TRUE(health.ok());
  EXPECT_EQ(health.value().provider, "local");
  EXPECT_EQ(health.value().model, "m~status=429~retry_after=1");
  EXPECT_EQ(health.value().kind, proto::health_kind::rate_limited);
  EXPECT_EQ(health.value().retry_after_ms, 1'000u);
  auto first = final_of("limited-1");
  ASSERT_TRUE(first);
  EXPECT_EQ(error_of(*first).kind, proto::ErrorKind::rate_limited);

  broker_.send(proto::Command::rejected,
               proto::encode(proto::Rejected{"", proto::ErrorKind::invalid_request,
                                             "unknown_command", "unknown command"}));
  broker_.seen.clear();
  broker_.send_job("limited-2", request("m~status=429~retry_after=1"), false);
  auto second = final_of("limited-2");
  ASSERT_TRUE(second);
  EXPECT_EQ(error_of(*second).kind, proto::ErrorKind::rate_limited);
  EXPECT_EQ(broker_.count(proto::Command::provider_health), 0u);
  EXPECT_EQ(broker_.count(proto::Command::ready), 0u);  // still the same connection
}

// Issue 11 (4): an answer over worker.max_response_bytes fails the job as invalid_request /
// response_too_large; the worker keeps its one connection and serves the next job.
TEST_F(RuntimeTest, AnAnswerOverTheCapFailsTheJobAndTheWorkerStaysConnected) {
  RunningWorker worker(config(", max_response_bytes: 65536"), quiet_options(broker_));
  await_ready();
  broker_.send_job("long", request("m~tokens=20000"), /*stream=*/true);  // ~120 KB of words
  auto final = final_of("long");
  ASSERT_TRUE(final);
  const proto::Error error = error_of(*final);
  EXPECT_EQ(error.kind, proto::ErrorKind::invalid_request);
  EXPECT_EQ(error.code, "response_too_large");

  broker_.send_job("next", request("m~tokens=3"), /*stream=*/false);
  auto next = final_of("next");
  ASSERT_TRUE(next);
  EXPECT_EQ(next->command, proto::Command::result);
  EXPECT_EQ(broker_.count(proto::Command::ready), 1u);
  EXPECT_EQ(worker.runtime().stats().connects.load(), 1u);
}

TEST_F(RuntimeTest, AWholeAnswerOverTheCapFailsTheSameWay) {
  RunningWorker worker(config(", max_response_bytes: 65536", ", stream_upstream: false"),
                       quiet_options(broker_));
  await_ready();
  broker_.send_job("long", request("m~tokens=20000"), /*stream=*/false);
  auto final = final_of("long");
  ASSERT_TRUE(final);
  EXPECT_EQ(error_of(*final).code, "response_too_large");
}

// Issue 11 (3): refused before any body is built, so the provider never sees it.
TEST_F(RuntimeTest, ARequestOverTheBodyBoundIsRefusedWithoutCallingTheProvider) {
  RunningWorker worker(config(", max_request_bytes: 4096"), quiet_options(broker_));
  await_ready();
  broker_.send_job("big", request("m", std::string(10'000, 'x')), /*stream=*/false);
  auto final = final_of("big");
  ASSERT_TRUE(final);
  const proto::Error error = error_of(*final);
  EXPECT_EQ(error.kind, proto::ErrorKind::invalid_request);
  EXPECT_EQ(error.code, "request_too_large");
  EXPECT_EQ(error.provider, "local");
  EXPECT_EQ(provider_requests(), 0u);
}

// Issue 11 (6): the broker may hold a job pinned to this worker that the worker does not know;
// the answer (delivery 0, cancelled/unknown_job) lets it release the job. Answers are rate
// limited.
TEST_F(RuntimeTest, ACancelOfAJobNotHeldIsAnsweredAndRateLimited) {
  RunningWorker worker(config(), quiet_options(broker_));
  await_ready();
  broker_.send(proto::Command::cancel, proto::encode(proto::Cancel{"nope"}));
  auto answer = broker_.receive_until(proto::Command::error);
  ASSERT_TRUE(answer);
  EXPECT_EQ(proto::decode<proto::JobEnd>(answer->header).value(), (proto::JobEnd{"nope", 0}));
  const proto::Error error = error_of(*answer);
  EXPECT_EQ(error.kind, proto::ErrorKind::cancelled);
  EXPECT_EQ(error.code, "unknown_job");

  // A finished job is not held either.
  broker_.send_job("done", request("m~tokens=1"), false);
  ASSERT_TRUE(final_of("done"));
  broker_.seen.clear();
  broker_.send(proto::Command::cancel, proto::encode(proto::Cancel{"done"}));
  ASSERT_TRUE(broker_.receive_until(proto::Command::error));

  // A flood gets a bounded number of answers.
  for (int i = 0; i < 1000; ++i) {
    broker_.send(proto::Command::cancel, proto::encode(proto::Cancel{"flood" + std::to_string(i)}));
  }
  const RuntimeStats& stats = worker.runtime().stats();
  ASSERT_TRUE(poll_until(
      [&] { return stats.unknown_cancels_answered + stats.unknown_cancels_suppressed >= 1002; }));
  EXPECT_GT(stats.unknown_cancels_suppressed.load(), 0u);
  EXPECT_LT(stats.unknown_cancels_answered.load(), 1002u);
}

// Issue 11 (5): a slow broker - here a gone one, so that nothing leaves - while a stream of
// chunks queues up: one pump waits at most, however many messages wait.
TEST_F(RuntimeTest, ASlowBrokerNeverHasMoreThanOnePumpWaiting) {
  RuntimeOptions options = quiet_options(broker_);
  options.send_high_water_mark = 1;
  RunningWorker worker(config(), options);
  await_ready();
  broker_.send_job("stream", request("m~tokens=2000~first_token_ms=300"), /*stream=*/true);
  ASSERT_TRUE(poll_until([&] { return provider_requests() >= 1; }));  // the job is at the worker
  broker_.close();
  const RuntimeStats& stats = worker.runtime().stats();
  ASSERT_TRUE(poll_until([&] { return stats.outbox_messages >= 1000; }));
  EXPECT_EQ(stats.max_pending_pumps.load(), 1u);
  broker_.reopen();
  ASSERT_TRUE(final_of("stream"));
  EXPECT_EQ(stats.max_pending_pumps.load(), 1u);
}

// Issue 11 (8): results still queued for the broker when the drain ends reach it before the
// worker exits (a result lost here is a job run again at the provider).
TEST_F(RuntimeTest, ResultsQueuedAtDrainReachTheBrokerBeforeTheWorkerExits) {
  RuntimeOptions options = quiet_options(broker_);
  options.send_high_water_mark = 1;
  RunningWorker worker(config(), options);
  await_ready();
  constexpr int kJobs = 20;
  for (int i = 0; i < kJobs; ++i) {
    broker_.send_job("job" + std::to_string(i), request("m~tokens=2~latency_ms=300"), false);
  }
  ASSERT_TRUE(poll_until([&] { return provider_requests() >= kJobs; }));
  broker_.close();  // the results now wait in the worker
  const RuntimeStats& stats = worker.runtime().stats();
  ASSERT_TRUE(poll_until([&] { return stats.outbox_messages >= kJobs - 2; }));
  worker.runtime().request_drain();
  broker_.reopen();
  int results = 0;
  while (results < kJobs) {
    auto message = broker_.receive(10s);
    ASSERT_TRUE(message) << results << " of " << kJobs << " results arrived";
    if (message->command == proto::Command::result) ++results;
  }
  ASSERT_TRUE(broker_.receive_until(proto::Command::disconnect));
  EXPECT_TRUE(worker.wait_for_exit(10s));
}

}  // namespace
}  // namespace dispatch::worker::test
