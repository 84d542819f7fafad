// The I/O side of `dispatch batch`: the locked output file, the input reader, the bounded
// submission loop and the progress display.

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <ostream>
#include <unordered_map>

#include "dispatch/cli/batch.hpp"
#include "dispatch/cli/exit_codes.hpp"

namespace dispatch::cli {

namespace {

using Steady = std::chrono::steady_clock;

std::string errno_text(int error) {
  return std::strerror(error);
}

// The output file, opened for appending under an exclusive lock held for the whole run.
class OutputFile {
 public:
  OutputFile() = default;
  ~OutputFile() {
    if (fd_ >= 0) ::close(fd_);  // also releases the flock
  }
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;

  enum class OpenResult { ok, locked, failed };

  OpenResult open(const std::string& path, std::string& error) {
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      error = "cannot open " + path + ": " + errno_text(errno);
      return OpenResult::failed;
    }
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int lock_error = errno;
      if (lock_error == EWOULDBLOCK) {
        error = path + " is locked by another `dispatch batch` run; wait for it to finish";
        return OpenResult::locked;
      }
      error = "cannot lock " + path + ": " + errno_text(lock_error);
      return OpenResult::failed;
    }
    return OpenResult::ok;
  }

  // Reads what is there, and cuts away a torn last line left by a killed run.
  bool scan(ResumeState& state, std::string& error) {
    struct stat info {};
    if (::fstat(fd_, &info) != 0) {
      error = "cannot stat output: " + errno_text(errno);
      return false;
    }
    std::string text(static_cast<std::size_t>(info.st_size), '\0');
    std::size_t have = 0;
    while (have < text.size()) {
      const auto got =
          ::pread(fd_, text.data() + have, text.size() - have, static_cast<off_t>(have));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) {
        error = "cannot read output: " + errno_text(errno);
        return false;
      }
      have += static_cast<std::size_t>(got);
    }
    state = scan_output_text(text);
    if (state.torn_tail && ::ftruncate(fd_, static_cast<off_t>(state.valid_bytes)) != 0) {
      error = "cannot truncate the torn last line of the output: " + errno_text(errno);
      return false;
    }
    return true;
  }

  // One write() per line (O_APPEND), so a kill leaves whole lines plus at most one torn tail,
  // which the next run's scan removes.
  bool append(const std::string& line, std::string& error) {
    std::size_t written = 0;
    while (written < line.size()) {
      const auto n = ::write(fd_, line.data() + written, line.size() - written);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        error = "cannot write output: " + errno_text(errno);
        return false;
      }
      written += static_cast<std::size_t>(n);
    }
    dirty_ = true;
    return true;
  }

  void sync() {
    if (dirty_ && fd_ >= 0) {
      ::fdatasync(fd_);
      dirty_ = false;
    }
  }

 private:
  int fd_ = -1;
  bool dirty_ = false;
};

// Progress on stderr: a redrawn bar on a terminal, throttled plain lines otherwise.
class Progress {
 public:
  Progress(std::ostream& err, bool tty, std::chrono::milliseconds interval)
      : err_(err), tty_(tty), interval_(interval) {}

  void message(const std::string& text) {
    if (tty_ && bar_shown_) err_ << "\r\x1b[K";
    err_ << text << "\n";
    bar_shown_ = false;
    err_.flush();
  }

  void update(const BatchCounters& counters, bool force = false) {
    const auto now = Steady::now();
    if (!force && now - last_ < interval_) return;
    last_ = now;
    err_ << format_progress(counters, tty_);
    bar_shown_ = tty_;
    err_.flush();
  }

  void finish(const BatchCounters& counters) {
    update(counters, true);
    if (tty_) err_ << "\n";
    bar_shown_ = false;
  }

 private:
  std::ostream& err_;
  bool tty_;
  std::chrono::milliseconds interval_;
  Steady::time_point last_{};
  bool bar_shown_ = false;
};

std::size_t count_nonblank_lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::size_t count = 0;
  std::string line;
  while (std::getline(in, line)) {
    if (line.find_first_not_of(" \t\r") != std::string::npos) ++count;
  }
  return count;
}

struct Completion {
  std::size_t line_number;
  DispatchOutcome outcome;
};

// A submitted line, kept until its answer is written so that a transient refusal (the
// broker's queue is full) can be sent again.
struct InFlightLine {
  BatchItem item;
  uint32_t queue_full_retries = 0;
  Steady::time_point retry_at{};
};

// The broker's queue bound is back-pressure, not an answer: wait and send the line again,
// doubling the wait up to 20 times the base.
std::chrono::milliseconds queue_full_backoff(std::chrono::milliseconds base, uint32_t retries) {
  return std::min(base * (int64_t{1} << std::min<uint32_t>(retries, 5)), base * 20);
}

bool is_local_failure(const DispatchError& error) {
  // Failures that say nothing about the line itself: the job never got a real answer. They
  // are left out of the output so that a rerun retries them.
  return error.code() == client_code::broker_unreachable ||
         error.code() == client_code::client_deadline ||
         error.code() == client_code::client_shutdown;
}

}  // namespace

int run_batch(const BatchOptions& options, std::ostream& err, bool err_is_tty) {
  const auto started = Steady::now();
  if (options.concurrency == 0) {
    err << "error: --concurrency must be at least 1\n";
    return exit_code::usage;
  }
  std::ifstream input(options.input_path, std::ios::binary);
  if (!input) {
    err << "error: cannot read " << options.input_path << ": " << errno_text(errno) << "\n";
    return exit_code::usage;
  }
  OutputFile output;
  std::string error;
  switch (output.open(options.output_path, error)) {
    case OutputFile::OpenResult::ok:
      break;
    case OutputFile::OpenResult::locked:
      err << "error: " << error << "\n";
      return exit_code::output_locked;
    case OutputFile::OpenResult::failed:
      err << "error: " << error << "\n";
      return exit_code::usage;
  }
  ResumeState resume;
  if (!output.scan(resume, error)) {
    err << "error: " << error << "\n";
    return exit_code::failed;
  }

  Progress progress(err, err_is_tty,
                    err_is_tty ? options.tty_progress_interval : options.plain_progress_interval);
  if (resume.torn_tail) progress.message("note: removed a torn last line from the output");
  if (resume.unreadable_lines != 0) {
    progress.message(fmt::format("warning: {} unreadable line(s) in the output are kept as is",
                                 resume.unreadable_lines));
  }
  if (!resume.done.empty()) {
    progress.message(fmt::format("resuming: {} custom_id(s) already in {}", resume.done.size(),
                                 options.output_path));
  }

  BatchCounters counters;
  counters.total = count_nonblank_lines(options.input_path);

  std::mutex mutex;
  std::condition_variable completed;
  std::deque<Completion> completions;
  bool aborted = false;
  bool broker_unreachable = false;
  bool write_failed = false;
  auto last_sync = Steady::now();

  Client client(options.client);

  std::unordered_map<std::size_t, InFlightLine> in_flight;  // by input line number
  std::vector<std::size_t> retry_queue;                     // lines waiting to be resent

  auto submit = [&](const InFlightLine& line) {
    DispatchRequest request(line.item.request);
    request.with_priority(options.priority);
    client.dispatch_async(request, [&, number = line.item.line_number](DispatchOutcome outcome) {
      {
        std::lock_guard lock(mutex);
        completions.push_back(Completion{number, std::move(outcome)});
      }
      completed.notify_one();
    });
  };

  auto handle = [&](Completion& done) {
    auto found = in_flight.find(done.line_number);
    if (found == in_flight.end()) return;
    InFlightLine& line = found->second;
    if (!done.outcome.ok() && done.outcome.error->kind() == ErrorKind::queue_full && !aborted &&
        line.queue_full_retries < options.max_queue_full_retries) {
      line.retry_at =
          Steady::now() + queue_full_backoff(options.queue_full_backoff, line.queue_full_retries++);
      retry_queue.push_back(done.line_number);
      return;  // still holds its concurrency slot, which slows the feed down too
    }
    const std::string custom_id = std::move(line.item.custom_id);
    in_flight.erase(found);
    --counters.in_flight;
    if (done.outcome.ok()) {
      const auto& response = *done.outcome.response;
      if (!output.append(format_success_line(done.line_number, custom_id, response), error)) {
        write_failed = true;
        return;
      }
      ++counters.succeeded;
      counters.prompt_tokens += response.usage.prompt_tokens;
      counters.completion_tokens += response.usage.completion_tokens;
      return;
    }
    const auto& failure = *done.outcome.error;
    if (is_local_failure(failure) || failure.kind() == ErrorKind::queue_full) {
      ++counters.incomplete;
      if (failure.code() == client_code::broker_unreachable) broker_unreachable = true;
      if (!aborted && failure.code() == client_code::broker_unreachable) {
        progress.message("error: " + std::string(failure.what()) +
                         "; stopping (rerun the same command to resume)");
        aborted = true;
      }
      return;
    }
    if (!output.append(format_error_line(done.line_number, custom_id, failure, done.outcome.job_id),
                       error)) {
      write_failed = true;
      return;
    }
    ++counters.failed;
  };

  auto resend_due = [&] {
    const auto now = Steady::now();
    for (auto it = retry_queue.begin(); it != retry_queue.end();) {
      auto line = in_flight.find(*it);
      if (line == in_flight.end()) {
        it = retry_queue.erase(it);
      } else if (aborted) {
        // Not resent: counted as incomplete so that a rerun picks it up.
        in_flight.erase(line);
        --counters.in_flight;
        ++counters.incomplete;
        it = retry_queue.erase(it);
      } else if (now >= line->second.retry_at) {
        submit(line->second);
        it = retry_queue.erase(it);
      } else {
        ++it;
      }
    }
  };

  // Handles finished jobs; waits up to `wait` for one when none is ready.
  auto drain = [&](std::chrono::milliseconds wait) {
    std::deque<Completion> ready;
    {
      std::unique_lock lock(mutex);
      if (completions.empty() && wait.count() > 0) {
        completed.wait_for(lock, wait, [&] { return !completions.empty(); });
      }
      ready.swap(completions);
    }
    for (auto& done : ready) handle(done);
    if (write_failed && !aborted) {
      progress.message("error: " + error + "; stopping");
      aborted = true;
    }
    resend_due();
    counters.elapsed_seconds = std::chrono::duration<double>(Steady::now() - started).count();
    progress.update(counters);
    if (Steady::now() - last_sync >= options.fsync_interval) {
      output.sync();
      last_sync = Steady::now();
    }
  };

  std::unordered_map<std::string, std::size_t> seen;  // custom_id -> first line number
  std::string line;
  std::size_t line_number = 0;
  while (!aborted && std::getline(input, line)) {
    ++line_number;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    auto parsed = parse_batch_line(line, line_number);
    if (auto* bad = std::get_if<LineProblem>(&parsed)) {
      ++counters.invalid;
      progress.message(fmt::format("line {}: {}", line_number, bad->reason));
      continue;
    }
    auto& item = std::get<BatchItem>(parsed);
    auto [first, inserted] = seen.emplace(item.custom_id, line_number);
    if (!inserted) {
      ++counters.invalid;
      progress.message(fmt::format("line {}: duplicate custom_id '{}' (first on line {})",
                                   line_number, item.custom_id, first->second));
      continue;
    }
    if (resume.done.count(item.custom_id) != 0) {
      ++counters.skipped;
      continue;
    }
    while (counters.in_flight >= options.concurrency && !aborted) {
      drain(std::chrono::milliseconds(100));
    }
    if (aborted) break;
    ++counters.in_flight;
    const auto number = item.line_number;
    auto& line_state = in_flight[number];
    line_state.item = std::move(item);
    submit(line_state);
    drain(std::chrono::milliseconds(0));
  }
  // Every job ends by its client-side deadline and queue_full resends are bounded, so this
  // loop ends.
  while (counters.in_flight > 0) drain(std::chrono::milliseconds(100));
  output.sync();

  counters.elapsed_seconds = std::chrono::duration<double>(Steady::now() - started).count();
  // Lines never submitted because the run stopped early are incomplete too.
  if (counters.finished() < counters.total)
    counters.incomplete += counters.total - counters.finished();
  progress.finish(counters);
  err << format_summary(counters);
  err.flush();
  if (write_failed) return exit_code::failed;
  if (broker_unreachable) return exit_code::broker_unreachable;
  if (counters.incomplete != 0) {
    err << counters.incomplete << " line(s) not completed; rerun the same command to resume\n";
    return exit_code::failed;
  }
  return exit_code::ok;
}

}  // namespace dispatch::cli
