#pragma once

// dispatch-gateway started as a child on an ephemeral port, for integration tests.
//
//   GatewayProcess gateway(GATEWAY_BINARY, stack.frontend(), {"--config", path});
//   gateway.url();   // http://127.0.0.1:PORT

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "dispatch/test/child_process.hpp"

namespace dispatch::gateway::test {

class GatewayProcess {
 public:
  // Starts `binary --listen 127.0.0.1:0 --broker <broker> <extra_args>` and waits for its
  // "dispatch-gateway listening http://HOST:PORT" line. Throws std::runtime_error when it does
  // not come within `startup_timeout`.
  GatewayProcess(const std::string& binary, const std::string& broker,
                 const std::vector<std::string>& extra_args = {},
                 const dispatch::test::ChildOptions& options = {},
                 std::chrono::milliseconds startup_timeout = std::chrono::seconds(10));

  const std::string& url() const { return url_; }
  uint16_t port() const { return port_; }
  dispatch::test::ChildProcess& process() { return process_; }

 private:
  dispatch::test::ChildProcess process_;
  std::string url_;
  uint16_t port_ = 0;
};

}  // namespace dispatch::gateway::test
