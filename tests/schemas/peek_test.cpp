// peek_unsigned / peek_request_timeout_ms: one field read from encoded bytes without decoding.

#include "dispatch/protocol/peek.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "dispatch/protocol/codec.hpp"

namespace dispatch::protocol {
namespace {

using json = nlohmann::json;

std::string mp(const json& value) {
  const auto bytes = json::to_msgpack(value);
  return std::string(bytes.begin(), bytes.end());
}

Request request_with_timeout(std::optional<uint32_t> timeout_ms) {
  Request request;
  request.provider = "openai";
  request.model = "m";
  request.messages.push_back(Message{"user", "hi", {}, {}, {}, {}, {}});
  request.timeout_ms = timeout_ms;
  return request;
}

TEST(Peek, RequestTimeoutFromAnEncodedRequest) {
  EXPECT_EQ(peek_request_timeout_ms(encode(request_with_timeout(45'000))), 45'000u);
  EXPECT_EQ(peek_request_timeout_ms(encode(request_with_timeout(std::nullopt))), std::nullopt);
  EXPECT_EQ(peek_request_timeout_ms(encode(request_with_timeout(0))), std::nullopt);
}

TEST(Peek, RequestMaxTokensFromAnEncodedRequest) {
  Request request = request_with_timeout(30'000);
  request.max_tokens = 256;
  EXPECT_EQ(peek_request_max_tokens(encode(request)), 256u);
  request.max_tokens = 0;  // set to 0: a value, unlike timeout_ms's "not set"
  EXPECT_EQ(peek_request_max_tokens(encode(request)), 0u);
  request.max_tokens.reset();
  EXPECT_EQ(peek_request_max_tokens(encode(request)), std::nullopt);
  EXPECT_EQ(peek_request_max_tokens(mp({{"max_tokens", uint64_t{1} << 40}})), std::nullopt);
  EXPECT_EQ(peek_request_max_tokens(mp({{"max_tokens", -3}})), std::nullopt);
}

TEST(Peek, ArrayLengthOfATopLevelKey) {
  Request request = request_with_timeout(std::nullopt);
  EXPECT_EQ(peek_array_length(encode(request), "fallbacks"), std::nullopt);  // absent
  request.fallbacks = std::vector<Target>{};
  EXPECT_EQ(peek_array_length(encode(request), "fallbacks"), 0u);
  request.fallbacks = std::vector<Target>{{"a", "b"}, {"c", "d"}};
  EXPECT_EQ(peek_array_length(encode(request), "fallbacks"), 2u);
  EXPECT_EQ(peek_array_length(mp({{"meta", {{"fallbacks", {1, 2}}}}}), "fallbacks"), std::nullopt);
  EXPECT_EQ(peek_array_length(mp({{"fallbacks", 3}}), "fallbacks"), std::nullopt);
  EXPECT_EQ(peek_unsigned(mp({{"fallbacks", {1}}}), "fallbacks"), std::nullopt);
}

TEST(Peek, OnlyTheTopLevelKeyCounts) {
  const std::string nested =
      mp({{"messages", {{{"timeout_ms", 5}}}}, {"meta", {{"timeout_ms", 6}}}, {"timeout_ms", 7}});
  EXPECT_EQ(peek_unsigned(nested, "timeout_ms"), 7u);
  EXPECT_EQ(peek_unsigned(mp({{"meta", {{"timeout_ms", 6}}}}), "timeout_ms"), std::nullopt);
  // A string value equal to the key is a value, not a key.
  EXPECT_EQ(peek_unsigned(mp({{"a", "timeout_ms"}, {"b", 3}}), "timeout_ms"), std::nullopt);
}

TEST(Peek, AnythingButAnUnsignedIsNoValue) {
  EXPECT_EQ(peek_unsigned(mp({{"timeout_ms", -5}}), "timeout_ms"), std::nullopt);
  EXPECT_EQ(peek_unsigned(mp({{"timeout_ms", "5"}}), "timeout_ms"), std::nullopt);
  EXPECT_EQ(peek_unsigned(mp({{"timeout_ms", nullptr}}), "timeout_ms"), std::nullopt);
  EXPECT_EQ(peek_unsigned(mp({{"timeout_ms", {{"x", 1}}}, {"y", 2}}), "timeout_ms"), std::nullopt);
  EXPECT_EQ(peek_unsigned(mp(json::array({"timeout_ms", 5})), "timeout_ms"), std::nullopt);
  EXPECT_EQ(peek_unsigned(mp(5), "timeout_ms"), std::nullopt);
  EXPECT_EQ(peek_request_timeout_ms(mp({{"timeout_ms", uint64_t{1} << 33}})), std::nullopt);
}

TEST(Peek, TruncatedOrGarbageBytesAreNoValue) {
  const std::string whole = mp({{"a", std::string(100, 'x')}, {"timeout_ms", 9}});
  EXPECT_EQ(peek_unsigned(whole, "timeout_ms"), 9u);
  for (std::size_t n = 0; n + 1 < whole.size(); ++n) {
    EXPECT_EQ(peek_unsigned(whole.substr(0, n), "timeout_ms"), std::nullopt) << n;
  }
  EXPECT_EQ(peek_unsigned(std::string("\xc1\xc1\xc1", 3), "timeout_ms"), std::nullopt);
  EXPECT_EQ(peek_unsigned(std::string("\xdd\xff\xff\xff\xff", 5), "timeout_ms"), std::nullopt);
}

}  // namespace
}  // namespace dispatch::protocol
