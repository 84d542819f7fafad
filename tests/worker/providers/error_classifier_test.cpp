#include "dispatch/worker/providers/error_classifier.hpp"

#include <curl/curl.h>
#include <gtest/gtest.h>

#include "dispatch/worker/config.hpp"

namespace dispatch::worker {
namespace {

using protocol::ErrorKind;

// 2015-10-21T07:28:00Z, as in RFC 9110's Retry-After example date.
constexpr int64_t kNowMs = 1445412480000;

struct ClassifyCase {
  uint16_t status;
  std::string code;
  std::string type;
  std::string message;
  ErrorKind expected;
};

std::ostream& operator<<(std::ostream& out, const ClassifyCase& c) {
  return out << c.status << " code=" << c.code << " type=" << c.type << " message=" << c.message;
}

class ClassifierTable : public ::testing::TestWithParam<ClassifyCase> {};

TEST_P(ClassifierTable, MapsToKind) {
  const ClassifyCase& c = GetParam();
  const Failure failure =
      classify_provider_error({c.status, c.code, c.type, c.message}, {}, kNowMs);
  EXPECT_EQ(failure.kind, c.expected) << protocol::to_string(failure.kind);
  EXPECT_EQ(failure.status, c.status);
}

INSTANTIATE_TEST_SUITE_P(
    Statuses, ClassifierTable,
    ::testing::Values(
        ClassifyCase{400, "", "invalid_request_error", "bad", ErrorKind::invalid_request},
        ClassifyCase{422, "", "", "unprocessable", ErrorKind::invalid_request},
        ClassifyCase{400, "context_length_exceeded", "invalid_request_error", "too long",
                     ErrorKind::context_length_exceeded},
        ClassifyCase{400, "", "invalid_request_error", "prompt is too long: 201000 tokens > 200000",
                     ErrorKind::context_length_exceeded},
        ClassifyCase{400, "", "", "This model's maximum context length is 8192 tokens",
                     ErrorKind::context_length_exceeded},
        ClassifyCase{400, "InvalidParameter", "", "Range of input length should be [1, 30720]",
                     ErrorKind::context_length_exceeded},
        ClassifyCase{400, "", "", "input exceeds the context window",
                     ErrorKind::context_length_exceeded},
        ClassifyCase{422, "context_length_exceeded", "", "", ErrorKind::context_length_exceeded},
        ClassifyCase{400, "content_policy_violation", "", "", ErrorKind::content_filtered},
        ClassifyCase{400, "content_filter", "", "", ErrorKind::content_filtered},
        ClassifyCase{400, "DataInspectionFailed", "",
                     "Input data may contain inappropriate content.", ErrorKind::content_filtered},
        ClassifyCase{400, "", "", "filtered due to the prompt triggering content management policy",
                     ErrorKind::content_filtered},
        ClassifyCase{401, "invalid_api_key", "", "", ErrorKind::authentication},
        ClassifyCase{403, "", "permission_error", "", ErrorKind::authentication},
        ClassifyCase{404, "model_not_found", "", "", ErrorKind::model_not_available},
        ClassifyCase{408, "", "", "", ErrorKind::timeout},
        ClassifyCase{409, "", "", "", ErrorKind::server_error},
        ClassifyCase{413, "", "request_too_large", "", ErrorKind::invalid_request},
        ClassifyCase{429, "rate_limit_exceeded", "", "", ErrorKind::rate_limited},
        ClassifyCase{429, "Throttling.RateQuota", "", "", ErrorKind::rate_limited},
        ClassifyCase{500, "", "api_error", "", ErrorKind::server_error},
        ClassifyCase{502, "", "", "", ErrorKind::server_error},
        ClassifyCase{504, "", "", "", ErrorKind::server_error},
        ClassifyCase{503, "", "", "", ErrorKind::overloaded},
        ClassifyCase{529, "", "overloaded_error", "Overloaded", ErrorKind::overloaded},
        ClassifyCase{500, "", "overloaded_error", "", ErrorKind::overloaded},
        ClassifyCase{402, "", "", "", ErrorKind::invalid_request},
        ClassifyCase{302, "", "", "", ErrorKind::server_error},
        // In-stream error events carry no status: the code or type decides.
        ClassifyCase{0, "", "overloaded_error", "Overloaded", ErrorKind::overloaded},
        ClassifyCase{0, "", "rate_limit_error", "", ErrorKind::rate_limited},
        ClassifyCase{0, "Throttling", "", "", ErrorKind::rate_limited},
        ClassifyCase{0, "InvalidApiKey", "", "", ErrorKind::authentication},
        ClassifyCase{0, "DataInspectionFailed", "", "", ErrorKind::content_filtered},
        ClassifyCase{0, "InternalError", "", "", ErrorKind::server_error},
        ClassifyCase{0, "", "api_error", "", ErrorKind::server_error},
        ClassifyCase{0, "", "not_found_error", "", ErrorKind::model_not_available},
        ClassifyCase{0, "", "invalid_request_error", "prompt is too long",
                     ErrorKind::context_length_exceeded},
        ClassifyCase{0, "", "", "something odd", ErrorKind::server_error}));

TEST(Classifier, QuotaExhaustedSaysDoNotRetry) {
  for (const auto& [status, code] : std::vector<std::pair<uint16_t, std::string>>{
           {429, "insufficient_quota"}, {400, "Arrearage"}}) {
    const Failure failure = classify_provider_error({status, code, "", "pay up"}, {}, kNowMs);
    EXPECT_EQ(failure.kind, ErrorKind::rate_limited) << code;
    EXPECT_TRUE(failure.should_retry_header) << code;
    EXPECT_FALSE(failure.should_retry) << code;
    EXPECT_EQ(failure.code, code);
  }
}

TEST(Classifier, CodeFallsBackToType) {
  Failure failure =
      classify_provider_error({529, "", "overloaded_error", "Overloaded"}, {}, kNowMs);
  EXPECT_EQ(failure.code, "overloaded_error");
  EXPECT_EQ(failure.message, "Overloaded");
  failure = classify_provider_error({500, "", "", ""}, {}, kNowMs);
  EXPECT_EQ(failure.message, "HTTP 500");
}

TEST(Classifier, ShouldRetryHeader) {
  Failure failure =
      classify_provider_error({500, "", "", ""}, {{"x-should-retry", "false"}}, kNowMs);
  EXPECT_TRUE(failure.should_retry_header);
  EXPECT_FALSE(failure.should_retry);
  failure = classify_provider_error({400, "", "", ""}, {{"X-Should-Retry", " true "}}, kNowMs);
  EXPECT_TRUE(failure.should_retry_header);
  EXPECT_TRUE(failure.should_retry);
  failure = classify_provider_error({400, "", "", ""}, {{"x-should-retry", "perhaps"}}, kNowMs);
  EXPECT_FALSE(failure.should_retry_header);
}

TEST(RetryAfter, Forms) {
  EXPECT_EQ(parse_retry_after({}, kNowMs), std::nullopt);
  EXPECT_EQ(parse_retry_after({{"retry-after", "2"}}, kNowMs), 2000u);
  EXPECT_EQ(parse_retry_after({{"retry-after", "1.5"}}, kNowMs), 1500u);
  EXPECT_EQ(parse_retry_after({{"retry-after", "0"}}, kNowMs), 0u);
  EXPECT_EQ(parse_retry_after({{"retry-after-ms", "250"}}, kNowMs), 250u);
  EXPECT_EQ(parse_retry_after({{"retry-after-ms", "12.6"}}, kNowMs), 13u);
  // retry-after-ms is the more precise and wins.
  EXPECT_EQ(parse_retry_after({{"retry-after", "9"}, {"retry-after-ms", "100"}}, kNowMs), 100u);
  // HTTP dates relative to the injected now: IMF-fixdate, RFC 850, asctime.
  EXPECT_EQ(parse_retry_after({{"retry-after", "Wed, 21 Oct 2015 07:28:05 GMT"}}, kNowMs), 5000u);
  EXPECT_EQ(parse_retry_after({{"retry-after", "Wednesday, 21-Oct-15 07:28:10 GMT"}}, kNowMs),
            10000u);
  EXPECT_EQ(parse_retry_after({{"retry-after", "Wed Oct 21 07:28:01 2015"}}, kNowMs), 1000u);
  EXPECT_EQ(parse_retry_after({{"retry-after", "Wed, 21 Oct 2015 07:00:00 GMT"}}, kNowMs), 0u);
  // Garbage and negatives are ignored, not guessed at.
  EXPECT_EQ(parse_retry_after({{"retry-after", "soon"}}, kNowMs), std::nullopt);
  EXPECT_EQ(parse_retry_after({{"retry-after", "-3"}}, kNowMs), std::nullopt);
  EXPECT_EQ(parse_retry_after({{"retry-after-ms", "x"}, {"retry-after", "3"}}, kNowMs), 3000u);
}

TEST(Classifier, RetryAfterLandsInFailure) {
  const Failure failure =
      classify_provider_error({429, "", "", ""}, {{"Retry-After", "7"}}, kNowMs);
  EXPECT_EQ(failure.retry_after_ms, 7000u);
}

TEST(Scrub, RemovesKeysAndBearerTokens) {
  EXPECT_EQ(scrub_secrets("Incorrect API key provided: my-custom-key-42.", "my-custom-key-42"),
            "Incorrect API key provided: ***.");
  EXPECT_EQ(scrub_secrets("key sk-proj-abcdefghijklmnop is invalid"), "key sk-*** is invalid");
  EXPECT_EQ(scrub_secrets("sk-ant-api03-AAAAAAAAAAAA"), "sk-***");
  EXPECT_EQ(scrub_secrets("header Authorization: Bearer abc.def-ghi rejected"),
            "header Authorization: Bearer *** rejected");
  EXPECT_EQ(scrub_secrets("ask-me and sk-short stay"), "ask-me and sk-short stay");
  const std::vector<std::string> key = {"abcdef123456"};
  const Failure failure = classify_provider_error(
      {401, "invalid_api_key", "", "Incorrect API key provided: abcdef123456"}, {}, kNowMs, key);
  EXPECT_EQ(failure.message, "Incorrect API key provided: ***");
}

TEST(Scrub, RemovesTheKeyAndEveryCustomHeaderValueOfTheProvider) {
  ProviderConfig provider;
  provider.api_key = "key-SECRET-7f3a9c";
  provider.extra_headers = {{"X-Tenant-Token", "tok-SECRET-b21e"},
                            {"X-Team", "team"},  // under 6 characters: ordinary words stay
                            {"X-Wrapper", "wrap-key-SECRET-7f3a9c-end"}};
  const std::vector<std::string> secrets = provider.secrets();
  ASSERT_EQ(secrets.size(), 4u);
  EXPECT_EQ(scrub_secrets("bad key-SECRET-7f3a9c with tok-SECRET-b21e for team "
                          "wrap-key-SECRET-7f3a9c-end",
                          secrets),
            "bad *** with *** for team ***");
  const Failure failure = classify_provider_error(
      {400, "tok-SECRET-b21e", "", "header X-Tenant-Token: tok-SECRET-b21e is not allowed"}, {},
      kNowMs, secrets);
  EXPECT_EQ(failure.code, "***");
  EXPECT_EQ(failure.message, "header X-Tenant-Token: *** is not allowed");

  TransportError cut;
  cut.kind = ErrorKind::network;
  cut.curl_code = 56;
  cut.message = "proxy said tok-SECRET-b21e";
  provider.name = "mine";
  provider.base_url = "https://user:pass-SECRET@api.example.com/v1";
  const Failure transport = failure_from_transport(cut, provider);
  EXPECT_EQ(transport.message.find("SECRET"), std::string::npos) << transport.message;
}

TEST(Transport, KeepsTheEngineClassification) {
  TransportError error;
  error.kind = ErrorKind::timeout;
  error.curl_code = 28;
  error.message = "Connection timed out after 5000 milliseconds";
  const Failure failure = failure_from_transport(error);
  EXPECT_EQ(failure.kind, ErrorKind::timeout);
  EXPECT_EQ(failure.status, 0);
  EXPECT_EQ(failure.code, "curl_28");
  EXPECT_EQ(failure.message, error.message);
}

// What the engine makes of a curl result (classify_curl_error): "<generic>: <error buffer>".
TransportError curl_failure(CURLcode code, const std::string& buffer, ErrorKind kind) {
  TransportError error;
  error.kind = kind;
  error.curl_code = code;
  error.message = std::string(curl_easy_strerror(code)) + ": " + buffer;
  return error;
}

ProviderConfig provider_at(const std::string& name, const std::string& base_url,
                           const std::string& key = "") {
  ProviderConfig provider;
  provider.name = name;
  provider.base_url = base_url;
  provider.api_key = key;
  return provider;
}

TEST(Transport, RefusedConnectionIsOneSentenceNamingProviderAndUrl) {
  const TransportError error =
      curl_failure(CURLE_COULDNT_CONNECT,
                   "Failed to connect to 127.0.0.1 port 9 after 0 ms: Couldn't connect to server",
                   ErrorKind::network);
  const Failure failure =
      failure_from_transport(error, provider_at("ollama", "http://127.0.0.1:9"));
  EXPECT_EQ(failure.kind, ErrorKind::network);
  EXPECT_EQ(failure.status, 0);
  EXPECT_EQ(failure.code, "curl_7");
  EXPECT_EQ(failure.message,
            "cannot connect to ollama at http://127.0.0.1:9: connection refused (is the server "
            "running?)");
  EXPECT_EQ(failure_from_transport(error, provider_at("local", "http://localhost:11434")).message,
            "cannot connect to local at http://localhost:11434: connection refused (is the "
            "server running?)");
  // Off the machine the same curl result may also be an unreachable host.
  EXPECT_EQ(
      failure_from_transport(error, provider_at("openai", "https://api.openai.com/v1")).message,
      "cannot connect to openai at https://api.openai.com/v1: connection refused or host "
      "unreachable (is the server running?)");
}

TEST(Transport, OtherTransportFailuresNameProviderAndUrlOnce) {
  const ProviderConfig ali = provider_at("ali", "https://dashscope.example/api/v1");
  EXPECT_EQ(failure_from_transport(
                curl_failure(CURLE_COULDNT_RESOLVE_HOST,
                             "Could not resolve host: dashscope.example", ErrorKind::network),
                ali)
                .message,
            "cannot connect to ali at https://dashscope.example/api/v1: host name not found "
            "(check the base URL)");
  const Failure timeout = failure_from_transport(
      curl_failure(CURLE_OPERATION_TIMEDOUT, "Connection timed out after 5001 milliseconds",
                   ErrorKind::timeout),
      ali);
  EXPECT_EQ(timeout.kind, ErrorKind::timeout);
  EXPECT_EQ(timeout.code, "curl_28");
  EXPECT_EQ(timeout.message,
            "cannot connect to ali at https://dashscope.example/api/v1: Connection timed out "
            "after 5001 milliseconds");
  EXPECT_EQ(failure_from_transport(
                curl_failure(CURLE_GOT_NOTHING, "Empty reply from server", ErrorKind::network), ali)
                .message,
            "ali at https://dashscope.example/api/v1 closed the connection without answering");
  const Failure cut = failure_from_transport(
      curl_failure(CURLE_PARTIAL_FILE, "transfer closed with outstanding read data remaining",
                   ErrorKind::network),
      ali);
  EXPECT_EQ(cut.message,
            "the answer from ali at https://dashscope.example/api/v1 was cut off: transfer "
            "closed with outstanding read data remaining");
  // No error buffer: the generic text, still once.
  TransportError bare;
  bare.kind = ErrorKind::network;
  bare.curl_code = CURLE_RECV_ERROR;
  bare.message = curl_easy_strerror(CURLE_RECV_ERROR);
  EXPECT_EQ(failure_from_transport(bare, ali).message,
            "connection to ali at https://dashscope.example/api/v1 broke: Failure when "
            "receiving data from the peer");
}

TEST(Transport, NeverShowsCredentials) {
  const std::string key = "sk-proj-0123456789abcdefghij";
  const Failure failure = failure_from_transport(
      curl_failure(CURLE_SSL_CONNECT_ERROR, "TLS handshake failed near " + key, ErrorKind::network),
      provider_at("mine", "https://user:hunter2secret@llm.example:8443/v1", key));
  EXPECT_EQ(failure.message,
            "TLS with mine at https://llm.example:8443/v1 failed: TLS handshake failed near ***");
}

}  // namespace
}  // namespace dispatch::worker
