// What handling one job's request costs a worker, under a peak-live-bytes counter: the size
// check refuses what would amplify before anything is built, and what passes - payload,
// decoded request and provider body together - stays within kMaxJobMemoryMultiple (10) x its
// payload, whatever the input (issue 11, "Decode amplification").
//
// Measured before the body writer (nlohmann DOM per body, 1 MB of empty tool calls per message
// kind): 921x the payload for openai, 1009x for dashscope; 1,000 tool results naming a 100 KB
// function by id: 2545x for ollama and dashscope; a 4 MB text: 2.5x.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "dispatch/protocol/codec.hpp"
#include "dispatch/worker/config.hpp"
#include "dispatch/worker/providers/adapter.hpp"
#include "peak_alloc.hpp"

namespace dispatch::worker {
namespace {

using test::PeakScope;

constexpr std::size_t kMaxRequestBytes = 32u << 20;  // the default of worker.max_request_bytes

ProviderConfig provider_of(const std::string& type) {
  ProviderConfig provider;
  provider.name = type;
  provider.type = type;
  provider.base_url = "http://127.0.0.1:1";
  provider.api_key = "sk-test";
  return provider;
}

protocol::Message message(std::string role, std::string content) {
  protocol::Message m;
  m.role = std::move(role);
  m.content = std::move(content);
  return m;
}

protocol::Request with_messages(std::vector<protocol::Message> messages) {
  protocol::Request request;
  request.provider = "p";
  request.model = "m";
  request.messages = std::move(messages);
  return request;
}

protocol::Request assistant_calls(std::size_t messages, std::size_t calls,
                                  const protocol::ToolCall& call) {
  std::vector<protocol::Message> list = {message("user", "hi")};
  for (std::size_t m = 0; m < messages; ++m) {
    protocol::Message assistant = message("assistant", "");
    assistant.tool_calls.assign(calls, call);
    list.push_back(std::move(assistant));
  }
  return with_messages(std::move(list));
}

// One call named by a 100 KB function, then results that give only its id.
protocol::Request linked_results(std::size_t results) {
  std::vector<protocol::Message> list = {message("user", "hi")};
  protocol::Message call = message("assistant", "");
  call.tool_calls.push_back({"id1", std::string(100'000, 'n'), "{}"});
  list.push_back(call);
  for (std::size_t i = 0; i < results; ++i) {
    protocol::Message result = message("tool", "r");
    result.tool_call_id = "id1";
    list.push_back(std::move(result));
  }
  return with_messages(std::move(list));
}

// What a real agent conversation looks like: tool calls with names, ids and arguments.
protocol::Request agent_conversation(std::size_t turns) {
  std::vector<protocol::Message> list = {message("system", "You are a helpful assistant."),
                                         message("user", "What is the weather in Paris?")};
  for (std::size_t t = 0; t < turns; ++t) {
    protocol::Message assistant = message("assistant", "");
    const std::string id = "call_" + std::to_string(100000 + t) + "abcdefgh";
    assistant.tool_calls.push_back({id, "get_weather", R"({"city":"Paris","unit":"celsius"})"});
    list.push_back(std::move(assistant));
    protocol::Message result = message("tool", R"({"temperature":21,"sky":"clear"})");
    result.tool_call_id = id;
    list.push_back(std::move(result));
  }
  list.push_back(message("assistant", "It is 21 degrees and clear in Paris."));
  return with_messages(std::move(list));
}

protocol::Request text(std::size_t bytes, char c) {
  return with_messages({message("user", std::string(bytes, c))});
}

struct Case {
  std::string name;
  protocol::Request request;
  bool refused;  // what the size check must decide
};

std::vector<Case> cases() {
  std::vector<Case> out;
  out.push_back({"10 x 100,000 empty tool calls", assistant_calls(10, 100'000, {}), true});
  out.push_back(
      {"1,000,000 tool calls named a", assistant_calls(10, 100'000, {"b", "a", ""}), true});
  out.push_back({"1,000 results linked to a 100 KB name", linked_results(1000), true});
  // \u0001 is six bytes of JSON: 6 MB make a 36 MB body, over worker.max_request_bytes ...
  out.push_back({"6 MB of control characters", text(6u << 20, '\x01'), true});
  // ... while 1 MB make 6 MB, which a job of 1 MB may hold.
  out.push_back({"1 MB of control characters", text(1u << 20, '\x01'), false});
  out.push_back({"4 MB of text", text(4u << 20, 'x'), false});
  out.push_back({"agent conversation, 2,000 tool turns", agent_conversation(2000), false});
  out.push_back({"a short chat", with_messages({message("user", "Hello, how are you?")}), false});
  return out;
}

const char* const kTypes[] = {"openai", "openai-compatible", "anthropic", "ollama", "dashscope"};

TEST(BodyMemory, AmplifyingRequestsAreRefusedBeforeAnythingIsBuilt) {
  for (const Case& c : cases()) {
    const std::string payload = protocol::encode(c.request);
    PeakScope scope;
    auto checked = check_request_body_size(c.request, payload.size(), kMaxRequestBytes);
    const std::size_t peak = scope.peak_bytes();
    ASSERT_EQ(!checked, c.refused) << c.name << (checked ? "" : ": " + checked.error().message);
    if (checked) {
      EXPECT_EQ(peak, 0u) << c.name << ": the check allocates nothing";
      continue;
    }
    EXPECT_EQ(checked.error().kind, protocol::ErrorKind::invalid_request) << c.name;
    EXPECT_EQ(checked.error().code, "request_too_large") << c.name;
  }
}

// Receipt (the payload), decode, check and body: the whole of what a worker holds for a job
// before the transfer, which sends from the body without a copy.
TEST(BodyMemory, WhatPassesStaysWithinTenTimesItsPayload) {
  for (const Case& c : cases()) {
    if (c.refused) continue;
    const std::string payload = protocol::encode(c.request);
    for (const char* type : kTypes) {
      const ProviderConfig provider = provider_of(type);
      PeakScope scope;
      {
        auto decoded = protocol::decode<protocol::Request>(payload);
        ASSERT_TRUE(decoded.ok()) << c.name;
        const protocol::Request& request = decoded.value();
        ASSERT_TRUE(check_request_body_size(request, payload.size(), kMaxRequestBytes).ok());
        auto built = adapter_for_type(type)->build(request, "m", true, provider);
        ASSERT_TRUE(built.ok()) << c.name << " on " << type << ": " << built.error().message;
        EXPECT_LE(built->http.body.size(), estimate_request_body_bytes(request))
            << c.name << " on " << type;
      }
      const std::size_t held = payload.size() + scope.peak_bytes();
      EXPECT_LE(held, kMaxJobMemoryMultiple * payload.size() + kJobAllowanceBytes)
          << c.name << " on " << type << ": payload " << payload.size();
    }
  }
}

TEST(BodyMemory, AnOrdinaryBodyCostsAboutItsText) {
  const protocol::Request request = text(4u << 20, 'x');
  const ProviderConfig provider = provider_of("openai");
  PeakScope scope;
  auto built = adapter_for_type("openai")->build(request, "m", true, provider);
  ASSERT_TRUE(built.ok());
  // One string, reserved once: no DOM copy, no doubling.
  EXPECT_LT(scope.peak_bytes(), (4u << 20) + (64u << 10));
}

}  // namespace
}  // namespace dispatch::worker
