#pragma once

// The --listen address: "HOST:PORT" with HOST an IPv4 address, "[IPv6]", "localhost" or "*"
// (every interface), PORT 0 for an ephemeral one.

#include <cstdint>
#include <string>
#include <string_view>

#include "dispatch/common/result.hpp"

namespace dispatch::gateway {

struct ListenAddress {
  std::string host;  // a numeric address ("localhost" becomes 127.0.0.1, "*" 0.0.0.0)
  uint16_t port = 0;

  // "http://127.0.0.1:8080", "http://[::1]:8080" (with the bound port).
  std::string url(uint16_t bound_port) const;
};

Result<ListenAddress, std::string> parse_listen(std::string_view text);

// 127.0.0.0/8 or ::1 — where serving without keys is safe (like the broker's plaintext rule).
bool is_loopback(std::string_view numeric_host);

}  // namespace dispatch::gateway
