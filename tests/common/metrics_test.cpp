// The shared metrics helpers (schemas/include/dispatch/metrics): bounded labels, listen
// addresses, the text format and the HTTP endpoint on an ephemeral port.

#include "dispatch/metrics/metrics.hpp"

#include <gtest/gtest.h>

#include <string>

#include "dispatch/test/stack.hpp"

namespace dispatch::metrics {
namespace {

TEST(LabelCap, FoldsValuesPastItsLimitIntoOther) {
  LabelCap cap(2);
  EXPECT_EQ(cap.bound("gpt-4o"), "gpt-4o");
  EXPECT_EQ(cap.bound("qwen-max"), "qwen-max");
  EXPECT_EQ(cap.bound("attacker-1"), "other");
  EXPECT_EQ(cap.bound("attacker-2"), "other");
  EXPECT_EQ(cap.bound("gpt-4o"), "gpt-4o");  // known values keep their series
  EXPECT_EQ(cap.bound(""), "none");
  EXPECT_EQ(cap.size(), 2u);
}

TEST(ListenAddress, ParsesHostAndPort) {
  auto v4 = parse_listen_address("127.0.0.1:0");
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, 0);
  auto v6 = parse_listen_address("[::1]:9100");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->port, 9100);
  EXPECT_FALSE(parse_listen_address("127.0.0.1"));
  EXPECT_FALSE(parse_listen_address("127.0.0.1:65536"));
  EXPECT_FALSE(parse_listen_address("127.0.0.1:x"));
  EXPECT_FALSE(parse_listen_address(":9100"));
  EXPECT_FALSE(parse_listen_address("127.0.0.1:"));
  EXPECT_TRUE(is_loopback_host("127.0.0.1"));
  EXPECT_TRUE(is_loopback_host("::1"));
  EXPECT_FALSE(is_loopback_host("0.0.0.0"));
}

TEST(MetricsText, RendersCountersGaugesAndHistograms) {
  prometheus::Registry registry;
  auto& jobs =
      prometheus::BuildCounter().Name("dispatch_test_jobs_total").Help("jobs").Register(registry);
  jobs.Add({{"outcome", "success"}}).Increment(3);
  auto& wait = prometheus::BuildHistogram()
                   .Name("dispatch_test_wait_seconds")
                   .Help("wait")
                   .Register(registry)
                   .Add({}, latency_buckets());
  wait.Observe(0.002);
  const std::string text = render_text(registry);
  EXPECT_NE(text.find("dispatch_test_jobs_total{outcome=\"success\"} 3"), std::string::npos)
      << text;
  EXPECT_NE(text.find("dispatch_test_wait_seconds_bucket{le=\"0.005\"} 1"), std::string::npos)
      << text;
  EXPECT_NE(text.find("dispatch_test_wait_seconds_count 1"), std::string::npos) << text;
}

TEST(MetricsEndpoint, ServesTheRegistryOnAnEphemeralPort) {
  auto registry = std::make_shared<prometheus::Registry>();
  prometheus::BuildGauge()
      .Name("dispatch_test_open")
      .Help("open")
      .Register(*registry)
      .Add({})
      .Set(7);
  auto endpoint = MetricsEndpoint::start({"127.0.0.1", 0}, registry);
  ASSERT_TRUE(endpoint) << endpoint.error();
  ASSERT_NE((*endpoint)->port(), 0);
  EXPECT_EQ((*endpoint)->url(),
            "http://127.0.0.1:" + std::to_string((*endpoint)->port()) + "/metrics");
  const auto reply = test::http_request("GET", (*endpoint)->url());
  EXPECT_EQ(reply.status, 200);
  EXPECT_NE(reply.body.find("dispatch_test_open 7"), std::string::npos) << reply.body;

  // The same port again: taken, a typed error rather than an exception.
  auto taken = MetricsEndpoint::start({"127.0.0.1", (*endpoint)->port()}, registry);
  EXPECT_FALSE(taken);
}

}  // namespace
}  // namespace dispatch::metrics
