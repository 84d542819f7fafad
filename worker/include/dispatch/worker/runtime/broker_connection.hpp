#pragma once

// Where dispatch-worker finds its broker and CURVE keys: each setting from the first place that
// gives it (README, "dispatch-worker"):
//
//   endpoint      --broker        config broker.endpoint          tcp://127.0.0.1:5556
//   broker key    --broker-key    DISPATCH_BROKER_KEY    config broker.public_key_file
//   own secret    --curve-secret  DISPATCH_CURVE_SECRET  config broker.secret_key_file
//
// Both keys or neither (plaintext); one alone is a usage error naming the missing one.

#include <string>

#include "dispatch/common/result.hpp"
#include "dispatch/worker/config.hpp"
#include "dispatch/worker/runtime/worker_runtime.hpp"

namespace dispatch::worker {

// What the command line gave (empty: not given).
struct BrokerFlags {
  std::string endpoint{};      // --broker
  std::string broker_key{};    // --broker-key
  std::string curve_secret{};  // --curve-secret
};

// Sets options.broker_endpoint (unless neither flag nor config names one: the default stays)
// and options.curve. `config_name` names the config in messages. The error is a usage error:
// a missing key, an unreadable key file, a secret key file others may read.
Result<void, std::string> resolve_broker_connection(const BrokerFlags& flags,
                                                    const WorkerConfig& config,
                                                    const std::string& config_name,
                                                    const Environment& env,
                                                    RuntimeOptions& options);

}  // namespace dispatch::worker
