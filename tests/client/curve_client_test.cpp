// CURVE on the client side: the library, `dispatch` and `dispatch keygen` against the
// FakeBroker run as a CURVE server with a ZAP handler (the stand-in for `dispatch-broker
// --curve-secret`). A refused handshake must fail the waiting work with the exact message long
// before any generic timeout: the options below put every timeout at a minute or more, so a
// failure that arrives within the tests' bounds can only come from the socket monitor.

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <sstream>

#include "dispatch/cli/app.hpp"
#include "dispatch/cli/exit_codes.hpp"
#include "dispatch/client.hpp"
#include "dispatch/protocol/curve.hpp"
#include "dispatch/test/stack.hpp"
#include "support/fake_broker.hpp"

namespace dispatch {
namespace {

using std::chrono::milliseconds;
using test::FakeBroker;
using test::TempDir;
using Clock = std::chrono::steady_clock;

// Generous bound for "at once": far below every timeout the options allow, far above a
// loaded machine's handshake.
constexpr milliseconds kRefusalBound{10000};

protocol::CurveKeys new_keys() {
  auto keys = protocol::generate_curve_keys();
  EXPECT_TRUE(keys.ok());
  return *keys;
}

// A key pair written as `dispatch keygen` writes it; returns the path base.
std::string write_keys(const TempDir& dir, const std::string& name,
                       const protocol::CurveKeys& keys) {
  const std::string base = dir.file(name);
  EXPECT_TRUE(protocol::save_certificate(base, keys).ok());
  return base;
}

// Every client timeout a minute or more: only the monitor can fail a job quickly.
ClientOptions slow_options(const FakeBroker& broker) {
  ClientOptions options;
  options.broker_endpoint = broker.endpoint();
  options.ack_timeout = milliseconds(60000);
  options.max_ack_timeout = milliseconds(60000);
  options.heartbeat_interval = milliseconds(60000);
  options.deadline_allowance = milliseconds(120000);
  return options;
}

DispatchRequest hello() {
  return DispatchRequest(Provider::ollama, "llama3.2", {Message::user("Hello there")});
}

struct CurveSetup {
  protocol::CurveKeys server = new_keys();
  protocol::CurveKeys client = new_keys();

  FakeBroker::Curve admitting_client() const { return {server, {client.public_key}}; }
  FakeBroker::Curve admitting_nobody() const { return {server, {}}; }
  ClientOptions options(const FakeBroker& broker) const {
    ClientOptions options = slow_options(broker);
    options.broker_public_key = server.public_key;
    options.curve_keys = client;
    return options;
  }
};

// Dispatches and expects the typed failure within kRefusalBound; returns the error.
template <class ExpectedError>
ExpectedError refusal_of(Client& client) {
  const auto started = Clock::now();
  PendingDispatch pending = client.dispatch_async(hello());
  EXPECT_EQ(pending.wait_for(kRefusalBound), std::future_status::ready)
      << "no failure within " << kRefusalBound.count() << " ms";
  try {
    pending.get();
  } catch (const ExpectedError& e) {
    const auto elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - started);
    ::testing::Test::RecordProperty("refusal_ms", static_cast<int>(elapsed.count()));
    std::cout << "refused after " << elapsed.count() << " ms: " << e.what() << "\n";
    return e;
  }
  ADD_FAILURE() << "the job did not fail with the expected error";
  return ExpectedError(make_wire_error(ErrorKind::unknown, "", ""));
}

TEST(CurveClient, AListedKeyIsServedAndTheBrokerSeesItsPublicKey) {
  CurveSetup keys;
  FakeBroker broker("curve-broker", keys.admitting_client());
  Client client(keys.options(broker));
  EXPECT_EQ(client.dispatch(hello()).content, "echo: Hello there");
  EXPECT_EQ(broker.submit_user_ids(), std::vector<std::string>{keys.client.public_key});
  EXPECT_EQ(broker.zap_refusals(), 0u);
}

TEST(CurveClient, AnUnlistedKeyFailsAtOnceWithTheExactMessage) {
  CurveSetup keys;
  FakeBroker broker("curve-broker", keys.admitting_nobody());
  Client client(keys.options(broker));
  const auto error = refusal_of<AuthenticationError>(client);
  EXPECT_EQ(error.message(), "authentication refused by the broker at " + broker.endpoint());
  EXPECT_EQ(error.code(), client_code::broker_auth_refused);
  EXPECT_TRUE(is_connection_refusal(error));
  EXPECT_GE(broker.zap_refusals(), 1u);
  EXPECT_TRUE(broker.submits().empty());
}

TEST(CurveClient, StatusIsRefusedAtOnceToo) {
  CurveSetup keys;
  FakeBroker broker("curve-broker", keys.admitting_nobody());
  Client client(keys.options(broker));
  const auto started = Clock::now();
  try {
    client.status(milliseconds(60000));
    ADD_FAILURE() << "status answered through a refused connection";
  } catch (const AuthenticationError& e) {
    EXPECT_EQ(e.message(), "authentication refused by the broker at " + broker.endpoint());
  }
  EXPECT_LT(Clock::now() - started, kRefusalBound);
}

TEST(CurveClient, AKeyAllowedLaterIsServedOnTheNextJob) {
  CurveSetup keys;
  FakeBroker broker("curve-broker", keys.admitting_nobody());
  Client client(keys.options(broker));
  refusal_of<AuthenticationError>(client);
  broker.set_allowed_clients({keys.client.public_key});  // as the broker's SIGHUP re-read
  EXPECT_EQ(client.dispatch(hello()).content, "echo: Hello there");
}

TEST(CurveClient, TheWrongBrokerKeyIsReportedAsSuch) {
  CurveSetup keys;
  FakeBroker broker("curve-broker", keys.admitting_client());
  ClientOptions options = keys.options(broker);
  options.broker_public_key = new_keys().public_key;  // not the broker's
  Client client(options);
  const auto error = refusal_of<AuthenticationError>(client);
  EXPECT_EQ(error.message(), "CURVE handshake with the broker at " + broker.endpoint() +
                                 " failed (wrong broker key?)");
  EXPECT_EQ(error.code(), client_code::curve_handshake_failed);
}

TEST(CurveClient, APlaintextClientLearnsTheBrokerRequiresCurve) {
  CurveSetup keys;
  FakeBroker broker("curve-broker", keys.admitting_client());
  Client client(slow_options(broker));
  const auto error = refusal_of<AuthenticationError>(client);
  EXPECT_EQ(error.message(), "the broker at " + broker.endpoint() +
                                 " requires CURVE: give --broker-key and --curve-secret");
  EXPECT_EQ(error.code(), client_code::broker_requires_curve);
}

TEST(CurveClient, ACurveClientLearnsTheBrokerDoesNotUseCurve) {
  CurveSetup keys;
  FakeBroker broker;  // plaintext
  Client client(keys.options(broker));
  // libzmq shows the mismatch either as a protocol error or, when the broker hangs up before
  // its greeting is read, as a silent failure (handshake_monitor.hpp): the message is one of
  // the two CURVE sentences, and never a timeout.
  const std::set<std::string> curve_messages = {
      "the broker at " + broker.endpoint() + " does not use CURVE",
      "CURVE handshake with the broker at " + broker.endpoint() + " failed (wrong broker key?)"};
  for (int attempt = 0; attempt < 2; ++attempt) {  // the second on a new socket: no crash
    const auto error = refusal_of<AuthenticationError>(client);
    EXPECT_EQ(curve_messages.count(error.message()), 1u) << error.message();
    EXPECT_TRUE(is_connection_refusal(error)) << error.code();
  }
  EXPECT_TRUE(broker.submits().empty());
}

TEST(CurveClient, OneKeyWithoutTheOtherIsRejectedAtConstruction) {
  CurveSetup keys;
  ClientOptions only_broker;
  only_broker.broker_public_key = keys.server.public_key;
  EXPECT_THROW(Client{only_broker}, std::invalid_argument);
  ClientOptions only_own;
  only_own.curve_keys = keys.client;
  EXPECT_THROW(Client{only_own}, std::invalid_argument);
  ClientOptions mismatched;
  mismatched.broker_public_key = keys.server.public_key;
  mismatched.curve_keys = {keys.client.public_key, keys.server.secret_key};
  EXPECT_THROW(Client{mismatched}, std::invalid_argument);
}

TEST(CurveClient, LoadCurveKeysReadsTheCertificateFiles) {
  TempDir dir;
  CurveSetup keys;
  const std::string server = write_keys(dir, "broker", keys.server);
  const std::string client = write_keys(dir, "client", keys.client);
  ClientOptions options;
  ASSERT_TRUE(options.load_curve_keys(server + ".key", client + ".key_secret").ok());
  EXPECT_EQ(options.broker_public_key, keys.server.public_key);
  EXPECT_EQ(options.curve_keys.public_key, keys.client.public_key);
  EXPECT_EQ(options.curve_keys.secret_key, keys.client.secret_key);

  ClientOptions plaintext;
  EXPECT_TRUE(plaintext.load_curve_keys("", "").ok());
  EXPECT_TRUE(plaintext.broker_public_key.empty());

  auto alone = ClientOptions{}.load_curve_keys(server + ".key", "");
  ASSERT_FALSE(alone.ok());
  EXPECT_NE(alone.error().find("--curve-secret"), std::string::npos) << alone.error();

  ::chmod((client + ".key_secret").c_str(), 0640);
  auto readable = ClientOptions{}.load_curve_keys(server + ".key", client + ".key_secret");
  ASSERT_FALSE(readable.ok());
  EXPECT_NE(readable.error().find(client + ".key_secret"), std::string::npos) << readable.error();
}

// ---- the CLI

struct CliRun {
  int code;
  std::string out;
  std::string err;
};

CliRun run(std::vector<std::string> args) {
  std::ostringstream out, err;
  args.insert(args.begin(), "dispatch");
  const int code = cli::run_cli(args, cli::CliStreams{out, err, false});
  return CliRun{code, out.str(), err.str()};
}

// Sets an environment variable for one scope.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() { ::unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

std::vector<std::string> chat_args(const FakeBroker& broker, std::vector<std::string> extra) {
  std::vector<std::string> args = {"chat",   "--broker", broker.endpoint(), "--provider",
                                   "ollama", "--model",  "llama3.2"};
  args.insert(args.end(), extra.begin(), extra.end());
  args.emplace_back("Hello there");
  return args;
}

TEST(CurveCli, KeygenWritesThePairAndPrintsThePathsAndThePublicKey) {
  TempDir dir;
  const std::string base = dir.file("keys/alice");  // the directory is created
  const CliRun made = run({"keygen", base});
  ASSERT_EQ(made.code, cli::exit_code::ok) << made.err;
  auto pub = protocol::load_certificate(base + ".key", false);
  auto secret = protocol::load_certificate(base + ".key_secret", true);
  ASSERT_TRUE(pub.ok() && secret.ok());
  EXPECT_EQ(pub->public_key, secret->public_key);
  EXPECT_NE(made.out.find("wrote " + base + ".key "), std::string::npos) << made.out;
  EXPECT_NE(made.out.find("wrote " + base + ".key_secret "), std::string::npos) << made.out;
  EXPECT_NE(made.out.find("public key: " + pub->public_key + "\n"), std::string::npos) << made.out;
  EXPECT_EQ(made.out.find(secret->secret_key), std::string::npos) << "the secret was printed";
  struct stat info {};
  ASSERT_EQ(::stat((base + ".key_secret").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);

  const CliRun again = run({"keygen", base});
  EXPECT_EQ(again.code, cli::exit_code::failed);
  EXPECT_NE(again.err.find(base), std::string::npos) << again.err;
  EXPECT_EQ(run({"keygen", dir.file("bob.key")}).code, cli::exit_code::usage);
  EXPECT_EQ(run({"keygen"}).code, cli::exit_code::usage);
}

TEST(CurveCli, ChatWithKeysIsServed) {
  TempDir dir;
  CurveSetup keys;
  FakeBroker broker("curve-broker", keys.admitting_client());
  const std::string server = write_keys(dir, "broker", keys.server);
  const std::string client = write_keys(dir, "client", keys.client);
  const CliRun chat = run(chat_args(
      broker, {"--broker-key", server + ".key", "--curve-secret", client + ".key_secret"}));
  EXPECT_EQ(chat.code, cli::exit_code::ok) << chat.err;
  EXPECT_EQ(chat.out, "echo: Hello there\n");
}

TEST(CurveCli, TheEnvironmentGivesKeysAndFlagsWinOverIt) {
  TempDir dir;
  CurveSetup keys;
  FakeBroker broker("curve-broker", keys.admitting_client());
  const std::string server = write_keys(dir, "broker", keys.server);
  const std::string client = write_keys(dir, "client", keys.client);
  {
    ScopedEnv broker_key("DISPATCH_BROKER_KEY", server + ".key");
    ScopedEnv secret("DISPATCH_CURVE_SECRET", client + ".key_secret");
    const CliRun from_env = run(chat_args(broker, {}));
    EXPECT_EQ(from_env.code, cli::exit_code::ok) << from_env.err;
  }
  {
    ScopedEnv broker_key("DISPATCH_BROKER_KEY", dir.file("missing.key"));
    ScopedEnv secret("DISPATCH_CURVE_SECRET", dir.file("missing.key_secret"));
    const CliRun flags_win = run(chat_args(
        broker, {"--broker-key", server + ".key", "--curve-secret", client + ".key_secret"}));
    EXPECT_EQ(flags_win.code, cli::exit_code::ok) << flags_win.err;
    const CliRun env_used = run(chat_args(broker, {}));
    EXPECT_EQ(env_used.code, cli::exit_code::usage);
    EXPECT_NE(env_used.err.find("DISPATCH_BROKER_KEY"), std::string::npos) << env_used.err;
  }
}

TEST(CurveCli, OneKeyAloneIsAUsageErrorNamingTheMissingOne) {
  TempDir dir;
  CurveSetup keys;
  FakeBroker broker("curve-broker", keys.admitting_client());
  const std::string server = write_keys(dir, "broker", keys.server);
  const std::string client = write_keys(dir, "client", keys.client);
  const CliRun no_secret = run(chat_args(broker, {"--broker-key", server + ".key"}));
  EXPECT_EQ(no_secret.code, cli::exit_code::usage);
  EXPECT_NE(no_secret.err.find("--curve-secret"), std::string::npos) << no_secret.err;
  const CliRun no_broker_key =
      run({"status", "--broker", broker.endpoint(), "--curve-secret", client + ".key_secret"});
  EXPECT_EQ(no_broker_key.code, cli::exit_code::usage);
  EXPECT_NE(no_broker_key.err.find("--broker-key"), std::string::npos) << no_broker_key.err;
  // Mixed sources are fine: the broker key from the environment, the secret from the flag.
  ScopedEnv broker_key("DISPATCH_BROKER_KEY", server + ".key");
  const CliRun mixed = run(chat_args(broker, {"--curve-secret", client + ".key_secret"}));
  EXPECT_EQ(mixed.code, cli::exit_code::ok) << mixed.err;
}

TEST(CurveCli, AGroupReadableSecretIsRefusedWithTheFileAndTheFix) {
  TempDir dir;
  CurveSetup keys;
  FakeBroker broker("curve-broker", keys.admitting_client());
  const std::string server = write_keys(dir, "broker", keys.server);
  const std::string client = write_keys(dir, "client", keys.client);
  ::chmod((client + ".key_secret").c_str(), 0644);
  const CliRun chat = run(chat_args(
      broker, {"--broker-key", server + ".key", "--curve-secret", client + ".key_secret"}));
  EXPECT_EQ(chat.code, cli::exit_code::usage);
  EXPECT_NE(chat.err.find(client + ".key_secret"), std::string::npos) << chat.err;
  EXPECT_NE(chat.err.find("chmod"), std::string::npos) << chat.err;
  EXPECT_EQ(chat.err.find(keys.client.secret_key), std::string::npos) << "the secret was printed";
}

TEST(CurveCli, ARefusedChatStatusAndBatchPrintTheMessageAndExit5) {
  TempDir dir;
  CurveSetup keys;
  FakeBroker broker("curve-broker", keys.admitting_nobody());
  const std::string server = write_keys(dir, "broker", keys.server);
  const std::string client = write_keys(dir, "client", keys.client);
  const std::vector<std::string> key_flags = {"--broker-key", server + ".key", "--curve-secret",
                                              client + ".key_secret"};
  const std::string message = "authentication refused by the broker at " + broker.endpoint();
  const CliRun chat = run(chat_args(broker, key_flags));
  EXPECT_EQ(chat.code, cli::exit_code::refused);
  EXPECT_NE(chat.err.find(message), std::string::npos) << chat.err;

  std::vector<std::string> status = {"status", "--broker", broker.endpoint(), "--timeout-ms",
                                     "60000"};
  status.insert(status.end(), key_flags.begin(), key_flags.end());
  const CliRun refused_status = run(status);
  EXPECT_EQ(refused_status.code, cli::exit_code::refused);
  EXPECT_NE(refused_status.err.find(message), std::string::npos) << refused_status.err;

  auto line = [](const std::string& id) {
    return R"({"custom_id":")" + id +
           R"(","method":"POST","url":"/v1/chat/completions",)"
           R"("body":{"model":"ollama/m","messages":[{"role":"user","content":"hi"}]}})"
           "\n";
  };
  test::write_text_file(dir.file("in.jsonl"), line("one") + line("two"));
  std::vector<std::string> batch = {"batch",    dir.file("in.jsonl"), "-o", dir.file("out.jsonl"),
                                    "--broker", broker.endpoint()};
  batch.insert(batch.end(), key_flags.begin(), key_flags.end());
  const CliRun refused_batch = run(batch);
  EXPECT_EQ(refused_batch.code, cli::exit_code::refused);
  EXPECT_NE(refused_batch.err.find(message), std::string::npos) << refused_batch.err;
}

}  // namespace
}  // namespace dispatch
