#include "dispatch/gateway/admission.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "dispatch/gateway/readiness.hpp"

namespace dispatch::gateway {
namespace {

using nlohmann::json;

GatewayConfig config_with_keys() {
  GatewayConfig config;
  config.keys.push_back(ApiKey{"team-a", sha256("sk-a"), {"openai/*", "fast"}, "tenant-a"});
  config.keys.push_back(ApiKey{"admin", sha256("sk-admin"), {}, "admin"});
  config.models.aliases["fast"] = formats::ModelAlias{
      {"openai", "gpt-4o-mini"}, std::vector<protocol::Target>{{"claude", "haiku"}}, 5000};
  config.models.aliases["smart"] =
      formats::ModelAlias{{"claude", "sonnet"}, std::nullopt, std::nullopt};
  return config;
}

RequestHeaders bearer(std::string_view key) {
  RequestHeaders headers;
  headers.authorization = key;
  return headers;
}

const std::string kBody = R"({"model":"fast","messages":[{"role":"user","content":"Hi"}]})";

TEST(AdmitterTest, AuthenticationByEitherHeader) {
  const Admitter admitter(config_with_keys());
  EXPECT_TRUE(admitter.authentication_enabled());
  auto missing = admitter.authenticate({});
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().status, 401);
  EXPECT_EQ(missing.error().code, "missing_api_key");
  EXPECT_EQ(admitter.authenticate(bearer("Bearer sk-wrong")).error().code, "invalid_api_key");
  EXPECT_EQ((*admitter.authenticate(bearer("Bearer sk-a")))->name, "team-a");
  RequestHeaders anthropic;
  anthropic.x_api_key = "sk-admin";
  EXPECT_EQ((*admitter.authenticate(anthropic))->name, "admin");
  const Admitter open(GatewayConfig{});
  EXPECT_FALSE(open.authentication_enabled());
  EXPECT_EQ(*open.authenticate({}), nullptr);
}

TEST(AdmitterTest, AnAliasResolvesWithItsFallbacksAndTimeout) {
  const GatewayConfig config = config_with_keys();
  const Admitter admitter(config);
  const ApiKey* key = &config.keys[0];
  auto admission = admitter.admit(Api::openai, key, {}, kBody);
  ASSERT_TRUE(admission.ok()) << admission.error().message;
  EXPECT_EQ(admission->target, (protocol::Target{"openai", "gpt-4o-mini"}));
  EXPECT_EQ(admission->tenant, "tenant-a");
  EXPECT_EQ(admission->key_name, "team-a");
  const protocol::Request& wire = admission->request.wire();
  EXPECT_EQ(wire.provider, "openai");
  EXPECT_EQ(wire.model, "gpt-4o-mini");
  EXPECT_EQ(wire.timeout_ms, 5000u);
  EXPECT_EQ(wire.fallbacks, (std::vector<protocol::Target>{{"claude", "haiku"}}));
  EXPECT_EQ(admission->request.priority(), protocol::Priority::interactive);
  EXPECT_FALSE(admission->stream);
}

TEST(AdmitterTest, AValidTraceparentTravelsAndAnInvalidOneIsIgnoredWithAReason) {
  const Admitter admitter(GatewayConfig{});
  const std::string body =
      R"({"model":"openai/gpt-4o","messages":[{"role":"user","content":"Hi"}]})";
  RequestHeaders headers;
  headers.traceparent = " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01 ";
  auto traced = admitter.admit(Api::openai, nullptr, headers, body);
  ASSERT_TRUE(traced.ok()) << traced.error().message;
  EXPECT_EQ(traced->request.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
  EXPECT_EQ(traced->traceparent_problem, "");

  headers.traceparent = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
  auto ignored = admitter.admit(Api::openai, nullptr, headers, body);
  ASSERT_TRUE(ignored.ok()) << ignored.error().message;  // never a refusal, as the spec asks
  EXPECT_EQ(ignored->request.traceparent(), "");         // the broker starts a fresh trace
  EXPECT_NE(ignored->traceparent_problem.find("traceparent ignored (trace id"), std::string::npos)
      << ignored->traceparent_problem;

  auto none = admitter.admit(Api::openai, nullptr, {}, body);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->request.traceparent(), "");
  EXPECT_EQ(none->traceparent_problem, "");
}

TEST(AdmitterTest, HeadersOverrideTheBodyExtensions) {
  const Admitter admitter(GatewayConfig{});
  RequestHeaders headers;
  headers.fallbacks = " claude/haiku , ollama/llama3.2";
  headers.timeout_ms = "1234";
  headers.priority = "batch";
  const std::string body =
      R"({"model":"openai/gpt-4o","timeout_ms":9,"fallbacks":["a/b"],"stream":true,)"
      R"("stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hi"}]})";
  auto admission = admitter.admit(Api::openai, nullptr, headers, body);
  ASSERT_TRUE(admission.ok()) << admission.error().message;
  const protocol::Request& wire = admission->request.wire();
  EXPECT_EQ(wire.timeout_ms, 1234u);
  EXPECT_EQ(wire.fallbacks,
            (std::vector<protocol::Target>{{"claude", "haiku"}, {"ollama", "llama3.2"}}));
  EXPECT_EQ(admission->request.priority(), protocol::Priority::batch);
  EXPECT_TRUE(admission->stream);
  EXPECT_TRUE(admission->include_usage);
  EXPECT_TRUE(wire.stream);
  headers = {};
  headers.fallbacks = "";  // an empty header: no fallback at all
  admission = admitter.admit(Api::openai, nullptr, headers, body);
  EXPECT_EQ(admission->request.wire().fallbacks, std::vector<protocol::Target>{});
  const std::pair<RequestHeaders, std::string> bad[] = {
      {RequestHeaders{{}, {}, {}, "soon", {}}, "x-dispatch-timeout-ms"},
      {RequestHeaders{{}, {}, {}, "0", {}}, "x-dispatch-timeout-ms"},
      {RequestHeaders{{}, {}, {}, {}, "urgent"}, "x-dispatch-priority"},
      {RequestHeaders{{}, {}, "nope", {}, {}}, "fallbacks[0]"},
  };
  for (const auto& [refused_headers, param] : bad) {
    auto refused = admitter.admit(Api::openai, nullptr, refused_headers, body);
    ASSERT_FALSE(refused.ok()) << param;
    EXPECT_EQ(refused.error().param, param);
  }
}

TEST(AdmitterTest, KeysAreLimitedToTheirModels) {
  const GatewayConfig config = config_with_keys();
  const Admitter admitter(config);
  const ApiKey* team = &config.keys[0];
  const auto body_for = [](const std::string& model, const std::string& extra = "") {
    return R"({"model":")" + model + R"(",)" + extra +
           R"("messages":[{"role":"user","content":"Hi"}]})";
  };
  EXPECT_TRUE(admitter.admit(Api::openai, team, {}, body_for("openai/gpt-4o")).ok());
  auto refused = admitter.admit(Api::openai, team, {}, body_for("smart"));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().status, 403);
  EXPECT_EQ(refused.error().code, "model_not_allowed");
  EXPECT_EQ(refused.error().message, "the API key 'team-a' may not use the model 'smart'");
  // A fallback the caller names is a model they use, too.
  refused = admitter.admit(Api::openai, team, {},
                           body_for("openai/gpt-4o", R"("fallbacks":["claude/haiku"],)"));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().message, "the API key 'team-a' may not use the model 'claude/haiku'");
  EXPECT_TRUE(admitter.admit(Api::openai, &config.keys[1], {}, body_for("smart")).ok());
}

TEST(AdmitterTest, RefusedBodiesKeepTheirStatusAndParam) {
  const Admitter admitter(GatewayConfig{});
  const std::pair<std::string, int> cases[] = {
      {"{not json", 400},
      {R"({"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]})", 404},
      {R"({"model":"openai/gpt-4o","messages":[]})", 400},
      {"[" + std::string(1000, '[') + std::string(1001, ']'), 400},
  };
  for (const auto& [body, status] : cases) {
    auto refused = admitter.admit(Api::openai, nullptr, {}, body);
    ASSERT_FALSE(refused.ok()) << body;
    EXPECT_EQ(refused.error().status, status) << body;
  }
  auto anthropic =
      admitter.admit(Api::anthropic, nullptr, {},
                     R"({"model":"claude/x","messages":[{"role":"user","content":"Hi"}]})");
  ASSERT_FALSE(anthropic.ok());
  EXPECT_EQ(anthropic.error().param, "max_tokens");
}

TEST(AdmitterTest, ModelListsInBothFormatsFilteredByKey) {
  const GatewayConfig config = config_with_keys();
  const Admitter admitter(config);
  const json all = json::parse(admitter.models_body(Api::openai, nullptr));
  EXPECT_EQ(all["object"], "list");
  std::vector<std::string> ids;
  for (const auto& model : all["data"]) ids.push_back(model["id"]);
  EXPECT_EQ(ids, (std::vector<std::string>{"claude/haiku", "claude/sonnet", "fast",
                                           "openai/gpt-4o-mini", "smart"}));
  EXPECT_EQ(all["data"][0]["object"], "model");
  const json team = json::parse(admitter.models_body(Api::anthropic, &config.keys[0]));
  ids.clear();
  for (const auto& model : team["data"]) ids.push_back(model["id"]);
  EXPECT_EQ(ids, (std::vector<std::string>{"fast", "openai/gpt-4o-mini"}));
  EXPECT_EQ(team["data"][0]["type"], "model");
  EXPECT_EQ(team["has_more"], false);
  EXPECT_EQ(team["first_id"], "fast");
}

TEST(ReadinessTest, Verdicts) {
  const auto timeout = std::chrono::milliseconds(1000);
  EXPECT_EQ(judge_readiness(std::nullopt, timeout).reason,
            "the broker did not answer within 1000 ms");
  protocol::StatusReply status;
  EXPECT_EQ(judge_readiness(status, timeout).reason, "no worker is registered at the broker");
  status.workers.push_back(protocol::WorkerStatus{});
  status.workers.back().state = "draining";
  EXPECT_EQ(judge_readiness(status, timeout).reason, "every registered worker is draining");
  status.workers.push_back(protocol::WorkerStatus{});
  status.workers.back().state = "ready";
  const Readiness ready = judge_readiness(status, timeout);
  EXPECT_TRUE(ready.ready);
  EXPECT_EQ(ready.workers, 1u);
}

TEST(ReadinessTest, ProbesShareOneBrokerRequestAndACachedAnswer) {
  ManualClock clock;
  std::atomic<int> fetches{0};
  std::mutex gate;
  gate.lock();  // the first fetch waits until every caller has asked
  ReadinessProbe probe(
      [&]() -> std::optional<protocol::StatusReply> {
        ++fetches;
        std::lock_guard released(gate);
        return std::nullopt;
      },
      std::chrono::milliseconds(1000), clock);
  std::atomic<int> answers{0};
  for (int i = 0; i < 50; ++i) probe.check([&](const Readiness& r) { answers += r.ready ? 0 : 1; });
  gate.unlock();
  for (int i = 0; i < 500 && answers.load() < 50; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(answers.load(), 50);
  EXPECT_EQ(fetches.load(), 1);
  probe.check([&](const Readiness&) { ++answers; });  // fresh: answered from the cache, at once
  EXPECT_EQ(answers.load(), 51);
  EXPECT_EQ(fetches.load(), 1);
  clock.advance(std::chrono::milliseconds(1001));
  probe.check([&](const Readiness&) { ++answers; });
  for (int i = 0; i < 500 && answers.load() < 52; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(fetches.load(), 2);
}

// /status.json and /readyz share the probe's broker request and its cached answer.
TEST(ReadinessTest, StatusAndReadinessShareOneBrokerRequest) {
  ManualClock clock;
  std::atomic<int> fetches{0};
  ReadinessProbe probe(
      [&]() -> std::optional<protocol::StatusReply> {
        ++fetches;
        protocol::StatusReply status;
        status.broker_id = "broker-1";
        status.workers.resize(1);
        return status;
      },
      std::chrono::milliseconds(1000), clock);
  std::atomic<int> answers{0};
  std::string broker_id;
  probe.fetch_status([&](const ReadinessProbe::Answer& answer, bool stopping) {
    if (!stopping && answer && *answer) broker_id = (*answer)->broker_id;
    ++answers;
  });
  for (int i = 0; i < 500 && answers.load() < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(answers.load(), 1);
  EXPECT_EQ(broker_id, "broker-1");
  bool ready = false;
  probe.check([&](const Readiness& r) { ready = r.ready; });  // cached: answered at once
  EXPECT_TRUE(ready);
  EXPECT_EQ(fetches.load(), 1);
  probe.shutdown();
  bool stopping = false;
  probe.fetch_status([&](const ReadinessProbe::Answer&, bool s) { stopping = s; });
  EXPECT_TRUE(stopping);
}

}  // namespace
}  // namespace dispatch::gateway
