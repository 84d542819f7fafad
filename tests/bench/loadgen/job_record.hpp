#pragma once

// What the load generator remembers about one job, and the plan every driver follows.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace dispatch::bench {

using BenchClock = std::chrono::steady_clock;

// Times are nanoseconds since the run's origin (BenchClock); 0 means "did not happen".
struct JobRecord {
  // Open loop: when the job was due to be sent, whatever the sender was doing then; latency is
  // measured from here so that a stalled sender cannot hide queueing (coordinated omission).
  // Closed loop: when the job was actually sent.
  int64_t scheduled_ns = 0;
  int64_t sent_ns = 0;
  int64_t first_chunk_ns = 0;  // first content chunk (streams only)
  int64_t done_ns = 0;
  int64_t worker_ns = 0;  // dispatch: the worker's own time for the job (total_duration_ns)
  uint32_t chunks = 0;
  bool finished = false;
  bool ok = false;
  std::string error;  // error kind (or a loadgen reason) when !ok
};

enum class LoadMode { open_loop, closed_loop };

struct RunPlan {
  LoadMode mode = LoadMode::open_loop;
  double rate = 1000;            // open loop: jobs per second offered
  std::size_t concurrency = 64;  // closed loop: jobs kept in flight
  std::size_t warmup_jobs = 0;   // sent first, left out of every statistic
  std::size_t jobs = 1000;       // measured jobs
  bool stream = false;
  std::chrono::milliseconds request_timeout{30000};
  // After the last job is sent, how long unfinished jobs may still take.
  std::chrono::milliseconds drain_timeout{35000};
  // Open loop: a job due while this many are unfinished is not sent and counts as failed
  // ("loadgen_overflow"), so an overloaded target cannot exhaust the loadgen's descriptors.
  std::size_t max_in_flight = 15000;

  std::size_t total_jobs() const { return warmup_jobs + jobs; }
};

// The due time of job `index` under an open-loop plan: evenly spaced at `rate`.
inline int64_t open_loop_due_ns(const RunPlan& plan, std::size_t index) {
  return static_cast<int64_t>(static_cast<double>(index) * 1e9 / plan.rate);
}

// Called by a driver at the edges of the measured window (from its own thread).
class RunObserver {
 public:
  virtual ~RunObserver() = default;
  // Right before the first measured job (index == warmup_jobs) is sent.
  virtual void on_measurement_start() = 0;
  // Jobs in flight changed (sampled by the driver, not necessarily on every change).
  virtual void on_in_flight(std::size_t in_flight, std::size_t streaming) = 0;
};

}  // namespace dispatch::bench
