// Secrets stay secret (issue 12, item 7): the whole stack with distinctive provider keys and
// custom header values, including failures whose provider error bodies echo the key (the fake
// provider's 401 says "Incorrect API key provided: KEY.", as OpenAI's does). Every log of the
// broker and the worker, every output of `dispatch chat`, `batch` and `status` and the batch
// output file must be free of them. The fake provider's own log is not checked: it plays the
// provider, which is given the key.

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "dispatch/test/child_process.hpp"
#include "dispatch/test/stack.hpp"
#include "system_support.hpp"

namespace dispatch::test {
namespace {

using namespace std::chrono_literals;

// The key the fake provider accepts, the wrong one the second provider sends, and custom header
// values: none may appear in any output.
constexpr const char* kGoodKey = "sk-SECRET-7f3a91c2-good";
constexpr const char* kWrongKey = "sk-SECRET-0be4d7aa-wrong";
constexpr const char* kHeaderValue = "hdr-SECRET-5c19e0f3";
constexpr const char* kWrongHeaderValue = "hdr-SECRET-a2d8b6e1";

std::string worker_config(const FakeProviderProcess& fake) {
  return "defaults:\n"
         "  timeout_ms: 10000\n"
         "  retry_count: 1\n"
         "  backoff: {base_ms: 10, max_ms: 50}\n"
         "providers:\n"
         "  good: {type: openai, base_url: \"" +
         fake.openai_base_url() +
         "\", api_key_env: SECRETS_TEST_GOOD_KEY, headers: {X-Team-Token: \"" + kHeaderValue +
         "\"}}\n"
         "  wrong: {type: openai, base_url: \"" +
         fake.openai_base_url() +
         "\", api_key_env: SECRETS_TEST_WRONG_KEY, headers: {X-Team-Token: \"" + kWrongHeaderValue +
         "\"}}\n";
}

struct CliRun {
  int code = -1;
  std::string out;
  std::string err;
};

// Runs `dispatch ARGS` with stdout and stderr in files under the stack's directory.
CliRun run_cli(Stack& stack, const std::string& name, std::vector<std::string> args) {
  const std::string out = stack.dir().file(name + ".out");
  const std::string err = stack.dir().file(name + ".err");
  std::string command = "exec '" + stack.binaries().cli + "'";
  for (const std::string& arg : args) command += " '" + arg + "'";
  command += " >'" + out + "' 2>'" + err + "'";
  ChildOptions options;
  options.capture_stdout = false;
  ChildProcess child = ChildProcess::spawn({"/bin/sh", "-c", command}, options);
  const auto status = child.wait_for_exit(60s);
  CliRun run;
  if (status && status->exited) run.code = status->code;
  run.out = read_text_file(out);
  run.err = read_text_file(err);
  return run;
}

void expect_no_secret(const std::string& what, const std::string& text) {
  for (const char* secret : {kGoodKey, kWrongKey, kHeaderValue, kWrongHeaderValue}) {
    EXPECT_EQ(text.find(secret), std::string::npos) << what << " contains " << secret << ":\n"
                                                    << text;
  }
  // Any fragment of the distinctive middle would be a partial leak.
  EXPECT_EQ(text.find("SECRET-"), std::string::npos) << what << ":\n" << text;
}

TEST(Secrets, NoKeyOrHeaderValueReachesAnyLogOrOutput) {
  Stack stack(StackBinaries::from_build());
  ASSERT_EQ(stack.binaries().missing(), "");
  stack.start_fake_provider({"--require-key", kGoodKey});
  stack.start_broker({"--heartbeat-ms", "100"});
  ::setenv("SECRETS_TEST_GOOD_KEY", kGoodKey, 1);
  ::setenv("SECRETS_TEST_WRONG_KEY", kWrongKey, 1);
  stack.start_workers(1, worker_config(stack.fake()), {"--log-level", "debug"});
  stack.wait_for_workers(1);

  const std::string broker = "--broker=" + stack.frontend();
  std::vector<CliRun> runs;
  runs.push_back(
      run_cli(stack, "chat-ok", {"chat", broker, "--provider", "good", "--model", "m", "Hello"}));
  EXPECT_EQ(runs.back().code, 0) << runs.back().err;
  // The provider refuses the wrong key and echoes it in its error body.
  runs.push_back(
      run_cli(stack, "chat-401",
              {"chat", broker, "--provider", "wrong", "--model", "m", "--json", "Hello"}));
  EXPECT_EQ(runs.back().code, 1) << runs.back().err;
  EXPECT_NE(runs.back().out.find("Incorrect API key provided: ***."), std::string::npos)
      << runs.back().out;
  runs.push_back(run_cli(stack, "chat-401-text",
                         {"chat", broker, "--provider", "wrong", "--model", "m", "Hello"}));
  EXPECT_EQ(runs.back().code, 1);
  // A fallback from the refused provider to the good one: attempts of both in one answer.
  runs.push_back(run_cli(stack, "chat-fallback",
                         {"chat", broker, "--provider", "wrong", "--model", "m", "--fallback",
                          "good/m", "--json", "Hello"}));
  EXPECT_EQ(runs.back().code, 0) << runs.back().err;

  const std::string input = stack.dir().file("batch.jsonl");
  auto line = [](const std::string& id, const std::string& model) {
    return R"({"custom_id":")" + id + R"(","method":"POST","url":"/v1/chat/completions",)" +
           R"("body":{"model":")" + model + R"(","messages":[{"role":"user","content":"hi"}]}})" +
           "\n";
  };
  write_text_file(input, line("ok", "good/m") + line("refused", "wrong/m") +
                             line("status", "good/m~status=400"));
  const std::string output = stack.dir().file("batch-out.jsonl");
  runs.push_back(run_cli(stack, "batch", {"batch", input, "-o", output, broker}));
  runs.push_back(run_cli(stack, "status", {"status", broker}));
  EXPECT_EQ(runs.back().code, 0) << runs.back().err;
  runs.push_back(run_cli(stack, "status-json", {"status", broker, "--json"}));

  const std::string batch_output = read_text_file(output);
  EXPECT_NE(batch_output.find("\"custom_id\":\"refused\""), std::string::npos) << batch_output;
  expect_no_secret("batch output file", batch_output);
  for (std::size_t i = 0; i < runs.size(); ++i) {
    expect_no_secret("dispatch run " + std::to_string(i) + " stdout", runs[i].out);
    expect_no_secret("dispatch run " + std::to_string(i) + " stderr", runs[i].err);
  }
  stack.workers()[0].stop();
  stack.broker().stop();
  expect_no_secret("worker log", stack.worker_log(0));
  expect_no_secret("broker log", read_text_file(stack.dir().file("broker.log")));
  // The requests did carry them: the test would pass vacuously otherwise.
  const auto attempts = stack.fake_log();
  EXPECT_GE(attempts.size(), 4u);
}

}  // namespace
}  // namespace dispatch::test
