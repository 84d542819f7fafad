// fake-provider: stands in for every real LLM provider in tests, the demo and benchmarks.
// Prints the bound port on stdout (one line), logs to stderr, stops on SIGTERM / SIGINT.

#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <iostream>

#include "dispatch/fake_provider/server.hpp"

namespace {

bool split_listen(const std::string& listen, std::string& host, uint16_t& port) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  host = listen.substr(0, colon);
  unsigned value = 0;
  const char* first = listen.data() + colon + 1;
  const char* last = listen.data() + listen.size();
  const auto [ptr, ec] = std::from_chars(first, last, value);
  if (ec != std::errc{} || ptr != last || value > 65535) return false;
  port = static_cast<uint16_t>(value);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "fake-provider: an HTTP server speaking the OpenAI, Anthropic, Ollama, DashScope "
      "(native and compatible) wire formats with scripted faults"};
  std::string listen = "127.0.0.1:0";
  dispatch::fake_provider::ServerOptions options;
  app.add_option("--listen", listen, "host:port to bind (port 0: ephemeral)")
      ->capture_default_str()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--tokens", options.default_tokens, "completion tokens per reply (default 8)")
      ->check(CLI::Range(0, 100000))
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--threads", options.threads, "I/O threads (default 1)")
      ->check(CLI::Range(1, 64))
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--require-key", options.required_key,
                 "accept only this API key (default: any non-empty key)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--limit-rpm", options.limits.rpm,
                 "per API key: at most N requests in any sliding minute and max(1, 2N/60) in any "
                 "sliding second; more are answered 429 (default: unlimited)")
      ->check(CLI::Range(int64_t{1}, int64_t{1'000'000'000}))
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_option("--limit-tpm", options.limits.tpm,
                 "per API key: at most N tokens (prompt + completion) in any sliding minute and "
                 "max(1, 2N/60) in any sliding second (default: unlimited)")
      ->check(CLI::Range(int64_t{1}, int64_t{1'000'000'000'000}))
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}))
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  app.add_flag("--quiet", options.quiet, "no per-attempt log lines");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help is 0; a usage error exits 2, like `dispatch`
  }

  spdlog::set_default_logger(spdlog::stderr_color_mt("fake-provider"));
  // Checked by IsMember above: from_str would read a typo as "off".
  spdlog::set_level(spdlog::level::from_str(log_level));
  if (!split_listen(listen, options.host, options.port)) {
    spdlog::error("--listen wants host:port, got '{}'", listen);
    return 2;
  }

  // Blocked before any thread starts so that only sigwait below receives them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  // A client closing mid-write must be an error code, not a fatal signal.
  signal(SIGPIPE, SIG_IGN);

  dispatch::fake_provider::Server server(options);
  uint16_t port = 0;
  try {
    port = server.start();
  } catch (const std::exception& e) {
    spdlog::error("cannot listen on {}: {}", listen, e.what());
    return 1;
  }
  std::cout << port << std::endl;

  int received = 0;
  sigwait(&stop_signals, &received);
  spdlog::info("signal {} received, stopping", received);
  server.stop();
  return 0;
}
