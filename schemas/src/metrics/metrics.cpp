#include "dispatch/metrics/metrics.hpp"

#include <prometheus/exposer.h>
#include <prometheus/text_serializer.h>

#include <charconv>
#include <exception>

namespace dispatch::metrics {

std::string LabelCap::bound(std::string_view value) {
  if (value.empty()) return "none";
  const std::lock_guard lock(mutex_);
  std::string text(value);
  if (seen_.contains(text)) return text;
  if (seen_.size() >= limit_) return std::string(kOtherLabel);
  seen_.insert(text);
  return text;
}

std::size_t LabelCap::size() const {
  const std::lock_guard lock(mutex_);
  return seen_.size();
}

const prometheus::Histogram::BucketBoundaries& latency_buckets() {
  static const prometheus::Histogram::BucketBoundaries buckets{
      0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
  return buckets;
}

const prometheus::Histogram::BucketBoundaries& overhead_buckets() {
  static const prometheus::Histogram::BucketBoundaries buckets{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 10};
  return buckets;
}

std::string render_text(prometheus::Registry& registry) {
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

Result<ListenAddress, std::string> parse_listen_address(std::string_view text) {
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return "expected HOST:PORT, got \"" + std::string(text) + "\"";
  }
  std::string_view host = text.substr(0, colon);
  const std::string_view port_text = text.substr(colon + 1);
  unsigned port = 0;
  const auto [end, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port > 65535 ||
      port_text.empty()) {
    return "bad port in \"" + std::string(text) + "\" (0-65535; 0: ephemeral)";
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (host.empty() || host.find_first_of(" /") != std::string_view::npos) {
    return "bad host in \"" + std::string(text) + "\"";
  }
  return ListenAddress{std::string(host), static_cast<uint16_t>(port)};
}

bool is_loopback_host(std::string_view host) {
  return host == "localhost" || host == "::1" || host.starts_with("127.");
}

namespace {

// civetweb's listening option: IPv6 hosts in brackets, and "+" would mean both families.
std::string civet_address(const ListenAddress& address) {
  const bool v6 = address.host.find(':') != std::string::npos;
  return (v6 ? "[" + address.host + "]" : address.host) + ":" + std::to_string(address.port);
}

}  // namespace

Result<std::unique_ptr<MetricsEndpoint>, std::string> MetricsEndpoint::start(
    const ListenAddress& address, std::shared_ptr<prometheus::Registry> registry) {
  auto endpoint = std::make_unique<MetricsEndpoint>(Private{});
  const std::string bind = civet_address(address);
  try {
    // One thread is enough for a scraper or two; civetweb's default is 50.
    endpoint->exposer_ = std::make_unique<prometheus::Exposer>(bind, 1);
  } catch (const std::exception& e) {
    return "cannot listen on " + bind + ": " + e.what();
  }
  const std::vector<int> ports = endpoint->exposer_->GetListeningPorts();
  if (ports.empty()) return "cannot listen on " + bind + ": no port bound";
  endpoint->port_ = static_cast<uint16_t>(ports.front());
  endpoint->registry_ = std::move(registry);
  endpoint->exposer_->RegisterCollectable(endpoint->registry_);
  ListenAddress bound = address;
  bound.port = endpoint->port_;
  endpoint->url_ = "http://" + civet_address(bound) + "/metrics";
  return endpoint;
}

MetricsEndpoint::MetricsEndpoint(Private) {}

MetricsEndpoint::~MetricsEndpoint() = default;

}  // namespace dispatch::metrics
