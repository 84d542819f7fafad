#pragma once

// CPU time and memory of named processes (the broker, workers, the provider, the loadgen
// itself) from /proc, over the measured window of a run.

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace dispatch::bench {

struct ProcessSample {
  double user_s = 0;    // utime, all threads
  double system_s = 0;  // stime, all threads
  uint64_t rss_kb = 0;  // VmRSS
  uint64_t hwm_kb = 0;  // VmHWM: peak RSS over the process's life
};

// Parses the text of /proc/PID/stat; nullopt when malformed. `ticks_per_second` is
// sysconf(_SC_CLK_TCK).
std::optional<ProcessSample> parse_proc_stat(std::string_view stat_text, double ticks_per_second);
// Adds VmRSS / VmHWM from the text of /proc/PID/status to `sample`.
void parse_proc_status(std::string_view status_text, ProcessSample& sample);
// Both files of a live process; nullopt when it is gone.
std::optional<ProcessSample> sample_process(pid_t pid);

// The 1-minute load average (/proc/loadavg), or -1.
double load_average_1m();

struct WatchedProcess {
  std::string name;
  pid_t pid = 0;
};

// Samples the watched processes' RSS every `interval` on a thread of its own, and takes CPU
// snapshots at mark_start / mark_end.
class ProcessWatch {
 public:
  ProcessWatch(std::vector<WatchedProcess> processes, std::chrono::milliseconds interval);
  ~ProcessWatch();
  ProcessWatch(const ProcessWatch&) = delete;
  ProcessWatch& operator=(const ProcessWatch&) = delete;

  void mark_start();
  void mark_end();
  // Per process: cpu seconds (user, system, total) in the window, cpu microseconds per job,
  // cpu share of one core, RSS at start / peak in the window / at end, VmHWM at end.
  nlohmann::json to_json(std::size_t jobs) const;

 private:
  struct Entry {
    WatchedProcess process;
    std::optional<ProcessSample> start;
    std::optional<ProcessSample> end;
    uint64_t peak_rss_kb = 0;
  };
  void sample_loop();

  mutable std::mutex mutex_;
  std::vector<Entry> entries_;
  std::chrono::milliseconds interval_;
  bool measuring_ = false;
  std::chrono::steady_clock::time_point started_at_;
  std::chrono::steady_clock::time_point ended_at_;
  double load_start_ = -1;
  double load_end_ = -1;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace dispatch::bench
