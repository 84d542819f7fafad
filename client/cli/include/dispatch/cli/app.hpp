#pragma once

// The `dispatch` command line: chat, batch, status. main() is a thin wrapper over run_cli so
// the whole CLI is testable in-process.

#include <iosfwd>
#include <string>
#include <vector>

namespace dispatch::cli {

struct CliStreams {
  std::ostream& out;
  std::ostream& err;
  bool err_is_tty = false;  // progress bar vs plain progress lines
};

// args[0] is the program name. Returns the exit code (see exit_codes.hpp).
int run_cli(const std::vector<std::string>& args, CliStreams streams);

// The broker endpoint when --broker is not given: $DISPATCH_BROKER, else tcp://127.0.0.1:5555.
std::string default_broker_endpoint();

}  // namespace dispatch::cli
