// dispatch-worker against a CURVE broker stand-in (the client tests' FakeBroker as a CURVE
// server with a ZAP handler): a refused worker logs why and keeps retrying, so a key allowed
// later (the broker's SIGHUP) lets it in without a restart; the secret key never reaches a log.
// Also how it stops when the broker is gone: a second SIGTERM ends the final wait at once.

#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <memory>
#include <set>
#include <vector>

#include "dispatch/protocol/curve.hpp"
#include "dispatch/test/child_process.hpp"
#include "dispatch/test/stack.hpp"
#include "support/fake_broker.hpp"

namespace dispatch::worker {
namespace {

using dispatch::test::ChildProcess;
using dispatch::test::FakeBroker;
using dispatch::test::TempDir;
using namespace std::chrono_literals;

struct WorkerKeys {
  TempDir dir;
  protocol::CurveKeys broker = make("broker");
  protocol::CurveKeys worker = make("worker");

 private:
  protocol::CurveKeys make(const std::string& name) {
    auto keys = protocol::generate_curve_keys();
    EXPECT_TRUE(keys.ok());
    EXPECT_TRUE(protocol::save_certificate(dir.file(name), *keys).ok());
    return *keys;
  }
};

// `extra_args` follow the defaults, so they win (CLI11 keeps the last value).
ChildProcess start_worker(const FakeBroker& broker, const WorkerKeys& keys,
                          const std::string& broker_key_file, const std::string& log,
                          const std::vector<std::string>& extra_args = {}) {
  dispatch::test::ChildOptions options;
  options.stderr_path = log;
  options.capture_stdout = false;
  options.unset_env = {"DISPATCH_BROKER_KEY", "DISPATCH_CURVE_SECRET"};
  std::vector<std::string> argv = {WORKER_BINARY,
                                   "--broker",
                                   broker.endpoint(),
                                   "--broker-key",
                                   broker_key_file,
                                   "--curve-secret",
                                   keys.dir.file("worker.key_secret"),
                                   "--heartbeat-ms",
                                   "100"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  return ChildProcess::spawn(argv, options);
}

bool log_contains(const std::string& log, const std::string& text) {
  return FakeBroker::eventually(
      [&] { return dispatch::test::read_text_file(log).find(text) != std::string::npos; }, 15s);
}

TEST(WorkerCurve, ARefusedWorkerLogsWhyKeepsRetryingAndGetsInOnceItsKeyIsAllowed) {
  WorkerKeys keys;
  FakeBroker broker("curve-broker", FakeBroker::Curve{keys.broker, {}});
  const std::string log = keys.dir.file("worker.log");
  ChildProcess worker = start_worker(broker, keys, keys.dir.file("broker.key"), log);
  EXPECT_TRUE(log_contains(
      log, "authentication refused by the broker at " + broker.endpoint() + "; retrying"))
      << dispatch::test::read_text_file(log);
  EXPECT_TRUE(worker.running());
  EXPECT_TRUE(broker.peer_user_ids().empty());

  broker.set_allowed_clients({keys.worker.public_key});  // as the broker's SIGHUP re-read
  EXPECT_TRUE(FakeBroker::eventually(
      [&] { return broker.peer_user_ids().count(keys.worker.public_key) == 1; }, 15s))
      << dispatch::test::read_text_file(log);
  worker.send_signal(SIGTERM);
  const auto status = worker.wait_for_exit(15s);
  ASSERT_TRUE(status.has_value());
  EXPECT_TRUE(status->success());
  const std::string text = dispatch::test::read_text_file(log);
  EXPECT_EQ(text.find(keys.worker.secret_key), std::string::npos) << "the secret key was logged";
  EXPECT_NE(text.find("with CURVE"), std::string::npos) << text;
}

TEST(WorkerCurve, EveryReconnectUsesTheKeys) {
  WorkerKeys keys;
  FakeBroker broker("curve-broker", FakeBroker::Curve{keys.broker, {keys.worker.public_key}});
  const std::string log = keys.dir.file("worker.log");
  // The stand-in never answers a heartbeat: the worker finds it silent after 4 x 100 ms and
  // reconnects on a new socket, again and again. Each must pass the ZAP handler with its key.
  broker.set_silent(true);
  ChildProcess worker = start_worker(broker, keys, keys.dir.file("broker.key"), log);
  EXPECT_TRUE(FakeBroker::eventually([&] { return broker.zap_admissions() >= 3; }, 30s))
      << dispatch::test::read_text_file(log);
  EXPECT_NE(dispatch::test::read_text_file(log).find("reconnecting"), std::string::npos);
  EXPECT_EQ(broker.zap_refusals(), 0u);
  EXPECT_EQ(broker.peer_user_ids(), std::set<std::string>{keys.worker.public_key});
}

TEST(WorkerCurve, TheWrongBrokerKeyIsLoggedAsSuch) {
  WorkerKeys keys;
  FakeBroker broker("curve-broker", FakeBroker::Curve{keys.broker, {keys.worker.public_key}});
  const std::string log = keys.dir.file("worker.log");
  // The worker's own public key file as the "broker key": a valid key, not the broker's.
  ChildProcess worker = start_worker(broker, keys, keys.dir.file("worker.key"), log);
  EXPECT_TRUE(log_contains(log, "CURVE handshake with the broker at " + broker.endpoint() +
                                    " failed (wrong broker key?)"))
      << dispatch::test::read_text_file(log);
  EXPECT_TRUE(worker.running());
  EXPECT_TRUE(broker.peer_user_ids().empty());
}

TEST(WorkerStop, ASecondSignalEndsTheWaitForAGoneBrokerToTakeTheLastMessages) {
  // The broker vanishes; the worker's last messages (credit 0, disconnect) then wait in
  // libzmq for a connection, lingering up to the drain deadline (a minute here) when the
  // process ends. A second SIGTERM must end that wait at once, as it ends a drain.
  TempDir dir;
  const std::string log = dir.file("worker.log");
  auto broker = std::make_unique<FakeBroker>("gone-broker");
  dispatch::test::ChildOptions options;
  options.stderr_path = log;
  options.capture_stdout = false;
  options.unset_env = {"DISPATCH_BROKER_KEY", "DISPATCH_CURVE_SECRET"};
  ChildProcess worker =
      ChildProcess::spawn({WORKER_BINARY, "--broker", broker->endpoint(), "--heartbeat-ms", "100",
                           "--drain-timeout-ms", "60000"},
                          options);
  ASSERT_TRUE(FakeBroker::eventually([&] { return !broker->routes().empty(); }, 15s))
      << dispatch::test::read_text_file(log);
  broker.reset();
  worker.send_signal(SIGTERM);
  ASSERT_TRUE(log_contains(log, "draining")) << dispatch::test::read_text_file(log);
  EXPECT_FALSE(worker.wait_for_exit(500ms).has_value()) << "nothing lingered: the test proves "
                                                           "nothing";
  worker.send_signal(SIGTERM);
  const auto status = worker.wait_for_exit(10s);
  ASSERT_TRUE(status.has_value()) << dispatch::test::read_text_file(log);
  EXPECT_TRUE(status->success());
  EXPECT_NE(dispatch::test::read_text_file(log).find("second signal"), std::string::npos);
}

}  // namespace
}  // namespace dispatch::worker
