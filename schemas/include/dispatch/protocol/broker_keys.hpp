#pragma once

// CURVE keys of a peer that connects to the broker — the client library, `dispatch` and
// dispatch-worker — read from ZeroMQ certificate files (curve.hpp). Every such peer takes them
// the same way:
//
//   --broker-key FILE    DISPATCH_BROKER_KEY    the broker's public certificate (NAME.key)
//   --curve-secret FILE  DISPATCH_CURVE_SECRET  this peer's own secret (NAME.key_secret)
//
// A flag wins over the environment, which wins over a config file (the worker's `broker:`
// section). Both or neither: CURVE needs the broker's public key and the peer's own pair, so one
// alone is a usage error naming the missing one; neither means plaintext.

#include <span>
#include <string>
#include <string_view>

#include "dispatch/common/result.hpp"
#include "dispatch/protocol/curve.hpp"

namespace dispatch::protocol {

inline constexpr std::string_view kBrokerKeyFlag = "--broker-key";
inline constexpr std::string_view kCurveSecretFlag = "--curve-secret";
inline constexpr std::string_view kBrokerKeyEnv = "DISPATCH_BROKER_KEY";
inline constexpr std::string_view kCurveSecretEnv = "DISPATCH_CURVE_SECRET";

// What a peer needs to talk CURVE to the broker. Holds a secret key: never log it (the
// fingerprints of the public keys are fine).
struct BrokerKeys {
  std::string broker_public_key;  // Z85; empty: plaintext
  CurveKeys own;                  // this peer's pair (Z85)
  // Where they were read from, for log lines; empty when given as keys.
  std::string broker_key_file;
  std::string secret_key_file;

  bool enabled() const noexcept { return !broker_public_key.empty(); }
};

// One place a key file may be named, in precedence order: the path (empty: not given there)
// and the name of that place for messages ("--broker-key", "DISPATCH_BROKER_KEY",
// "dispatch.yaml: broker.public_key_file").
struct KeyFileCandidate {
  std::string path;
  std::string origin;
};

// Takes the first given candidate of each list. Both: reads the two files (errors name the
// place, the file and the fix; a secret file readable by group or others is refused). Neither:
// plaintext, an empty BrokerKeys. One alone: an error naming where the missing one is given.
Result<BrokerKeys, std::string> load_broker_keys(std::span<const KeyFileCandidate> broker_key,
                                                 std::span<const KeyFileCandidate> curve_secret);

// The same from two paths (empty: not given), as --broker-key and --curve-secret.
Result<BrokerKeys, std::string> load_broker_keys(const std::string& broker_key_file,
                                                 const std::string& secret_key_file);

// Checks a pair set by hand (e.g. ClientOptions filled from a secret store): both or neither,
// each a 40-character Z85 key, the secret matching its public key.
Result<void, std::string> check_broker_keys(const BrokerKeys& keys);

// Sets CURVE on a DEALER that will connect to the broker; nothing when `keys` is plaintext.
void apply_broker_keys(zmq::socket_ref socket, const BrokerKeys& keys);

}  // namespace dispatch::protocol
