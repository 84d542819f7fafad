// Trace context and cost end to end: `dispatch chat --traceparent` through a real broker and
// worker to the fake provider, which records the traceparent it got; the result's cost_usd
// from the worker's shipped price table; and the broker's and worker's log lines of the job,
// which one grep for the trace id finds.

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dispatch/test/child_process.hpp"
#include "dispatch/test/stack.hpp"

namespace dispatch::test {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;

constexpr const char* kTraceId = "4bf92f3577b34da6a3ce929d0e0e4736";
constexpr const char* kTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

struct CliRun {
  std::vector<std::string> lines;
  std::string err;
  int exit_code = -1;
};

CliRun run_cli(const std::vector<std::string>& argv, const std::string& err_path) {
  ChildOptions options;
  options.stderr_path = err_path;
  ChildProcess child = ChildProcess::spawn(argv, options);
  CliRun run;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (auto line = child.read_line(500ms)) {
      run.lines.push_back(*line);
    } else if (!child.running()) {
      break;
    }
  }
  while (auto line = child.read_line(50ms)) run.lines.push_back(*line);
  const auto exited = child.wait_for_exit(2000ms);
  const ExitStatus status = exited ? *exited : child.stop(2000ms);
  run.exit_code = status.exited ? status.code : -1;
  run.err = read_text_file(err_path);
  return run;
}

std::vector<std::string> lines_with(const std::string& text, const std::string& needle) {
  std::vector<std::string> found;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.find(needle) != std::string::npos) found.push_back(line);
  }
  return found;
}

class TraceCostTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    stack_ = std::make_unique<Stack>(StackBinaries::from_build());
    stack_->start_fake_provider();
    // Debug: the broker's and worker's per-job lines, which carry the trace id.
    stack_->start_broker({"--log-level", "debug"});
    stack_->start_workers(1, stack_->default_worker_config(), {"--log-level", "debug"});
    stack_->wait_for_workers(1);
  }
  static void TearDownTestSuite() { stack_.reset(); }

  void SetUp() override { ASSERT_TRUE(StackBinaries::from_build().missing().empty()); }

  CliRun chat(std::vector<std::string> extra) {
    std::vector<std::string> argv{stack_->binaries().cli, "chat",   "--broker", stack_->frontend(),
                                  "--provider",           "openai", "--model",  "gpt-4o-mini",
                                  "--max-tokens",         "4",      "--json"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return run_cli(argv, stack_->dir().file("cli-" + std::to_string(++runs_) + ".err"));
  }

  // The fake provider's attempt whose traceparent carries `trace_id`; null when none does.
  static json attempt_for(const std::string& trace_id) {
    for (const json& attempt : stack_->fake_log("gpt-4o-mini")) {
      if (attempt.value("traceparent", "").find(trace_id) != std::string::npos) return attempt;
    }
    return nullptr;
  }

  static inline std::unique_ptr<Stack> stack_;
  int runs_ = 0;
};

TEST_F(TraceCostTest, CliTraceparentReachesTheProviderAndEveryLogLineOfTheJob) {
  const CliRun run = chat({"--traceparent", kTraceparent, "trace this job"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  ASSERT_EQ(run.lines.size(), 1u);
  const json result = json::parse(run.lines[0]);
  const std::string job_id = result["job_id"];

  // The provider got the client's trace with the worker's span as the parent.
  const json attempt = attempt_for(kTraceId);
  ASSERT_FALSE(attempt.is_null()) << stack_->fake_log("gpt-4o-mini").dump();
  const std::string sent = attempt["traceparent"];
  EXPECT_EQ(sent.rfind(std::string("00-") + kTraceId + "-", 0), 0u) << sent;
  EXPECT_EQ(sent.find("-00f067aa0ba902b7-"), std::string::npos) << sent;
  EXPECT_EQ(sent.size(), 55u);

  // Every log line that names the job names the trace: grepping the trace id finds them all.
  // The broker and the worker log as they go; the lines of a finished job are there at once,
  // but a bounded poll keeps a slow flush from failing the test.
  std::vector<std::string> broker_lines;
  std::vector<std::string> worker_lines;
  for (int i = 0; i < 50; ++i) {
    broker_lines = lines_with(read_text_file(stack_->dir().file("broker.log")), job_id);
    worker_lines = lines_with(stack_->worker_log(0), job_id);
    if (broker_lines.size() >= 3 && worker_lines.size() >= 2) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_GE(broker_lines.size(), 3u);  // accepted, delivered, finished
  ASSERT_GE(worker_lines.size(), 2u);  // targets, attempt, answered
  for (const auto* lines : {&broker_lines, &worker_lines}) {
    for (const std::string& line : *lines) {
      EXPECT_NE(line.find(std::string("trace ") + kTraceId), std::string::npos) << line;
    }
  }
}

// A batch run given --traceparent is one trace: every line's job joins it, each with a span
// of its own at the worker.
TEST_F(TraceCostTest, BatchTraceparentPutsEveryJobOfTheRunIntoOneTrace) {
  constexpr const char* kBatchTraceId = "0af7651916cd43dd8448eb211c80319c";
  const std::string input = stack_->dir().file("trace-batch.jsonl");
  std::string lines;
  for (int i = 1; i <= 3; ++i) {
    const json body = {
        {"model", "openai/gpt-4o-mini"},
        {"max_tokens", 4},
        {"messages", {{{"role", "user"}, {"content", "batch trace " + std::to_string(i)}}}}};
    lines += json{{"custom_id", "t" + std::to_string(i)},
                  {"method", "POST"},
                  {"url", "/v1/chat/completions"},
                  {"body", body}}
                 .dump() +
             "\n";
  }
  write_text_file(input, lines);
  const std::string output = stack_->dir().file("trace-batch.out.jsonl");
  const CliRun run =
      run_cli({stack_->binaries().cli, "batch", input, "-o", output, "--broker", stack_->frontend(),
               "--traceparent", std::string("00-") + kBatchTraceId + "-b7ad6b7169203331-01"},
              stack_->dir().file("trace-batch.err"));
  ASSERT_EQ(run.exit_code, 0) << run.err;
  std::vector<std::string> parents;
  for (const json& attempt : stack_->fake_log("gpt-4o-mini")) {
    const std::string sent = attempt.value("traceparent", "");
    if (sent.find(kBatchTraceId) == std::string::npos) continue;
    ASSERT_EQ(sent.size(), 55u) << sent;
    parents.push_back(sent.substr(36, 16));
  }
  ASSERT_EQ(parents.size(), 3u) << stack_->fake_log("gpt-4o-mini").dump();
  std::sort(parents.begin(), parents.end());
  EXPECT_EQ(std::unique(parents.begin(), parents.end()), parents.end()) << "one span per job";
  EXPECT_EQ(std::count(parents.begin(), parents.end(), "b7ad6b7169203331"), 0)
      << "the worker's span, not the client's, is the provider's parent";

  const CliRun bad = run_cli({stack_->binaries().cli, "batch", input, "-o", output + ".2",
                              "--broker", stack_->frontend(), "--traceparent", "not-a-trace"},
                             stack_->dir().file("trace-batch-bad.err"));
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("invalid traceparent"), std::string::npos) << bad.err;
}

TEST_F(TraceCostTest, AJobWithoutATraceparentGetsAFreshTraceEverywhere) {
  const CliRun run = chat({"a job without a trace"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const std::string job_id = json::parse(run.lines.at(0))["job_id"];
  // The broker started the trace: its acceptance line names it.
  std::vector<std::string> accepted;
  for (int i = 0; i < 50 && accepted.empty(); ++i) {
    accepted =
        lines_with(read_text_file(stack_->dir().file("broker.log")), "job " + job_id + " trace ");
    if (accepted.empty()) std::this_thread::sleep_for(100ms);
  }
  ASSERT_FALSE(accepted.empty());
  const std::size_t at = accepted[0].find(" trace ") + 7;
  const std::string trace_id = accepted[0].substr(at, 32);
  ASSERT_EQ(trace_id.find_first_not_of("0123456789abcdef"), std::string::npos) << accepted[0];
  // The provider saw the same trace.
  EXPECT_FALSE(attempt_for(trace_id).is_null()) << trace_id;
  for (const std::string& line : lines_with(stack_->worker_log(0), job_id)) {
    EXPECT_NE(line.find("trace " + trace_id), std::string::npos) << line;
  }
}

TEST_F(TraceCostTest, AnInvalidTraceparentIsAUsageError) {
  for (const std::string bad :
       {"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "not-a-trace"}) {
    const CliRun run = chat({"--traceparent", bad, "never sent"});
    EXPECT_EQ(run.exit_code, 2) << bad;
    EXPECT_NE(run.err.find("invalid traceparent"), std::string::npos) << run.err;
    EXPECT_TRUE(run.lines.empty());
  }
}

// The worker found its shipped price table next to its executable (build/share/...): the
// result carries cost_usd = usage x gpt-4o-mini's price (0.15 / 0.60 USD per million).
TEST_F(TraceCostTest, TheResultCarriesItsCostFromTheShippedTable) {
  const CliRun run = chat({"what does this cost"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const json result = json::parse(run.lines.at(0));
  ASSERT_TRUE(result.contains("cost_usd")) << result.dump();
  const double prompt = result["usage"]["prompt_tokens"];
  const double completion = result["usage"]["completion_tokens"];
  EXPECT_GT(prompt, 0);
  EXPECT_EQ(completion, 4);
  EXPECT_NEAR(result["cost_usd"].get<double>(), (prompt * 0.15 + completion * 0.60) / 1e6, 1e-12);
  EXPECT_NE(stack_->worker_log(0).find("price table "), std::string::npos);
}

}  // namespace
}  // namespace dispatch::test
