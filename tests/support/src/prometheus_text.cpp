#include "dispatch/test/prometheus_text.hpp"

#include <sstream>

namespace dispatch::test {
namespace {

// `name="value",...` (no escapes in our label values) into a map; false when malformed.
bool parse_labels(const std::string& text, MetricLabels& out) {
  std::size_t at = 0;
  while (at < text.size()) {
    const auto eq = text.find("=\"", at);
    if (eq == std::string::npos) return false;
    const auto close = text.find('"', eq + 2);
    if (close == std::string::npos) return false;
    out[text.substr(at, eq - at)] = text.substr(eq + 2, close - eq - 2);
    at = close + 1;
    if (at < text.size() && text[at] == ',') ++at;
  }
  return true;
}

}  // namespace

std::optional<double> metric_value(const std::string& exposition, const std::string& name,
                                   const MetricLabels& labels) {
  std::istringstream lines(exposition);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#' || line.compare(0, name.size(), name) != 0) continue;
    std::string rest = line.substr(name.size());
    MetricLabels found;
    if (!rest.empty() && rest[0] == '{') {
      const auto close = rest.rfind('}');
      if (close == std::string::npos || !parse_labels(rest.substr(1, close - 1), found)) continue;
      rest = rest.substr(close + 1);
    }
    if (rest.empty() || rest[0] != ' ' || found != labels) continue;
    try {
      return std::stod(rest.substr(1));
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  return std::nullopt;
}

}  // namespace dispatch::test
