// Worker configuration: YAML + environment. Every problem is reported as
// "<file>: <key.path>: <problem>" so a typo is found without reading code.

#include "dispatch/worker/config.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "dispatch/common/strings.hpp"
#include "dispatch/metrics/metrics.hpp"
#include "dispatch/protocol/codec.hpp"
#include "dispatch/worker/providers/adapter.hpp"

namespace dispatch::worker {

std::optional<std::string> ProcessEnvironment::get(const std::string& name) const {
  const char* value = std::getenv(name.c_str());
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

std::vector<std::string> ProviderConfig::secrets() const {
  std::vector<std::string> values;
  values.reserve(extra_headers.size() + 1);
  if (!api_key.empty()) values.push_back(api_key);
  for (const HttpHeader& header : extra_headers) {
    if (!header.value.empty()) values.push_back(header.value);
  }
  return values;
}

namespace {

// worker.max_request_bytes and max_response_bytes below this would refuse ordinary chats.
constexpr uint32_t kMinMessageBound = 1024;
// A result carries the answer plus its attempt records in one protocol frame.
constexpr uint32_t kMaxResponseBytes = protocol::Limits::max_message_bytes - (1u << 20);

std::string join(const std::vector<std::string_view>& items, std::string_view separator) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += separator;
    out += items[i];
  }
  return out;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// The adapter of a provider's type, which every caller has checked exists.
const AdapterDescriptor& descriptor_of(const ProviderConfig& provider) {
  return adapter_registry().find(provider.type)->descriptor();
}

class ConfigParser {
 public:
  ConfigParser(std::string source, const Environment& env)
      : source_(std::move(source)), env_(env) {}

  WorkerConfig parse(const std::string& text) {
    const YAML::Node root = load(text);
    WorkerConfig config;
    if (root.IsNull()) {
      add_built_ins_from_environment(config);
      return config;
    }
    expect_map(root, "(top level)");
    check_keys(root, "", {"broker", "defaults", "providers", "worker", "prices", "prices_file"});
    parse_broker(root["broker"], config.broker);
    parse_prices(root, config);
    parse_worker(root["worker"], config);
    const YAML::Node defaults = root["defaults"];
    parse_defaults(defaults, config);
    parse_providers(root["providers"], config);
    // After the providers: the chains name them.
    if (defaults && defaults.IsMap()) {
      if (YAML::Node n = defaults["fallbacks"]) parse_fallbacks(n, config);
      if (YAML::Node n = defaults["fallback_providers"]) parse_fallback_providers(n, config);
    }
    return config;
  }

 private:
  [[noreturn]] void fail(std::string_view path, std::string_view problem) const {
    throw ConfigError(fmt::format("{}: {}: {}", source_, path, problem));
  }

  YAML::Node load(const std::string& text) const {
    try {
      return YAML::Load(text);
    } catch (const YAML::Exception& e) {
      throw ConfigError(fmt::format("{}: line {}, column {}: {}", source_, e.mark.line + 1,
                                    e.mark.column + 1, e.msg));
    }
  }

  void parse_broker(const YAML::Node& broker, BrokerSettings& settings) const {
    if (!broker || broker.IsNull()) return;
    expect_map(broker, "broker");
    check_keys(broker, "broker", {"endpoint", "public_key_file", "secret_key_file"});
    auto read_nonempty = [&](const char* key, std::string& out) {
      const YAML::Node node = broker[key];
      if (!node) return;
      const std::string path = std::string("broker.") + key;
      out = std::string(trim(read_string(node, path)));
      if (out.empty()) fail(path, "empty (remove the key to leave it unset)");
    };
    read_nonempty("endpoint", settings.endpoint);
    read_nonempty("public_key_file", settings.public_key_file);
    read_nonempty("secret_key_file", settings.secret_key_file);
  }

  void parse_prices(const YAML::Node& root, WorkerConfig& config) const {
    if (YAML::Node n = root["prices_file"]) {
      config.prices_file = std::string(trim(read_string(n, "prices_file")));
      if (config.prices_file.empty()) fail("prices_file", "empty (remove the key for the default)");
    }
    if (YAML::Node n = root["prices"]; n && !n.IsNull()) {
      auto entries = parse_price_entries(n, source_, "prices");
      if (!entries) throw ConfigError(entries.error());
      config.price_overrides = std::move(entries).value();
    }
  }

  void parse_worker(const YAML::Node& worker, WorkerConfig& config) const {
    if (!worker || worker.IsNull()) return;
    expect_map(worker, "worker");
    check_keys(worker, "worker",
               {"concurrency", "max_request_bytes", "max_response_bytes", "metrics_listen"});
    if (YAML::Node n = worker["metrics_listen"]) {
      config.metrics_listen = std::string(trim(read_string(n, "worker.metrics_listen")));
      if (auto address = metrics::parse_listen_address(config.metrics_listen); !address) {
        fail("worker.metrics_listen", address.error());
      }
    }
    if (YAML::Node n = worker["concurrency"]) {
      config.concurrency = read_uint(n, "worker.concurrency", 1);
    }
    if (YAML::Node n = worker["max_request_bytes"]) {
      config.max_request_bytes = read_uint(n, "worker.max_request_bytes", kMinMessageBound);
    }
    if (YAML::Node n = worker["max_response_bytes"]) {
      config.max_response_bytes = read_uint(n, "worker.max_response_bytes", kMinMessageBound);
      if (config.max_response_bytes > kMaxResponseBytes) {
        fail("worker.max_response_bytes",
             fmt::format("must be at most {} (a result must fit one {} MiB protocol frame)",
                         kMaxResponseBytes, protocol::Limits::max_message_bytes >> 20));
      }
    }
  }

  void parse_defaults(const YAML::Node& defaults, WorkerConfig& config) const {
    if (!defaults || defaults.IsNull()) return;
    expect_map(defaults, "defaults");
    check_keys(
        defaults, "defaults",
        with_policy_keys({"temperature", "enable_fallback", "fallbacks", "fallback_providers"}));
    for (const auto& entry : defaults) {
      const std::string key = entry.first.as<std::string>();
      const std::string path = "defaults." + key;
      if (key == "temperature") {
        config.temperature = read_temperature(entry.second, path);
      } else if (key == "enable_fallback") {
        config.enable_fallback = read_bool(entry.second, path);
      } else if (key != "fallbacks" && key != "fallback_providers") {
        parse_policy_key(key, entry.second, path, config.defaults);
      }
    }
    check_policy(config.defaults, "defaults");
  }

  void parse_providers(const YAML::Node& providers, WorkerConfig& config) const {
    if (!providers) {
      add_built_ins_from_environment(config);
      return;
    }
    if (providers.IsNull() || (providers.IsMap() && providers.size() == 0)) {
      fail("providers", "no providers listed (remove the key to serve the built-in ones)");
    }
    expect_map(providers, "providers");
    std::set<std::string> seen;
    for (const auto& entry : providers) {
      const std::string name = scalar_key(entry.first, "providers");
      if (!seen.insert(name).second) fail("providers." + name, "duplicate provider");
      config.providers[name] = parse_provider(name, entry.second, config);
    }
  }

  static std::string describe(const YAML::Node& node) {
    if (node.IsScalar()) return "'" + node.Scalar() + "'";
    if (node.IsSequence()) return "a list";
    if (node.IsMap()) return "a map";
    return "null";
  }

  void expect_map(const YAML::Node& node, std::string_view path) const {
    if (!node.IsMap()) fail(path, "expected a map, got " + describe(node));
  }

  std::string scalar_key(const YAML::Node& key, std::string_view path) const {
    if (!key.IsScalar()) fail(path, "keys must be plain names");
    return key.Scalar();
  }

  static std::vector<std::string_view> with_policy_keys(std::vector<std::string_view> keys) {
    for (std::string_view key : {"timeout_ms", "retry_count", "connect_timeout_ms",
                                 "first_token_timeout_ms", "idle_timeout_ms", "backoff",
                                 "retry_after_cap_ms", "breaker", "failover_on_content_filter"}) {
      keys.push_back(key);
    }
    return keys;
  }

  // Unknown keys are errors: a misspelt key silently ignored is a default silently used.
  void check_keys(const YAML::Node& map, const std::string& path,
                  const std::vector<std::string_view>& allowed) const {
    std::set<std::string> seen;
    for (const auto& entry : map) {
      const std::string key = scalar_key(entry.first, path.empty() ? "(top level)" : path);
      const std::string key_path = path.empty() ? key : path + "." + key;
      if (!seen.insert(key).second) fail(key_path, "duplicate key");
      if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
      if (key == "api_key") {
        fail(key_path, "unknown key (keys are read from the environment: set api_key_env)");
      }
      std::string_view best;
      std::size_t best_distance = 3;  // suggest only near misses
      for (std::string_view candidate : allowed) {
        const std::size_t distance = edit_distance(key, candidate);
        if (distance < best_distance) {
          best_distance = distance;
          best = candidate;
        }
      }
      if (!best.empty()) fail(key_path, fmt::format("unknown key (did you mean '{}'?)", best));
      fail(key_path, "unknown key (expected one of: " + join(allowed, ", ") + ")");
    }
  }

  uint32_t read_uint(const YAML::Node& node, const std::string& path, uint32_t minimum) const {
    if (!node.IsScalar()) fail(path, "expected a whole number, got " + describe(node));
    int64_t value = 0;
    try {
      value = node.as<int64_t>();
    } catch (const YAML::Exception&) {
      fail(path, "expected a whole number, got " + describe(node));
    }
    if (value < 0 && minimum == 0) fail(path, fmt::format("must not be negative (got {})", value));
    if (value < static_cast<int64_t>(minimum)) {
      fail(path, fmt::format("must be positive (got {})", value));
    }
    if (value > std::numeric_limits<uint32_t>::max()) fail(path, "too large");
    return static_cast<uint32_t>(value);
  }

  double read_double(const YAML::Node& node, const std::string& path) const {
    if (!node.IsScalar()) fail(path, "expected a number, got " + describe(node));
    try {
      return node.as<double>();
    } catch (const YAML::Exception&) {
      fail(path, "expected a number, got " + describe(node));
    }
  }

  bool read_bool(const YAML::Node& node, const std::string& path) const {
    if (!node.IsScalar()) fail(path, "expected true or false, got " + describe(node));
    try {
      return node.as<bool>();
    } catch (const YAML::Exception&) {
      fail(path, "expected true or false, got " + describe(node));
    }
  }

  std::string read_string(const YAML::Node& node, const std::string& path) const {
    if (!node.IsScalar()) fail(path, "expected a string, got " + describe(node));
    return node.Scalar();
  }

  std::optional<double> read_temperature(const YAML::Node& node, const std::string& path) const {
    if (node.IsNull()) return std::nullopt;  // null: send no temperature at all
    const double value = read_double(node, path);
    if (!(value >= 0.0 && value <= 2.0)) {
      fail(path, fmt::format("{} is out of range (expected 0 to 2, or null)", node.Scalar()));
    }
    return value;
  }

  void parse_policy_key(const std::string& key, const YAML::Node& value, const std::string& path,
                        PolicySettings& policy) const {
    if (key == "timeout_ms") {
      policy.timeout_ms = read_uint(value, path, 1);
    } else if (key == "retry_count") {
      policy.retry_count = read_uint(value, path, 0);
    } else if (key == "connect_timeout_ms") {
      policy.connect_timeout_ms = read_uint(value, path, 1);
    } else if (key == "first_token_timeout_ms") {
      policy.first_token_timeout_ms = read_uint(value, path, 1);
    } else if (key == "idle_timeout_ms") {
      policy.idle_timeout_ms = read_uint(value, path, 1);
    } else if (key == "retry_after_cap_ms") {
      policy.retry_after_cap_ms = read_uint(value, path, 0);
    } else if (key == "failover_on_content_filter") {
      policy.failover_on_content_filter = read_bool(value, path);
    } else if (key == "backoff") {
      expect_map(value, path);
      check_keys(value, path, {"base_ms", "max_ms"});
      if (YAML::Node n = value["base_ms"])
        policy.backoff_base_ms = read_uint(n, path + ".base_ms", 1);
      if (YAML::Node n = value["max_ms"]) policy.backoff_max_ms = read_uint(n, path + ".max_ms", 1);
    } else if (key == "breaker") {
      expect_map(value, path);
      check_keys(value, path, {"failures", "failure_rate", "window", "cooldown_ms"});
      if (YAML::Node n = value["failures"]) {
        policy.breaker_failures = read_uint(n, path + ".failures", 1);
      }
      if (YAML::Node n = value["failure_rate"]) {
        const double rate = read_double(n, path + ".failure_rate");
        if (!(rate > 0.0 && rate <= 1.0)) {
          fail(path + ".failure_rate",
               fmt::format("{} is out of range (expected above 0, at most 1)", n.Scalar()));
        }
        policy.breaker_failure_rate = rate;
      }
      if (YAML::Node n = value["window"]) policy.breaker_window = read_uint(n, path + ".window", 1);
      if (YAML::Node n = value["cooldown_ms"]) {
        policy.breaker_cooldown_ms = read_uint(n, path + ".cooldown_ms", 1);
      }
    }
  }

  void check_policy(const PolicySettings& policy, const std::string& path) const {
    if (policy.backoff_max_ms < policy.backoff_base_ms) {
      fail(path + ".backoff.max_ms",
           fmt::format("must be at least backoff.base_ms ({})", policy.backoff_base_ms));
    }
  }

  std::string check_url(std::string url, const std::string& path) const {
    url = std::string(trim(url));
    const std::string lower = to_lower(url);
    const std::size_t scheme_end = lower.starts_with("https://")  ? 8
                                   : lower.starts_with("http://") ? 7
                                                                  : 0;
    const bool has_host = scheme_end != 0 && url.size() > scheme_end && url[scheme_end] != '/';
    if (!has_host || url.find_first_of(" \t\r\n") != std::string::npos) {
      fail(path, fmt::format("'{}' is not an http(s) URL", url));
    }
    while (url.back() == '/') url.pop_back();  // the host keeps it from emptying
    return url;
  }

  // base_url precedence: the config value, then the environment, then the built-in default.
  // `configured` is null when the config does not set base_url.
  void resolve_base_url(ProviderConfig& provider, const YAML::Node* configured,
                        const std::string& path) const {
    if (configured != nullptr) {
      provider.base_url =
          check_url(read_string(*configured, path + ".base_url"), path + ".base_url");
      return;
    }
    const AdapterDescriptor& descriptor = descriptor_of(provider);
    for (std::string_view variable : descriptor.base_url_env) {
      std::optional<std::string> value = env_.get(std::string(variable));
      if (!value || trim(*value).empty()) continue;
      std::string url = descriptor.base_url_from_env != nullptr
                            ? descriptor.base_url_from_env(*value)
                            : std::move(*value);
      provider.base_url =
          check_url(std::move(url), fmt::format("{}.base_url (from {})", path, variable));
      return;
    }
    if (descriptor.default_base_url.empty()) {
      fail(path + ".base_url", fmt::format("missing (required for type {})", provider.type));
    }
    provider.base_url = std::string(descriptor.default_base_url);
  }

  void resolve_api_key(ProviderConfig& provider) const {
    if (provider.api_key_env.empty()) return;
    if (std::optional<std::string> key = env_.get(provider.api_key_env)) {
      provider.api_key = std::string(trim(*key));
    }
  }

  // The config's `type`, or the built-in provider's when the name is one.
  std::string provider_type(const std::string& name, const YAML::Node& node,
                            const std::string& path) const {
    const AdapterRegistry& registry = adapter_registry();
    if (node.IsMap() && node["type"]) {
      std::string type = read_string(node["type"], path + ".type");
      if (registry.find(type) == nullptr) {
        fail(path + ".type",
             fmt::format("unknown type '{}' (expected {})", type, join(registry.types(), ", ")));
      }
      return type;
    }
    if (const Adapter* built_in = registry.find_builtin(name)) return std::string(built_in->type());
    fail(path + ".type", "missing (required for a provider that is not built in: " +
                             join(registry.builtin_names(), ", ") + ")");
  }

  // One key of providers.NAME other than type and base_url.
  void parse_provider_key(const std::string& key, const YAML::Node& value,
                          const std::string& key_path, ProviderConfig& provider) const {
    if (key == "api_key_env") {
      provider.api_key_env = std::string(trim(read_string(value, key_path)));
      if (provider.api_key_env.empty()) fail(key_path, "empty");
    } else if (key == "headers") {
      parse_headers(value, key_path, provider.extra_headers);
    } else if (key == "max_in_flight") {
      provider.max_in_flight = read_uint(value, key_path, 0);
    } else if (key == "context_window") {
      provider.context_window = read_uint(value, key_path, 0);
    } else if (key == "fallback_model") {
      provider.fallback_model = read_string(value, key_path);
    } else if (key == "default_max_tokens") {
      provider.default_max_tokens = read_uint(value, key_path, 1);
    } else if (key == "stream_upstream") {
      provider.stream_upstream = read_bool(value, key_path);
    } else if (key == "temperature") {
      provider.temperature = read_temperature(value, key_path);
    } else {
      parse_policy_key(key, value, key_path, provider.policy);
    }
  }

  ProviderConfig parse_provider(const std::string& name, const YAML::Node& node,
                                const WorkerConfig& config) const {
    const std::string path = "providers." + name;
    if (name.empty()) fail("providers", "a provider name is empty");
    if (name.find('/') != std::string::npos) {
      fail(path, "provider names must not contain '/' (targets are written provider/model)");
    }
    if (!node.IsNull()) {
      expect_map(node, path);
      check_keys(node, path,
                 with_policy_keys({"type", "base_url", "api_key_env", "headers", "max_in_flight",
                                   "context_window", "fallback_model", "default_max_tokens",
                                   "stream_upstream", "temperature"}));
    }
    ProviderConfig provider;
    provider.name = name;
    provider.policy = config.defaults;
    provider.temperature = config.temperature;
    provider.type = provider_type(name, node, path);
    const YAML::Node base_url = node.IsMap() ? node["base_url"] : YAML::Node();
    const bool configured = node.IsMap() && base_url.IsDefined();
    resolve_base_url(provider, configured ? &base_url : nullptr, path);
    provider.api_key_env = std::string(descriptor_of(provider).api_key_env);
    if (node.IsMap()) {
      for (const auto& entry : node) {
        const std::string key = entry.first.as<std::string>();
        if (key == "type" || key == "base_url") continue;
        parse_provider_key(key, entry.second, path + "." + key, provider);
      }
      check_policy(provider.policy, path);
    }
    resolve_api_key(provider);
    return provider;
  }

  void parse_headers(const YAML::Node& node, const std::string& path, HttpHeaders& headers) const {
    expect_map(node, path);
    for (const auto& entry : node) {
      const std::string name = scalar_key(entry.first, path);
      const std::string header_path = path + "." + name;
      const std::string value = read_string(entry.second, header_path);
      // A CR or LF would let a config value inject headers of its own.
      if (name.empty() || name.find_first_of(":\r\n \t") != std::string::npos) {
        fail(header_path, "not a valid header name");
      }
      if (value.find_first_of("\r\n") != std::string::npos) {
        fail(header_path, "header values must be one line");
      }
      headers.push_back(HttpHeader{name, value});
    }
  }

  void add_built_ins_from_environment(WorkerConfig& config) const {
    for (const AdapterPtr& adapter : adapter_registry().adapters()) {
      const AdapterDescriptor& descriptor = adapter->descriptor();
      if (descriptor.builtin_name.empty()) continue;
      // Cloud providers are served only when their key is there; Ollama needs none.
      if (!descriptor.api_key_env.empty()) {
        std::optional<std::string> key = env_.get(std::string(descriptor.api_key_env));
        if (!key || trim(*key).empty()) continue;
      }
      const std::string name(descriptor.builtin_name);
      config.providers[name] = parse_provider(name, YAML::Node(), config);
    }
  }

  std::string configured_names(const WorkerConfig& config) const {
    std::vector<std::string_view> names;
    for (const auto& [name, provider] : config.providers) names.push_back(name);
    return join(names, ", ");
  }

  void require_provider(const WorkerConfig& config, const std::string& name,
                        const std::string& path) const {
    if (config.providers.count(name) == 0) {
      fail(path, fmt::format("provider '{}' is not configured (configured: {})", name,
                             configured_names(config)));
    }
  }

  void parse_fallbacks(const YAML::Node& node, WorkerConfig& config) const {
    const std::string path = "defaults.fallbacks";
    if (node.IsNull()) return;
    if (!node.IsSequence()) fail(path, "expected a list, got " + describe(node));
    for (std::size_t i = 0; i < node.size(); ++i) {
      const YAML::Node item = node[i];
      const std::string item_path = fmt::format("{}[{}]", path, i);
      protocol::Target target;
      if (item.IsScalar()) {
        // Split on the FIRST '/': model names may contain '/' themselves.
        const std::string text = item.Scalar();
        const std::size_t slash = text.find('/');
        if (slash == std::string::npos || slash == 0 || slash + 1 == text.size()) {
          fail(item_path, fmt::format("expected 'provider/model', got '{}'", text));
        }
        target.provider = text.substr(0, slash);
        target.model = text.substr(slash + 1);
      } else if (item.IsMap()) {
        check_keys(item, item_path, {"provider", "model"});
        if (!item["provider"]) fail(item_path + ".provider", "missing");
        if (!item["model"]) fail(item_path + ".model", "missing");
        target.provider = read_string(item["provider"], item_path + ".provider");
        target.model = read_string(item["model"], item_path + ".model");
        if (target.model.empty()) fail(item_path + ".model", "empty");
      } else {
        fail(item_path, "expected 'provider/model' or {provider, model}, got " + describe(item));
      }
      require_provider(config, target.provider, item_path);
      config.fallbacks.push_back(std::move(target));
    }
  }

  static std::string missing_fallback_model(const ProviderConfig& provider) {
    const std::string_view example = descriptor_of(provider).default_model;
    return fmt::format(
        "provider '{}' has no fallback_model (set providers.{}.fallback_model{}, or list it in "
        "fallbacks as '{}/MODEL')",
        provider.name, provider.name, example.empty() ? "" : fmt::format(", e.g. {}", example),
        provider.name);
  }

  void parse_fallback_providers(const YAML::Node& node, WorkerConfig& config) const {
    const std::string path = "defaults.fallback_providers";
    if (node.IsNull()) return;
    if (!node.IsSequence()) fail(path, "expected a list, got " + describe(node));
    for (std::size_t i = 0; i < node.size(); ++i) {
      const std::string item_path = fmt::format("{}[{}]", path, i);
      const std::string name = read_string(node[i], item_path);
      require_provider(config, name, item_path);
      if (config.providers.at(name).fallback_model.empty()) {
        fail(item_path, missing_fallback_model(config.providers.at(name)));
      }
      config.fallback_providers.push_back(name);
    }
  }

  std::string source_;
  const Environment& env_;
};

}  // namespace

WorkerConfig parse_config(const std::string& yaml_text, const std::string& source_name,
                          const Environment& env) {
  return ConfigParser(source_name, env).parse(yaml_text);
}

std::vector<std::string> config_warnings(const WorkerConfig& config) {
  std::vector<std::string> warnings;
  for (const auto& [name, provider] : config.providers) {
    if (!provider.api_key.empty()) continue;
    // The rule the adapters apply when they build a request: some formats always send a key;
    // the others only when api_key_env names one.
    const bool key_required = descriptor_of(provider).key_required;
    if (!key_required && provider.api_key_env.empty()) continue;
    if (provider.api_key_env.empty()) {
      warnings.push_back(fmt::format(
          "provider '{}' has no API key (set providers.{}.api_key_env): every job for it will "
          "fail with authentication",
          name, name));
      continue;
    }
    warnings.push_back(fmt::format(
        "provider '{}' has no API key: {} is not set (or empty) in this worker's environment; "
        "every job for it will fail with authentication until it is set and the worker restarted",
        name, provider.api_key_env));
  }
  return warnings;
}

WorkerConfig load_config(const std::string& path, const Environment& env) {
  WorkerConfig config;
  if (path.empty()) {
    config = parse_config("", "(built-in configuration)", env);
  } else {
    std::ifstream file(path, std::ios::binary);
    if (!file) {
      throw ConfigError(fmt::format("{}: cannot open: {}", path, std::strerror(errno)));
    }
    std::ostringstream text;
    text << file.rdbuf();
    if (file.bad()) throw ConfigError(fmt::format("{}: cannot read", path));
    config = parse_config(text.str(), path, env);
    // Key files named in the config are found next to it, wherever the worker starts.
    const std::filesystem::path directory = std::filesystem::path(path).parent_path();
    for (std::string* key_file : {&config.broker.public_key_file, &config.broker.secret_key_file}) {
      if (!key_file->empty() && std::filesystem::path(*key_file).is_relative()) {
        *key_file = (directory / *key_file).string();
      }
    }
  }
  load_prices(config, path);
  for (const std::string& warning : config_warnings(config)) spdlog::warn("{}", warning);
  return config;
}

void load_prices(WorkerConfig& config, const std::string& config_path) {
  std::string file = config.prices_file;
  if (!file.empty() && std::filesystem::path(file).is_relative() && !config_path.empty()) {
    file = (std::filesystem::path(config_path).parent_path() / file).string();
  }
  if (file.empty()) {
    if (auto found = find_default_price_file()) file = *found;
  }
  PriceTable table;
  if (file.empty()) {
    spdlog::warn(
        "no price table found (the worker looks in ../share/llm-dispatcher/ next to its "
        "executable, then {}): results carry cost_usd only for the config's prices:",
        DISPATCH_PRICES_INSTALL_PATH);
  } else {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw ConfigError(fmt::format("{}: cannot open: {}", file, std::strerror(errno)));
    std::ostringstream text;
    text << in.rdbuf();
    auto parsed = parse_price_file(text.str(), file);
    if (!parsed) throw ConfigError(parsed.error());
    table = std::move(parsed).value();
    spdlog::info("price table {} (dated {}): {} price(s)", file, table.date, table.size());
  }
  table.merge(config.price_overrides);
  config.prices = std::move(table);
}

}  // namespace dispatch::worker
