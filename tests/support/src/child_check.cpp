#include "dispatch/test/child_check.hpp"

#include <signal.h>

#include <deque>
#include <regex>
#include <string_view>

#include "dispatch/common/strings.hpp"

namespace dispatch::test {
namespace {

// A log line longer than this is clipped in failure messages (a provider body logged whole would
// otherwise drown the report).
constexpr std::size_t kMaxLineBytes = 400;

bool is_sanitizer_marker(const std::string& line) {
  static constexpr std::string_view kMarkers[] = {
      "ERROR: AddressSanitizer",
      "ERROR: LeakSanitizer",
      "ERROR: ThreadSanitizer",
      "WARNING: ThreadSanitizer",
      "ERROR: MemorySanitizer",
      "WARNING: MemorySanitizer",
      "ERROR: UndefinedBehaviorSanitizer",
      "AddressSanitizer:DEADLYSIGNAL",
      "AddressSanitizer CHECK failed",
      "SUMMARY: AddressSanitizer",
      "SUMMARY: UndefinedBehaviorSanitizer",
      // LSan could not run (e.g. under ptrace): the leak check silently did not happen.
      "LeakSanitizer has encountered a fatal error",
  };
  for (std::string_view marker : kMarkers) {
    if (line.find(marker) != std::string::npos) return true;
  }
  // UBSan: "path/file.cpp:12:34: runtime error: signed integer overflow …" (or "<unknown>:" when
  // built without debug info). The location prefix keeps an application log line that merely
  // quotes "runtime error" (a provider's error text) from counting.
  static const std::regex kUbsan(R"((:[0-9]+:[0-9]+|<unknown>): runtime error: )");
  return line.find("runtime error: ") != std::string::npos && std::regex_search(line, kUbsan);
}

}  // namespace

std::string signal_name(int signal) {
  switch (signal) {
    case SIGABRT:
      return "SIGABRT";
    case SIGBUS:
      return "SIGBUS";
    case SIGFPE:
      return "SIGFPE";
    case SIGILL:
      return "SIGILL";
    case SIGINT:
      return "SIGINT";
    case SIGKILL:
      return "SIGKILL";
    case SIGPIPE:
      return "SIGPIPE";
    case SIGSEGV:
      return "SIGSEGV";
    case SIGTERM:
      return "SIGTERM";
    case SIGTRAP:
      return "SIGTRAP";
    default:
      return "signal " + std::to_string(signal);
  }
}

std::vector<std::string> judge_exit(const ExitFacts& facts) {
  std::vector<std::string> problems;
  const ExitStatus& status = facts.status;
  if (facts.force_killed) {
    problems.push_back("did not exit within " + std::to_string(facts.grace_ms) +
                       " ms of SIGTERM, nor of a second SIGTERM; killed with SIGKILL");
  } else if (status.signaled) {
    if (status.signal == SIGKILL && facts.killed_on_purpose) {
      // kill -9 on purpose: how it ended says nothing about the program.
    } else if (status.signal == SIGTERM && facts.term_sent) {
      problems.push_back("died of the SIGTERM it was sent instead of stopping cleanly with exit 0");
    } else {
      problems.push_back("crashed: killed by " + signal_name(status.signal));
    }
  } else if (status.exited && status.code != 0 && !facts.code_observed &&
             !facts.killed_on_purpose) {
    if (facts.term_sent) {
      problems.push_back("exited " + std::to_string(status.code) +
                         " after SIGTERM (a clean stop exits 0)");
    } else {
      problems.push_back("exited " + std::to_string(status.code) +
                         " on its own, and the test did not read the code (wait_for_exit)");
    }
  }
  return problems;
}

std::optional<std::string> find_sanitizer_report(std::istream& log, std::size_t max_lines) {
  std::string line;
  while (std::getline(log, line)) {
    if (!is_sanitizer_marker(line)) continue;
    std::string report = clip_marked(line, kMaxLineBytes) + "\n";
    for (std::size_t n = 1; n < max_lines && std::getline(log, line); ++n) {
      report += clip_marked(line, kMaxLineBytes) + "\n";
    }
    return report;
  }
  return std::nullopt;
}

std::string log_tail(std::istream& log, std::size_t max_lines) {
  std::deque<std::string> last;
  std::string line;
  while (std::getline(log, line)) {
    last.push_back(clip_marked(line, kMaxLineBytes));
    if (last.size() > max_lines) last.pop_front();
  }
  std::string out;
  for (const auto& kept : last) out += kept + "\n";
  return out;
}

}  // namespace dispatch::test
