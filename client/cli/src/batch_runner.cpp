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
#include <optional>
#include <ostream>
#include <unordered_map>

#include "dispatch/cli/batch.hpp"
#include "dispatch/cli/exit_codes.hpp"
#include "dispatch/common/fd.hpp"
#include "dispatch/common/result.hpp"
#include "dispatch/common/strings.hpp"

namespace dispatch::cli {

namespace {

using Steady = std::chrono::steady_clock;
using std::chrono::milliseconds;

std::string errno_text(int error) {
  return std::strerror(error);
}

bool is_blank(std::string_view line) {
  return trim(line).empty();
}

// The output file, opened for appending under an exclusive lock held for the whole run.
class OutputFile {
 public:
  struct OpenError {
    bool locked = false;  // another run holds the file (its own exit code)
    std::string message;
  };

  static Result<OutputFile, OpenError> open(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
    if (!fd) return OpenError{false, "cannot open " + path + ": " + errno_text(errno)};
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      const int lock_error = errno;
      if (lock_error == EWOULDBLOCK) {
        return OpenError{
            true, path + " is locked by another `dispatch batch` run; wait for it to finish"};
      }
      return OpenError{false, "cannot lock " + path + ": " + errno_text(lock_error)};
    }
    return OutputFile(std::move(fd));
  }

  // Reads what is there, and cuts away a torn last line left by a killed run.
  Result<ResumeState, std::string> scan() {
    auto text = read_all();
    if (!text) return std::move(text).error();
    ResumeState state = scan_output_text(*text);
    if (state.torn_tail && ::ftruncate(fd_.get(), static_cast<off_t>(state.valid_bytes)) != 0) {
      return "cannot truncate the torn last line of the output: " + errno_text(errno);
    }
    return state;
  }

  // One write() per line (O_APPEND), so a kill leaves whole lines plus at most one torn tail,
  // which the next run's scan removes.
  Result<void, std::string> append(std::string_view line) {
    std::size_t written = 0;
    while (written < line.size()) {
      const auto n = ::write(fd_.get(), line.data() + written, line.size() - written);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return "cannot write output: " + errno_text(errno);
      written += static_cast<std::size_t>(n);
    }
    dirty_ = true;
    return {};
  }

  void sync() {
    if (dirty_) {
      ::fdatasync(fd_.get());
      dirty_ = false;
    }
  }

 private:
  explicit OutputFile(UniqueFd fd) : fd_(std::move(fd)) {}

  Result<std::string, std::string> read_all() const {
    struct stat info {};
    if (::fstat(fd_.get(), &info) != 0) return fail("cannot stat output: " + errno_text(errno));
    std::string text(static_cast<std::size_t>(info.st_size), '\0');
    std::size_t have = 0;
    while (have < text.size()) {
      const auto got =
          ::pread(fd_.get(), text.data() + have, text.size() - have, static_cast<off_t>(have));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return fail("cannot read output: " + errno_text(errno));
      have += static_cast<std::size_t>(got);
    }
    return text;
  }

  UniqueFd fd_;  // closing it also releases the flock
  bool dirty_ = false;
};

// Progress on stderr: a redrawn bar on a terminal, throttled plain lines otherwise.
class Progress {
 public:
  Progress(std::ostream& err, bool tty, milliseconds interval)
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
  milliseconds interval_;
  Steady::time_point last_{};
  bool bar_shown_ = false;
};

std::size_t count_nonblank_lines(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::size_t count = 0;
  std::string line;
  while (std::getline(in, line)) {
    if (!is_blank(line)) ++count;
  }
  return count;
}

// The broker's queue bound is back-pressure, not an answer: wait and send the line again,
// doubling the wait up to 20 times the base.
milliseconds queue_full_backoff(milliseconds base, uint32_t retries) {
  return std::min(base * (int64_t{1} << std::min<uint32_t>(retries, 5)), base * 20);
}

bool is_local_failure(const DispatchError& error) {
  // Failures that say nothing about the line itself: the job never got a real answer. They
  // are left out of the output so that a rerun retries them.
  return error.code() == client_code::broker_unreachable ||
         error.code() == client_code::client_deadline ||
         error.code() == client_code::client_shutdown || is_connection_refusal(error);
}

// Failures every later line would meet too: the run stops at the first.
bool stops_the_run(const DispatchError& error) {
  return error.code() == client_code::broker_unreachable || is_connection_refusal(error);
}

void report_resume(Progress& progress, const ResumeState& resume, const std::string& path) {
  if (resume.torn_tail) progress.message("note: removed a torn last line from the output");
  if (resume.unreadable_lines != 0) {
    progress.message(fmt::format("warning: {} unreadable line(s) in the output are kept as is",
                                 resume.unreadable_lines));
  }
  if (!resume.done.empty()) {
    progress.message(
        fmt::format("resuming: {} custom_id(s) already in {}", resume.done.size(), path));
  }
}

// One run over the input: feeds lines to the client, at most `concurrency` in flight; writes
// each answer as it completes; sends lines the broker refused with queue_full again; stops
// early, leaving the rest for a rerun, when the broker is unreachable or the output cannot be
// written. Everything but the completion hand-off runs on the calling thread.
class BatchRunner {
 public:
  BatchRunner(const BatchOptions& options, OutputFile output, ResumeState resume,
              Progress& progress, Steady::time_point started)
      : options_(options),
        output_(std::move(output)),
        resume_(std::move(resume)),
        progress_(progress),
        started_(started),
        last_sync_(Steady::now()),
        client_(options.client) {
    counters_.total = count_nonblank_lines(options.input_path);
  }

  int run(std::istream& input, std::ostream& err) {
    feed(input);
    // Every job ends by its client-side deadline and queue_full resends are bounded, so this
    // loop ends.
    while (counters_.in_flight > 0) drain(milliseconds(100));
    output_.sync();
    return finish(err);
  }

 private:
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

  void feed(std::istream& input) {
    std::string line;
    std::size_t line_number = 0;
    while (!aborted_ && std::getline(input, line)) {
      ++line_number;
      if (is_blank(line)) continue;
      if (line.back() == '\r') line.pop_back();
      auto item = admit(line, line_number);
      if (!item) continue;
      while (counters_.in_flight >= options_.concurrency && !aborted_) drain(milliseconds(100));
      if (aborted_) break;
      start(std::move(*item));
      drain(milliseconds(0));
    }
  }

  // The line's job, or nullopt (counted and reported) when it is not to be sent.
  std::optional<BatchItem> admit(const std::string& line, std::size_t line_number) {
    auto parsed = parse_batch_line(line, line_number);
    if (!parsed) {
      ++counters_.invalid;
      progress_.message(fmt::format("line {}: {}", line_number, parsed.error().reason));
      return std::nullopt;
    }
    auto& item = *parsed;
    auto [first, inserted] = seen_.emplace(item.custom_id, line_number);
    if (!inserted) {
      ++counters_.invalid;
      progress_.message(fmt::format("line {}: duplicate custom_id '{}' (first on line {})",
                                    line_number, item.custom_id, first->second));
      return std::nullopt;
    }
    if (resume_.done.count(item.custom_id) != 0) {
      ++counters_.skipped;
      return std::nullopt;
    }
    return std::move(item);
  }

  void start(BatchItem item) {
    ++counters_.in_flight;
    auto& line = in_flight_[item.line_number];
    line.item = std::move(item);
    submit(line);
  }

  void submit(const InFlightLine& line) {
    DispatchRequest request(line.item.request);
    request.with_priority(options_.priority);
    if (!options_.traceparent.empty()) request.with_traceparent(options_.traceparent);
    client_.dispatch_async(request,
                           [this, number = line.item.line_number](DispatchOutcome outcome) {
                             {
                               std::lock_guard lock(mutex_);
                               completions_.push_back(Completion{number, std::move(outcome)});
                             }
                             completed_.notify_one();
                           });
  }

  // Handles finished jobs; waits up to `wait` for one when none is ready.
  void drain(milliseconds wait) {
    std::deque<Completion> ready;
    {
      std::unique_lock lock(mutex_);
      if (completions_.empty() && wait.count() > 0) {
        completed_.wait_for(lock, wait, [&] { return !completions_.empty(); });
      }
      ready.swap(completions_);
    }
    for (auto& done : ready) handle(done);
    if (write_failed_ && !aborted_) {
      progress_.message("error: " + write_error_ + "; stopping");
      aborted_ = true;
    }
    resend_due();
    counters_.elapsed_seconds = std::chrono::duration<double>(Steady::now() - started_).count();
    progress_.update(counters_);
    if (Steady::now() - last_sync_ >= options_.fsync_interval) {
      output_.sync();
      last_sync_ = Steady::now();
    }
  }

  void handle(Completion& done) {
    auto found = in_flight_.find(done.line_number);
    if (found == in_flight_.end()) return;
    InFlightLine& line = found->second;
    if (!done.outcome.ok() && done.outcome.error->kind() == ErrorKind::queue_full && !aborted_ &&
        line.queue_full_retries < options_.max_queue_full_retries) {
      line.retry_at = Steady::now() +
                      queue_full_backoff(options_.queue_full_backoff, line.queue_full_retries++);
      retry_queue_.push_back(done.line_number);
      return;  // still holds its concurrency slot, which slows the feed down too
    }
    const std::string custom_id = std::move(line.item.custom_id);
    in_flight_.erase(found);
    --counters_.in_flight;
    if (done.outcome.ok()) {
      record_success(done.line_number, custom_id, *done.outcome.response);
    } else {
      record_failure(done.line_number, custom_id, *done.outcome.error, done.outcome.job_id);
    }
  }

  void record_success(std::size_t line_number, const std::string& custom_id,
                      const DispatchResponse& response) {
    if (!write(format_success_line(line_number, custom_id, response))) return;
    ++counters_.succeeded;
    counters_.prompt_tokens += response.usage.prompt_tokens;
    counters_.completion_tokens += response.usage.completion_tokens;
    if (response.cost_usd) {
      counters_.cost_usd += *response.cost_usd;
      ++counters_.priced;
    }
  }

  void record_failure(std::size_t line_number, const std::string& custom_id,
                      const DispatchError& failure, const std::string& job_id) {
    if (is_local_failure(failure) || failure.kind() == ErrorKind::queue_full) {
      ++counters_.incomplete;
      if (!stops_the_run(failure)) return;
      if (!aborted_) {
        stop_code_ =
            is_connection_refusal(failure) ? exit_code::refused : exit_code::broker_unreachable;
        progress_.message("error: " + std::string(failure.what()) +
                          "; stopping (rerun the same command to resume)");
        aborted_ = true;
      }
      return;
    }
    if (!write(format_error_line(line_number, custom_id, failure, job_id))) return;
    ++counters_.failed;
  }

  // False (and the run stops at the next drain) when the output cannot be written.
  bool write(const std::string& line) {
    auto written = output_.append(line);
    if (written) return true;
    write_failed_ = true;
    write_error_ = std::move(written).error();
    return false;
  }

  void resend_due() {
    const auto now = Steady::now();
    for (auto it = retry_queue_.begin(); it != retry_queue_.end();) {
      auto line = in_flight_.find(*it);
      if (line == in_flight_.end()) {
        it = retry_queue_.erase(it);
      } else if (aborted_) {
        // Not resent: counted as incomplete so that a rerun picks it up.
        in_flight_.erase(line);
        --counters_.in_flight;
        ++counters_.incomplete;
        it = retry_queue_.erase(it);
      } else if (now >= line->second.retry_at) {
        submit(line->second);
        it = retry_queue_.erase(it);
      } else {
        ++it;
      }
    }
  }

  int finish(std::ostream& err) {
    counters_.elapsed_seconds = std::chrono::duration<double>(Steady::now() - started_).count();
    // Lines never submitted because the run stopped early are incomplete too.
    if (counters_.finished() < counters_.total) {
      counters_.incomplete += counters_.total - counters_.finished();
    }
    progress_.finish(counters_);
    err << format_summary(counters_);
    err.flush();
    if (write_failed_) return exit_code::failed;
    if (stop_code_ != exit_code::ok) return stop_code_;
    if (counters_.incomplete != 0) {
      err << counters_.incomplete << " line(s) not completed; rerun the same command to resume\n";
      return exit_code::failed;
    }
    return exit_code::ok;
  }

  const BatchOptions& options_;
  OutputFile output_;
  ResumeState resume_;
  Progress& progress_;
  Steady::time_point started_;
  Steady::time_point last_sync_;
  BatchCounters counters_;
  bool aborted_ = false;
  int stop_code_ = exit_code::ok;  // why the run stopped early: broker unreachable or refused
  bool write_failed_ = false;
  std::string write_error_;
  std::unordered_map<std::size_t, InFlightLine> in_flight_;  // by input line number
  std::vector<std::size_t> retry_queue_;                     // lines waiting to be resent
  std::unordered_map<std::string, std::size_t> seen_;        // custom_id -> first line number
  // Completions arrive on the client's I/O thread.
  std::mutex mutex_;
  std::condition_variable completed_;
  std::deque<Completion> completions_;
  // Last: destroyed first, so that the callbacks it runs while shutting down find the rest.
  Client client_;
};

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
  auto output = OutputFile::open(options.output_path);
  if (!output) {
    err << "error: " << output.error().message << "\n";
    return output.error().locked ? exit_code::output_locked : exit_code::usage;
  }
  auto resume = output->scan();
  if (!resume) {
    err << "error: " << resume.error() << "\n";
    return exit_code::failed;
  }
  Progress progress(err, err_is_tty,
                    err_is_tty ? options.tty_progress_interval : options.plain_progress_interval);
  report_resume(progress, *resume, options.output_path);
  BatchRunner runner(options, std::move(*output), std::move(*resume), progress, started);
  return runner.run(input, err);
}

}  // namespace dispatch::cli
