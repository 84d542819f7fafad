#include "dispatch/test/fake_provider_process.hpp"

#include <charconv>
#include <stdexcept>

namespace dispatch::test {
namespace {

std::vector<std::string> command_line(const std::string& binary,
                                      const std::vector<std::string>& extra_args) {
  std::vector<std::string> argv{binary, "--listen", "127.0.0.1:0", "--quiet"};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  return argv;
}

}  // namespace

FakeProviderProcess::FakeProviderProcess(const std::string& binary,
                                         const std::vector<std::string>& extra_args,
                                         std::chrono::milliseconds startup_timeout,
                                         const ChildOptions& options)
    : process_(ChildProcess::spawn(command_line(binary, extra_args), options)) {
  const std::optional<std::string> line = process_.read_line(startup_timeout);
  unsigned value = 0;
  if (!line || line->empty() ||
      std::from_chars(line->data(), line->data() + line->size(), value).ec != std::errc{} ||
      value == 0 || value > 65535) {
    throw std::runtime_error("fake-provider did not print its port (got '" +
                             line.value_or("<nothing>") + "')");
  }
  port_ = static_cast<uint16_t>(value);
}

std::string FakeProviderProcess::host_url() const {
  return "http://127.0.0.1:" + std::to_string(port_);
}

}  // namespace dispatch::test
