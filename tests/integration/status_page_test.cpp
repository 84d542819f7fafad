// The gateway's live status page in a real browser: fake provider, broker, two workers with
// distinct ids and providers, and the gateway as real processes; a few jobs; then headless
// Chromium (Debian `chromium`) loads /status, lets the page poll /status.json, and the test
// reads the rendered DOM (--dump-dom) for the workers, the providers and the completed count.
// Chromium missing is a failure, not a skip: scripts/setup installs it.

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "dispatch/client.hpp"
#include "dispatch/formats/status_json.hpp"
#include "dispatch/test/stack.hpp"
#include "gateway_process.hpp"

namespace dispatch::test {
namespace {

using namespace std::chrono_literals;
using gateway::test::GatewayProcess;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr const char* kChromium = "/usr/bin/chromium";
const std::string kOpenAiWorker = "status-worker-openai";
const std::string kClaudeWorker = "status-worker-claude";

// A worker config with one provider pointed at the fake provider, test-scale timings.
std::string one_provider_config(const std::string& provider_yaml) {
  return "defaults:\n"
         "  timeout_ms: 10000\n"
         "  retry_count: 1\n"
         "  connect_timeout_ms: 1000\n"
         "  backoff: {base_ms: 10, max_ms: 50}\n"
         "providers:\n  " +
         provider_yaml + "\n";
}

// What `chromium --dump-dom` printed for `url` after the page ran for `budget` of virtual time,
// or nullopt when it did not finish within `bound` (then it is stopped by its pid).
std::optional<std::string> dump_dom(TempDir& dir, const std::string& url,
                                    std::chrono::milliseconds budget,
                                    std::chrono::milliseconds bound = 90s) {
  ChildOptions options;
  options.stderr_path = dir.file("chromium.log");  // its dbus and GPU chatter
  ChildProcess chromium = ChildProcess::spawn(
      {kChromium, "--headless", "--no-sandbox", "--disable-gpu",  // root needs --no-sandbox
       "--user-data-dir=" + dir.file("chromium-profile"),
       "--virtual-time-budget=" + std::to_string(budget.count()), "--dump-dom", url},
      options);
  std::string dom;
  const auto deadline = Clock::now() + bound;
  while (Clock::now() < deadline) {
    if (auto line = chromium.read_line(500ms)) {
      dom += *line + "\n";
      continue;
    }
    if (chromium.wait_for_exit(0ms)) {
      while (auto rest = chromium.read_line(100ms)) dom += *rest + "\n";  // bounded by EOF
      return dom;
    }
  }
  return std::nullopt;
}

// The text of the element with `id` in a dumped DOM ("" when absent).
std::string text_of_id(const std::string& dom, const std::string& id) {
  const std::regex pattern("id=\"" + id + "\"[^>]*>([^<]*)<");
  std::smatch match;
  return std::regex_search(dom, match, pattern) ? match[1].str() : std::string();
}

// The part of a dumped DOM from the element with id `from` to the one with id `to`.
std::string between_ids(const std::string& dom, const std::string& from, const std::string& to) {
  const auto begin = dom.find("id=\"" + from + "\"");
  const auto end = dom.find("id=\"" + to + "\"", begin);
  return begin == std::string::npos ? std::string() : dom.substr(begin, end - begin);
}

class StatusPageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    stack_ = std::make_unique<Stack>(StackBinaries::from_build());
    stack_->start_fake_provider();
    stack_->start_broker({"--heartbeat-ms", "100"});
    stack_->start_workers(
        1,
        one_provider_config("openai: {type: openai, base_url: \"" +
                            stack_->fake().openai_base_url() + "\", api_key_env: FAKE_KEY}"),
        {"--heartbeat-ms", "100", "--id", kOpenAiWorker});
    stack_->start_workers(
        1,
        one_provider_config("claude: {type: anthropic, base_url: \"" + stack_->fake().host_url() +
                            "\", api_key_env: FAKE_KEY}"),
        {"--heartbeat-ms", "100", "--id", kClaudeWorker});
    stack_->wait_for_workers(2);
    write_text_file(stack_->dir().file("gateway.yaml"), "default_provider: openai\n");
    gateway_ = std::make_unique<GatewayProcess>(
        GATEWAY_BINARY, stack_->frontend(),
        std::vector<std::string>{"--config", stack_->dir().file("gateway.yaml")});
  }

  void TearDown() override {
    gateway_.reset();
    stack_.reset();
  }

  // 3 answers from openai, 2 from claude; returns how many succeeded.
  int run_jobs() {
    ClientOptions options;
    options.broker_endpoint = stack_->frontend();
    Client client(options);
    int answered = 0;
    for (int i = 0; i < 5; ++i) {
      const Provider provider = i < 3 ? Provider::openai : Provider::claude;
      const auto response =
          client.dispatch(DispatchRequest(provider, "status-model", {Message::user("hi")}));
      if (!response.content.empty()) ++answered;
    }
    return answered;
  }

  std::unique_ptr<Stack> stack_;
  std::unique_ptr<GatewayProcess> gateway_;
};

TEST_F(StatusPageTest, StatusJsonHasTheShapeOfDispatchStatusJson) {
  ASSERT_EQ(run_jobs(), 5);
  const HttpReply reply = http_request("GET", gateway_->url() + "/status.json");
  ASSERT_EQ(reply.status, 200) << reply.body;
  const json served = json::parse(reply.body);
  const auto broker = stack_->status();
  ASSERT_TRUE(broker);
  const json expected = formats::status_to_json(*broker);
  // Live values move between the two requests (uptime, heartbeats); the shape may not.
  std::set<std::string> served_keys, expected_keys;
  for (const auto& [key, value] : served.items()) served_keys.insert(key);
  for (const auto& [key, value] : expected.items()) expected_keys.insert(key);
  EXPECT_EQ(served_keys, expected_keys);
  EXPECT_EQ(served["broker_id"], expected["broker_id"]);
  EXPECT_EQ(served["queue_depth"], expected["queue_depth"]);
  EXPECT_EQ(served["providers"], expected["providers"]);
  std::set<std::string> workers;
  for (const auto& worker : served["workers"]) workers.insert(worker["worker_id"]);
  EXPECT_EQ(workers, (std::set<std::string>{kOpenAiWorker, kClaudeWorker}));
  EXPECT_EQ(served["providers"]["openai"]["succeeded"], 3);
  EXPECT_EQ(served["providers"]["claude"]["succeeded"], 2);
}

TEST_F(StatusPageTest, BrowserRendersWorkersProvidersAndCompletedJobs) {
  ASSERT_EQ(::access(kChromium, X_OK), 0)
      << kChromium << " is missing: apt-get install -y chromium (scripts/setup installs it)";
  ASSERT_EQ(run_jobs(), 5);
  {  // One failure the provider reports: the page counts it by its error kind.
    ClientOptions options;
    options.broker_endpoint = stack_->frontend();
    Client client(options);
    EXPECT_THROW(client.dispatch(DispatchRequest(Provider::openai, "status-model~status=400",
                                                 {Message::user("bad")})),
                 DispatchError);
  }
  const auto dom = dump_dom(stack_->dir(), gateway_->url() + "/status", 5000ms);
  ASSERT_TRUE(dom) << "chromium did not finish within its bound";
  // Rendered by the page's script from /status.json, not in the static HTML.
  const std::string workers = between_ids(*dom, "workers", "queue");
  EXPECT_NE(workers.find("<td>" + kOpenAiWorker + "</td>"), std::string::npos) << *dom;
  EXPECT_NE(workers.find("<td>" + kClaudeWorker + "</td>"), std::string::npos);
  const std::string providers = between_ids(*dom, "providers", "quotas");
  EXPECT_NE(providers.find("<td>openai</td><td class=\"num\">4</td>"), std::string::npos)
      << providers;  // name, then submitted
  EXPECT_NE(providers.find("<td>claude</td><td class=\"num\">2</td>"), std::string::npos);
  EXPECT_EQ(text_of_id(*dom, "completed-total"), "5");  // answered
  EXPECT_EQ(text_of_id(*dom, "failed-total"), "1");
  const std::string errors = between_ids(*dom, "errors", "clients");
  EXPECT_NE(errors.find("<td>failed: invalid_request</td><td class=\"num\">1</td>"),
            std::string::npos)
      << errors;
  EXPECT_EQ(text_of_id(*dom, "worker-count"), "2");
  EXPECT_NE(text_of_id(*dom, "meta").find("broker "), std::string::npos);
}

TEST_F(StatusPageTest, BrowserShowsTheOutageWhenTheBrokerIsGone) {
  ASSERT_EQ(::access(kChromium, X_OK), 0)
      << kChromium << " is missing: apt-get install -y chromium (scripts/setup installs it)";
  stack_->broker().stop();
  const HttpReply reply = http_request("GET", gateway_->url() + "/status.json", {}, 10s);
  EXPECT_EQ(reply.status, 503);
  EXPECT_EQ(json::parse(reply.body)["error"]["code"], "broker_unavailable");
  const auto dom = dump_dom(stack_->dir(), gateway_->url() + "/status", 5000ms);
  ASSERT_TRUE(dom);
  EXPECT_NE(dom->find("status unavailable: the broker did not answer"), std::string::npos) << *dom;
}

}  // namespace
}  // namespace dispatch::test
