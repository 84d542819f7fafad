#include "dispatch/gateway/auth.hpp"

#include <fnmatch.h>
#include <sodium.h>

#include "dispatch/common/strings.hpp"

namespace dispatch::gateway {

Sha256 sha256(std::string_view data) {
  // Idempotent and thread-safe; picks the fastest implementation for this CPU.
  [[maybe_unused]] static const int initialised = sodium_init();
  Sha256 digest{};
  crypto_hash_sha256(digest.data(), reinterpret_cast<const unsigned char*>(data.data()),
                     data.size());
  return digest;
}

std::string sha256_hex(std::string_view data) {
  const Sha256 digest = sha256(data);
  return to_hex(std::string_view(reinterpret_cast<const char*>(digest.data()), digest.size()));
}

std::string_view presented_key(std::string_view authorization, std::string_view x_api_key) {
  authorization = trim(authorization);
  if (istarts_with(authorization, "bearer ")) return trim(authorization.substr(7));
  return trim(x_api_key);
}

const ApiKey* KeyRing::find(std::string_view presented) const {
  if (presented.empty()) return nullptr;
  const Sha256 digest = sha256(presented);
  const ApiKey* match = nullptr;
  for (const ApiKey& key : keys_) {
    // sodium_memcmp takes the same time whatever the bytes; no early exit over the keys.
    const bool equal = sodium_memcmp(key.digest.data(), digest.data(), digest.size()) == 0;
    if (equal) match = &key;
  }
  return match;
}

bool model_allowed(const ApiKey& key, std::string_view requested, const protocol::Target& target) {
  if (key.models.empty()) return true;
  const std::string asked(requested);
  const std::string resolved = target.provider + "/" + target.model;
  for (const std::string& glob : key.models) {
    if (fnmatch(glob.c_str(), asked.c_str(), 0) == 0) return true;
    if (fnmatch(glob.c_str(), resolved.c_str(), 0) == 0) return true;
  }
  return false;
}

}  // namespace dispatch::gateway
