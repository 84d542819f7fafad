// dispatch-gateway: the HTTP front door (OpenAI- and Anthropic-compatible) over the broker.
// All logic lives in the dispatch_gateway library; this file turns flags into a running server
// and handles the signals.

#include <poll.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <thread>

#include "dispatch/client.hpp"
#include "dispatch/common/fd.hpp"
#include "dispatch/common/result.hpp"
#include "dispatch/gateway/config.hpp"
#include "dispatch/gateway/listen.hpp"
#include "dispatch/gateway/server.hpp"
#include "dispatch/protocol/broker_keys.hpp"

namespace {

using dispatch::gateway::GatewayConfig;
using dispatch::gateway::ListenAddress;

constexpr int kUsageError = 2;
constexpr const char* kDefaultBroker = "tcp://127.0.0.1:5555";

struct Flags {
  std::string listen = "127.0.0.1:8080";
  std::string broker;  // "" = the config's, else kDefaultBroker
  std::string config_path;
  std::string broker_key;    // CURVE: the broker's NAME.key ("" = $DISPATCH_BROKER_KEY)
  std::string curve_secret;  // CURVE: our NAME.key_secret ("" = $DISPATCH_CURVE_SECRET)
  int threads = static_cast<int>(std::max(1U, std::thread::hardware_concurrency()));
  uint64_t drain_timeout_ms = 30'000;
  bool insecure = false;
  std::string log_level = "info";
};

// What main needs once the flags and the config file have been read and checked.
struct Setup {
  Flags flags;
  ListenAddress listen;
  GatewayConfig config;
  dispatch::ClientOptions client;  // the broker link's: endpoint and CURVE keys
};

int parse_flags(int argc, char** argv, Flags& flags) {
  CLI::App app{"dispatch-gateway: OpenAI- and Anthropic-compatible HTTP API over LLM Dispatcher"};
  app.add_option("--listen", flags.listen, "HOST:PORT to serve HTTP on (port 0: ephemeral)")
      ->capture_default_str();
  app.add_option("--broker", flags.broker,
                 "The broker's client endpoint (default: gateway.yaml's broker.endpoint, else " +
                     std::string(kDefaultBroker) + ")");
  app.add_option("--broker-key", flags.broker_key,
                 "CURVE: the broker's public key file NAME.key (default $DISPATCH_BROKER_KEY)");
  app.add_option("--curve-secret", flags.curve_secret,
                 "CURVE: this gateway's secret key file NAME.key_secret, mode 0600 (default "
                 "$DISPATCH_CURVE_SECRET)");
  app.add_option("--config", flags.config_path, "gateway.yaml: keys, model aliases, limits");
  app.add_option("--threads", flags.threads, "HTTP I/O threads")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--drain-timeout-ms", flags.drain_timeout_ms,
                 "After SIGTERM/SIGINT: time running requests get to finish")
      ->capture_default_str()
      ->check(CLI::Range(uint64_t{0}, uint64_t{3'600'000}));
  app.add_flag("--insecure", flags.insecure,
               "Serve without API keys on a non-loopback address (anyone who reaches it may use "
               "every provider)");
  app.add_option("--log-level", flags.log_level, "trace|debug|info|warn|error|critical|off")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : kUsageError;  // --help is 0; a usage error exits 2
  }
  return -1;  // go on
}

std::string environment(std::string_view name) {
  const char* value = std::getenv(std::string(name).c_str());
  return value != nullptr ? value : "";
}

// The broker link's CURVE keys: each flag, else its environment variable (as `dispatch`).
dispatch::Result<dispatch::protocol::BrokerKeys, std::string> broker_keys(const Flags& flags) {
  namespace proto = dispatch::protocol;
  const std::array<proto::KeyFileCandidate, 2> broker_key{{
      {flags.broker_key, std::string(proto::kBrokerKeyFlag)},
      {environment(proto::kBrokerKeyEnv), std::string(proto::kBrokerKeyEnv)},
  }};
  const std::array<proto::KeyFileCandidate, 2> curve_secret{{
      {flags.curve_secret, std::string(proto::kCurveSecretFlag)},
      {environment(proto::kCurveSecretEnv), std::string(proto::kCurveSecretEnv)},
  }};
  return proto::load_broker_keys(broker_key, curve_secret);
}

// Reads the config and checks the flags against it; nullopt after printing the problem.
std::optional<Setup> prepare(const Flags& flags) {
  Setup setup{flags, {}, {}, {}};
  auto listen = dispatch::gateway::parse_listen(flags.listen);
  if (!listen) {
    std::cerr << "dispatch-gateway: " << listen.error() << "\n";
    return std::nullopt;
  }
  setup.listen = std::move(*listen);
  if (!flags.config_path.empty()) {
    auto config = dispatch::gateway::load_gateway_config(flags.config_path,
                                                         dispatch::gateway::process_environment());
    if (!config) {
      std::cerr << "dispatch-gateway: invalid config: " << config.error() << "\n";
      return std::nullopt;
    }
    setup.config = std::move(*config);
  }
  if (setup.config.keys.empty() && !dispatch::gateway::is_loopback(setup.listen.host) &&
      !flags.insecure) {
    std::cerr << "dispatch-gateway: refusing to serve " << flags.listen
              << " without API keys: anyone who can reach it could use every provider. Add "
                 "`keys` to gateway.yaml (--config), listen on a loopback address, or pass "
                 "--insecure.\n";
    return std::nullopt;
  }
  if (setup.flags.broker.empty()) {
    setup.flags.broker =
        setup.config.broker_endpoint.empty() ? kDefaultBroker : setup.config.broker_endpoint;
  }
  auto keys = broker_keys(flags);
  if (!keys) {
    std::cerr << "dispatch-gateway: " << keys.error() << "\n";
    return std::nullopt;
  }
  setup.client.broker_endpoint = setup.flags.broker;
  setup.client.broker_public_key = std::move(keys->broker_public_key);
  setup.client.curve_keys = std::move(keys->own);
  return setup;
}

// Each stream is a descriptor: 10,000 of them need more than the usual soft limit of 1024.
uint64_t raise_open_file_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
    getrlimit(RLIMIT_NOFILE, &limit);
  }
  return limit.rlim_cur;
}

// Blocks until a signal arrives (true) or `timeout` passes (false); -1 waits for ever.
bool wait_for_signal(const dispatch::UniqueFd& signals, int timeout_ms) {
  pollfd item{signals.get(), POLLIN, 0};
  if (poll(&item, 1, timeout_ms) <= 0) return false;
  signalfd_siginfo info{};
  [[maybe_unused]] const auto got = read(signals.get(), &info, sizeof info);
  spdlog::info("signal {}", info.ssi_signo);
  return true;
}

// Stops accepting, lets running requests finish up to the drain timeout (a second signal
// ends it at once), then stops.
void drain(dispatch::gateway::Server& server, const dispatch::UniqueFd& signals,
           std::chrono::milliseconds timeout) {
  server.begin_drain();
  spdlog::info("draining: {} connection(s) open get up to {} ms", server.open_connections(),
               timeout.count());
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (server.open_connections() > 0 && std::chrono::steady_clock::now() < deadline) {
    if (wait_for_signal(signals, 50)) {
      spdlog::warn("second signal: stopping now");
      break;
    }
  }
  spdlog::info("drain finished: {} connection(s) cut", server.open_connections());
  server.stop();
}

int serve(const Setup& setup, const dispatch::UniqueFd& signals) {
  auto link = std::make_unique<dispatch::gateway::LoopBrokerLink>(setup.client);
  dispatch::gateway::ServerOptions options;
  options.host = setup.listen.host;
  options.port = setup.listen.port;
  options.threads = setup.flags.threads;
  dispatch::gateway::Server server(options, setup.config, *link);
  const uint16_t port = server.start();
  // Tests and scripts read this line to learn the ephemeral port.
  std::cout << "dispatch-gateway listening " << setup.listen.url(port) << std::endl;
  spdlog::info(
      "gateway listening on {} for broker {} ({} thread(s), {} API key(s), {} alias(es), "
      "connection limit {}, open-file limit {})",
      setup.listen.url(port), setup.flags.broker, setup.flags.threads, setup.config.keys.size(),
      setup.config.models.aliases.size(), setup.config.limits.max_connections,
      raise_open_file_limit());
  if (setup.config.keys.empty() && !dispatch::gateway::is_loopback(setup.listen.host)) {
    spdlog::warn("--insecure: serving {} without API keys", setup.listen.url(port));
  }
  wait_for_signal(signals, -1);
  drain(server, signals, std::chrono::milliseconds(setup.flags.drain_timeout_ms));
  link.reset();  // late callbacks land in the stopped server and are dropped
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  if (const int code = parse_flags(argc, argv, flags); code >= 0) return code;
  const auto setup = prepare(flags);
  if (!setup) return kUsageError;
  spdlog::set_default_logger(spdlog::stderr_color_mt("dispatch-gateway"));
  spdlog::set_level(spdlog::level::from_str(flags.log_level));
  // Blocked before any thread starts, so that every thread inherits the mask and only the
  // signalfd sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  const dispatch::UniqueFd signals = dispatch::open_signal_fd({SIGTERM, SIGINT});
  if (!signals.valid()) {
    pthread_sigmask(SIG_UNBLOCK, &stop_signals, nullptr);
    spdlog::critical("dispatch-gateway: cannot open a signalfd");
    return 1;
  }
  try {
    return serve(*setup, signals);
  } catch (const std::invalid_argument& e) {  // e.g. an endpoint zmq cannot parse
    spdlog::critical("dispatch-gateway: {}", e.what());
    return kUsageError;
  } catch (const std::exception& e) {
    spdlog::critical("dispatch-gateway: cannot serve {}: {}", setup->listen.url(setup->listen.port),
                     e.what());
    return 1;
  }
}
