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
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "text_util.hpp"

namespace dispatch::worker {

std::optional<std::string> ProcessEnvironment::get(const std::string& name) const {
  const char* value = std::getenv(name.c_str());
  if (value == nullptr) return std::nullopt;
  return std::string(value);
}

namespace {

constexpr std::array<std::string_view, 5> kTypes = {"ollama", "openai", "openai-compatible",
                                                    "dashscope", "anthropic"};

// Where a type finds its base URL and key when the config does not say.
struct TypeDefaults {
  std::string_view type;
  std::vector<std::string_view> base_url_env;  // first one set wins
  std::string_view default_base_url;           // "" = base_url is required
  std::string_view api_key_env;                // "" = no key needed
};

const TypeDefaults& type_defaults(std::string_view type) {
  static const std::array<TypeDefaults, 5> kDefaults = {{
      {"ollama", {"OLLAMA_HOST"}, "http://localhost:11434", ""},
      {"openai", {"OPENAI_BASE_URL"}, "https://api.openai.com/v1", "OPENAI_API_KEY"},
      {"openai-compatible", {}, "", ""},
      // DASHSCOPE_HTTP_BASE_URL is what the DashScope SDK reads; the other is a common alias.
      {"dashscope",
       {"DASHSCOPE_HTTP_BASE_URL", "DASHSCOPE_BASE_URL"},
       "https://dashscope.aliyuncs.com/api/v1",
       "DASHSCOPE_API_KEY"},
      {"anthropic", {"ANTHROPIC_BASE_URL"}, "https://api.anthropic.com", "ANTHROPIC_API_KEY"},
  }};
  for (const TypeDefaults& defaults : kDefaults) {
    if (defaults.type == type) return defaults;
  }
  return kDefaults[2];
}

struct BuiltIn {
  std::string_view name;
  std::string_view type;
};
// The seed's provider names.
constexpr std::array<BuiltIn, 4> kBuiltIns = {
    {{"ollama", "ollama"}, {"ali", "dashscope"}, {"openai", "openai"}, {"claude", "anthropic"}}};

const BuiltIn* find_built_in(std::string_view name) {
  for (const BuiltIn& built_in : kBuiltIns) {
    if (built_in.name == name) return &built_in;
  }
  return nullptr;
}

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

// OLLAMA_HOST is what `ollama serve` binds, so users set it without a scheme ("0.0.0.0:11434",
// "myhost", ":11434"); Ollama's own client fills in http://, 127.0.0.1 and port 11434.
std::string normalise_ollama_host(std::string_view value) {
  std::string url(trim(value));
  std::string scheme = "http";
  if (const std::size_t sep = url.find("://"); sep != std::string::npos) {
    scheme = to_lower(url.substr(0, sep));
    url = url.substr(sep + 3);
  }
  std::string host = url;
  std::string path;
  if (const std::size_t slash = url.find('/'); slash != std::string::npos) {
    host = url.substr(0, slash);
    path = url.substr(slash);
  }
  if (host.empty() || host.front() == ':') host = "127.0.0.1" + host;
  const std::size_t bracket = host.rfind(']');
  const std::size_t colon = host.rfind(':');
  const bool has_port =
      colon != std::string::npos && (bracket == std::string::npos || colon > bracket);
  if (!has_port && scheme == "http") host += ":11434";
  while (!path.empty() && path.back() == '/') path.pop_back();
  return scheme + "://" + host + path;
}

class ConfigParser {
 public:
  ConfigParser(std::string source, const Environment& env)
      : source_(std::move(source)), env_(env) {}

  WorkerConfig parse(const std::string& text) {
    YAML::Node root;
    try {
      root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
      throw ConfigError(fmt::format("{}: line {}, column {}: {}", source_, e.mark.line + 1,
                                    e.mark.column + 1, e.msg));
    }
    WorkerConfig config;
    if (root.IsNull()) {
      add_built_ins_from_environment(config);
      return config;
    }
    expect_map(root, "(top level)");
    check_keys(root, "", {"defaults", "providers", "worker"});

    if (YAML::Node worker = root["worker"]; worker && !worker.IsNull()) {
      expect_map(worker, "worker");
      check_keys(worker, "worker", {"concurrency"});
      if (YAML::Node n = worker["concurrency"])
        config.concurrency = read_uint(n, "worker.concurrency", 1);
    }

    YAML::Node defaults = root["defaults"];
    if (defaults && !defaults.IsNull()) {
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

    YAML::Node providers = root["providers"];
    if (!providers) {
      add_built_ins_from_environment(config);
    } else {
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
    const std::size_t scheme_end = starts_with(lower, "https://")  ? 8
                                   : starts_with(lower, "http://") ? 7
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
    const TypeDefaults& defaults = type_defaults(provider.type);
    for (std::string_view variable : defaults.base_url_env) {
      std::optional<std::string> value = env_.get(std::string(variable));
      if (!value || trim(*value).empty()) continue;
      std::string url = provider.type == "ollama" ? normalise_ollama_host(*value) : *value;
      provider.base_url =
          check_url(std::move(url), fmt::format("{}.base_url (from {})", path, variable));
      return;
    }
    if (defaults.default_base_url.empty()) {
      fail(path + ".base_url", fmt::format("missing (required for type {})", provider.type));
    }
    provider.base_url = std::string(defaults.default_base_url);
  }

  void resolve_api_key(ProviderConfig& provider) const {
    if (provider.api_key_env.empty()) return;
    if (std::optional<std::string> key = env_.get(provider.api_key_env)) {
      provider.api_key = std::string(trim(*key));
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

    const BuiltIn* built_in = find_built_in(name);
    if (node.IsMap() && node["type"]) {
      provider.type = read_string(node["type"], path + ".type");
      if (std::find(kTypes.begin(), kTypes.end(), provider.type) == kTypes.end()) {
        fail(path + ".type", fmt::format("unknown type '{}' (expected {})", provider.type,
                                         join({kTypes.begin(), kTypes.end()}, ", ")));
      }
    } else if (built_in != nullptr) {
      provider.type = std::string(built_in->type);
    } else {
      fail(path + ".type",
           "missing (required for a provider that is not built in: ollama, ali, openai, claude)");
    }

    if (!node.IsMap()) {
      resolve_base_url(provider, nullptr, path);
      provider.api_key_env = std::string(type_defaults(provider.type).api_key_env);
      resolve_api_key(provider);
      return provider;
    }

    const YAML::Node base_url = node["base_url"];
    resolve_base_url(provider, base_url ? &base_url : nullptr, path);
    provider.api_key_env = std::string(type_defaults(provider.type).api_key_env);
    for (const auto& entry : node) {
      const std::string key = entry.first.as<std::string>();
      const std::string key_path = path + "." + key;
      const YAML::Node& value = entry.second;
      if (key == "type" || key == "base_url") {
        continue;
      } else if (key == "api_key_env") {
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
    check_policy(provider.policy, path);
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
    for (const BuiltIn& built_in : kBuiltIns) {
      const TypeDefaults& defaults = type_defaults(built_in.type);
      // Cloud providers are served only when their key is there; Ollama needs none.
      if (!defaults.api_key_env.empty()) {
        std::optional<std::string> key = env_.get(std::string(defaults.api_key_env));
        if (!key || trim(*key).empty()) continue;
      }
      config.providers[std::string(built_in.name)] =
          parse_provider(std::string(built_in.name), YAML::Node(), config);
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

  void parse_fallback_providers(const YAML::Node& node, WorkerConfig& config) const {
    const std::string path = "defaults.fallback_providers";
    if (node.IsNull()) return;
    if (!node.IsSequence()) fail(path, "expected a list, got " + describe(node));
    for (std::size_t i = 0; i < node.size(); ++i) {
      const std::string item_path = fmt::format("{}[{}]", path, i);
      const std::string name = read_string(node[i], item_path);
      require_provider(config, name, item_path);
      if (config.providers.at(name).fallback_model.empty()) {
        fail(item_path, fmt::format("provider '{}' has no fallback_model (set providers.{}."
                                    "fallback_model, or list it in fallbacks as '{}/MODEL')",
                                    name, name, name));
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
    // The same rule the adapters apply when they build a request (detail::check_key): these
    // types always send a key; the others only when api_key_env names one.
    const bool key_required =
        provider.type == "openai" || provider.type == "anthropic" || provider.type == "dashscope";
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
  }
  for (const std::string& warning : config_warnings(config)) spdlog::warn("{}", warning);
  return config;
}

}  // namespace dispatch::worker
