// The launcher over a real EventLoop + HttpEngine against the fake-provider binary, for every
// wire format: text, tools, images, stop, limits, thinking, usage, every error status and the
// stream faults. Also the launcher's own contract (async failures, abort, re-entrancy).

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>

#include "dispatch/test/fake_provider_process.hpp"
#include "dispatch/worker/event_loop.hpp"
#include "dispatch/worker/http_engine.hpp"
#include "dispatch/worker/providers/launcher.hpp"
#include "providers_test_support.hpp"

namespace dispatch::worker::test {
namespace {

using protocol::ErrorKind;
using namespace std::chrono_literals;

#ifdef FAKE_PROVIDER_BINARY
constexpr const char* kFakeBinary = FAKE_PROVIDER_BINARY;
#else
constexpr const char* kFakeBinary = "";
#endif

constexpr std::string_view kThinkingText = "Let me think about this request step by step.";

struct Recorder final : AttemptListener {
  std::vector<protocol::Chunk> deltas;
  int activity = 0;
  std::optional<AttemptOutput> output;
  std::optional<Failure> failure;
  std::vector<std::string> failure_notes;
  int ends = 0;
  std::function<void(const protocol::Chunk&)> delta_hook;
  std::function<void()> end_hook;

  void on_activity() override { ++activity; }
  void on_delta(const protocol::Chunk& delta) override {
    deltas.push_back(delta);
    if (delta_hook) delta_hook(delta);
  }
  void on_complete(AttemptOutput out) override {
    ++ends;
    output = std::move(out);
    if (end_hook) end_hook();
  }
  void on_failed(Failure f, std::vector<std::string> notes) override {
    ++ends;
    failure = std::move(f);
    failure_notes = std::move(notes);
    if (end_hook) end_hook();
  }

  std::string delta_content() const {
    std::string text;
    for (const auto& d : deltas) text += d.content;
    return text;
  }
  std::string delta_arguments() const {
    std::string text;
    for (const auto& d : deltas) {
      for (const auto& call : d.tool_calls) text += call.arguments;
    }
    return text;
  }
  std::string describe() const {
    if (failure) {
      return "failed: " + std::string(protocol::to_string(failure->kind)) + " " +
             std::to_string(failure->status) + " " + failure->message;
    }
    if (output) return "complete: '" + output->content + "' finish=" + output->finish_reason;
    return "no end";
  }
};

// Collects a plain HTTP response through the same engine (for GET /_fake/log).
struct BufferingListener final : TransferListener {
  int status = 0;
  std::string body;
  bool done = false;
  void on_response_start(int s, const HttpHeaders&) override { status = s; }
  void on_body(std::string_view bytes) override { body.append(bytes); }
  void on_complete(const std::optional<TransportError>&) override { done = true; }
};

uint16_t closed_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  close(fd);  // nothing listens there now
  return ntohs(address.sin_port);
}

class LauncherE2e : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (std::string(kFakeBinary).empty() || !std::filesystem::exists(kFakeBinary)) return;
    fake_ = std::make_unique<dispatch::test::FakeProviderProcess>(kFakeBinary);
  }
  static void TearDownTestSuite() { fake_.reset(); }

  void SetUp() override {
    if (!fake_) {
      GTEST_SKIP() << "fake-provider binary not built (" << kFakeBinary
                   << "): build the fake-provider target to run the end-to-end tests";
    }
    const std::string host = fake_->host_url();
    MapEnvironment env{{"FAKE_KEY", "sk-fake-0123456789abcdef"}};
    dead_port_ = closed_port();
    config_ = parse_config(
        "providers:\n"
        "  openai: {type: openai, base_url: '" +
            host +
            "/v1', api_key_env: FAKE_KEY}\n"
            "  compat: {type: openai-compatible, base_url: '" +
            host +
            "/compatible-mode/v1', api_key_env: FAKE_KEY}\n"
            "  claude: {type: anthropic, base_url: '" +
            host +
            "', api_key_env: FAKE_KEY}\n"
            "  ollama: {type: ollama, base_url: '" +
            host +
            "'}\n"
            "  ali: {type: dashscope, base_url: '" +
            host +
            "/api/v1', api_key_env: FAKE_KEY}\n"
            "  nokey: {type: openai, base_url: '" +
            host +
            "/v1', api_key_env: E2E_UNSET_KEY}\n"
            "  dead: {type: openai, base_url: 'http://127.0.0.1:" +
            std::to_string(dead_port_) +
            "/v1', api_key_env: FAKE_KEY}\n"
            "  pair: {type: openai, base_url: '" +
            host +
            "/v1', api_key_env: FAKE_KEY, max_in_flight: 2}\n"
            "  single: {type: anthropic, base_url: '" +
            host + "', api_key_env: FAKE_KEY, max_in_flight: 1}\n",
        "e2e.yaml", env);
    loop_ = std::make_unique<EventLoop>();
    engine_ = std::make_unique<HttpEngine>(*loop_);
    launcher_ = std::make_unique<ProviderAttemptLauncher>(*engine_, *loop_, config_);
  }

  void TearDown() override {
    launcher_.reset();
    engine_.reset();
    loop_.reset();
  }

  // Runs the loop until `done` or the deadline; false on timeout.
  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds limit = 15s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      loop_->run_once(20);
    }
    return true;
  }

  AttemptHandle start(const std::string& provider, const protocol::Request& request,
                      const std::string& model, bool stream, Recorder& recorder,
                      const std::string& traceparent = {}) {
    AttemptSpec spec;
    spec.traceparent = traceparent;
    spec.request = &request;
    spec.target = {provider, model};
    spec.provider = config_.provider(provider);
    spec.stream_upstream = stream;
    spec.connect_timeout_ms = 2000;
    return launcher_->start(spec, recorder);
  }

  std::unique_ptr<Recorder> run(const std::string& provider, const protocol::Request& request,
                                const std::string& model, bool stream) {
    auto recorder = std::make_unique<Recorder>();
    start(provider, request, model, stream, *recorder);
    EXPECT_EQ(recorder->ends, 0) << "events must never arrive from inside start()";
    EXPECT_TRUE(run_until([&] { return recorder->ends > 0; })) << "attempt did not end";
    EXPECT_EQ(recorder->ends, 1);
    EXPECT_EQ(launcher_->active_attempts(), 0u);
    return recorder;
  }

  nlohmann::json fake_control(const std::string& method, const std::string& path) {
    BufferingListener listener;
    HttpRequest request;
    request.method = method;
    request.url = fake_->host_url() + path;
    engine_->start(std::move(request), {}, listener);
    EXPECT_TRUE(run_until([&] { return listener.done; }));
    return nlohmann::json::parse(listener.body, nullptr, false);
  }

  nlohmann::json fake_log(const std::string& model) {
    return fake_control("GET", "/_fake/log?model=" + model);
  }

  static protocol::Request text_request(const std::string& text) {
    protocol::Request request;
    request.messages = {{"user", text, "", {}, {}, "", ""}};
    return request;
  }

  static protocol::Request tool_request() {
    protocol::Request request = text_request("please use the tool");
    request.tools = {
        {"get_weather", "Weather for a city",
         R"({"type":"object","properties":{"city":{"type":"string"}},"required":["city"]})"}};
    return request;
  }

  static inline std::unique_ptr<dispatch::test::FakeProviderProcess> fake_;
  uint16_t dead_port_ = 0;
  WorkerConfig config_;
  std::unique_ptr<EventLoop> loop_;
  std::unique_ptr<HttpEngine> engine_;
  std::unique_ptr<ProviderAttemptLauncher> launcher_;
};

class EveryFormat : public LauncherE2e, public ::testing::WithParamInterface<std::string> {
 protected:
  const std::string& provider() const { return GetParam(); }
  bool reports_model() const { return provider() != "ali"; }  // DashScope native has no model
  bool reports_request_id() const { return provider() != "ollama"; }
};

TEST_P(EveryFormat, TextNonStreamAndStream) {
  for (bool stream : {false, true}) {
    SCOPED_TRACE(stream ? "stream" : "non-stream");
    const std::string model = "m~tokens=5~chunk_delay_ms=5";
    auto r = run(provider(), text_request("hello world"), model, stream);
    ASSERT_TRUE(r->output) << r->describe();
    const AttemptOutput& out = *r->output;
    EXPECT_EQ(out.content, "reply to: hello world lorem");
    EXPECT_EQ(out.finish_reason, "stop");
    EXPECT_EQ(out.usage.prompt_tokens, 2u);
    EXPECT_EQ(out.usage.completion_tokens, 5u);
    EXPECT_EQ(out.usage.total_tokens, 7u);
    EXPECT_TRUE(out.saw_terminator);
    EXPECT_EQ(out.skipped_events, 0u);
    EXPECT_TRUE(out.tool_calls.empty());
    if (reports_model()) {
      EXPECT_EQ(out.model, model);
    }
    if (reports_request_id()) {
      EXPECT_FALSE(out.request_id.empty());
    }
    if (provider() == "ollama") {
      EXPECT_GT(out.created_at, 1'600'000'000);
    }
    EXPECT_EQ(r->delta_content(), out.content);
    EXPECT_GE(r->activity, 1);
    if (stream) {
      EXPECT_GE(r->deltas.size(), 2u) << "streamed content should arrive in pieces";
    } else {
      EXPECT_EQ(r->deltas.size(), 1u);
    }
  }
}

// Every wire format carries the job's trace context as the W3C `traceparent` header.
TEST_P(EveryFormat, TraceparentHeaderReachesTheProvider) {
  const std::string traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-a3ce929d0e0e4736-01";
  const std::string model = "traced-" + provider();
  Recorder recorder;
  start(provider(), text_request("hi"), model, false, recorder, traceparent);
  ASSERT_TRUE(run_until([&] { return recorder.ends > 0; }));
  ASSERT_TRUE(recorder.output) << recorder.describe();
  const nlohmann::json log = fake_log(model);
  ASSERT_EQ(log["attempts"].size(), 1u) << log.dump();
  EXPECT_EQ(log["attempts"][0]["traceparent"], traceparent);
}

TEST_P(EveryFormat, ToolCallsAndResults) {
  for (bool stream : {false, true}) {
    SCOPED_TRACE(stream ? "stream" : "non-stream");
    protocol::Request request = tool_request();
    auto r = run(provider(), request, "m", stream);
    ASSERT_TRUE(r->output) << r->describe();
    const AttemptOutput& out = *r->output;
    EXPECT_EQ(out.finish_reason, "tool_calls");
    ASSERT_EQ(out.tool_calls.size(), 1u);
    EXPECT_FALSE(out.tool_calls[0].id.empty());
    EXPECT_EQ(out.tool_calls[0].name, "get_weather");
    EXPECT_EQ(nlohmann::json::parse(out.tool_calls[0].arguments),
              nlohmann::json::parse(R"({"city":"fake-city"})"));
    EXPECT_EQ(nlohmann::json::parse(r->delta_arguments()),
              nlohmann::json::parse(out.tool_calls[0].arguments));

    // The next turn sends the call and its result back in this format.
    request.messages.push_back({"assistant", "", "", {}, out.tool_calls, "", ""});
    request.messages.push_back({"tool", "22 degrees", "", {}, {}, out.tool_calls[0].id, ""});
    auto next = run(provider(), request, "m~tokens=4", stream);
    ASSERT_TRUE(next->output) << next->describe();
    EXPECT_EQ(next->output->content, "tool result: 22 degrees");
    EXPECT_EQ(next->output->finish_reason, "stop");
  }
}

TEST_P(EveryFormat, Images) {
  protocol::Request request = text_request("describe this");
  request.messages[0].images = {std::string(kPngBase64), std::string(kJpegBase64)};
  for (bool stream : {false, true}) {
    auto r = run(provider(), request, "m~tokens=6", stream);
    if (provider() == "ali") {
      // The native text-generation endpoint takes no images: refused before any call.
      ASSERT_TRUE(r->failure) << r->describe();
      EXPECT_EQ(r->failure->kind, ErrorKind::invalid_request);
      continue;
    }
    ASSERT_TRUE(r->output) << r->describe();
    EXPECT_EQ(r->output->content, "[2 images] reply to: describe this");
  }
}

TEST_P(EveryFormat, StopSequence) {
  protocol::Request request = text_request("hello world");
  request.stop = {"world"};
  for (bool stream : {false, true}) {
    auto r = run(provider(), request, "m~tokens=5", stream);
    ASSERT_TRUE(r->output) << r->describe();
    EXPECT_EQ(r->output->content, "reply to: hello ");
    EXPECT_EQ(r->output->finish_reason, "stop");
    EXPECT_EQ(r->output->raw_finish_reason, provider() == "claude" ? "stop_sequence" : "stop");
  }
}

TEST_P(EveryFormat, MaxTokensFinishesWithLength) {
  protocol::Request request = text_request("hello world");
  request.max_tokens = 3;
  for (bool stream : {false, true}) {
    auto r = run(provider(), request, "m~tokens=10", stream);
    ASSERT_TRUE(r->output) << r->describe();
    EXPECT_EQ(r->output->content, "reply to: hello");
    EXPECT_EQ(r->output->finish_reason, "length");
    EXPECT_EQ(r->output->raw_finish_reason, provider() == "claude" ? "max_tokens" : "length");
    EXPECT_EQ(r->output->usage.completion_tokens, 3u);
  }
}

TEST_P(EveryFormat, Thinking) {
  protocol::Request request = text_request("hello");
  request.think = true;
  auto r = run(provider(), request, "m~tokens=3", true);
  ASSERT_TRUE(r->output) << r->describe();
  EXPECT_EQ(r->output->content, "reply to: hello");
  if (provider() == "openai") {
    EXPECT_EQ(r->output->thinking, "");
    EXPECT_THAT(r->output->notes, ::testing::Contains(::testing::HasSubstr("think not sent")));
  } else {
    EXPECT_EQ(r->output->thinking, kThinkingText);
  }
}

TEST_P(EveryFormat, TemperatureNote) {
  protocol::Request request = text_request("hello");
  request.temperature = 2.0;
  auto r = run(provider(), request, "m~tokens=2", true);
  ASSERT_TRUE(r->output) << r->describe();
  if (provider() == "claude") {
    EXPECT_EQ(r->output->notes,
              std::vector<std::string>{"temperature 2.0 clamped to 1.0 (anthropic range 0–1)"});
  } else if (provider() == "ali") {
    EXPECT_EQ(r->output->notes,
              std::vector<std::string>{"temperature 2.0 clamped to 1.99 (dashscope range [0, 2))"});
  } else if (provider() == "compat") {
    EXPECT_EQ(r->output->notes,
              std::vector<std::string>{
                  "temperature 2.0 clamped to 1.99 (openai-compatible range [0, 2))"});
  } else {
    EXPECT_TRUE(r->output->notes.empty());
  }
}

struct ErrorCase {
  std::string model;
  ErrorKind kind;
  uint16_t status;
};

TEST_P(EveryFormat, ErrorStatusesAndBodies) {
  const std::vector<ErrorCase> cases = {
      {"m~status=400", ErrorKind::invalid_request, 400},
      {"m~status=401", ErrorKind::authentication, 401},
      {"m~status=403", ErrorKind::authentication, 403},
      {"m~status=404", ErrorKind::model_not_available, 404},
      {"no-such-model", ErrorKind::model_not_available, 404},
      {"m~status=408", ErrorKind::timeout, 408},
      {"m~status=409", ErrorKind::server_error, 409},
      {"m~status=413", ErrorKind::invalid_request, 413},
      {"m~status=422", ErrorKind::invalid_request, 422},
      {"m~status=429", ErrorKind::rate_limited, 429},
      {"m~status=500", ErrorKind::server_error, 500},
      {"m~status=502", ErrorKind::server_error, 502},
      {"m~status=503", ErrorKind::overloaded, 503},
      {"m~status=529", ErrorKind::overloaded, 529},
      {"m~context_length", ErrorKind::context_length_exceeded, 400},
      {"m~content_filter", ErrorKind::content_filtered, 400},
  };
  for (bool stream : {false, true}) {
    for (const ErrorCase& c : cases) {
      SCOPED_TRACE(c.model + (stream ? " stream" : " non-stream"));
      auto r = run(provider(), text_request("hi"), c.model, stream);
      ASSERT_TRUE(r->failure) << r->describe();
      EXPECT_EQ(r->failure->kind, c.kind) << r->describe();
      EXPECT_EQ(r->failure->status, c.status);
      EXPECT_FALSE(r->failure->message.empty());
      EXPECT_TRUE(r->deltas.empty());
    }
  }
}

TEST_P(EveryFormat, RetryAfterForms) {
  auto r = run(provider(), text_request("hi"), "m~status=429~retry_after=2", true);
  ASSERT_TRUE(r->failure);
  EXPECT_EQ(r->failure->retry_after_ms, 2000u);
  r = run(provider(), text_request("hi"), "m~status=429~retry_after_ms=1500", false);
  ASSERT_TRUE(r->failure);
  EXPECT_EQ(r->failure->retry_after_ms, 1500u);
  r = run(provider(), text_request("hi"), "m~status=429~retry_after_date", false);
  ASSERT_TRUE(r->failure);
  ASSERT_TRUE(r->failure->retry_after_ms);
  EXPECT_LE(*r->failure->retry_after_ms, 3000u);  // an HTTP date ~2 s ahead
}

TEST_P(EveryFormat, ErrorEventInsideA200Stream) {
  auto r = run(provider(), text_request("hi"), "m~tokens=6~error_mid_stream=2", true);
  ASSERT_TRUE(r->failure) << r->describe();
  EXPECT_EQ(r->failure->kind,
            provider() == "claude" ? ErrorKind::overloaded : ErrorKind::server_error)
      << r->describe();
}

TEST_P(EveryFormat, MalformedEventIsSkipped) {
  auto r = run(provider(), text_request("hello world"), "m~tokens=5~malformed_at=2", true);
  ASSERT_TRUE(r->output) << r->describe();
  EXPECT_EQ(r->output->skipped_events, 1u);
  EXPECT_TRUE(r->output->saw_terminator);
}

TEST_P(EveryFormat, MissingTerminatorIsReportedNotHidden) {
  auto r = run(provider(), text_request("hello world"), "m~tokens=5~no_terminator", true);
  ASSERT_TRUE(r->output) << r->describe();
  EXPECT_FALSE(r->output->saw_terminator);
}

TEST_P(EveryFormat, CutStreamIsANetworkFailure) {
  auto r = run(provider(), text_request("hello world"), "m~tokens=8~cut_after=2", true);
  ASSERT_TRUE(r->failure) << r->describe();
  EXPECT_EQ(r->failure->kind, ErrorKind::network) << r->describe();
  EXPECT_EQ(r->failure->status, 0);
}

std::string format_name(const ::testing::TestParamInfo<std::string>& param) {
  return param.param;
}

INSTANTIATE_TEST_SUITE_P(Formats, EveryFormat,
                         ::testing::Values("openai", "compat", "claude", "ollama", "ali"),
                         format_name);

TEST_F(LauncherE2e, MissingKeyFailsWithoutCallingTheProvider) {
  auto r = run("nokey", text_request("hi"), "nokey-model", true);
  ASSERT_TRUE(r->failure);
  EXPECT_EQ(r->failure->kind, ErrorKind::authentication);
  EXPECT_EQ(r->failure->message, "no API key: set E2E_UNSET_KEY");
  const nlohmann::json log = fake_log("nokey-model");
  ASSERT_TRUE(log.contains("attempts")) << log.dump();
  EXPECT_TRUE(log["attempts"].empty());
}

TEST_F(LauncherE2e, KeyIsSentAndNeverEchoed) {
  auto r = run("openai", text_request("hi"), "m~status=401", false);
  ASSERT_TRUE(r->failure);
  EXPECT_EQ(r->failure->message.find("sk-fake-0123456789abcdef"), std::string::npos);
}

TEST_F(LauncherE2e, UnknownProviderIsReportedAsynchronously) {
  auto r = run("nobody", text_request("hi"), "m", true);
  ASSERT_TRUE(r->failure);
  EXPECT_EQ(r->failure->kind, ErrorKind::unsupported_provider);
  EXPECT_EQ(r->failure->message, "provider 'nobody' is not configured on this worker");
}

TEST_F(LauncherE2e, ConnectionRefusedIsNetwork) {
  auto r = run("dead", text_request("hi"), "m", true);
  ASSERT_TRUE(r->failure) << r->describe();
  EXPECT_EQ(r->failure->kind, ErrorKind::network);
  EXPECT_EQ(r->failure->status, 0);
  EXPECT_EQ(r->failure->code, "curl_7");
  EXPECT_EQ(r->failure->message,
            "cannot connect to dead at http://127.0.0.1:" + std::to_string(dead_port_) +
                "/v1: connection refused (is the server running?)");
}

TEST_F(LauncherE2e, AbortStopsEveryEvent) {
  Recorder aborted;
  const protocol::Request request = text_request("hello");
  const AttemptHandle handle =
      start("openai", request, "m~tokens=40~chunk_delay_ms=20", true, aborted);
  ASSERT_TRUE(run_until([&] { return !aborted.deltas.empty(); }));
  const std::size_t seen = aborted.deltas.size();
  launcher_->abort(handle);
  launcher_->abort(handle);  // unknown by now: ignored
  EXPECT_EQ(launcher_->active_attempts(), 0u);
  // Another attempt runs to completion meanwhile; the aborted one stays silent.
  auto other = run("openai", request, "m~tokens=3~chunk_delay_ms=30", true);
  ASSERT_TRUE(other->output);
  EXPECT_EQ(aborted.ends, 0);
  EXPECT_EQ(aborted.deltas.size(), seen);
}

TEST_F(LauncherE2e, AbortBeforeAnAsyncFailureFires) {
  Recorder recorder;
  const protocol::Request request = text_request("hi");
  launcher_->abort(start("nobody", request, "m", true, recorder));
  auto other = run("openai", request, "m~tokens=2", true);
  ASSERT_TRUE(other->output);
  EXPECT_EQ(recorder.ends, 0);
}

TEST_F(LauncherE2e, AbortFromInsideADelta) {
  Recorder recorder;
  const protocol::Request request = text_request("hello");
  AttemptHandle handle = 0;
  recorder.delta_hook = [&](const protocol::Chunk&) { launcher_->abort(handle); };
  handle = start("claude", request, "m~tokens=30~chunk_delay_ms=10", true, recorder);
  ASSERT_TRUE(run_until([&] { return !recorder.deltas.empty(); }));
  EXPECT_EQ(launcher_->active_attempts(), 0u);
  auto other = run("claude", request, "m~tokens=3~chunk_delay_ms=30", true);
  ASSERT_TRUE(other->output);
  EXPECT_EQ(recorder.deltas.size(), 1u);
  EXPECT_EQ(recorder.ends, 0);
}

TEST_F(LauncherE2e, StartFromInsideCompletion) {
  // A policy retries or fails over from inside on_failed / on_complete.
  Recorder first;
  Recorder second;
  const protocol::Request request = text_request("hello");
  first.end_hook = [&] { start("ollama", request, "m~tokens=3", true, second); };
  start("ollama", request, "m~status=503", true, first);
  ASSERT_TRUE(run_until([&] { return second.ends > 0; }));
  ASSERT_TRUE(first.failure);
  ASSERT_TRUE(second.output) << second.describe();
  EXPECT_EQ(second.output->content, "reply to: hello");
}

TEST_F(LauncherE2e, ManyConcurrentStreams) {
  constexpr int kStreams = 200;
  std::vector<std::unique_ptr<Recorder>> recorders;
  const protocol::Request request = text_request("hello world");
  const std::vector<std::string> providers = {"openai", "compat", "claude", "ollama", "ali"};
  for (int i = 0; i < kStreams; ++i) {
    recorders.push_back(std::make_unique<Recorder>());
    start(providers[i % providers.size()], request, "m~tokens=10~chunk_delay_ms=5", true,
          *recorders.back());
  }
  ASSERT_TRUE(run_until(
      [&] {
        return std::all_of(recorders.begin(), recorders.end(),
                           [](const auto& r) { return r->ends > 0; });
      },
      30s));
  for (const auto& r : recorders) {
    ASSERT_TRUE(r->output) << r->describe();
    EXPECT_EQ(r->output->usage.completion_tokens, 10u);
    EXPECT_TRUE(r->output->saw_terminator);
  }
  EXPECT_EQ(launcher_->active_attempts(), 0u);
}

// ---- providers.NAME.max_in_flight ------------------------------------------------------------

bool all_ended(const std::vector<std::unique_ptr<Recorder>>& recorders) {
  return std::all_of(recorders.begin(), recorders.end(), [](const auto& r) { return r->ends > 0; });
}

TEST_F(LauncherE2e, MaxInFlightBoundsTransfersAndQueuesTheRest) {
  // Streams aborted by earlier tests end on the server at its next write; then the peak starts
  // again from zero.
  const auto settle = std::chrono::steady_clock::now() + 5s;
  while (fake_control("GET", "/_fake/stats").value("active_streams", -1) != 0) {
    ASSERT_LT(std::chrono::steady_clock::now(), settle)
        << "the fake provider's streams never ended";
    loop_->run_once(10);
  }
  fake_control("POST", "/_fake/reset");
  const nlohmann::json before = fake_control("GET", "/_fake/stats");
  ASSERT_TRUE(before.contains("attempts_total")) << before.dump();
  std::vector<std::unique_ptr<Recorder>> recorders;
  const protocol::Request request = text_request("hello");
  for (int i = 0; i < 6; ++i) {
    recorders.push_back(std::make_unique<Recorder>());
    start("pair", request, "m~tokens=4~chunk_delay_ms=40", true, *recorders.back());
  }
  EXPECT_EQ(launcher_->running_transfers("pair"), 2u);
  EXPECT_EQ(launcher_->queued_attempts("pair"), 4u);
  EXPECT_EQ(launcher_->active_attempts(), 6u);
  std::size_t most_running = 0;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (!all_ended(recorders) && std::chrono::steady_clock::now() < deadline) {
    loop_->run_once(5);
    most_running = std::max(most_running, launcher_->running_transfers("pair"));
  }
  ASSERT_TRUE(all_ended(recorders));
  for (const auto& r : recorders) {
    ASSERT_TRUE(r->output) << r->describe();
    EXPECT_EQ(r->output->content, "reply to: hello lorem");
    EXPECT_EQ(r->ends, 1);
  }
  EXPECT_EQ(most_running, 2u);
  EXPECT_EQ(launcher_->running_transfers("pair"), 0u);
  EXPECT_EQ(launcher_->queued_attempts("pair"), 0u);
  EXPECT_EQ(launcher_->active_attempts(), 0u);
  const nlohmann::json stats = fake_control("GET", "/_fake/stats");
  ASSERT_TRUE(stats.contains("peak_active_streams")) << stats.dump();
  EXPECT_EQ(stats["peak_active_streams"], 2) << stats.dump();
  EXPECT_EQ(stats["attempts_total"].get<int64_t>() - before["attempts_total"].get<int64_t>(), 6)
      << stats.dump();
}

TEST_F(LauncherE2e, MaxInFlightIsPerProvider) {
  // `single` is full; another provider on the same server is not held up by it.
  Recorder slow;
  Recorder other;
  const protocol::Request request = text_request("hi");
  start("single", request, "m~tokens=3~chunk_delay_ms=50", true, slow);
  start("claude", request, "m~tokens=2", true, other);
  EXPECT_EQ(launcher_->queued_attempts("claude"), 0u);
  ASSERT_TRUE(run_until([&] { return other.ends > 0; }));
  EXPECT_TRUE(other.output) << other.describe();
  ASSERT_TRUE(run_until([&] { return slow.ends > 0; }));
  EXPECT_TRUE(slow.output) << slow.describe();
}

TEST_F(LauncherE2e, QueuedAttemptsStartInArrivalOrder) {
  std::vector<std::unique_ptr<Recorder>> recorders;
  std::vector<int> finished;
  const protocol::Request request = text_request("hi");
  for (int i = 0; i < 4; ++i) {
    recorders.push_back(std::make_unique<Recorder>());
    recorders.back()->end_hook = [&finished, i] { finished.push_back(i); };
    start("single", request, "m~tokens=2~chunk_delay_ms=10", true, *recorders.back());
  }
  EXPECT_EQ(launcher_->queued_attempts("single"), 3u);
  ASSERT_TRUE(run_until([&] { return all_ended(recorders); }));
  EXPECT_EQ(finished, (std::vector<int>{0, 1, 2, 3}));
  for (const auto& r : recorders) EXPECT_TRUE(r->output) << r->describe();
}

TEST_F(LauncherE2e, AbortTakesAQueuedAttemptOutAtOnce) {
  Recorder first;
  Recorder second;
  Recorder queued;
  Recorder after;
  const protocol::Request request = text_request("hi");
  start("pair", request, "m~tokens=3~chunk_delay_ms=40", true, first);
  start("pair", request, "m~tokens=3~chunk_delay_ms=40", true, second);
  const AttemptHandle handle = start("pair", request, "never-sent~tokens=2", true, queued);
  start("pair", request, "m~tokens=2", true, after);
  ASSERT_EQ(launcher_->queued_attempts("pair"), 2u);
  launcher_->abort(handle);
  EXPECT_EQ(launcher_->queued_attempts("pair"), 1u);
  EXPECT_EQ(launcher_->active_attempts(), 3u);
  launcher_->abort(handle);  // unknown by now: ignored
  ASSERT_TRUE(run_until([&] { return first.ends + second.ends + after.ends == 3; }));
  EXPECT_TRUE(first.output && second.output && after.output) << after.describe();
  EXPECT_EQ(queued.ends, 0);
  EXPECT_EQ(queued.activity, 0);
  EXPECT_TRUE(queued.deltas.empty());
  const nlohmann::json log = fake_log("never-sent~tokens=2");
  ASSERT_TRUE(log.contains("attempts")) << log.dump();
  EXPECT_TRUE(log["attempts"].empty()) << "an aborted queued attempt must never reach the provider";
  EXPECT_EQ(launcher_->active_attempts(), 0u);
  EXPECT_EQ(launcher_->running_transfers("pair"), 0u);
}

TEST_F(LauncherE2e, EndOfARunningAttemptStartsTheNextAtOnce) {
  // Abort, failure and re-entrant starts all free the slot.
  Recorder running;
  Recorder waiting;
  const protocol::Request request = text_request("hi");
  const AttemptHandle handle = start("single", request, "m~hang", true, running);
  start("single", request, "m~status=503", true, waiting);
  ASSERT_EQ(launcher_->queued_attempts("single"), 1u);
  launcher_->abort(handle);
  EXPECT_EQ(launcher_->queued_attempts("single"), 0u);
  EXPECT_EQ(launcher_->running_transfers("single"), 1u);

  // The failure frees the slot before its event, so a retry from inside it queues behind
  // nobody and runs.
  Recorder retry;
  waiting.end_hook = [&] { start("single", request, "m~tokens=2", true, retry); };
  ASSERT_TRUE(run_until([&] { return retry.ends > 0; }));
  ASSERT_TRUE(waiting.failure);
  EXPECT_EQ(waiting.failure->kind, ErrorKind::overloaded);
  EXPECT_TRUE(retry.output) << retry.describe();
  EXPECT_EQ(running.ends, 0);
  EXPECT_EQ(launcher_->running_transfers("single"), 0u);
}

TEST_F(LauncherE2e, QueuedAttemptThatCannotBeBuiltFailsWithoutWaiting) {
  Recorder running;
  Recorder invalid;
  const protocol::Request request = text_request("hi");
  start("single", request, "m~tokens=3~chunk_delay_ms=200", true, running);
  start("single", request, "", true, invalid);  // empty model: refused before any queueing
  EXPECT_EQ(launcher_->queued_attempts("single"), 0u);
  ASSERT_TRUE(run_until([&] { return invalid.ends > 0; }));
  ASSERT_TRUE(invalid.failure);
  EXPECT_EQ(invalid.failure->kind, ErrorKind::invalid_request);
  EXPECT_EQ(running.ends, 0) << "the running one is still streaming";
  ASSERT_TRUE(run_until([&] { return running.ends > 0; }));
}

TEST_F(LauncherE2e, DestructorDropsQueuedAttemptsWithoutEvents) {
  std::vector<std::unique_ptr<Recorder>> recorders;
  const protocol::Request request = text_request("hi");
  for (int i = 0; i < 5; ++i) {
    recorders.push_back(std::make_unique<Recorder>());
    start("pair", request, "m~tokens=20~chunk_delay_ms=30", true, *recorders.back());
  }
  ASSERT_EQ(launcher_->queued_attempts("pair"), 3u);
  ASSERT_TRUE(run_until([&] { return !recorders[0]->deltas.empty(); }));
  launcher_.reset();
  EXPECT_EQ(engine_->active_transfers(), 0u);
  // Nothing is left to fire: spin the loop a while and check every recorder stayed silent.
  for (int i = 0; i < 10; ++i) loop_->run_once(10);
  for (std::size_t i = 0; i < recorders.size(); ++i) {
    EXPECT_EQ(recorders[i]->ends, 0) << i;
    if (i >= 2) {
      EXPECT_EQ(recorders[i]->activity, 0) << i;
    }
  }
}

}  // namespace
}  // namespace dispatch::worker::test
