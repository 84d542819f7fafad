// Fuzz harness: the worker's YAML config loader (parse_config), which reads the file an operator
// wrote. Oracle: whatever the text, the loader returns a config or throws ConfigError, the one
// typed error with a message naming the file and the key; any other exception escapes this
// function and libFuzzer reports it as a crash.

#include <spdlog/spdlog.h>

#include <cstdint>
#include <optional>
#include <string>

#include "dispatch/worker/config.hpp"

namespace {

// Deterministic: a variable is "set" when its name has an even length, so that both the key
// found and the key missing paths run.
class FuzzEnvironment final : public dispatch::worker::Environment {
 public:
  std::optional<std::string> get(const std::string& name) const override {
    if (name.size() % 2 != 0) return std::nullopt;
    return "value-of-" + name;
  }
};

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  spdlog::set_level(spdlog::level::off);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto config = dispatch::worker::parse_config(text, "fuzz.yaml", FuzzEnvironment());
    (void)dispatch::worker::config_warnings(config);
  } catch (const dispatch::worker::ConfigError&) {
    // The typed error: what the operator is told.
  }
  return 0;
}
