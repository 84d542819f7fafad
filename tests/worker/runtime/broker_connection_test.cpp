// Where dispatch-worker takes its broker endpoint and CURVE keys from: flag > environment >
// the config's `broker:` section, both keys or neither; and the dispatch-worker usage errors.

#include "dispatch/worker/runtime/broker_connection.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <map>

#include "dispatch/protocol/curve.hpp"
#include "dispatch/test/child_process.hpp"
#include "dispatch/test/stack.hpp"

namespace dispatch::worker {
namespace {

using dispatch::test::TempDir;
using namespace std::chrono_literals;

class Env final : public Environment {
 public:
  explicit Env(std::map<std::string, std::string> values = {}) : values_(std::move(values)) {}
  std::optional<std::string> get(const std::string& name) const override {
    auto it = values_.find(name);
    if (it == values_.end()) return std::nullopt;
    return it->second;
  }

 private:
  std::map<std::string, std::string> values_;
};

// Three key pairs on disk: the broker's, and two of this worker's (to tell the sources apart).
struct KeyFiles {
  TempDir dir;
  protocol::CurveKeys broker = make("broker");
  protocol::CurveKeys first = make("first");
  protocol::CurveKeys second = make("second");

  std::string public_file(const std::string& name) const { return dir.file(name + ".key"); }
  std::string secret_file(const std::string& name) const { return dir.file(name + ".key_secret"); }

 private:
  protocol::CurveKeys make(const std::string& name) {
    auto keys = protocol::generate_curve_keys();
    EXPECT_TRUE(keys.ok());
    EXPECT_TRUE(protocol::save_certificate(dir.file(name), *keys).ok());
    return *keys;
  }
};

Result<void, std::string> resolve(const BrokerFlags& flags, const WorkerConfig& config,
                                  const Environment& env, RuntimeOptions& options) {
  return resolve_broker_connection(flags, config, "dispatch.yaml", env, options);
}

TEST(BrokerConnection, NothingGivenIsPlaintextOnTheDefaultEndpoint) {
  RuntimeOptions options;
  ASSERT_TRUE(resolve({}, WorkerConfig{}, Env{}, options).ok());
  EXPECT_EQ(options.broker_endpoint, "tcp://127.0.0.1:5556");
  EXPECT_FALSE(options.curve.enabled());
}

TEST(BrokerConnection, TheFlagEndpointWinsOverTheConfig) {
  WorkerConfig config;
  config.broker.endpoint = "tcp://from-config:5556";
  RuntimeOptions from_config;
  ASSERT_TRUE(resolve({}, config, Env{}, from_config).ok());
  EXPECT_EQ(from_config.broker_endpoint, "tcp://from-config:5556");
  RuntimeOptions from_flag;
  ASSERT_TRUE(resolve({.endpoint = "tcp://from-flag:5556"}, config, Env{}, from_flag).ok());
  EXPECT_EQ(from_flag.broker_endpoint, "tcp://from-flag:5556");
}

TEST(BrokerConnection, KeysComeFromTheFlagThenTheEnvironmentThenTheConfig) {
  KeyFiles keys;
  WorkerConfig config;
  config.broker.public_key_file = keys.public_file("broker");
  config.broker.secret_key_file = keys.secret_file("first");
  RuntimeOptions from_config;
  ASSERT_TRUE(resolve({}, config, Env{}, from_config).ok());
  EXPECT_EQ(from_config.curve.broker_public_key, keys.broker.public_key);
  EXPECT_EQ(from_config.curve.own.secret_key, keys.first.secret_key);

  const Env env({{"DISPATCH_BROKER_KEY", keys.public_file("broker")},
                 {"DISPATCH_CURVE_SECRET", keys.secret_file("second")}});
  RuntimeOptions from_env;
  ASSERT_TRUE(resolve({}, config, env, from_env).ok());
  EXPECT_EQ(from_env.curve.own.public_key, keys.second.public_key);

  RuntimeOptions from_flag;
  ASSERT_TRUE(resolve({.curve_secret = keys.secret_file("first")}, config, env, from_flag).ok());
  EXPECT_EQ(from_flag.curve.own.public_key, keys.first.public_key);
  EXPECT_EQ(from_flag.curve.broker_public_key, keys.broker.public_key);  // from the environment
}

TEST(BrokerConnection, OneKeyAloneIsAnErrorNamingEveryPlaceTheOtherCouldComeFrom) {
  KeyFiles keys;
  RuntimeOptions options;
  auto no_secret =
      resolve({.broker_key = keys.public_file("broker")}, WorkerConfig{}, Env{}, options);
  ASSERT_FALSE(no_secret.ok());
  for (const char* place :
       {"--broker-key", "--curve-secret", "DISPATCH_CURVE_SECRET", "broker.secret_key_file"}) {
    EXPECT_NE(no_secret.error().find(place), std::string::npos)
        << place << ": " << no_secret.error();
  }
  WorkerConfig config;
  config.broker.secret_key_file = keys.secret_file("first");
  auto no_broker_key = resolve({}, config, Env{}, options);
  ASSERT_FALSE(no_broker_key.ok());
  EXPECT_NE(no_broker_key.error().find("dispatch.yaml: broker.secret_key_file"), std::string::npos)
      << no_broker_key.error();
  EXPECT_NE(no_broker_key.error().find("DISPATCH_BROKER_KEY"), std::string::npos)
      << no_broker_key.error();
}

TEST(BrokerConnection, AnUnreadableOrOpenSecretIsAnErrorNamingTheSourceAndTheFile) {
  KeyFiles keys;
  RuntimeOptions options;
  const Env env({{"DISPATCH_BROKER_KEY", keys.public_file("broker")},
                 {"DISPATCH_CURVE_SECRET", keys.dir.file("missing.key_secret")}});
  auto missing = resolve({}, WorkerConfig{}, env, options);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().find("DISPATCH_CURVE_SECRET"), std::string::npos) << missing.error();
  EXPECT_NE(missing.error().find("missing.key_secret"), std::string::npos) << missing.error();

  ::chmod(keys.secret_file("first").c_str(), 0604);
  auto open =
      resolve({.broker_key = keys.public_file("broker"), .curve_secret = keys.secret_file("first")},
              WorkerConfig{}, Env{}, options);
  ASSERT_FALSE(open.ok());
  EXPECT_NE(open.error().find(keys.secret_file("first")), std::string::npos) << open.error();
  EXPECT_EQ(open.error().find(keys.first.secret_key), std::string::npos) << "secret in the message";
}

TEST(BrokerConnection, TheConfigSectionIsParsedAndItsPathsAreRelativeToTheFile) {
  KeyFiles keys;
  const std::string path = keys.dir.file("worker.yaml");
  dispatch::test::write_text_file(path,
                                  "broker:\n"
                                  "  endpoint: tcp://10.0.0.5:5556\n"
                                  "  public_key_file: broker.key\n"
                                  "  secret_key_file: first.key_secret\n");
  const WorkerConfig config = load_config(path, Env{});
  EXPECT_EQ(config.broker.endpoint, "tcp://10.0.0.5:5556");
  EXPECT_EQ(config.broker.public_key_file, keys.public_file("broker"));
  EXPECT_EQ(config.broker.secret_key_file, keys.secret_file("first"));
  RuntimeOptions options;
  ASSERT_TRUE(resolve({}, config, Env{}, options).ok());
  EXPECT_EQ(options.curve.own.public_key, keys.first.public_key);

  EXPECT_THROW(parse_config("broker:\n  public_key: x\n", "w.yaml", Env{}), ConfigError);
  EXPECT_THROW(parse_config("broker:\n  endpoint: ''\n", "w.yaml", Env{}), ConfigError);
  EXPECT_THROW(parse_config("broker: [1]\n", "w.yaml", Env{}), ConfigError);
}

// ---- dispatch-worker itself: a key problem is a usage error (exit 2) with the message.

struct Outcome {
  int code = -1;
  std::string stderr_text;
};

Outcome run_worker(std::vector<std::string> args, std::vector<std::string> env = {}) {
  TempDir dir;
  dispatch::test::ChildOptions options;
  options.stderr_path = dir.file("stderr");
  options.capture_stdout = false;
  options.extra_env = std::move(env);
  options.unset_env = {"DISPATCH_BROKER_KEY", "DISPATCH_CURVE_SECRET"};
  args.insert(args.begin(), WORKER_BINARY);
  auto child = dispatch::test::ChildProcess::spawn(args, options);
  const auto status = child.wait_for_exit(10s);
  Outcome outcome;
  if (status && status->exited) outcome.code = status->code;
  outcome.stderr_text = dispatch::test::read_text_file(dir.file("stderr"));
  return outcome;
}

TEST(WorkerCommandLine, OneKeyAloneIsAUsageError) {
  KeyFiles keys;
  const Outcome outcome = run_worker({"--broker-key", keys.public_file("broker")});
  EXPECT_EQ(outcome.code, 2);
  EXPECT_NE(outcome.stderr_text.find("--curve-secret"), std::string::npos) << outcome.stderr_text;
  const Outcome from_env = run_worker({}, {"DISPATCH_CURVE_SECRET=" + keys.secret_file("first")});
  EXPECT_EQ(from_env.code, 2);
  EXPECT_NE(from_env.stderr_text.find("DISPATCH_CURVE_SECRET"), std::string::npos)
      << from_env.stderr_text;
}

TEST(WorkerCommandLine, AWorldReadableSecretIsAUsageErrorNamingTheFile) {
  KeyFiles keys;
  ::chmod(keys.secret_file("first").c_str(), 0644);
  const Outcome outcome = run_worker(
      {"--broker-key", keys.public_file("broker"), "--curve-secret", keys.secret_file("first")});
  EXPECT_EQ(outcome.code, 2);
  EXPECT_NE(outcome.stderr_text.find(keys.secret_file("first")), std::string::npos)
      << outcome.stderr_text;
  EXPECT_EQ(outcome.stderr_text.find(keys.first.secret_key), std::string::npos);
}

}  // namespace
}  // namespace dispatch::worker
