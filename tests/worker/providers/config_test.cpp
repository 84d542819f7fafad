#include "dispatch/worker/config.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "providers_test_support.hpp"

namespace dispatch::worker {
namespace {

using test::MapEnvironment;

WorkerConfig parse(const std::string& yaml, const Environment& env = MapEnvironment{}) {
  return parse_config(yaml, "dispatch.yaml", env);
}

std::string error_of(const std::string& yaml, const Environment& env = MapEnvironment{}) {
  try {
    parse(yaml, env);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "<no error>";
}

std::vector<std::string> names(const WorkerConfig& config) {
  std::vector<std::string> out;
  for (const auto& [name, provider] : config.providers) out.push_back(name);
  return out;
}

TEST(ConfigDefaults, NoFileServesOllamaOnlyWithoutKeys) {
  const WorkerConfig config = load_config("", MapEnvironment{});
  EXPECT_EQ(names(config), std::vector<std::string>{"ollama"});
  const ProviderConfig& ollama = config.providers.at("ollama");
  EXPECT_EQ(ollama.type, "ollama");
  EXPECT_EQ(ollama.base_url, "http://localhost:11434");
  EXPECT_EQ(ollama.api_key, "");
  EXPECT_EQ(ollama.api_key_env, "");
  // The documented defaults (README.md, "Worker configuration").
  EXPECT_EQ(config.temperature, std::optional<double>(0.7));
  EXPECT_TRUE(config.enable_fallback);
  EXPECT_TRUE(config.fallbacks.empty());
  EXPECT_EQ(config.concurrency, 1000u);
  EXPECT_EQ(config.defaults.timeout_ms, 30000u);
  EXPECT_EQ(config.defaults.retry_count, 3u);
  EXPECT_EQ(config.defaults.connect_timeout_ms, 5000u);
  EXPECT_EQ(config.defaults.first_token_timeout_ms, 10000u);
  EXPECT_EQ(config.defaults.idle_timeout_ms, 15000u);
  EXPECT_EQ(config.defaults.breaker_failures, 3u);
  EXPECT_EQ(config.defaults.breaker_cooldown_ms, 15000u);
  EXPECT_EQ(ollama.policy, config.defaults);
  EXPECT_EQ(ollama.temperature, std::optional<double>(0.7));
  EXPECT_TRUE(ollama.stream_upstream);
  EXPECT_EQ(ollama.default_max_tokens, 4096u);
}

TEST(ConfigDefaults, NoFileAddsEachCloudProviderWhoseKeyIsSet) {
  MapEnvironment env{{"OPENAI_API_KEY", "sk-openai"},
                     {"ANTHROPIC_API_KEY", "sk-ant"},
                     {"DASHSCOPE_API_KEY", " sk-dash\n"}};
  const WorkerConfig config = load_config("", env);
  EXPECT_EQ(names(config), (std::vector<std::string>{"ali", "claude", "ollama", "openai"}));
  const auto& openai = config.providers.at("openai");
  EXPECT_EQ(openai.type, "openai");
  EXPECT_EQ(openai.base_url, "https://api.openai.com/v1");
  EXPECT_EQ(openai.api_key, "sk-openai");
  EXPECT_EQ(openai.api_key_env, "OPENAI_API_KEY");
  const auto& claude = config.providers.at("claude");
  EXPECT_EQ(claude.type, "anthropic");
  EXPECT_EQ(claude.base_url, "https://api.anthropic.com");
  EXPECT_EQ(claude.api_key, "sk-ant");
  const auto& ali = config.providers.at("ali");
  EXPECT_EQ(ali.type, "dashscope");
  EXPECT_EQ(ali.base_url, "https://dashscope.aliyuncs.com/api/v1");
  EXPECT_EQ(ali.api_key, "sk-dash");  // whitespace around a key is never part of it
  EXPECT_EQ(ali.api_key_env, "DASHSCOPE_API_KEY");
}

TEST(ConfigDefaults, EmptyKeyVariableCountsAsUnset) {
  MapEnvironment env{{"OPENAI_API_KEY", ""}};
  EXPECT_EQ(names(load_config("", env)), std::vector<std::string>{"ollama"});
}

TEST(ConfigEnvironment, OllamaHostForms) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"0.0.0.0:11434", "http://0.0.0.0:11434"},
      {"myhost", "http://myhost:11434"},
      {"myhost:8080", "http://myhost:8080"},
      {":9999", "http://127.0.0.1:9999"},
      {"http://10.0.0.5:11434/", "http://10.0.0.5:11434"},
      {"https://ollama.example.com", "https://ollama.example.com"},
      {"[::1]:7000", "http://[::1]:7000"},
  };
  for (const auto& [value, expected] : cases) {
    MapEnvironment env{{"OLLAMA_HOST", value}};
    EXPECT_EQ(load_config("", env).providers.at("ollama").base_url, expected) << value;
  }
}

TEST(ConfigEnvironment, BaseUrlVariables) {
  MapEnvironment env{
      {"OPENAI_API_KEY", "k1"},    {"OPENAI_BASE_URL", "http://proxy:1/v1/"},
      {"ANTHROPIC_API_KEY", "k2"}, {"ANTHROPIC_BASE_URL", "http://claude-proxy:2"},
      {"DASHSCOPE_API_KEY", "k3"}, {"DASHSCOPE_BASE_URL", "https://alias.example/api/v1"}};
  WorkerConfig config = load_config("", env);
  EXPECT_EQ(config.providers.at("openai").base_url, "http://proxy:1/v1");
  EXPECT_EQ(config.providers.at("claude").base_url, "http://claude-proxy:2");
  EXPECT_EQ(config.providers.at("ali").base_url, "https://alias.example/api/v1");
  // The SDK's own variable wins over the alias.
  env.set("DASHSCOPE_HTTP_BASE_URL", "https://dashscope-intl.aliyuncs.com/api/v1");
  config = load_config("", env);
  EXPECT_EQ(config.providers.at("ali").base_url, "https://dashscope-intl.aliyuncs.com/api/v1");
}

TEST(ConfigEnvironment, BaseUrlPrecedenceConfigThenEnvironmentThenDefault) {
  MapEnvironment env{{"OPENAI_BASE_URL", "http://from-env/v1"}};
  WorkerConfig config = parse(R"(
providers:
  openai: {base_url: "http://from-config/v1"}
  claude: {}
)",
                              env);
  EXPECT_EQ(config.providers.at("openai").base_url, "http://from-config/v1");
  EXPECT_EQ(config.providers.at("claude").base_url, "https://api.anthropic.com");
  config = parse("providers: {openai: {base_url: 'http://x//'}}", env);
  EXPECT_EQ(config.providers.at("openai").base_url, "http://x");
  config = parse("providers: {openai: {max_in_flight: 5}}", env);
  EXPECT_EQ(config.providers.at("openai").base_url, "http://from-env/v1");
  EXPECT_EQ(config.providers.at("openai").max_in_flight, 5u);
}

TEST(ConfigFile, ListsExactlyItsProvidersAndBuiltInsGetTheirDefaults) {
  MapEnvironment env{{"OPENAI_API_KEY", "sk-openai"}, {"ANTHROPIC_API_KEY", "sk-ant"}};
  const WorkerConfig config = parse("providers:\n  claude:\n    max_in_flight: 7\n", env);
  EXPECT_EQ(names(config), std::vector<std::string>{"claude"});
  const auto& claude = config.providers.at("claude");
  EXPECT_EQ(claude.type, "anthropic");
  EXPECT_EQ(claude.api_key, "sk-ant");
  EXPECT_EQ(claude.api_key_env, "ANTHROPIC_API_KEY");
  EXPECT_EQ(claude.max_in_flight, 7u);
}

TEST(ConfigFile, ProviderWithoutKeyIsStillServed) {
  // The attempt then fails with authentication "no API key: set OPENAI_API_KEY".
  const WorkerConfig config = parse("providers: {openai: {}}");
  EXPECT_EQ(config.providers.at("openai").api_key, "");
  EXPECT_EQ(config.providers.at("openai").api_key_env, "OPENAI_API_KEY");
}

TEST(ConfigWarnings, OneLinePerProviderWhoseKeyIsMissing) {
  const MapEnvironment env{{"OPENAI_API_KEY", "sk-present-0123456789"}, {"EMPTY_KEY", "  "}};
  const WorkerConfig config = parse(
      "providers:\n"
      "  ali: {}\n"
      "  claude: {api_key_env: EMPTY_KEY}\n"
      "  openai: {}\n"
      "  ollama: {}\n"
      "  local: {type: openai-compatible, base_url: 'http://127.0.0.1:8000/v1'}\n"
      "  deepseek: {type: openai-compatible, base_url: 'https://api.deepseek.com/v1',"
      " api_key_env: DEEPSEEK_API_KEY}\n"
      "  guarded: {type: ollama, api_key_env: OLLAMA_API_KEY}\n",
      env);
  EXPECT_THAT(
      config_warnings(config),
      ::testing::ElementsAre(
          "provider 'ali' has no API key: DASHSCOPE_API_KEY is not set (or empty) in this "
          "worker's environment; every job for it will fail with authentication until it is set "
          "and the worker restarted",
          ::testing::StartsWith("provider 'claude' has no API key: EMPTY_KEY is not set"),
          ::testing::StartsWith("provider 'deepseek' has no API key: DEEPSEEK_API_KEY is not set"),
          ::testing::StartsWith("provider 'guarded' has no API key: OLLAMA_API_KEY is not set")));
}

TEST(ConfigWarnings, NoneWhenEveryKeyIsThere) {
  const MapEnvironment env{{"DASHSCOPE_API_KEY", "sk-dash-0123456789"}};
  EXPECT_TRUE(config_warnings(parse("providers: {ali: {}, ollama: {}}", env)).empty());
  // Without a file a cloud provider is served only when its key is set: nothing to warn about.
  EXPECT_TRUE(config_warnings(load_config("", MapEnvironment{})).empty());
}

TEST(ConfigWarnings, LoadConfigLogsThemWithoutTheKeys) {
  char path[] = "/tmp/dispatch_config_warn_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream out(path);
    out << "providers:\n  ali: {}\n  openai: {}\n";
  }
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(16);
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("config-test", sink));
  const WorkerConfig config =
      load_config(path, MapEnvironment{{"OPENAI_API_KEY", "sk-secret-0123456789abcdef"}});
  spdlog::set_default_logger(previous);
  std::remove(path);
  EXPECT_EQ(config.providers.size(), 2u) << "a missing key is a warning, not an error";
  // The key warnings only: the test binary finds no price table, which is a warning of its own.
  std::vector<std::string> lines;
  for (const std::string& line : sink->last_formatted()) {
    if (line.find("API key") != std::string::npos) lines.push_back(line);
  }
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_THAT(lines[0], ::testing::HasSubstr("[warning]"));
  EXPECT_THAT(lines[0], ::testing::HasSubstr("provider 'ali' has no API key: DASHSCOPE_API_KEY"));
  EXPECT_THAT(lines[0], ::testing::Not(::testing::HasSubstr("sk-secret")));
}

TEST(ConfigFile, FileWithoutProvidersKeyServesTheBuiltIns) {
  const WorkerConfig config = parse("defaults: {retry_count: 1}\n");
  EXPECT_EQ(names(config), std::vector<std::string>{"ollama"});
  EXPECT_EQ(config.providers.at("ollama").policy.retry_count, 1u);
}

TEST(ConfigFile, EveryKey) {
  MapEnvironment env{{"MY_KEY", "secret-value"}, {"DASHSCOPE_API_KEY", "dash"}};
  const WorkerConfig config = parse(R"(
worker:
  concurrency: 250
  metrics_listen: 127.0.0.1:9102
defaults:
  timeout_ms: 20000
  retry_count: 2
  temperature: 0.3
  enable_fallback: false
  connect_timeout_ms: 1000
  first_token_timeout_ms: 2000
  idle_timeout_ms: 3000
  backoff: {base_ms: 100, max_ms: 1600}
  retry_after_cap_ms: 9000
  breaker: {failures: 5, failure_rate: 0.25, window: 40, cooldown_ms: 7000}
  failover_on_content_filter: true
  fallbacks:
    - claude/claude-3-5-haiku
    - local/org/model:7b
    - {provider: ali, model: qwen-plus}
  fallback_providers: [claude, local]
providers:
  local:
    type: openai-compatible
    base_url: http://127.0.0.1:8000/v1
    api_key_env: MY_KEY
    headers: {X-Team: infra, X-Trace: "on"}
    max_in_flight: 64
    context_window: 32768
    fallback_model: org/model:7b
    default_max_tokens: 1024
    stream_upstream: false
    temperature: null
    timeout_ms: 5000
    retry_count: 0
    connect_timeout_ms: 100
    first_token_timeout_ms: 200
    idle_timeout_ms: 300
    backoff: {max_ms: 900}
    retry_after_cap_ms: 0
    breaker: {failures: 1, cooldown_ms: 50}
    failover_on_content_filter: false
  claude:
    fallback_model: claude-3-5-haiku
    temperature: 1.0
  ali: ~
)",
                                    env);
  EXPECT_EQ(config.concurrency, 250u);
  EXPECT_EQ(config.metrics_listen, "127.0.0.1:9102");
  EXPECT_EQ(config.temperature, std::optional<double>(0.3));
  EXPECT_FALSE(config.enable_fallback);
  PolicySettings d;
  d.timeout_ms = 20000;
  d.retry_count = 2;
  d.connect_timeout_ms = 1000;
  d.first_token_timeout_ms = 2000;
  d.idle_timeout_ms = 3000;
  d.backoff_base_ms = 100;
  d.backoff_max_ms = 1600;
  d.retry_after_cap_ms = 9000;
  d.breaker_failures = 5;
  d.breaker_failure_rate = 0.25;
  d.breaker_window = 40;
  d.breaker_cooldown_ms = 7000;
  d.failover_on_content_filter = true;
  EXPECT_EQ(config.defaults, d);
  EXPECT_EQ(config.fallbacks,
            (std::vector<protocol::Target>{
                {"claude", "claude-3-5-haiku"}, {"local", "org/model:7b"}, {"ali", "qwen-plus"}}));
  EXPECT_EQ(config.fallback_providers, (std::vector<std::string>{"claude", "local"}));

  const ProviderConfig& local = config.providers.at("local");
  EXPECT_EQ(local.name, "local");
  EXPECT_EQ(local.type, "openai-compatible");
  EXPECT_EQ(local.base_url, "http://127.0.0.1:8000/v1");
  EXPECT_EQ(local.api_key_env, "MY_KEY");
  EXPECT_EQ(local.api_key, "secret-value");
  ASSERT_EQ(local.extra_headers.size(), 2u);
  EXPECT_EQ(local.extra_headers[0].name, "X-Team");
  EXPECT_EQ(local.extra_headers[0].value, "infra");
  EXPECT_EQ(local.extra_headers[1].value, "on");
  EXPECT_EQ(local.max_in_flight, 64u);
  EXPECT_EQ(local.context_window, 32768u);
  EXPECT_EQ(local.fallback_model, "org/model:7b");
  EXPECT_EQ(local.default_max_tokens, 1024u);
  EXPECT_FALSE(local.stream_upstream);
  EXPECT_EQ(local.temperature, std::nullopt);
  PolicySettings p = d;  // the provider's overrides on top of the defaults
  p.timeout_ms = 5000;
  p.retry_count = 0;
  p.connect_timeout_ms = 100;
  p.first_token_timeout_ms = 200;
  p.idle_timeout_ms = 300;
  p.backoff_max_ms = 900;
  p.retry_after_cap_ms = 0;
  p.breaker_failures = 1;
  p.breaker_cooldown_ms = 50;
  p.failover_on_content_filter = false;
  EXPECT_EQ(local.policy, p);

  const ProviderConfig& claude = config.providers.at("claude");
  EXPECT_EQ(claude.temperature, std::optional<double>(1.0));
  EXPECT_EQ(claude.policy, d);
  EXPECT_EQ(config.providers.at("ali").temperature, std::optional<double>(0.3));
  EXPECT_EQ(config.providers.at("ali").api_key, "dash");
}

TEST(ConfigFile, NullTemperatureMeansNone) {
  const WorkerConfig config = parse("defaults: {temperature: null}\nproviders: {ollama: {}}");
  EXPECT_EQ(config.temperature, std::nullopt);
  EXPECT_EQ(config.providers.at("ollama").temperature, std::nullopt);
}

TEST(ConfigFile, EmptyTextIsTheBuiltInConfiguration) {
  EXPECT_EQ(names(parse("")), std::vector<std::string>{"ollama"});
}

TEST(ConfigFile, LoadsFromDiskAndNamesTheFileInErrors) {
  char path[] = "/tmp/dispatch_config_test_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream out(path);
    out << "defaults:\n  retry_count: 4\n";
  }
  EXPECT_EQ(load_config(path, MapEnvironment{}).defaults.retry_count, 4u);
  {
    std::ofstream out(path);
    out << "defaults:\n  retry_cont: 4\n";
  }
  try {
    load_config(path, MapEnvironment{});
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(
        std::string(e.what()),
        std::string(path) + ": defaults.retry_cont: unknown key (did you mean 'retry_count'?)");
  }
  std::remove(path);
  try {
    load_config(path, MapEnvironment{});
    ADD_FAILURE() << "no error";
  } catch (const ConfigError& e) {
    EXPECT_EQ(std::string(e.what()),
              std::string(path) + ": cannot open: No such file or directory");
  }
}

struct InvalidCase {
  std::string yaml;
  std::string message;
};

class ConfigInvalid : public ::testing::TestWithParam<InvalidCase> {};

TEST_P(ConfigInvalid, NamesFileKeyAndProblem) {
  MapEnvironment env{{"OPENAI_BASE_URL", "not-a-url"}};
  EXPECT_EQ(error_of(GetParam().yaml,
                     GetParam().yaml.find("ENVURL") != std::string::npos ? env : MapEnvironment{}),
            GetParam().message);
}

INSTANTIATE_TEST_SUITE_P(
    Cases, ConfigInvalid,
    ::testing::Values(
        InvalidCase{"providers:\n  openai:\n    type: opena\n",
                    "dispatch.yaml: providers.openai.type: unknown type 'opena' (expected ollama, "
                    "openai, openai-compatible, dashscope, anthropic)"},
        InvalidCase{"default: {}\n",
                    "dispatch.yaml: default: unknown key (did you mean 'defaults'?)"},
        InvalidCase{"defaults:\n  timout_ms: 5\n",
                    "dispatch.yaml: defaults.timout_ms: unknown key (did you mean 'timeout_ms'?)"},
        InvalidCase{"worker: {threads: 4}\n",
                    "dispatch.yaml: worker.threads: unknown key (expected one of: concurrency, "
                    "max_request_bytes, max_response_bytes, metrics_listen)"},
        InvalidCase{"worker: {metrics_listen: 9102}\n",
                    "dispatch.yaml: worker.metrics_listen: expected HOST:PORT, got \"9102\""},
        InvalidCase{
            "worker: {metrics_listen: \"127.0.0.1:99999\"}\n",
            "dispatch.yaml: worker.metrics_listen: bad port in \"127.0.0.1:99999\" (0-65535; "
            "0: ephemeral)"},
        InvalidCase{"providers:\n  openai:\n    api_key: sk-123\n",
                    "dispatch.yaml: providers.openai.api_key: unknown key (keys are read from the "
                    "environment: set api_key_env)"},
        InvalidCase{
            "defaults:\n  breaker: {failure: 3}\n",
            "dispatch.yaml: defaults.breaker.failure: unknown key (did you mean 'failures'?)"},
        InvalidCase{"defaults:\n  timeout_ms: abc\n",
                    "dispatch.yaml: defaults.timeout_ms: expected a whole number, got 'abc'"},
        InvalidCase{"defaults:\n  timeout_ms: 1.5\n",
                    "dispatch.yaml: defaults.timeout_ms: expected a whole number, got '1.5'"},
        InvalidCase{"defaults:\n  timeout_ms: [1]\n",
                    "dispatch.yaml: defaults.timeout_ms: expected a whole number, got a list"},
        InvalidCase{"defaults:\n  enable_fallback: maybe\n",
                    "dispatch.yaml: defaults.enable_fallback: expected true or false, got 'maybe'"},
        InvalidCase{"defaults:\n  temperature: warm\n",
                    "dispatch.yaml: defaults.temperature: expected a number, got 'warm'"},
        InvalidCase{"defaults:\n  timeout_ms: 0\n",
                    "dispatch.yaml: defaults.timeout_ms: must be positive (got 0)"},
        InvalidCase{"defaults:\n  retry_count: -1\n",
                    "dispatch.yaml: defaults.retry_count: must not be negative (got -1)"},
        InvalidCase{"defaults:\n  idle_timeout_ms: -5\n",
                    "dispatch.yaml: defaults.idle_timeout_ms: must be positive (got -5)"},
        InvalidCase{"defaults:\n  timeout_ms: 99999999999\n",
                    "dispatch.yaml: defaults.timeout_ms: too large"},
        InvalidCase{"worker:\n  concurrency: 0\n",
                    "dispatch.yaml: worker.concurrency: must be positive (got 0)"},
        InvalidCase{"defaults:\n  temperature: 2.5\n",
                    "dispatch.yaml: defaults.temperature: 2.5 is out of range (expected 0 to 2, or "
                    "null)"},
        InvalidCase{"providers:\n  ollama: {temperature: -0.1}\n",
                    "dispatch.yaml: providers.ollama.temperature: -0.1 is out of range (expected 0 "
                    "to 2, or null)"},
        InvalidCase{"defaults:\n  breaker: {failure_rate: 1.5}\n",
                    "dispatch.yaml: defaults.breaker.failure_rate: 1.5 is out of range (expected "
                    "above 0, at most 1)"},
        InvalidCase{
            "defaults:\n  backoff: {base_ms: 500, max_ms: 100}\n",
            "dispatch.yaml: defaults.backoff.max_ms: must be at least backoff.base_ms (500)"},
        InvalidCase{"providers:\n  ollama: {backoff: {base_ms: 9000}}\n",
                    "dispatch.yaml: providers.ollama.backoff.max_ms: must be at least "
                    "backoff.base_ms (9000)"},
        InvalidCase{"defaults:\n  fallbacks: [nope/model]\nproviders: {ollama: {}, openai: {}}\n",
                    "dispatch.yaml: defaults.fallbacks[0]: provider 'nope' is not configured "
                    "(configured: ollama, openai)"},
        InvalidCase{"defaults:\n  fallbacks: [ollama/llama3, {provider: claude, model: x}]\n",
                    "dispatch.yaml: defaults.fallbacks[1]: provider 'claude' is not configured "
                    "(configured: ollama)"},
        InvalidCase{
            "defaults:\n  fallbacks: [llama3]\n",
            "dispatch.yaml: defaults.fallbacks[0]: expected 'provider/model', got 'llama3'"},
        InvalidCase{
            "defaults:\n  fallbacks: [ollama/]\n",
            "dispatch.yaml: defaults.fallbacks[0]: expected 'provider/model', got 'ollama/'"},
        InvalidCase{"defaults:\n  fallbacks: [{provider: ollama}]\n",
                    "dispatch.yaml: defaults.fallbacks[0].model: missing"},
        InvalidCase{"defaults:\n  fallbacks: ollama/llama3\n",
                    "dispatch.yaml: defaults.fallbacks: expected a list, got 'ollama/llama3'"},
        InvalidCase{"defaults:\n  fallback_providers: [claude]\n",
                    "dispatch.yaml: defaults.fallback_providers[0]: provider 'claude' is not "
                    "configured (configured: ollama)"},
        InvalidCase{"defaults:\n  fallback_providers: [ollama]\n",
                    "dispatch.yaml: defaults.fallback_providers[0]: provider 'ollama' has no "
                    "fallback_model (set providers.ollama.fallback_model, e.g. llama3.2, or list "
                    "it in fallbacks as 'ollama/MODEL')"},
        InvalidCase{"providers:\n  mine: {base_url: 'http://x'}\n",
                    "dispatch.yaml: providers.mine.type: missing (required for a provider that is "
                    "not built in: ollama, openai, ali, claude)"},
        InvalidCase{"providers:\n  local: {type: openai-compatible}\n",
                    "dispatch.yaml: providers.local.base_url: missing (required for type "
                    "openai-compatible)"},
        InvalidCase{
            "providers:\n  openai: {base_url: 'ftp://files'}\n",
            "dispatch.yaml: providers.openai.base_url: 'ftp://files' is not an http(s) URL"},
        InvalidCase{"providers:\n  openai: {base_url: 'https://'}\n",
                    "dispatch.yaml: providers.openai.base_url: 'https://' is not an http(s) URL"},
        InvalidCase{"# ENVURL\nproviders:\n  openai: {}\n",
                    "dispatch.yaml: providers.openai.base_url (from OPENAI_BASE_URL): 'not-a-url' "
                    "is not an http(s) URL"},
        InvalidCase{"providers:\n  ollama: {headers: {'X-A': \"a\\r\\nInjected: 1\"}}\n",
                    "dispatch.yaml: providers.ollama.headers.X-A: header values must be one line"},
        InvalidCase{"providers:\n  ollama: {headers: [a]}\n",
                    "dispatch.yaml: providers.ollama.headers: expected a map, got a list"},
        InvalidCase{"providers:\n  a/b: {type: ollama}\n",
                    "dispatch.yaml: providers.a/b: provider names must not contain '/' (targets "
                    "are written provider/model)"},
        InvalidCase{"providers: {}\n",
                    "dispatch.yaml: providers: no providers listed (remove the key to serve the "
                    "built-in ones)"},
        InvalidCase{"providers:\n  - ollama\n",
                    "dispatch.yaml: providers: expected a map, got a list"},
        InvalidCase{"defaults:\n  retry_count: 1\n  retry_count: 2\n",
                    "dispatch.yaml: defaults.retry_count: duplicate key"},
        InvalidCase{"- just\n- a list\n", "dispatch.yaml: (top level): expected a map, got a list"},
        InvalidCase{"providers:\n  ollama: {default_max_tokens: 0}\n",
                    "dispatch.yaml: providers.ollama.default_max_tokens: must be positive (got 0)"},
        InvalidCase{"providers:\n  ollama: {stream_upstream: 3}\n",
                    "dispatch.yaml: providers.ollama.stream_upstream: expected true or false, got "
                    "'3'"}));

TEST(ConfigInvalidYaml, ReportsFileLineAndColumn) {
  const std::string message = error_of("defaults:\n  timeout_ms: [1, 2\n");
  EXPECT_THAT(message, ::testing::StartsWith("dispatch.yaml: line "));
  EXPECT_THAT(message, ::testing::HasSubstr("column"));
}

TEST(ConfigInvalid, FarOffUnknownKeyListsTheKeys) {
  EXPECT_EQ(error_of("providers:\n  ollama: {zzzzzzzzzz: 1}\n"),
            "dispatch.yaml: providers.ollama.zzzzzzzzzz: unknown key (expected one of: type, "
            "base_url, api_key_env, headers, max_in_flight, context_window, fallback_model, "
            "default_max_tokens, stream_upstream, temperature, timeout_ms, retry_count, "
            "connect_timeout_ms, first_token_timeout_ms, idle_timeout_ms, backoff, "
            "retry_after_cap_ms, breaker, failover_on_content_filter)");
}

}  // namespace
}  // namespace dispatch::worker
