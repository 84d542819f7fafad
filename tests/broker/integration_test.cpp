// Integration tests: the real dispatch-broker binary on ephemeral loopback ports, driven by
// scripted clients and workers (scripted_peers.hpp). Scaled-down timings: heartbeat 50 ms.

#include <gtest/gtest.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "dispatch/test/child_process.hpp"
#include "dispatch/test/stack.hpp"
#include "scripted_peers.hpp"

namespace dispatch::test {
namespace {

using namespace std::chrono_literals;
using protocol::Command;
using protocol::ErrorKind;
using protocol::Priority;

constexpr auto kHeartbeat = 50ms;
constexpr auto kWait = 10s;  // upper bound for anything a test waits for

struct Broker {
  ChildProcess process;
  std::string frontend;
  std::string backend;
};

Broker start_broker(std::vector<std::string> extra = {},
                    const std::string& frontend = "tcp://127.0.0.1:0",
                    const std::string& backend = "tcp://127.0.0.1:0") {
  std::vector<std::string> argv = {DISPATCH_BROKER_BIN,
                                   "--frontend",
                                   frontend,
                                   "--backend",
                                   backend,
                                   "--heartbeat-ms",
                                   std::to_string(kHeartbeat.count()),
                                   "--log-level",
                                   "warn"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  ChildProcess process = ChildProcess::spawn(argv);
  std::optional<std::string> line = process.read_line(10s);
  if (!line) throw std::runtime_error("dispatch-broker printed no listening line");
  // "dispatch-broker listening frontend=tcp://127.0.0.1:PORT backend=tcp://127.0.0.1:PORT"
  const std::string prefix = "dispatch-broker listening frontend=";
  const auto backend_at = line->find(" backend=");
  if (line->rfind(prefix, 0) != 0 || backend_at == std::string::npos) {
    throw std::runtime_error("unexpected listening line: " + *line);
  }
  std::string bound_frontend = line->substr(prefix.size(), backend_at - prefix.size());
  std::string bound_backend = line->substr(backend_at + 9);
  for (const std::string& endpoint : {bound_frontend, bound_backend}) {
    const std::string host = "tcp://127.0.0.1:";
    const bool port_ok = endpoint.rfind(host, 0) == 0 && endpoint.size() > host.size() &&
                         endpoint.find_first_not_of("0123456789", host.size()) == std::string::npos;
    if (!port_ok) throw std::runtime_error("listening line without a resolved port: " + *line);
  }
  return Broker{std::move(process), std::move(bound_frontend), std::move(bound_backend)};
}

class BrokerIntegration : public ::testing::Test {
 protected:
  zmq::context_t context_{1};
};

TEST_F(BrokerIntegration, PrintsResolvedEndpointsAndAnswersStatusAndHeartbeat) {
  Broker broker = start_broker();
  EXPECT_NE(broker.frontend, broker.backend);
  ScriptedClient client(context_, broker.frontend);
  client.heartbeat();
  client.request_status();
  ASSERT_TRUE(pump(
      {&client}, [&] { return client.status.has_value() && client.heartbeats > 0; }, kWait));
  EXPECT_EQ(client.broker_id.size(), 16u);
  EXPECT_EQ(client.status->broker_id, client.broker_id);
  EXPECT_EQ(client.status->queue_depth, (std::vector<uint64_t>{0, 0, 0}));
  EXPECT_EQ(client.status->queue_limit, 100'000u);
}

// The shipped broker runs on jemalloc (cmake/Allocator.cmake: glibc's malloc let its RSS creep
// under client connection churn); the sanitizer build keeps ASan's allocator. The broker names
// the one it runs on in its start line, and heap trims use that allocator's purge.
TEST(BrokerAllocator, TheStartLineNamesTheMallocTheBuildShips) {
  ChildProcess process =
      ChildProcess::spawn({DISPATCH_BROKER_BIN, "--frontend", "tcp://127.0.0.1:0", "--backend",
                           "tcp://127.0.0.1:0", "--log-level", "info"});
  ASSERT_TRUE(process.read_line(10s).has_value()) << "no listening line";
  const std::string expected = std::string("malloc: ") + DISPATCH_EXPECTED_MALLOC + ")";
  std::string log;
  const auto deadline = std::chrono::steady_clock::now() + kWait;
  while (log.find("listening: frontend") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    log = read_text_file(process.log_path());
    if (log.find("listening: frontend") == std::string::npos) std::this_thread::sleep_for(10ms);
  }
  EXPECT_NE(log.find(expected), std::string::npos) << "expected '" << expected << "' in:\n" << log;
  EXPECT_TRUE(process.stop().success());
}

TEST_F(BrokerIntegration, ManyJobsOverSeveralWorkersCompleteExactlyOnce) {
  Broker broker = start_broker();
  ScriptedWorker w1(context_, broker.backend, "w1", 2, {"openai"}, kHeartbeat);
  ScriptedWorker w2(context_, broker.backend, "w2", 3, {"openai"}, kHeartbeat);
  ScriptedWorker w3(context_, broker.backend, "w3", 5, {"openai"}, kHeartbeat);
  ScriptedClient client(context_, broker.frontend);
  constexpr int kJobs = 300;
  for (int i = 0; i < kJobs; ++i) {
    client.submit("job-" + std::to_string(i), "openai", static_cast<Priority>(i % 3), i % 3 == 0);
  }
  const std::vector<Peer*> peers = {&client, &w1, &w2, &w3};
  ASSERT_TRUE(pump(
      peers, [&] { return client.finished() == kJobs; }, 30s))
      << client.finished() << " of " << kJobs;
  for (const auto& [id, job] : client.jobs) {
    EXPECT_EQ(job.accepted, 1) << id;
    EXPECT_EQ(job.duplicates, 0) << id;
    EXPECT_EQ(job.finals, 1) << id;
    ASSERT_TRUE(job.response.has_value()) << id;
    EXPECT_NE(job.response->content.find("answer to " + id), std::string::npos);
  }
  // Every job was delivered exactly once, and every worker took part.
  EXPECT_EQ(w1.jobs_received.size() + w2.jobs_received.size() + w3.jobs_received.size(),
            static_cast<std::size_t>(kJobs));
  EXPECT_GT(w1.jobs_received.size(), 0u);
  EXPECT_GT(w2.jobs_received.size(), 0u);
  EXPECT_GT(w3.jobs_received.size(), 0u);
  // Streamed jobs got their chunks in order before the result.
  const ClientJob& streamed = client.jobs.at("job-0");
  EXPECT_EQ(streamed.events, (std::vector<std::string>{"chunk:0", "chunk:1", "chunk:2", "result"}));

  client.request_status();
  client.status.reset();
  ASSERT_TRUE(pump(
      peers, [&] { return client.status.has_value(); }, kWait));
  EXPECT_EQ(client.status->in_flight, 0u);
  EXPECT_EQ(client.status->workers.size(), 3u);
  EXPECT_EQ(client.status->providers.at("openai").submitted, static_cast<uint64_t>(kJobs));
  EXPECT_EQ(client.status->providers.at("openai").succeeded, static_cast<uint64_t>(kJobs));
  EXPECT_EQ(client.status->providers.at("openai").prompt_tokens, 3u * kJobs);
}

TEST_F(BrokerIntegration, SilentWorkerJobsAreRedeliveredWithResetForStreamedOnes) {
  Broker broker = start_broker({"--liveness", "4"});
  ScriptedWorker silent(context_, broker.backend, "silent", 4, {"openai"}, kHeartbeat);
  silent.mode = ScriptedWorker::Mode::hold;
  ScriptedClient client(context_, broker.frontend);
  client.submit("s1", "openai", Priority::interactive, true);
  client.submit("s2", "openai", Priority::interactive, true);
  client.submit("plain", "openai", Priority::interactive, false);
  ASSERT_TRUE(pump(
      {&client, &silent}, [&] { return silent.held.size() == 3; }, kWait));
  // Part of the streamed answers reaches the client, then the worker hangs.
  silent.send_chunk("s1", 0, 1, "half an ans");
  silent.send_chunk("s2", 0, 1, "half an ans");
  ASSERT_TRUE(pump(
      {&client, &silent},
      [&] { return client.jobs["s1"].events.size() == 1 && client.jobs["s2"].events.size() == 1; },
      kWait));
  silent.mode = ScriptedWorker::Mode::silent;
  ScriptedWorker good(context_, broker.backend, "good", 4, {"openai"}, kHeartbeat);
  const auto started = SteadyClock::now();
  ASSERT_TRUE(pump(
      {&client, &silent, &good}, [&] { return client.finished() == 3; }, kWait));
  const auto took = SteadyClock::now() - started;
  // Dead after 4 silent intervals (+ one tick): well under a second at 50 ms.
  EXPECT_LT(took, 2s);
  for (const char* id : {"s1", "s2"}) {
    EXPECT_EQ(client.jobs[id].events, (std::vector<std::string>{"chunk:0", "reset:0", "chunk:0",
                                                                "chunk:1", "chunk:2", "result"}))
        << id;
  }
  EXPECT_EQ(client.jobs["plain"].events, (std::vector<std::string>{"result"}));
  for (const auto& [id, job] : client.jobs) {
    ASSERT_TRUE(job.response.has_value());
    EXPECT_NE(job.response->content.find("from good"), std::string::npos);
  }
  ASSERT_EQ(good.jobs_received.size(), 3u);
  for (const auto& header : good.jobs_received) EXPECT_EQ(header.delivery, 2u);
}

TEST_F(BrokerIntegration, BrokerRestartWorkersReconnectAndResubmittedJobsComplete) {
  Broker first = start_broker();
  ScriptedWorker w1(context_, first.backend, "w1", 5, {"openai"}, kHeartbeat);
  ScriptedWorker w2(context_, first.backend, "w2", 5, {"openai"}, kHeartbeat);
  w1.mode = w2.mode = ScriptedWorker::Mode::hold;
  ScriptedClient client(context_, first.frontend);
  constexpr int kJobs = 10;
  for (int i = 0; i < kJobs; ++i) client.submit("r" + std::to_string(i));
  const std::vector<Peer*> peers = {&client, &w1, &w2};
  // The accepts and the jobs travel on different connections: wait for both.
  ASSERT_TRUE(pump(
      peers, [&] { return w1.held.size() + w2.held.size() == kJobs && !client.broker_id.empty(); },
      kWait));
  const std::string first_id = client.broker_id;
  ASSERT_EQ(first_id.size(), 16u);

  // Crash: no drain, no goodbye.
  first.process.send_signal(SIGKILL);
  ASSERT_TRUE(first.process.wait_for_exit(kWait).has_value());
  Broker second = start_broker({}, first.frontend, first.backend);
  ASSERT_EQ(second.frontend, first.frontend);
  w1.mode = w2.mode = ScriptedWorker::Mode::answer;

  // The client's side of a restart: heartbeat, notice the new broker id, resubmit what has not
  // finished.
  bool resubmitted = false;
  auto last_heartbeat = SteadyClock::now() - 1s;
  ASSERT_TRUE(pump(
      peers,
      [&] {
        if (!resubmitted && SteadyClock::now() - last_heartbeat > kHeartbeat) {
          client.heartbeat();
          last_heartbeat = SteadyClock::now();
        }
        if (!resubmitted && !client.broker_id.empty() && client.broker_id != first_id) {
          for (const auto& [id, job] : client.jobs) {
            if (!job.done()) client.resubmit(id);
          }
          resubmitted = true;
        }
        // Both workers must come back too (a heartbeat to the new broker gets
        // `disconnect`, or the silence of the old one triggers a reconnect).
        return client.finished() == kJobs && w1.reconnects > 0 && w2.reconnects > 0;
      },
      20s));
  EXPECT_NE(client.broker_id, first_id);
  EXPECT_GE(w1.reconnects, 1);
  EXPECT_GE(w2.reconnects, 1);
  for (const auto& [id, job] : client.jobs) {
    EXPECT_EQ(job.finals, 1) << id;
    ASSERT_TRUE(job.response.has_value()) << id;
    EXPECT_EQ(job.broker_id, client.broker_id) << id;  // the last accepted came from broker 2
  }
}

TEST_F(BrokerIntegration, MalformedStormLeavesRealJobsAndOtherPeersUnaffected) {
  Broker broker = start_broker();
  ScriptedWorker w1(context_, broker.backend, "w1", 8, {"openai"}, kHeartbeat);
  ScriptedWorker w2(context_, broker.backend, "w2", 8, {"openai"}, kHeartbeat);
  ScriptedClient client(context_, broker.frontend);
  zmq::socket_t hostile_front = make_dealer(context_, broker.frontend);
  zmq::socket_t hostile_back = make_dealer(context_, broker.backend);

  std::mt19937 random(12345);
  auto random_bytes = [&](std::size_t max) {
    std::string bytes(random() % (max + 1), '\0');
    for (char& c : bytes) c = static_cast<char>(random());
    return bytes;
  };
  const std::string valid_submit = protocol::encode(
      protocol::Submit{"hostile-job", "openai", Priority::interactive, 0, false, {}});
  auto send_hostile = [&](zmq::socket_t& socket, int round) {
    std::vector<std::string> frames;
    switch (round % 8) {
      case 0:  // random frame count and bytes
        for (int f = 0, n = static_cast<int>(random() % 7); f < n; ++f) {
          frames.push_back(random_bytes(64));
        }
        break;
      case 1:
        frames = {"LLMD1", random_bytes(10), random_bytes(30)};
        break;
      case 2:
        frames = {"LLMD2", "submit", valid_submit, "\x80"};
        break;
      case 3:
        frames = {"LLMD1", "submit", valid_submit, random_bytes(40)};
        break;
      case 4:
        frames = {"LLMD1", "submit", random_bytes(20), "\x80"};
        break;
      case 5:  // a forged answer for a real job
        frames = {"LLMD1", "result",
                  protocol::encode(protocol::JobEnd{"real-" + std::to_string(random() % 100), 1}),
                  random_bytes(20)};
        break;
      case 6:
        frames = {"LLMD1", "chunk", "\xde\xad\xbe\xef"};
        break;
      default:
        frames = {"LLMD1", "heartbeat", random_bytes(8), "extra", "frames", "here"};
        break;
    }
    if (frames.empty()) frames.push_back("");
    for (std::size_t i = 0; i < frames.size(); ++i) {
      socket.send(zmq::buffer(frames[i]),
                  i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  };

  // The workers heartbeat only while this thread serves them: under ASan the storm's loops
  // take longer than the broker's 50 ms liveness, so they are served between batches.
  const std::vector<Peer*> peers = {&client, &w1, &w2};
  const auto serve_peers = [&peers] {
    for (Peer* peer : peers) {
      peer->drain();
      peer->on_tick(SteadyClock::now());
    }
  };
  constexpr int kJobs = 100;
  for (int i = 0; i < kJobs; ++i) {
    client.submit("real-" + std::to_string(i), "openai", Priority::normal, i % 2 == 0);
    for (int k = 0; k < 20; ++k) {
      send_hostile(hostile_front, i * 20 + k);
      send_hostile(hostile_back, i * 20 + k + 3);
    }
    serve_peers();
  }
  // One frame over ZMQ_MAXMSGSIZE: libzmq drops that connection; nothing else notices.
  {
    zmq::socket_t huge = make_dealer(context_, broker.frontend);
    std::string big(protocol::Limits::max_message_bytes + 1024, 'x');
    huge.send(zmq::buffer(std::string_view("LLMD1")), zmq::send_flags::sndmore);
    huge.send(zmq::buffer(std::string_view("submit")), zmq::send_flags::sndmore);
    huge.send(zmq::buffer(big), zmq::send_flags::none);
  }
  ASSERT_TRUE(pump(
      peers, [&] { return client.finished() == kJobs; }, 30s))
      << client.finished() << " of " << kJobs;
  for (const auto& [id, job] : client.jobs) {
    EXPECT_EQ(job.finals, 1) << id;
    ASSERT_TRUE(job.response.has_value()) << id;
    EXPECT_NE(job.response->content.find("answer to " + id), std::string::npos) << id;
  }
  EXPECT_TRUE(broker.process.running());
  // The hostile peers got typed rejections (rate-limited, so at least some).
  std::vector<std::string> codes;
  protocol::IncomingMessage incoming;
  for (int i = 0; i < 100'000 && incoming.receive(hostile_front, false); ++i) {
    if (i % 256 == 0) serve_peers();
    auto parsed = incoming.parse();
    if (!parsed || parsed.value().command != Command::rejected) continue;
    auto rejected = protocol::decode<protocol::Rejected>(parsed.value().header);
    if (rejected) codes.push_back(rejected.value().code);
  }
  EXPECT_FALSE(codes.empty());
  for (const char* code : {"malformed", "version_mismatch", "unknown_command"}) {
    EXPECT_NE(std::find(codes.begin(), codes.end(), code), codes.end()) << code;
  }
  // And the broker still serves a new client.
  ScriptedClient late(context_, broker.frontend);
  late.request_status();
  ASSERT_TRUE(pump(
      {&late, &w1, &w2}, [&] { return late.status.has_value(); }, kWait));
  EXPECT_EQ(late.status->workers.size(), 2u);
}

TEST_F(BrokerIntegration, QueueBoundGivesTypedRejection) {
  Broker broker = start_broker({"--queue-limit", "5"});
  ScriptedClient client(context_, broker.frontend);
  for (int i = 0; i < 6; ++i) client.submit("q" + std::to_string(i), "nobody");
  ASSERT_TRUE(pump(
      {&client},
      [&] {
        int answered = 0;
        for (const auto& [id, job] : client.jobs) {
          answered += (job.accepted > 0 || job.rejected) ? 1 : 0;
        }
        return answered == 6;
      },
      kWait));
  ASSERT_TRUE(client.jobs["q5"].rejected.has_value());
  EXPECT_EQ(client.jobs["q5"].rejected->kind, ErrorKind::queue_full);
  EXPECT_EQ(client.jobs["q5"].rejected->code, "queue_full");
  for (int i = 0; i < 5; ++i) EXPECT_EQ(client.jobs["q" + std::to_string(i)].accepted, 1);
}

TEST_F(BrokerIntegration, QueueDeadlineEndsWaitingJobsWithTheRightKind) {
  Broker broker = start_broker();
  ScriptedWorker busy(context_, broker.backend, "busy", 1, {"openai"}, kHeartbeat);
  busy.mode = ScriptedWorker::Mode::hold;
  ScriptedClient client(context_, broker.frontend);
  client.submit("running", "openai", Priority::interactive, false, 200);
  client.submit("waits", "openai", Priority::interactive, false, 200);
  client.submit("ghost", "unserved-provider", Priority::interactive, false, 200);
  const auto started = SteadyClock::now();
  ASSERT_TRUE(pump(
      {&client, &busy}, [&] { return client.jobs["waits"].done() && client.jobs["ghost"].done(); },
      kWait));
  EXPECT_GE(SteadyClock::now() - started, 200ms);
  ASSERT_TRUE(client.jobs["waits"].error.has_value());
  EXPECT_EQ(client.jobs["waits"].error->kind, ErrorKind::timeout);
  EXPECT_EQ(client.jobs["waits"].error->code, "queue_deadline");
  ASSERT_TRUE(client.jobs["ghost"].error.has_value());
  EXPECT_EQ(client.jobs["ghost"].error->kind, ErrorKind::unsupported_provider);
  EXPECT_FALSE(client.jobs["running"].done());  // running jobs have no queue deadline
  busy.answer_held();
  ASSERT_TRUE(pump(
      {&client, &busy}, [&] { return client.jobs["running"].done(); }, kWait));
  EXPECT_TRUE(client.jobs["running"].response.has_value());
}

TEST_F(BrokerIntegration, CancelQueuedAndRunningJobs) {
  Broker broker = start_broker();
  ScriptedWorker worker(context_, broker.backend, "w", 1, {"openai"}, kHeartbeat);
  worker.mode = ScriptedWorker::Mode::hold;
  ScriptedClient client(context_, broker.frontend);
  client.submit("running");
  client.submit("queued");
  ASSERT_TRUE(pump(
      {&client, &worker},
      [&] { return worker.held.size() == 1 && client.jobs["queued"].accepted == 1; }, kWait));
  client.cancel("queued");
  ASSERT_TRUE(pump(
      {&client, &worker}, [&] { return client.jobs["queued"].done(); }, kWait));
  ASSERT_TRUE(client.jobs["queued"].error.has_value());
  EXPECT_EQ(client.jobs["queued"].error->kind, ErrorKind::cancelled);
  EXPECT_TRUE(worker.cancels.empty());

  client.cancel("running");
  ASSERT_TRUE(pump(
      {&client, &worker}, [&] { return client.jobs["running"].done(); }, kWait));
  EXPECT_EQ(worker.cancels, (std::vector<std::string>{"running"}));
  ASSERT_TRUE(client.jobs["running"].error.has_value());
  EXPECT_EQ(client.jobs["running"].error->kind, ErrorKind::cancelled);

  // Cancelling something unknown changes nothing: the next reply is the heartbeat's.
  const uint64_t before = client.received;
  client.cancel("never-heard-of-it");
  client.heartbeat();
  ASSERT_TRUE(pump(
      {&client, &worker}, [&] { return client.received > before; }, kWait));
  EXPECT_EQ(client.received, before + 1);
  EXPECT_EQ(client.heartbeats, 1);
}

TEST_F(BrokerIntegration, SigtermDrainsRunningJobsRejectsTheRestAndExitsZero) {
  Broker broker = start_broker({"--drain-timeout-ms", "5000"});
  ScriptedWorker worker(context_, broker.backend, "w", 1, {"openai"}, kHeartbeat);
  worker.mode = ScriptedWorker::Mode::hold;
  ScriptedClient client(context_, broker.frontend);
  client.submit("running");
  client.submit("waiting");
  ASSERT_TRUE(pump(
      {&client, &worker},
      [&] { return worker.held.size() == 1 && client.jobs["waiting"].accepted; }, kWait));
  broker.process.send_signal(SIGTERM);
  ASSERT_TRUE(pump(
      {&client, &worker}, [&] { return client.jobs["waiting"].done(); }, kWait));
  ASSERT_TRUE(client.jobs["waiting"].rejected.has_value());
  EXPECT_EQ(client.jobs["waiting"].rejected->kind, ErrorKind::queue_full);
  EXPECT_EQ(client.jobs["waiting"].rejected->code, "draining");
  client.submit("too-late");
  ASSERT_TRUE(pump(
      {&client, &worker}, [&] { return client.jobs["too-late"].done(); }, kWait));
  ASSERT_TRUE(client.jobs["too-late"].rejected.has_value());
  EXPECT_EQ(client.jobs["too-late"].rejected->code, "draining");
  EXPECT_TRUE(broker.process.running());

  worker.answer_held();
  ASSERT_TRUE(pump(
      {&client, &worker}, [&] { return client.jobs["running"].done(); }, kWait));
  EXPECT_TRUE(client.jobs["running"].response.has_value());
  auto status = broker.process.wait_for_exit(kWait);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(status->success()) << status->code;
  // The worker was told the broker is leaving.
  ASSERT_TRUE(pump(
      {&worker}, [&] { return worker.disconnects > 0; }, kWait));
}

TEST_F(BrokerIntegration, DrainTimeoutAbandonsRunningJobsAndExitsZero) {
  Broker broker = start_broker({"--drain-timeout-ms", "300"});
  ScriptedWorker worker(context_, broker.backend, "w", 1, {"openai"}, kHeartbeat);
  worker.mode = ScriptedWorker::Mode::hold;
  ScriptedClient client(context_, broker.frontend);
  client.submit("stuck");
  ASSERT_TRUE(pump(
      {&client, &worker}, [&] { return worker.held.size() == 1; }, kWait));
  broker.process.send_signal(SIGTERM);
  ASSERT_TRUE(pump(
      {&client, &worker}, [&] { return client.jobs["stuck"].done(); }, kWait));
  ASSERT_TRUE(client.jobs["stuck"].rejected.has_value());
  EXPECT_EQ(client.jobs["stuck"].rejected->code, "draining");
  ASSERT_TRUE(pump(
      {&client, &worker}, [&] { return !worker.cancels.empty(); }, kWait));
  EXPECT_EQ(worker.cancels, (std::vector<std::string>{"stuck"}));
  auto status = broker.process.wait_for_exit(kWait);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(status->success());
}

TEST_F(BrokerIntegration, SlowClientDoesNotStallTheBrokerAndStillGetsItsResult) {
  // Tiny high-water marks so that a client that stops reading fills its pipe quickly.
  Broker broker = start_broker({"--hwm", "10", "--client-buffer", "100"});
  ScriptedWorker worker(context_, broker.backend, "w", 4, {"openai"}, kHeartbeat);
  worker.mode = ScriptedWorker::Mode::hold;
  ScriptedClient slow(context_, broker.frontend);
  slow.socket().set(zmq::sockopt::rcvhwm, 10);
  slow.submit("big", "openai", Priority::interactive, true);
  ASSERT_TRUE(pump(
      {&worker}, [&] { return worker.held.size() == 1; }, kWait));
  // 20 MB of chunks the slow client does not read: more than ZeroMQ and the kernel buffer hold.
  constexpr int kChunks = 20'000;
  const std::string text(1'000, 'x');
  for (int i = 0; i < kChunks; ++i) worker.send_chunk("big", static_cast<uint64_t>(i), 1, text);
  worker.send_result("big", 1);
  worker.held.clear();

  // Meanwhile another client is served as usual.
  worker.mode = ScriptedWorker::Mode::answer;
  ScriptedClient fast(context_, broker.frontend);
  fast.submit("other");
  ASSERT_TRUE(pump(
      {&fast, &worker}, [&] { return fast.jobs["other"].done(); }, kWait));
  EXPECT_TRUE(fast.jobs["other"].response.has_value());

  // The slow client finally reads: chunks were dropped, the result was not.
  ASSERT_TRUE(pump(
      {&slow, &worker}, [&] { return slow.jobs["big"].done(); }, 20s));
  const ClientJob& big = slow.jobs["big"];
  EXPECT_EQ(big.events.back(), "result");
  EXPECT_TRUE(big.response.has_value());
  const auto chunks = static_cast<int>(
      std::count_if(big.events.begin(), big.events.end(),
                    [](const std::string& e) { return e.rfind("chunk:", 0) == 0; }));
  EXPECT_GT(chunks, 0);
  EXPECT_LT(chunks, kChunks);
  EXPECT_TRUE(broker.process.running());
}

// Under AddressSanitizer freed memory waits in a quarantine (256 MiB by default) that RSS
// counts; children started from now on keep it small so that RSS shows what the broker holds.
// (Only ASan reads the variable; the children inherit it.)
void keep_asan_quarantine_small() {
  const char* current = std::getenv("ASAN_OPTIONS");
  const std::string options =
      std::string(current != nullptr ? current : "") + ":quarantine_size_mb=4";
  ::setenv("ASAN_OPTIONS", options.c_str(), 1);
}

// Resident set size of `pid` in bytes (VmRSS of /proc/PID/status); 0 when unreadable.
uint64_t resident_bytes(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

TEST_F(BrokerIntegration, ClientThatNeverReadsCostsAtMostItsByteBoundAndResubmitGetsTheResult) {
  keep_asan_quarantine_small();
  // Tiny high-water marks so that the outbox, not ZeroMQ, holds what the client does not read;
  // a message bound far away so that only the byte bound (4 MiB) can apply.
  Broker broker = start_broker(
      {"--hwm", "10", "--client-buffer", "1000000", "--client-buffer-bytes", "4194304"});
  ScriptedWorker worker(context_, broker.backend, "w", 4, {"openai"}, kHeartbeat);
  worker.mode = ScriptedWorker::Mode::hold;
  // A DEALER that submits one streamed job and never reads again.
  zmq::socket_t deaf(context_, zmq::socket_type::dealer);
  protocol::apply_protocol_socket_options(deaf);
  deaf.set(zmq::sockopt::linger, 0);
  deaf.set(zmq::sockopt::rcvhwm, 10);
  deaf.set(zmq::sockopt::rcvbuf, 65'536);
  deaf.connect(broker.frontend);
  protocol::Request request;
  request.provider = "openai";
  request.model = "model-a";
  request.stream = true;
  request.messages.push_back(protocol::Message{"user", "q", {}, {}, {}, {}, {}});
  protocol::send_message(
      deaf, Command::submit,
      protocol::encode(protocol::Submit{"deaf", "openai", Priority::interactive, 0, true, {}}),
      protocol::encode(request), protocol::SendMode::blocking);
  ASSERT_TRUE(pump(
      {&worker}, [&] { return worker.held.size() == 1; }, kWait));
  const uint64_t rss_before = resident_bytes(broker.process.pid());

  // 192 MiB of chunks, then the result.
  const std::string text(64 * 1024, 'x');
  for (int i = 0; i < 3'072; ++i) worker.send_chunk("deaf", static_cast<uint64_t>(i), 1, text);
  worker.send_result("deaf", 1);
  worker.held.clear();
  worker.mode = ScriptedWorker::Mode::answer;

  // Once the broker has finished the job, it holds the chunks it could not send only up to the
  // byte bound (plus what ZeroMQ and the kernel buffer), not all 192 MiB.
  ScriptedClient observer(context_, broker.frontend);
  ASSERT_TRUE(pump(
      {&observer, &worker},
      [&] {
        if (observer.status && observer.status->finished_kept == 1) return true;
        observer.status.reset();
        observer.request_status();
        return false;
      },
      30s));
  const uint64_t rss_after = resident_bytes(broker.process.pid());
  std::cout << "broker RSS " << rss_before / 1024 << " KiB before, " << rss_after / 1024
            << " KiB after 192 MiB of unread chunks" << std::endl;
  EXPECT_LT(rss_after, rss_before + 64 * (uint64_t{1} << 20));

  // Another client is served as usual, and a resubmit of the unread job gets its stored result.
  ScriptedClient again(context_, broker.frontend);
  again.submit("other");
  again.submit("deaf", "openai", Priority::interactive, true);
  ASSERT_TRUE(pump(
      {&again, &worker}, [&] { return again.jobs["other"].done() && again.jobs["deaf"].done(); },
      kWait));
  EXPECT_EQ(again.jobs["deaf"].duplicates, 1);
  ASSERT_TRUE(again.jobs["deaf"].response.has_value());
  EXPECT_EQ(worker.jobs_received.size(), 2u);  // "deaf" once, "other" once
  EXPECT_TRUE(broker.process.running());
}

TEST(BrokerFlags, BadValuesExitTwoWithTheReason) {
  const std::vector<std::vector<std::string>> cases = {
      {"--log-level", "loud"},
      {"--result-ttl-ms", "99999999999999999"},
      {"--drain-timeout-ms", "3600001"},
      {"--queue-bytes", "10"},
      {"--client-jobs", "0"},
      {"--client-bytes", "-1"},
      {"--client-buffer-bytes", "1"},
      {"--unknown-provider-grace-ms", "0"},
      {"--running-grace-ms", "0"},
      {"--queue-timeout-ms", "7200000"},  // above the default ceiling of one hour
  };
  TempDir dir;
  for (const auto& flags : cases) {
    std::vector<std::string> argv = {DISPATCH_BROKER_BIN, "--frontend", "tcp://127.0.0.1:0",
                                     "--backend", "tcp://127.0.0.1:0"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    ChildOptions options;
    options.stderr_path = dir.file("stderr.txt");
    write_text_file(*options.stderr_path, "");
    ChildProcess process = ChildProcess::spawn(argv, options);
    const auto status = process.wait_for_exit(10s);
    ASSERT_TRUE(status.has_value()) << flags[0] << " " << flags[1] << ": still running";
    EXPECT_TRUE(status->exited && status->code == 2) << flags[0] << " " << flags[1];
    const std::string text = read_text_file(*options.stderr_path);
    EXPECT_NE(text.find(flags[0]), std::string::npos) << text;
  }
}

TEST_F(BrokerIntegration, ResubmitAfterFinishReplaysWithoutCallingTheWorkerAgain) {
  Broker broker = start_broker();
  ScriptedWorker worker(context_, broker.backend, "w", 2, {"openai"}, kHeartbeat);
  ScriptedClient client(context_, broker.frontend);
  client.submit("once");
  ASSERT_TRUE(pump(
      {&client, &worker}, [&] { return client.jobs["once"].done(); }, kWait));
  // A second client (a reconnected one) resubmits the same job id.
  ScriptedClient again(context_, broker.frontend);
  again.submit("once");
  ASSERT_TRUE(pump(
      {&again, &worker}, [&] { return again.jobs["once"].done(); }, kWait));
  EXPECT_EQ(again.jobs["once"].duplicates, 1);
  ASSERT_TRUE(again.jobs["once"].response.has_value());
  EXPECT_EQ(again.jobs["once"].response->content, client.jobs["once"].response->content);
  EXPECT_EQ(worker.jobs_received.size(), 1u);
}

}  // namespace
}  // namespace dispatch::test
