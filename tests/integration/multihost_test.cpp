// Several hosts on one machine: network namespaces that the test creates, joined by a bridge.
//
//   ns "…-sw"  bridge br0 (the switch; no addresses)
//   ns "…-b"   10.77.0.1  dispatch-broker (frontend and backend bound to 10.77.0.1 only)
//   ns "…-w1"  10.77.0.2  fake-provider + dispatch-worker
//   ns "…-w2"  10.77.0.3  dispatch-worker (its provider is the fake on 10.77.0.2)
//   ns "…-c"   10.77.0.4  the client: a thread of this test that joined the namespace, and the
//                         `dispatch` CLI started there with `ip netns exec`
//
// The broker serves 10.77.0.1, which other hosts reach, so it needs CURVE keys or --insecure.
// JobsCompleteAcrossNamespaces runs it with CURVE (README's "Running across hosts securely") for
// the real workers (--broker-key / --curve-secret), the client library (its CURVE options) and
// the `dispatch` CLI (DISPATCH_BROKER_KEY / DISPATCH_CURVE_SECRET). CurveAcrossNamespaces runs it
// with CURVE against a listed worker, an unlisted one and a plaintext peer on other hosts played
// by raw cppzmq sockets configured with make_curve_client.
//
// Nothing is added to the root namespace (so parallel runs cannot clash); names carry the test's
// pid and leftovers with the same names are removed first. Skips, saying why, where namespaces
// cannot be made (not root, no CAP_NET_ADMIN / CAP_SYS_ADMIN, no `ip`).

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "dispatch/client.hpp"
#include "dispatch/test/child_process.hpp"
#include "dispatch/test/stack.hpp"
#include "secure_support.hpp"
#include "system_support.hpp"

namespace dispatch::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

std::string find_ip_binary() {
  for (const char* path : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (::access(path, X_OK) == 0) return path;
  }
  return {};
}

struct CommandResult {
  std::optional<ExitStatus> exit;
  std::vector<std::string> out;
  std::string err;
  bool ok() const { return exit && exit->success(); }
};

// Runs a short command to its end (bounded), collecting stdout and stderr.
CommandResult run_command(const std::vector<std::string>& argv, const std::string& err_file,
                          milliseconds timeout = 20s, std::vector<std::string> env = {}) {
  CommandResult result;
  std::remove(err_file.c_str());
  ChildOptions options;
  options.stderr_path = err_file;
  options.extra_env = std::move(env);
  ChildProcess child = ChildProcess::spawn(argv, options);
  const auto deadline = SteadyClock::now() + timeout;
  while (SteadyClock::now() < deadline) {
    auto line = child.read_line(200ms);
    if (line) {
      result.out.push_back(*line);
      continue;
    }
    if (!child.running()) break;
  }
  for (int i = 0; i < 10'000; ++i) {  // what was printed just before the exit
    auto line = child.read_line(50ms);
    if (!line) break;
    result.out.push_back(*line);
  }
  result.exit = child.wait_for_exit(std::max(
      milliseconds(1), std::chrono::duration_cast<milliseconds>(deadline - SteadyClock::now())));
  if (!result.exit) result.exit = child.stop(1000ms);
  result.err = read_text_file(err_file);
  return result;
}

// Runs `fn` on a thread that has joined network namespace `name`: every socket it (and any thread
// it starts, such as the client library's I/O thread and libzmq's) opens lives there.
void run_in_namespace(const std::string& name, const std::function<void()>& fn) {
  std::string failure;
  std::exception_ptr error;
  std::thread thread([&] {
    const std::string path = "/run/netns/" + name;
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      failure = "open " + path + ": " + std::strerror(errno);
      return;
    }
    if (::setns(fd, CLONE_NEWNET) != 0) {
      failure = "setns " + path + ": " + std::strerror(errno);
      ::close(fd);
      return;
    }
    ::close(fd);
    try {
      fn();
    } catch (...) {
      error = std::current_exception();
    }
  });
  thread.join();
  if (!failure.empty()) throw std::runtime_error(failure);
  if (error) std::rethrow_exception(error);
}

class MultiHostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string missing = binaries_.missing();
    ASSERT_TRUE(missing.empty()) << "binaries not built: " << missing;
    if (::geteuid() != 0)
      GTEST_SKIP() << "network namespaces need root (euid " << ::geteuid() << ")";
    ip_ = find_ip_binary();
    if (ip_.empty()) GTEST_SKIP() << "no `ip` command (iproute2) to create network namespaces";

    const std::string prefix = "dsp" + std::to_string(::getpid());
    switch_ns_ = prefix + "-sw";
    broker_ns_ = prefix + "-b";
    worker1_ns_ = prefix + "-w1";
    worker2_ns_ = prefix + "-w2";
    client_ns_ = prefix + "-c";
    namespaces_ = {switch_ns_, broker_ns_, worker1_ns_, worker2_ns_, client_ns_};
    remove_namespaces();  // leftovers of a crashed run with the same pid

    const CommandResult probe = ip({"netns", "add", switch_ns_});
    if (!probe.ok()) {
      GTEST_SKIP() << "cannot create network namespaces (`ip netns add` failed: " << probe.err
                   << "); needs root with CAP_SYS_ADMIN and CAP_NET_ADMIN";
    }
    created_ = true;
    ASSERT_NO_FATAL_FAILURE(build_network());
  }

  void TearDown() override {
    if (HasFailure()) {
      for (const char* name : {"broker.log", "fake.log", "worker-1.log", "worker-2.log"}) {
        std::string text = read_text_file(dir_.file(name));
        if (text.size() > 3000) text = text.substr(text.size() - 3000);
        std::cerr << "---- " << name << " (tail) ----\n" << text << "\n";
      }
    }
    // Processes first: a namespace is only gone once nothing runs in it.
    workers_.clear();
    fake_.reset();
    broker_.reset();
    if (created_) remove_namespaces();
    for (const auto& name : namespaces_) {
      EXPECT_NE(::access(("/run/netns/" + name).c_str(), F_OK), 0) << name << " left behind";
    }
  }

  CommandResult ip(std::vector<std::string> args) {
    args.insert(args.begin(), ip_);
    return run_command(args, dir_.file("ip.err"));
  }

  void must(const std::vector<std::string>& args) {
    const CommandResult result = ip(args);
    std::string line = "ip";
    for (const auto& a : args) line += " " + a;
    ASSERT_TRUE(result.ok()) << line << " failed: " << result.err;
  }

  void remove_namespaces() {
    for (const auto& name : namespaces_) {
      if (::access(("/run/netns/" + name).c_str(), F_OK) == 0) ip({"netns", "del", name});
    }
  }

  // The bridge lives in the switch namespace; each host gets a veth pair whose one end is
  // plugged into the bridge and whose other end is the host's eth0.
  void build_network() {
    for (const auto& ns : {broker_ns_, worker1_ns_, worker2_ns_, client_ns_}) {
      ASSERT_NO_FATAL_FAILURE(must({"netns", "add", ns}));
    }
    ASSERT_NO_FATAL_FAILURE(must({"-n", switch_ns_, "link", "add", "br0", "type", "bridge"}));
    ASSERT_NO_FATAL_FAILURE(must({"-n", switch_ns_, "link", "set", "br0", "up"}));
    const std::vector<std::pair<std::string, std::string>> hosts = {{broker_ns_, kBrokerIp},
                                                                    {worker1_ns_, kWorker1Ip},
                                                                    {worker2_ns_, kWorker2Ip},
                                                                    {client_ns_, kClientIp}};
    int port = 0;
    for (const auto& [ns, address] : hosts) {
      const std::string plug = "port" + std::to_string(++port);
      ASSERT_NO_FATAL_FAILURE(must({"-n", switch_ns_, "link", "add", plug, "type", "veth", "peer",
                                    "name", "eth0", "netns", ns}));
      ASSERT_NO_FATAL_FAILURE(must({"-n", switch_ns_, "link", "set", plug, "master", "br0"}));
      ASSERT_NO_FATAL_FAILURE(must({"-n", switch_ns_, "link", "set", plug, "up"}));
      ASSERT_NO_FATAL_FAILURE(must({"-n", ns, "addr", "add", address + "/24", "dev", "eth0"}));
      ASSERT_NO_FATAL_FAILURE(must({"-n", ns, "link", "set", "eth0", "up"}));
      ASSERT_NO_FATAL_FAILURE(must({"-n", ns, "link", "set", "lo", "up"}));
    }
  }

  std::vector<std::string> in_namespace(const std::string& ns, std::vector<std::string> argv) {
    argv.insert(argv.begin(), {ip_, "netns", "exec", ns});
    return argv;
  }

  // `security`: the broker's CURVE flags, or --insecure.
  void start_broker(const std::vector<std::string>& security) {
    std::vector<std::string> argv = {binaries_.broker,
                                     "--frontend",
                                     "tcp://" + kBrokerIp + ":0",
                                     "--backend",
                                     "tcp://" + kBrokerIp + ":0",
                                     "--heartbeat-ms",
                                     "100",
                                     "--liveness",
                                     "4"};
    argv.insert(argv.end(), security.begin(), security.end());
    ChildOptions options;
    options.stderr_path = dir_.file("broker.log");
    broker_ = std::make_unique<ChildProcess>(
        ChildProcess::spawn(in_namespace(broker_ns_, std::move(argv)), options));
    const auto line = broker_->read_line(15s);
    ASSERT_TRUE(line) << "no listening line; " << read_text_file(dir_.file("broker.log"));
    const auto front = line->find("frontend=");
    const auto back = line->find(" backend=");
    ASSERT_TRUE(front != std::string::npos && back != std::string::npos) << *line;
    frontend_ = line->substr(front + 9, back - front - 9);
    backend_ = line->substr(back + 9);
    ASSERT_EQ(frontend_.rfind("tcp://" + kBrokerIp + ":", 0), 0u) << *line;
    ASSERT_EQ(backend_.rfind("tcp://" + kBrokerIp + ":", 0), 0u) << *line;
  }

  void start_fake() {
    ChildOptions options;
    options.stderr_path = dir_.file("fake.log");
    fake_ = std::make_unique<ChildProcess>(ChildProcess::spawn(
        in_namespace(worker1_ns_,
                     {binaries_.fake_provider, "--listen", kWorker1Ip + ":0", "--quiet"}),
        options));
    const auto line = fake_->read_line(15s);
    ASSERT_TRUE(line) << "fake-provider printed no port; " << read_text_file(dir_.file("fake.log"));
    fake_url_ = "http://" + kWorker1Ip + ":" + *line;
  }

  // `curve`: the worker's --broker-key / --curve-secret flags (none: plaintext).
  void start_worker(const std::string& ns, const std::string& id, int concurrency,
                    const std::vector<std::string>& curve = {}) {
    const std::string config = dir_.file("worker.yaml");
    write_text_file(config,
                    "defaults:\n"
                    "  timeout_ms: 10000\n"
                    "  retry_count: 2\n"
                    "  connect_timeout_ms: 1000\n"
                    "  first_token_timeout_ms: 2000\n"
                    "  idle_timeout_ms: 2000\n"
                    "  backoff: {base_ms: 10, max_ms: 50}\n"
                    "providers:\n"
                    "  ollama: {type: ollama, base_url: \"" +
                        fake_url_ +
                        "\"}\n"
                        "  openai: {type: openai, base_url: \"" +
                        fake_url_ + "/v1\", api_key_env: FAKE_KEY}\n");
    ChildOptions options;
    options.extra_env = {"FAKE_KEY=sk-test"};
    options.capture_stdout = false;
    options.stderr_path = dir_.file(id == "mh-w1" ? "worker-1.log" : "worker-2.log");
    std::vector<std::string> argv = {binaries_.worker,
                                     "--broker",
                                     backend_,
                                     "--config",
                                     config,
                                     "--heartbeat-ms",
                                     "100",
                                     "--liveness",
                                     "4",
                                     "--concurrency",
                                     std::to_string(concurrency),
                                     "--id",
                                     id};
    argv.insert(argv.end(), curve.begin(), curve.end());
    workers_.push_back(ChildProcess::spawn(in_namespace(ns, std::move(argv)), options));
  }

  static inline const std::string kBrokerIp = "10.77.0.1";
  static inline const std::string kWorker1Ip = "10.77.0.2";
  static inline const std::string kWorker2Ip = "10.77.0.3";
  static inline const std::string kClientIp = "10.77.0.4";

  StackBinaries binaries_ = StackBinaries::from_build();
  TempDir dir_;
  std::string ip_;
  std::string switch_ns_, broker_ns_, worker1_ns_, worker2_ns_, client_ns_;
  std::vector<std::string> namespaces_;
  bool created_ = false;
  std::unique_ptr<ChildProcess> broker_;
  std::unique_ptr<ChildProcess> fake_;
  std::vector<ChildProcess> workers_;
  std::string frontend_, backend_, fake_url_;
};

TEST_F(MultiHostTest, JobsCompleteAcrossNamespaces) {
  constexpr int kJobs = 120;
  KeyRing keys(dir_.path() + "/keys");
  const protocol::CurveKeys alice = keys.add("alice", {"clients", "admins"});
  keys.add("w1", {"workers"});
  keys.add("w2", {"workers"});
  ASSERT_NO_FATAL_FAILURE(start_broker(keys.broker_args()));
  ASSERT_NO_FATAL_FAILURE(start_fake());
  auto worker_keys = [&](const std::string& name) {
    return std::vector<std::string>{"--broker-key", keys.broker_public_file(), "--curve-secret",
                                    keys.secret_file(name)};
  };
  start_worker(worker1_ns_, "mh-w1", 8, worker_keys("w1"));
  start_worker(worker2_ns_, "mh-w2", 8, worker_keys("w2"));

  run_in_namespace(client_ns_, [&] {
    zmq::context_t context(1);
    RawClient probe(context, frontend_, curve_as(alice, keys.broker()));
    // Both workers, from their own hosts, register with the broker.
    std::optional<protocol::StatusReply> reply;
    const bool registered = poll_until(
        [&] {
          reply = probe.status_barrier(1000ms);
          return reply && reply->workers.size() == 2;
        },
        20s, 50ms);
    ASSERT_TRUE(registered) << "workers registered: " << (reply ? reply->workers.size() : 0);
    std::set<uint32_t> pids;
    for (const auto& worker : reply->workers) pids.insert(worker.pid);
    EXPECT_EQ(pids, (std::set<uint32_t>{static_cast<uint32_t>(workers_[0].pid()),
                                        static_cast<uint32_t>(workers_[1].pid())}));

    ClientOptions options;
    options.broker_endpoint = frontend_;
    const auto loaded =
        options.load_curve_keys(keys.broker_public_file(), keys.secret_file("alice"));
    ASSERT_TRUE(loaded) << loaded.error();
    options.heartbeat_interval = 200ms;
    options.liveness = 5;
    Client client(options);
    std::mutex mutex;
    std::map<std::string, int> completions;
    std::vector<std::string> failures;
    std::map<std::string, std::string> expected;  // job id -> prompt
    for (int i = 0; i < kJobs; ++i) {
      const std::string prompt = "host" + std::to_string(i);
      // About 150 ms each, so both workers are busy at once.
      auto request = DispatchRequest(i % 2 ? Provider::ollama : Provider::openai,
                                     "mh~chunk_delay_ms=15~tokens=10", {Message::user(prompt)})
                         .with_stream(i % 3 == 0);
      const std::string id = client.dispatch_async(request, [&, prompt](DispatchOutcome outcome) {
        std::lock_guard lock(mutex);
        ++completions[outcome.job_id];
        if (!outcome.ok()) {
          failures.push_back(outcome.job_id + ": " + outcome.error->what());
        } else if (outcome.response->content.rfind("reply to: " + prompt, 0) != 0) {
          failures.push_back(outcome.job_id + ": wrong answer " + outcome.response->content);
        }
      });
      std::lock_guard lock(mutex);
      expected[id] = prompt;
    }
    std::map<std::string, uint32_t> peak_in_flight;
    const bool done = poll_until(
        [&] {
          if (auto sample = probe.status_barrier(1000ms)) {
            for (const auto& worker : sample->workers) {
              peak_in_flight[worker.worker_id] =
                  std::max(peak_in_flight[worker.worker_id], worker.in_flight);
            }
          }
          std::lock_guard lock(mutex);
          return completions.size() >= static_cast<std::size_t>(kJobs);
        },
        60s, 20ms);
    std::lock_guard lock(mutex);
    ASSERT_TRUE(done) << completions.size() << " of " << kJobs << " jobs done";
    EXPECT_TRUE(failures.empty()) << failures.size() << " failed, first: " << failures.front();
    for (const auto& [id, prompt] : expected) {
      EXPECT_EQ(completions[id], 1) << id << " (" << prompt << ")";
    }
    // Both hosts did work; the provider on host w1 saw every job once.
    EXPECT_GT(peak_in_flight["mh-w1"], 0u);
    EXPECT_GT(peak_in_flight["mh-w2"], 0u);
    EXPECT_LE(peak_in_flight["mh-w1"], 8u);
    EXPECT_LE(peak_in_flight["mh-w2"], 8u);
    const json attempts = fake_attempts(fake_url_);
    EXPECT_EQ(attempts.size(), static_cast<std::size_t>(kJobs));
    std::cerr << "across namespaces: " << kJobs << " jobs, peak in flight w1 "
              << peak_in_flight["mh-w1"] << ", w2 " << peak_in_flight["mh-w2"] << "\n";
  });

  // The CLI from the client host, its keys from the environment (README's step 4): one chat,
  // then the broker's status.
  const std::vector<std::string> cli_env = {"DISPATCH_BROKER_KEY=" + keys.broker_public_file(),
                                            "DISPATCH_CURVE_SECRET=" + keys.secret_file("alice")};
  const CommandResult chat =
      run_command(in_namespace(client_ns_, {binaries_.cli, "chat", "--broker", frontend_,
                                            "--provider", "ollama", "--model", "cli", "--json",
                                            "hello from the client host"}),
                  dir_.file("cli.err"), 20s, cli_env);
  ASSERT_TRUE(chat.ok()) << chat.err;
  ASSERT_FALSE(chat.out.empty());
  const json answer = json::parse(chat.out.back());
  EXPECT_EQ(answer.value("content", "").rfind("reply to: hello from the client host", 0), 0u)
      << chat.out.back();
  EXPECT_EQ(answer.value("provider", ""), "ollama");

  const CommandResult status = run_command(
      in_namespace(client_ns_, {binaries_.cli, "status", "--broker", frontend_, "--json"}),
      dir_.file("cli.err"), 20s, cli_env);
  ASSERT_TRUE(status.ok()) << status.err;
  ASSERT_EQ(status.out.size(), 1u);
  const json table = json::parse(status.out[0]);
  EXPECT_EQ(table["workers"].size(), 2u);
  EXPECT_FALSE(table.value("insecure", true)) << status.out[0];
  const uint64_t succeeded = table["providers"]["ollama"].value("succeeded", 0ull) +
                             table["providers"]["openai"].value("succeeded", 0ull);
  EXPECT_EQ(succeeded, static_cast<uint64_t>(kJobs) + 1);

  // Every process is still up at the end.
  EXPECT_TRUE(broker_->running());
  for (auto& worker : workers_) EXPECT_TRUE(worker.running());
}

// Runs `make` on a thread in network namespace `ns`, and returns what it made. A ZeroMQ
// context starts its I/O threads with its first socket, and those threads (which connect and
// reconnect) stay in the namespace of the thread that created it: make the context and its
// sockets in `make`; the test thread may use them afterwards.
template <typename T>
T made_in_namespace(const std::string& ns, const std::function<T()>& make) {
  T made{};
  run_in_namespace(ns, [&] { made = make(); });
  return made;
}

// A peer on another host: its own context, created in that host's namespace.
struct RemotePeer {
  std::unique_ptr<zmq::context_t> context = std::make_unique<zmq::context_t>(1);
  std::unique_ptr<ScriptedWorker> worker;
  std::unique_ptr<RawClient> client;
  std::optional<HandshakeMonitor> monitor;
};

TEST_F(MultiHostTest, CurveAcrossNamespaces) {
  KeyRing keys(dir_.path() + "/keys");
  const protocol::CurveKeys alice = keys.add("alice", {"clients", "admins"});
  const protocol::CurveKeys w1 = keys.add("w1", {"workers"});
  ASSERT_NO_FATAL_FAILURE(start_broker(keys.broker_args()));
  EXPECT_NE(read_text_file(dir_.file("broker.log")).find("CURVE on"), std::string::npos);

  // Host w1: a listed worker. Host w2: a stranger's key saying `ready` with w1's worker id.
  using Peer = std::shared_ptr<RemotePeer>;
  Peer real = made_in_namespace<Peer>(worker1_ns_, [&] {
    auto peer = std::make_shared<RemotePeer>();
    peer->worker =
        std::make_unique<ScriptedWorker>(*peer->context, backend_, curve_as(w1, keys.broker()));
    return peer;
  });
  Peer stranger = made_in_namespace<Peer>(worker2_ns_, [&] {
    auto peer = std::make_shared<RemotePeer>();
    peer->worker = std::make_unique<ScriptedWorker>(*peer->context, backend_,
                                                    curve_as(KeyRing::stranger(), keys.broker()));
    return peer;
  });
  EXPECT_EQ(stranger->worker->monitor().wait_for(
                {ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, ZMQ_EVENT_HANDSHAKE_SUCCEEDED}, 10s),
            ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
  stranger->worker->ready("mh-w1", 1000);

  // Host c: alice, and a peer without CURVE.
  Peer client = made_in_namespace<Peer>(client_ns_, [&] {
    auto peer = std::make_shared<RemotePeer>();
    peer->client =
        std::make_unique<RawClient>(*peer->context, frontend_, curve_as(alice, keys.broker()));
    return peer;
  });
  Peer plaintext = made_in_namespace<Peer>(client_ns_, [&] {
    auto peer = std::make_shared<RemotePeer>();
    peer->client = std::make_unique<RawClient>(
        *peer->context, frontend_,
        [&](zmq::socket_t& socket) { peer->monitor.emplace(*peer->context, socket); });
    return peer;
  });
  EXPECT_EQ(plaintext->monitor->wait_for(
                {ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL, ZMQ_EVENT_HANDSHAKE_SUCCEEDED}, 10s),
            ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL);

  RawClient& submitter = *client->client;
  std::optional<protocol::StatusReply> reply;
  // Registered only now: the waits above can outlast the broker's liveness window (400 ms) on a
  // loaded machine, and a worker the broker expired is told to disconnect and must say `ready`
  // again.
  real->worker->ready("mh-w1", 16);
  int disconnects = 0;
  ASSERT_TRUE(poll_until(
      [&] {
        real->worker->pump(1ms);
        if (real->worker->received(protocol::Command::disconnect) > disconnects) {
          disconnects = real->worker->received(protocol::Command::disconnect);
          real->worker->ready("mh-w1", 16);
        }
        reply = submitter.status_barrier(1000ms);
        return reply && reply->workers.size() == 1;
      },
      20s, 50ms));
  EXPECT_EQ(reply->identity, "alice");

  constexpr int kJobs = 60;
  for (int i = 0; i < kJobs; ++i) {
    submitter.submit("mh-" + std::to_string(i), make_request("openai", "m", "across", false));
  }
  std::size_t answered = 0;
  const bool done = poll_until(
      [&] {
        real->worker->pump(5ms);
        stranger->worker->pump(1ms);
        for (; answered < real->worker->jobs.size(); ++answered) {
          real->worker->answer(real->worker->jobs[answered], "from w1 over CURVE");
        }
        submitter.pump(5ms);
        return submitter.finished() == kJobs;
      },
      30s, 1ms);
  ASSERT_TRUE(done) << submitter.finished() << " of " << kJobs << " finished";
  for (const auto& [id, job] : submitter.jobs) {
    ASSERT_TRUE(job.response) << id;
    EXPECT_EQ(job.response->content, "from w1 over CURVE") << id;
  }
  EXPECT_TRUE(stranger->worker->jobs.empty());
  const auto status = submitter.status_barrier(5s);
  ASSERT_TRUE(status);
  ASSERT_EQ(status->workers.size(), 1u);
  EXPECT_EQ(status->workers[0].worker_id, "mh-w1");
  EXPECT_FALSE(status->insecure);
  EXPECT_EQ(status->clients.at("alice").succeeded, static_cast<uint64_t>(kJobs));
  EXPECT_TRUE(broker_->running());
}

}  // namespace
}  // namespace dispatch::test
