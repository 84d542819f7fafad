// dispatch-broker with CURVE, as a process, against clients and workers played by raw cppzmq
// DEALER sockets with CURVE options: the honest peers and the attackers of issue 12 (a stranger
// registering as a worker, a stranger reusing a worker id or a job id) are the same few lines.
// Also: what a peer without CURVE, and a broker that would listen in plaintext off loopback,
// get.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dispatch/test/child_process.hpp"
#include "dispatch/test/stack.hpp"
#include "secure_support.hpp"
#include "system_support.hpp"

namespace dispatch::test {
namespace {

using namespace std::chrono_literals;
using protocol::Command;
using protocol::CurveKeys;
using protocol::ErrorKind;

std::size_t count_of(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

class SecureBrokerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string missing = binaries_.missing();
    ASSERT_TRUE(missing.empty()) << "binaries not built: " << missing;
  }

  void TearDown() override {
    if (HasFailure()) std::cerr << "---- broker.log ----\n" << broker_log() << "\n";
  }

  // Starts the broker on ephemeral ports (the backend on `backend`); with `curve`, with the
  // ring's keys.
  void start_broker(bool curve = true, std::vector<std::string> extra = {},
                    const std::string& backend = "tcp://127.0.0.1:0") {
    std::vector<std::string> argv = {
        binaries_.broker, "--frontend", "tcp://127.0.0.1:0", "--backend", backend,
        "--heartbeat-ms", "100",        "--liveness",        "10"};
    if (curve) {
      const auto args = keys_.broker_args();
      argv.insert(argv.end(), args.begin(), args.end());
    }
    argv.insert(argv.end(), extra.begin(), extra.end());
    ChildOptions options;
    options.stderr_path = dir_.file("broker.log");
    broker_ = std::make_unique<ChildProcess>(ChildProcess::spawn(argv, options));
    const auto line = broker_->read_line(15s);
    ASSERT_TRUE(line) << "no listening line; " << broker_log();
    const auto front = line->find("frontend=");
    const auto back = line->find(" backend=");
    ASSERT_TRUE(front != std::string::npos && back != std::string::npos) << *line;
    frontend_ = line->substr(front + 9, back - front - 9);
    backend_ = line->substr(back + 9);
  }

  // The broker run to its exit (for start-up refusals); its exit status, and its log in *log.
  ExitStatus run_broker_to_exit(const std::vector<std::string>& args, std::string* log) {
    std::vector<std::string> argv = {binaries_.broker};
    argv.insert(argv.end(), args.begin(), args.end());
    ChildOptions options;
    options.stderr_path = dir_.file("refused.log");
    ChildProcess child = ChildProcess::spawn(argv, options);
    auto status = child.wait_for_exit(15s);
    if (!status) status = child.stop(1000ms);
    *log = read_text_file(dir_.file("refused.log"));
    return *status;
  }

  std::string broker_log() const { return read_text_file(dir_.file("broker.log")); }

  std::unique_ptr<RawClient> client(const CurveKeys& keys) {
    return std::make_unique<RawClient>(context_, frontend_, curve_as(keys, keys_.broker()));
  }
  std::unique_ptr<ScriptedWorker> worker(const CurveKeys& keys) {
    return std::make_unique<ScriptedWorker>(context_, backend_, curve_as(keys, keys_.broker()));
  }

  // Pumps `workers` until `done` holds (or the bound passes).
  static bool pump_workers_until(const std::vector<ScriptedWorker*>& workers,
                                 const std::function<bool()>& done, milliseconds timeout) {
    return poll_until(
        [&] {
          for (ScriptedWorker* w : workers) w->pump(10ms);
          return done();
        },
        timeout, 1ms);
  }

  void wait_for_workers(RawClient& asker, uint64_t count) {
    std::optional<protocol::StatusReply> status;
    const bool registered = poll_until(
        [&] {
          status = asker.status_barrier(1000ms);
          return status && status->worker_count == count;
        },
        10s, 20ms);
    ASSERT_TRUE(registered) << "workers: " << (status ? status->worker_count : 0);
  }

  StackBinaries binaries_ = StackBinaries::from_build();
  TempDir dir_;
  KeyRing keys_{dir_.path() + "/keys"};
  zmq::context_t context_{1};
  std::unique_ptr<ChildProcess> broker_;
  std::string frontend_, backend_;
};

TEST_F(SecureBrokerTest, AnUnlistedClientKeyIsRefusedAtTheHandshakeAndAListedOneIsServed) {
  const CurveKeys alice = keys_.add("alice", {"clients"});
  ASSERT_NO_FATAL_FAILURE(start_broker());

  const CurveKeys stranger = KeyRing::stranger();
  std::optional<HandshakeMonitor> watch;
  RawClient refused(context_, frontend_, [&](zmq::socket_t& socket) {
    curve_as(stranger, keys_.broker())(socket);
    watch.emplace(context_, socket);
  });
  EXPECT_EQ(watch->wait_for({ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, ZMQ_EVENT_HANDSHAKE_SUCCEEDED}, 5s),
            ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
  EXPECT_FALSE(refused.status_barrier(300ms));

  auto served = client(alice);
  const auto status = served->status_barrier(5s);
  ASSERT_TRUE(status);
  EXPECT_EQ(status->identity, "alice");

  // The log names the refused key by its fingerprint; no secret key appears in it.
  const std::string fingerprint = protocol::key_fingerprint(stranger.public_key);
  EXPECT_TRUE(poll_until([&] { return broker_log().find(fingerprint) != std::string::npos; }, 5s))
      << broker_log();
  const std::string log = broker_log();
  for (const std::string& secret :
       {stranger.secret_key, alice.secret_key, keys_.broker().secret_key}) {
    EXPECT_EQ(log.find(secret), std::string::npos) << "a secret key in the broker's log";
  }
  EXPECT_TRUE(broker_->running());
}

TEST_F(SecureBrokerTest, AKeyRemovedAndSighupIsRefusedOnNewAndOnExistingConnections) {
  const CurveKeys alice = keys_.add("alice", {"clients"});
  const CurveKeys bob = keys_.add("bob", {"clients"});
  ASSERT_NO_FATAL_FAILURE(start_broker());
  auto connected = client(bob);
  ASSERT_TRUE(connected->status_barrier(5s));

  keys_.unlist("bob", "clients");
  broker_->send_signal(SIGHUP);
  ASSERT_TRUE(poll_until([&] { return count_of(broker_log(), "allow-lists loaded") >= 2; }, 10s))
      << broker_log();

  std::optional<HandshakeMonitor> watch;
  RawClient again(context_, frontend_, [&](zmq::socket_t& socket) {
    curve_as(bob, keys_.broker())(socket);
    watch.emplace(context_, socket);
  });
  EXPECT_EQ(watch->wait_for({ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, ZMQ_EVENT_HANDSHAKE_SUCCEEDED}, 5s),
            ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);

  connected->submit("bob-1", make_request("openai", "m", "hello", false));
  ASSERT_TRUE(connected->pump_until([&] { return connected->jobs["bob-1"].rejections > 0; }, 5s));
  EXPECT_EQ(connected->jobs["bob-1"].rejection->kind, ErrorKind::authentication);
  EXPECT_EQ(connected->jobs["bob-1"].rejection->code, "not_allowed");
  EXPECT_EQ(connected->jobs["bob-1"].accepted, 0);

  // A broken allow-list: the reload fails, and the lists in force stay.
  write_text_file(keys_.dir("clients") + "/broken.key", "curve\n    public-key = \"short\"\n");
  broker_->send_signal(SIGHUP);
  ASSERT_TRUE(poll_until(
      [&] { return broker_log().find("allow-lists not reloaded") != std::string::npos; }, 10s));
  auto still = client(alice);
  EXPECT_TRUE(still->status_barrier(5s));
  EXPECT_TRUE(broker_->running());
}

TEST_F(SecureBrokerTest, AForgedWorkerReceivesNoJob) {
  const CurveKeys alice = keys_.add("alice", {"clients"});
  const CurveKeys w1 = keys_.add("w1", {"workers"});
  ASSERT_NO_FATAL_FAILURE(start_broker());

  // A stranger, and a listed client key, on the backend: both refused at the handshake.
  auto stranger = worker(KeyRing::stranger());
  auto client_key = worker(alice);
  for (ScriptedWorker* forged : {stranger.get(), client_key.get()}) {
    EXPECT_EQ(forged->monitor().wait_for(
                  {ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, ZMQ_EVENT_HANDSHAKE_SUCCEEDED}, 5s),
              ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
    forged->ready("forged", 1000);
  }
  auto real = worker(w1);
  real->ready("real", 1000);
  auto submitter = client(alice);
  ASSERT_NO_FATAL_FAILURE(wait_for_workers(*submitter, 1));

  constexpr int kJobs = 40;
  for (int i = 0; i < kJobs; ++i) {
    submitter->submit("job-" + std::to_string(i), make_request("openai", "m", "hi", false));
  }
  ASSERT_TRUE(pump_workers_until(
      {real.get(), stranger.get(), client_key.get()}, [&] { return real->jobs.size() == kJobs; },
      10s));
  for (const auto& job : real->jobs) real->answer(job, "real answer");
  ASSERT_TRUE(submitter->pump_until([&] { return submitter->finished() == kJobs; }, 10s));
  for (const auto& [id, job] : submitter->jobs) {
    ASSERT_TRUE(job.response) << id;
    EXPECT_EQ(job.response->content, "real answer") << id;
  }
  stranger->pump(50ms);
  client_key->pump(50ms);
  EXPECT_TRUE(stranger->jobs.empty());
  EXPECT_TRUE(client_key->jobs.empty());
  EXPECT_EQ(stranger->received(Command::heartbeat), 0);
  EXPECT_EQ(client_key->received(Command::heartbeat), 0);
}

TEST_F(SecureBrokerTest, AWorkerIdReusedByAnotherIdentityDoesNotEvictTheRealWorker) {
  const CurveKeys alice = keys_.add("alice", {"clients"});
  const CurveKeys ops = keys_.add("ops", {"admins"});
  const CurveKeys w1 = keys_.add("w1", {"workers"});
  const CurveKeys w2 = keys_.add("w2", {"workers"});
  ASSERT_NO_FATAL_FAILURE(start_broker());
  auto real = worker(w1);
  real->ready("worker-1", 100);
  auto admin = client(ops);
  ASSERT_NO_FATAL_FAILURE(wait_for_workers(*admin, 1));
  auto submitter = client(alice);
  submitter->submit("first", make_request("openai", "m", "hi", false));
  ASSERT_TRUE(pump_workers_until(
      {real.get()}, [&] { return real->jobs.size() == 1; }, 10s));

  // Another worker identity says `ready` with the real worker's id (which status shows).
  auto impostor = worker(w2);
  impostor->ready("worker-1", 1000);
  ASSERT_TRUE(pump_workers_until(
      {impostor.get()}, [&] { return !impostor->rejections.empty(); }, 10s));
  EXPECT_EQ(impostor->rejections[0].code, "worker_id_in_use");

  constexpr int kMore = 20;
  for (int i = 0; i < kMore; ++i) {
    submitter->submit("job-" + std::to_string(i), make_request("openai", "m", "hi", false));
  }
  ASSERT_TRUE(pump_workers_until(
      {real.get(), impostor.get()}, [&] { return real->jobs.size() == kMore + 1; }, 10s));
  const auto status = admin->status_barrier(5s);
  ASSERT_TRUE(status);
  ASSERT_EQ(status->workers.size(), 1u);
  EXPECT_EQ(status->workers[0].worker_id, "worker-1");
  EXPECT_EQ(status->workers[0].in_flight, static_cast<uint32_t>(kMore + 1));
  for (const auto& job : real->jobs) real->answer(job, "from the real worker");
  ASSERT_TRUE(submitter->pump_until([&] { return submitter->finished() == kMore + 1; }, 10s));
  for (const auto& [id, job] : submitter->jobs) {
    ASSERT_TRUE(job.response) << id;
    EXPECT_EQ(job.response->content, "from the real worker");
  }
  impostor->pump(50ms);
  EXPECT_TRUE(impostor->jobs.empty());
}

TEST_F(SecureBrokerTest, AnotherIdentityReusingAJobIdGetsNeitherItsAnswerNorItsCancel) {
  const CurveKeys alice = keys_.add("alice", {"clients"});
  const CurveKeys bob = keys_.add("bob", {"clients"});
  const CurveKeys w1 = keys_.add("w1", {"workers"});
  ASSERT_NO_FATAL_FAILURE(start_broker());
  auto real = worker(w1);
  real->ready("worker-1", 10);
  auto owner = client(alice);
  auto other = client(bob);
  ASSERT_NO_FATAL_FAILURE(wait_for_workers(*owner, 1));

  owner->submit("shared-id", make_request("openai", "m", "alice's prompt", false));
  ASSERT_TRUE(pump_workers_until(
      {real.get()}, [&] { return real->jobs.size() == 1; }, 10s));
  other->submit("shared-id", make_request("openai", "m", "bob's prompt", false));
  other->cancel("shared-id");
  ASSERT_TRUE(other->status_barrier(5s));  // the broker has handled both
  ASSERT_EQ(other->jobs["shared-id"].rejections, 1);
  EXPECT_EQ(other->jobs["shared-id"].rejection->code, "duplicate_job_id");
  real->pump(100ms);
  EXPECT_TRUE(real->cancels.empty()) << "bob's cancel reached the worker";

  real->answer(real->jobs[0], "alice's answer");
  ASSERT_TRUE(owner->pump_until([&] { return owner->jobs["shared-id"].results == 1; }, 10s));
  EXPECT_EQ(owner->jobs["shared-id"].response->content, "alice's answer");
  // Finished and stored: bob's resubmit is still refused, with no copy of the answer.
  other->submit("shared-id", make_request("openai", "m", "bob's prompt", false));
  ASSERT_TRUE(other->status_barrier(5s));
  EXPECT_EQ(other->jobs["shared-id"].rejections, 2);
  EXPECT_EQ(other->jobs["shared-id"].results, 0);
  EXPECT_EQ(other->jobs["shared-id"].accepted, 0);
}

TEST_F(SecureBrokerTest, ATenantFromAClientIsRefusedAndFromAGatewayAcceptedAndScoped) {
  const CurveKeys alice = keys_.add("alice", {"clients"});
  const CurveKeys gw = keys_.add("gw", {"gateways"});
  ASSERT_NO_FATAL_FAILURE(start_broker());
  auto plain = client(alice);
  plain->submit("a1", make_request("openai", "m", "hi", false), 0, "team-a");
  ASSERT_TRUE(plain->pump_until([&] { return plain->jobs["a1"].rejections == 1; }, 5s));
  EXPECT_EQ(plain->jobs["a1"].rejection->code, "tenant_not_allowed");
  EXPECT_EQ(plain->jobs["a1"].rejection->kind, ErrorKind::invalid_request);

  auto gateway = client(gw);
  gateway->submit("g1", make_request("openai", "m", "hi", false), 0, "team-a");
  gateway->submit("g1", make_request("openai", "m", "hi", false), 0, "team-b");
  ASSERT_TRUE(gateway->pump_until(
      [&] { return gateway->jobs["g1"].accepted == 1 && gateway->jobs["g1"].rejections == 1; },
      5s));
  EXPECT_EQ(gateway->jobs["g1"].rejection->code, "duplicate_job_id");
  const auto status = gateway->status_barrier(5s);
  ASSERT_TRUE(status);
  EXPECT_EQ(status->identity, "gw");
  // Each tenant is counted on its own: team-a's job waits, team-b's submit was refused.
  ASSERT_EQ(status->clients.size(), 2u);
  EXPECT_EQ(status->clients.at("gw/team-a").queued, 1u);
  EXPECT_EQ(status->clients.at("gw/team-a").submitted, 1u);
  EXPECT_EQ(status->clients.at("gw/team-b").submitted, 0u);
  EXPECT_EQ(status->clients.at("gw/team-b").rejected, 1u);
}

TEST_F(SecureBrokerTest, StatusShowsWorkerDetailsAndOtherIdentitiesOnlyToAdmins) {
  const CurveKeys alice = keys_.add("alice", {"clients"});
  const CurveKeys bob = keys_.add("bob", {"clients"});
  const CurveKeys ops = keys_.add("ops", {"admins"});
  const CurveKeys w1 = keys_.add("w1", {"workers"});
  ASSERT_NO_FATAL_FAILURE(start_broker());
  auto real = worker(w1);
  real->ready("worker-1", 10);
  auto a = client(alice);
  auto b = client(bob);
  ASSERT_NO_FATAL_FAILURE(wait_for_workers(*a, 1));
  a->submit("a1", make_request("nobody-serves-this", "m", "hi", false));
  b->submit("b1", make_request("nobody-serves-this", "m", "hi", false));
  ASSERT_TRUE(b->pump_until([&] { return b->jobs["b1"].accepted == 1; }, 5s));

  const auto mine = a->status_barrier(5s);
  ASSERT_TRUE(mine);
  EXPECT_EQ(mine->worker_count, 1u);
  EXPECT_TRUE(mine->workers.empty());
  EXPECT_TRUE(mine->providers.empty());
  ASSERT_EQ(mine->clients.size(), 1u);
  EXPECT_EQ(mine->clients.at("alice").queued, 1u);

  auto admin = client(ops);
  const auto all = admin->status_barrier(5s);
  ASSERT_TRUE(all);
  ASSERT_EQ(all->workers.size(), 1u);
  EXPECT_EQ(all->workers[0].worker_id, "worker-1");
  EXPECT_EQ(all->clients.size(), 2u);
  EXPECT_EQ(all->clients.at("bob").queued, 1u);
}

TEST_F(SecureBrokerTest, APlaintextPeerFailsTheHandshakeAndTheBrokerCarriesOn) {
  const CurveKeys alice = keys_.add("alice", {"clients"});
  ASSERT_NO_FATAL_FAILURE(start_broker());
  std::optional<HandshakeMonitor> watch;
  RawClient plain(context_, frontend_,
                  [&](zmq::socket_t& socket) { watch.emplace(context_, socket); });
  uint32_t reason = 0;
  EXPECT_EQ(watch->wait_for({ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL, ZMQ_EVENT_HANDSHAKE_SUCCEEDED,
                             ZMQ_EVENT_HANDSHAKE_FAILED_AUTH},
                            5s, &reason),
            ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL);
  EXPECT_EQ(reason, static_cast<uint32_t>(ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH));
  EXPECT_FALSE(plain.status_barrier(300ms));
  ScriptedWorker plain_worker(context_, backend_, {});
  EXPECT_EQ(plain_worker.monitor().wait_for(
                {ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL, ZMQ_EVENT_HANDSHAKE_SUCCEEDED}, 5s),
            ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL);

  EXPECT_TRUE(broker_->running());
  EXPECT_TRUE(client(alice)->status_barrier(5s));
}

TEST_F(SecureBrokerTest, ACurveClientAgainstAPlaintextBrokerFailsTheHandshake) {
  const CurveKeys alice = keys_.add("alice", {"clients"});
  ASSERT_NO_FATAL_FAILURE(start_broker(false));
  std::optional<HandshakeMonitor> watch;
  RawClient curvy(context_, frontend_, [&](zmq::socket_t& socket) {
    curve_as(alice, keys_.broker())(socket);
    watch.emplace(context_, socket);
  });
  EXPECT_EQ(
      watch->wait_for({ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL, ZMQ_EVENT_HANDSHAKE_SUCCEEDED}, 5s),
      ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL);
  EXPECT_TRUE(broker_->running());
  RawClient plain(context_, frontend_);
  const auto status = plain.status_barrier(5s);
  ASSERT_TRUE(status);
  EXPECT_FALSE(status->insecure);  // plaintext on loopback is the safe default
}

TEST_F(SecureBrokerTest, PlaintextOffLoopbackIsRefusedUnlessInsecure) {
  std::string log;
  const ExitStatus refused =
      run_broker_to_exit({"--frontend", "tcp://0.0.0.0:0", "--backend", "tcp://127.0.0.1:0"}, &log);
  EXPECT_TRUE(refused.exited && refused.code == 1) << log;
  EXPECT_NE(log.find("tcp://0.0.0.0:0"), std::string::npos) << log;
  EXPECT_NE(log.find("dispatch keygen"), std::string::npos) << log;
  EXPECT_NE(log.find("--insecure"), std::string::npos) << log;

  ASSERT_NO_FATAL_FAILURE(start_broker(false, {"--insecure"}, "tcp://0.0.0.0:0"));
  EXPECT_NE(broker_log().find("plaintext"), std::string::npos) << broker_log();
  RawClient plain(context_, frontend_);
  const auto status = plain.status_barrier(5s);
  ASSERT_TRUE(status);
  EXPECT_TRUE(status->insecure);
}

TEST_F(SecureBrokerTest, SecurityFlagsAreChecked) {
  std::string log;
  ExitStatus status = run_broker_to_exit({"--allow-clients", keys_.dir("clients")}, &log);
  EXPECT_TRUE(status.exited && status.code == 2) << log;
  EXPECT_NE(log.find("--curve-secret"), std::string::npos) << log;

  status = run_broker_to_exit({"--curve-secret", keys_.broker_secret_file(), "--insecure"}, &log);
  EXPECT_TRUE(status.exited && status.code == 2) << log;

  ::chmod(keys_.broker_secret_file().c_str(), 0644);
  status = run_broker_to_exit({"--curve-secret", keys_.broker_secret_file(), "--frontend",
                               "tcp://127.0.0.1:0", "--backend", "tcp://127.0.0.1:0"},
                              &log);
  EXPECT_TRUE(status.exited && status.code == 1) << log;
  EXPECT_NE(log.find("chmod 600"), std::string::npos) << log;
}

}  // namespace
}  // namespace dispatch::test
