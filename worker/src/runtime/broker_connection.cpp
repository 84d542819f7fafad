#include "dispatch/worker/runtime/broker_connection.hpp"

#include <array>

#include "dispatch/protocol/broker_keys.hpp"

namespace dispatch::worker {

Result<void, std::string> resolve_broker_connection(const BrokerFlags& flags,
                                                    const WorkerConfig& config,
                                                    const std::string& config_name,
                                                    const Environment& env,
                                                    RuntimeOptions& options) {
  using namespace dispatch::protocol;
  if (!flags.endpoint.empty()) {
    options.broker_endpoint = flags.endpoint;
  } else if (!config.broker.endpoint.empty()) {
    options.broker_endpoint = config.broker.endpoint;
  }
  const std::array<KeyFileCandidate, 3> broker_key{{
      {flags.broker_key, std::string(kBrokerKeyFlag)},
      {env.get(std::string(kBrokerKeyEnv)).value_or(""), std::string(kBrokerKeyEnv)},
      {config.broker.public_key_file, config_name + ": broker.public_key_file"},
  }};
  const std::array<KeyFileCandidate, 3> curve_secret{{
      {flags.curve_secret, std::string(kCurveSecretFlag)},
      {env.get(std::string(kCurveSecretEnv)).value_or(""), std::string(kCurveSecretEnv)},
      {config.broker.secret_key_file, config_name + ": broker.secret_key_file"},
  }};
  auto keys = load_broker_keys(broker_key, curve_secret);
  if (!keys) return std::move(keys).error();
  options.curve = std::move(*keys);
  return {};
}

}  // namespace dispatch::worker
