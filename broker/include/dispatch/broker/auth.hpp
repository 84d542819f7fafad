#pragma once

// Who may do what at the broker when CURVE is on (dispatch-broker --curve-secret).
//
// ZeroMQ checks every CURVE handshake with a ZAP handler (RFC 27): the broker answers from
// its allow-lists, one directory of public certificates (`*.key`) per role. A key may be in
// several directories and then has all of those roles. The ZAP user id of an accepted
// connection is the peer's public key (Z85); the broker looks the identity up again for every
// message, so a key removed from the lists (SIGHUP) stops being served at once on connections
// it already had, and is refused on new ones.
//
// This file holds the decisions only; the ZAP socket itself is driven by BrokerServer.

#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/broker/config.hpp"
#include "dispatch/broker/identity.hpp"
#include "dispatch/broker/rate_limiter.hpp"
#include "dispatch/common/clock.hpp"
#include "dispatch/common/result.hpp"

namespace dispatch::broker {

// ZAP domains the broker's two sockets announce, so one handler knows which socket asks.
inline constexpr std::string_view kFrontendZapDomain = "dispatch-frontend";
inline constexpr std::string_view kBackendZapDomain = "dispatch-backend";

// Every listed key with its roles.
class KeyTable {
 public:
  static Result<KeyTable, std::string> load(const AllowListDirs& dirs);
  const Identity* find(std::string_view public_key) const;
  std::size_t size() const noexcept { return by_key_.size(); }
  // Identities having `role`, for start-up and reload log lines.
  std::size_t count(Role role) const;

 private:
  std::map<std::string, Identity, std::less<>> by_key_;
};

// The ZAP handler's decisions, and the table every message is checked against.
class Authenticator {
 public:
  Authenticator(AllowListDirs dirs, const Clock& clock);

  // Reads the directories (at start-up and on SIGHUP). On an error the previous table stays in
  // force and the error is returned (the broker logs it and keeps running).
  Result<void, std::string> reload();

  // One ZAP request (the frames a ZAP handler receives) -> the reply frames (RFC 27). Never
  // throws; a malformed request gets status 500.
  std::vector<std::string> answer(std::span<const std::string_view> request);

  // The identity behind a ZAP user id, or nullptr (unknown, or removed since it connected).
  const Identity* identity(std::string_view user_id) const { return table_.find(user_id); }
  // The sender of a message on connection `route` whose frames carry `user_id`. A key no longer
  // listed gets no roles; its `key` then views `user_id`, which must outlive the Peer.
  Peer peer(std::string_view route, std::string_view user_id) const;
  const KeyTable& table() const noexcept { return table_; }

  struct Counters {
    uint64_t accepted = 0;
    uint64_t refused = 0;
  };
  const Counters& counters() const noexcept { return counters_; }

 private:
  // Roles a socket admits: the frontend takes clients, gateways and admins; the backend
  // takes workers.
  static Roles admitted_roles(std::string_view domain);
  void log_refusal(std::string_view domain, std::string_view address, std::string_view key,
                   std::string_view reason);

  AllowListDirs dirs_;
  const Clock& clock_;
  KeyTable table_;
  RateLimiter refusal_log_;
  Counters counters_;
};

}  // namespace dispatch::broker
