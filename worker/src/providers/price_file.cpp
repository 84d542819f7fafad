// Reading the price table: the shipped YAML document, a config's `prices:` map, and where the
// shipped file is found (prices.hpp).

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <array>
#include <cmath>
#include <filesystem>
#include <stdexcept>
#include <system_error>

#include "dispatch/worker/prices.hpp"

namespace dispatch::worker {
namespace {

class PriceParser {
 public:
  explicit PriceParser(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void fail(std::string_view path, std::string_view problem) const {
    throw std::runtime_error(fmt::format("{}: {}: {}", source_, path, problem));
  }

  double read_price(const YAML::Node& node, const std::string& path) const {
    if (!node.IsScalar()) fail(path, "expected a number");
    double value = 0;
    try {
      value = node.as<double>();
    } catch (const YAML::Exception&) {
      fail(path, "'" + node.Scalar() + "' is not a number");
    }
    if (!std::isfinite(value) || value < 0) fail(path, "must be a finite number >= 0");
    return value;
  }

  Price read_entry(const YAML::Node& node, const std::string& path) const {
    if (!node.IsMap()) fail(path, "expected a map {input, output[, cached_input]}");
    Price price;
    bool has_input = false;
    bool has_output = false;
    for (const auto& field : node) {
      const std::string key = field.first.as<std::string>();
      const std::string field_path = path + "." + key;
      if (key == "input") {
        price.input = read_price(field.second, field_path);
        has_input = true;
      } else if (key == "output") {
        price.output = read_price(field.second, field_path);
        has_output = true;
      } else if (key == "cached_input") {
        price.cached_input = read_price(field.second, field_path);
      } else {
        fail(field_path, "unknown key (expected input, output, cached_input)");
      }
    }
    if (!has_input) fail(path + ".input", "missing");
    if (!has_output) fail(path + ".output", "missing");
    return price;
  }

  void read_prices(const YAML::Node& prices, const std::string& path, PriceTable& table) const {
    if (!prices.IsMap()) fail(path, "expected a map of adapter type -> model -> price");
    for (const auto& by_type : prices) {
      const std::string type = by_type.first.as<std::string>();
      const std::string type_path = path + "." + type;
      if (type.empty()) fail(path, "empty adapter type");
      if (!by_type.second.IsMap()) fail(type_path, "expected a map of model -> price");
      for (const auto& by_model : by_type.second) {
        const std::string model = by_model.first.as<std::string>();
        if (model.empty()) fail(type_path, "empty model name");
        table.set(type, model, read_entry(by_model.second, type_path + "." + model));
      }
    }
  }

  PriceTable parse_document(const YAML::Node& root) const {
    if (!root.IsMap()) fail("(top level)", "expected a map with date, sources and prices");
    for (const auto& entry : root) {
      const std::string key = entry.first.as<std::string>();
      if (key != "date" && key != "currency" && key != "sources" && key != "prices") {
        fail(key, "unknown key (expected date, currency, sources, prices)");
      }
    }
    PriceTable table;
    const YAML::Node date = root["date"];
    if (!date || !date.IsScalar() || date.Scalar().empty()) fail("date", "missing");
    table.date = date.Scalar();
    if (const YAML::Node currency = root["currency"]; currency && currency.Scalar() != "USD") {
      fail("currency", "only USD is supported");
    }
    const YAML::Node sources = root["sources"];
    if (!sources || sources.IsNull() || sources.size() == 0) {
      fail("sources", "missing (name the pricing pages the figures come from)");
    }
    const YAML::Node prices = root["prices"];
    if (!prices) fail("prices", "missing");
    read_prices(prices, "prices", table);
    return table;
  }

 private:
  std::string source_;
};

std::filesystem::path executable_directory() {
  std::error_code error;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", error);
  return error ? std::filesystem::path() : exe.parent_path();
}

}  // namespace

Result<PriceTable, std::string> parse_price_file(const std::string& yaml_text,
                                                 const std::string& source_name) {
  PriceParser parser(source_name);
  try {
    return parser.parse_document(YAML::Load(yaml_text));
  } catch (const YAML::Exception& e) {
    return fmt::format("{}: line {}, column {}: {}", source_name, e.mark.line + 1,
                       e.mark.column + 1, e.msg);
  } catch (const std::runtime_error& e) {
    return std::string(e.what());
  }
}

Result<PriceTable, std::string> parse_price_entries(const YAML::Node& prices,
                                                    const std::string& source_name,
                                                    const std::string& path) {
  PriceParser parser(source_name);
  PriceTable table;
  try {
    parser.read_prices(prices, path, table);
  } catch (const YAML::Exception& e) {
    return fmt::format("{}: {}: {}", source_name, path, e.msg);
  } catch (const std::runtime_error& e) {
    return std::string(e.what());
  }
  return table;
}

std::optional<std::string> find_default_price_file() {
  const std::filesystem::path exe_directory = executable_directory();
  std::array<std::filesystem::path, 2> candidates = {
      exe_directory.empty() ? std::filesystem::path()
                            : exe_directory / ".." / "share" / "llm-dispatcher" / "prices.yaml",
      std::filesystem::path(DISPATCH_PRICES_INSTALL_PATH)};
  for (const auto& candidate : candidates) {
    std::error_code error;
    if (!candidate.empty() && std::filesystem::is_regular_file(candidate, error)) {
      return candidate.lexically_normal().string();
    }
  }
  return std::nullopt;
}

}  // namespace dispatch::worker
