#pragma once

// A whole dispatcher on loopback for integration tests: the fake provider, a broker and any
// number of workers, each a real child process on ephemeral ports. Workers can be killed,
// stopped and added; the broker can be restarted on the same endpoints.
//
//   dispatch::test::Stack stack(dispatch::test::StackBinaries::from_build());
//   stack.start_fake_provider();
//   stack.start_broker({"--heartbeat-ms", "100"});
//   stack.start_workers(2, stack.default_worker_config());
//   stack.wait_for_workers(2);
//   ... use stack.frontend() with the client library or the CLI ...
//   auto attempts = stack.fake_log("gpt~status=503");   // what the provider saw

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "dispatch/protocol/messages.hpp"
#include "dispatch/test/child_process.hpp"
#include "dispatch/test/fake_provider_process.hpp"

namespace dispatch::test {

struct StackBinaries {
  std::string fake_provider;
  std::string broker;
  std::string worker;
  std::string cli;  // `dispatch`
  // From the compile definitions FAKE_PROVIDER_BINARY, BROKER_BINARY, WORKER_BINARY and
  // DISPATCH_CLI_BINARY of the test target (see tests/integration/CMakeLists.txt). Inline so
  // that it is compiled in the test's translation unit, where they are defined.
  static StackBinaries from_build() {
    StackBinaries b;
#ifdef FAKE_PROVIDER_BINARY
    b.fake_provider = FAKE_PROVIDER_BINARY;
#endif
#ifdef BROKER_BINARY
    b.broker = BROKER_BINARY;
#endif
#ifdef WORKER_BINARY
    b.worker = WORKER_BINARY;
#endif
#ifdef DISPATCH_CLI_BINARY
    b.cli = DISPATCH_CLI_BINARY;
#endif
    return b;
  }
  // Names of the binaries that are not built (empty when all are there).
  std::string missing() const;
};

// A temporary directory removed with everything in it.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

void write_text_file(const std::string& path, const std::string& text);
std::string read_text_file(const std::string& path);

// One HTTP request with libcurl easy; for the fake provider's control endpoints.
struct HttpReply {
  long status = 0;
  std::string body;
};
HttpReply http_request(const std::string& method, const std::string& url,
                       const std::string& body = {},
                       std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));

class Stack {
 public:
  explicit Stack(StackBinaries binaries);
  ~Stack();  // stops everything it started (workers, broker, fake provider)
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;

  const StackBinaries& binaries() const { return binaries_; }
  TempDir& dir() { return dir_; }

  // ---- fake provider ----
  void start_fake_provider(const std::vector<std::string>& extra_args = {});
  FakeProviderProcess& fake() { return *fake_; }
  // The attempts the fake provider logged (GET /_fake/log[?model=]), oldest first.
  nlohmann::json fake_log(const std::string& model = {});
  void reset_fake();  // POST /_fake/reset

  // ---- broker ----
  // Binds ephemeral ports the first time; a restart reuses the same endpoints.
  void start_broker(const std::vector<std::string>& extra_args = {});
  void restart_broker();  // SIGKILL then start again with the same arguments and endpoints
  ChildProcess& broker() { return *broker_; }
  const std::string& frontend() const { return frontend_; }
  const std::string& backend() const { return backend_; }
  // http://HOST:PORT/metrics of a broker started with --metrics-listen ("" without).
  const std::string& broker_metrics_url() const { return broker_metrics_url_; }

  // A broker status via a raw protocol exchange; nullopt when no answer within `timeout`.
  std::optional<protocol::StatusReply> status(
      std::chrono::milliseconds timeout = std::chrono::milliseconds(2000));

  // ---- workers ----
  // YAML pointing `ollama`, `openai`, `claude`, `ali` (DashScope native) and `qwen`
  // (openai-compatible, DashScope compatible mode) at the fake provider, with test-scale
  // timings. `extra_defaults` lines are inserted under `defaults:` (two-space indented YAML).
  std::string default_worker_config(const std::string& extra_defaults = {}) const;
  // Starts workers with the given YAML text; returns their indexes in workers().
  std::vector<std::size_t> start_workers(int count, const std::string& config_yaml,
                                         const std::vector<std::string>& extra_args = {});
  std::vector<ChildProcess>& workers() { return workers_; }
  // Waits until the broker reports `count` workers; throws std::runtime_error after `timeout`.
  void wait_for_workers(std::size_t count,
                        std::chrono::milliseconds timeout = std::chrono::milliseconds(15000));
  // Worker logs go to files in dir(); this returns worker `index`'s log text.
  std::string worker_log(std::size_t index) const;

 private:
  StackBinaries binaries_;
  TempDir dir_;
  std::unique_ptr<FakeProviderProcess> fake_;
  std::unique_ptr<ChildProcess> broker_;
  std::vector<std::string> broker_args_;
  std::string frontend_;
  std::string backend_;
  std::string broker_metrics_url_;
  std::vector<ChildProcess> workers_;
  std::vector<std::string> worker_logs_;
  int config_counter_ = 0;
};

}  // namespace dispatch::test
