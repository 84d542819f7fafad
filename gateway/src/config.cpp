// gateway.yaml. Unknown keys are errors: a misspelt key silently ignored is a default silently
// used (or, for `keys`, a gateway silently open to everyone).

#include "dispatch/gateway/config.hpp"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "dispatch/common/strings.hpp"
#include "dispatch/gateway/auth.hpp"
#include "dispatch/protocol/codec.hpp"
#include "dispatch/request.hpp"

namespace dispatch::gateway {

EnvLookup process_environment() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* value = std::getenv(name.c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

namespace {

// Thrown inside the parser only; parse_gateway_config turns it into the Result's error.
struct ConfigProblem {
  std::string text;
};

class ConfigReader {
 public:
  ConfigReader(std::string_view source, const EnvLookup& env) : source_(source), env_(env) {}

  GatewayConfig read(const YAML::Node& root) {
    GatewayConfig config;
    if (root.IsNull()) return config;
    expect_map(root, "(top level)");
    check_keys(root, "", {"keys", "models", "default_provider", "broker", "limits"});
    if (YAML::Node keys = root["keys"]; keys && !keys.IsNull()) config.keys = read_keys(keys);
    if (YAML::Node models = root["models"]; models && !models.IsNull()) {
      config.models.aliases = read_aliases(models);
    }
    if (YAML::Node provider = root["default_provider"]; provider && !provider.IsNull()) {
      config.models.default_provider = read_string(provider, "default_provider");
      if (config.models.default_provider.find('/') != std::string::npos) {
        fail("default_provider", "a provider name, without '/'");
      }
    }
    if (YAML::Node broker = root["broker"]; broker && !broker.IsNull()) {
      expect_map(broker, "broker");
      check_keys(broker, "broker", {"endpoint"});
      if (YAML::Node n = broker["endpoint"]) {
        config.broker_endpoint = read_string(n, "broker.endpoint");
      }
    }
    if (YAML::Node limits = root["limits"]; limits && !limits.IsNull()) {
      config.limits = read_limits(limits);
    }
    return config;
  }

 private:
  [[noreturn]] void fail(std::string_view path, std::string_view problem) const {
    throw ConfigProblem{fmt::format("{}: {}: {}", source_, path, problem)};
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

  void expect_list(const YAML::Node& node, std::string_view path) const {
    if (!node.IsSequence()) fail(path, "expected a list, got " + describe(node));
  }

  void check_keys(const YAML::Node& map, const std::string& path,
                  const std::vector<std::string_view>& allowed) const {
    std::set<std::string> seen;
    for (const auto& entry : map) {
      const std::string key = entry.first.IsScalar() ? entry.first.Scalar() : "?";
      const std::string key_path = path.empty() ? key : path + "." + key;
      if (!seen.insert(key).second) fail(key_path, "duplicate key");
      if (std::find(allowed.begin(), allowed.end(), key) != allowed.end()) continue;
      if (key == "key") fail(key_path, "unknown key (give the key as key_env or key_sha256)");
      std::string expected;
      for (const auto name : allowed)
        expected += (expected.empty() ? "" : ", ") + std::string(name);
      fail(key_path, "unknown key (expected one of: " + expected + ")");
    }
  }

  std::string read_string(const YAML::Node& node, const std::string& path) const {
    if (!node.IsScalar() || node.Scalar().empty()) {
      fail(path, "expected a non-empty string, got " + describe(node));
    }
    return node.Scalar();
  }

  uint64_t read_uint(const YAML::Node& node, const std::string& path, uint64_t minimum,
                     uint64_t maximum) const {
    const auto not_a_number = [&] { fail(path, "expected a whole number, got " + describe(node)); };
    if (!node.IsScalar() || node.Scalar().empty() || node.Scalar().front() == '-') not_a_number();
    uint64_t value = 0;
    try {
      value = node.as<uint64_t>();
    } catch (const YAML::Exception&) {
      not_a_number();
    }
    if (value < minimum || value > maximum) {
      fail(path, fmt::format("{} is out of range ({} to {})", value, minimum, maximum));
    }
    return value;
  }

  protocol::Target read_target(const YAML::Node& node, const std::string& path) const {
    const std::string text = read_string(node, path);
    try {
      return parse_target(text);
    } catch (const InvalidTargetError& e) {
      fail(path, e.what());
    }
  }

  std::vector<ApiKey> read_keys(const YAML::Node& keys);
  ApiKey read_key(const YAML::Node& node, const std::string& path);
  Sha256 read_key_digest(const YAML::Node& node, const std::string& path);
  std::map<std::string, formats::ModelAlias, std::less<>> read_aliases(const YAML::Node& models);
  formats::ModelAlias read_alias(const YAML::Node& node, const std::string& path);
  HttpLimits read_limits(const YAML::Node& limits);

  std::string source_;
  const EnvLookup& env_;
};

std::vector<ApiKey> ConfigReader::read_keys(const YAML::Node& keys) {
  expect_list(keys, "keys");
  if (keys.size() == 0) fail("keys", "empty list (remove `keys` to serve without authentication)");
  std::vector<ApiKey> out;
  std::set<std::string> names;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const std::string path = fmt::format("keys[{}]", i);
    ApiKey key = read_key(keys[i], path);
    if (!names.insert(key.name).second) fail(path + ".name", "duplicate name '" + key.name + "'");
    for (const ApiKey& other : out) {
      if (other.digest == key.digest) fail(path, "the same key as '" + other.name + "'");
    }
    out.push_back(std::move(key));
  }
  return out;
}

ApiKey ConfigReader::read_key(const YAML::Node& node, const std::string& path) {
  expect_map(node, path);
  check_keys(node, path, {"name", "key_env", "key_sha256", "models", "tenant"});
  ApiKey key;
  if (!node["name"]) fail(path + ".name", "missing");
  key.name = read_string(node["name"], path + ".name");
  key.digest = read_key_digest(node, path);
  if (YAML::Node models = node["models"]; models && !models.IsNull()) {
    expect_list(models, path + ".models");
    for (std::size_t i = 0; i < models.size(); ++i) {
      key.models.push_back(read_string(models[i], fmt::format("{}.models[{}]", path, i)));
    }
  }
  const bool named_tenant = static_cast<bool>(node["tenant"]);
  key.tenant = named_tenant ? read_string(node["tenant"], path + ".tenant") : key.name;
  // Checked here rather than at the first request: the broker would refuse every job of this
  // key as malformed, which a caller could only see as an opaque failure.
  if (key.tenant.size() > protocol::Limits::max_tenant) {
    fail(path + (named_tenant ? ".tenant" : ".name"),
         fmt::format("the tenant of key '{}' is {} bytes; the broker takes at most {}{}",
                     clip_marked(key.name, 40), key.tenant.size(), protocol::Limits::max_tenant,
                     named_tenant ? "" : " (it defaults to the name: give a shorter `tenant`)"));
  }
  return key;
}

Sha256 ConfigReader::read_key_digest(const YAML::Node& node, const std::string& path) {
  const bool by_env = static_cast<bool>(node["key_env"]);
  if (by_env == static_cast<bool>(node["key_sha256"])) {
    fail(path, "give exactly one of key_env (a variable holding the key) or key_sha256");
  }
  if (by_env) {
    const std::string name = read_string(node["key_env"], path + ".key_env");
    const std::optional<std::string> value = env_(name);
    if (!value || value->empty()) fail(path + ".key_env", name + " is not set (or empty)");
    return sha256(*value);
  }
  const std::string hex = read_string(node["key_sha256"], path + ".key_sha256");
  Sha256 digest{};
  const bool hex_ok = hex.size() == 64 && std::all_of(hex.begin(), hex.end(), [](char c) {
                        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
                      });
  if (!hex_ok) fail(path + ".key_sha256", "expected 64 lowercase hex digits (sha256sum's output)");
  for (std::size_t i = 0; i < digest.size(); ++i) {
    digest[i] = static_cast<unsigned char>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  }
  return digest;
}

std::map<std::string, formats::ModelAlias, std::less<>> ConfigReader::read_aliases(
    const YAML::Node& models) {
  expect_map(models, "models");
  std::map<std::string, formats::ModelAlias, std::less<>> aliases;
  for (const auto& entry : models) {
    const std::string name = read_string(entry.first, "models");
    const std::string path = "models." + name;
    if (aliases.count(name) != 0) fail(path, "duplicate alias");
    aliases[name] = read_alias(entry.second, path);
  }
  return aliases;
}

formats::ModelAlias ConfigReader::read_alias(const YAML::Node& node, const std::string& path) {
  formats::ModelAlias alias;
  if (node.IsScalar()) {  // `gpt-4o: openai/gpt-4o`, the short form
    alias.target = read_target(node, path);
    return alias;
  }
  expect_map(node, path);
  check_keys(node, path, {"target", "fallbacks", "timeout_ms"});
  if (!node["target"]) fail(path + ".target", "missing");
  alias.target = read_target(node["target"], path + ".target");
  if (YAML::Node fallbacks = node["fallbacks"]) {
    expect_list(fallbacks, path + ".fallbacks");
    alias.fallbacks.emplace();
    for (std::size_t i = 0; i < fallbacks.size(); ++i) {
      alias.fallbacks->push_back(
          read_target(fallbacks[i], fmt::format("{}.fallbacks[{}]", path, i)));
    }
  }
  if (YAML::Node timeout = node["timeout_ms"]) {
    alias.timeout_ms =
        static_cast<uint32_t>(read_uint(timeout, path + ".timeout_ms", 1, 86'400'000));
  }
  return alias;
}

HttpLimits ConfigReader::read_limits(const YAML::Node& limits) {
  expect_map(limits, "limits");
  check_keys(limits, "limits",
             {"max_body_bytes", "max_header_bytes", "max_connections", "header_timeout_ms",
              "body_timeout_ms", "idle_timeout_ms"});
  HttpLimits out;
  const auto size = [&](const char* key, std::size_t& field, uint64_t low, uint64_t high) {
    if (YAML::Node n = limits[key]) field = read_uint(n, std::string("limits.") + key, low, high);
  };
  const auto duration = [&](const char* key, std::chrono::milliseconds& field) {
    if (YAML::Node n = limits[key]) {
      field = std::chrono::milliseconds(read_uint(n, std::string("limits.") + key, 1, 3'600'000));
    }
  };
  size("max_body_bytes", out.max_body_bytes, 1024, 256ULL * 1024 * 1024);
  size("max_header_bytes", out.max_header_bytes, 1024, 1024 * 1024);
  size("max_connections", out.max_connections, 1, 10'000'000);
  duration("header_timeout_ms", out.header_timeout);
  duration("body_timeout_ms", out.body_timeout);
  duration("idle_timeout_ms", out.idle_timeout);
  return out;
}

}  // namespace

Result<GatewayConfig, std::string> parse_gateway_config(std::string_view yaml,
                                                        std::string_view source,
                                                        const EnvLookup& env) {
  try {
    const YAML::Node root = YAML::Load(std::string(yaml));
    return ConfigReader(source, env).read(root);
  } catch (const YAML::Exception& e) {
    return fmt::format("{}: line {}, column {}: {}", source, e.mark.line + 1, e.mark.column + 1,
                       e.msg);
  } catch (const ConfigProblem& problem) {
    return problem.text;
  }
}

Result<GatewayConfig, std::string> load_gateway_config(const std::string& path,
                                                       const EnvLookup& env) {
  std::ifstream file(path);
  if (!file) return path + ": cannot open: " + std::strerror(errno);
  std::ostringstream text;
  text << file.rdbuf();
  return parse_gateway_config(text.str(), path, env);
}

}  // namespace dispatch::gateway
