// Whole-system tests of the broker and the worker runtime: the real fake-provider,
// dispatch-broker, dispatch-worker and `dispatch` binaries as child processes on loopback, driven
// through the client library and through a raw LLMD/1 client (system_support.hpp) where the test
// needs to see the wire (job ids, duplicates, chunk order).
//
// Timings are scaled down: broker and workers heartbeat every 100 ms and declare a peer dead
// after 4 silent intervals. Nothing waits by sleeping: every wait polls a condition with a
// deadline.

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "dispatch/client.hpp"
#include "dispatch/test/child_process.hpp"
#include "dispatch/test/stack.hpp"
#include "system_support.hpp"

namespace dispatch::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

const std::vector<std::string> kBrokerArgs = {"--heartbeat-ms", "100", "--liveness", "4"};

std::vector<std::string> worker_args(int concurrency, const std::string& id = {},
                                     std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {
      "--heartbeat-ms", "100", "--liveness", "4", "--concurrency", std::to_string(concurrency)};
  if (!id.empty()) {
    args.push_back("--id");
    args.push_back(id);
  }
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

ClientOptions client_options(const std::string& frontend) {
  ClientOptions options;
  options.broker_endpoint = frontend;
  options.heartbeat_interval = 200ms;
  options.liveness = 5;
  options.ack_timeout = 300ms;
  options.max_ack_timeout = 1000ms;
  options.max_submits = 30;
  options.deadline_allowance = 30s;
  options.cancel_grace = 10s;
  return options;
}

// The fake answers "reply to: <words of the prompt> lorem ipsum ...".
std::string expected_prefix(const std::string& prompt) {
  return "reply to: " + prompt;
}

// One job submitted through the client library with callbacks, recording every callback. The
// callbacks run on the client's I/O thread; `mutex` guards the records.
struct LibraryJobs {
  struct Job {
    std::string id;
    std::string prompt;
    bool stream = false;
    int completions = 0;
    std::optional<DispatchOutcome> outcome;
    std::vector<StreamEvent> events;
  };

  explicit LibraryJobs(std::size_t count) : jobs(count) {}

  void submit(Client& client, std::size_t index, const DispatchRequest& request,
              const std::string& prompt) {
    Job& job = jobs.at(index);
    job.prompt = prompt;
    job.stream = request.stream();
    StreamCallback on_event;
    if (job.stream) {
      on_event = [this, &job](const StreamEvent& event) {
        std::lock_guard lock(mutex);
        job.events.push_back(event);
      };
    }
    std::string id = client.dispatch_async(
        request,
        [this, &job](DispatchOutcome outcome) {
          std::lock_guard lock(mutex);
          ++job.completions;
          job.outcome = std::move(outcome);
          ++completed;
        },
        std::move(on_event));
    std::lock_guard lock(mutex);
    job.id = std::move(id);
  }

  std::size_t done() {
    std::lock_guard lock(mutex);
    return completed;
  }

  bool wait_all(milliseconds timeout) {
    return poll_until([&] { return done() >= jobs.size(); }, timeout, 20ms);
  }

  // Every job answered exactly once, successfully, with its own prompt's answer, and every
  // streamed job's events (after its last reset) spelling the final answer.
  void expect_all_succeeded_once() {
    std::lock_guard lock(mutex);
    std::set<std::string> ids;
    int failures_reported = 0;
    for (std::size_t i = 0; i < jobs.size(); ++i) {
      const Job& job = jobs[i];
      EXPECT_TRUE(ids.insert(job.id).second) << "job id reused: " << job.id;
      EXPECT_EQ(job.completions, 1)
          << "job " << i << " (" << job.id << ") completed " << job.completions << " times";
      if (!job.outcome) continue;
      if (!job.outcome->ok()) {
        if (++failures_reported <= 5) {
          ADD_FAILURE() << "job " << i << " failed: " << job.outcome->error->what() << " (kind "
                        << protocol::to_string(job.outcome->error->kind()) << ", code "
                        << job.outcome->error->code() << ")";
        }
        continue;
      }
      const DispatchResponse& response = *job.outcome->response;
      EXPECT_EQ(response.content.rfind(expected_prefix(job.prompt), 0), 0u)
          << "job " << i << ": " << response.content;
      if (!job.stream) {
        EXPECT_TRUE(job.events.empty());
        continue;
      }
      std::string text;
      bool gap = false;
      for (const StreamEvent& event : job.events) {
        if (event.type == StreamEvent::Type::reset) text.clear();
        if (event.type == StreamEvent::Type::gap) gap = true;
        if (event.type == StreamEvent::Type::chunk) text += event.content;
      }
      if (!gap) {
        EXPECT_EQ(text, response.content) << "job " << i;
      }
    }
  }

  std::mutex mutex;
  std::vector<Job> jobs;
  std::size_t completed = 0;
};

class SystemTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string missing = StackBinaries::from_build().missing();
    ASSERT_TRUE(missing.empty()) << "binaries not built: " << missing;
    stack_ = std::make_unique<Stack>(StackBinaries::from_build());
    stack_->start_fake_provider();
  }

  // A fake provider of its own for one worker, so that worker's provider traffic (and its
  // concurrency) can be read from that fake's log.
  FakeProviderProcess& add_fake() { return extra_fakes_.add(*stack_); }

  // Starts one worker whose providers all point at `fake`.
  std::size_t start_worker_on(FakeProviderProcess& fake, const std::vector<std::string>& args) {
    return ExtraFakes::start_worker_on(*stack_, fake, args);
  }

  protocol::StatusReply status() {
    auto reply = stack_->status(3000ms);
    if (!reply) throw std::runtime_error("broker did not answer status");
    return *reply;
  }

  std::string log_tail(const std::string& name) {
    std::string text = read_text_file(stack_->dir().file(name));
    return text.size() > 4000 ? text.substr(text.size() - 4000) : text;
  }

  void TearDown() override {
    if (HasFailure() && stack_) {
      std::cerr << "---- broker.log (tail) ----\n" << log_tail("broker.log") << "\n";
      for (std::size_t i = 0; i < stack_->workers().size(); ++i) {
        std::string text = stack_->worker_log(i);
        if (text.size() > 3000) text = text.substr(text.size() - 3000);
        std::cerr << "---- worker-" << i << ".log (tail) ----\n" << text << "\n";
      }
    }
    stack_.reset();
    extra_fakes_.clear();
  }

  std::unique_ptr<Stack> stack_;
  ExtraFakes extra_fakes_;
};

// ---------------------------------------------------------------------------------------------

TEST_F(SystemTest, ManyJobsOverThreeWorkersCompleteOnceSpreadAndWithinCapacity) {
  constexpr int kJobs = 300;
  constexpr int kCapacity = 5;
  stack_->start_broker(kBrokerArgs);
  std::vector<FakeProviderProcess*> fakes = {&stack_->fake(), &add_fake(), &add_fake()};
  for (int w = 0; w < 3; ++w) {
    start_worker_on(*fakes[static_cast<std::size_t>(w)],
                    worker_args(kCapacity, "cap-worker-" + std::to_string(w)));
  }
  stack_->wait_for_workers(3);

  Client client(client_options(stack_->frontend()));
  LibraryJobs jobs(kJobs);
  int streamed = 0;
  for (int i = 0; i < kJobs; ++i) {
    const std::string prompt = "q" + std::to_string(i);
    // Slow enough (about 60 ms each) that every worker runs at its capacity for a while.
    const bool stream = i % 3 == 0;
    streamed += stream ? 1 : 0;
    auto request =
        stream ? DispatchRequest(Provider::openai, "cap-s~chunk_delay_ms=10~tokens=6",
                                 {Message::user(prompt)})
                     .with_stream(true)
               : DispatchRequest(Provider::ollama, "cap-m~latency_ms=60", {Message::user(prompt)});
    jobs.submit(client, static_cast<std::size_t>(i), request, prompt);
  }

  // While the jobs run, the broker never reports more in flight at a worker than its capacity.
  uint32_t peak_reported = 0;
  const bool all_done = poll_until(
      [&] {
        if (auto reply = stack_->status(1000ms)) {
          for (const auto& worker : reply->workers) {
            peak_reported = std::max(peak_reported, worker.in_flight);
          }
        }
        return jobs.done() >= kJobs;
      },
      60s, 20ms);
  ASSERT_TRUE(all_done) << jobs.done() << " of " << kJobs << " jobs done";
  jobs.expect_all_succeeded_once();
  EXPECT_LE(peak_reported, static_cast<uint32_t>(kCapacity));

  // The provider saw each job once, spread over all three workers, none over its capacity.
  std::size_t total_attempts = 0;
  for (std::size_t w = 0; w < fakes.size(); ++w) {
    const json attempts = fake_attempts(fakes[w]->host_url());
    const json stats = fake_stats(fakes[w]->host_url());
    const int peak = max_open_attempts(attempts);
    std::cerr << "worker " << w << ": " << attempts.size() << " jobs, peak " << peak
              << " concurrent requests, peak " << stats.value("peak_active_streams", -1)
              << " concurrent streams\n";
    total_attempts += attempts.size();
    EXPECT_GE(attempts.size(), static_cast<std::size_t>(kJobs / 6)) << "worker " << w;
    EXPECT_LE(peak, kCapacity) << "worker " << w;
    // Slow jobs and a deep queue: the capacity is used, so the bound above means something.
    EXPECT_EQ(peak, kCapacity) << "worker " << w;
    EXPECT_LE(stats.value("peak_active_streams", 1000), kCapacity) << "worker " << w;
    for (const auto& attempt : attempts) {
      EXPECT_EQ(attempt.value("outcome", ""), "ok");
    }
  }
  EXPECT_EQ(total_attempts, static_cast<std::size_t>(kJobs));

  // The broker's counters agree.
  const protocol::StatusReply reply = status();
  ASSERT_TRUE(reply.providers.contains("openai"));
  ASSERT_TRUE(reply.providers.contains("ollama"));
  EXPECT_EQ(reply.providers.at("openai").submitted, static_cast<uint64_t>(streamed));
  EXPECT_EQ(reply.providers.at("openai").succeeded, static_cast<uint64_t>(streamed));
  EXPECT_EQ(reply.providers.at("ollama").submitted, static_cast<uint64_t>(kJobs - streamed));
  EXPECT_EQ(reply.providers.at("ollama").succeeded, static_cast<uint64_t>(kJobs - streamed));
  EXPECT_EQ(reply.in_flight, 0u);
  EXPECT_EQ(total_queue_depth(reply), 0u);
}

// ---------------------------------------------------------------------------------------------

TEST_F(SystemTest, KillNineWorkerMidRunEveryJobCompletesOnceWithOrderedStreams) {
  constexpr int kJobs = 500;
  stack_->start_broker(kBrokerArgs);
  std::vector<FakeProviderProcess*> fakes = {&stack_->fake(), &add_fake(), &add_fake()};
  for (int w = 0; w < 3; ++w) {
    start_worker_on(*fakes[static_cast<std::size_t>(w)],
                    worker_args(40, "kill-worker-" + std::to_string(w)));
  }
  stack_->wait_for_workers(3);

  zmq::context_t context(1);
  RawClient client(context, stack_->frontend());
  const std::string run = std::to_string(::getpid());
  std::vector<std::string> ids;
  int streamed = 0;
  for (int i = 0; i < kJobs; ++i) {
    const std::string id = "kill-" + run + "-" + std::to_string(i);
    const bool stream = i % 3 == 0;
    streamed += stream ? 1 : 0;
    // About 0.4 s each: 20 chunks 20 ms apart (a non-streamed answer takes as long). The model
    // name carries the job's index so the provider's log tells which worker runs which job.
    client.submit(id, make_request(stream ? "openai" : "ollama",
                                   "kill" + std::to_string(i) + "~chunk_delay_ms=20~tokens=20",
                                   "k" + std::to_string(i), stream));
    ids.push_back(id);
  }

  // Kill worker 0 while it is in the middle of streams whose chunks the client already got.
  const auto started = SteadyClock::now();
  std::set<std::size_t> streaming_at_kill;  // job indexes
  const bool mid_stream = client.pump_until(
      [&] {
        const json attempts = fake_attempts(fakes[0]->host_url());
        streaming_at_kill.clear();
        for (const auto& attempt : attempts) {
          if (!attempt.value("stream", false) || attempt.value("outcome", "") != "pending")
            continue;
          const std::string model = attempt.value("model", "");
          const std::size_t index = std::stoul(model.substr(4, model.find('~') - 4));
          const JobRecord& job = client.jobs[ids.at(index)];
          if (!job.stream.empty() && job.endings() == 0) streaming_at_kill.insert(index);
        }
        return streaming_at_kill.size() >= 5;
      },
      30s);
  ASSERT_TRUE(mid_stream) << "the client never got chunks of 5 streams running at worker 0";
  stack_->workers()[0].send_signal(SIGKILL);
  const auto killed_at = ms_since(started);

  ASSERT_TRUE(client.pump_until([&] { return client.finished() >= ids.size(); }, 60s))
      << client.finished() << " of " << ids.size() << " jobs finished";
  // Anything sent before this status reply has arrived: a late duplicate would be counted.
  ASSERT_TRUE(client.status_barrier(5s));

  int resets = 0;
  int jobs_with_reset = 0;
  int reported = 0;
  for (int i = 0; i < kJobs; ++i) {
    const JobRecord& job = client.jobs.at(ids[static_cast<std::size_t>(i)]);
    const bool stream = i % 3 == 0;
    EXPECT_EQ(job.accepted, 1) << ids[static_cast<std::size_t>(i)];
    EXPECT_EQ(job.results, 1) << ids[static_cast<std::size_t>(i)];
    EXPECT_EQ(job.errors, 0) << ids[static_cast<std::size_t>(i)]
                             << (job.error ? ": " + job.error->message : "");
    EXPECT_EQ(job.rejections, 0) << ids[static_cast<std::size_t>(i)];
    EXPECT_EQ(job.events_after_end, 0) << ids[static_cast<std::size_t>(i)];
    if (!job.response) continue;
    EXPECT_EQ(job.response->content.rfind(expected_prefix("k" + std::to_string(i)), 0), 0u);
    if (!stream) {
      EXPECT_TRUE(job.stream.empty()) << "chunks for a non-streamed job";
      continue;
    }
    EXPECT_FALSE(job.stream.empty()) << "no chunks for streamed job " << i;
    const int job_resets = static_cast<int>(
        std::count_if(job.stream.begin(), job.stream.end(), [](const auto& e) { return e.reset; }));
    resets += job_resets;
    jobs_with_reset += job_resets > 0 ? 1 : 0;
    const std::string problem = check_stream(job);
    if (!problem.empty() && ++reported <= 5) {
      ADD_FAILURE() << "job " << i << ": " << problem;
    }
  }

  // The kill cut requests at worker 0's provider; the broker redelivered them, announcing the
  // restart to the clients that had seen chunks.
  const json killed_attempts = fake_attempts(fakes[0]->host_url());
  int cut = 0;
  for (const auto& attempt : killed_attempts) cut += attempt.value("outcome", "") != "ok" ? 1 : 0;
  std::size_t attempts_elsewhere = 0;
  for (std::size_t w = 1; w < fakes.size(); ++w) {
    attempts_elsewhere += fake_attempts(fakes[w]->host_url()).size();
  }
  std::cerr << "killed worker 0 after " << killed_at << " ms, amid " << streaming_at_kill.size()
            << " streams the client was receiving; it had " << killed_attempts.size()
            << " provider requests, " << cut << " cut; " << jobs_with_reset
            << " streamed jobs restarted (" << resets << " resets); all done after "
            << ms_since(started) << " ms\n";
  EXPECT_GE(cut, 5);
  EXPECT_GE(jobs_with_reset, 1);
  // Every stream the client was receiving from worker 0 that the kill cut was restarted with a
  // reset before its new chunks.
  for (const auto& attempt : killed_attempts) {
    const std::string model = attempt.value("model", "");
    const std::size_t index = std::stoul(model.substr(4, model.find('~') - 4));
    if (!streaming_at_kill.contains(index) || attempt.value("outcome", "") == "ok") continue;
    const JobRecord& job = client.jobs.at(ids.at(index));
    EXPECT_TRUE(std::any_of(job.stream.begin(), job.stream.end(),
                            [](const StreamItem& item) { return item.reset; }))
        << "job " << index << " lost its worker mid-stream without a reset";
  }
  EXPECT_GE(killed_attempts.size() - static_cast<std::size_t>(cut) + attempts_elsewhere,
            static_cast<std::size_t>(kJobs));

  const protocol::StatusReply reply = status();
  EXPECT_EQ(reply.workers.size(), 2u);
  EXPECT_EQ(find_worker(reply, "kill-worker-0"), nullptr);
  EXPECT_EQ(reply.in_flight, 0u);
}

// ---------------------------------------------------------------------------------------------

TEST_F(SystemTest, BrokerRestartMidRunClientsAndWorkersReconnectAndEveryJobCompletes) {
  constexpr int kJobs = 200;
  stack_->start_broker(kBrokerArgs);
  stack_->start_workers(2, stack_->default_worker_config(), worker_args(10));
  stack_->wait_for_workers(2);
  const std::string first_broker = status().broker_id;

  Client client(client_options(stack_->frontend()));
  LibraryJobs jobs(kJobs);
  for (int i = 0; i < kJobs; ++i) {
    const std::string prompt = "r" + std::to_string(i);
    const bool stream = i % 4 == 0;
    jobs.submit(client, static_cast<std::size_t>(i),
                DispatchRequest(Provider::ollama, "restart~chunk_delay_ms=20~tokens=10",
                                {Message::user(prompt)})
                    .with_stream(stream),
                prompt);
  }

  // Restart while some jobs are done, some run at the workers and the rest wait in the queue.
  uint64_t queued_at_restart = 0;
  uint64_t running_at_restart = 0;
  const bool mid_run = poll_until(
      [&] {
        if (jobs.done() < 20) return false;
        auto reply = stack_->status(1000ms);
        if (!reply) return false;
        queued_at_restart = total_queue_depth(*reply);
        running_at_restart = reply->in_flight;
        return queued_at_restart > 0 && running_at_restart > 0;
      },
      30s, 5ms);
  ASSERT_TRUE(mid_run) << "never saw queued and running jobs together";
  const std::size_t done_before = jobs.done();
  const auto restart_started = SteadyClock::now();
  stack_->restart_broker();

  // The workers find the new broker instance on their own.
  std::string second_broker;
  const bool workers_back = poll_until(
      [&] {
        auto reply = stack_->status(1000ms);
        if (!reply) return false;
        second_broker = reply->broker_id;
        return reply->workers.size() == 2;
      },
      15s, 20ms);
  const auto reconnect_ms = ms_since(restart_started);
  ASSERT_TRUE(workers_back) << "workers did not re-register with the restarted broker";
  EXPECT_NE(second_broker, first_broker);

  ASSERT_TRUE(jobs.wait_all(60s)) << jobs.done() << " of " << kJobs << " jobs done";
  jobs.expect_all_succeeded_once();

  // The client handed its unfinished jobs to the new instance.
  const protocol::StatusReply reply = status();
  ASSERT_TRUE(reply.providers.contains("ollama"));
  EXPECT_GE(reply.providers.at("ollama").submitted, static_cast<uint64_t>(kJobs) - done_before);
  std::cerr << "restart with " << done_before << " done, " << running_at_restart << " running, "
            << queued_at_restart << " queued; workers back after " << reconnect_ms
            << " ms; new broker took " << reply.providers.at("ollama").submitted << " jobs\n";
}

// ---------------------------------------------------------------------------------------------
// Hostile input

// Sends junk at one endpoint from its own thread until stopped: malformed LLMD/1 messages and
// random frames on ZeroMQ DEALER sockets, or random bytes on plain TCP connections.
class Storm {
 public:
  Storm(std::vector<std::string> endpoints, uint64_t seed) : endpoints_(std::move(endpoints)) {
    for (std::size_t i = 0; i < endpoints_.size(); ++i) {
      threads_.emplace_back([this, i, seed] { zmq_storm(endpoints_[i], seed + i); });
      threads_.emplace_back([this, i, seed] { tcp_storm(endpoints_[i], seed + 100 + i); });
    }
  }
  ~Storm() { stop(); }
  Storm(const Storm&) = delete;
  Storm& operator=(const Storm&) = delete;

  void stop() {
    stop_ = true;
    for (auto& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
  }

  std::atomic<uint64_t> zmq_messages{0};
  std::atomic<uint64_t> oversized{0};
  std::atomic<uint64_t> tcp_connections{0};
  std::atomic<uint64_t> replies{0};

 private:
  static std::string random_bytes(std::mt19937_64& rng, std::size_t max) {
    std::string out(rng() % (max + 1), '\0');
    for (auto& c : out) c = static_cast<char>(rng());
    return out;
  }

  // One hostile message: each case is something a decoder must refuse without harm.
  static std::vector<std::string> junk(std::mt19937_64& rng, uint64_t n) {
    // Every header below is deliberately broken; none decodes as a usable message (in
    // particular never as a valid `ready`, which would register a worker that runs nothing).
    static const std::vector<std::string> kCommands = {
        "submit", "cancel", "heartbeat", "status",     "ready", "credit",  "chunk",
        "reset",  "result", "error",     "disconnect", "job",   "accepted"};
    const std::string tag(protocol::kProtocolTag);
    const std::string& command = kCommands[rng() % kCommands.size()];
    switch (rng() % 14) {
      case 0: {  // 0..7 frames of random bytes
        std::vector<std::string> frames(rng() % 8);
        for (auto& f : frames) f = random_bytes(rng, 64);
        if (frames.empty()) frames.emplace_back();
        return frames;
      }
      case 1:
        return {"LLMD2", "submit", "\x80"};  // another protocol version
      case 2:
        return {"LLMD", "status", "\x80"};
      case 3:
        return {tag, "frobnicate", "\x80"};  // unknown command
      case 4:
        return {tag, command, random_bytes(rng, 48), random_bytes(rng, 48)};
      case 5:
        return {tag, command, std::string("\xdd\xff\xff\xff\xff", 5)};  // 4 G element array
      case 6:
        return {tag, command, std::string("\xc1", 1)};  // reserved byte
      case 7:
        return {tag, command, std::string(40, '\x91') + "\x80"};  // nested too deep
      case 8:                                                     // a key twice
        return {tag, "submit", "\x82\xa6job_id\xa1x\xa6job_id\xa1y", "\x80"};
      case 9:  // wrong type
        return {tag, command, "\x81\xa6job_id\x05"};
      case 10:  // job id over 128 bytes
        return {tag, "submit",
                "\x82\xa6job_id\xd9\xc8" + std::string(200, 'j') + "\xa8provider\xa1x", "\x80"};
      case 11:  // a good header with an undecodable payload
        return {tag, "submit",
                "\x82\xa6job_id\xa7storm-" + std::to_string(n % 10) + "\xa8provider\xa6ollama",
                std::string("\x93\x01", 2)};
      case 12:  // too many frames
        return {tag, command, "\x80", "\x80", "\x80", "\x80", "\x80"};
      default:  // trailing bytes after a valid map
        return {tag, command, "\x80\x80"};
    }
  }

  void zmq_storm(const std::string& endpoint, uint64_t seed) {
    std::mt19937_64 rng(seed);
    zmq::context_t context(1);
    std::vector<zmq::socket_t> sockets;
    for (int i = 0; i < 3; ++i) {
      sockets.emplace_back(context, zmq::socket_type::dealer);
      sockets.back().set(zmq::sockopt::linger, 0);
      sockets.back().set(zmq::sockopt::sndhwm, 2000);
      sockets.back().connect(endpoint);
    }
    const auto deadline = SteadyClock::now() + 120s;
    for (uint64_t n = 0; !stop_ && n < 2'000'000 && SteadyClock::now() < deadline; ++n) {
      zmq::socket_t& socket = sockets[n % sockets.size()];
      std::vector<std::string> frames;
      if (n % 5000 == 4999 && oversized < 4) {
        // Over ZMQ_MAXMSGSIZE: the broker's libzmq drops this connection; the DEALER reconnects.
        frames = {std::string(protocol::kProtocolTag), "submit",
                  std::string(protocol::Limits::max_message_bytes + 1024, '\x80')};
        ++oversized;
      } else {
        frames = junk(rng, n);
      }
      std::vector<std::string_view> views(frames.begin(), frames.end());
      if (protocol::send_frames(socket, views, protocol::SendMode::nonblocking)) ++zmq_messages;
      for (auto& s : sockets) {
        zmq::message_t reply;
        for (int k = 0; k < 100 && s.recv(reply, zmq::recv_flags::dontwait); ++k) ++replies;
      }
      // Paced so that the storm shares the machine with the real jobs instead of starving them.
      if (n % 50 == 49) std::this_thread::sleep_for(1ms);
    }
  }

  void tcp_storm(const std::string& endpoint, uint64_t seed) {
    std::mt19937_64 rng(seed);
    const auto colon = endpoint.rfind(':');
    const std::string host = endpoint.substr(6, colon - 6);  // after "tcp://"
    const int port = std::stoi(endpoint.substr(colon + 1));
    // A ZMTP 3.0 greeting (signature, version 3.0, NULL mechanism) so that some junk reaches the
    // framing layer, followed by a frame header declaring 2^40 bytes.
    std::string greeting("\xff\0\0\0\0\0\0\0\x01\x7f\x03\x00NULL", 16);
    greeting += std::string(16, '\0') + std::string(1, '\0') + std::string(31, '\0');
    const std::string huge_frame("\x02\x00\x00\x01\x00\x00\x00\x00\x00", 9);
    const auto deadline = SteadyClock::now() + 120s;
    for (uint64_t n = 0; !stop_ && n < 200'000 && SteadyClock::now() < deadline; ++n) {
      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) continue;
      sockaddr_in address{};
      address.sin_family = AF_INET;
      address.sin_port = htons(static_cast<uint16_t>(port));
      ::inet_pton(AF_INET, host.c_str(), &address.sin_addr);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) {
        ++tcp_connections;
        std::string bytes;
        switch (n % 3) {
          case 0:
            bytes = random_bytes(rng, 4096);
            break;
          case 1:
            bytes = greeting + random_bytes(rng, 512);
            break;
          default:
            bytes = greeting + huge_frame + random_bytes(rng, 64);
            break;
        }
        [[maybe_unused]] auto sent = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      }
      ::close(fd);
      if (n % 10 == 9) std::this_thread::sleep_for(1ms);
    }
  }

  std::vector<std::string> endpoints_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

// Sends raw frames on a DEALER and waits for a `rejected` or `disconnect` answer.
std::optional<std::pair<protocol::Command, std::string>> probe(
    zmq::context_t& context, const std::string& endpoint, const std::vector<std::string>& frames) {
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  socket.set(zmq::sockopt::linger, 0);
  socket.connect(endpoint);
  std::vector<std::string_view> views(frames.begin(), frames.end());
  protocol::IncomingMessage incoming;
  // Replies to hostile input are rate-limited: ask again until one gets through.
  const auto deadline = SteadyClock::now() + 10s;
  for (int attempt = 0; attempt < 100 && SteadyClock::now() < deadline; ++attempt) {
    protocol::send_frames(socket, views, protocol::SendMode::blocking);
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, 200ms);
    while (incoming.receive(socket, false)) {
      auto parsed = incoming.parse();
      if (!parsed) continue;
      const auto command = parsed.value().command;
      if (command == protocol::Command::rejected) {
        auto rejected = protocol::decode<protocol::Rejected>(parsed.value().header);
        if (rejected) return std::pair(command, rejected.value().code);
      }
      if (command == protocol::Command::disconnect) return std::pair(command, std::string());
    }
  }
  return std::nullopt;
}

TEST_F(SystemTest, StormOfMalformedInputAtBothSocketsLeavesRealJobsAndProcessesUnharmed) {
  constexpr int kJobs = 200;
  stack_->start_broker(kBrokerArgs);
  stack_->start_workers(2, stack_->default_worker_config(), worker_args(20));
  stack_->wait_for_workers(2);

  Storm storm({stack_->frontend(), stack_->backend()}, 20240501);
  // The storm is on before the first real job.
  ASSERT_TRUE(
      poll_until([&] { return storm.zmq_messages > 200 && storm.tcp_connections > 20; }, 20s));
  Client client(client_options(stack_->frontend()));
  LibraryJobs jobs(kJobs);
  for (int i = 0; i < kJobs; ++i) {
    const std::string prompt = "h" + std::to_string(i);
    jobs.submit(client, static_cast<std::size_t>(i),
                DispatchRequest(i % 2 ? Provider::ollama : Provider::claude,
                                "storm~chunk_delay_ms=5~tokens=8", {Message::user(prompt)})
                    .with_stream(i % 3 == 0),
                prompt);
  }
  ASSERT_TRUE(jobs.wait_all(90s)) << jobs.done() << " of " << kJobs << " jobs done";
  storm.stop();
  std::cerr << "storm: " << storm.zmq_messages << " junk ZeroMQ messages (" << storm.oversized
            << " oversized), " << storm.tcp_connections << " junk TCP connections, "
            << storm.replies << " reply frames to the junk\n";
  jobs.expect_all_succeeded_once();
  EXPECT_GT(storm.zmq_messages, 1000u);
  EXPECT_GT(storm.tcp_connections, 100u);
  EXPECT_GT(storm.replies, 0u) << "hostile input got no typed reply at all";

  // Both kinds of process are still up and serving.
  EXPECT_TRUE(stack_->broker().running());
  for (std::size_t i = 0; i < stack_->workers().size(); ++i) {
    EXPECT_TRUE(stack_->workers()[i].running()) << "worker " << i;
  }
  const protocol::StatusReply reply = status();
  EXPECT_EQ(reply.workers.size(), 2u);
  EXPECT_EQ(reply.providers.at("ollama").succeeded + reply.providers.at("claude").succeeded,
            static_cast<uint64_t>(kJobs));

  // Hostile input still gets its typed answer, on both sockets.
  zmq::context_t context(1);
  const std::string tag(protocol::kProtocolTag);
  auto version = probe(context, stack_->frontend(), {"LLMD2", "submit", "\x80"});
  ASSERT_TRUE(version);
  EXPECT_EQ(version->second, "version_mismatch");
  auto unknown = probe(context, stack_->frontend(), {tag, "frobnicate", "\x80"});
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->second, "unknown_command");
  auto malformed = probe(
      context, stack_->frontend(),
      {tag, "submit", "\x82\xa6job_id\xa7probe-1\xa8provider\xa6ollama", std::string("\xc1", 1)});
  ASSERT_TRUE(malformed);
  EXPECT_EQ(malformed->second, "malformed");
  auto backend_version = probe(context, stack_->backend(), {"LLMD2", "ready", "\x80"});
  ASSERT_TRUE(backend_version);
  EXPECT_EQ(backend_version->second, "version_mismatch");
  // A stranger on the backend that is not a registered worker is told to register.
  auto stranger = probe(context, stack_->backend(), {tag, "heartbeat", "\x80"});
  ASSERT_TRUE(stranger);
  EXPECT_EQ(stranger->first, protocol::Command::disconnect);

  // And real work still flows.
  auto response =
      client.dispatch(DispatchRequest(Provider::openai, "after-storm", {Message::user("after")}));
  EXPECT_EQ(response.content.rfind(expected_prefix("after"), 0), 0u);
}

// ---------------------------------------------------------------------------------------------
// Bounds, deadlines, late workers, cancel, drain

template <class Error>
Error expect_throws(PendingDispatch& pending, milliseconds timeout) {
  if (pending.wait_for(timeout) != std::future_status::ready) {
    throw std::runtime_error("no answer within " + std::to_string(timeout.count()) + " ms");
  }
  try {
    pending.get();
  } catch (const Error& error) {
    return error;
  } catch (const DispatchError& other) {
    throw std::runtime_error(std::string("wrong error type: ") + other.what() + " (kind " +
                             std::string(protocol::to_string(other.kind())) + ", code " +
                             other.code() + ")");
  }
  throw std::runtime_error("the job succeeded");
}

TEST_F(SystemTest, QueueBoundRejectsWithQueueFullError) {
  stack_->start_broker({"--heartbeat-ms", "100", "--liveness", "4", "--queue-limit", "5"});
  stack_->start_workers(1, stack_->default_worker_config(), worker_args(1));
  stack_->wait_for_workers(1);
  Client client(client_options(stack_->frontend()));

  // No worker serves "nowhere": its jobs wait until the queue is full.
  std::vector<PendingDispatch> waiting;
  for (int i = 0; i < 5; ++i) {
    waiting.push_back(client.dispatch_async(
        DispatchRequest("nowhere", "m", {Message::user("w")}).with_queue_timeout_ms(60000)));
  }
  ASSERT_TRUE(poll_until([&] { return total_queue_depth(status()) == 5; }, 10s));
  auto over = client.dispatch_async(
      DispatchRequest("nowhere", "m", {Message::user("over")}).with_queue_timeout_ms(60000));
  const auto full = expect_throws<QueueFullError>(over, 10s);
  EXPECT_EQ(full.kind(), ErrorKind::queue_full);
  EXPECT_EQ(full.code(), "queue_full");

  // Slow jobs for a served provider fill the queue the same way.
  for (auto& pending : waiting) pending.cancel();
  for (auto& pending : waiting) expect_throws<CancelledError>(pending, 10s);
  ASSERT_TRUE(poll_until([&] { return total_queue_depth(status()) == 0; }, 10s));
  std::vector<PendingDispatch> slow;
  for (int i = 0; i < 6; ++i) {  // one runs, five wait
    slow.push_back(
        client.dispatch_async(DispatchRequest(Provider::ollama, "bound~chunk_delay_ms=50~tokens=6",
                                              {Message::user("s" + std::to_string(i))})));
  }
  ASSERT_TRUE(poll_until(
      [&] {
        const auto reply = status();
        return total_queue_depth(reply) == 5 && reply.in_flight == 1;
      },
      10s));
  auto rejected = client.dispatch_async(
      DispatchRequest(Provider::ollama, "bound~chunk_delay_ms=50~tokens=6", {Message::user("x")}));
  EXPECT_EQ(expect_throws<QueueFullError>(rejected, 10s).code(), "queue_full");
  for (int i = 0; i < 6; ++i) {
    auto response = slow[static_cast<std::size_t>(i)].get();
    EXPECT_EQ(response.content.rfind(expected_prefix("s" + std::to_string(i)), 0), 0u);
  }
  // The rejected job never reached the provider.
  EXPECT_EQ(stack_->fake_log().size(), 6u);
}

TEST_F(SystemTest, QueueDeadlineGivesTimeoutOrUnsupportedProvider) {
  stack_->start_broker(kBrokerArgs);
  stack_->start_workers(1, stack_->default_worker_config(), worker_args(1));
  stack_->wait_for_workers(1);
  Client client(client_options(stack_->frontend()));

  // The only slot is busy for about 3 s.
  auto busy = client.dispatch_async(
      DispatchRequest(Provider::ollama, "busy~chunk_delay_ms=100~tokens=30", {Message::user("b")})
          .with_stream(true));
  ASSERT_TRUE(poll_until([&] { return status().in_flight == 1; }, 10s));

  auto started = SteadyClock::now();
  auto late = client.dispatch_async(
      DispatchRequest(Provider::ollama, "late", {Message::user("l")}).with_queue_timeout_ms(300));
  const auto timeout = expect_throws<TimeoutError>(late, 10s);
  const auto timeout_ms = ms_since(started);
  EXPECT_EQ(timeout.code(), "queue_deadline");
  EXPECT_GE(timeout_ms, 300);
  EXPECT_LT(timeout_ms, 2500) << "the deadline fired long after 300 ms";

  started = SteadyClock::now();
  auto unserved = client.dispatch_async(
      DispatchRequest("nowhere", "m", {Message::user("u")}).with_queue_timeout_ms(300));
  const auto unsupported = expect_throws<UnsupportedProviderError>(unserved, 10s);
  const auto unsupported_ms = ms_since(started);
  EXPECT_EQ(unsupported.kind(), ErrorKind::unsupported_provider);
  EXPECT_EQ(unsupported.code(), "queue_deadline");
  EXPECT_GE(unsupported_ms, 300) << "rejected before its queue deadline";
  std::cerr << "queue deadline 300 ms: timeout after " << timeout_ms
            << " ms, unsupported_provider after " << unsupported_ms << " ms\n";

  EXPECT_NO_THROW(busy.get());
  const json attempts = stack_->fake_log();
  EXPECT_EQ(count_attempts_for(attempts, "late"), 0u);
  EXPECT_EQ(attempts.size(), 1u);
}

TEST_F(SystemTest, WorkerThatJoinsLateGetsTheWaitingJobs) {
  constexpr int kJobs = 20;
  stack_->start_broker(kBrokerArgs);
  Client client(client_options(stack_->frontend()));
  LibraryJobs jobs(kJobs);
  for (int i = 0; i < kJobs; ++i) {
    const std::string prompt = "late" + std::to_string(i);
    jobs.submit(
        client, static_cast<std::size_t>(i),
        DispatchRequest(i % 2 ? Provider::ali : Provider::claude, "joiner", {Message::user(prompt)})
            .with_queue_timeout_ms(30000),
        prompt);
  }
  ASSERT_TRUE(poll_until([&] { return total_queue_depth(status()) == kJobs; }, 10s));
  EXPECT_EQ(jobs.done(), 0u);

  stack_->start_workers(1, stack_->default_worker_config(), worker_args(8));
  ASSERT_TRUE(jobs.wait_all(30s)) << jobs.done() << " of " << kJobs << " jobs done";
  jobs.expect_all_succeeded_once();
  EXPECT_EQ(stack_->fake_log().size(), static_cast<std::size_t>(kJobs));
}

TEST_F(SystemTest, CancelOfQueuedAndOfRunningJobEndsWithCancelledError) {
  stack_->start_broker(kBrokerArgs);
  stack_->start_workers(1, stack_->default_worker_config(), worker_args(1));
  stack_->wait_for_workers(1);
  Client client(client_options(stack_->frontend()));

  // Running: a stream of 100 chunks 100 ms apart (10 s) that is cancelled after it started.
  auto running = client.dispatch_async(
      DispatchRequest(Provider::openai, "cancel-running~chunk_delay_ms=100~tokens=100",
                      {Message::user("c")})
          .with_stream(true));
  // Queued behind it (the worker's only slot is taken).
  auto queued = client.dispatch_async(
      DispatchRequest(Provider::openai, "cancel-queued", {Message::user("q")}));
  ASSERT_TRUE(poll_until(
      [&] {
        const auto reply = client.status();  // same connection: both acks are in by now
        return reply.in_flight == 1 && total_queue_depth(reply) == 1;
      },
      10s));
  ASSERT_TRUE(poll_until(
      [&] {
        const json attempts = stack_->fake_log();
        return attempts.size() == 1 && attempts[0].contains("first_chunk_ms") &&
               !attempts[0]["first_chunk_ms"].is_null();
      },
      10s))
      << "the running job never reached the provider";

  auto started = SteadyClock::now();
  queued.cancel();
  const auto queued_error = expect_throws<CancelledError>(queued, 5s);
  EXPECT_NE(queued_error.code(), client_code::cancelled_locally) << "the broker did not confirm";
  const auto queued_ms = ms_since(started);

  started = SteadyClock::now();
  running.cancel();
  const auto running_error = expect_throws<CancelledError>(running, 5s);
  EXPECT_NE(running_error.code(), client_code::cancelled_locally) << "the worker did not confirm";
  const auto running_ms = ms_since(started);
  std::cerr << "cancel confirmed: queued job after " << queued_ms << " ms, running job after "
            << running_ms << " ms\n";

  // The worker aborted the provider request; the queued job never reached it.
  ASSERT_TRUE(
      poll_until([&] { return stack_->fake_log()[0].value("outcome", "") == "client_closed"; }, 5s))
      << stack_->fake_log().dump();
  const json attempts = stack_->fake_log();
  EXPECT_EQ(count_attempts_for(attempts, "cancel-queued"), 0u);
  EXPECT_LT(attempts[0].value("chunks_sent", 1000), 100);

  // The slot is free again.
  const auto reply = status();
  EXPECT_EQ(reply.in_flight, 0u);
  auto after = client.dispatch(DispatchRequest(Provider::openai, "after", {Message::user("a")}));
  EXPECT_EQ(after.content.rfind(expected_prefix("a"), 0), 0u);
}

TEST_F(SystemTest, WorkerSigtermDrainsItsJobsTakesNoNewOnesAndExitsZero) {
  constexpr int kCapacity = 4;
  constexpr auto kDrainTimeout = 8000ms;
  stack_->start_broker(kBrokerArgs);
  FakeProviderProcess& fake_a = stack_->fake();
  FakeProviderProcess& fake_b = add_fake();
  const std::size_t a = start_worker_on(
      fake_a, worker_args(kCapacity, "drain-a",
                          {"--drain-timeout-ms", std::to_string(kDrainTimeout.count())}));
  start_worker_on(fake_b, worker_args(kCapacity, "drain-b"));
  stack_->wait_for_workers(2);
  Client client(client_options(stack_->frontend()));

  // Eight jobs of about 1.5 s fill both workers.
  LibraryJobs jobs(16);
  for (int i = 0; i < 8; ++i) {
    const std::string prompt = "d" + std::to_string(i);
    jobs.submit(client, static_cast<std::size_t>(i),
                DispatchRequest(Provider::ollama, "drain~chunk_delay_ms=100~tokens=15",
                                {Message::user(prompt)})
                    .with_stream(i % 2 == 0),
                prompt);
  }
  ASSERT_TRUE(poll_until(
      [&] {
        return fake_attempts(fake_a.host_url()).size() == kCapacity &&
               fake_attempts(fake_b.host_url()).size() == kCapacity;
      },
      15s));

  const auto signalled = SteadyClock::now();
  stack_->workers()[a].send_signal(SIGTERM);
  const bool draining = poll_until(
      [&] {
        const auto reply = status();
        const auto* worker = find_worker(reply, "drain-a");
        return worker != nullptr && worker->capacity == 0 && worker->state == "draining";
      },
      5s, 5ms);
  ASSERT_TRUE(draining) << "the broker never showed drain-a as draining";

  // New work goes to the other worker only.
  for (int i = 8; i < 16; ++i) {
    const std::string prompt = "d" + std::to_string(i);
    jobs.submit(client, static_cast<std::size_t>(i),
                DispatchRequest(Provider::ollama, "drain~chunk_delay_ms=100~tokens=15",
                                {Message::user(prompt)}),
                prompt);
  }
  const auto exit = stack_->workers()[a].wait_for_exit(kDrainTimeout + 5s);
  const auto exit_ms = ms_since(signalled);
  ASSERT_TRUE(exit.has_value()) << "drain-a did not exit";
  EXPECT_TRUE(exit->exited);
  EXPECT_EQ(exit->code, 0);
  EXPECT_LT(exit_ms, kDrainTimeout.count());

  ASSERT_TRUE(jobs.wait_all(60s)) << jobs.done() << " of 16 jobs done";
  jobs.expect_all_succeeded_once();
  // drain-a finished exactly its own four jobs (nothing cut, nothing new); drain-b did the rest.
  const json attempts_a = fake_attempts(fake_a.host_url());
  EXPECT_EQ(attempts_a.size(), static_cast<std::size_t>(kCapacity));
  for (const auto& attempt : attempts_a) {
    EXPECT_EQ(attempt.value("outcome", ""), "ok");
  }
  EXPECT_EQ(fake_attempts(fake_b.host_url()).size(), 16u - kCapacity);
  std::cerr << "drain-a exited " << exit->code << " after " << exit_ms << " ms\n";

  const auto reply = status();
  EXPECT_EQ(reply.workers.size(), 1u);
  EXPECT_NE(find_worker(reply, "drain-b"), nullptr);
}

TEST_F(SystemTest, BrokerSigtermStopsAcceptingLetsRunningJobsFinishAndExits) {
  constexpr auto kDrainTimeout = 5000ms;
  stack_->start_broker({"--heartbeat-ms", "100", "--liveness", "4", "--drain-timeout-ms",
                        std::to_string(kDrainTimeout.count())});
  // The worker outlives its broker here: at its own SIGTERM it gives what libzmq still holds for
  // the broker up to its drain timeout (30 s by default) to leave. 2 s keeps its clean stop
  // within ChildProcess's grace.
  stack_->start_workers(1, stack_->default_worker_config(),
                        worker_args(2, {}, {"--drain-timeout-ms", "2000"}));
  stack_->wait_for_workers(1);
  Client client(client_options(stack_->frontend()));

  std::vector<PendingDispatch> running;
  for (int i = 0; i < 2; ++i) {  // about 1.5 s each
    running.push_back(client.dispatch_async(
        DispatchRequest(Provider::claude, "bdrain~chunk_delay_ms=100~tokens=15",
                        {Message::user("r" + std::to_string(i))})
            .with_stream(i == 0)));
  }
  std::vector<PendingDispatch> queued;
  for (int i = 0; i < 3; ++i) {
    queued.push_back(client.dispatch_async(DispatchRequest(
        Provider::claude, "bdrain-queued", {Message::user("q" + std::to_string(i))})));
  }
  ASSERT_TRUE(poll_until(
      [&] {
        const auto reply = client.status();
        return reply.in_flight == 2 && total_queue_depth(reply) == 3;
      },
      10s));

  const auto signalled = SteadyClock::now();
  stack_->broker().send_signal(SIGTERM);
  // Waiting jobs are handed back at once; new ones are refused.
  for (auto& pending : queued) {
    EXPECT_EQ(expect_throws<QueueFullError>(pending, 5s).code(), "draining");
  }
  auto refused =
      client.dispatch_async(DispatchRequest(Provider::claude, "bdrain-new", {Message::user("n")}));
  EXPECT_EQ(expect_throws<QueueFullError>(refused, 5s).code(), "draining");
  // Running jobs finish.
  for (int i = 0; i < 2; ++i) {
    auto response = running[static_cast<std::size_t>(i)].get();
    EXPECT_EQ(response.content.rfind(expected_prefix("r" + std::to_string(i)), 0), 0u);
  }
  const auto exit = stack_->broker().wait_for_exit(kDrainTimeout + 5s);
  const auto exit_ms = ms_since(signalled);
  ASSERT_TRUE(exit.has_value()) << "the broker did not exit";
  EXPECT_TRUE(exit->exited);
  EXPECT_EQ(exit->code, 0);
  EXPECT_LT(exit_ms, kDrainTimeout.count());
  std::cerr << "broker exited " << exit->code << " " << exit_ms << " ms after SIGTERM\n";

  const json attempts = stack_->fake_log();
  EXPECT_EQ(count_attempts_for(attempts, "bdrain-queued"), 0u);
  EXPECT_EQ(count_attempts_for(attempts, "bdrain-new"), 0u);
  EXPECT_EQ(count_attempts_for(attempts, "bdrain"), 2u);
}

// ---------------------------------------------------------------------------------------------

TEST_F(SystemTest, ResubmittedJobIdIsDeduplicatedWithoutSecondProviderCall) {
  stack_->start_broker(kBrokerArgs);
  stack_->start_workers(2, stack_->default_worker_config(), worker_args(4));
  stack_->wait_for_workers(2);
  zmq::context_t context(1);
  RawClient client(context, stack_->frontend());

  const std::string id = "dedup-" + std::to_string(::getpid());
  const std::string model = "dedup-" + std::to_string(::getpid()) + "~chunk_delay_ms=50~tokens=10";
  const protocol::Request request = make_request("ollama", model, "once", false);

  client.submit(id, request);
  // While it runs, the same id again: acknowledged as a duplicate, still one job.
  ASSERT_TRUE(client.pump_until([&] { return client.jobs[id].accepted == 1; }, 5s));
  ASSERT_TRUE(poll_until([&] { return stack_->fake_log().size() == 1; }, 5s));
  client.submit(id, request);
  ASSERT_TRUE(client.pump_until([&] { return client.jobs[id].results == 1; }, 10s));
  ASSERT_TRUE(client.status_barrier(5s));
  EXPECT_EQ(client.jobs[id].accepted, 2);
  EXPECT_EQ(client.jobs[id].duplicate_accepts, 1);
  EXPECT_EQ(client.jobs[id].results, 1) << "a running duplicate was answered twice";
  const protocol::Response first = *client.jobs[id].response;

  // After it finished: the stored answer comes back, the provider is not asked again.
  client.submit(id, request);
  ASSERT_TRUE(client.pump_until([&] { return client.jobs[id].results == 2; }, 5s));
  ASSERT_TRUE(client.status_barrier(5s));
  EXPECT_EQ(client.jobs[id].duplicate_accepts, 2);
  EXPECT_EQ(client.jobs[id].results, 2);
  EXPECT_EQ(client.jobs[id].errors, 0);
  EXPECT_EQ(*client.jobs[id].response, first);
  EXPECT_EQ(client.jobs[id].response->content.rfind(expected_prefix("once"), 0), 0u);
  EXPECT_EQ(stack_->fake_log().size(), 1u) << "the provider was called again";
  EXPECT_EQ(stack_->fake_log(model).size(), 1u);
}

// ---------------------------------------------------------------------------------------------

struct CliRun {
  std::vector<std::string> lines;
  ExitStatus exit;
};

CliRun run_cli(const std::vector<std::string>& argv) {
  ChildProcess child = ChildProcess::spawn(argv);
  CliRun run;
  const auto deadline = SteadyClock::now() + 20s;
  while (SteadyClock::now() < deadline) {
    auto line = child.read_line(1000ms);
    if (!line) {
      if (!child.running()) break;
      continue;
    }
    run.lines.push_back(*line);
  }
  // Lines printed just before the exit may still be buffered.
  for (int i = 0; i < 1000; ++i) {
    auto line = child.read_line(100ms);
    if (!line) break;
    run.lines.push_back(*line);
  }
  // The exit code is this helper's to report: read it (wait_for_exit) rather than stop().
  const auto exited = child.wait_for_exit(2000ms);
  run.exit = exited ? *exited : child.stop(2000ms);
  return run;
}

std::vector<std::string> split_words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> words;
  for (std::string word; in >> word;) words.push_back(word);
  return words;
}

TEST_F(SystemTest, StatusCliShowsWorkersAndPerProviderCounters) {
  stack_->start_broker(kBrokerArgs);
  stack_->start_workers(1, stack_->default_worker_config(), worker_args(6, "status-a"));
  stack_->start_workers(1, stack_->default_worker_config(), worker_args(3, "status-b"));
  stack_->wait_for_workers(2);
  Client client(client_options(stack_->frontend()));
  std::vector<PendingDispatch> pending;
  for (int i = 0; i < 12; ++i) {
    pending.push_back(client.dispatch_async(
        DispatchRequest(Provider::ollama, "st", {Message::user("o" + std::to_string(i))})));
  }
  for (int i = 0; i < 6; ++i) {
    pending.push_back(client.dispatch_async(
        DispatchRequest(Provider::openai, "st", {Message::user("p" + std::to_string(i))})
            .with_stream(true)));
  }
  int failed = 0;
  for (auto& p : pending) {
    EXPECT_NO_THROW(p.get());
  }
  for (int i = 0; i < 3; ++i) {
    try {
      client.dispatch(DispatchRequest(Provider::claude, "st~status=400", {Message::user("f")}));
    } catch (const InvalidRequestError&) {
      ++failed;
    }
  }
  EXPECT_EQ(failed, 3);

  const CliRun table = run_cli({stack_->binaries().cli, "status", "--broker", stack_->frontend()});
  EXPECT_TRUE(table.exit.success()) << "exit " << table.exit.code;
  std::string all;
  for (const auto& line : table.lines) all += line + "\n";
  std::cerr << all;

  EXPECT_NE(all.find("workers: 2  capacity 9"), std::string::npos) << all;
  std::map<std::string, std::vector<std::string>> rows;  // first word -> words
  for (const auto& line : table.lines) {
    auto words = split_words(line);
    if (!words.empty()) rows[words[0]] = words;
  }
  // WORKER HOST PID STATE CAPACITY IN-FLIGHT HEARTBEAT... PROVIDERS
  for (const auto& [id, capacity] :
       {std::pair<std::string, std::string>{"status-a", "6"}, {"status-b", "3"}}) {
    ASSERT_TRUE(rows.contains(id)) << all;
    const auto& row = rows[id];
    ASSERT_GE(row.size(), 8u) << all;
    EXPECT_EQ(row[3], "ready");
    EXPECT_EQ(row[4], capacity);
    EXPECT_EQ(row[5], "0");
    EXPECT_NE(row.back().find("ollama"), std::string::npos);
    EXPECT_NE(row.back().find("claude"), std::string::npos);
  }
  // PROVIDER SUBMITTED SUCCEEDED FAILED RETRIED FELL-OVER PROMPT COMPLETION
  const std::map<std::string, std::array<std::string, 3>> expected = {
      {"ollama", {"12", "12", "0"}}, {"openai", {"6", "6", "0"}}, {"claude", {"3", "0", "3"}}};
  for (const auto& [provider, counts] : expected) {
    ASSERT_TRUE(rows.contains(provider)) << all;
    const auto& row = rows[provider];
    ASSERT_EQ(row.size(), 8u) << all;
    EXPECT_EQ(row[1], counts[0]) << provider << " submitted";
    EXPECT_EQ(row[2], counts[1]) << provider << " succeeded";
    EXPECT_EQ(row[3], counts[2]) << provider << " failed";
    EXPECT_EQ(row[4], "0") << provider << " retried";
    EXPECT_EQ(row[5], "0") << provider << " fell over";
    if (provider != "claude") {
      EXPECT_GT(std::stoull(row[6]), 0u) << provider << " prompt tokens";
      EXPECT_GT(std::stoull(row[7]), 0u) << provider << " completion tokens";
    }
  }

  // --json carries the same facts.
  const CliRun as_json =
      run_cli({stack_->binaries().cli, "status", "--broker", stack_->frontend(), "--json"});
  EXPECT_TRUE(as_json.exit.success());
  ASSERT_EQ(as_json.lines.size(), 1u);
  const json object = json::parse(as_json.lines[0]);
  EXPECT_EQ(object["workers"].size(), 2u);
  EXPECT_EQ(object["providers"]["ollama"]["succeeded"], 12);
  EXPECT_EQ(object["providers"]["claude"]["failed"], 3);
  EXPECT_EQ(object["in_flight"], 0);

  // No broker: a non-zero exit.
  stack_->broker().stop();
  const CliRun nobody = run_cli(
      {stack_->binaries().cli, "status", "--broker", stack_->frontend(), "--timeout-ms", "300"});
  EXPECT_TRUE(nobody.exit.exited);
  EXPECT_NE(nobody.exit.code, 0);
}

}  // namespace
}  // namespace dispatch::test
