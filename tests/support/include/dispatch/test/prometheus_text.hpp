#pragma once

// Reading values out of a Prometheus text exposition (GET /metrics) in tests.

#include <map>
#include <optional>
#include <string>

namespace dispatch::test {

using MetricLabels = std::map<std::string, std::string>;

// The value of the sample `name` whose labels are exactly `labels` (any order), or nullopt when
// the exposition has no such series.
std::optional<double> metric_value(const std::string& exposition, const std::string& name,
                                   const MetricLabels& labels = {});

}  // namespace dispatch::test
