#include "dispatch/gateway/listen.hpp"

#include <boost/asio/ip/address.hpp>
#include <charconv>

namespace dispatch::gateway {

std::string ListenAddress::url(uint16_t bound_port) const {
  const bool v6 = host.find(':') != std::string::npos;
  return "http://" + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(bound_port);
}

Result<ListenAddress, std::string> parse_listen(std::string_view text) {
  const std::string problem = "--listen '" + std::string(text) + "': ";
  const std::size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) return problem + "expected HOST:PORT";
  std::string_view host = text.substr(0, colon);
  const std::string_view port_text = text.substr(colon + 1);
  unsigned port = 0;
  const auto [end, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port > 65535) {
    return problem + "the port must be a number from 0 to 65535";
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  ListenAddress out;
  out.port = static_cast<uint16_t>(port);
  if (host == "localhost") {
    out.host = "127.0.0.1";
  } else if (host == "*" || host.empty()) {
    out.host = "0.0.0.0";
  } else {
    boost::system::error_code bad;
    boost::asio::ip::make_address(std::string(host), bad);
    if (bad) return problem + "'" + std::string(host) + "' is not an IP address (or localhost, *)";
    out.host = std::string(host);
  }
  return out;
}

bool is_loopback(std::string_view numeric_host) {
  boost::system::error_code bad;
  const auto address = boost::asio::ip::make_address(std::string(numeric_host), bad);
  return !bad && address.is_loopback();
}

}  // namespace dispatch::gateway
