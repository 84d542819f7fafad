// Unit tests of BrokerCore: every decision driven by hand, time by a ManualClock, output
// recorded by a fake Transport. No sockets.

#include "dispatch/broker/core.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core_fixture.hpp"
#include "dispatch/common/trace.hpp"
#include "dispatch/protocol/codec.hpp"

namespace dispatch::broker {
namespace {

// ---------------------------------------------------------------------------------------------

TEST_F(CoreTest, SubmitIsAcceptedAndWaitsWithoutWorker) {
  submit("c1", "j1");
  auto sent = take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_TRUE(sent[0].to_client);
  EXPECT_EQ(sent[0].route, "c1");
  ASSERT_EQ(sent[0].command, Command::accepted);
  auto accepted = decode_or_die<protocol::Accepted>(sent[0].header());
  EXPECT_EQ(accepted.job_id, "j1");
  EXPECT_EQ(accepted.broker_id, "broker-1");
  EXPECT_FALSE(accepted.duplicate);
  EXPECT_EQ(core_->queued(), 1u);
  EXPECT_EQ(core_->status().queue_depth, (std::vector<uint64_t>{1, 0, 0}));
}

TEST_F(CoreTest, JobCarriesRequestPayloadAndDeliveryOne) {
  submit("c1", "j1", "openai", Priority::interactive, true);
  take();
  ready("w1", "worker-1", 4);
  auto sent = take();
  auto jobs = of(sent, Command::job, false);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].route, "w1");
  auto header = decode_or_die<protocol::JobHeader>(jobs[0].header());
  EXPECT_EQ(header.job_id, "j1");
  EXPECT_EQ(header.delivery, 1u);
  EXPECT_TRUE(header.stream);
  EXPECT_EQ(jobs[0].payload(), request_payload("openai"));
}

// The job's W3C trace context reaches the worker: the client's when valid; otherwise (none, or
// one the spec's parsing refuses, which is ignored, never rejected) a fresh trace.
TEST_F(CoreTest, JobHeaderCarriesTheClientsTraceOrAFreshOne) {
  const std::string given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  const std::vector<std::pair<std::string, std::string>> submits = {
      {"traced", given},
      {"untraced", ""},
      {"uppercase", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"},
      {"zeros", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"}};
  for (const auto& [job_id, traceparent] : submits) {
    protocol::Submit s{job_id, "openai", Priority::interactive, 0, false, {}};
    s.traceparent = traceparent;
    core_->on_frontend(
        "c1", make_frames(Command::submit, protocol::encode(s), request_payload("openai")));
  }
  auto answers = take();
  EXPECT_EQ(of(answers, Command::accepted, true).size(), 4u);  // none refused
  ready("w1", "worker-1", 4);
  auto to_worker = take();
  std::map<std::string, std::string> sent;
  for (const auto& job : of(to_worker, Command::job, false)) {
    auto header = decode_or_die<protocol::JobHeader>(job.header());
    sent[header.job_id] = header.traceparent;
  }
  ASSERT_EQ(sent.size(), 4u);
  EXPECT_EQ(sent["traced"], given);
  std::set<std::string> trace_ids;
  for (const std::string job_id : {"untraced", "uppercase", "zeros"}) {
    auto parsed = parse_traceparent(sent[job_id]);
    ASSERT_TRUE(parsed) << job_id << ": " << sent[job_id];
    EXPECT_NE(parsed->trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    trace_ids.insert(parsed->trace_id);
  }
  EXPECT_EQ(trace_ids.size(), 3u);  // each its own trace
}

TEST_F(CoreTest, PriorityClassesAreServedInOrder) {
  submit("c1", "batch", "openai", Priority::batch);
  submit("c1", "normal", "openai", Priority::normal);
  submit("c1", "interactive", "openai", Priority::interactive);
  take();
  ready("w1", "worker-1", 1);
  std::vector<std::string> order = take_job_ids();
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(order.size(), static_cast<std::size_t>(i + 1));
    result("w1", order.back(), 1);
    auto next = take_job_ids();
    order.insert(order.end(), next.begin(), next.end());
  }
  EXPECT_EQ(order, (std::vector<std::string>{"interactive", "normal", "batch"}));
}

TEST_F(CoreTest, FifoWithinAClientAndRoundRobinAcrossClients) {
  // Client A queues a big batch first; B and C queue a little later. With one slot, B and C
  // must not wait behind all of A's jobs.
  for (int i = 0; i < 6; ++i) submit("A", "a" + std::to_string(i), "openai", Priority::batch);
  for (int i = 0; i < 2; ++i) submit("B", "b" + std::to_string(i), "openai", Priority::batch);
  submit("C", "c0", "openai", Priority::batch);
  take();
  ready("w1", "worker-1", 1);
  std::vector<std::string> order = take_job_ids();
  for (int i = 0; i < 9 && !order.empty(); ++i) {
    result("w1", order.back(), 1);
    auto next = take_job_ids();
    order.insert(order.end(), next.begin(), next.end());
  }
  EXPECT_EQ(order,
            (std::vector<std::string>{"a0", "b0", "c0", "a1", "b1", "a2", "a3", "a4", "a5"}));
}

TEST_F(CoreTest, HigherPriorityOvertakesAcrossProvidersOfOneWorker) {
  submit("c1", "o-batch", "openai", Priority::batch);
  submit("c1", "l-inter", "ollama", Priority::interactive);
  submit("c1", "o-normal", "openai", Priority::normal);
  take();
  ready("w1", "worker-1", 1, {"openai", "ollama"});
  std::vector<std::string> order = take_job_ids();
  for (int i = 0; i < 3; ++i) {
    result("w1", order.back(), 1);
    auto next = take_job_ids();
    order.insert(order.end(), next.begin(), next.end());
  }
  EXPECT_EQ(order, (std::vector<std::string>{"l-inter", "o-normal", "o-batch"}));
}

TEST_F(CoreTest, LeastLoadedWorkerFirstAndCapacityNeverExceeded) {
  ready("big", "worker-big", 4);
  ready("small", "worker-small", 2);
  take();
  std::map<std::string, int> load;
  std::vector<std::string> sequence;
  for (int i = 0; i < 6; ++i) {
    submit("c1", "j" + std::to_string(i));
    for (auto& [route, header] : take_jobs()) {
      ++load[route];
      sequence.push_back(route);
    }
  }
  // Ratios: big 0/4 ties small 0/2 -> big registered first (idle longest); then small 0/2 <
  // big 1/4; then big 1/4 < small 1/2; big 2/4 ties small 1/2 -> small idle longer; ...
  EXPECT_EQ(sequence, (std::vector<std::string>{"big", "small", "big", "small", "big", "big"}));
  EXPECT_EQ(load["big"], 4);
  EXPECT_EQ(load["small"], 2);
  // Both full: more jobs wait.
  for (int i = 6; i < 20; ++i) submit("c1", "j" + std::to_string(i));
  EXPECT_TRUE(take_jobs().empty());
  EXPECT_EQ(core_->queued(), 14u);
  EXPECT_EQ(core_->running(), 6u);
  // One slot frees at small: exactly one job goes there.
  result("small", "j1", 1);
  auto jobs = take_jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].first, "small");
  EXPECT_EQ(core_->find_worker("small")->in_flight.size(), 2u);
  EXPECT_EQ(core_->find_worker("big")->in_flight.size(), 4u);
}

TEST_F(CoreTest, CapacityInvariantUnderRandomTraffic) {
  std::mt19937 random(7);
  const std::vector<std::string> providers = {"openai", "ollama", "claude"};
  std::map<std::string, uint32_t> capacity = {{"w0", 3}, {"w1", 5}, {"w2", 1}};
  ready("w0", "worker-0", 3, {"openai", "ollama"});
  ready("w1", "worker-1", 5, {"openai", "claude"});
  ready("w2", "worker-2", 1, {"ollama", "claude"});
  std::map<std::string, std::pair<std::string, uint32_t>> running;  // job -> (worker, delivery)
  std::set<std::string> finished;
  int next_id = 0;
  for (int step = 0; step < 5'000; ++step) {
    if (random() % 2 == 0 || running.empty()) {
      const std::string id = "job" + std::to_string(next_id++);
      submit("client" + std::to_string(random() % 4), id, providers[random() % 3],
             static_cast<Priority>(random() % 3));
    } else {
      auto it = running.begin();
      std::advance(it, random() % running.size());
      result(it->second.first, it->first, it->second.second);
      finished.insert(it->first);
      running.erase(it);
    }
    for (Sent& s : take()) {
      if (s.to_client && s.command == Command::result) {
        auto end = decode_or_die<protocol::JobEnd>(s.header());
        EXPECT_TRUE(finished.contains(end.job_id));
      }
      if (!s.to_client && s.command == Command::job) {
        auto header = decode_or_die<protocol::JobHeader>(s.header());
        EXPECT_FALSE(running.contains(header.job_id)) << "dispatched twice";
        running[header.job_id] = {s.route, header.delivery};
      }
    }
    for (auto& [route, cap] : capacity) {
      ASSERT_LE(core_->find_worker(route)->in_flight.size(), cap);
    }
  }
  // Drain everything that is left.
  for (int guard = 0; guard < 10'000 && !running.empty(); ++guard) {
    auto it = running.begin();
    result(it->second.first, it->first, it->second.second);
    finished.insert(it->first);
    running.erase(it);
    for (auto& [route, header] : take_jobs()) running[header.job_id] = {route, header.delivery};
  }
  EXPECT_EQ(finished.size(), static_cast<std::size_t>(next_id));
  EXPECT_EQ(core_->queued(), 0u);
  EXPECT_EQ(core_->running(), 0u);
}

TEST_F(CoreTest, OnlyWorkersServingTheProviderGetItsJobs) {
  ready("w1", "worker-1", 4, {"openai"});
  take();
  submit("c1", "j1", "ollama");
  EXPECT_TRUE(take_jobs().empty());
  EXPECT_EQ(core_->queued(), 1u);
  ready("w2", "worker-2", 4, {"ollama"});
  auto jobs = take_jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].first, "w2");
}

TEST_F(CoreTest, QueueBoundRejectsWithQueueFull) {
  BrokerConfig config;
  config.queue_limit = 3;
  make(config);
  for (int i = 0; i < 3; ++i) submit("c1", "j" + std::to_string(i));
  take();
  submit("c1", "j3");
  auto sent = take();
  ASSERT_EQ(sent.size(), 1u);
  ASSERT_EQ(sent[0].command, Command::rejected);
  auto rejected = decode_or_die<protocol::Rejected>(sent[0].header());
  EXPECT_EQ(rejected.job_id, "j3");
  EXPECT_EQ(rejected.kind, ErrorKind::queue_full);
  EXPECT_EQ(rejected.code, "queue_full");
  EXPECT_EQ(core_->queued(), 3u);
  EXPECT_EQ(core_->find_job("j3"), nullptr);
  // A job that a free worker takes at once does not wait, so the bound does not apply to it.
  ready("w2", "worker-2", 10, {"claude"});
  take();
  submit("c1", "j4", "claude");
  auto after = take();
  EXPECT_EQ(of(after, Command::accepted).size(), 1u);
  EXPECT_EQ(of(after, Command::job, false).size(), 1u);
}

TEST_F(CoreTest, QueueDeadlineEndsWithTimeoutWhenAWorkerServesTheProvider) {
  ready("w1", "worker-1", 1);
  submit("c1", "busy");
  submit("c1", "waits", "openai", Priority::interactive, false, 500);
  take();
  advance(499ms);
  EXPECT_TRUE(take_of(Command::error).empty());
  advance(1ms);
  auto sent = take();
  auto errors = of(sent, Command::error);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(decode_or_die<protocol::JobEnd>(errors[0].header()).job_id, "waits");
  auto error = decode_or_die<protocol::Error>(errors[0].payload());
  EXPECT_EQ(error.kind, ErrorKind::timeout);
  EXPECT_EQ(error.code, "queue_deadline");
  EXPECT_EQ(core_->queued(), 0u);
}

TEST_F(CoreTest, QueueDeadlineEndsWithUnsupportedProviderWhenNoWorkerServesIt) {
  BrokerConfig config;
  config.queue_timeout = 2'000ms;  // the default applies when submit says 0
  make(config);
  ready("w1", "worker-1", 4, {"openai"});
  submit("c1", "j1", "nobody-serves-this");
  take();
  advance(1'999ms);
  EXPECT_TRUE(take_of(Command::error).empty());
  advance(1ms);
  auto sent = take();
  auto errors = of(sent, Command::error);
  ASSERT_EQ(errors.size(), 1u);
  auto error = decode_or_die<protocol::Error>(errors[0].payload());
  EXPECT_EQ(error.kind, ErrorKind::unsupported_provider);
  EXPECT_EQ(error.code, "queue_deadline");
  EXPECT_EQ(error.provider, "nobody-serves-this");
}

TEST_F(CoreTest, LateJoiningWorkerGetsWaitingJobs) {
  submit("c1", "j1", "ollama", Priority::interactive, false, 10'000);
  submit("c1", "j2", "ollama", Priority::interactive, false, 10'000);
  take();
  advance(5'000ms);
  EXPECT_TRUE(take_jobs().empty());
  ready("w1", "worker-1", 8, {"ollama"});
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j1", "j2"}));
  advance(10'000ms);  // the deadline no longer applies once running
  EXPECT_TRUE(take_of(Command::error).empty());
}

TEST_F(CoreTest, ResubmitOfQueuedJobIsDuplicateAndMovesTheReplyRoute) {
  submit("old-client", "j1");
  take();
  submit("new-client", "j1");
  auto sent = take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].route, "new-client");
  EXPECT_TRUE(decode_or_die<protocol::Accepted>(sent[0].header()).duplicate);
  EXPECT_EQ(core_->queued(), 1u);
  ready("w1", "worker-1", 1);
  ASSERT_EQ(take_job_ids(), (std::vector<std::string>{"j1"}));
  result("w1", "j1", 1);
  auto results = take_of(Command::result);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].route, "new-client");
}

TEST_F(CoreTest, ResubmitOfRunningJobIsDuplicateWithoutSecondDispatch) {
  ready("w1", "worker-1", 4);
  submit("c1", "j1");
  take();
  submit("c2", "j1");
  auto sent = take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_TRUE(decode_or_die<protocol::Accepted>(sent[0].header()).duplicate);
  result("w1", "j1", 1);
  auto results = take_of(Command::result);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].route, "c2");
}

TEST_F(CoreTest, ResubmitOfFinishedJobReplaysTheStoredResult) {
  ready("w1", "worker-1", 4);
  submit("c1", "j1");
  take();
  result("w1", "j1", 1);
  auto first = take_of(Command::result);
  ASSERT_EQ(first.size(), 1u);
  const std::string original_payload(first[0].payload());

  submit("c9", "j1");
  auto sent = take();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[0].command, Command::accepted);
  EXPECT_TRUE(decode_or_die<protocol::Accepted>(sent[0].header()).duplicate);
  EXPECT_EQ(sent[1].command, Command::result);
  EXPECT_EQ(sent[1].route, "c9");
  EXPECT_EQ(sent[1].payload(), original_payload);
  EXPECT_EQ(core_->status().providers.at("openai").submitted, 1u);  // not called twice
}

TEST_F(CoreTest, ResubmitOfFailedJobReplaysTheStoredError) {
  submit("c1", "j1");
  cancel("c1", "j1");
  take();
  submit("c1", "j1");
  auto sent = take();
  ASSERT_EQ(sent.size(), 2u);
  EXPECT_EQ(sent[1].command, Command::error);
  EXPECT_EQ(decode_or_die<protocol::Error>(sent[1].payload()).kind, ErrorKind::cancelled);
}

TEST_F(CoreTest, FinishedResultsExpireAfterTheirTtl) {
  BrokerConfig config;
  config.result_ttl = 1'000ms;
  make(config);
  ready("w1", "worker-1", 4);
  submit("c1", "j1");
  result("w1", "j1", 1);
  take();
  advance(999ms);
  EXPECT_NE(core_->find_job("j1"), nullptr);
  advance(1ms);
  EXPECT_EQ(core_->find_job("j1"), nullptr);
  take();
  // Forgotten: the same id is a new job now.
  submit("c1", "j1");
  auto sent = take();
  EXPECT_FALSE(decode_or_die<protocol::Accepted>(sent.at(0).header()).duplicate);
  EXPECT_EQ(of(sent, Command::job, false).size(), 1u);
}

TEST_F(CoreTest, FinishedResultsAreBoundedInCountOldestFirst) {
  BrokerConfig config;
  config.result_keep = 2;
  make(config);
  ready("w1", "worker-1", 4);
  for (const char* id : {"j1", "j2", "j3"}) {
    submit("c1", id);
    result("w1", id, 1);
  }
  EXPECT_EQ(core_->finished_kept(), 2u);
  EXPECT_EQ(core_->find_job("j1"), nullptr);
  EXPECT_NE(core_->find_job("j2"), nullptr);
  EXPECT_NE(core_->find_job("j3"), nullptr);
  EXPECT_EQ(core_->status().finished_kept, 2u);
}

TEST_F(CoreTest, SilentWorkerJobsAreRedeliveredWithResetForStreamedJobs) {
  BrokerConfig config;
  config.heartbeat_interval = 100ms;
  config.liveness = 3;
  make(config);
  ready("w1", "worker-1", 2);
  submit("c1", "streamed", "openai", Priority::interactive, true);
  submit("c1", "plain");
  take();
  chunk("w1", "streamed", 0, 1);
  auto relayed = take_of(Command::chunk);
  ASSERT_EQ(relayed.size(), 1u);
  ready("w2", "worker-2", 2);
  take();
  // w2 stays alive, w1 says nothing.
  for (int i = 0; i < 5; ++i) {
    advance(100ms);
    worker_heartbeat("w2");
  }
  EXPECT_EQ(core_->find_worker("w1"), nullptr);
  auto sent = take();
  // The reset reaches the client before the new delivery exists (so before its chunks).
  const auto reset_at = std::find_if(sent.begin(), sent.end(),
                                     [](const Sent& s) { return s.command == Command::reset; });
  const auto job_at = std::find_if(sent.begin(), sent.end(),
                                   [](const Sent& s) { return s.command == Command::job; });
  EXPECT_LT(reset_at - sent.begin(), job_at - sent.begin());
  auto resets = of(sent, Command::reset);
  ASSERT_EQ(resets.size(), 1u);
  EXPECT_EQ(resets[0].route, "c1");
  auto reset = decode_or_die<protocol::StreamReset>(resets[0].header());
  EXPECT_EQ(reset.job_id, "streamed");
  EXPECT_EQ(reset.next_seq, 0u);
  std::map<std::string, protocol::JobHeader> redelivered;
  for (Sent& s : of(sent, Command::job, false)) {
    EXPECT_EQ(s.route, "w2");
    auto header = decode_or_die<protocol::JobHeader>(s.header());
    redelivered[header.job_id] = header;
  }
  ASSERT_EQ(redelivered.size(), 2u);
  EXPECT_EQ(redelivered["streamed"].delivery, 2u);
  EXPECT_EQ(redelivered["plain"].delivery, 2u);
  EXPECT_EQ(core_->counters().redeliveries, 2u);
}

TEST_F(CoreTest, RedeliveredJobsGoToTheFrontOfTheirClass) {
  ready("w1", "worker-1", 1);
  submit("c1", "first");
  submit("c1", "second");
  submit("c1", "third");
  take();
  core_->on_backend(
      "w1", make_frames(Command::disconnect, protocol::encode(protocol::Disconnect{"bye"})));
  ready("w2", "worker-2", 1);
  auto ids = take_job_ids();
  ASSERT_EQ(ids, (std::vector<std::string>{"first"}));
}

TEST_F(CoreTest, RedeliveryLimitEndsTheJob) {
  BrokerConfig config;
  config.redelivery_limit = 1;
  make(config);
  submit("c1", "j1");
  take();
  ready("w1", "worker-1", 1);
  ASSERT_EQ(take_jobs().at(0).second.delivery, 1u);
  core_->on_backend(
      "w1", make_frames(Command::disconnect, protocol::encode(protocol::Disconnect{"bye"})));
  ready("w2", "worker-2", 1);
  ASSERT_EQ(take_jobs().at(0).second.delivery, 2u);
  core_->on_backend(
      "w2", make_frames(Command::disconnect, protocol::encode(protocol::Disconnect{"bye"})));
  auto errors = take_of(Command::error);
  ASSERT_EQ(errors.size(), 1u);
  auto error = decode_or_die<protocol::Error>(errors[0].payload());
  EXPECT_EQ(error.kind, ErrorKind::internal);
  EXPECT_EQ(error.code, "redelivery_limit");
}

TEST_F(CoreTest, TrafficFromAStaleDeliveryIsDropped) {
  ready("w1", "worker-1", 1);
  submit("c1", "j1", "openai", Priority::interactive, true);
  take();
  // w1 reconnects under a new routing id: its old delivery is void.
  ready("w1-new", "worker-1", 1);
  auto jobs = take_jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].first, "w1-new");
  EXPECT_EQ(jobs[0].second.delivery, 2u);
  // The old connection is unknown now: its traffic is answered with disconnect, not relayed.
  result("w1", "j1", 1);
  auto sent = take();
  EXPECT_TRUE(of(sent, Command::result).empty());
  ASSERT_EQ(of(sent, Command::disconnect, false).size(), 1u);
  // The new connection sending the old delivery number: dropped as a zombie.
  chunk("w1-new", "j1", 0, 1);
  result("w1-new", "j1", 1);
  sent = take();
  EXPECT_TRUE(sent.empty());
  EXPECT_EQ(core_->counters().zombie_messages, 2u);
  result("w1-new", "j1", 2);
  EXPECT_EQ(take_of(Command::result).size(), 1u);
}

TEST_F(CoreTest, ChunksAndResultsAreRelayedUnchanged) {
  ready("w1", "worker-1", 1);
  submit("c1", "j1", "openai", Priority::interactive, true);
  take();
  protocol::ChunkHeader header{protocol::Chunk{"j1", 0, "Hel", {}, {}}, 1};
  const std::string encoded = protocol::encode(header);
  core_->on_backend("w1", make_frames(Command::chunk, encoded));
  auto sent = take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].route, "c1");
  EXPECT_EQ(sent[0].command, Command::chunk);
  EXPECT_EQ(sent[0].header(), encoded);
  EXPECT_EQ(decode_or_die<protocol::Chunk>(sent[0].header()).content, "Hel");
}

TEST_F(CoreTest, UnknownWorkerGetsDisconnect) {
  worker_heartbeat("stranger");
  auto sent = take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_FALSE(sent[0].to_client);
  EXPECT_EQ(sent[0].command, Command::disconnect);
  // A disconnect from an unknown worker is not answered.
  core_->on_backend("stranger",
                    make_frames(Command::disconnect, protocol::encode(protocol::Disconnect{"x"})));
  EXPECT_TRUE(take().empty());
}

TEST_F(CoreTest, CancelQueuedJobEndsAtOnce) {
  submit("c1", "j1");
  take();
  cancel("c1", "j1");
  auto errors = take_of(Command::error);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(decode_or_die<protocol::Error>(errors[0].payload()).kind, ErrorKind::cancelled);
  EXPECT_EQ(core_->queued(), 0u);
  ready("w1", "worker-1", 1);
  EXPECT_TRUE(take_jobs().empty());
}

TEST_F(CoreTest, CancelRunningJobGoesToItsWorkerAndItsErrorIsRelayed) {
  ready("w1", "worker-1", 1);
  submit("c1", "j1");
  take();
  cancel("c1", "j1");
  auto sent = take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].route, "w1");
  EXPECT_EQ(sent[0].command, Command::cancel);
  EXPECT_EQ(decode_or_die<protocol::Cancel>(sent[0].header()).job_id, "j1");
  protocol::Error error;
  error.kind = ErrorKind::cancelled;
  error.message = "cancelled";
  worker_error("w1", "j1", 1, error);
  auto errors = take_of(Command::error);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].route, "c1");
  EXPECT_EQ(decode_or_die<protocol::Error>(errors[0].payload()).kind, ErrorKind::cancelled);
}

// Every ending with `error` is counted by the kind its client saw, the worker's and the
// broker's own alike; answers are not.
TEST_F(CoreTest, StatusCountsFailedJobsByKind) {
  ready("w1", "worker-1", 4);
  for (const char* id : {"j1", "j2", "j3"}) submit("c1", id);
  protocol::Error limited;
  limited.kind = ErrorKind::rate_limited;
  limited.message = "429";
  worker_error("w1", "j1", 1, limited);
  worker_error("w1", "j2", 1, limited);
  result("w1", "j3", 1);
  take();
  const auto counted = core_->status().failed_by_kind;
  EXPECT_EQ(counted, (std::map<std::string, uint64_t>{{"rate_limited", 2}}));
  EXPECT_EQ(core_->status().providers.at("openai").failed, 2u);
}

TEST_F(CoreTest, CancelOfUnknownOrFinishedJobIsIgnored) {
  cancel("c1", "nope");
  EXPECT_TRUE(take().empty());
  ready("w1", "worker-1", 1);
  submit("c1", "j1");
  result("w1", "j1", 1);
  take();
  cancel("c1", "j1");
  EXPECT_TRUE(take().empty());
}

TEST_F(CoreTest, CancelledRunningJobIsNotRedeliveredWhenItsWorkerDies) {
  ready("w1", "worker-1", 1);
  submit("c1", "j1");
  cancel("c1", "j1");
  take();
  core_->on_backend(
      "w1", make_frames(Command::disconnect, protocol::encode(protocol::Disconnect{"bye"})));
  ready("w2", "worker-2", 1);
  auto sent = take();
  EXPECT_TRUE(of(sent, Command::job, false).empty());
  auto errors = of(sent, Command::error);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(decode_or_die<protocol::Error>(errors[0].payload()).kind, ErrorKind::cancelled);
}

TEST_F(CoreTest, DrainingWorkerGetsNothingUntilCreditReturns) {
  ready("w1", "worker-1", 2);
  credit("w1", 0);
  submit("c1", "j1");
  EXPECT_TRUE(take_jobs().empty());
  EXPECT_EQ(core_->status().workers.at(0).state, "draining");
  credit("w1", 3);
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j1"}));
  EXPECT_EQ(core_->status().workers.at(0).state, "ready");
  EXPECT_EQ(core_->status().workers.at(0).capacity, 3u);
}

TEST_F(CoreTest, CreditIsAbsoluteAndIdempotent) {
  ready("w1", "worker-1", 1);
  for (int i = 0; i < 5; ++i) submit("c1", "j" + std::to_string(i));
  take();
  credit("w1", 3);
  credit("w1", 3);
  EXPECT_EQ(core_->find_worker("w1")->in_flight.size(), 3u);
  EXPECT_EQ(core_->running(), 3u);
}

TEST_F(CoreTest, WorkerDisconnectRequeuesItsJobs) {
  ready("w1", "worker-1", 2);
  submit("c1", "j1");
  take();
  core_->on_backend("w1", make_frames(Command::disconnect,
                                      protocol::encode(protocol::Disconnect{"shutting down"})));
  EXPECT_EQ(core_->worker_count(), 0u);
  EXPECT_EQ(core_->queued(), 1u);
  ready("w2", "worker-2", 2);
  auto jobs = take_jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].second.delivery, 2u);
}

TEST_F(CoreTest, UnreachableWorkerIsLostAndItsJobGoesElsewhere) {
  BrokerConfig config;
  config.heartbeat_interval = 100ms;
  config.liveness = 4;
  make(config);
  ready("w1", "worker-1", 1);
  ready("w2", "worker-2", 1);
  take();
  transport_.unreachable.insert("w1");
  submit("c1", "j1");
  auto jobs = take_jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].first, "w2");
  EXPECT_EQ(jobs[0].second.delivery, 1u) << "a job that never reached w1 is not a redelivery";
  // Its connection is gone; it gets a liveness window to come back before it is lost.
  const auto* w1 = core_->find_worker("w1");
  ASSERT_NE(w1, nullptr);
  EXPECT_TRUE(w1->detached);
  for (int i = 0; i < 10 && core_->find_worker("w1") != nullptr; ++i) {
    advance(50ms);
    worker_heartbeat("w2");
  }
  EXPECT_EQ(core_->find_worker("w1"), nullptr);
}

TEST_F(CoreTest, WorkerWhoseConnectionClosedKeepsItsJobsIfItComesBackInTime) {
  BrokerConfig config;
  config.heartbeat_interval = 100ms;
  config.liveness = 4;
  make(config);
  ready("w1", "worker-1", 2);
  submit("c1", "j1");
  submit("c1", "j2");
  take();
  // The worker closed its connection (it thought us dead); our next heartbeat finds no peer.
  transport_.unreachable.insert("w1");
  advance(100ms);
  advance(100ms);
  ASSERT_NE(core_->find_worker("w1"), nullptr);
  EXPECT_TRUE(core_->find_worker("w1")->detached);
  EXPECT_EQ(core_->counters().redeliveries, 0u);
  ready("w1-new", "worker-1", 2, {"openai"}, {{"j1", 1}, {"j2", 1}});
  EXPECT_TRUE(take_jobs().empty());
  EXPECT_EQ(core_->counters().jobs_kept, 2u);
  EXPECT_EQ(core_->counters().redeliveries, 0u);
  result("w1-new", "j1", 1);
  result("w1-new", "j2", 1);
  EXPECT_EQ(take_of(Command::result).size(), 2u);
}

TEST_F(CoreTest, HeartbeatsToIdleWorkersAndAnswersToClients) {
  BrokerConfig config;
  config.heartbeat_interval = 100ms;
  make(config);
  ready("w1", "worker-1", 1);
  take();
  advance(100ms);
  auto heartbeats = take_of(Command::heartbeat, false);
  ASSERT_EQ(heartbeats.size(), 1u);
  EXPECT_EQ(heartbeats[0].route, "w1");
  EXPECT_EQ(decode_or_die<protocol::Heartbeat>(heartbeats[0].header()).sender_id, "broker-1");
  // Traffic to the worker within the interval replaces the heartbeat.
  advance(50ms);
  submit("c1", "j1");
  take();
  advance(50ms);
  EXPECT_TRUE(take_of(Command::heartbeat, false).empty());
  advance(100ms);
  EXPECT_EQ(take_of(Command::heartbeat, false).size(), 1u);
  core_->on_frontend("c1",
                     make_frames(Command::heartbeat, protocol::encode(protocol::Heartbeat{"", 0})));
  auto sent = take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_TRUE(sent[0].to_client);
  EXPECT_EQ(decode_or_die<protocol::Heartbeat>(sent[0].header()).sender_id, "broker-1");
}

TEST_F(CoreTest, AnyWorkerTrafficCountsAsLife) {
  BrokerConfig config;
  config.heartbeat_interval = 100ms;
  config.liveness = 2;
  make(config);
  ready("w1", "worker-1", 1);
  submit("c1", "j1", "openai", Priority::interactive, true);
  for (int i = 0; i < 20; ++i) {
    advance(100ms);
    chunk("w1", "j1", static_cast<uint64_t>(i), 1);
  }
  EXPECT_NE(core_->find_worker("w1"), nullptr);
  for (int i = 0; i < 3; ++i) advance(100ms);
  EXPECT_EQ(core_->find_worker("w1"), nullptr);
}

// ---- liveness under load: a late heartbeat must not become a redelivery storm ----------------

TEST_F(CoreTest, WorkerReconnectingWithHeldJobsKeepsThoseDeliveries) {
  ready("w1", "worker-1", 3);
  submit("c1", "streamed", "openai", Priority::interactive, true);
  submit("c1", "plain");
  submit("c1", "lost-in-pipe");
  ASSERT_EQ(take_jobs().size(), 3u);
  chunk("w1", "streamed", 0, 1);
  take();
  // The worker thought us dead and came back on a new connection, still running two of them;
  // the third one's result went down with the old connection.
  ready("w1-new", "worker-1", 3, {"openai"}, {{"streamed", 1}, {"plain", 1}});
  auto sent = take();
  // Welcomed at once, so that it knows this broker is alive.
  auto welcome = of(sent, Command::heartbeat, false);
  ASSERT_EQ(welcome.size(), 1u);
  EXPECT_EQ(welcome[0].route, "w1-new");
  EXPECT_TRUE(of(sent, Command::reset).empty()) << "a kept stream must not be restarted";
  auto jobs = of(sent, Command::job, false);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].route, "w1-new");
  auto header = decode_or_die<protocol::JobHeader>(jobs[0].header());
  EXPECT_EQ(header.job_id, "lost-in-pipe");
  EXPECT_EQ(header.delivery, 2u);
  EXPECT_EQ(core_->counters().jobs_kept, 2u);
  EXPECT_EQ(core_->counters().redeliveries, 1u);
  const auto* worker = core_->find_worker("w1-new");
  ASSERT_NE(worker, nullptr);
  EXPECT_EQ(worker->in_flight.size(), 3u);
  EXPECT_EQ(core_->running(), 3u);
  // The kept deliveries go on where they were: chunks and results of delivery 1 are relayed.
  chunk("w1-new", "streamed", 1, 1);
  result("w1-new", "streamed", 1);
  result("w1-new", "plain", 1);
  result("w1-new", "lost-in-pipe", 2);
  sent = take();
  EXPECT_EQ(of(sent, Command::chunk).size(), 1u);
  EXPECT_EQ(of(sent, Command::result).size(), 3u);
  EXPECT_EQ(core_->counters().zombie_messages, 0u);
  EXPECT_EQ(core_->running(), 0u);
}

TEST_F(CoreTest, ReadyAgainOnTheSameConnectionKeepsHeldJobs) {
  ready("w1", "worker-1", 2);
  submit("c1", "j1");
  submit("c1", "j2");
  take();
  ready("w1", "worker-1", 2, {"openai"}, {{"j1", 1}, {"j2", 1}});
  EXPECT_TRUE(take_jobs().empty());
  EXPECT_EQ(core_->counters().jobs_kept, 2u);
  EXPECT_EQ(core_->counters().redeliveries, 0u);
  result("w1", "j1", 1);
  result("w1", "j2", 1);
  EXPECT_EQ(take_of(Command::result).size(), 2u);
}

TEST_F(CoreTest, HeldJobsOfAnotherWorkerIdOrDeliveryAreNotKept) {
  ready("w1", "worker-1", 2);
  submit("c1", "j1");
  submit("c1", "j2");
  take();
  // Another process may not claim worker-1's jobs, nor an old delivery of them.
  ready("w2", "worker-2", 2, {"openai"}, {{"j1", 1}});
  ready("w1-new", "worker-1", 2, {"openai"}, {{"j2", 7}});
  EXPECT_EQ(core_->counters().jobs_kept, 0u);
  EXPECT_EQ(core_->counters().redeliveries, 2u);
}

TEST_F(CoreTest, HeldJobsRedeliveredMeanwhileAreCancelledAtTheReturningWorker) {
  BrokerConfig config;
  config.heartbeat_interval = 100ms;
  config.liveness = 2;
  make(config);
  ready("w1", "worker-1", 1);
  ready("w2", "worker-2", 1);
  submit("c1", "j1");
  take();
  const std::string first = core_->find_job("j1")->worker->route;
  const std::string other = first == "w1" ? "w2" : "w1";
  const std::string first_id = first == "w1" ? "worker-1" : "worker-2";
  for (int i = 0; i < 4; ++i) {
    advance(100ms);
    worker_heartbeat(other);
  }
  ASSERT_EQ(core_->find_worker(first), nullptr) << "the silent worker was not lost";
  ASSERT_EQ(core_->find_job("j1")->worker->route, other);
  take();
  // The lost worker was only stopped, and comes back still running delivery 1.
  ready(first + "-new", first_id, 1, {"openai"}, {{"j1", 1}});
  auto cancels = take_of(Command::cancel, false);
  ASSERT_EQ(cancels.size(), 1u);
  EXPECT_EQ(cancels[0].route, first + "-new");
  EXPECT_EQ(decode_or_die<protocol::Cancel>(cancels[0].header()).job_id, "j1");
  EXPECT_EQ(core_->find_job("j1")->worker->route, other);
}

TEST_F(CoreTest, BrokerStallIsNotTakenForSilentWorkers) {
  BrokerConfig config;
  config.heartbeat_interval = 100ms;
  config.liveness = 4;
  make(config);
  ready("w1", "worker-1", 1);
  submit("c1", "j1");
  take();
  // Our own loop did not run for 1 s (SIGSTOP, starved of CPU): the worker's messages of that
  // time are still unread, so its silence proves nothing yet.
  advance(1'000ms);
  EXPECT_NE(core_->find_worker("w1"), nullptr);
  EXPECT_EQ(core_->counters().liveness_deferred, 1u);
  worker_heartbeat("w1");  // read once the loop runs again
  for (int i = 0; i < 6; ++i) {
    advance(50ms);
    EXPECT_NE(core_->find_worker("w1"), nullptr);
    worker_heartbeat("w1");
  }
  EXPECT_EQ(core_->counters().redeliveries, 0u);
  // A worker that really went quiet is still lost once the loop runs normally.
  for (int i = 0; i < 10 && core_->find_worker("w1") != nullptr; ++i) advance(50ms);
  EXPECT_EQ(core_->find_worker("w1"), nullptr);
  EXPECT_EQ(core_->counters().redeliveries, 1u);
}

TEST_F(CoreTest, UnreadWorkerInputDefersTheVerdictUpToTwiceTheWindow) {
  BrokerConfig config;
  config.heartbeat_interval = 100ms;
  config.liveness = 4;
  make(config);
  ready("w1", "worker-1", 1);
  transport_.input_pending = true;
  const auto start = clock_.now();
  while (core_->find_worker("w1") != nullptr && clock_.now() - start < 2s) advance(50ms);
  EXPECT_EQ(core_->find_worker("w1"), nullptr);
  // Lost only past twice the 400 ms window, not at 400 ms.
  EXPECT_GT(clock_.now() - start, 800ms);
  EXPECT_LE(clock_.now() - start, 900ms);
  EXPECT_GE(core_->counters().liveness_deferred, 1u);
}

TEST_F(CoreTest, MalformedResultPayloadBecomesInternalError) {
  ready("w1", "worker-1", 1);
  submit("c1", "j1");
  take();
  core_->on_backend("w1", make_frames(Command::result, protocol::encode(protocol::JobEnd{"j1", 1}),
                                      std::string("\xc1\xc1", 2)));
  auto errors = take_of(Command::error);
  ASSERT_EQ(errors.size(), 1u);
  auto error = decode_or_die<protocol::Error>(errors[0].payload());
  EXPECT_EQ(error.kind, ErrorKind::internal);
  EXPECT_EQ(error.code, "malformed_result");
  EXPECT_EQ(core_->running(), 0u);
}

TEST_F(CoreTest, StatusReportsWorkersQueueAndProviderCounters) {
  clock_.advance(5ms);
  ready("w1", "worker-1", 4, {"openai", "claude"});
  submit("c1", "retried");
  submit("c1", "fellover");
  submit("c1", "failed");
  submit("c1", "queued-batch", "ollama", Priority::batch);
  take();

  protocol::Response retried;
  retried.provider = "openai";
  retried.model = "gpt";
  retried.usage = {10, 5, 15};
  retried.attempts = {{"openai", "gpt", "rate_limited", 429, {}, {}, 0, 1, {}},
                      {"openai", "gpt", "rate_limited", 429, {}, {}, 2, 1, {}},
                      {"openai", "gpt", "ok", 200, {}, {}, 5, 1, {}}};
  result("w1", "retried", 1, retried);

  protocol::Response fellover;
  fellover.provider = "claude";
  fellover.model = "haiku";
  fellover.usage = {7, 3, 10};
  fellover.attempts = {{"openai", "gpt", "timeout", 0, {}, {}, 0, 1, {}},
                       {"claude", "haiku", "ok", 200, {}, {}, 2, 1, {}}};
  result("w1", "fellover", 1, fellover);

  protocol::Error failed;
  failed.kind = ErrorKind::authentication;
  failed.provider = "openai";
  failed.model = "gpt";
  failed.attempts = {{"openai", "gpt", "authentication", 401, {}, {}, 0, 1, {}}};
  worker_error("w1", "failed", 1, failed);

  clock_.advance(250ms);
  protocol::StatusReply status = core_->status();
  EXPECT_EQ(status.broker_id, "broker-1");
  EXPECT_EQ(status.uptime_ms, 255u);
  EXPECT_EQ(status.queue_depth, (std::vector<uint64_t>{0, 0, 1}));
  EXPECT_EQ(status.queue_limit, 100'000u);
  EXPECT_EQ(status.in_flight, 0u);
  EXPECT_EQ(status.finished_kept, 3u);
  ASSERT_EQ(status.workers.size(), 1u);
  const protocol::WorkerStatus& w = status.workers[0];
  EXPECT_EQ(w.worker_id, "worker-1");
  EXPECT_EQ(w.host, "host-a");
  EXPECT_EQ(w.pid, 42u);
  EXPECT_EQ(w.capacity, 4u);
  EXPECT_EQ(w.providers, (std::vector<std::string>{"openai", "claude"}));
  EXPECT_EQ(w.last_heartbeat_ms_ago, 250u);
  EXPECT_EQ(w.state, "ready");

  const protocol::ProviderCounters& openai = status.providers.at("openai");
  EXPECT_EQ(openai.submitted, 3u);
  EXPECT_EQ(openai.succeeded, 2u);
  EXPECT_EQ(openai.failed, 1u);
  EXPECT_EQ(openai.retried, 2u);
  EXPECT_EQ(openai.fell_over, 1u);
  EXPECT_EQ(openai.prompt_tokens, 10u);
  EXPECT_EQ(openai.completion_tokens, 5u);
  const protocol::ProviderCounters& claude = status.providers.at("claude");
  EXPECT_EQ(claude.prompt_tokens, 7u);
  EXPECT_EQ(claude.completion_tokens, 3u);
  EXPECT_EQ(status.providers.at("ollama").submitted, 1u);

  // Over the wire too.
  take();
  core_->on_frontend("c1", make_frames(Command::status, protocol::kEmptyMap));
  auto sent = take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].command, Command::status);
  EXPECT_EQ(decode_or_die<protocol::StatusReply>(sent[0].header()), status);
}

// ---------------------------------------------------------------------------------------------
// Hostile input

TEST_F(CoreTest, HostileFramesGetTypedRejectionsAndChangeNothing) {
  auto rejection = [&](std::string route, Frames frames) {
    core_->on_frontend(route, std::move(frames));
    auto sent = take();
    EXPECT_EQ(sent.size(), 1u);
    if (sent.size() != 1u || sent[0].command != Command::rejected) return protocol::Rejected{};
    return decode_or_die<protocol::Rejected>(sent[0].header());
  };
  auto raw = [](std::vector<std::string> parts) {
    Frames frames;
    for (auto& p : parts) frames.emplace_back(p.data(), p.size());
    return frames;
  };
  const std::string submit_header =
      protocol::encode(protocol::Submit{"j1", "openai", Priority::interactive, 0, false, {}});
  const std::string payload = request_payload("openai");

  EXPECT_EQ(rejection("c", raw({"LLMD2", "submit", submit_header, payload})).code,
            "version_mismatch");
  EXPECT_EQ(rejection("c", raw({"LLMD1", "explode", submit_header})).code, "unknown_command");
  EXPECT_EQ(rejection("c", raw({"LLMD1", "submit", submit_header})).code, "malformed");
  EXPECT_EQ(rejection("c", raw({"garbage"})).code, "malformed");
  EXPECT_EQ(rejection("c", raw({})).code, "malformed");
  EXPECT_EQ(rejection("c", raw({"LLMD1", "submit", "\xff\xfe", payload})).code, "malformed");
  auto bad_payload = rejection("c", raw({"LLMD1", "submit", submit_header, "\x92\x01"}));
  EXPECT_EQ(bad_payload.code, "malformed");
  EXPECT_EQ(bad_payload.job_id, "j1");
  EXPECT_EQ(rejection("c", raw({"LLMD1", "submit", submit_header, payload, "extra"})).code,
            "malformed");
  EXPECT_EQ(
      rejection("c", raw({"LLMD1", "result", protocol::encode(protocol::JobEnd{"j", 1}), payload}))
          .code,
      "unexpected_command");
  // A rejected is never answered with a rejected.
  core_->on_frontend("c", raw({"LLMD1", "rejected", protocol::encode(protocol::Rejected{})}));
  EXPECT_TRUE(take().empty());
  EXPECT_EQ(core_->queued(), 0u);
  EXPECT_EQ(core_->find_job("j1"), nullptr);

  // Backend: a registered worker sending junk stays registered and keeps working.
  ready("w1", "worker-1", 1);
  take();  // the welcome heartbeat
  core_->on_backend("w1", raw({"LLMD1", "chunk", "\x01\x02"}));
  auto sent = take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0].command, Command::rejected);
  EXPECT_FALSE(sent[0].to_client);
  EXPECT_NE(core_->find_worker("w1"), nullptr);
  submit("c", "j1");
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"j1"}));
  EXPECT_GE(core_->counters().hostile_messages, 11u);
}

TEST_F(CoreTest, HostileRepliesAreRateLimited) {
  BrokerConfig config;
  config.hostile_replies_per_second = 10;
  core_ = std::make_unique<BrokerCore>(config, "broker-1", clock_, transport_);
  for (int i = 0; i < 1'000; ++i) {
    Frames frames;
    frames.emplace_back(std::string_view("junk"));
    core_->on_frontend("c", std::move(frames));
  }
  EXPECT_EQ(take().size(), 10u);
  EXPECT_EQ(core_->counters().hostile_messages, 1'000u);
  clock_.advance(1s);
  for (int i = 0; i < 100; ++i) {
    Frames frames;
    frames.emplace_back(std::string_view("junk"));
    core_->on_frontend("c", std::move(frames));
  }
  EXPECT_EQ(take().size(), 10u);
}

TEST_F(CoreTest, HostileRandomBytesNeverCrash) {
  std::mt19937 random(1);
  ready("w1", "worker-1", 2);
  for (int i = 0; i < 3'000; ++i) {
    Frames frames;
    const int count = static_cast<int>(random() % 6);
    for (int f = 0; f < count; ++f) {
      std::string bytes(random() % 40, '\0');
      for (char& c : bytes) c = static_cast<char>(random());
      if (f == 0 && random() % 2 == 0) bytes = "LLMD1";
      if (f == 1 && random() % 2 == 0) {
        static const char* names[] = {"submit", "result", "chunk", "ready", "credit", "error"};
        bytes = names[random() % 6];
      }
      frames.emplace_back(bytes.data(), bytes.size());
    }
    if (i % 2 == 0) {
      core_->on_frontend("c", std::move(frames));
    } else {
      core_->on_backend(random() % 2 == 0 ? "w1" : "stranger", std::move(frames));
    }
  }
  take();
  submit("c", "real");
  EXPECT_EQ(take_job_ids(), (std::vector<std::string>{"real"}));
}

// ---------------------------------------------------------------------------------------------
// Drain

TEST_F(CoreTest, DrainRejectsWaitingAndNewJobsAndWaitsForRunningOnes) {
  BrokerConfig config;
  config.drain_timeout = 1'000ms;
  make(config);
  ready("w1", "worker-1", 1);
  submit("c1", "running");
  submit("c1", "waiting");
  take();
  core_->begin_drain();
  auto sent = take();
  auto rejected = of(sent, Command::rejected);
  ASSERT_EQ(rejected.size(), 1u);
  auto r = decode_or_die<protocol::Rejected>(rejected[0].header());
  EXPECT_EQ(r.job_id, "waiting");
  EXPECT_EQ(r.kind, ErrorKind::queue_full);
  EXPECT_EQ(r.code, "draining");

  submit("c1", "new");
  sent = take();
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(decode_or_die<protocol::Rejected>(sent[0].header()).code, "draining");
  // A resubmit of the running job is still a duplicate.
  submit("c1", "running");
  EXPECT_TRUE(decode_or_die<protocol::Accepted>(take().at(0).header()).duplicate);

  core_->on_timer();
  EXPECT_FALSE(core_->drained());
  result("w1", "running", 1);
  EXPECT_EQ(take_of(Command::result).size(), 1u);
  EXPECT_LE(core_->next_timer(), clock_.now());
  core_->on_timer();
  EXPECT_TRUE(core_->drained());
  auto bye = take_of(Command::disconnect, false);
  EXPECT_EQ(bye.size(), 1u);
}

TEST_F(CoreTest, DrainTimeoutAbandonsRunningJobs) {
  BrokerConfig config;
  config.drain_timeout = 1'000ms;
  make(config);
  ready("w1", "worker-1", 1);
  submit("c1", "slow");
  take();
  core_->begin_drain();
  advance(999ms);
  EXPECT_FALSE(core_->drained());
  advance(1ms);
  EXPECT_TRUE(core_->drained());
  auto sent = take();
  ASSERT_EQ(of(sent, Command::cancel, false).size(), 1u);
  auto rejected = of(sent, Command::rejected);
  ASSERT_EQ(rejected.size(), 1u);
  EXPECT_EQ(decode_or_die<protocol::Rejected>(rejected[0].header()).code, "draining");
  EXPECT_EQ(core_->running(), 0u);
}

TEST_F(CoreTest, NextTimerFollowsTheEarliestDeadline) {
  BrokerConfig config;
  config.heartbeat_interval = 1'000ms;
  make(config);
  const auto start = clock_.now();
  // Liveness and heartbeats are checked twice per interval.
  EXPECT_EQ(core_->next_timer(), start + 500ms);
  submit("c1", "j1", "openai", Priority::interactive, false, 300);
  EXPECT_EQ(core_->next_timer(), start + 300ms);
}

}  // namespace
}  // namespace dispatch::broker
