// The real binaries over CURVE (issue 12): keys made by `dispatch keygen`, laid out as README's
// "Running across hosts securely" tells an operator, a dispatch-broker with allow-lists, real
// dispatch-workers with --broker-key / --curve-secret and the `dispatch` CLI with the same flags.
// The client and worker halves were each tested against stand-ins (tests/client,
// tests/worker); here nothing is a stand-in but the provider.

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <string>
#include <vector>

#include "dispatch/test/child_process.hpp"
#include "dispatch/test/stack.hpp"
#include "system_support.hpp"

namespace dispatch::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

struct CliRun {
  int code = -1;  // -1: did not exit within the bound
  std::string out;
  std::string err;
};

std::size_t count_of(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

class SecureStackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(stack_.binaries().missing(), "");
    std::filesystem::create_directories(keys_);
    for (const char* role : {"clients", "workers", "admins"}) {
      std::filesystem::create_directories(etc_ + "/" + role);
    }
    stack_.start_fake_provider();
  }

  void TearDown() override {
    if (!HasFailure()) return;
    std::cerr << "---- broker.log ----\n" << read_text_file(stack_.dir().file("broker.log"));
    for (std::size_t i = 0; i < stack_.workers().size(); ++i) {
      std::cerr << "---- worker " << i << " ----\n" << stack_.worker_log(i);
    }
  }

  // `dispatch ARGS` to its exit (at most `bound`), stdout and stderr collected from files.
  CliRun run_cli(const std::string& name, const std::vector<std::string>& args,
                 milliseconds bound = 60s) {
    const std::string out = stack_.dir().file(name + ".out");
    const std::string err = stack_.dir().file(name + ".err");
    std::string command = "exec '" + stack_.binaries().cli + "'";
    for (const std::string& arg : args) command += " '" + arg + "'";
    command += " >'" + out + "' 2>'" + err + "'";
    ChildOptions options;
    options.capture_stdout = false;
    ChildProcess child = ChildProcess::spawn({"/bin/sh", "-c", command}, options);
    auto status = child.wait_for_exit(bound);
    CliRun run;
    if (!status) {
      child.stop(1000ms);
    } else if (status->exited) {
      run.code = status->code;
    }
    run.out = read_text_file(out);
    run.err = read_text_file(err);
    return run;
  }

  // `dispatch keygen KEYS/NAME`, its output checked as README shows it.
  void keygen(const std::string& name) {
    const std::string base = keys_ + "/" + name;
    const CliRun run = run_cli("keygen-" + name, {"keygen", base});
    ASSERT_EQ(run.code, 0) << run.err;
    EXPECT_NE(run.out.find("wrote " + base + ".key "), std::string::npos) << run.out;
    EXPECT_NE(run.out.find("wrote " + base + ".key_secret "), std::string::npos) << run.out;
    const auto at = run.out.find("public key: ");
    ASSERT_NE(at, std::string::npos) << run.out;
    const std::string key = run.out.substr(at + 12, run.out.find('\n', at) - at - 12);
    EXPECT_EQ(key.size(), 40u) << run.out;  // Z85 of 32 bytes
    EXPECT_NE(read_text_file(base + ".key").find(key), std::string::npos);
    struct stat info {};
    ASSERT_EQ(::stat((base + ".key_secret").c_str(), &info), 0);
    EXPECT_EQ(info.st_mode & 0777, 0600u);
  }

  // README step 2: NAME's public key into a role directory.
  void allow(const std::string& name, const std::string& role) {
    std::filesystem::copy_file(keys_ + "/" + name + ".key", etc_ + "/" + role + "/" + name + ".key",
                               std::filesystem::copy_options::overwrite_existing);
  }

  void start_broker() {
    stack_.start_broker({"--heartbeat-ms", "100", "--curve-secret", keys_ + "/broker.key_secret",
                         "--allow-clients", etc_ + "/clients", "--allow-workers", etc_ + "/workers",
                         "--allow-admins", etc_ + "/admins"});
  }

  // README step 3: a worker with the broker's public key and its own secret.
  std::size_t start_worker(const std::string& name) {
    return stack_.start_workers(
        1, stack_.default_worker_config(),
        {"--heartbeat-ms", "100", "--id", name, "--broker-key", keys_ + "/broker.key",
         "--curve-secret", keys_ + "/" + name + ".key_secret"})[0];
  }

  // The CLI's CURVE flags for identity `name`.
  std::vector<std::string> as(const std::string& name) const {
    return {"--broker",       stack_.frontend(),
            "--broker-key",   keys_ + "/broker.key",
            "--curve-secret", keys_ + "/" + name + ".key_secret"};
  }

  // `dispatch chat` as `who`; with `as_json`, its --json output (which carries errors on stdout
  // too); without, the answer on stdout and errors on stderr.
  CliRun chat(const std::string& name, const std::string& who, const std::string& prompt,
              bool as_json, milliseconds bound = 60s) {
    std::vector<std::string> args = {"chat"};
    for (const auto& a : as(who)) args.push_back(a);
    for (const auto& a : {"--provider", "ollama", "--model", "llama3.2"}) args.push_back(a);
    if (as_json) args.push_back("--json");
    args.push_back(prompt);
    return run_cli(name, args, bound);
  }

  // `dispatch status --json` as `admin`; null when it fails.
  json status(const std::string& admin) {
    std::vector<std::string> args = {"status", "--json"};
    for (const auto& a : as(admin)) args.push_back(a);
    const CliRun run = run_cli("status", args, 20s);
    if (run.code != 0) return nullptr;
    return json::parse(run.out, nullptr, false);
  }

  // Polls `status` (as `admin`) until it lists exactly `ids`; the last status.
  json wait_for_workers(const std::string& admin, const std::vector<std::string>& ids) {
    json last;
    poll_until(
        [&] {
          last = status(admin);
          if (!last.is_object() || !last.contains("workers")) return false;
          std::vector<std::string> seen;
          for (const auto& w : last["workers"]) seen.push_back(w.value("worker_id", ""));
          return seen == ids;
        },
        20s, 50ms);
    return last;
  }

  Stack stack_{StackBinaries::from_build()};
  std::string keys_ = stack_.dir().file("keys");
  std::string etc_ = stack_.dir().file("etc");
};

TEST_F(SecureStackTest, KeygenKeysServeAWorkerAChatAndAnAdminStatus) {
  for (const char* name : {"broker", "gpu1", "alice"}) ASSERT_NO_FATAL_FAILURE(keygen(name));
  allow("gpu1", "workers");
  allow("alice", "clients");
  allow("alice", "admins");
  ASSERT_NO_FATAL_FAILURE(start_broker());
  const std::string broker_log = read_text_file(stack_.dir().file("broker.log"));
  EXPECT_NE(broker_log.find("CURVE on: broker public key"), std::string::npos) << broker_log;
  EXPECT_NE(broker_log.find("allow-lists loaded: 2 key(s): 1 client, 1 worker, 0 gateway, 1 admin"),
            std::string::npos)
      << broker_log;
  const std::size_t worker = start_worker("gpu1");

  const json listed = wait_for_workers("alice", {"gpu1"});
  ASSERT_TRUE(listed.is_object()) << "no status as alice";
  ASSERT_EQ(listed["workers"].size(), 1u) << listed.dump();
  EXPECT_EQ(listed["workers"][0].value("pid", 0), stack_.workers()[worker].pid());
  EXPECT_FALSE(listed.value("insecure", true)) << listed.dump();
  // The broker names the key that registered the worker (its file name in --allow-workers).
  EXPECT_NE(read_text_file(stack_.dir().file("broker.log")).find("worker gpu1 registered"),
            std::string::npos);
  EXPECT_NE(stack_.worker_log(worker).find("with CURVE (own key"), std::string::npos);

  const CliRun run = chat("chat", "alice", "Hello over CURVE", true);
  ASSERT_EQ(run.code, 0) << run.err;
  const json answer = json::parse(run.out, nullptr, false);
  ASSERT_TRUE(answer.is_object()) << run.out;
  EXPECT_EQ(answer.value("content", "").rfind("reply to: Hello over CURVE", 0), 0u) << run.out;
  EXPECT_EQ(answer.value("provider", ""), "ollama");

  const json after = status("alice");
  ASSERT_TRUE(after.is_object());
  EXPECT_EQ(after["providers"]["ollama"].value("succeeded", 0ull), 1ull) << after.dump();
  EXPECT_EQ(stack_.fake_log().size(), 1u);
}

TEST_F(SecureStackTest, AnUnlistedClientKeyIsRefusedWithExitCodeFive) {
  for (const char* name : {"broker", "gpu1", "mallory"}) ASSERT_NO_FATAL_FAILURE(keygen(name));
  allow("gpu1", "workers");
  ASSERT_NO_FATAL_FAILURE(start_broker());
  start_worker("gpu1");

  const CliRun run = chat("mallory", "mallory", "let me in", false, 10s);
  EXPECT_EQ(run.code, 5) << run.out << run.err;
  EXPECT_NE(run.err.find("authentication refused by the broker at " + stack_.frontend()),
            std::string::npos)
      << run.err;
  EXPECT_EQ(run.out, "");
  EXPECT_TRUE(stack_.fake_log().empty());
  EXPECT_TRUE(poll_until(
      [&] {
        return read_text_file(stack_.dir().file("broker.log"))
                   .find("dispatch-frontend: refused connection from 127.0.0.1") !=
               std::string::npos;
      },
      10s));
  EXPECT_TRUE(stack_.broker().running());
}

TEST_F(SecureStackTest, AnUnlistedWorkerNeverGetsAJob) {
  constexpr int kJobs = 12;
  for (const char* name : {"broker", "gpu1", "rogue", "alice"}) {
    ASSERT_NO_FATAL_FAILURE(keygen(name));
  }
  allow("gpu1", "workers");
  allow("alice", "clients");
  allow("alice", "admins");
  ASSERT_NO_FATAL_FAILURE(start_broker());
  const std::size_t rogue = start_worker("rogue");
  start_worker("gpu1");

  const std::string refusal = "authentication refused by the broker at " + stack_.backend();
  ASSERT_TRUE(
      poll_until([&] { return stack_.worker_log(rogue).find(refusal) != std::string::npos; }, 20s))
      << stack_.worker_log(rogue);
  ASSERT_EQ(wait_for_workers("alice", {"gpu1"})["workers"].size(), 1u);
  EXPECT_TRUE(poll_until(
      [&] {
        return read_text_file(stack_.dir().file("broker.log"))
                   .find("dispatch-backend: refused connection from 127.0.0.1") !=
               std::string::npos;
      },
      10s));

  // A batch of jobs while both run: only gpu1 is registered, so gpu1 answers them all.
  std::string input;
  for (int i = 0; i < kJobs; ++i) {
    input +=
        R"({"custom_id":"j)" + std::to_string(i) +
        R"(","method":"POST","url":"/v1/chat/completions","body":{"model":"ollama/llama3.2",)" +
        R"("messages":[{"role":"user","content":"job )" + std::to_string(i) + R"("}]}})" + "\n";
  }
  write_text_file(stack_.dir().file("batch.jsonl"), input);
  std::vector<std::string> args = {"batch", stack_.dir().file("batch.jsonl"), "-o",
                                   stack_.dir().file("batch-out.jsonl")};
  for (const auto& a : as("alice")) args.push_back(a);
  const CliRun run = run_cli("batch", args);
  ASSERT_EQ(run.code, 0) << run.out << run.err;
  EXPECT_NE((run.out + run.err).find("succeeded " + std::to_string(kJobs) + " | failed 0"),
            std::string::npos)
      << run.out << run.err;
  EXPECT_EQ(count_of(read_text_file(stack_.dir().file("batch-out.jsonl")), "\"custom_id\""),
            static_cast<std::size_t>(kJobs));

  const json after = status("alice");
  ASSERT_TRUE(after.is_object());
  ASSERT_EQ(after["workers"].size(), 1u) << after.dump();
  EXPECT_EQ(after["workers"][0].value("worker_id", ""), "gpu1");
  EXPECT_EQ(after["providers"]["ollama"].value("succeeded", 0ull), static_cast<uint64_t>(kJobs));
  EXPECT_TRUE(stack_.workers()[rogue].running());  // it keeps retrying, never served
  EXPECT_EQ(read_text_file(stack_.dir().file("broker.log")).find("worker rogue registered"),
            std::string::npos);
}

TEST_F(SecureStackTest, AClientKeyAddedAndSighupGetsIn) {
  for (const char* name : {"broker", "gpu1", "bob"}) ASSERT_NO_FATAL_FAILURE(keygen(name));
  allow("gpu1", "workers");
  ASSERT_NO_FATAL_FAILURE(start_broker());
  start_worker("gpu1");

  const CliRun refused = chat("bob-refused", "bob", "knock knock", false, 10s);
  ASSERT_EQ(refused.code, 5) << refused.err;
  EXPECT_NE(refused.err.find("authentication refused by the broker at " + stack_.frontend()),
            std::string::npos)
      << refused.err;

  allow("bob", "clients");  // README: copy the .key file, then kill -HUP
  stack_.broker().send_signal(SIGHUP);
  ASSERT_TRUE(poll_until(
      [&] {
        return count_of(read_text_file(stack_.dir().file("broker.log")), "allow-lists loaded") >= 2;
      },
      10s));

  // The same command, retried.
  const CliRun admitted = chat("bob-admitted", "bob", "knock knock", false, 10s);
  ASSERT_EQ(admitted.code, 0) << admitted.err;
  EXPECT_EQ(admitted.out.rfind("reply to: knock knock", 0), 0u) << admitted.out;
}

// README step 3's other form: the keys in the worker config's `broker:` section, no flags.
TEST_F(SecureStackTest, AWorkerTakesItsKeysFromTheConfigsBrokerSection) {
  for (const char* name : {"broker", "gpu1", "alice"}) ASSERT_NO_FATAL_FAILURE(keygen(name));
  allow("gpu1", "workers");
  allow("alice", "clients");
  allow("alice", "admins");
  ASSERT_NO_FATAL_FAILURE(start_broker());
  const std::string config = stack_.default_worker_config() + "broker: {endpoint: \"" +
                             stack_.backend() + "\", public_key_file: " + keys_ +
                             "/broker.key, secret_key_file: " + keys_ + "/gpu1.key_secret}\n";
  const std::size_t worker =
      stack_.start_workers(1, config, {"--heartbeat-ms", "100", "--id", "gpu1"})[0];

  ASSERT_EQ(wait_for_workers("alice", {"gpu1"})["workers"].size(), 1u) << stack_.worker_log(worker);
  EXPECT_NE(stack_.worker_log(worker).find("with CURVE (own key"), std::string::npos);
  const CliRun run = chat("chat", "alice", "keys from YAML", false);
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_EQ(run.out.rfind("reply to: keys from YAML", 0), 0u) << run.out;
}

}  // namespace
}  // namespace dispatch::test
