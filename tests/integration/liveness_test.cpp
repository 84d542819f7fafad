// Liveness under stalls, through the real binaries: a broker or worker that is slow but alive
// (here: stopped with SIGSTOP, the deterministic stand-in for CPU starvation) must not turn late
// heartbeats into a redelivery storm, and one that is really gone must still have its jobs
// redelivered. The faults are scripted - a process held stopped for a fixed time - and nothing
// else waits by sleeping: every wait polls a condition with a deadline.
//
// Timings are scaled down: heartbeat 100 ms, liveness 8, so a peer is presumed dead after
// 800 ms of silence - a window wide enough that the scripted faults keep a margin of several
// hundred milliseconds on either side even in sanitizer builds on a loaded machine. Jobs stream
// 20 ms apart for long enough to be running throughout a fault.

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "dispatch/test/child_process.hpp"
#include "dispatch/test/fake_provider_process.hpp"
#include "dispatch/test/stack.hpp"
#include "system_support.hpp"

namespace dispatch::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr milliseconds kLivenessWindow{800};  // 8 x 100 ms

const std::vector<std::string> kBrokerArgs = {"--heartbeat-ms", "100", "--liveness", "8"};

std::vector<std::string> worker_args(int concurrency, const std::string& id) {
  return {"--heartbeat-ms", "100", "--liveness", "8", "--concurrency", std::to_string(concurrency),
          "--id",           id};
}

// Holds a process stopped for `duration`, and always lets it go on again (also when the test
// fails half-way), so that teardown can stop it normally.
void hold_stopped(ChildProcess& process, milliseconds duration) {
  process.send_signal(SIGSTOP);
  struct Resume {
    ChildProcess& process;
    ~Resume() { process.send_signal(SIGCONT); }
  } resume{process};
  // The fault itself is a bounded pause of the process under test, not a wait for an event.
  std::this_thread::sleep_for(duration);
}

// The index a job's model name carries ("live<i>~..."), which the fake provider logs.
std::size_t job_index(const std::string& model) {
  return std::stoul(model.substr(4, model.find('~') - 4));
}

std::size_t count_in(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos;
       at = text.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

class LivenessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string missing = StackBinaries::from_build().missing();
    ASSERT_TRUE(missing.empty()) << "binaries not built: " << missing;
    stack_ = std::make_unique<Stack>(StackBinaries::from_build());
    stack_->start_fake_provider();
    stack_->start_broker(kBrokerArgs);
  }

  void TearDown() override {
    if (HasFailure() && stack_) {
      std::cerr << "---- broker.log (tail) ----\n" << tail(broker_log()) << "\n";
      for (std::size_t i = 0; i < stack_->workers().size(); ++i) {
        std::cerr << "---- worker-" << i << ".log (tail) ----\n"
                  << tail(stack_->worker_log(i)) << "\n";
      }
    }
    stack_.reset();
    extra_fakes_.clear();
  }

  // The log without the lines repeated per message (drops, disconnects of a closed connection).
  static std::string tail(const std::string& text) {
    std::string kept;
    std::size_t start = 0;
    while (start < text.size()) {
      std::size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      const std::string line = text.substr(start, end - start);
      if (line.find("unknown worker") == std::string::npos &&
          line.find("not its current delivery") == std::string::npos) {
        kept += line + "\n";
      }
      start = end + 1;
    }
    return kept.size() > 6000 ? kept.substr(kept.size() - 6000) : kept;
  }
  std::string broker_log() { return read_text_file(stack_->dir().file("broker.log")); }

  // A fake provider of its own for one worker, so that its provider traffic can be told apart.
  FakeProviderProcess& add_fake() { return extra_fakes_.add(*stack_); }

  std::size_t start_worker_on(FakeProviderProcess& fake, const std::vector<std::string>& args) {
    return ExtraFakes::start_worker_on(*stack_, fake, args);
  }

  // Submits `count` streamed jobs of `tokens` chunks 20 ms apart and waits until the client has
  // received chunks of every one of them: from then on they are all mid-stream.
  std::vector<std::string> submit_streams(RawClient& client, int count, int tokens,
                                          const std::string& tag) {
    std::vector<std::string> ids;
    const std::string run = std::to_string(::getpid());
    for (int i = 0; i < count; ++i) {
      const std::string id = tag + "-" + run + "-" + std::to_string(i);
      client.submit(id, make_request("openai",
                                     "live" + std::to_string(i) +
                                         "~chunk_delay_ms=20~tokens=" + std::to_string(tokens),
                                     "p" + std::to_string(i), true));
      ids.push_back(id);
    }
    const bool streaming = client.pump_until(
        [&] {
          for (const std::string& id : ids) {
            const JobRecord& job = client.jobs[id];
            if (job.stream.empty() || job.endings() > 0) return false;
          }
          return true;
        },
        20s);
    EXPECT_TRUE(streaming) << "not every job was mid-stream";
    return ids;
  }

  // Every job answered exactly once, successfully, with its own answer and no reset; with
  // `gapless`, its chunks numbered 0,1,2... and spelling the answer. Without it, chunks may be
  // missing (what the old connection still held when a worker reconnected) but never out of
  // order, and what arrived is a part of the answer.
  void expect_each_once_without_restart(RawClient& client, const std::vector<std::string>& ids,
                                        bool gapless) {
    ASSERT_TRUE(client.pump_until([&] { return client.finished() >= ids.size(); }, 60s))
        << client.finished() << " of " << ids.size() << " jobs finished";
    // Everything the broker sent before this reply has arrived: a late duplicate would count.
    ASSERT_TRUE(client.status_barrier(5s));
    int reported = 0;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const JobRecord& job = client.jobs.at(ids[i]);
      EXPECT_EQ(job.results, 1) << ids[i];
      EXPECT_EQ(job.errors, 0) << ids[i] << (job.error ? ": " + job.error->message : "");
      EXPECT_EQ(job.rejections, 0) << ids[i];
      EXPECT_EQ(job.events_after_end, 0) << ids[i];
      if (!job.response) continue;
      EXPECT_EQ(job.response->content.rfind("reply to: p" + std::to_string(i), 0), 0u) << ids[i];
      std::size_t resets = 0;
      uint64_t previous = 0;
      bool first = true;
      for (const StreamItem& item : job.stream) {
        if (item.reset) {
          ++resets;
          continue;
        }
        if (!first && item.seq <= previous && ++reported <= 5) {
          ADD_FAILURE() << ids[i] << ": chunk " << item.seq << " after " << previous;
        }
        first = false;
        previous = item.seq;
        EXPECT_NE(job.response->content.find(item.content), std::string::npos);
      }
      EXPECT_EQ(resets, 0u) << ids[i] << " was restarted";
      if (gapless) {
        const std::string problem = check_stream(job);
        if (!problem.empty() && ++reported <= 5) ADD_FAILURE() << ids[i] << ": " << problem;
      }
    }
  }

  // One provider request per job: nothing was redelivered.
  static void expect_one_attempt_each(const json& attempts, std::size_t jobs) {
    std::map<std::size_t, int> per_job;
    for (const auto& attempt : attempts) ++per_job[job_index(attempt.value("model", ""))];
    EXPECT_EQ(per_job.size(), jobs);
    for (const auto& [index, n] : per_job) {
      EXPECT_EQ(n, 1) << "job " << index << " reached the provider " << n << " times";
    }
  }

  std::unique_ptr<Stack> stack_;
  ExtraFakes extra_fakes_;
};

// ---------------------------------------------------------------------------------------------

TEST_F(LivenessTest, WorkerStoppedWithinTheWindowKeepsItsJobsAndItsConnection) {
  constexpr int kJobs = 40;
  stack_->start_workers(1, stack_->default_worker_config(), worker_args(100, "paused-worker"));
  stack_->wait_for_workers(1);
  zmq::context_t context(1);
  RawClient client(context, stack_->frontend());
  const auto ids = submit_streams(client, kJobs, 100, "wstop");

  // Stopped for half the window while every job streams through it: on resume its first
  // liveness check comes late and must not count the time it was not running.
  hold_stopped(stack_->workers()[0], kLivenessWindow / 2);

  expect_each_once_without_restart(client, ids, /*gapless=*/true);
  expect_one_attempt_each(stack_->fake_log(), kJobs);
  EXPECT_EQ(count_in(stack_->worker_log(0), "reconnecting"), 0u) << "the worker reconnected";
  EXPECT_EQ(count_in(broker_log(), " lost ("), 0u) << "the broker dropped the worker";
  const auto status = stack_->status(3s);
  ASSERT_TRUE(status);
  EXPECT_EQ(status->workers.size(), 1u);
  EXPECT_EQ(status->in_flight, 0u);
}

TEST_F(LivenessTest, BrokerStoppedWithinTheWindowIsNotTakenForDead) {
  constexpr int kJobs = 40;
  stack_->start_workers(1, stack_->default_worker_config(), worker_args(100, "steady-worker"));
  stack_->wait_for_workers(1);
  zmq::context_t context(1);
  RawClient client(context, stack_->frontend());
  const auto ids = submit_streams(client, kJobs, 100, "bstop");

  // The worker hears from the broker at least every 1.5 intervals (150 ms); stopped for 400 ms
  // the broker stays within the worker's 800 ms window, and on resume its own late check must
  // not count the stop against the worker, whose chunks are waiting unread.
  hold_stopped(stack_->broker(), kLivenessWindow / 2);

  expect_each_once_without_restart(client, ids, /*gapless=*/true);
  expect_one_attempt_each(stack_->fake_log(), kJobs);
  EXPECT_EQ(count_in(stack_->worker_log(0), "reconnecting"), 0u) << "the worker reconnected";
  EXPECT_EQ(count_in(broker_log(), " lost ("), 0u) << "the broker dropped the worker";
}

// The failure seen under CPU starvation: the worker hears nothing from the broker for longer
// than the window, reconnects on a new socket, and the broker - once it runs again - used to
// take the new connection for a restarted worker and redeliver every job still streaming there.
TEST_F(LivenessTest, BrokerStoppedBeyondTheWindowWorkerReconnectsAndKeepsItsJobs) {
  constexpr int kJobs = 40;
  stack_->start_workers(1, stack_->default_worker_config(), worker_args(100, "patient-worker"));
  stack_->wait_for_workers(1);
  zmq::context_t context(1);
  RawClient client(context, stack_->frontend());
  // 250 chunks 20 ms apart (5 s): every job outlasts the fault and the reconnect.
  const auto ids = submit_streams(client, kJobs, 250, "bgone");

  hold_stopped(stack_->broker(), kLivenessWindow + 500ms);

  expect_each_once_without_restart(client, ids, /*gapless=*/false);
  expect_one_attempt_each(stack_->fake_log(), kJobs);
  const std::string worker_log = stack_->worker_log(0);
  const std::string log = broker_log();
  EXPECT_GE(count_in(worker_log, "reconnecting"), 1u) << "the fault did not force a reconnect";
  EXPECT_GE(count_in(log, "kept on its new connection"), 1u);
  // Lost connections, and every one of them with nothing left to redeliver.
  EXPECT_EQ(count_in(log, "unfinished jobs"), count_in(log, "; 0 unfinished jobs"));
  EXPECT_EQ(count_in(log, "silent for"), 0u) << "the broker took its own stop for the worker's";
  const auto status = stack_->status(3s);
  ASSERT_TRUE(status);
  ASSERT_EQ(status->workers.size(), 1u);
  EXPECT_EQ(status->workers[0].worker_id, "patient-worker");
  EXPECT_EQ(status->in_flight, 0u);
}

// A worker stopped well beyond the window is dead as far as anyone can tell: its jobs go to
// the other worker (streams restarted with a reset) and every job still ends exactly once.
// When it runs again it finds itself unknown, re-registers listing the jobs it still runs, and
// is told to cancel them - they belong to the other worker now.
TEST_F(LivenessTest, WorkerStoppedBeyondTheWindowHasItsJobsRedeliveredExactlyOnce) {
  constexpr int kJobs = 40;
  FakeProviderProcess& fake_a = stack_->fake();
  FakeProviderProcess& fake_b = add_fake();
  const std::size_t a = start_worker_on(fake_a, worker_args(100, "frozen-worker"));
  stack_->wait_for_workers(1);
  zmq::context_t context(1);
  RawClient client(context, stack_->frontend());
  // All jobs go to the frozen worker-to-be: it is the only one when they are submitted.
  const auto ids = submit_streams(client, kJobs, 200, "wgone");
  start_worker_on(fake_b, worker_args(100, "rescue-worker"));
  stack_->wait_for_workers(2);

  {
    stack_->workers()[a].send_signal(SIGSTOP);
    struct Resume {
      ChildProcess& process;
      ~Resume() { process.send_signal(SIGCONT); }
    } resume{stack_->workers()[a]};
    // Redelivered while the worker is still stopped: the broker's verdict did not wait for it.
    const bool moved = poll_until(
        [&] { return fake_attempts(fake_b.host_url()).size() >= static_cast<std::size_t>(kJobs); },
        15s);
    ASSERT_TRUE(moved) << "the stopped worker's jobs were not redelivered";
  }

  ASSERT_TRUE(client.pump_until([&] { return client.finished() >= ids.size(); }, 60s))
      << client.finished() << " of " << ids.size() << " jobs finished";
  ASSERT_TRUE(client.status_barrier(5s));
  int reported = 0;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const JobRecord& job = client.jobs.at(ids[i]);
    EXPECT_EQ(job.results, 1) << ids[i];
    EXPECT_EQ(job.errors, 0) << ids[i] << (job.error ? ": " + job.error->message : "");
    EXPECT_EQ(job.events_after_end, 0) << ids[i];
    EXPECT_TRUE(std::any_of(job.stream.begin(), job.stream.end(),
                            [](const StreamItem& item) { return item.reset; }))
        << ids[i] << " changed worker mid-stream without a reset";
    const std::string problem = check_stream(job);
    if (!problem.empty() && ++reported <= 5) ADD_FAILURE() << ids[i] << ": " << problem;
  }
  expect_one_attempt_each(fake_attempts(fake_b.host_url()), kJobs);
  EXPECT_GE(count_in(broker_log(), "silent for"), 1u);

  // Back again, the frozen worker re-registers and stops its stale copies when told to.
  ASSERT_TRUE(poll_until(
      [&] {
        const auto status = stack_->status(1s);
        return status && find_worker(*status, "frozen-worker") != nullptr;
      },
      10s))
      << "the resumed worker did not re-register";
  // Its copies were 4 s long and had time to go: cancelled, they end as closed by the client
  // rather than answered.
  std::size_t closed = 0;
  const bool stale_ended = poll_until(
      [&] {
        closed = 0;
        for (const auto& attempt : fake_attempts(fake_a.host_url())) {
          const std::string outcome = attempt.value("outcome", "");
          if (outcome == "pending") return false;
          closed += outcome == "client_closed" ? 1 : 0;
        }
        return true;
      },
      10s);
  EXPECT_TRUE(stale_ended);
  EXPECT_GE(closed, static_cast<std::size_t>(kJobs / 2))
      << "the resumed worker kept running jobs that were no longer its own";
  const auto status = stack_->status(3s);
  ASSERT_TRUE(status);
  EXPECT_EQ(status->in_flight, 0u);
}

}  // namespace
}  // namespace dispatch::test
