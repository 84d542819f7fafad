#pragma once

// API keys: which configured key a request presents, compared in constant time, and which
// models that key may use. Keys are held only as SHA-256 digests and never logged.

#include <string>
#include <string_view>
#include <vector>

#include "dispatch/gateway/config.hpp"
#include "dispatch/protocol/types.hpp"

namespace dispatch::gateway {

Sha256 sha256(std::string_view data);
// Lowercase hex, the form gateway.yaml's key_sha256 takes (`printf %s KEY | sha256sum`).
std::string sha256_hex(std::string_view data);

// The key a request presents: `Authorization: Bearer KEY` (OpenAI's SDKs, and Anthropic's
// since 1.x) or `x-api-key: KEY` (Anthropic's). "" when it presents none.
std::string_view presented_key(std::string_view authorization, std::string_view x_api_key);

class KeyRing {
 public:
  explicit KeyRing(std::vector<ApiKey> keys) : keys_(std::move(keys)) {}

  // False when no keys are configured: the gateway then serves without authentication.
  bool enabled() const noexcept { return !keys_.empty(); }
  // The configured key whose digest matches, or null. Every key is compared, each in
  // constant time, so the time taken says nothing about which key (or how much of one) matched.
  const ApiKey* find(std::string_view presented) const;

 private:
  std::vector<ApiKey> keys_;
};

// Whether `key` may use the model asked for as `requested` (the name as written) resolved to
// `target`, or a fallback target: a glob matching either spelling allows it.
bool model_allowed(const ApiKey& key, std::string_view requested, const protocol::Target& target);

}  // namespace dispatch::gateway
