#include "stats.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <string>

namespace dispatch::bench {

double percentile_of_sorted(const std::vector<double>& values, double fraction) {
  if (values.empty()) return 0;
  // Nearest rank: the smallest value with at least `fraction` of the values at or below it.
  const double rank = std::ceil(fraction * static_cast<double>(values.size()));
  const std::size_t index = rank < 1 ? 0 : static_cast<std::size_t>(rank) - 1;
  return values[std::min(index, values.size() - 1)];
}

Distribution summarize(std::vector<double> values) {
  Distribution d;
  if (values.empty()) return d;
  std::sort(values.begin(), values.end());
  d.count = values.size();
  d.mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(d.count);
  d.p50 = percentile_of_sorted(values, 0.50);
  d.p90 = percentile_of_sorted(values, 0.90);
  d.p99 = percentile_of_sorted(values, 0.99);
  d.p999 = percentile_of_sorted(values, 0.999);
  d.max = values.back();
  return d;
}

nlohmann::json to_json(const Distribution& d) {
  return {{"count", d.count}, {"mean", d.mean}, {"p50", d.p50}, {"p90", d.p90},
          {"p99", d.p99},     {"p999", d.p999}, {"max", d.max}};
}

nlohmann::json summarize_run(const RunPlan& plan, const std::vector<JobRecord>& records) {
  constexpr double kNsPerMs = 1e6;
  std::vector<double> latency_ms;
  std::vector<double> first_chunk_ms;
  std::vector<double> send_lag_ms;
  std::vector<double> worker_ms;
  std::map<std::string, std::size_t> errors;
  std::size_t ok = 0;
  std::size_t measured = 0;
  uint64_t chunks = 0;
  int64_t first_due = INT64_MAX;
  int64_t last_due = 0;
  int64_t last_done = 0;
  for (std::size_t i = plan.warmup_jobs; i < records.size(); ++i) {
    const JobRecord& r = records[i];
    ++measured;
    first_due = std::min(first_due, r.scheduled_ns);
    last_due = std::max(last_due, r.scheduled_ns);
    if (r.sent_ns != 0)
      send_lag_ms.push_back(static_cast<double>(r.sent_ns - r.scheduled_ns) / kNsPerMs);
    if (r.done_ns != 0) last_done = std::max(last_done, r.done_ns);
    if (!r.finished) {
      ++errors["unfinished"];
      continue;
    }
    if (!r.ok) {
      ++errors[r.error.empty() ? std::string("unknown") : r.error];
      continue;
    }
    ++ok;
    chunks += r.chunks;
    latency_ms.push_back(static_cast<double>(r.done_ns - r.scheduled_ns) / kNsPerMs);
    if (r.worker_ns > 0) worker_ms.push_back(static_cast<double>(r.worker_ns) / kNsPerMs);
    if (plan.stream && r.first_chunk_ns != 0) {
      first_chunk_ms.push_back(static_cast<double>(r.first_chunk_ns - r.scheduled_ns) / kNsPerMs);
    }
  }
  nlohmann::json out;
  out["jobs"] = measured;
  out["ok"] = ok;
  out["failed"] = measured - ok;
  out["success_rate"] =
      measured == 0 ? 0.0 : static_cast<double>(ok) / static_cast<double>(measured);
  out["errors"] = errors;
  const double send_window_s = measured > 1 ? static_cast<double>(last_due - first_due) / 1e9 : 0;
  const double window_s =
      last_done > first_due ? static_cast<double>(last_done - first_due) / 1e9 : 0;
  out["window_s"] = window_s;
  out["offered_rate"] = send_window_s > 0 ? static_cast<double>(measured - 1) / send_window_s : 0.0;
  out["achieved_rate"] = window_s > 0 ? static_cast<double>(ok) / window_s : 0.0;
  out["latency_ms"] = to_json(summarize(std::move(latency_ms)));
  if (plan.stream) {
    // For a stream, latency_ms is the time to the last chunk (the whole answer).
    out["ttfc_ms"] = to_json(summarize(std::move(first_chunk_ms)));
    out["chunks_per_job"] = ok == 0 ? 0.0 : static_cast<double>(chunks) / static_cast<double>(ok);
  }
  out["send_lag_ms"] = to_json(summarize(std::move(send_lag_ms)));
  // Dispatch only: time inside the worker (job taken -> answer complete); the rest of the
  // latency is the client, the broker and the ZeroMQ hops.
  if (!worker_ms.empty()) out["worker_ms"] = to_json(summarize(std::move(worker_ms)));
  return out;
}

}  // namespace dispatch::bench
