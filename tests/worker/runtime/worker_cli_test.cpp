// dispatch-worker's command line: usage errors exit 2 with a message, like `dispatch`.

#include <gtest/gtest.h>

#include "dispatch/test/child_process.hpp"
#include "dispatch/test/stack.hpp"

namespace dispatch::worker {
namespace {

using dispatch::test::ChildOptions;
using dispatch::test::ChildProcess;
using namespace std::chrono_literals;

struct Outcome {
  int code = -1;
  std::string stderr_text;
};

Outcome run_worker(std::vector<std::string> args) {
  dispatch::test::TempDir dir;
  ChildOptions options;
  options.stderr_path = dir.file("stderr");
  options.capture_stdout = false;
  args.insert(args.begin(), WORKER_BINARY);
  ChildProcess child = ChildProcess::spawn(args, options);
  const auto status = child.wait_for_exit(10s);
  Outcome outcome;
  if (status && status->exited) outcome.code = status->code;
  outcome.stderr_text = dispatch::test::read_text_file(dir.file("stderr"));
  return outcome;
}

TEST(WorkerCommandLine, AnUnknownLogLevelIsAUsageError) {
  const Outcome outcome = run_worker({"--log-level", "loud"});
  EXPECT_EQ(outcome.code, 2);
  EXPECT_NE(outcome.stderr_text.find("--log-level"), std::string::npos) << outcome.stderr_text;
}

TEST(WorkerCommandLine, TheDrainTimeoutIsRangeChecked) {
  for (const char* value : {"0", "-5", "3600001", "99999999999", "soon"}) {
    const Outcome outcome = run_worker({"--drain-timeout-ms", value});
    EXPECT_EQ(outcome.code, 2) << value;
    EXPECT_NE(outcome.stderr_text.find("--drain-timeout-ms"), std::string::npos)
        << value << ": " << outcome.stderr_text;
  }
}

}  // namespace
}  // namespace dispatch::worker
