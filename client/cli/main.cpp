// `dispatch`: the command line over the client library (see dispatch/cli/app.hpp).

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "dispatch/cli/app.hpp"

int main(int argc, char** argv) {
  // Logs go to stderr so stdout stays clean for answers and --json; DISPATCH_LOG_LEVEL
  // (trace, debug, info, warn, error, off) turns them up or down.
  auto logger = spdlog::stderr_color_mt("dispatch");
  spdlog::set_default_logger(logger);
  const char* level = std::getenv("DISPATCH_LOG_LEVEL");
  spdlog::set_level(level != nullptr ? spdlog::level::from_str(level) : spdlog::level::warn);

  std::vector<std::string> args(argv, argv + argc);
  return dispatch::cli::run_cli(
      args, dispatch::cli::CliStreams{std::cout, std::cerr, ::isatty(STDERR_FILENO) == 1});
}
