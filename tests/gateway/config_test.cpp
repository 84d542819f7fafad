#include "dispatch/gateway/config.hpp"

#include <gtest/gtest.h>

#include <map>

#include "dispatch/gateway/auth.hpp"
#include "dispatch/gateway/listen.hpp"

namespace dispatch::gateway {
namespace {

EnvLookup env_of(std::map<std::string, std::string> values) {
  return [values = std::move(values)](const std::string& name) -> std::optional<std::string> {
    const auto it = values.find(name);
    if (it == values.end()) return std::nullopt;
    return it->second;
  };
}

std::string error_of(const std::string& yaml, const EnvLookup& env = env_of({})) {
  auto config = parse_gateway_config(yaml, "gateway.yaml", env);
  EXPECT_FALSE(config.ok()) << yaml;
  return config.ok() ? std::string() : config.error();
}

TEST(GatewayConfigTest, TheDocumentedExample) {
  const std::string yaml = R"(
keys:
  - name: team-a
    key_env: TEAM_A_KEY
    models: ["openai/*", gpt-4o]
    tenant: research
  - name: ci
    key_sha256: 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824
models:
  gpt-4o: {target: openai/gpt-4o, fallbacks: [claude/claude-sonnet-4-5], timeout_ms: 30000}
  local: ollama/llama3.2
default_provider: ollama
broker: {endpoint: "tcp://10.0.0.5:5555"}
limits: {max_body_bytes: 2097152, max_header_bytes: 8192, max_connections: 500,
         header_timeout_ms: 2000, body_timeout_ms: 3000, idle_timeout_ms: 4000}
)";
  auto config = parse_gateway_config(yaml, "gateway.yaml", env_of({{"TEAM_A_KEY", "sk-team-a"}}));
  ASSERT_TRUE(config.ok()) << config.error();
  ASSERT_EQ(config->keys.size(), 2u);
  EXPECT_EQ(config->keys[0].name, "team-a");
  EXPECT_EQ(config->keys[0].digest, sha256("sk-team-a"));
  EXPECT_EQ(config->keys[0].models, (std::vector<std::string>{"openai/*", "gpt-4o"}));
  EXPECT_EQ(config->keys[0].tenant, "research");
  EXPECT_EQ(config->keys[1].digest, sha256("hello"));  // sha256("hello") is the hex above
  EXPECT_EQ(config->keys[1].tenant, "ci");             // the name by default
  EXPECT_TRUE(config->keys[1].models.empty());
  const auto& alias = config->models.aliases.at("gpt-4o");
  EXPECT_EQ(alias.target, (protocol::Target{"openai", "gpt-4o"}));
  EXPECT_EQ(alias.fallbacks, (std::vector<protocol::Target>{{"claude", "claude-sonnet-4-5"}}));
  EXPECT_EQ(alias.timeout_ms, 30000u);
  EXPECT_EQ(config->models.aliases.at("local").target, (protocol::Target{"ollama", "llama3.2"}));
  EXPECT_FALSE(config->models.aliases.at("local").fallbacks.has_value());
  EXPECT_EQ(config->models.default_provider, "ollama");
  EXPECT_EQ(config->broker_endpoint, "tcp://10.0.0.5:5555");
  EXPECT_EQ(config->limits.max_body_bytes, 2097152u);
  EXPECT_EQ(config->limits.max_header_bytes, 8192u);
  EXPECT_EQ(config->limits.max_connections, 500u);
  EXPECT_EQ(config->limits.header_timeout, std::chrono::milliseconds(2000));
  EXPECT_EQ(config->limits.body_timeout, std::chrono::milliseconds(3000));
  EXPECT_EQ(config->limits.idle_timeout, std::chrono::milliseconds(4000));
}

TEST(GatewayConfigTest, EmptyIsTheDefaults) {
  auto config = parse_gateway_config("", "gateway.yaml", env_of({}));
  ASSERT_TRUE(config.ok());
  EXPECT_TRUE(config->keys.empty());
  EXPECT_TRUE(config->models.aliases.empty());
  EXPECT_EQ(config->limits.max_connections, 10'000u);
}

TEST(GatewayConfigTest, ErrorsNameTheFileTheKeyAndTheProblem) {
  const std::pair<std::string, std::string> cases[] = {
      {"keyz: []",
       "gateway.yaml: keyz: unknown key (expected one of: keys, models, "
       "default_provider, broker, limits)"},
      {"keys: []",
       "gateway.yaml: keys: empty list (remove `keys` to serve without authentication)"},
      {"keys: [{name: a}]",
       "gateway.yaml: keys[0]: give exactly one of key_env (a variable holding the key) or "
       "key_sha256"},
      {"keys: [{name: a, key: sk-1}]",
       "gateway.yaml: keys[0].key: unknown key (give the key as key_env or key_sha256)"},
      {"keys: [{name: a, key_env: NOPE}]",
       "gateway.yaml: keys[0].key_env: NOPE is not set (or empty)"},
      {"keys: [{name: a, key_sha256: abc}]",
       "gateway.yaml: keys[0].key_sha256: expected 64 lowercase hex digits (sha256sum's output)"},
      {"keys: [{key_env: K}]", "gateway.yaml: keys[0].name: missing"},
      {"keys: [{name: a, key_env: K}, {name: a, key_env: K2}]",
       "gateway.yaml: keys[1].name: duplicate name 'a'"},
      {"keys: [{name: a, key_env: K}, {name: b, key_env: K}]",
       "gateway.yaml: keys[1]: the same key as 'a'"},
      {"models: {gpt: gpt-4o}",
       "gateway.yaml: models.gpt: target 'gpt-4o' is not \"provider/model\""},
      {"models: {gpt: {fallbacks: [a/b]}}", "gateway.yaml: models.gpt.target: missing"},
      {"models: {gpt: {target: a/b, timeout_ms: -5}}",
       "gateway.yaml: models.gpt.timeout_ms: expected a whole number, got '-5'"},
      {"default_provider: openai/gpt-4o",
       "gateway.yaml: default_provider: a provider name, without '/'"},
      {"limits: {max_connections: 0}",
       "gateway.yaml: limits.max_connections: 0 is out of range (1 to 10000000)"},
      {"limits: {max_body: 5}",
       "gateway.yaml: limits.max_body: unknown key (expected one of: "
       "max_body_bytes, max_header_bytes, max_connections, "
       "header_timeout_ms, body_timeout_ms, idle_timeout_ms)"},
      {"broker: tcp://x:1", "gateway.yaml: broker: expected a map, got 'tcp://x:1'"},
      {"keys: [{name: a, key_env: K, tenant: " + std::string(129, 't') + "}]",
       "gateway.yaml: keys[0].tenant: the tenant of key 'a' is 129 bytes; the broker takes at "
       "most 128"},
      {"keys: [{name: " + std::string(129, 'n') + ", key_env: K}]",
       "gateway.yaml: keys[0].name: the tenant of key '" + std::string(40, 'n') +
           "...' is 129 bytes; the broker takes at most 128 (it defaults to the name: give a "
           "shorter `tenant`)"},
  };
  const auto env = env_of({{"K", "sk-1"}, {"K2", "sk-2"}});
  for (const auto& [yaml, message] : cases) EXPECT_EQ(error_of(yaml, env), message);
  EXPECT_EQ(error_of("keys: [a").rfind("gateway.yaml: line ", 0), 0u);
}

TEST(GatewayConfigTest, MissingFile) {
  auto config = load_gateway_config("/nonexistent/gateway.yaml", env_of({}));
  ASSERT_FALSE(config.ok());
  EXPECT_EQ(config.error(), "/nonexistent/gateway.yaml: cannot open: No such file or directory");
}

TEST(ListenTest, Addresses) {
  EXPECT_EQ(parse_listen("127.0.0.1:8080")->host, "127.0.0.1");
  EXPECT_EQ(parse_listen("127.0.0.1:8080")->port, 8080);
  EXPECT_EQ(parse_listen("localhost:0")->host, "127.0.0.1");
  EXPECT_EQ(parse_listen("[::1]:9")->host, "::1");
  EXPECT_EQ(parse_listen("[::1]:9")->url(9), "http://[::1]:9");
  EXPECT_EQ(parse_listen("*:80")->host, "0.0.0.0");
  EXPECT_EQ(parse_listen("0.0.0.0:80")->url(81), "http://0.0.0.0:81");
  EXPECT_EQ(parse_listen("8080").error(), "--listen '8080': expected HOST:PORT");
  EXPECT_EQ(parse_listen("a:70000").error(),
            "--listen 'a:70000': the port must be a number from 0 to 65535");
  EXPECT_EQ(parse_listen("example.com:80").error(),
            "--listen 'example.com:80': 'example.com' is not an IP address (or localhost, *)");
  EXPECT_TRUE(is_loopback("127.0.0.1"));
  EXPECT_TRUE(is_loopback("127.3.2.1"));
  EXPECT_TRUE(is_loopback("::1"));
  EXPECT_FALSE(is_loopback("0.0.0.0"));
  EXPECT_FALSE(is_loopback("10.0.0.1"));
}

TEST(AuthTest, Sha256AndKeys) {
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(presented_key("Bearer sk-1", ""), "sk-1");
  EXPECT_EQ(presented_key("bearer  sk-1 ", "other"), "sk-1");
  EXPECT_EQ(presented_key("", " sk-2"), "sk-2");
  EXPECT_EQ(presented_key("Basic abc", "sk-3"), "sk-3");
  EXPECT_EQ(presented_key("", ""), "");
  KeyRing ring({ApiKey{"a", sha256("sk-a"), {}, "a"}, ApiKey{"b", sha256("sk-b"), {}, "b"}});
  EXPECT_TRUE(ring.enabled());
  ASSERT_NE(ring.find("sk-b"), nullptr);
  EXPECT_EQ(ring.find("sk-b")->name, "b");
  EXPECT_EQ(ring.find("sk-c"), nullptr);
  EXPECT_EQ(ring.find(""), nullptr);
  EXPECT_EQ(ring.find("sk-"), nullptr);
  EXPECT_FALSE(KeyRing({}).enabled());
}

TEST(AuthTest, ModelGlobs) {
  const ApiKey key{"a", {}, {"openai/*", "gpt-4o"}, "a"};
  EXPECT_TRUE(model_allowed(key, "openai/gpt-4o-mini", {"openai", "gpt-4o-mini"}));
  EXPECT_TRUE(model_allowed(key, "gpt-4o", {"claude", "x"}));          // the alias name
  EXPECT_TRUE(model_allowed(key, "fast", {"openai", "gpt-4o-mini"}));  // what it resolves to
  EXPECT_FALSE(model_allowed(key, "claude/x", {"claude", "x"}));
  EXPECT_TRUE(model_allowed(ApiKey{"all", {}, {}, "all"}, "claude/x", {"claude", "x"}));
}

}  // namespace
}  // namespace dispatch::gateway
