// dispatch-worker: runs jobs from the broker against the configured providers.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>

#include "dispatch/worker/config.hpp"
#include "dispatch/worker/runtime/worker_runtime.hpp"

int main(int argc, char** argv) {
  using namespace dispatch::worker;
  // Before any thread exists, so that libzmq's and curl's threads inherit the mask and the
  // event loop alone receives SIGTERM / SIGINT (through its signalfd).
  block_termination_signals();

  RuntimeOptions options;
  std::string config_path;
  std::string log_level = "info";
  uint32_t heartbeat_ms = 1000;
  uint32_t drain_timeout_ms = 30000;

  CLI::App app{"dispatch-worker: runs LLM dispatch jobs from the broker"};
  app.add_option("--broker", options.broker_endpoint, "Broker backend endpoint")
      ->capture_default_str();
  app.add_option("--config", config_path,
                 "Worker config (YAML). Without it: ollama at OLLAMA_HOST, plus each cloud "
                 "provider whose API key variable is set");
  app.add_option("--concurrency", options.concurrency,
                 "Jobs in flight at once (default: config worker.concurrency, 1000)");
  app.add_option("--heartbeat-ms", heartbeat_ms, "Heartbeat interval (match the broker's)")
      ->capture_default_str()
      ->check(CLI::Range(10u, 600000u));
  app.add_option("--liveness", options.liveness, "Missed heartbeats before reconnecting")
      ->capture_default_str()
      ->check(CLI::Range(2u, 100u));
  app.add_option("--drain-timeout-ms", drain_timeout_ms,
                 "On SIGTERM, how long running jobs may finish")
      ->capture_default_str();
  app.add_option("--id", options.worker_id, "Worker id (default host:pid:random)");
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help is 0; a usage error exits 2, like `dispatch`
  }

  auto logger = spdlog::stderr_color_mt("worker");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(log_level));
  options.heartbeat_interval = std::chrono::milliseconds(heartbeat_ms);
  options.drain_timeout = std::chrono::milliseconds(drain_timeout_ms);

  WorkerConfig config;
  try {
    config = load_config(config_path, ProcessEnvironment{});
  } catch (const ConfigError& e) {
    std::cerr << "dispatch-worker: invalid config: " << e.what() << "\n";
    return 2;
  }
  if (config.providers.empty()) {
    std::cerr << "dispatch-worker: no providers configured\n";
    return 2;
  }

  auto open_files = raise_open_file_limit();
  uint32_t concurrency = options.concurrency ? options.concurrency : config.concurrency;
  if (open_files < static_cast<uint64_t>(concurrency) + 64) {
    spdlog::warn("open file limit {} is below concurrency {}: raise `ulimit -n`", open_files,
                 concurrency);
  }
  try {
    WorkerRuntime runtime(std::move(config), std::move(options));
    return runtime.run();
  } catch (const std::exception& e) {
    spdlog::critical("worker failed: {}", e.what());
    return 1;
  }
}
