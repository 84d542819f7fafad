#include "dispatch/protocol/broker_keys.hpp"

#include <zmq.h>

#include <array>
#include <cstdint>
#include <optional>

namespace dispatch::protocol {
namespace {

const KeyFileCandidate* first_given(std::span<const KeyFileCandidate> candidates) {
  for (const KeyFileCandidate& candidate : candidates) {
    if (!candidate.path.empty()) return &candidate;
  }
  return nullptr;
}

std::string places(std::span<const KeyFileCandidate> candidates) {
  std::string out;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    if (i > 0) out += i + 1 == candidates.size() ? " or " : ", ";
    out += candidates[i].origin;
  }
  return out;
}

std::string missing_one(const KeyFileCandidate& given, std::string_view given_role,
                        std::span<const KeyFileCandidate> missing, std::string_view missing_role) {
  return given.origin + " (" + std::string(given_role) + ") is given but not " + places(missing) +
         " (" + std::string(missing_role) +
         "): CURVE needs both; give neither to talk plaintext to a loopback broker";
}

bool is_z85_public_key(const std::string& text) {
  if (text.size() != kCurveKeyTextSize) return false;
  std::array<uint8_t, 32> binary{};
  return zmq_z85_decode(binary.data(), text.c_str()) != nullptr;
}

}  // namespace

Result<BrokerKeys, std::string> load_broker_keys(std::span<const KeyFileCandidate> broker_key,
                                                 std::span<const KeyFileCandidate> curve_secret) {
  constexpr std::string_view kBrokerRole = "the broker's public key";
  constexpr std::string_view kOwnRole = "this peer's secret key";
  const KeyFileCandidate* public_file = first_given(broker_key);
  const KeyFileCandidate* secret_file = first_given(curve_secret);
  if (public_file == nullptr && secret_file == nullptr) return BrokerKeys{};
  if (secret_file == nullptr)
    return fail(missing_one(*public_file, kBrokerRole, curve_secret, kOwnRole));
  if (public_file == nullptr)
    return fail(missing_one(*secret_file, kOwnRole, broker_key, kBrokerRole));

  BrokerKeys keys;
  auto broker = load_certificate(public_file->path, /*need_secret=*/false);
  if (!broker) return fail(public_file->origin + ": " + broker.error());
  auto own = load_certificate(secret_file->path, /*need_secret=*/true);
  if (!own) return fail(secret_file->origin + ": " + own.error());
  keys.broker_public_key = std::move(broker->public_key);
  keys.own = std::move(*own);
  keys.broker_key_file = public_file->path;
  keys.secret_key_file = secret_file->path;
  return keys;
}

Result<BrokerKeys, std::string> load_broker_keys(const std::string& broker_key_file,
                                                 const std::string& secret_key_file) {
  const std::array<KeyFileCandidate, 1> broker{{{broker_key_file, std::string(kBrokerKeyFlag)}}};
  const std::array<KeyFileCandidate, 1> secret{{{secret_key_file, std::string(kCurveSecretFlag)}}};
  return load_broker_keys(broker, secret);
}

Result<void, std::string> check_broker_keys(const BrokerKeys& keys) {
  const bool has_broker = !keys.broker_public_key.empty();
  const bool has_own = !keys.own.public_key.empty() || !keys.own.secret_key.empty();
  if (!has_broker && !has_own) return {};
  if (!has_broker)
    return std::string("CURVE: the broker's public key is missing (own keys are set)");
  if (!has_own)
    return std::string("CURVE: this peer's own key pair is missing (the broker's key is set)");
  if (!is_z85_public_key(keys.broker_public_key)) {
    return std::string("CURVE: the broker's public key is not a 40-character Z85 key");
  }
  if (keys.own.secret_key.size() != kCurveKeyTextSize) {
    return std::string("CURVE: the own secret key is not a 40-character Z85 key");
  }
  std::array<char, kCurveKeyTextSize + 1> derived{};
  if (zmq_curve_public(derived.data(), keys.own.secret_key.c_str()) != 0) {
    return std::string("CURVE: the own secret key is not a valid Z85 key");
  }
  if (keys.own.public_key != derived.data()) {
    return std::string("CURVE: the own public key does not belong to the own secret key");
  }
  return {};
}

void apply_broker_keys(zmq::socket_ref socket, const BrokerKeys& keys) {
  if (!keys.enabled()) return;
  make_curve_client(socket, keys.own, keys.broker_public_key);
}

}  // namespace dispatch::protocol
