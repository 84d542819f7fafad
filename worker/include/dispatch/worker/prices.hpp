#pragma once

// The price table: US dollars per million tokens per (adapter type, model), so that each result
// carries `cost_usd`. Shipped as worker/data/prices.yaml (installed with the worker, loaded by
// default), replaced by the config's `prices_file:` and amended by its `prices:` (README.md,
// "Cost").

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "dispatch/common/result.hpp"
#include "dispatch/protocol/types.hpp"

namespace YAML {
class Node;
}

namespace dispatch::worker {

struct Price {
  double input = 0;                    // per million prompt tokens not read from the cache
  double output = 0;                   // per million completion tokens
  std::optional<double> cached_input;  // per million cached prompt tokens; absent: `input`

  bool operator==(const Price&) const = default;
};

class PriceTable {
 public:
  // Adds or replaces the price of `model` under adapter type `type`.
  void set(std::string type, std::string model, Price price);
  // Every entry of `other` replaces or joins this table's.
  void merge(const PriceTable& other);

  // The price of `model` served by a provider of adapter type `type`: the exact entry, else the
  // entry of its family once one dated-snapshot suffix is dropped (family_of_model()).
  const Price* find(std::string_view type, std::string_view model) const;

  std::size_t size() const noexcept { return entries_.size(); }
  bool empty() const noexcept { return entries_.empty(); }

  std::string date;  // the table's `date:` (informational, logged at start-up)

 private:
  std::map<std::string, Price, std::less<>> entries_;  // keyed "type/model"
};

// `model` without one trailing dated-snapshot suffix: "-YYYY-MM-DD", "-YYYYMMDD", "-MMDD" (four
// digits) or "-latest"; nullopt when it has none.
std::optional<std::string> family_of_model(std::string_view model);

// usage x price, unrounded: (prompt - cached) x input + cached x cached_input (else input) +
// completion x output, per million. Cached tokens above the prompt count are clamped to it.
double cost_usd(const protocol::Usage& usage, const Price& price);

// Reads a price document: a YAML map with `date:` (required), `currency: USD` (optional; any
// other currency is refused), `sources:` (required, not empty) and `prices:` (type -> model ->
// {input, output[, cached_input]}). Errors read "<source>: <key.path>: <problem>".
Result<PriceTable, std::string> parse_price_file(const std::string& yaml_text,
                                                 const std::string& source_name);

// The `prices:` map alone (type -> model -> price), as a worker config carries it; errors name
// `source_name` and the key path under `path`.
Result<PriceTable, std::string> parse_price_entries(const YAML::Node& prices,
                                                    const std::string& source_name,
                                                    const std::string& path);

// Where the shipped table is looked for, in order: next to the executable
// (<exe dir>/../share/llm-dispatcher/prices.yaml: the build tree and any relocated install),
// then the compiled-in install path. Returns the first that exists, or nullopt.
std::optional<std::string> find_default_price_file();

}  // namespace dispatch::worker
