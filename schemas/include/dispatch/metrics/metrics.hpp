#pragma once

// Prometheus metrics shared by the broker, the worker and the gateway (prometheus-cpp): one
// registry per process, label values from untrusted input bounded, the text format for
// GET /metrics, and the small HTTP endpoint of `--metrics-listen`.
//
// Conventions (README, "Metrics"): names start with `dispatch_`, counters end in `_total`,
// durations are histograms in `_seconds`, labels come from bounded sets (provider, model,
// outcome, error kind, priority, endpoint, status) - never job ids or tenants' free text.

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "dispatch/common/result.hpp"

namespace prometheus {
class Exposer;
}  // namespace prometheus

namespace dispatch::metrics {

// The label value every value past a LabelCap's limit folds into.
inline constexpr std::string_view kOtherLabel = "other";
// Distinct values a label of untrusted origin (a provider or model name a client chose) may take
// before new ones fold into "other": bounds the series a hostile client can create.
inline constexpr std::size_t kDefaultLabelLimit = 100;

// The values one label has taken, up to a limit. Thread-safe (the gateway counts from several
// threads); the broker and the worker call it once per new series, not per job.
class LabelCap {
 public:
  explicit LabelCap(std::size_t limit = kDefaultLabelLimit) : limit_(limit) {}
  // `value` itself while it is known or there is room for it; "other" afterwards. An empty value
  // is shown as "none".
  std::string bound(std::string_view value);
  std::size_t size() const;

 private:
  std::size_t limit_;
  mutable std::mutex mutex_;
  std::unordered_set<std::string> seen_;
};

// Bucket bounds in seconds for request latencies (1 ms to 5 min) and for the dispatcher's own
// overhead (100 us to 10 s).
const prometheus::Histogram::BucketBoundaries& latency_buckets();
const prometheus::Histogram::BucketBoundaries& overhead_buckets();

// The registry's metrics in the Prometheus text format (version 0.0.4).
std::string render_text(prometheus::Registry& registry);

// HOST:PORT of `--metrics-listen` ("[::1]:9100" for IPv6); port 0 binds an ephemeral port.
struct ListenAddress {
  std::string host;
  uint16_t port = 0;
};
Result<ListenAddress, std::string> parse_listen_address(std::string_view text);
bool is_loopback_host(std::string_view host);

// GET /metrics over HTTP on its own threads (civetweb, through prometheus-cpp's Exposer): the
// registry's metrics are thread-safe, so a scrape never waits for the event loop.
class MetricsEndpoint {
 public:
  // The error says why it could not bind (address in use, not an address of this host).
  static Result<std::unique_ptr<MetricsEndpoint>, std::string> start(
      const ListenAddress& address, std::shared_ptr<prometheus::Registry> registry);
  struct Private {};  // constructed by start() only
  explicit MetricsEndpoint(Private);
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  // http://HOST:PORT/metrics with the port actually bound.
  const std::string& url() const noexcept { return url_; }
  uint16_t port() const noexcept { return port_; }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string url_;
  uint16_t port_ = 0;
};

// Handles with the increment syntax of std::atomic over a prometheus-cpp metric, for code that
// counts in several places (the gateway's connections).
class CounterHandle {
 public:
  explicit CounterHandle(prometheus::Counter& counter) : counter_(&counter) {}
  CounterHandle& operator++() {
    counter_->Increment();
    return *this;
  }
  CounterHandle& operator+=(uint64_t n) {
    counter_->Increment(static_cast<double>(n));
    return *this;
  }
  uint64_t load() const { return static_cast<uint64_t>(counter_->Value()); }

 private:
  prometheus::Counter* counter_;
};

class GaugeHandle {
 public:
  explicit GaugeHandle(prometheus::Gauge& gauge) : gauge_(&gauge) {}
  GaugeHandle& operator++() {
    gauge_->Increment();
    return *this;
  }
  GaugeHandle& operator--() {
    gauge_->Decrement();
    return *this;
  }
  int64_t load() const { return static_cast<int64_t>(gauge_->Value()); }

 private:
  prometheus::Gauge* gauge_;
};

}  // namespace dispatch::metrics
