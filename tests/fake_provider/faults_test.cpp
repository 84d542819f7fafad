// Every directive in every wire format: status, headers, body shape, timing (from /_fake/log)
// and what the client sees on the wire (curl error codes for transport faults).

#include <ctime>
#include <thread>

#include "dispatch/fake_provider/wire_format.hpp"
#include "http_client.hpp"

namespace dispatch::fake_provider::test {
namespace {

// How a stream of one format looks to a client, decoded generically.
struct Decoded {
  std::vector<std::string> contents;  // text of content events, in order
  int malformed = 0;                  // events whose JSON does not parse
  bool terminated = false;            // the format's terminator arrived last
  std::optional<json> error;          // an in-stream error event
};

class Faults : public FakeProviderTest, public ::testing::WithParamInterface<Format> {
 protected:
  Format format() const { return GetParam(); }

  HttpResult send(const std::string& model, bool stream, long timeout_ms = 10000,
                  std::vector<std::string> headers = {}) const {
    const json messages = json::array({user("hello world")});
    switch (format()) {
      case Format::openai:
        return openai({{"model", model}, {"stream", stream}, {"messages", messages}}, headers,
                      timeout_ms);
      case Format::dashscope_compatible:
        return compatible({{"model", model}, {"stream", stream}, {"messages", messages}}, headers,
                          timeout_ms);
      case Format::anthropic:
        return anthropic(
            {{"model", model}, {"stream", stream}, {"max_tokens", 100}, {"messages", messages}},
            headers, timeout_ms);
      case Format::ollama:
        return ollama({{"model", model}, {"stream", stream}, {"messages", messages}}, headers,
                      timeout_ms);
      case Format::dashscope:
        return dashscope(
            {{"model", model},
             {"input", {{"messages", messages}}},
             {"parameters", {{"result_format", "message"}, {"incremental_output", true}}}},
            stream, headers, timeout_ms);
    }
    return {};
  }

  Decoded decode(const std::string& body) const {
    Decoded d;
    if (format() == Format::ollama) {
      const auto lines = split_lines(body);
      for (size_t i = 0; i < lines.size(); ++i) {
        const json line = json::parse(lines[i], nullptr, false);
        if (line.is_discarded()) {
          ++d.malformed;
          continue;
        }
        if (line.contains("error")) d.error = line;
        if (line.value("done", false))
          d.terminated = i + 1 == lines.size();
        else if (line.contains("message"))
          d.contents.push_back(line["message"]["content"]);
      }
      return d;
    }
    const auto events = parse_sse(body);
    for (size_t i = 0; i < events.size(); ++i) {
      const SseEvent& e = events[i];
      const bool last = i + 1 == events.size();
      if (e.data.empty()) continue;  // comments
      if (e.data == "[DONE]") {
        d.terminated = last;
        continue;
      }
      const json data = json::parse(e.data, nullptr, false);
      if (data.is_discarded()) {
        ++d.malformed;
        continue;
      }
      switch (format()) {
        case Format::openai:
        case Format::dashscope_compatible:
          if (data.contains("error"))
            d.error = data;
          else if (!data["choices"].empty() && data["choices"][0]["delta"].contains("content") &&
                   data["choices"][0]["delta"]["content"].is_string() &&
                   !data["choices"][0]["delta"]["content"].get<std::string>().empty()) {
            d.contents.push_back(data["choices"][0]["delta"]["content"]);
          }
          break;
        case Format::anthropic:
          if (e.event == "error") d.error = data;
          if (e.event == "content_block_delta") d.contents.push_back(data["delta"]["text"]);
          if (e.event == "message_stop") d.terminated = last;
          break;
        case Format::dashscope:
          if (e.event == "error") {
            d.error = data;
            break;
          }
          if (data["output"]["choices"][0]["finish_reason"] != "null") {
            d.terminated = last;
          } else {
            d.contents.push_back(data["output"]["choices"][0]["message"]["content"]);
          }
          break;
        case Format::ollama:
          break;
      }
    }
    return d;
  }

  // The provider's identifying error type or code, after checking the body's shape.
  std::string error_identity(const HttpResult& r) const {
    const json j = r.json_body();
    EXPECT_FALSE(j.is_discarded()) << r.body;
    switch (format()) {
      case Format::openai:
      case Format::dashscope_compatible:
        EXPECT_TRUE(j["error"].contains("message") && j["error"].contains("type") &&
                    j["error"].contains("param") && j["error"].contains("code"))
            << r.body;
        EXPECT_EQ(j.contains("request_id"), format() == Format::dashscope_compatible);
        return j["error"]["code"].is_string() ? j["error"]["code"].get<std::string>()
                                              : j["error"]["type"].get<std::string>();
      case Format::anthropic:
        EXPECT_EQ(j["type"], "error");
        EXPECT_TRUE(j["error"]["message"].is_string());
        EXPECT_TRUE(j["request_id"].is_string());
        return j["error"]["type"];
      case Format::ollama:
        EXPECT_EQ(j.size(), 1u);
        return j["error"].is_string() ? j["error"].get<std::string>() : "";
      case Format::dashscope:
        EXPECT_TRUE(j["message"].is_string());
        EXPECT_TRUE(j["request_id"].is_string());
        return j["code"];
    }
    return "";
  }

  std::string model(const std::string& directives) const {
    return std::string(format_name(format())) + "-model~" + directives;
  }
};

TEST_P(Faults, LatencyDelaysTheHeaders) {
  const std::string m = model("latency_ms=150~tokens=2");
  for (const bool stream : {false, true}) {
    const HttpResult r = send(m, stream);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_GE(r.elapsed_ms, 150);
  }
  for (const json& a : attempts(m)) {
    EXPECT_GE(a["headers_ms"].get<double>() - a["t_ms"].get<double>(), 149) << a.dump();
    EXPECT_EQ(a["outcome"], "ok");
  }
}

TEST_P(Faults, FirstTokenAndChunkDelays) {
  const std::string m = model("first_token_ms=300~chunk_delay_ms=40~tokens=4");
  const HttpResult r = send(m, true);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(decode(r.body).contents.size(), 4u);
  const json a = only_attempt(m);
  // Headers come before the first-token wait is over, the first chunk only after it.
  EXPECT_LT(a["headers_ms"].get<double>() - a["t_ms"].get<double>(), 250);
  EXPECT_GE(a["first_chunk_ms"].get<double>() - a["headers_ms"].get<double>(), 299);
  // Three gaps between four chunks and one before the finish.
  EXPECT_GE(a["end_ms"].get<double>() - a["first_chunk_ms"].get<double>(), 4 * 40 - 1);
  EXPECT_EQ(a["chunks_sent"], 4);
}

TEST_P(Faults, TokensDirective) {
  const std::string m = model("tokens=3");
  const HttpResult r = send(m, true);
  EXPECT_EQ(decode(r.body).contents.size(), 3u) << r.body;
  const json a = only_attempt(m);
  EXPECT_EQ(a["completion_tokens"], 3);
  EXPECT_EQ(a["prompt_tokens"], 2);
}

TEST_P(Faults, DirectivesFromTheHeader) {
  const std::string m = std::string(format_name(format())) + "-real-model";
  HttpResult r = send(m, true, 10000, {"X-Fake-Directives: tokens=2"});
  EXPECT_EQ(decode(r.body).contents.size(), 2u);
  r = send(m, false, 10000, {"X-Fake-Directives: status=503"});
  EXPECT_EQ(r.status, 503);
  const json list = attempts(m);
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[1]["header_directives"], "status=503");
  EXPECT_EQ(list[1]["outcome"], "status_503");
}

// Expected identity (type / code / message) of each scripted status, per format.
std::string expected_identity(Format format, int status) {
  switch (format) {
    case Format::openai:
      switch (status) {
        case 401:
          return "invalid_api_key";
        case 404:
          return "model_not_found";
        case 429:
          return "rate_limit_exceeded";
        case 400:
          return "invalid_request_error";
        case 500:
          return "server_error";
        default:
          return "";
      }
    case Format::dashscope_compatible:
      switch (status) {
        case 429:
          return "Throttling.RateQuota";
        case 401:
          return "invalid_api_key";
        case 500:
          return "internal_error";
        default:
          return "";
      }
    case Format::anthropic:
      switch (status) {
        case 400:
          return "invalid_request_error";
        case 401:
          return "authentication_error";
        case 403:
          return "permission_error";
        case 404:
          return "not_found_error";
        case 413:
          return "request_too_large";
        case 429:
          return "rate_limit_error";
        case 500:
          return "api_error";
        case 529:
          return "overloaded_error";
        default:
          return "";
      }
    case Format::dashscope:
      switch (status) {
        case 400:
          return "InvalidParameter";
        case 401:
          return "InvalidApiKey";
        case 403:
          return "AccessDenied";
        case 404:
          return "ModelNotFound";
        case 429:
          return "Throttling.RateQuota";
        case 500:
          return "InternalError";
        default:
          return "";
      }
    case Format::ollama:
      return "";
  }
  return "";
}

TEST_P(Faults, ScriptedStatusesInTheProviderShape) {
  for (const int status : {400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 502, 503, 529}) {
    SCOPED_TRACE(status);
    const std::string m = model("status=" + std::to_string(status));
    for (const bool stream : {false, true}) {
      const HttpResult r = send(m, stream);
      EXPECT_EQ(r.status, status);
      const std::string identity = error_identity(r);
      EXPECT_FALSE(identity.empty());
      if (const std::string expected = expected_identity(format(), status); !expected.empty()) {
        EXPECT_EQ(identity, expected) << r.body;
      }
      EXPECT_FALSE(r.header("retry-after").has_value());
    }
    const json list = attempts(m);
    ASSERT_EQ(list.size(), 2u);
    EXPECT_EQ(list[0]["outcome"], "status_" + std::to_string(status));
    EXPECT_EQ(list[0]["status"], status);
  }
}

TEST_P(Faults, RetryAfterHeaders) {
  HttpResult r = send(model("status=429~retry_after=2"), false);
  EXPECT_EQ(r.status, 429);
  EXPECT_EQ(r.header("retry-after"), "2");
  r = send(model("status=503~retry_after_ms=250"), false);
  EXPECT_EQ(r.header("retry-after-ms"), "250");
  r = send(model("status=429~retry_after_date"), false);
  ASSERT_TRUE(r.header("retry-after").has_value());
  std::tm when{};
  ASSERT_NE(strptime(r.header("retry-after")->c_str(), "%a, %d %b %Y %H:%M:%S GMT", &when), nullptr)
      << *r.header("retry-after");
  const double ahead = std::difftime(timegm(&when), std::time(nullptr));
  EXPECT_GE(ahead, 1);
  EXPECT_LE(ahead, 4);
}

TEST_P(Faults, FailFirstThenSucceed) {
  const std::string m = model("fail_first=2~status=429~retry_after=1");
  EXPECT_EQ(send(m, false).status, 429);
  EXPECT_EQ(send(m, true).status, 429);
  const HttpResult ok = send(m, false);
  EXPECT_EQ(ok.status, 200);
  EXPECT_FALSE(ok.header("retry-after").has_value());
  EXPECT_EQ(send(m, true).status, 200);
  const json list = attempts(m);
  ASSERT_EQ(list.size(), 4u);
  EXPECT_EQ(list[0]["outcome"], "status_429");
  EXPECT_EQ(list[2]["outcome"], "ok");

  const std::string once = model("fail_first=1");
  EXPECT_EQ(send(once, false).status, 500);
  EXPECT_EQ(send(once, false).status, 200);
}

TEST_P(Faults, ResetIsATcpRst) {
  const std::string m = model("reset");
  const HttpResult r = send(m, true);
  EXPECT_TRUE(r.curl_code == CURLE_RECV_ERROR || r.curl_code == CURLE_GOT_NOTHING)
      << curl_easy_strerror(r.curl_code) << " " << r.error;
  EXPECT_EQ(r.status, 0);
  EXPECT_TRUE(r.body.empty());
  EXPECT_EQ(only_attempt(m)["outcome"], "reset");
}

TEST_P(Faults, HangNeverAnswers) {
  const std::string m = model("hang");
  const HttpResult r = send(m, false, 300);
  EXPECT_EQ(r.curl_code, CURLE_OPERATION_TIMEDOUT);
  EXPECT_EQ(r.status, 0);
  const json a = await_attempt_field(m, "client_closed_ms");
  EXPECT_EQ(a["outcome"], "hang");
  EXPECT_GE(a["client_closed_ms"].get<double>() - a["t_ms"].get<double>(), 250);
}

TEST_P(Faults, CutAfterTruncatesTheBody) {
  const std::string m = model("cut_after=2");
  const HttpResult r = send(m, true);
  EXPECT_EQ(r.curl_code, CURLE_PARTIAL_FILE) << curl_easy_strerror(r.curl_code);
  EXPECT_EQ(r.status, 200);
  const Decoded d = decode(r.body);
  EXPECT_EQ(d.contents.size(), 2u) << r.body;
  EXPECT_FALSE(d.terminated);
  const json a = only_attempt(m);
  EXPECT_EQ(a["outcome"], "cut");
  EXPECT_EQ(a["chunks_sent"], 2);

  // A non-streamed body is cut short of its Content-Length.
  const HttpResult whole = send(model("cut_after=1"), false);
  EXPECT_EQ(whole.curl_code, CURLE_PARTIAL_FILE);
  EXPECT_TRUE(whole.json_body().is_discarded());
}

TEST_P(Faults, NoTerminatorEndsCleanlyWithoutIt) {
  const std::string m = model("no_terminator~tokens=3");
  const HttpResult r = send(m, true);
  EXPECT_EQ(r.curl_code, CURLE_OK) << r.error;
  const Decoded d = decode(r.body);
  EXPECT_EQ(d.contents.size(), 3u);
  EXPECT_FALSE(d.terminated) << r.body;
  EXPECT_EQ(d.malformed, 0);
  EXPECT_EQ(only_attempt(m)["outcome"], "no_terminator");
  // The control: without the directive the terminator is there.
  EXPECT_TRUE(decode(send(model("tokens=3"), true).body).terminated);
}

TEST_P(Faults, StallAfterKeepsTheConnectionOpen) {
  const std::string m = model("stall_after=2");
  const HttpResult r = send(m, true, 400);
  EXPECT_EQ(r.curl_code, CURLE_OPERATION_TIMEDOUT);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(decode(r.body).contents.size(), 2u);
  const json a = await_attempt_field(m, "client_closed_ms");
  EXPECT_EQ(a["outcome"], "stall");
  EXPECT_EQ(a["chunks_sent"], 2);
}

TEST_P(Faults, MalformedEventInAnOtherwiseCompleteStream) {
  const std::string m = model("malformed_at=2~tokens=4");
  const HttpResult r = send(m, true);
  EXPECT_EQ(r.curl_code, CURLE_OK);
  const Decoded d = decode(r.body);
  EXPECT_EQ(d.malformed, 1) << r.body;
  EXPECT_EQ(d.contents, (std::vector<std::string>{"reply ", "hello ", "world"}));
  EXPECT_TRUE(d.terminated);
  EXPECT_EQ(only_attempt(m)["outcome"], "malformed");
  EXPECT_TRUE(send(model("malformed_at=1"), false).json_body().is_discarded());
}

TEST_P(Faults, ContextLengthAndContentFilter) {
  HttpResult r = send(model("context_length"), false);
  EXPECT_EQ(r.status, 400);
  const std::string context = error_identity(r);
  r = send(model("content_filter"), true);
  EXPECT_EQ(r.status, 400);
  const std::string filter = error_identity(r);
  switch (format()) {
    case Format::openai:
      EXPECT_EQ(context, "context_length_exceeded");
      EXPECT_EQ(filter, "content_policy_violation");
      break;
    case Format::anthropic:
      EXPECT_EQ(context, "invalid_request_error");
      EXPECT_NE(send(model("context_length"), false)
                    .json_body()["error"]["message"]
                    .get<std::string>()
                    .find("prompt is too long"),
                std::string::npos);
      EXPECT_EQ(filter, "invalid_request_error");
      break;
    case Format::ollama:
      EXPECT_NE(context.find("context length"), std::string::npos);
      EXPECT_FALSE(filter.empty());
      break;
    case Format::dashscope:
      EXPECT_EQ(context, "InvalidParameter");
      EXPECT_NE(send(model("context_length"), false)
                    .json_body()["message"]
                    .get<std::string>()
                    .find("Range of input length"),
                std::string::npos);
      EXPECT_EQ(filter, "DataInspectionFailed");
      break;
    case Format::dashscope_compatible:
      EXPECT_EQ(context, "invalid_parameter_error");
      EXPECT_EQ(filter, "data_inspection_failed");
      break;
  }
  EXPECT_EQ(attempts(model("content_filter"))[0]["outcome"], "content_filter");
}

TEST_P(Faults, ErrorMidStream) {
  const std::string m = model("error_mid_stream=2");
  const HttpResult r = send(m, true);
  EXPECT_EQ(r.curl_code, CURLE_OK) << "the body ends cleanly";
  EXPECT_EQ(r.status, 200);
  const Decoded d = decode(r.body);
  EXPECT_EQ(d.contents.size(), 2u);
  EXPECT_FALSE(d.terminated);
  ASSERT_TRUE(d.error.has_value()) << r.body;
  switch (format()) {
    case Format::openai:
    case Format::dashscope_compatible:
      EXPECT_TRUE((*d.error)["error"]["message"].is_string());
      break;
    case Format::anthropic:
      EXPECT_EQ((*d.error)["error"]["type"], "overloaded_error");
      break;
    case Format::ollama:
      EXPECT_TRUE((*d.error)["error"].is_string());
      break;
    case Format::dashscope:
      EXPECT_EQ((*d.error)["code"], "InternalError");
      EXPECT_NE(r.body.find("event:error\n:HTTP_STATUS/500\ndata:{"), std::string::npos);
      break;
  }
  EXPECT_EQ(only_attempt(m)["outcome"], "error_mid_stream");
  // Not streamed: the same failure as an HTTP error.
  EXPECT_GE(send(model("error_mid_stream=1"), false).status, 500);
}

TEST_P(Faults, FlapIsDownThenHealthy) {
  constexpr double kFlapMs = 1000;
  const std::string m = model("flap=1000~tokens=1");
  // The server restarts the flap window at some moment after `before_reset`.
  const auto before_reset = std::chrono::steady_clock::now();
  ASSERT_EQ(perform({"POST", url("/_fake/reset"), {}, "", 5000}).status, 200);
  const auto since_reset_ms = [&] {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                     before_reset)
        .count();
  };
  const HttpResult first = send(m, false);
  if (since_reset_ms() < kFlapMs) {
    EXPECT_EQ(first.status, 503);
    EXPECT_FALSE(error_identity(first).empty());
    EXPECT_EQ(attempts(m)[0]["outcome"], "flap");
  }
  int status = static_cast<int>(first.status);
  // Bounded poll: at most ~4 s of attempts.
  for (int i = 0; i < 200 && status != 200; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    status = static_cast<int>(send(m, false).status);
  }
  EXPECT_EQ(status, 200);
  EXPECT_GE(since_reset_ms(), kFlapMs) << "healthy only after the flap window";
}

TEST_P(Faults, BadDirectiveIsAnInvalidRequest) {
  const HttpResult r = send(model("no_such_directive"), false);
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find("no_such_directive"), std::string::npos);
}

TEST_P(Faults, NoSuchModelIs404EvenWithDirectives) {
  const HttpResult r = send("no-such-model~tokens=2", true);
  EXPECT_EQ(r.status, 404);
  EXPECT_FALSE(error_identity(r).empty());
}

INSTANTIATE_TEST_SUITE_P(AllFormats, Faults,
                         ::testing::Values(Format::openai, Format::anthropic, Format::ollama,
                                           Format::dashscope_compatible, Format::dashscope),
                         [](const ::testing::TestParamInfo<Format>& param_info) {
                           std::string name(format_name(param_info.param));
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace dispatch::fake_provider::test
