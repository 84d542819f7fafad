#pragma once

// Latency statistics of a run: exact percentiles (the runs are small enough to sort).

#include <cstddef>
#include <nlohmann/json.hpp>
#include <vector>

#include "job_record.hpp"

namespace dispatch::bench {

struct Distribution {
  std::size_t count = 0;
  double mean = 0;
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
  double p999 = 0;
  double max = 0;
};

// Nearest-rank percentile of sorted `values`; `fraction` in [0, 1]. 0 for no values.
double percentile_of_sorted(const std::vector<double>& values, double fraction);

// Sorts `values` (milliseconds, say) and summarises them.
Distribution summarize(std::vector<double> values);

nlohmann::json to_json(const Distribution& distribution);

// The measured jobs (index >= warmup_jobs) of a finished run: success counts, errors by kind,
// latency from the due time (and time to first chunk for streams), how late jobs were sent,
// the offered and achieved rates.
nlohmann::json summarize_run(const RunPlan& plan, const std::vector<JobRecord>& records);

}  // namespace dispatch::bench
