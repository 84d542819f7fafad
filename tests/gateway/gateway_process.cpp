#include "gateway_process.hpp"

#include <stdexcept>

namespace dispatch::gateway::test {

namespace {

dispatch::test::ChildProcess spawn(const std::string& binary, const std::string& broker,
                                   const std::vector<std::string>& extra_args,
                                   const dispatch::test::ChildOptions& options) {
  std::vector<std::string> argv{binary,      "--listen", "127.0.0.1:0", "--broker", broker,
                                "--threads", "2"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  return dispatch::test::ChildProcess::spawn(argv, options);
}

}  // namespace

GatewayProcess::GatewayProcess(const std::string& binary, const std::string& broker,
                               const std::vector<std::string>& extra_args,
                               const dispatch::test::ChildOptions& options,
                               std::chrono::milliseconds startup_timeout)
    : process_(spawn(binary, broker, extra_args, options)) {
  const std::string prefix = "dispatch-gateway listening ";
  const auto line = process_.read_line(startup_timeout);
  if (!line || line->rfind(prefix, 0) != 0) {
    throw std::runtime_error("dispatch-gateway did not start (first line: '" +
                             line.value_or("<none>") + "')");
  }
  url_ = line->substr(prefix.size());
  port_ = static_cast<uint16_t>(std::stoi(url_.substr(url_.rfind(':') + 1)));
}

}  // namespace dispatch::gateway::test
