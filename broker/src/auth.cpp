#include "dispatch/broker/auth.hpp"

#include <spdlog/spdlog.h>

#include "dispatch/protocol/curve.hpp"

namespace dispatch::broker {
namespace {

constexpr std::string_view kZapVersion = "1.0";

std::vector<std::string> zap_reply(std::string_view request_id, std::string_view status,
                                   std::string_view text, std::string_view user_id) {
  // version, request id, status code, status text, user id, metadata (none)
  return {std::string(kZapVersion), std::string(request_id), std::string(status),
          std::string(text),        std::string(user_id),    std::string()};
}

}  // namespace

std::string roles_text(Roles roles) {
  std::string out;
  const std::pair<Role, const char*> names[] = {{Role::client, "client"},
                                                {Role::worker, "worker"},
                                                {Role::gateway, "gateway"},
                                                {Role::admin, "admin"}};
  for (const auto& [role, name] : names) {
    if (!has_role(roles, role)) continue;
    if (!out.empty()) out += ',';
    out += name;
  }
  return out.empty() ? "none" : out;
}

Result<KeyTable, std::string> KeyTable::load(const AllowListDirs& dirs) {
  KeyTable table;
  const std::pair<const std::string*, Role> lists[] = {{&dirs.clients, Role::client},
                                                       {&dirs.workers, Role::worker},
                                                       {&dirs.gateways, Role::gateway},
                                                       {&dirs.admins, Role::admin}};
  for (const auto& [dir, role] : lists) {
    if (dir->empty()) continue;
    auto keys = protocol::load_public_keys(*dir);
    if (!keys) return fail(std::move(keys).error());
    for (const auto& [key, name] : *keys) {
      Identity& identity = table.by_key_[key];
      if (identity.public_key.empty()) {
        identity.public_key = key;
        identity.name = name;
      }
      identity.roles |= static_cast<Roles>(role);
    }
  }
  return table;
}

const Identity* KeyTable::find(std::string_view public_key) const {
  auto it = by_key_.find(public_key);
  return it == by_key_.end() ? nullptr : &it->second;
}

std::size_t KeyTable::count(Role role) const {
  std::size_t n = 0;
  for (const auto& [key, identity] : by_key_) n += has_role(identity.roles, role) ? 1 : 0;
  return n;
}

Authenticator::Authenticator(AllowListDirs dirs, const Clock& clock)
    : dirs_(std::move(dirs)), clock_(clock), refusal_log_(5.0, 10.0) {}

Result<void, std::string> Authenticator::reload() {
  auto table = KeyTable::load(dirs_);
  if (!table) return fail(std::move(table).error());
  table_ = std::move(table).value();
  spdlog::info("allow-lists loaded: {} key(s): {} client, {} worker, {} gateway, {} admin",
               table_.size(), table_.count(Role::client), table_.count(Role::worker),
               table_.count(Role::gateway), table_.count(Role::admin));
  return {};
}

Peer Authenticator::peer(std::string_view route, std::string_view user_id) const {
  const Identity* identity = table_.find(user_id);
  if (identity == nullptr) return Peer{route, user_id, {}, 0};
  return Peer{route, identity->public_key, identity->name, identity->roles};
}

Roles Authenticator::admitted_roles(std::string_view domain) {
  if (domain == kFrontendZapDomain) {
    return static_cast<Roles>(Role::client) | static_cast<Roles>(Role::gateway) |
           static_cast<Roles>(Role::admin);
  }
  if (domain == kBackendZapDomain) return static_cast<Roles>(Role::worker);
  return 0;
}

std::vector<std::string> Authenticator::answer(std::span<const std::string_view> request) {
  // version, request id, domain, address, routing id, mechanism, credentials...
  if (request.size() < 6) return zap_reply("", "500", "malformed ZAP request", "");
  const std::string_view request_id = request[1];
  if (request[0] != kZapVersion) return zap_reply(request_id, "500", "unsupported ZAP version", "");
  const std::string_view domain = request[2];
  const std::string_view address = request[3];
  if (request[5] != "CURVE" || request.size() < 7) {
    ++counters_.refused;
    log_refusal(domain, address, "", "not CURVE (plaintext peer?)");
    return zap_reply(request_id, "400", "CURVE required", "");
  }
  const std::string key = protocol::z85_of_binary_key(request[6]);
  const Identity* identity = table_.find(key);
  if (identity == nullptr || (identity->roles & admitted_roles(domain)) == 0) {
    ++counters_.refused;
    log_refusal(domain, address, key,
                identity == nullptr ? "key not listed" : "role not admitted here");
    return zap_reply(request_id, "400", "key not allowed", "");
  }
  ++counters_.accepted;
  spdlog::debug("{}: {} ({}) authenticated from {}", domain, identity->name,
                roles_text(identity->roles), address);
  return zap_reply(request_id, "200", "OK", key);
}

void Authenticator::log_refusal(std::string_view domain, std::string_view address,
                                std::string_view key, std::string_view reason) {
  if (!refusal_log_.allow(clock_.now())) return;
  // The fingerprint of a public key identifies it without being a secret.
  spdlog::warn("{}: refused connection from {} (key {}): {} ({} similar suppressed)", domain,
               address, key.empty() ? "none" : protocol::key_fingerprint(key), reason,
               refusal_log_.take_suppressed());
}

}  // namespace dispatch::broker
