// dispatch-worker: runs jobs from the broker against the configured providers.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "dispatch/common/result.hpp"
#include "dispatch/metrics/metrics.hpp"
#include "dispatch/worker/config.hpp"
#include "dispatch/worker/runtime/broker_connection.hpp"
#include "dispatch/worker/runtime/worker_runtime.hpp"

namespace {

using namespace dispatch::worker;

// Usage errors exit 2, like `dispatch` and `dispatch-broker`.
constexpr int kUsageError = 2;

struct CommandLine {
  RuntimeOptions options;
  BrokerFlags broker;  // resolved against the environment and the config's `broker:` section
  std::string config_path;
  std::string log_level = "info";
  uint32_t heartbeat_ms = 1000;
  uint32_t drain_timeout_ms = 30000;
  std::string metrics_listen;  // overrides the config's worker.metrics_listen
};

void add_options(CLI::App& app, CommandLine& line) {
  RuntimeOptions& options = line.options;
  app.add_option("--broker", line.broker.endpoint,
                 "Broker backend endpoint (default: the config's broker.endpoint, else " +
                     options.broker_endpoint + ")");
  app.add_option("--broker-key", line.broker.broker_key,
                 "CURVE: the broker's public key file NAME.key (default $DISPATCH_BROKER_KEY, "
                 "else the config's broker.public_key_file)");
  app.add_option("--curve-secret", line.broker.curve_secret,
                 "CURVE: this worker's secret key file NAME.key_secret, mode 0600 (default "
                 "$DISPATCH_CURVE_SECRET, else the config's broker.secret_key_file)");
  app.add_option("--config", line.config_path,
                 "Worker config (YAML). Without it: ollama at OLLAMA_HOST, plus each cloud "
                 "provider whose API key variable is set");
  app.add_option("--concurrency", options.concurrency,
                 "Jobs in flight at once (default: config worker.concurrency, 1000)");
  app.add_option("--heartbeat-ms", line.heartbeat_ms, "Heartbeat interval (match the broker's)")
      ->capture_default_str()
      ->check(CLI::Range(10u, 600000u));
  app.add_option("--liveness", options.liveness, "Missed heartbeats before reconnecting")
      ->capture_default_str()
      ->check(CLI::Range(2u, 100u));
  app.add_option("--drain-timeout-ms", line.drain_timeout_ms,
                 "On SIGTERM, how long running jobs may finish (1 to 3600000)")
      ->capture_default_str()
      ->check(CLI::Range(1u, 3'600'000u));
  app.add_option("--id", options.worker_id, "Worker id (default host:pid:random)");
  app.add_option("--metrics-listen", line.metrics_listen,
                 "HOST:PORT to serve Prometheus metrics on, path /metrics (port 0: ephemeral; "
                 "default: the config's worker.metrics_listen, else off)")
      ->check([](const std::string& text) {
        auto address = dispatch::metrics::parse_listen_address(text);
        return address ? std::string() : address.error();
      });
  app.add_option("--log-level", line.log_level, "trace|debug|info|warn|error|critical|off")
      ->capture_default_str()
      ->check(CLI::IsMember(
          {"trace", "debug", "info", "warn", "warning", "error", "err", "critical", "off"}));
}

// The command line, or the exit code to stop with: 0 after --help, 2 for a usage error (which
// CLI11 has printed).
dispatch::Result<CommandLine, int> parse_command_line(int argc, char** argv) {
  CommandLine line;
  CLI::App app{"dispatch-worker: runs LLM dispatch jobs from the broker"};
  add_options(app, line);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kUsageError;
  }
  line.options.heartbeat_interval = std::chrono::milliseconds(line.heartbeat_ms);
  line.options.drain_timeout = std::chrono::milliseconds(line.drain_timeout_ms);
  return line;
}

std::optional<WorkerConfig> load(const std::string& path) {
  try {
    WorkerConfig config = load_config(path, ProcessEnvironment{});
    if (config.providers.empty()) {
      std::cerr << "dispatch-worker: no providers configured\n";
      return std::nullopt;
    }
    return config;
  } catch (const ConfigError& e) {
    std::cerr << "dispatch-worker: invalid config: " << e.what() << "\n";
    return std::nullopt;
  }
}

void warn_about_open_files(const RuntimeOptions& options, const WorkerConfig& config) {
  const uint64_t open_files = raise_open_file_limit();
  const uint32_t concurrency = options.concurrency ? options.concurrency : config.concurrency;
  if (open_files < static_cast<uint64_t>(concurrency) + 64) {
    spdlog::warn("open file limit {} is below concurrency {}: raise `ulimit -n`", open_files,
                 concurrency);
  }
}

// The Prometheus endpoint of --metrics-listen / worker.metrics_listen; empty when off.
struct MetricsServing {
  std::shared_ptr<prometheus::Registry> registry;
  std::unique_ptr<WorkerMetrics> metrics;
  std::unique_ptr<dispatch::metrics::MetricsEndpoint> endpoint;
};

// Throws std::runtime_error when the address cannot be bound.
MetricsServing serve_metrics(const std::string& listen) {
  MetricsServing serving;
  if (listen.empty()) return serving;
  const auto address = dispatch::metrics::parse_listen_address(listen).value();
  serving.registry = std::make_shared<prometheus::Registry>();
  serving.metrics = std::make_unique<WorkerMetrics>(*serving.registry);
  auto endpoint = dispatch::metrics::MetricsEndpoint::start(address, serving.registry);
  if (!endpoint) throw std::runtime_error("--metrics-listen: " + endpoint.error());
  serving.endpoint = std::move(endpoint).value();
  // Tests and scripts read this line to learn an ephemeral port.
  spdlog::info("metrics served at {}", serving.endpoint->url());
  if (!dispatch::metrics::is_loopback_host(address.host)) {
    spdlog::warn("metrics served on a non-loopback address, without authentication");
  }
  return serving;
}

}  // namespace

int main(int argc, char** argv) {
  // Before any thread exists, so that libzmq's and curl's threads inherit the mask and the
  // event loop alone receives SIGTERM / SIGINT (through its signalfd).
  block_termination_signals();
  dispatch::Result<CommandLine, int> line = parse_command_line(argc, argv);
  if (!line) return line.error();

  spdlog::set_default_logger(spdlog::stderr_color_mt("worker"));
  spdlog::set_level(spdlog::level::from_str(line->log_level));

  std::optional<WorkerConfig> config = load(line->config_path);
  if (!config) return kUsageError;
  const std::string config_name = line->config_path.empty() ? "the config" : line->config_path;
  if (auto broker = resolve_broker_connection(line->broker, *config, config_name,
                                              ProcessEnvironment{}, line->options);
      !broker) {
    std::cerr << "dispatch-worker: " << broker.error() << "\n";
    return kUsageError;
  }
  warn_about_open_files(line->options, *config);
  try {
    const MetricsServing metrics =
        serve_metrics(line->metrics_listen.empty() ? config->metrics_listen : line->metrics_listen);
    line->options.metrics = metrics.metrics.get();
    WorkerRuntime runtime(std::move(*config), std::move(line->options));
    return runtime.run();
  } catch (const std::exception& e) {
    spdlog::critical("worker failed: {}", e.what());
    return 1;
  }
}
