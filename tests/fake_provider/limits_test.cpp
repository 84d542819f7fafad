// --limit-rpm / --limit-tpm over HTTP against the real binary: 429 in each format's rate-limit
// shape with x-ratelimit-* headers and Retry-After, the same headers on successful answers,
// per-key isolation, token reconciliation, counters in /_fake/stats. The window arithmetic
// itself is tested on a manual clock (quota_test.cpp); here every case is chosen so that the
// machine's speed cannot change the outcome (a minute-long window binds, not a second).

#include <curl/curl.h>

#include <thread>

#include "http_client.hpp"

namespace dispatch::fake_provider::test {
namespace {

using dispatch::test::FakeProviderProcess;

class Limits : public ::testing::Test {
 protected:
  void start(const std::vector<std::string>& args) {
    fake_ = std::make_unique<FakeProviderProcess>(FAKE_PROVIDER_BINARY, args);
  }
  void TearDown() override {
    if (fake_) {
      EXPECT_TRUE(fake_->process().stop().success()) << "fake-provider exit status";
    }
  }
  std::string url(const std::string& path) const { return fake_->host_url() + path; }

  HttpResult openai(const std::string& key, const json& body) const {
    return perform({"POST",
                    url("/v1/chat/completions"),
                    {"Authorization: Bearer " + key, "Content-Type: application/json"},
                    body.dump(),
                    10000});
  }
  HttpResult compatible(const std::string& key, const json& body) const {
    return perform({"POST",
                    url("/compatible-mode/v1/chat/completions"),
                    {"Authorization: Bearer " + key, "Content-Type: application/json"},
                    body.dump(),
                    10000});
  }
  HttpResult anthropic(const std::string& key, const json& body) const {
    return perform(
        {"POST",
         url("/v1/messages"),
         {"x-api-key: " + key, "anthropic-version: 2023-06-01", "Content-Type: application/json"},
         body.dump(),
         10000});
  }
  HttpResult ollama(const json& body) const {
    return perform(
        {"POST", url("/api/chat"), {"Content-Type: application/json"}, body.dump(), 10000});
  }
  HttpResult dashscope(const std::string& key, const json& body) const {
    return perform({"POST",
                    url("/api/v1/services/aigc/text-generation/generation"),
                    {"Authorization: Bearer " + key, "Content-Type: application/json"},
                    body.dump(),
                    10000});
  }
  json stats() const { return perform({"GET", url("/_fake/stats"), {}, "", 5000}).json_body(); }
  json log() const {
    return perform({"GET", url("/_fake/log"), {}, "", 5000}).json_body()["attempts"];
  }

  // Retry-After in (0, 60] whole seconds and retry-after-ms consistent with it.
  static void expect_retry_after(const HttpResult& r) {
    const auto seconds = r.header("retry-after");
    const auto ms = r.header("retry-after-ms");
    ASSERT_TRUE(seconds && ms) << r.body;
    EXPECT_GE(std::stoll(*seconds), 1);
    EXPECT_LE(std::stoll(*seconds), 60);
    EXPECT_GE(std::stoll(*ms), 1);
    EXPECT_EQ(std::stoll(*seconds), (std::stoll(*ms) + 999) / 1000);
  }

  std::unique_ptr<FakeProviderProcess> fake_;
};

json openai_body(const std::string& model, bool stream = false) {
  json body{{"model", model}, {"messages", {user("hi")}}};
  if (stream) body["stream"] = true;
  return body;
}

TEST_F(Limits, RequestsPerMinuteIn429sOfEveryFormat) {
  start({"--limit-rpm", "1"});  // one request per key per minute

  const HttpResult ok = openai("sk-a", openai_body("gpt"));
  ASSERT_EQ(ok.status, 200) << ok.body;
  EXPECT_EQ(ok.header("x-ratelimit-limit-requests"), "1");
  EXPECT_EQ(ok.header("x-ratelimit-remaining-requests"), "0");
  EXPECT_EQ(ok.header("x-ratelimit-reset-requests"), "1m0s");
  EXPECT_FALSE(ok.header("x-ratelimit-limit-tokens")) << "tokens are not limited";
  EXPECT_FALSE(ok.header("retry-after"));

  const HttpResult refused = openai("sk-a", openai_body("gpt"));
  ASSERT_EQ(refused.status, 429);
  expect_retry_after(refused);
  EXPECT_EQ(refused.header("x-ratelimit-remaining-requests"), "0");
  json j = refused.json_body();
  EXPECT_EQ(j["error"]["code"], "rate_limit_exceeded");
  EXPECT_EQ(j["error"]["type"], "requests");

  // Another key has its own quota; the same key is refused in every format.
  EXPECT_EQ(openai("sk-b", openai_body("gpt")).status, 200);
  const HttpResult compatible_refused = compatible("sk-a", openai_body("qwen"));
  ASSERT_EQ(compatible_refused.status, 429);
  EXPECT_EQ(compatible_refused.json_body()["error"]["code"], "Throttling.RateQuota");
  expect_retry_after(compatible_refused);

  const json anthropic_body{{"model", "claude"}, {"max_tokens", 5}, {"messages", {user("x")}}};
  ASSERT_EQ(anthropic("sk-c", anthropic_body).status, 200);
  const HttpResult anthropic_refused = anthropic("sk-c", anthropic_body);
  ASSERT_EQ(anthropic_refused.status, 429);
  EXPECT_EQ(anthropic_refused.json_body()["error"]["type"], "rate_limit_error");
  EXPECT_EQ(anthropic_refused.header("x-ratelimit-limit-requests"), "1");
  EXPECT_EQ(anthropic_refused.header("anthropic-ratelimit-requests-limit"), "1");
  EXPECT_EQ(anthropic_refused.header("anthropic-ratelimit-requests-remaining"), "0");
  EXPECT_TRUE(anthropic_refused.header("anthropic-ratelimit-requests-reset"));
  expect_retry_after(anthropic_refused);

  // Ollama sends no key: every keyless request shares one quota.
  const json ollama_body{{"model", "llama"}, {"stream", false}, {"messages", {user("x")}}};
  ASSERT_EQ(ollama(ollama_body).status, 200);
  const HttpResult ollama_refused = ollama(ollama_body);
  ASSERT_EQ(ollama_refused.status, 429);
  EXPECT_TRUE(ollama_refused.json_body()["error"].is_string());
  EXPECT_EQ(ollama_refused.header("x-ratelimit-remaining-requests"), "0");
  expect_retry_after(ollama_refused);

  const json dashscope_body{{"model", "qwen"}, {"input", {{"messages", {user("x")}}}}};
  ASSERT_EQ(dashscope("sk-d", dashscope_body).status, 200);
  const HttpResult dashscope_refused = dashscope("sk-d", dashscope_body);
  ASSERT_EQ(dashscope_refused.status, 429);
  EXPECT_EQ(dashscope_refused.json_body()["code"], "Throttling.RateQuota");
  expect_retry_after(dashscope_refused);

  // Counted and logged.
  const json s = stats();
  EXPECT_EQ(s["rate_limited_total"], 5);
  EXPECT_EQ(s["status_429_total"], 5);
  EXPECT_EQ(s["limit_rpm"], 1);
  int logged = 0;
  for (const json& a : log()) logged += a["outcome"] == "rate_limited" ? 1 : 0;
  EXPECT_EQ(logged, 5);

  // A reset forgets the windows.
  ASSERT_EQ(perform({"POST", url("/_fake/reset"), {}, "", 5000}).status, 200);
  EXPECT_EQ(openai("sk-a", openai_body("gpt")).status, 200);
  EXPECT_EQ(stats()["rate_limited_total"], 0);
}

TEST_F(Limits, StreamsCarryTheHeadersAndScriptedFaultsStillApply) {
  start({"--limit-rpm", "1000"});
  const HttpResult stream = openai("sk", openai_body("gpt~tokens=2", true));
  ASSERT_EQ(stream.status, 200);
  EXPECT_EQ(stream.header("x-ratelimit-limit-requests"), "1000");
  EXPECT_EQ(stream.header("x-ratelimit-remaining-requests"), "999");
  EXPECT_EQ(stream.header("content-type"), "text/event-stream; charset=utf-8");

  // A scripted 429 keeps its own Retry-After and is counted apart from quota refusals.
  const HttpResult scripted = openai("sk", openai_body("gpt~status=429~retry_after=9"));
  ASSERT_EQ(scripted.status, 429);
  EXPECT_EQ(scripted.header("retry-after"), "9");
  EXPECT_EQ(scripted.header("x-ratelimit-remaining-requests"), "998") << "it was admitted";
  EXPECT_EQ(stats()["rate_limited_total"], 0);
  EXPECT_EQ(stats()["status_429_total"], 1);
}

TEST_F(Limits, TokensPerMinuteAreChargedThenReconciledToWhatWasSent) {
  start({"--limit-tpm", "300"});  // 10 tokens per second, but a lone request may exceed that

  // 1 prompt token + 150 planned; the stream is cut after 2 chunks: 3 tokens remain charged.
  const std::string cut_model = "gpt~tokens=150~cut_after=2";
  const HttpResult cut = openai("sk", openai_body(cut_model, true));
  EXPECT_EQ(cut.header("x-ratelimit-remaining-tokens"), "149") << "charged in full at first";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  // Bounded: the attempt is finished within moments of the cut.
  while (std::chrono::steady_clock::now() < deadline) {
    const json attempts = log();
    if (!attempts.empty() && attempts.back()["outcome"] == "cut") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // 1 prompt + 1 completion token: 300 - 3 - 2 left.
  const HttpResult small = openai("sk", openai_body("gpt~tokens=1"));
  ASSERT_EQ(small.status, 200) << small.body;
  EXPECT_EQ(small.header("x-ratelimit-limit-tokens"), "300");
  EXPECT_EQ(small.header("x-ratelimit-remaining-tokens"), "295");

  // An error reply costs its prompt only (charged 1 + 3 at admission: small enough to share the
  // second with the requests before it).
  ASSERT_EQ(openai("sk", openai_body("gpt~tokens=3~status=500")).status, 500);
  const HttpResult after_error = openai("sk", openai_body("gpt~tokens=1"));
  ASSERT_EQ(after_error.status, 200) << after_error.body;
  EXPECT_EQ(after_error.header("x-ratelimit-remaining-tokens"), "292");

  // More than what is left in the minute: 429 for tokens, whatever the second window says.
  const HttpResult refused = openai("sk", openai_body("gpt~tokens=295"));
  ASSERT_EQ(refused.status, 429);
  EXPECT_EQ(refused.json_body()["error"]["type"], "tokens");
  EXPECT_EQ(refused.header("x-ratelimit-remaining-tokens"), "292");
  expect_retry_after(refused);
  const HttpResult refused_ds = compatible("sk", openai_body("qwen~tokens=295"));
  ASSERT_EQ(refused_ds.status, 429);
  EXPECT_EQ(refused_ds.json_body()["error"]["code"], "Throttling.AllocationQuota");

  // More than a whole minute's quota is never admitted.
  const HttpResult never = openai("sk-other", openai_body("gpt~tokens=400"));
  ASSERT_EQ(never.status, 429);
  EXPECT_EQ(never.header("retry-after"), "60");
  EXPECT_EQ(stats()["rate_limited_total"], 3);
}

TEST(FakeProviderCli, UsageErrorsExitTwo) {
  const std::vector<std::vector<std::string>> bad{
      {"--listen", "nonsense"},  {"--no-such-flag"},      {"--tokens", "-1"},
      {"--threads", "0"},        {"--limit-rpm", "0"},    {"--limit-rpm", "ten"},
      {"--limit-tpm", "-5"},     {"--log-level", "loud"}, {"--limit-tpm"},
      {"unexpected-positional"},
  };
  for (const auto& args : bad) {
    std::vector<std::string> argv{FAKE_PROVIDER_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    dispatch::test::ChildOptions options;
    options.stderr_path = "/dev/null";
    auto child = dispatch::test::ChildProcess::spawn(argv, options);
    const auto status = child.wait_for_exit(std::chrono::seconds(10));
    ASSERT_TRUE(status.has_value()) << args[0] << " did not exit";
    EXPECT_TRUE(status->exited) << args[0];
    EXPECT_EQ(status->code, 2) << args[0];
  }
  // Valid values start it.
  FakeProviderProcess ok(FAKE_PROVIDER_BINARY,
                         {"--limit-rpm", "600", "--limit-tpm", "100000", "--log-level", "warn"});
  EXPECT_TRUE(ok.process().stop().success());
}

}  // namespace
}  // namespace dispatch::fake_provider::test
