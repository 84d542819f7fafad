#include "dispatch/test/child_process.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <thread>
#include <utility>

#include "dispatch/common/fd.hpp"
#include "dispatch/common/strings.hpp"

extern char** environ;

namespace dispatch::test {
namespace {

using Clock = std::chrono::steady_clock;

// How long a stop signal waits for the child to take charge of it (below).
constexpr std::chrono::milliseconds kHandlerWait{3000};

// Whether `pid` blocks, catches or ignores `signal` yet (/proc/PID/status: SigBlk is the main
// thread's mask, SigCgt and SigIgn the process's dispositions). Until it does, the signal's
// default action ends the process: a test that stops a daemon in the first milliseconds after
// exec (before main() blocked SIGTERM for its signalfd, or installed a handler) would see it
// "die of the SIGTERM it was sent", a race of the test's and not a fault of the daemon.
bool takes_charge_of(pid_t pid, int signal) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  const uint64_t bit = uint64_t{1} << (signal - 1);
  uint64_t handled = 0;
  std::string line;
  while (std::getline(status, line)) {
    for (const char* field : {"SigBlk:", "SigCgt:", "SigIgn:"}) {
      if (line.rfind(field, 0) == 0) handled |= std::stoull(line.substr(7), nullptr, 16);
    }
  }
  return (handled & bit) != 0;
}

std::string env_name(const std::string& entry) {
  return entry.substr(0, entry.find('='));
}

std::vector<std::string> build_environment(const ChildOptions& options) {
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string entry(*e);
    const std::string name = env_name(entry);
    const bool unset =
        std::find(options.unset_env.begin(), options.unset_env.end(), name) !=
            options.unset_env.end() ||
        std::any_of(options.extra_env.begin(), options.extra_env.end(),
                    [&](const std::string& extra) { return env_name(extra) == name; });
    if (!unset) env.push_back(std::move(entry));
  }
  env.insert(env.end(), options.extra_env.begin(), options.extra_env.end());
  return env;
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// posix_spawn_file_actions_t with its destroy bound to scope.
class FileActions {
 public:
  FileActions() { posix_spawn_file_actions_init(&actions_); }
  ~FileActions() { posix_spawn_file_actions_destroy(&actions_); }
  FileActions(const FileActions&) = delete;
  FileActions& operator=(const FileActions&) = delete;
  posix_spawn_file_actions_t* get() { return &actions_; }

 private:
  posix_spawn_file_actions_t actions_{};
};

ExitStatus decode(int raw) {
  ExitStatus status;
  if (WIFEXITED(raw)) {
    status.exited = true;
    status.code = WEXITSTATUS(raw);
  } else if (WIFSIGNALED(raw)) {
    status.signaled = true;
    status.signal = WTERMSIG(raw);
  }
  return status;
}

std::string base_name(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// "dispatch-worker --broker tcp://… --config …", clipped: names the child in failure messages.
std::string describe(const std::vector<std::string>& argv) {
  std::string text = base_name(argv[0]);
  for (std::size_t i = 1; i < argv.size(); ++i) text += " " + argv[i];
  return clip_marked(text, 240);
}

// The file the child's stderr goes to, opened for appending (by the parent, so that a bad path is
// a clear error here rather than a failed spawn), and its size before the child writes to it.
struct LogFile {
  UniqueFd fd;
  std::string path;
  std::uintmax_t offset = 0;
  bool owned = false;
};

LogFile open_log(const std::vector<std::string>& argv, const ChildOptions& options) {
  LogFile log;
  if (options.stderr_path) {
    log.path = *options.stderr_path;
    log.fd.reset(::open(log.path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
  } else {
    std::string pattern = (std::filesystem::temp_directory_path() /
                           ("dispatch-child-" + base_name(argv[0]) + "-XXXXXX.log"))
                              .string();
    log.fd.reset(::mkostemps(pattern.data(), 4, O_APPEND | O_CLOEXEC));
    log.path = pattern;
    log.owned = true;
  }
  if (!log.fd.valid()) {
    throw std::runtime_error("cannot open the child's stderr log " + log.path + ": " +
                             std::strerror(errno));
  }
  struct stat info {};
  if (::fstat(log.fd.get(), &info) == 0) log.offset = static_cast<std::uintmax_t>(info.st_size);
  return log;
}

// What this child appended to its log, from `offset` on.
std::ifstream open_log_from(const std::string& path, std::uintmax_t offset) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  return in;
}

}  // namespace

ChildProcess ChildProcess::spawn(const std::vector<std::string>& argv,
                                 const ChildOptions& options) {
  if (argv.empty()) throw std::runtime_error("ChildProcess::spawn: empty argv");
  int pipe_fds[2] = {-1, -1};
  if (options.capture_stdout && pipe2(pipe_fds, O_CLOEXEC) != 0) {
    throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
  }
  LogFile log;
  try {
    log = open_log(argv, options);
  } catch (...) {
    if (options.capture_stdout) {
      close(pipe_fds[0]);
      close(pipe_fds[1]);
    }
    throw;
  }
  FileActions actions;
  if (options.capture_stdout) {
    // dup2 clears FD_CLOEXEC on the child's copy; both pipe ends stay close-on-exec otherwise.
    posix_spawn_file_actions_adddup2(actions.get(), pipe_fds[1], STDOUT_FILENO);
  }
  posix_spawn_file_actions_adddup2(actions.get(), log.fd.get(), STDERR_FILENO);
  std::vector<std::string> args = argv;
  std::vector<std::string> env = build_environment(options);
  std::vector<char*> c_args = c_strings(args);
  std::vector<char*> c_env = c_strings(env);

  pid_t pid = -1;
  const int rc = posix_spawn(&pid, c_args[0], actions.get(), nullptr, c_args.data(), c_env.data());
  if (options.capture_stdout) close(pipe_fds[1]);
  if (rc != 0) {
    if (options.capture_stdout) close(pipe_fds[0]);
    if (log.owned) ::unlink(log.path.c_str());
    throw std::runtime_error("posix_spawn " + argv[0] + ": " + std::strerror(rc));
  }
  ChildProcess child;
  child.pid_ = pid;
  child.stdout_fd_ = options.capture_stdout ? pipe_fds[0] : -1;
  child.command_ = describe(argv);
  child.log_path_ = log.path;
  child.log_offset_ = log.offset;
  child.owns_log_ = log.owned;
  return child;
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      stdout_fd_(std::exchange(other.stdout_fd_, -1)),
      pending_(std::move(other.pending_)),
      status_(std::move(other.status_)),
      command_(std::move(other.command_)),
      log_path_(std::move(other.log_path_)),
      log_offset_(other.log_offset_),
      owns_log_(std::exchange(other.owns_log_, false)),
      facts_(other.facts_),
      checked_(std::exchange(other.checked_, true)) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    stop();
    pid_ = std::exchange(other.pid_, -1);
    stdout_fd_ = std::exchange(other.stdout_fd_, -1);
    pending_ = std::move(other.pending_);
    status_ = std::move(other.status_);
    command_ = std::move(other.command_);
    log_path_ = std::move(other.log_path_);
    log_offset_ = other.log_offset_;
    owns_log_ = std::exchange(other.owns_log_, false);
    facts_ = other.facts_;
    checked_ = std::exchange(other.checked_, true);
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  stop();
}

void ChildProcess::close_stdout() {
  if (stdout_fd_ >= 0) close(stdout_fd_);
  stdout_fd_ = -1;
}

std::optional<std::string> ChildProcess::read_line(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  // Bounded by the deadline: every iteration either returns or polls with the time left.
  for (;;) {
    if (const auto newline = pending_.find('\n'); newline != std::string::npos) {
      std::string line = pending_.substr(0, newline);
      pending_.erase(0, newline + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      return line;
    }
    if (stdout_fd_ < 0) return std::nullopt;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return std::nullopt;
    pollfd pfd{stdout_fd_, POLLIN, 0};
    const int ready = poll(&pfd, 1, static_cast<int>(left));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return std::nullopt;
    char buffer[4096];
    const ssize_t n = read(stdout_fd_, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      close_stdout();
      // A last line without a newline is still a line.
      if (pending_.empty()) return std::nullopt;
      return std::exchange(pending_, std::string());
    }
    pending_.append(buffer, static_cast<size_t>(n));
  }
}

bool ChildProcess::reap(bool block) {
  if (pid_ < 0 || status_) return true;
  int raw = 0;
  for (int attempt = 0; attempt < 100; ++attempt) {
    const pid_t r = waitpid(pid_, &raw, block ? 0 : WNOHANG);
    if (r == pid_) {
      status_ = decode(raw);
      return true;
    }
    if (r == 0) return false;
    if (r < 0 && errno == EINTR) continue;
    // ECHILD: somebody else reaped it; treat as gone.
    status_ = ExitStatus{};
    return true;
  }
  return false;
}

bool ChildProcess::running() {
  return pid_ >= 0 && !reap(false);
}

bool ChildProcess::wait_until_reaped(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  // Polled with a short bounded step: waitpid has no timeout of its own.
  while (!reap(false)) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

std::optional<ExitStatus> ChildProcess::wait_for_exit(std::chrono::milliseconds timeout) {
  if (pid_ < 0 || !wait_until_reaped(timeout)) return std::nullopt;
  facts_.code_observed = true;
  return status_;
}

void ChildProcess::send_signal(int signal) {
  if (pid_ < 0 || status_) return;
  if (signal == SIGKILL) facts_.killed_on_purpose = true;
  if (signal == SIGTERM || signal == SIGINT || signal == SIGHUP) {
    // Bounded: a child that never handles the signal gets it after kHandlerWait all the same.
    const auto deadline = Clock::now() + kHandlerWait;
    while (!takes_charge_of(pid_, signal) && Clock::now() < deadline) {
      if (reap(false)) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  if (signal == SIGTERM || signal == SIGINT) facts_.term_sent = true;
  ::kill(pid_, signal);
}

ExitStatus ChildProcess::kill() {
  if (pid_ < 0) return ExitStatus{};
  send_signal(SIGKILL);
  reap(true);
  close_stdout();
  check_once();
  return status_.value_or(ExitStatus{});
}

void ChildProcess::request_stop() {
  send_signal(SIGTERM);
}

ExitStatus ChildProcess::stop(std::chrono::milliseconds grace) {
  if (pid_ < 0) return ExitStatus{};
  if (!status_) {
    request_stop();
    // A second SIGTERM makes our programs leave a drain that still waits for running jobs:
    // not an unclean stop, a test that left work in flight.
    if (!wait_until_reaped(grace)) {
      if (!status_) ::kill(pid_, SIGTERM);
      if (!wait_until_reaped(grace)) {
        facts_.force_killed = true;
        facts_.grace_ms = static_cast<long>(grace.count());
        ::kill(pid_, SIGKILL);
        reap(true);
      }
    }
  }
  close_stdout();
  check_once();
  return status_.value_or(ExitStatus{});
}

void ChildProcess::check_once() {
  if (checked_ || !status_) return;
  checked_ = true;
  facts_.status = *status_;
  std::vector<std::string> problems = judge_exit(facts_);
  std::ifstream log = open_log_from(log_path_, log_offset_);
  const std::optional<std::string> report = find_sanitizer_report(log);
  if (report) problems.insert(problems.begin(), "wrote a sanitizer report");
  if (problems.empty()) {
    if (::testing::Test::HasFailure()) {
      // The test failed for its own reasons: what the child logged last helps to see why.
      std::ifstream tail = open_log_from(log_path_, log_offset_);
      std::fprintf(stderr, "---- last lines of %s (pid %d), %s ----\n%s", command_.c_str(),
                   static_cast<int>(pid_), log_path_.c_str(), log_tail(tail, 30).c_str());
    }
    if (owns_log_) ::unlink(log_path_.c_str());
    return;
  }
  std::string message = "child process " + command_ + " (pid " + std::to_string(pid_) + "): ";
  for (std::size_t i = 0; i < problems.size(); ++i) message += (i ? "; " : "") + problems[i];
  if (report) {
    message += "\n---- its sanitizer report (" + log_path_ + ") ----\n" + *report;
  } else {
    std::ifstream tail = open_log_from(log_path_, log_offset_);
    message += "\n---- last lines of its stderr (" + log_path_ + ") ----\n" + log_tail(tail, 40);
  }
  ADD_FAILURE() << message;
}

}  // namespace dispatch::test
