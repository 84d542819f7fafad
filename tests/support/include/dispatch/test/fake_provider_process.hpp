#pragma once

// The fake-provider binary started as a child on an ephemeral port, with the base URLs each
// official SDK would be given. Tests pass the binary path from a compile definition, e.g.
//   target_compile_definitions(my_test PRIVATE
//       FAKE_PROVIDER_BINARY="$<TARGET_FILE:fake-provider>")
//   add_dependencies(my_test fake-provider)
//
//   dispatch::test::FakeProviderProcess fake(FAKE_PROVIDER_BINARY, {"--tokens", "5"});
//   config.base_url = fake.openai_base_url();   // http://127.0.0.1:PORT/v1

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "dispatch/test/child_process.hpp"

namespace dispatch::test {

class FakeProviderProcess {
 public:
  // Starts `binary --listen 127.0.0.1:0 --quiet <extra_args>` and waits for the port line.
  // Throws std::runtime_error when no port arrives within `startup_timeout`.
  explicit FakeProviderProcess(
      const std::string& binary, const std::vector<std::string>& extra_args = {},
      std::chrono::milliseconds startup_timeout = std::chrono::milliseconds(10000),
      const ChildOptions& options = {});

  uint16_t port() const { return port_; }
  // http://127.0.0.1:PORT — the base for Anthropic and Ollama, and for /_fake/... control URLs.
  std::string host_url() const;
  std::string openai_base_url() const { return host_url() + "/v1"; }
  std::string dashscope_compatible_base_url() const { return host_url() + "/compatible-mode/v1"; }
  std::string dashscope_base_url() const { return host_url() + "/api/v1"; }

  ChildProcess& process() { return process_; }

 private:
  ChildProcess process_;
  uint16_t port_ = 0;
};

}  // namespace dispatch::test
