// /metrics on every process: the real broker, worker and gateway with --metrics-listen
// 127.0.0.1:0 over the fake provider, a known workload, then exact values scraped from each
// process, the expositions checked by `promtool check metrics`, and a real Prometheus server
// that scrapes all three and answers queries for the series.

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "dispatch/client.hpp"
#include "dispatch/test/prometheus_text.hpp"
#include "dispatch/test/stack.hpp"
#include "gateway_process.hpp"

namespace dispatch::test {
namespace {

using namespace std::chrono_literals;
using gateway::test::GatewayProcess;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kPromtool = "/usr/bin/promtool";
constexpr const char* kPrometheus = "/usr/bin/prometheus";

// Polls `done` every 50 ms until it is true or `bound` has passed.
bool eventually(const std::function<bool()>& done, std::chrono::milliseconds bound = 20s) {
  const auto deadline = Clock::now() + bound;
  while (Clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(50ms);
  }
  return done();
}

std::string scrape(const std::string& url) {
  const HttpReply reply = http_request("GET", url);
  EXPECT_EQ(reply.status, 200) << url;
  return reply.body;
}

// The worker logs "metrics served at URL" once its endpoint is bound.
std::string worker_metrics_url(Stack& stack, std::size_t index) {
  std::string url;
  eventually([&] {
    const std::string log = stack.worker_log(index);
    const std::string marker = "metrics served at ";
    const auto at = log.find(marker);
    if (at == std::string::npos) return false;
    url = log.substr(at + marker.size(), log.find('\n', at) - at - marker.size());
    return true;
  });
  return url;
}

// `promtool check metrics` on `text`: its exit code and what it said.
std::pair<int, std::string> promtool_check(TempDir& dir, const std::string& name,
                                           const std::string& text) {
  const std::string input = dir.file(name + ".prom");
  const std::string output = dir.file(name + ".promtool");
  write_text_file(input, text);
  const std::string command =
      std::string(kPromtool) + " check metrics < " + input + " > " + output + " 2>&1";
  const int status = std::system(command.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_text_file(output)};
}

// A port free on 127.0.0.1 a moment ago, for Prometheus (it prints no port it bound itself).
uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    ::close(fd);
    throw std::runtime_error("no free port");
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

// host:port of an http://host:port/... URL.
std::string host_port(const std::string& url) {
  const auto begin = url.find("://") + 3;
  return url.substr(begin, url.find('/', begin) - begin);
}

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    stack_ = std::make_unique<Stack>(StackBinaries::from_build());
    stack_->start_fake_provider();
    stack_->start_broker({"--heartbeat-ms", "100", "--metrics-listen", "127.0.0.1:0"});
    stack_->start_workers(1, stack_->default_worker_config(),
                          {"--heartbeat-ms", "100", "--metrics-listen", "127.0.0.1:0"});
    stack_->wait_for_workers(1);
    write_text_file(stack_->dir().file("gateway.yaml"), "default_provider: openai\n");
    gateway_ = std::make_unique<GatewayProcess>(
        GATEWAY_BINARY, stack_->frontend(),
        std::vector<std::string>{"--config", stack_->dir().file("gateway.yaml")});
    broker_url_ = stack_->broker_metrics_url();
    worker_url_ = worker_metrics_url(*stack_, 0);
    gateway_url_ = gateway_->url() + "/metrics";
  }

  void TearDown() override {
    gateway_.reset();
    stack_.reset();
  }

  // The workload: 3 answers, 1 answer after one retry, 1 invalid request (no retry), through
  // the client library; 2 answers and one /healthz through the gateway.
  void run_workload() {
    ClientOptions options;
    options.broker_endpoint = stack_->frontend();
    Client client(options);
    for (int i = 0; i < 3; ++i) {
      add_usage(
          client.dispatch(DispatchRequest(Provider::openai, "gpt-ok", {Message::user("hi")})));
    }
    add_usage(client.dispatch(
        DispatchRequest(Provider::openai, "gpt-retry~fail_first=1", {Message::user("again")})));
    EXPECT_THROW(client.dispatch(DispatchRequest(Provider::openai, "gpt-bad~status=400",
                                                 {Message::user("bad")})),
                 DispatchError);
    for (int i = 0; i < 2; ++i) {
      const HttpReply reply =
          http_request("POST", gateway_->url() + "/v1/chat/completions",
                       R"({"model":"gpt-gw","messages":[{"role":"user","content":"hello"}]})");
      ASSERT_EQ(reply.status, 200) << reply.body;
      const json body = json::parse(reply.body);
      prompt_tokens_ += body["usage"]["prompt_tokens"].get<uint64_t>();
      completion_tokens_ += body["usage"]["completion_tokens"].get<uint64_t>();
    }
    ASSERT_EQ(http_request("GET", gateway_->url() + "/healthz").status, 200);
  }

  void add_usage(const DispatchResponse& response) {
    prompt_tokens_ += response.usage.prompt_tokens;
    completion_tokens_ += response.usage.completion_tokens;
  }

  std::unique_ptr<Stack> stack_;
  std::unique_ptr<GatewayProcess> gateway_;
  std::string broker_url_;
  std::string worker_url_;
  std::string gateway_url_;
  uint64_t prompt_tokens_ = 0;
  uint64_t completion_tokens_ = 0;
};

MetricLabels job(const std::string& model, const std::string& outcome) {
  return {{"provider", "openai"}, {"model", model}, {"outcome", outcome}};
}

MetricLabels target(const std::string& model) {
  return {{"provider", "openai"}, {"model", model}};
}

TEST_F(MetricsTest, EveryProcessCountsTheWorkloadExactly) {
  ASSERT_FALSE(broker_url_.empty());
  ASSERT_FALSE(worker_url_.empty());
  run_workload();

  const std::string broker = scrape(broker_url_);
  EXPECT_EQ(metric_value(broker, "dispatch_jobs_accepted_total"), 7) << broker;
  EXPECT_EQ(metric_value(broker, "dispatch_jobs_total", job("gpt-ok", "success")), 3);
  EXPECT_EQ(metric_value(broker, "dispatch_jobs_total", job("gpt-retry~fail_first=1", "success")),
            1);
  EXPECT_EQ(
      metric_value(broker, "dispatch_jobs_total", job("gpt-bad~status=400", "invalid_request")), 1);
  EXPECT_EQ(metric_value(broker, "dispatch_jobs_total", job("gpt-gw", "success")), 2);
  EXPECT_EQ(metric_value(broker, "dispatch_jobs_running"), 0);
  EXPECT_EQ(metric_value(broker, "dispatch_queue_depth", {{"priority", "interactive"}}), 0);
  EXPECT_EQ(
      metric_value(broker, "dispatch_queue_wait_seconds_count", {{"priority", "interactive"}}), 7);
  EXPECT_EQ(metric_value(broker, "dispatch_hostile_messages_total"), 0);
  // Sampled on the broker's tick (50 ms here).
  EXPECT_TRUE(eventually([&] {
    return metric_value(scrape(broker_url_), "dispatch_workers") == 1 &&
           metric_value(scrape(broker_url_), "dispatch_worker_free_slots") ==
               metric_value(scrape(broker_url_), "dispatch_worker_capacity");
  }));

  const std::string worker = scrape(worker_url_);
  EXPECT_EQ(metric_value(worker, "dispatch_jobs_total", job("gpt-ok", "success")), 3) << worker;
  EXPECT_EQ(metric_value(worker, "dispatch_jobs_total", job("gpt-retry~fail_first=1", "success")),
            1);
  EXPECT_EQ(
      metric_value(worker, "dispatch_jobs_total", job("gpt-bad~status=400", "invalid_request")), 1);
  EXPECT_EQ(metric_value(worker, "dispatch_jobs_total", job("gpt-gw", "success")), 2);
  EXPECT_EQ(metric_value(worker, "dispatch_retries_total", target("gpt-retry~fail_first=1")), 1);
  EXPECT_EQ(metric_value(worker, "dispatch_fallbacks_total", target("gpt-retry~fail_first=1")), 0);
  EXPECT_EQ(metric_value(worker, "dispatch_attempts_total", job("gpt-retry~fail_first=1", "ok")),
            1);
  EXPECT_EQ(metric_value(worker, "dispatch_attempts_total",
                         job("gpt-retry~fail_first=1", "server_error")),
            1);
  EXPECT_EQ(metric_value(worker, "dispatch_job_duration_seconds_count", target("gpt-ok")), 3);
  EXPECT_EQ(metric_value(worker, "dispatch_worker_overhead_seconds_count"), 7);
  EXPECT_EQ(metric_value(worker, "dispatch_worker_jobs_running"), 0);
  uint64_t prompt = 0;
  uint64_t completion = 0;
  for (const std::string model : {"gpt-ok", "gpt-retry~fail_first=1", "gpt-gw"}) {
    prompt += static_cast<uint64_t>(
        metric_value(worker, "dispatch_input_tokens_total", target(model)).value_or(0));
    completion += static_cast<uint64_t>(
        metric_value(worker, "dispatch_output_tokens_total", target(model)).value_or(0));
  }
  EXPECT_GT(prompt_tokens_, 0u);
  EXPECT_EQ(prompt, prompt_tokens_);
  EXPECT_EQ(completion, completion_tokens_);

  const std::string gateway = scrape(gateway_url_);
  EXPECT_EQ(metric_value(gateway, "dispatch_gateway_requests_total",
                         {{"endpoint", "chat_completions"}, {"status", "200"}}),
            2)
      << gateway;
  EXPECT_EQ(metric_value(gateway, "dispatch_gateway_requests_total",
                         {{"endpoint", "healthz"}, {"status", "200"}}),
            1);
  EXPECT_EQ(metric_value(gateway, "dispatch_gateway_streams_open"), 0);
  EXPECT_EQ(metric_value(gateway, "dispatch_gateway_jobs_open"), 0);

  TempDir dir;
  for (const auto& [name, text] : {std::pair<std::string, std::string>{"broker", broker},
                                   {"worker", worker},
                                   {"gateway", gateway}}) {
    const auto [code, said] = promtool_check(dir, name, text);
    EXPECT_EQ(code, 0) << name << ": " << said;
  }
}

TEST_F(MetricsTest, TheBrokerCountsClientConnectionsAsTheyOpenAndClose) {
  const std::string before = scrape(broker_url_);
  const double accepted =
      metric_value(before, "dispatch_client_connections_accepted_total").value_or(-1);
  const double open = metric_value(before, "dispatch_client_connections").value_or(-1);
  {
    std::vector<std::unique_ptr<Client>> clients;
    for (int i = 0; i < 3; ++i) {
      ClientOptions options;
      options.broker_endpoint = stack_->frontend();
      clients.push_back(std::make_unique<Client>(options));
      // An answer proves the connection is up.
      clients.back()->dispatch(
          DispatchRequest(Provider::openai, "gpt-ok", {Message::user("connected?")}));
    }
    EXPECT_TRUE(eventually([&] {
      const std::string now = scrape(broker_url_);
      return metric_value(now, "dispatch_client_connections_accepted_total") == accepted + 3 &&
             metric_value(now, "dispatch_client_connections") == open + 3;
    })) << scrape(broker_url_);
  }
  EXPECT_TRUE(eventually([&] {
    return metric_value(scrape(broker_url_), "dispatch_client_connections") == open;
  })) << scrape(broker_url_);
  EXPECT_EQ(metric_value(scrape(broker_url_), "dispatch_client_connections_accepted_total"),
            accepted + 3);
}

TEST_F(MetricsTest, ARealPrometheusScrapesEveryProcess) {
  ASSERT_FALSE(worker_url_.empty());
  run_workload();
  TempDir dir;
  const uint16_t port = free_port();
  write_text_file(dir.file("prometheus.yml"),
                  "global: {scrape_interval: 1s, scrape_timeout: 1s}\n"
                  "scrape_configs:\n"
                  "  - {job_name: broker, static_configs: [{targets: ['" +
                      host_port(broker_url_) +
                      "']}]}\n"
                      "  - {job_name: worker, static_configs: [{targets: ['" +
                      host_port(worker_url_) +
                      "']}]}\n"
                      "  - {job_name: gateway, static_configs: [{targets: ['" +
                      host_port(gateway_url_) + "']}]}\n");
  ChildOptions options;
  options.stderr_path = dir.file("prometheus.log");
  options.capture_stdout = false;
  ChildProcess prometheus =
      ChildProcess::spawn({kPrometheus, "--config.file=" + dir.file("prometheus.yml"),
                           "--storage.tsdb.path=" + dir.file("data"),
                           "--web.listen-address=127.0.0.1:" + std::to_string(port)},
                          options);
  const std::string api = "http://127.0.0.1:" + std::to_string(port) + "/api/v1/query?query=";
  // The first value of an instant query, once it has one.
  const auto query = [&](const std::string& promql) -> std::optional<double> {
    try {
      const HttpReply reply = http_request("GET", api + promql, {}, 2s);
      if (reply.status != 200) return std::nullopt;
      const json result = json::parse(reply.body)["data"]["result"];
      if (result.size() != 1) return std::nullopt;
      return std::stod(result[0]["value"][1].get<std::string>());
    } catch (const std::exception&) {
      return std::nullopt;  // not up yet
    }
  };
  EXPECT_TRUE(eventually([&] { return query("count(up%3D%3D1)") == 3; }, 60s))
      << read_text_file(dir.file("prometheus.log"));
  EXPECT_TRUE(eventually(
      [&] {
        return query("dispatch_jobs_total%7Bjob%3D%22broker%22%2Cmodel%3D%22gpt-ok%22%7D") == 3;
      },
      30s));
  EXPECT_TRUE(eventually(
      [&] {
        return query("dispatch_jobs_total%7Bjob%3D%22worker%22%2Cmodel%3D%22gpt-ok%22%7D") == 3;
      },
      30s));
  EXPECT_TRUE(eventually(
      [&] {
        return query("dispatch_gateway_requests_total%7Bendpoint%3D%22chat_completions%22%7D") == 2;
      },
      30s));
  prometheus.stop();
}

}  // namespace
}  // namespace dispatch::test
