#pragma once

// Who a message comes from, as BrokerCore sees it: the connection (routing id) and, when the
// broker runs with CURVE, the identity that authenticated it and that identity's roles.
//
// Without CURVE (plaintext, loopback or --insecure) nobody is identified: every peer has every
// role, job ids are one namespace and "a client" is a connection, as before security existed.

#include <cstdint>
#include <string>
#include <string_view>

namespace dispatch::broker {

enum class Role : uint8_t {
  client = 1,   // submit, cancel and status for its own jobs
  worker = 2,   // register (`ready`) and run jobs
  gateway = 4,  // a client that may act for tenants (`submit.tenant`)
  admin = 8,    // sees every worker and every identity's counts in `status`
};
using Roles = uint8_t;
inline constexpr Roles kAllRoles = 1 | 2 | 4 | 8;
constexpr bool has_role(Roles roles, Role role) noexcept {
  return (roles & static_cast<Roles>(role)) != 0;
}
std::string roles_text(Roles roles);

struct Identity {
  std::string name;        // display name: the certificate's file name without `.key`
  std::string public_key;  // Z85, also the ZAP user id
  Roles roles = 0;
};

// The sender of one message. The views live as long as the call they are passed to.
struct Peer {
  std::string_view route;   // ROUTER routing id of the connection
  std::string_view key;     // ZAP user id (Z85 public key); empty without CURVE
  std::string_view name;    // display name of that identity; empty without CURVE
  Roles roles = kAllRoles;  // 0: a key that is no longer listed (removed since it connected)

  static Peer plaintext(std::string_view route) noexcept { return Peer{route, {}, {}, kAllRoles}; }
  bool authenticated() const noexcept { return !key.empty(); }
};

}  // namespace dispatch::broker
