#pragma once

// Worker configuration: YAML file + environment overrides (README.md, "Worker configuration").

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "dispatch/protocol/types.hpp"
#include "dispatch/worker/http.hpp"
#include "dispatch/worker/prices.hpp"

namespace dispatch::worker {

// Knobs that `defaults` sets and each provider may override.
struct PolicySettings {
  uint32_t timeout_ms = 30000;  // total deadline of a job, unless the request sets one
  uint32_t retry_count = 3;     // retries per target for retryable failures
  uint32_t connect_timeout_ms = 5000;
  uint32_t first_token_timeout_ms = 10000;
  uint32_t idle_timeout_ms = 15000;  // gap between stream chunks
  uint32_t backoff_base_ms = 500;
  uint32_t backoff_max_ms = 8000;
  uint32_t retry_after_cap_ms = 60000;  // a longer Retry-After fails over instead of waiting
  uint32_t breaker_failures = 3;        // consecutive failures that open the circuit
  double breaker_failure_rate = 0.5;    // or this rate over the window ...
  uint32_t breaker_window = 20;         // ... of the last N outcomes (min samples = window/2)
  uint32_t breaker_cooldown_ms = 15000;
  bool failover_on_content_filter = false;

  bool operator==(const PolicySettings&) const = default;
};

struct ProviderConfig {
  std::string name;  // the provider name requests use ("ollama", "ali", "openai", "claude", ...)
  std::string type;  // a registered adapter's type: ollama | openai | openai-compatible | ...
  std::string base_url;     // as the official SDK takes it (docs/providers.md, "Base URLs")
  std::string api_key_env;  // variable the key came from (for messages; never the key)
  std::string api_key;      // resolved; never logged or echoed
  HttpHeaders extra_headers;
  uint32_t max_in_flight = 0;   // HTTP transfers at once per worker process; 0 = unbounded
  uint32_t context_window = 0;  // tokens; prefers larger ones on context_length_exceeded
  std::string fallback_model;  // model used when this provider serves as a fallback_providers entry
  uint32_t default_max_tokens = 4096;  // Anthropic requires max_tokens
  // Sent when the request has none: `defaults.temperature` or this provider's `temperature`
  // key; nullopt (YAML null) sends none and leaves the provider's own default.
  std::optional<double> temperature = 0.7;
  bool stream_upstream = true;  // false: ask for whole responses even for streamed jobs
  PolicySettings policy;        // defaults with this provider's overrides applied

  // What no message may carry: the API key and every `headers` value. Provider error messages,
  // transport errors - and so attempt records, logs, status and batch output - are scrubbed of
  // them (scrub_secrets in error_classifier.hpp).
  std::vector<std::string> secrets() const;
};

// `broker:` — how this worker reaches the broker. The command line and the environment win
// over each key (dispatch-worker --broker, --broker-key / DISPATCH_BROKER_KEY, --curve-secret /
// DISPATCH_CURVE_SECRET). load_config makes relative key paths relative to the config file.
struct BrokerSettings {
  std::string endpoint;         // broker.endpoint: the broker's backend; empty: not set
  std::string public_key_file;  // broker.public_key_file: the broker's NAME.key
  std::string secret_key_file;  // broker.secret_key_file: this worker's NAME.key_secret (0600)
};

struct WorkerConfig {
  BrokerSettings broker;
  std::optional<double> temperature = 0.7;  // default sent when the request has none; null: none
  bool enable_fallback = true;
  std::vector<protocol::Target> fallbacks;      // default chain (explicit provider/model pairs)
  std::vector<std::string> fallback_providers;  // the guide's form: provider names
  PolicySettings defaults;
  std::map<std::string, ProviderConfig> providers;  // keyed by name
  uint32_t concurrency = 1000;  // `worker.concurrency`: jobs in flight per worker process
  // `worker.max_request_bytes`: a job whose provider request body would be larger (by
  // estimate_request_body_bytes) is refused invalid_request / request_too_large.
  uint32_t max_request_bytes = 32u << 20;
  // `worker.max_response_bytes`: the most answer text (content + thinking + tool calls) an
  // attempt may accumulate, and the largest non-streamed body it may buffer; over it the attempt
  // fails invalid_request / response_too_large.
  uint32_t max_response_bytes = 8u << 20;
  // `worker.metrics_listen`: HOST:PORT of the Prometheus endpoint (GET /metrics); empty: off.
  // dispatch-worker --metrics-listen overrides it.
  std::string metrics_listen;
  // `prices_file:` replaces the shipped price table (a path relative to the config file);
  // `prices:` entries (type -> model -> price) add to it or override it. load_config resolves
  // both into `prices`, which gives each result its cost_usd (README.md, "Cost").
  std::string prices_file;
  PriceTable price_overrides;
  PriceTable prices;

  const ProviderConfig* provider(const std::string& name) const {
    auto it = providers.find(name);
    return it == providers.end() ? nullptr : &it->second;
  }
};

// Thrown by load_config with a message naming the file, the key and the problem, e.g.
// "dispatch.yaml: providers.openai.type: unknown type 'opena' (expected one of ...)".
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Reads environment variables; injectable for tests.
class Environment {
 public:
  virtual ~Environment() = default;
  virtual std::optional<std::string> get(const std::string& name) const = 0;
};
class ProcessEnvironment final : public Environment {
 public:
  std::optional<std::string> get(const std::string& name) const override;
};

// path empty: built-in providers only (ollama at OLLAMA_HOST or localhost:11434, plus each
// cloud provider whose key is set). Throws ConfigError. Logs config_warnings() (spdlog warn).
WorkerConfig load_config(const std::string& path, const Environment& env);
WorkerConfig parse_config(const std::string& yaml_text, const std::string& source_name,
                          const Environment& env);

// Resolves config.prices: the table of `prices_file` (relative to `config_path`'s directory),
// else the shipped one (find_default_price_file; none found: a warning and an empty table),
// then `price_overrides` over it. Throws ConfigError for a file that cannot be read or parsed.
// load_config calls it.
void load_prices(WorkerConfig& config, const std::string& config_path);

// Problems that do not stop a worker but fail its jobs: one line per provider that needs an API
// key and has none (its variable unset or empty), naming the provider and the variable, never a
// key. Such a worker still starts (the key may be meant for another worker), but every attempt
// on that provider fails with authentication "no API key: set VAR".
std::vector<std::string> config_warnings(const WorkerConfig& config);

}  // namespace dispatch::worker
