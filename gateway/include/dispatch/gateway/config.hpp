#pragma once

// gateway.yaml: the API keys the gateway accepts, model aliases, the default provider, the
// broker and the HTTP limits. Every problem is reported as "<file>: <key.path>: <problem>".
//
//   keys:                                  # absent: no authentication (loopback only)
//     - name: team-a
//       key_env: TEAM_A_KEY                # or key_sha256: <64 hex digits>
//       models: ["openai/*", "gpt-4o"]     # globs; absent: every model
//       tenant: team-a                     # default: the name
//   models:
//     gpt-4o: {target: openai/gpt-4o, fallbacks: [claude/claude-sonnet-4-5], timeout_ms: 30000}
//   default_provider: ollama
//   broker: {endpoint: tcp://127.0.0.1:5555}
//   limits: {max_body_bytes: 10485760, max_header_bytes: 16384, max_connections: 10000,
//            header_timeout_ms: 10000, body_timeout_ms: 30000, idle_timeout_ms: 60000}

#include <array>
#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/common/result.hpp"
#include "dispatch/formats/models.hpp"

namespace dispatch::gateway {

using Sha256 = std::array<unsigned char, 32>;

struct ApiKey {
  std::string name;
  Sha256 digest{};                  // SHA-256 of the key: the key itself is never kept
  std::vector<std::string> models;  // fnmatch globs; empty: every model
  std::string tenant;               // the broker tenant it maps to
};

struct HttpLimits {
  std::size_t max_body_bytes = 10 * 1024 * 1024;
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_connections = 10'000;
  // From a request's first byte to the end of its headers (a client trickling headers is cut
  // off with 408), from the end of the headers to the end of the body, and how long an idle
  // keep-alive connection is kept.
  std::chrono::milliseconds header_timeout{10'000};
  std::chrono::milliseconds body_timeout{30'000};
  std::chrono::milliseconds idle_timeout{60'000};
};

struct GatewayConfig {
  std::vector<ApiKey> keys;
  formats::ModelCatalog models;
  std::string broker_endpoint;  // "" = the flag's or the built-in default
  HttpLimits limits;
};

// Reads an environment variable (injectable for tests).
using EnvLookup = std::function<std::optional<std::string>(const std::string&)>;
EnvLookup process_environment();

// `source` names the text in messages (the file path).
Result<GatewayConfig, std::string> parse_gateway_config(std::string_view yaml,
                                                        std::string_view source,
                                                        const EnvLookup& env);
Result<GatewayConfig, std::string> load_gateway_config(const std::string& path,
                                                       const EnvLookup& env);

}  // namespace dispatch::gateway
