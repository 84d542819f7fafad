// dispatch-broker: the queue and load balancer between clients and workers. All logic lives in
// the dispatch_broker library; this file only turns flags into a BrokerConfig.

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdint>
#include <exception>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include "dispatch/broker/config.hpp"
#include "dispatch/broker/heap_trim.hpp"
#include "dispatch/broker/quota.hpp"
#include "dispatch/broker/server.hpp"
#include "dispatch/common/fd.hpp"
#include "dispatch/common/random.hpp"
#include "dispatch/common/result.hpp"
#include "dispatch/metrics/metrics.hpp"

namespace {

using dispatch::broker::BrokerConfig;

using std::chrono::milliseconds;

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kTiB = uint64_t{1} << 40;
constexpr uint64_t kMaxUint32 = 4'294'967'295;  // the protocol's millisecond fields
constexpr uint64_t kDay = 86'400'000;

// The flags, as parsed: durations in whole milliseconds until they go into the config.
struct Options {
  BrokerConfig config;
  uint64_t queue_timeout_ms = static_cast<uint64_t>(config.queue_timeout.count());
  uint64_t max_queue_timeout_ms = static_cast<uint64_t>(config.max_queue_timeout.count());
  uint64_t unknown_provider_grace_ms = static_cast<uint64_t>(config.unknown_provider_grace.count());
  uint64_t running_timeout_ms = static_cast<uint64_t>(config.running_timeout.count());
  uint64_t running_grace_ms = static_cast<uint64_t>(config.running_grace.count());
  uint64_t heartbeat_ms = static_cast<uint64_t>(config.heartbeat_interval.count());
  uint64_t result_ttl_ms = static_cast<uint64_t>(config.result_ttl.count());
  uint64_t drain_timeout_ms = static_cast<uint64_t>(config.drain_timeout.count());
  std::string log_level = "info";
  std::string config_path;     // broker.yaml with `limits:`; re-read on SIGHUP
  std::string metrics_listen;  // HOST:PORT of GET /metrics; empty: no metrics
  dispatch::metrics::ListenAddress metrics_address;
};

// An option with its default shown and a range check (out of range: exit 2 with a message).
template <class T>
void ranged(CLI::App& app, const std::string& name, T& value, const std::string& help, uint64_t min,
            uint64_t max) {
  app.add_option(name, value, help)->capture_default_str()->check(CLI::Range(min, max));
}

void add_socket_flags(CLI::App& app, Options& o) {
  app.add_option("--frontend", o.config.frontend, "Endpoint for clients (port 0 or *: ephemeral)")
      ->capture_default_str();
  app.add_option("--backend", o.config.backend, "Endpoint for workers (port 0 or *: ephemeral)")
      ->capture_default_str();
  ranged(app, "--hwm", o.config.hwm, "ZeroMQ high-water mark (messages) of both sockets", 1,
         100'000'000);
  app.add_option("--config", o.config_path,
                 "broker.yaml with provider quotas (limits:); SIGHUP re-reads it");
  app.add_option("--log-level", o.log_level, "trace|debug|info|warn|error|critical|off")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  app.add_option("--metrics-listen", o.metrics_listen,
                 "HOST:PORT to serve Prometheus metrics on, path /metrics (port 0: ephemeral; "
                 "default: off)");
}

void add_security_flags(CLI::App& app, Options& o) {
  app.add_option("--curve-secret", o.config.curve_secret,
                 "The broker's CURVE secret certificate (NAME.key_secret from `dispatch keygen`): "
                 "encrypts both sockets and admits only listed keys")
      ->check(CLI::ExistingFile);
  const std::pair<const char*, std::string*> lists[] = {
      {"--allow-clients", &o.config.allow.clients},
      {"--allow-workers", &o.config.allow.workers},
      {"--allow-gateways", &o.config.allow.gateways},
      {"--allow-admins", &o.config.allow.admins}};
  for (const auto& [flag, dir] : lists) {
    app.add_option(flag, *dir,
                   "Directory of *.key public certificates that have this role (with "
                   "--curve-secret; absent: nobody; re-read on SIGHUP)")
        ->check(CLI::ExistingDirectory);
  }
  app.add_flag("--insecure", o.config.insecure,
               "Serve non-loopback endpoints without CURVE (no encryption, no authentication)");
}

void add_queue_flags(CLI::App& app, Options& o) {
  ranged(app, "--queue-limit", o.config.queue_limit,
         "Jobs waiting for a worker, all providers; more get rejected queue_full", 1, 100'000'000);
  ranged(app, "--queue-bytes", o.config.queue_bytes,
         "Request payload bytes held for queued and running jobs; more: rejected queue_bytes", kMiB,
         kTiB);
  ranged(app, "--client-jobs", o.config.client_jobs,
         "Queued jobs per client; more: rejected client_jobs", 1, 100'000'000);
  ranged(app, "--client-bytes", o.config.client_bytes,
         "Queued payload bytes per client; more: rejected client_bytes", kMiB, kTiB);
  ranged(app, "--queue-timeout-ms", o.queue_timeout_ms,
         "Default queue deadline (submit.queue_timeout_ms 0)", 1, kMaxUint32);
  ranged(app, "--max-queue-timeout-ms", o.max_queue_timeout_ms,
         "Ceiling on submit.queue_timeout_ms; a longer ask is clamped to it", 1, kMaxUint32);
  ranged(app, "--unknown-provider-grace-ms", o.unknown_provider_grace_ms,
         "A job for a provider no worker has offered since start fails unknown_provider after "
         "this",
         1, kMaxUint32);
}

void add_client_flags(CLI::App& app, Options& o) {
  ranged(app, "--client-buffer", o.config.client_buffer,
         "Messages buffered per slow client before chunks are dropped", 1, 100'000'000);
  ranged(app, "--client-buffer-bytes", o.config.client_buffer_bytes,
         "Bytes buffered per slow client; past it only resets are kept", 64 * 1024, kTiB);
  ranged(app, "--result-ttl-ms", o.result_ttl_ms, "How long finished results are kept for dedup", 0,
         7 * kDay);
  ranged(app, "--result-keep", o.config.result_keep, "Most finished results kept (oldest evicted)",
         0, 100'000'000);
}

void add_worker_flags(CLI::App& app, Options& o) {
  ranged(app, "--heartbeat-ms", o.heartbeat_ms, "Heartbeat interval", 1, 3'600'000);
  ranged(app, "--liveness", o.config.liveness, "Missed heartbeat intervals before a worker is dead",
         1, 1000);
  ranged(app, "--redelivery-limit", o.config.redelivery_limit,
         "Re-queues of a job after losing its worker; then error internal/redelivery_limit", 0,
         1000);
  ranged(app, "--running-timeout-ms", o.running_timeout_ms,
         "A running job's deadline when its request sets no timeout_ms (plus the grace)", 1, kDay);
  ranged(app, "--running-grace-ms", o.running_grace_ms,
         "Grace past a running job's deadline before its worker is told to cancel, and again "
         "before the job is released",
         1, 3'600'000);
  ranged(app, "--drain-timeout-ms", o.drain_timeout_ms,
         "After SIGTERM/SIGINT: time running jobs get to finish", 0, 3'600'000);
}

// Rules between flags that one range cannot say. The message, when they are broken.
dispatch::Result<void, std::string> check_combination(const Options& o) {
  if (o.queue_timeout_ms > o.max_queue_timeout_ms) {
    return "--queue-timeout-ms " + std::to_string(o.queue_timeout_ms) +
           " is above --max-queue-timeout-ms " + std::to_string(o.max_queue_timeout_ms);
  }
  if (o.config.curve_secret.empty() && !o.config.allow.empty()) {
    return std::string(
        "the --allow-* directories need --curve-secret (without it nobody is "
        "authenticated)");
  }
  if (!o.config.curve_secret.empty() && o.config.insecure) {
    return std::string("--insecure and --curve-secret exclude each other");
  }
  if (!o.metrics_listen.empty()) {
    if (auto address = dispatch::metrics::parse_listen_address(o.metrics_listen); !address) {
      return "--metrics-listen: " + address.error();
    }
  }
  return {};
}

// The options, or the exit code (0 after --help, 2 for a usage error, like `dispatch`).
dispatch::Result<Options, int> parse_command_line(int argc, char** argv) {
  Options o;
  CLI::App app{"dispatch-broker: priority queue, load balancer and stream relay of LLM Dispatcher"};
  add_socket_flags(app, o);
  add_security_flags(app, o);
  add_queue_flags(app, o);
  add_client_flags(app, o);
  add_worker_flags(app, o);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (auto combined = check_combination(o); !combined) {
    std::cerr << combined.error() << "\nRun with --help for more information.\n";
    return 2;
  }
  o.config.queue_timeout = milliseconds(o.queue_timeout_ms);
  o.config.max_queue_timeout = milliseconds(o.max_queue_timeout_ms);
  o.config.unknown_provider_grace = milliseconds(o.unknown_provider_grace_ms);
  o.config.running_timeout = milliseconds(o.running_timeout_ms);
  o.config.running_grace = milliseconds(o.running_grace_ms);
  o.config.heartbeat_interval = milliseconds(o.heartbeat_ms);
  o.config.result_ttl = milliseconds(o.result_ttl_ms);
  o.config.drain_timeout = milliseconds(o.drain_timeout_ms);
  if (!o.metrics_listen.empty()) {
    o.metrics_address = dispatch::metrics::parse_listen_address(o.metrics_listen).value();
  }
  if (!o.config_path.empty()) {
    auto quotas = dispatch::broker::load_quota_config(o.config_path);
    if (!quotas) {
      std::cerr << quotas.error() << "\n";
      return 2;
    }
    o.config.quotas = std::move(quotas).value();
  }
  return o;
}

// SIGHUP: the file is read again; a file that no longer loads is logged and the limits in
// force stay.
void reload_quotas(const std::string& path, dispatch::broker::BrokerCore& core) {
  if (path.empty()) {
    spdlog::debug("SIGHUP: no --config file to re-read");
    return;
  }
  auto quotas = dispatch::broker::load_quota_config(path);
  if (!quotas) {
    spdlog::error("SIGHUP: keeping the limits in force: {}", quotas.error());
    return;
  }
  spdlog::info("SIGHUP: re-read {}", path);
  core.configure_quotas(*quotas);
}

// The Prometheus endpoint of --metrics-listen, counting from the start; nullptr when off.
struct MetricsServing {
  std::shared_ptr<prometheus::Registry> registry;
  std::unique_ptr<dispatch::broker::BrokerMetrics> metrics;
  std::unique_ptr<dispatch::metrics::MetricsEndpoint> endpoint;
};

MetricsServing serve_metrics(const Options& o, dispatch::broker::BrokerServer& server) {
  MetricsServing serving;
  if (o.metrics_listen.empty()) return serving;
  serving.registry = std::make_shared<prometheus::Registry>();
  serving.metrics = std::make_unique<dispatch::broker::BrokerMetrics>(*serving.registry);
  auto endpoint = dispatch::metrics::MetricsEndpoint::start(o.metrics_address, serving.registry);
  if (!endpoint) throw std::runtime_error("--metrics-listen: " + endpoint.error());
  serving.endpoint = std::move(endpoint).value();
  if (!dispatch::metrics::is_loopback_host(o.metrics_address.host)) {
    // Counts and provider/model names only (no prompt, key or job id): any explicit address is
    // allowed, but say that it is reachable from elsewhere.
    spdlog::warn("metrics served on a non-loopback address, without authentication: {}",
                 serving.endpoint->url());
  }
  server.set_metrics(serving.metrics.get());
  return serving;
}

int serve(const Options& o) {
  const BrokerConfig& config = o.config;
  dispatch::WakeupFd stop;
  dispatch::WakeupFd reload;
  const dispatch::broker::StopSignals signals(stop);
  const dispatch::broker::ReloadSignal hangup(reload);
  // 16 hex digits: a new value per process start, so clients can tell that the broker
  // restarted (and resubmit what they have not seen finish).
  dispatch::broker::BrokerServer server(config, dispatch::random_hex_id(8));
  const MetricsServing metrics = serve_metrics(o, server);
  // Tests and scripts read this line to learn the ephemeral ports.
  std::cout << "dispatch-broker listening frontend=" << server.frontend_endpoint()
            << " backend=" << server.backend_endpoint();
  if (metrics.endpoint) std::cout << " metrics=" << metrics.endpoint->url();
  std::cout << std::endl;
  spdlog::info(
      "broker {} listening: frontend {} backend {} (queue limit {}, heartbeat {} ms x {}, {}, "
      "malloc: {})",
      server.core().broker_id(), server.frontend_endpoint(), server.backend_endpoint(),
      config.queue_limit, o.heartbeat_ms, config.liveness, server.curve() ? "CURVE" : "plaintext",
      dispatch::broker::heap_allocator_name());
  server.on_reload(
      [&o](dispatch::broker::BrokerCore& core) { reload_quotas(o.config_path, core); });
  server.run(&stop, &reload);
  const auto& counters = server.core().counters();
  spdlog::info("broker stopped: {} jobs accepted, {} redelivered, {} hostile messages",
               counters.jobs_accepted, counters.redeliveries, counters.hostile_messages);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  auto options = parse_command_line(argc, argv);
  if (!options) return options.error();

  auto logger = spdlog::stderr_color_mt("dispatch-broker");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(options->log_level));
  try {
    return serve(*options);
  } catch (const std::exception& e) {
    spdlog::critical("dispatch-broker: {}", e.what());
    return 1;
  }
}
