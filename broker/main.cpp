// dispatch-broker: the queue and load balancer between clients and workers. All logic lives in
// the dispatch_broker library; this file only turns flags into a BrokerConfig.

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <iostream>
#include <random>
#include <string>

#include "dispatch/broker/config.hpp"
#include "dispatch/broker/server.hpp"

namespace {

// 16 hex digits: a new value per process start, so clients can tell that the broker restarted
// (and resubmit what they have not seen finish).
std::string random_broker_id() {
  std::random_device device;
  const uint64_t value = (uint64_t{device()} << 32) ^ device();
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(value));
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  dispatch::broker::BrokerConfig config;
  uint64_t queue_timeout_ms = static_cast<uint64_t>(config.queue_timeout.count());
  uint64_t heartbeat_ms = static_cast<uint64_t>(config.heartbeat_interval.count());
  uint64_t result_ttl_ms = static_cast<uint64_t>(config.result_ttl.count());
  uint64_t drain_timeout_ms = static_cast<uint64_t>(config.drain_timeout.count());
  std::string log_level = "info";

  CLI::App app{"dispatch-broker: priority queue, load balancer and stream relay of LLM Dispatcher"};
  app.add_option("--frontend", config.frontend, "Endpoint for clients (port 0 or *: ephemeral)")
      ->capture_default_str();
  app.add_option("--backend", config.backend, "Endpoint for workers (port 0 or *: ephemeral)")
      ->capture_default_str();
  app.add_option("--queue-limit", config.queue_limit,
                 "Jobs waiting for a worker, all providers; more get rejected queue_full")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{100'000'000}));
  app.add_option("--queue-timeout-ms", queue_timeout_ms,
                 "Default queue deadline (submit.queue_timeout_ms 0)")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{4'294'967'295}));
  app.add_option("--heartbeat-ms", heartbeat_ms, "Heartbeat interval")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{3'600'000}));
  app.add_option("--liveness", config.liveness,
                 "Missed heartbeat intervals before a worker is dead")
      ->capture_default_str()
      ->check(CLI::Range(1u, 1000u));
  app.add_option("--redelivery-limit", config.redelivery_limit,
                 "Re-queues of a job after losing its worker; then error internal/redelivery_limit")
      ->capture_default_str()
      ->check(CLI::Range(0u, 1000u));
  app.add_option("--result-ttl-ms", result_ttl_ms, "How long finished results are kept for dedup")
      ->capture_default_str();
  app.add_option("--result-keep", config.result_keep, "Most finished results kept (oldest evicted)")
      ->capture_default_str();
  app.add_option("--client-buffer", config.client_buffer,
                 "Messages buffered per slow client before chunks are dropped")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{1}, uint64_t{100'000'000}));
  app.add_option("--drain-timeout-ms", drain_timeout_ms,
                 "After SIGTERM/SIGINT: time running jobs get to finish")
      ->capture_default_str();
  app.add_option("--hwm", config.hwm, "ZeroMQ high-water mark (messages) of both sockets")
      ->capture_default_str()
      ->check(CLI::Range(1, 100'000'000));
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|critical|off")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help is 0; a usage error exits 2, like `dispatch`
  }

  config.queue_timeout = std::chrono::milliseconds(queue_timeout_ms);
  config.heartbeat_interval = std::chrono::milliseconds(heartbeat_ms);
  config.result_ttl = std::chrono::milliseconds(result_ttl_ms);
  config.drain_timeout = std::chrono::milliseconds(drain_timeout_ms);

  auto logger = spdlog::stderr_color_mt("dispatch-broker");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::from_str(log_level));

  try {
    dispatch::broker::WakePipe stop;
    dispatch::broker::install_stop_signals(stop);
    dispatch::broker::BrokerServer server(config, random_broker_id());
    // Tests and scripts read this line to learn the ephemeral ports.
    std::cout << "dispatch-broker listening frontend=" << server.frontend_endpoint()
              << " backend=" << server.backend_endpoint() << std::endl;
    spdlog::info(
        "broker {} listening: frontend {} backend {} (queue limit {}, heartbeat {} ms x {})",
        server.core().broker_id(), server.frontend_endpoint(), server.backend_endpoint(),
        config.queue_limit, heartbeat_ms, config.liveness);
    server.run(stop.read_fd());
    const auto& counters = server.core().counters();
    spdlog::info("broker stopped: {} jobs accepted, {} redelivered, {} hostile messages",
                 counters.jobs_accepted, counters.redeliveries, counters.hostile_messages);
  } catch (const std::exception& e) {
    spdlog::critical("dispatch-broker: {}", e.what());
    return 1;
  }
  return 0;
}
