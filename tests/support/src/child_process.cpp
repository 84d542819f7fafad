#include "dispatch/test/child_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <utility>

extern char** environ;

namespace dispatch::test {
namespace {

using Clock = std::chrono::steady_clock;

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

}  // namespace

ChildProcess ChildProcess::spawn(const std::vector<std::string>& argv,
                                 const ChildOptions& options) {
  if (argv.empty()) throw std::runtime_error("ChildProcess::spawn: empty argv");
  int pipe_fds[2] = {-1, -1};
  if (options.capture_stdout && pipe2(pipe_fds, O_CLOEXEC) != 0) {
    throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
  }
  FileActions actions;
  if (options.capture_stdout) {
    // dup2 clears FD_CLOEXEC on the child's copy; both pipe ends stay close-on-exec otherwise.
    posix_spawn_file_actions_adddup2(actions.get(), pipe_fds[1], STDOUT_FILENO);
  }
  if (options.stderr_path) {
    posix_spawn_file_actions_addopen(actions.get(), STDERR_FILENO, options.stderr_path->c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
  }
  std::vector<std::string> args = argv;
  std::vector<std::string> env = build_environment(options);
  std::vector<char*> c_args = c_strings(args);
  std::vector<char*> c_env = c_strings(env);

  pid_t pid = -1;
  const int rc = posix_spawn(&pid, c_args[0], actions.get(), nullptr, c_args.data(), c_env.data());
  if (options.capture_stdout) close(pipe_fds[1]);
  if (rc != 0) {
    if (options.capture_stdout) close(pipe_fds[0]);
    throw std::runtime_error("posix_spawn " + argv[0] + ": " + std::strerror(rc));
  }
  return ChildProcess(pid, options.capture_stdout ? pipe_fds[0] : -1);
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      stdout_fd_(std::exchange(other.stdout_fd_, -1)),
      pending_(std::move(other.pending_)),
      status_(std::move(other.status_)) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    stop();
    pid_ = std::exchange(other.pid_, -1);
    stdout_fd_ = std::exchange(other.stdout_fd_, -1);
    pending_ = std::move(other.pending_);
    status_ = std::move(other.status_);
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

std::optional<ExitStatus> ChildProcess::wait_for_exit(std::chrono::milliseconds timeout) {
  if (pid_ < 0) return std::nullopt;
  const auto deadline = Clock::now() + timeout;
  // Polled with a short bounded step: waitpid has no timeout of its own.
  while (!reap(false)) {
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return status_;
}

void ChildProcess::send_signal(int signal) {
  if (pid_ >= 0 && !status_) kill(pid_, signal);
}

ExitStatus ChildProcess::stop(std::chrono::milliseconds grace) {
  if (pid_ < 0) return ExitStatus{};
  if (!status_) {
    send_signal(SIGTERM);
    if (!wait_for_exit(grace)) {
      send_signal(SIGKILL);
      reap(true);
    }
  }
  close_stdout();
  return status_.value_or(ExitStatus{});
}

}  // namespace dispatch::test
