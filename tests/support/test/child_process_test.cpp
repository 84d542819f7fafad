// The end-of-life check of ChildProcess: a child's sanitizer report, crash or unclean exit fails
// the running test. Proven with misbehaving_child, a helper that goes wrong on request; the
// failures the check reports are intercepted (gtest-spi) and examined instead of failing here.

#include "dispatch/test/child_process.hpp"

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dispatch/test/child_check.hpp"

namespace dispatch::test {
namespace {

using namespace std::chrono_literals;

// The failure messages `body` adds to the running test, which are kept from failing it.
std::vector<std::string> failures_of(const std::function<void()>& body) {
  ::testing::TestPartResultArray results;
  {
    ::testing::ScopedFakeTestPartResultReporter intercept(
        ::testing::ScopedFakeTestPartResultReporter::INTERCEPT_ONLY_CURRENT_THREAD, &results);
    body();
  }
  std::vector<std::string> messages;
  for (int i = 0; i < results.size(); ++i)
    messages.push_back(results.GetTestPartResult(i).message());
  return messages;
}

ChildProcess start(const std::string& mode, const ChildOptions& options = {}) {
  ChildProcess child = ChildProcess::spawn({MISBEHAVING_CHILD_BINARY, mode}, options);
  return child;
}

// Servers print "ready" once their SIGTERM handler is in place.
ChildProcess start_server(const std::string& mode, const ChildOptions& options = {}) {
  ChildProcess child = start(mode, options);
  EXPECT_EQ(child.read_line(10s), "ready") << mode;
  return child;
}

bool exists(const std::string& path) {
  return std::filesystem::exists(path);
}

TEST(ChildCheck, CleanStopPasses) {
  std::string log;
  ExitStatus status;
  const auto failures = failures_of([&] {
    ChildProcess child = start_server("serve");
    log = child.log_path();
    status = child.stop();
  });
  EXPECT_TRUE(failures.empty()) << failures.front();
  EXPECT_TRUE(status.success());
  EXPECT_FALSE(exists(log)) << "a passing child's own log is removed";
}

TEST(ChildCheck, DestructorChecksToo) {
  EXPECT_NONFATAL_FAILURE({ ChildProcess child = start_server("serve-exit-3"); },
                          "exited 3 after SIGTERM");
}

TEST(ChildCheck, NonZeroExitAfterSigtermFails) {
  std::string log;
  const auto failures = failures_of([&] {
    ChildProcess child = start_server("serve-exit-3");
    log = child.log_path();
    EXPECT_EQ(child.stop().code, 3);
  });
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_NE(failures[0].find("misbehaving_child serve-exit-3"), std::string::npos) << failures[0];
  EXPECT_NE(failures[0].find("exited 3 after SIGTERM"), std::string::npos) << failures[0];
  // The log's last lines are in the message, and the log is kept for a closer look.
  EXPECT_NE(failures[0].find("SIGTERM, exiting 3"), std::string::npos) << failures[0];
  EXPECT_TRUE(exists(log));
  std::filesystem::remove(log);
}

TEST(ChildCheck, ChildThatMustBeKilledFails) {
  const auto failures = failures_of([] {
    ChildProcess child = start_server("ignore-term");
    const ExitStatus status = child.stop(200ms);
    EXPECT_TRUE(status.signaled);
    EXPECT_EQ(status.signal, SIGKILL);
  });
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_NE(failures[0].find("did not exit within 200 ms of SIGTERM"), std::string::npos)
      << failures[0];
}

// A test may stop a daemon before it is ready (a short test, a loaded machine): the stop waits
// until the child blocks or catches SIGTERM, rather than killing it by the signal's default
// action and blaming it (SecureStackTest failed so, once in 10 runs, beside a compile).
TEST(ChildCheck, AStopBeforeTheHandlerIsInPlaceWaitsForIt) {
  ExitStatus status;
  const auto failures = failures_of([&] {
    ChildProcess child = start("slow-start");
    EXPECT_EQ(child.read_line(10s), "started");
    status = child.stop();
  });
  EXPECT_TRUE(failures.empty()) << failures.front();
  EXPECT_TRUE(status.success()) << "exited " << status.code << ", signal " << status.signal;
}

TEST(ChildCheck, DyingOfSigtermIsNoCleanStop) {
  const auto failures = failures_of([] { start_server("no-handler").stop(); });
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_NE(failures[0].find("died of the SIGTERM"), std::string::npos) << failures[0];
}

TEST(ChildCheck, UnreadNonZeroExitFails) {
  const auto failures = failures_of([] {
    ChildProcess child = start("exit-1");
    // Exits at once; running() reaps it but does not hand the code to the test.
    while (child.running()) std::this_thread::sleep_for(5ms);
  });
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_NE(failures[0].find("exited 1 on its own"), std::string::npos) << failures[0];
}

TEST(ChildCheck, ExitCodeTheTestReadIsTheTestsBusiness) {
  const auto failures = failures_of([] {
    ChildProcess child = start("exit-2");
    const auto status = child.wait_for_exit(10s);
    ASSERT_TRUE(status);
    EXPECT_EQ(status->code, 2);
  });
  EXPECT_TRUE(failures.empty()) << failures.front();
}

TEST(ChildCheck, CrashFailsEvenWhenTheTestReadTheStatus) {
  for (const std::string mode : {"abort", "segv"}) {
    const auto failures = failures_of([&] {
      ChildProcess child = start(mode);
      ASSERT_TRUE(child.wait_for_exit(10s));
    });
    ASSERT_EQ(failures.size(), 1u) << mode;
    EXPECT_NE(failures[0].find("crashed: killed by SIG"), std::string::npos) << failures[0];
  }
}

TEST(ChildCheck, KillOnPurposeIsExempt) {
  const auto failures = failures_of([] {
    ChildProcess child = start_server("serve");
    child.send_signal(SIGKILL);
    ASSERT_TRUE(child.wait_for_exit(10s));
  });
  EXPECT_TRUE(failures.empty()) << failures.front();
}

TEST(ChildCheck, KillSaysSo) {
  const auto failures = failures_of([] {
    ChildProcess child = start_server("no-handler");
    const ExitStatus status = child.kill();
    EXPECT_TRUE(status.signaled);
    EXPECT_EQ(status.signal, SIGKILL);
  });
  EXPECT_TRUE(failures.empty()) << failures.front();
}

TEST(ChildCheck, SanitizerReportFailsEvenAfterACleanStopOrAKill) {
  for (const bool kill : {false, true}) {
    const auto failures = failures_of([&] {
      ChildProcess child = start_server("fake-report");
      if (kill) child.send_signal(SIGKILL);
      child.stop();
    });
    ASSERT_EQ(failures.size(), 1u) << "kill " << kill;
    EXPECT_NE(failures[0].find("wrote a sanitizer report"), std::string::npos) << failures[0];
    EXPECT_NE(failures[0].find("ERROR: AddressSanitizer: heap-use-after-free"), std::string::npos)
        << failures[0];
  }
}

TEST(ChildCheck, OnlyWhatThisChildAppendedToAGivenLogCounts) {
  const std::string path =
      testing::TempDir() + "child-check-shared-" + std::to_string(::getpid()) + ".log";
  {
    std::ofstream earlier(path, std::ios::trunc);
    earlier << "==1==ERROR: AddressSanitizer: from a process that ran before\n";
  }
  ChildOptions options;
  options.stderr_path = path;
  const auto failures = failures_of([&] { start_server("serve", options).stop(); });
  EXPECT_TRUE(failures.empty()) << failures.front();
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_NE(text.str().find("misbehaving_child: mode serve"), std::string::npos)
      << "the child's stderr went to the given file";
  EXPECT_TRUE(exists(path)) << "a log the test named is the test's";
  std::filesystem::remove(path);
}

TEST(ChildCheck, MovedFromChildIsNotCheckedTwice) {
  const auto failures = failures_of([] {
    std::vector<ChildProcess> children;
    children.push_back(start_server("serve-exit-3"));
    ChildProcess other = std::move(children.front());
    other.request_stop();
    EXPECT_EQ(other.stop().code, 3);
    children.clear();
  });
  EXPECT_EQ(failures.size(), 1u);
}

// Real sanitizer reports: only a sanitizer build of misbehaving_child writes them.
TEST(ChildCheck, RealLeakAtExitFails) {
#ifndef DISPATCH_SANITIZED
  GTEST_SKIP() << "needs the sanitizer build (DISPATCH_SANITIZE=ON)";
#else
  const auto failures = failures_of([] {
    ChildProcess child = start("leak");
    EXPECT_TRUE(child.wait_for_exit(30s));
  });
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_NE(failures[0].find("ERROR: LeakSanitizer: detected memory leaks"), std::string::npos)
      << failures[0];
#endif
}

TEST(ChildCheck, RealUndefinedBehaviourFails) {
#ifndef DISPATCH_SANITIZED
  GTEST_SKIP() << "needs the sanitizer build (DISPATCH_SANITIZE=ON)";
#else
  const auto failures = failures_of([] {
    ChildProcess child = start("ub");
    EXPECT_TRUE(child.wait_for_exit(30s));
  });
  ASSERT_EQ(failures.size(), 1u);
  EXPECT_NE(failures[0].find("runtime error: signed integer overflow"), std::string::npos)
      << failures[0];
#endif
}

// ---- the rules on their own ----

TEST(ChildCheckRules, JudgeExit) {
  ExitFacts facts;
  facts.status.exited = true;
  facts.status.code = 0;
  EXPECT_TRUE(judge_exit(facts).empty());

  facts.status.code = 4;
  EXPECT_EQ(judge_exit(facts).size(), 1u);
  facts.code_observed = true;
  EXPECT_TRUE(judge_exit(facts).empty());
  facts.term_sent = true;
  EXPECT_TRUE(judge_exit(facts).empty()) << "the test read the code itself";

  ExitFacts killed;
  killed.status.signaled = true;
  killed.status.signal = SIGKILL;
  EXPECT_EQ(judge_exit(killed).size(), 1u) << "a SIGKILL nobody sent: e.g. the OOM killer";
  killed.killed_on_purpose = true;
  EXPECT_TRUE(judge_exit(killed).empty());
  killed.status.signal = SIGSEGV;
  EXPECT_EQ(judge_exit(killed).size(), 1u) << "it crashed before the kill";

  ExitFacts forced;
  forced.force_killed = true;
  forced.grace_ms = 50;
  forced.status.signaled = true;
  forced.status.signal = SIGKILL;
  ASSERT_EQ(judge_exit(forced).size(), 1u);
  EXPECT_NE(judge_exit(forced)[0].find("50 ms"), std::string::npos);
}

TEST(ChildCheckRules, SanitizerMarkers) {
  const auto found = [](const std::string& text) {
    std::istringstream in(text);
    return find_sanitizer_report(in, 3);
  };
  EXPECT_FALSE(found("[info] worker serving\n[warning] provider said: runtime error: boom\n"));
  EXPECT_FALSE(found(""));
  const auto ubsan = found("x\nsrc/a.cpp:12:5: runtime error: load of misaligned address\n#0 a\n");
  ASSERT_TRUE(ubsan);
  EXPECT_EQ(*ubsan, "src/a.cpp:12:5: runtime error: load of misaligned address\n#0 a\n");
  EXPECT_TRUE(found("==7==ERROR: LeakSanitizer: detected memory leaks\n"));
  EXPECT_TRUE(found("==7==ERROR: AddressSanitizer: SEGV on unknown address\n"));
  EXPECT_TRUE(found("==7==LeakSanitizer has encountered a fatal error.\n"));
  EXPECT_TRUE(found("WARNING: ThreadSanitizer: data race (pid=1)\n"));
  const auto clipped = found("==7==ERROR: AddressSanitizer: x\n1\n2\n3\n4\n");
  ASSERT_TRUE(clipped);
  EXPECT_EQ(*clipped, "==7==ERROR: AddressSanitizer: x\n1\n2\n") << "at most max_lines";
}

TEST(ChildCheckRules, LogTail) {
  std::istringstream in("a\nb\nc\n" + std::string(1000, 'x') + "\n");
  const std::string tail = log_tail(in, 2);
  EXPECT_EQ(tail.rfind("c\n", 0), 0u) << tail;
  EXPECT_LT(tail.size(), 500u) << "long lines are clipped";
}

}  // namespace
}  // namespace dispatch::test
