// The resilience policy through the whole system: client library -> dispatch-broker ->
// dispatch-worker -> fake-provider, one scripted fault of the fake provider per test.
//
// Every test asserts three things: what the client sees (the answer, reset + answer for a
// stream, or the typed error with its kind / status / code), what the provider saw (the fake's
// attempt log, per model) and the Response/Error attempt records. Timing bounds come from the
// fake provider's own timestamps (t_ms, unix_ms, client_closed_ms ...) with generous margins:
// the machine is shared, so lower bounds are tight (they prove a wait happened) and upper
// bounds are loose (they prove nothing waited for a timeout it should not have).
//
// Each test starts its own fake provider, broker and worker, so that breaker state, the fake's
// fail_first counters and its flap clock never leak from one test into another.

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "dispatch/client.hpp"
#include "dispatch/test/stack.hpp"

namespace dispatch {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

constexpr const char* kPrompt = "tell me a story";
// The fake's default completion length when a model has no `tokens=` directive.
constexpr std::size_t kDefaultTokens = 8;

// ---- what the fake provider answers --------------------------------------------------------

// The fake answers "reply to: <last user text>" cut or padded with filler words to `tokens`
// words, streamed one word per content chunk ("word " — the last without the space).
std::vector<std::string> answer_chunks(std::size_t tokens, const std::string& prompt = kPrompt) {
  static const std::vector<std::string> kFiller{
      "lorem",  "ipsum", "dolor",  "sit",     "amet",   "consectetur", "adipiscing",
      "elit",   "sed",   "do",     "eiusmod", "tempor", "incididunt",  "ut",
      "labore", "et",    "dolore", "magna",   "aliqua"};
  std::vector<std::string> words{"reply", "to:"};
  std::istringstream in(prompt);
  for (std::string word; in >> word;) words.push_back(word);
  if (words.size() > tokens) words.resize(tokens);
  for (std::size_t i = 0; words.size() < tokens; ++i) words.push_back(kFiller[i % kFiller.size()]);
  std::vector<std::string> chunks;
  for (std::size_t i = 0; i < words.size(); ++i) {
    chunks.push_back(i + 1 < words.size() ? words[i] + " " : words[i]);
  }
  return chunks;
}

std::string join(const std::vector<std::string>& chunks) {
  std::string text;
  for (const auto& chunk : chunks) text += chunk;
  return text;
}

std::string answer(std::size_t tokens = kDefaultTokens) {
  return join(answer_chunks(tokens));
}

// ---- the worker's configuration ------------------------------------------------------------

struct WorkerSettings {
  uint32_t timeout_ms = 8000;
  uint32_t retry_count = 2;
  uint32_t first_token_timeout_ms = 800;
  uint32_t idle_timeout_ms = 800;
  uint32_t backoff_base_ms = 20;
  uint32_t backoff_max_ms = 50;
  uint32_t retry_after_cap_ms = 5000;
  // High by default so that retry counts are exact; the flapping test lowers it.
  uint32_t breaker_failures = 50;
  uint32_t breaker_cooldown_ms = 1000;
  bool failover_on_content_filter = false;
  // Extra `key: value` pairs inside a built-in provider's map, e.g. {"openai", "context_window:
  // 8000"}.
  std::map<std::string, std::string> provider_extras;
  // Whole extra provider entries (two-space indented lines under `providers:`).
  std::string extra_providers;
};

std::string worker_yaml(test::FakeProviderProcess& fake, const WorkerSettings& s) {
  const auto extras = [&](const std::string& name) {
    auto it = s.provider_extras.find(name);
    return it == s.provider_extras.end() ? std::string() : ", " + it->second;
  };
  std::ostringstream out;
  out << "defaults:\n"
      << "  timeout_ms: " << s.timeout_ms << "\n"
      << "  retry_count: " << s.retry_count << "\n"
      << "  connect_timeout_ms: 1000\n"
      << "  first_token_timeout_ms: " << s.first_token_timeout_ms << "\n"
      << "  idle_timeout_ms: " << s.idle_timeout_ms << "\n"
      << "  backoff: {base_ms: " << s.backoff_base_ms << ", max_ms: " << s.backoff_max_ms << "}\n"
      << "  retry_after_cap_ms: " << s.retry_after_cap_ms
      << "\n"
      // The rate rule is kept out of the way (it needs 50 samples, all failures): the tests
      // count attempts exactly, and the flapping test checks the consecutive-failures rule.
      << "  breaker: {failures: " << s.breaker_failures
      << ", failure_rate: 1.0, window: 100, cooldown_ms: " << s.breaker_cooldown_ms << "}\n"
      << "  failover_on_content_filter: " << (s.failover_on_content_filter ? "true" : "false")
      << "\n"
      << "  enable_fallback: false\n"
      << "providers:\n"
      << "  ollama: {type: ollama, base_url: \"" << fake.host_url() << "\"" << extras("ollama")
      << "}\n"
      << "  openai: {type: openai, base_url: \"" << fake.openai_base_url()
      << "\", api_key_env: FAKE_KEY" << extras("openai") << "}\n"
      << "  claude: {type: anthropic, base_url: \"" << fake.host_url()
      << "\", api_key_env: FAKE_KEY" << extras("claude") << "}\n"
      << "  ali: {type: dashscope, base_url: \"" << fake.dashscope_base_url()
      << "\", api_key_env: FAKE_KEY" << extras("ali") << "}\n"
      << "  qwen: {type: openai-compatible, base_url: \"" << fake.dashscope_compatible_base_url()
      << "\", api_key_env: FAKE_KEY" << extras("qwen") << "}\n"
      << s.extra_providers;
  return out.str();
}

// ---- reading results -----------------------------------------------------------------------

std::string describe(const std::vector<Attempt>& attempts) {
  std::ostringstream out;
  for (const auto& a : attempts) {
    out << "\n  " << a.provider << "/" << a.model << ": " << a.outcome << " status=" << a.status
        << " code='" << a.code << "' start=" << a.start_offset_ms << "ms dur=" << a.duration_ms
        << "ms note='" << a.note << "' msg='" << a.message << "'";
  }
  return out.str();
}

double num(const json& record, const char* field) {
  const auto it = record.find(field);
  return it != record.end() && it->is_number() ? it->get<double>() : -1.0;
}

bool has(const json& record, const char* field) {
  const auto it = record.find(field);
  return it != record.end() && !it->is_null();
}

// The streamed events a dispatch_stream call delivered.
struct StreamLog {
  std::vector<StreamEvent> events;

  std::size_t resets() const {
    return static_cast<std::size_t>(std::count_if(events.begin(), events.end(), [](const auto& e) {
      return e.type == StreamEvent::Type::reset;
    }));
  }
  // Chunk contents before the first reset (or all of them when there is none).
  std::vector<std::string> chunks_before_reset() const {
    std::vector<std::string> out;
    for (const auto& e : events) {
      if (e.type == StreamEvent::Type::reset) break;
      if (e.type == StreamEvent::Type::chunk) out.push_back(e.content);
    }
    return out;
  }
  std::vector<std::string> chunks_after_last_reset() const {
    std::vector<std::string> out;
    for (const auto& e : events) {
      if (e.type == StreamEvent::Type::reset) out.clear();
      if (e.type == StreamEvent::Type::chunk) out.push_back(e.content);
    }
    return out;
  }
  const StreamEvent* first_reset() const {
    for (const auto& e : events) {
      if (e.type == StreamEvent::Type::reset) return &e;
    }
    return nullptr;
  }
};

int64_t unix_now_ms() {
  return std::chrono::duration_cast<milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// ---- the fixture ---------------------------------------------------------------------------

class ResilienceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto binaries = test::StackBinaries::from_build();
    const std::string missing = binaries.missing();
    ASSERT_TRUE(missing.empty()) << "binaries not built: " << missing;
    stack_ = std::make_unique<test::Stack>(binaries);
    stack_->start_fake_provider();
    stack_->start_broker();
  }

  void TearDown() override {
    if (HasFailure() && stack_ && !stack_->workers().empty()) {
      std::string log = stack_->worker_log(0);
      constexpr std::size_t kTail = 12000;
      if (log.size() > kTail) log = "..." + log.substr(log.size() - kTail);
      std::cerr << "---- worker log (tail) ----\n" << log << "\n---- fake provider log ----\n";
      try {
        std::cerr << stack_->fake_log().dump(1) << "\n";
      } catch (const std::exception& e) {
        std::cerr << "(unavailable: " << e.what() << ")\n";
      }
    }
    client_.reset();  // before the broker goes away, so that it does not wait for it
    stack_.reset();
  }

  void start_worker(const WorkerSettings& settings = {}) {
    stack_->start_workers(1, worker_yaml(stack_->fake(), settings), {"--log-level", "debug"});
    stack_->wait_for_workers(1);
    ClientOptions options;
    options.broker_endpoint = stack_->frontend();
    client_ = std::make_unique<Client>(options);
  }

  Client& client() { return *client_; }

  static DispatchRequest request(const std::string& provider, const std::string& model) {
    return DispatchRequest(provider, model, {Message::user(kPrompt)});
  }

  // The provider's attempt log for `model` once `count` attempts are there and all have ended
  // (an attempt's record is final a moment after the worker saw its end). Returns what there
  // is when the deadline passes, so that the count assertion reports the difference.
  json settled_log(const std::string& model, std::size_t count, milliseconds timeout = 5000ms) {
    const auto deadline = SteadyClock::now() + timeout;
    json log;
    for (int polls = 0; polls < 10000; ++polls) {
      log = stack_->fake_log(model);
      const bool settled = std::all_of(log.begin(), log.end(), [](const json& r) {
        return has(r, "end_ms") && r.value("outcome", "") != "pending";
      });
      if ((log.size() >= count && settled) || SteadyClock::now() > deadline) return log;
      std::this_thread::sleep_for(20ms);
    }
    return log;
  }

  // Attempts of `model` as the provider saw them, asserting their number.
  json expect_provider_attempts(const std::string& model, std::size_t count) {
    json log = settled_log(model, count);
    EXPECT_EQ(log.size(), count) << "provider attempts for " << model << ": " << log.dump(1);
    return log;
  }

  // The job's typed error of class E; fails the test (and returns nullopt) on an answer or
  // another error class.
  template <typename E>
  std::optional<E> expect_error(const DispatchRequest& req) {
    try {
      DispatchResponse response = client().dispatch(req);
      ADD_FAILURE() << "expected an error, got an answer from " << response.provider << "/"
                    << response.model << ": '" << response.content << "'"
                    << describe(response.attempts);
    } catch (const E& error) {
      return error;
    } catch (const DispatchError& error) {
      ADD_FAILURE() << "wrong error class: kind " << protocol::to_string(error.kind()) << " status "
                    << error.status() << " code '" << error.code() << "': " << error.message()
                    << describe(error.attempts());
    }
    return std::nullopt;
  }

  DispatchResponse stream(const DispatchRequest& req, StreamLog& log) {
    return client().dispatch_stream(
        req, [&log](const StreamEvent& event) { log.events.push_back(event); });
  }

  std::unique_ptr<test::Stack> stack_;
  std::unique_ptr<Client> client_;
};

// Checks one attempt record.
void expect_attempt(const Attempt& attempt, const std::string& provider, const std::string& model,
                    const std::string& outcome, uint16_t status = 0) {
  EXPECT_EQ(attempt.provider, provider);
  EXPECT_EQ(attempt.model, model);
  EXPECT_EQ(attempt.outcome, outcome) << "attempt on " << provider << "/" << model;
  if (status != 0) {
    EXPECT_EQ(attempt.status, status) << "attempt on " << provider << "/" << model;
  }
}

// ============================================================================================
// Timing faults that must NOT fail a job
// ============================================================================================

TEST_F(ResilienceTest, FixedLatencyAnswersAndShowsInLogAndDuration) {
  start_worker();
  const std::string model = "gpt-latency~latency_ms=400";
  DispatchResponse response = client().dispatch(request("openai", model).with_no_fallback());

  EXPECT_EQ(response.content, answer());
  EXPECT_EQ(response.provider, "openai");
  EXPECT_EQ(response.model, model);
  ASSERT_EQ(response.attempts.size(), 1u) << describe(response.attempts);
  expect_attempt(response.attempts[0], "openai", model, "ok");
  EXPECT_GE(response.total_duration(), 390ms);
  EXPECT_LT(response.total_duration(), 3000ms);

  const json log = expect_provider_attempts(model, 1);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0]["outcome"], "ok");
  EXPECT_EQ(log[0]["status"], 200);
  EXPECT_GE(num(log[0], "headers_ms") - num(log[0], "t_ms"), 390.0);
  EXPECT_GE(response.attempts[0].duration_ms, 390u);
}

TEST_F(ResilienceTest, SlowFirstTokenBeyondTimeoutFailsOverAfterOneAttempt) {
  WorkerSettings settings;
  settings.first_token_timeout_ms = 500;
  start_worker(settings);
  constexpr double kFirstTokenMs = 1500;
  const std::string slow = "gpt-slow~first_token_ms=1500";
  const std::string fallback = "claude-fb~tokens=5";
  DispatchResponse response =
      client().dispatch(request("openai", slow).with_fallbacks({Target{"claude", fallback}}));
  // Read before the slow provider's first token is due: the answer did not wait for it.
  const json primary_now = stack_->fake_log(slow);

  EXPECT_EQ(response.provider, "claude");
  EXPECT_EQ(response.model, fallback);
  EXPECT_EQ(response.content, answer(5));
  ASSERT_EQ(response.attempts.size(), 2u) << describe(response.attempts);
  expect_attempt(response.attempts[0], "openai", slow, "timeout");
  EXPECT_EQ(response.attempts[0].code, "first_token_timeout");
  expect_attempt(response.attempts[1], "claude", fallback, "ok");
  EXPECT_LT(response.total_duration(), milliseconds(static_cast<int>(kFirstTokenMs)));

  ASSERT_EQ(primary_now.size(), 1u) << primary_now.dump(1);
  EXPECT_FALSE(has(primary_now[0], "first_chunk_ms")) << "the answer waited for the slow token";
  // A silent provider is failed over, not retried: one call although retry_count is 2.
  const json secondary = expect_provider_attempts(fallback, 1);
  const json primary = expect_provider_attempts(slow, 1);
  ASSERT_EQ(primary.size(), 1u);
  ASSERT_EQ(secondary.size(), 1u);
  const double failover_ms = num(secondary[0], "t_ms") - num(primary[0], "t_ms");
  EXPECT_GE(failover_ms, 480.0) << "failed over before the first-token timeout";
  EXPECT_LT(failover_ms, 1300.0) << "failed over long after the first-token timeout";
  // The fake only notices a closed connection when it writes (at its first token): the
  // write then fails because the worker had aborted the transfer, instead of completing.
  EXPECT_EQ(primary[0]["outcome"], "client_closed") << "the slow transfer was not aborted";
}

TEST_F(ResilienceTest, SlowFirstTokenWithinTimeoutAnswers) {
  WorkerSettings settings;
  settings.first_token_timeout_ms = 800;
  start_worker(settings);
  const std::string model = "gpt-warm~first_token_ms=250";
  StreamLog events;
  DispatchResponse response =
      stream(request("openai", model).with_stream(true).with_no_fallback(), events);

  EXPECT_EQ(response.content, answer());
  EXPECT_EQ(response.provider, "openai");
  EXPECT_EQ(events.resets(), 0u);
  EXPECT_EQ(join(events.chunks_before_reset()), answer());
  ASSERT_EQ(response.attempts.size(), 1u) << describe(response.attempts);
  expect_attempt(response.attempts[0], "openai", model, "ok");

  const json log = expect_provider_attempts(model, 1);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0]["outcome"], "ok");
  EXPECT_GE(num(log[0], "first_chunk_ms") - num(log[0], "t_ms"), 250.0);
}

TEST_F(ResilienceTest, ChunkDelayWithinIdleTimeoutAnswers) {
  WorkerSettings settings;
  settings.idle_timeout_ms = 600;
  start_worker(settings);
  const std::string model = "qwen-drip~chunk_delay_ms=150~tokens=6";
  StreamLog events;
  DispatchResponse response =
      stream(request("qwen", model).with_stream(true).with_no_fallback(), events);

  EXPECT_EQ(response.content, answer(6));
  EXPECT_EQ(response.provider, "qwen");
  EXPECT_EQ(response.stream_resets, 0u);
  EXPECT_EQ(events.resets(), 0u);
  EXPECT_EQ(events.chunks_before_reset(), answer_chunks(6));
  ASSERT_EQ(response.attempts.size(), 1u) << describe(response.attempts);
  expect_attempt(response.attempts[0], "qwen", model, "ok");

  const json log = expect_provider_attempts(model, 1);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0]["outcome"], "ok");
  EXPECT_EQ(log[0]["chunks_sent"], 6);
  // Five gaps between six chunks (and one more before the finish): the stream took its time.
  EXPECT_GE(num(log[0], "end_ms") - num(log[0], "first_chunk_ms"), 5 * 150.0 - 20.0);
}

// ============================================================================================
// Retryable HTTP errors: backoff, Retry-After, caps and deadlines
// ============================================================================================

TEST_F(ResilienceTest, RateLimitedWithoutRetryAfterRetriesWithBackoff) {
  WorkerSettings settings;
  settings.backoff_base_ms = 40;
  settings.backoff_max_ms = 80;
  start_worker(settings);
  const std::string model = "gpt-429~status=429~fail_first=2";
  DispatchResponse response = client().dispatch(request("openai", model).with_no_fallback());

  EXPECT_EQ(response.provider, "openai");
  EXPECT_EQ(response.content, answer());
  ASSERT_EQ(response.attempts.size(), 3u) << describe(response.attempts);
  for (int i = 0; i < 2; ++i) {
    expect_attempt(response.attempts[i], "openai", model, "rate_limited", 429);
    EXPECT_NE(response.attempts[i].note.find("backoff"), std::string::npos)
        << response.attempts[i].note;
  }
  expect_attempt(response.attempts[2], "openai", model, "ok");

  const json log = expect_provider_attempts(model, 3);
  ASSERT_EQ(log.size(), 3u);
  EXPECT_EQ(log[0]["status"], 429);
  EXPECT_EQ(log[1]["status"], 429);
  EXPECT_EQ(log[2]["outcome"], "ok");
  // Waits: min(40·2^n, 80) × U(0.75, 1] -> (30, 40] then (60, 80] ms.
  // Start to start: the fake stamps t_ms when it has read a request, so the gap holds the
  // first answer's transit plus the wait (end_ms is stamped when its write coroutine resumes,
  // which may be late on a loaded machine).
  const double first_gap = num(log[1], "t_ms") - num(log[0], "t_ms");
  const double second_gap = num(log[2], "t_ms") - num(log[1], "t_ms");
  EXPECT_GE(first_gap, 29.0);
  EXPECT_GE(second_gap, 59.0);
  EXPECT_LT(first_gap, 1000.0);
  EXPECT_LT(second_gap, 1000.0);
}

TEST_F(ResilienceTest, RateLimitedPersistentlyIsTypedErrorAfterRetries) {
  start_worker();
  const std::string model = "gpt-429p~status=429";
  auto error = expect_error<RateLimitedError>(request("openai", model).with_no_fallback());
  ASSERT_TRUE(error);
  EXPECT_EQ(error->kind(), ErrorKind::rate_limited);
  EXPECT_EQ(error->status(), 429);
  EXPECT_EQ(error->code(), "rate_limit_exceeded");
  EXPECT_EQ(error->provider(), "openai");
  EXPECT_EQ(error->model(), model);
  ASSERT_EQ(error->attempts().size(), 3u) << describe(error->attempts());
  for (const auto& attempt : error->attempts()) {
    expect_attempt(attempt, "openai", model, "rate_limited", 429);
  }
  expect_provider_attempts(model, 3);
}

TEST_F(ResilienceTest, RetryAfterSecondsIsHonouredThenFallbackAnswers) {
  start_worker();
  const std::string model = "gpt-ra~status=429~retry_after=1";
  const std::string fallback = "claude-after-ra";
  DispatchResponse response = client().dispatch(
      request("openai", model).with_retry_count(2).with_fallbacks({Target{"claude", fallback}}));

  EXPECT_EQ(response.provider, "claude");
  EXPECT_EQ(response.model, fallback);
  EXPECT_EQ(response.content, answer());
  ASSERT_EQ(response.attempts.size(), 4u) << describe(response.attempts);
  for (int i = 0; i < 3; ++i)
    expect_attempt(response.attempts[i], "openai", model, "rate_limited", 429);
  for (int i = 0; i < 2; ++i) {
    EXPECT_NE(response.attempts[i].note.find("retry-after 1000 ms honoured"), std::string::npos)
        << response.attempts[i].note;
  }
  expect_attempt(response.attempts[3], "claude", fallback, "ok");
  for (std::size_t i = 1; i < 3; ++i) {
    EXPECT_GE(static_cast<int64_t>(response.attempts[i].start_offset_ms) -
                  static_cast<int64_t>(response.attempts[i - 1].start_offset_ms),
              990);
  }

  const json log = expect_provider_attempts(model, 3);
  ASSERT_EQ(log.size(), 3u);
  for (std::size_t i = 1; i < log.size(); ++i) {
    const double gap = num(log[i], "t_ms") - num(log[i - 1], "t_ms");
    EXPECT_GE(gap, 950.0) << "attempt " << i << " came before Retry-After: 1 elapsed";
    EXPECT_LT(gap, 2000.0) << "attempt " << i << " waited far beyond Retry-After: 1";
  }
  const json fb = expect_provider_attempts(fallback, 1);
  ASSERT_EQ(fb.size(), 1u);
  EXPECT_LT(num(fb[0], "t_ms") - num(log[2], "t_ms"), 800.0)
      << "the fallback should follow the last failed retry at once";
}

TEST_F(ResilienceTest, RetryAfterMillisecondsIsHonoured) {
  start_worker();
  const std::string model = "gpt-ram~status=429~fail_first=1~retry_after_ms=300";
  DispatchResponse response = client().dispatch(request("openai", model).with_no_fallback());

  EXPECT_EQ(response.provider, "openai");
  EXPECT_EQ(response.content, answer());
  ASSERT_EQ(response.attempts.size(), 2u) << describe(response.attempts);
  expect_attempt(response.attempts[0], "openai", model, "rate_limited", 429);
  EXPECT_NE(response.attempts[0].note.find("retry-after 300 ms honoured"), std::string::npos)
      << response.attempts[0].note;
  expect_attempt(response.attempts[1], "openai", model, "ok");

  const json log = expect_provider_attempts(model, 2);
  ASSERT_EQ(log.size(), 2u);
  const double gap = num(log[1], "t_ms") - num(log[0], "t_ms");  // start to start
  EXPECT_GE(gap, 298.0) << "retry-after-ms: 300 was not waited out (backoff is ~20 ms)";
  EXPECT_LT(gap, 1300.0);
}

TEST_F(ResilienceTest, RetryAfterHttpDateIsHonoured) {
  start_worker();
  const std::string model = "gpt-rad~status=429~fail_first=1~retry_after_date";
  DispatchResponse response = client().dispatch(request("openai", model).with_no_fallback());

  EXPECT_EQ(response.provider, "openai");
  ASSERT_EQ(response.attempts.size(), 2u) << describe(response.attempts);
  expect_attempt(response.attempts[0], "openai", model, "rate_limited", 429);
  EXPECT_NE(response.attempts[0].note.find("honoured"), std::string::npos)
      << response.attempts[0].note;
  expect_attempt(response.attempts[1], "openai", model, "ok");

  const json log = expect_provider_attempts(model, 2);
  ASSERT_EQ(log.size(), 2u);
  // The date is at least 2 s ahead (rounded up to the second); 3 s at most.
  const double gap = num(log[1], "t_ms") - num(log[0], "t_ms");  // start to start
  EXPECT_GE(gap, 1800.0);
  EXPECT_LT(gap, 4000.0);
}

TEST_F(ResilienceTest, RetryAfterAboveCapFailsOverWithoutWaiting) {
  WorkerSettings settings;
  settings.retry_after_cap_ms = 1000;
  start_worker(settings);
  const std::string model = "gpt-racap~status=429~retry_after=5";
  const std::string fallback = "claude-after-cap";
  DispatchResponse response =
      client().dispatch(request("openai", model).with_fallbacks({Target{"claude", fallback}}));

  EXPECT_EQ(response.provider, "claude");
  EXPECT_EQ(response.content, answer());
  ASSERT_EQ(response.attempts.size(), 2u) << describe(response.attempts);
  expect_attempt(response.attempts[0], "openai", model, "rate_limited", 429);
  EXPECT_NE(response.attempts[0].note.find("exceeds the cap"), std::string::npos)
      << response.attempts[0].note;
  expect_attempt(response.attempts[1], "claude", fallback, "ok");

  const json primary = expect_provider_attempts(model, 1);
  const json fb = expect_provider_attempts(fallback, 1);
  ASSERT_EQ(primary.size(), 1u);
  ASSERT_EQ(fb.size(), 1u);
  EXPECT_LT(num(fb[0], "t_ms") - num(primary[0], "t_ms"), 800.0)
      << "waited for a Retry-After above the cap";
}

TEST_F(ResilienceTest, RetryAfterPastDeadlineIsNotWaited) {
  start_worker();
  // No fallback: the job ends with the failure it had, long before the Retry-After.
  const std::string alone = "gpt-radl~status=429~retry_after=3";
  const auto started = SteadyClock::now();
  auto error = expect_error<RateLimitedError>(
      request("openai", alone).with_timeout_ms(2000).with_no_fallback());
  const auto elapsed = SteadyClock::now() - started;
  ASSERT_TRUE(error);
  EXPECT_EQ(error->status(), 429);
  ASSERT_EQ(error->attempts().size(), 1u) << describe(error->attempts());
  expect_attempt(error->attempts()[0], "openai", alone, "rate_limited", 429);
  EXPECT_NE(error->attempts()[0].note.find("would pass the deadline"), std::string::npos)
      << error->attempts()[0].note;
  EXPECT_LT(elapsed, 1500ms) << "waited towards the Retry-After / deadline";
  expect_provider_attempts(alone, 1);

  // With a fallback: it answers at once.
  const std::string primary_model = "gpt-radl2~status=429~retry_after=3";
  const std::string fallback = "llama-after-deadline";
  DispatchResponse response = client().dispatch(request("openai", primary_model)
                                                    .with_timeout_ms(2000)
                                                    .with_fallbacks({Target{"ollama", fallback}}));
  EXPECT_EQ(response.provider, "ollama");
  EXPECT_EQ(response.content, answer());
  ASSERT_EQ(response.attempts.size(), 2u) << describe(response.attempts);
  expect_attempt(response.attempts[0], "openai", primary_model, "rate_limited", 429);
  expect_attempt(response.attempts[1], "ollama", fallback, "ok");
  const json primary = expect_provider_attempts(primary_model, 1);
  const json fb = expect_provider_attempts(fallback, 1);
  ASSERT_EQ(primary.size(), 1u);
  ASSERT_EQ(fb.size(), 1u);
  EXPECT_LT(num(fb[0], "t_ms") - num(primary[0], "t_ms"), 800.0);
}

TEST_F(ResilienceTest, ServerErrorOnceThenAnswerWithoutFallback) {
  start_worker();
  const std::string model = "gpt-500~fail_first=1";
  const std::string fallback = "claude-unused";
  DispatchResponse response =
      client().dispatch(request("openai", model).with_fallbacks({Target{"claude", fallback}}));

  EXPECT_EQ(response.provider, "openai");
  EXPECT_EQ(response.model, model);
  EXPECT_EQ(response.content, answer());
  ASSERT_EQ(response.attempts.size(), 2u) << describe(response.attempts);
  expect_attempt(response.attempts[0], "openai", model, "server_error", 500);
  expect_attempt(response.attempts[1], "openai", model, "ok");

  const json log = expect_provider_attempts(model, 2);
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[0]["status"], 500);
  EXPECT_EQ(log[1]["outcome"], "ok");
  EXPECT_TRUE(stack_->fake_log(fallback).empty()) << "the fallback was called needlessly";
}

TEST_F(ResilienceTest, Persistent503IsRetriedThenFallbackAnswers) {
  start_worker();
  const std::string model = "gpt-503~status=503";
  const std::string fallback = "claude-after-503";
  DispatchResponse response =
      client().dispatch(request("openai", model).with_fallbacks({Target{"claude", fallback}}));

  EXPECT_EQ(response.provider, "claude");
  EXPECT_EQ(response.model, fallback);
  EXPECT_EQ(response.content, answer());
  ASSERT_EQ(response.attempts.size(), 4u) << describe(response.attempts);
  for (int i = 0; i < 3; ++i)
    expect_attempt(response.attempts[i], "openai", model, "overloaded", 503);
  expect_attempt(response.attempts[3], "claude", fallback, "ok");
  expect_provider_attempts(model, 3);
  expect_provider_attempts(fallback, 1);
}

TEST_F(ResilienceTest, Persistent529IsRetriedThenFallbackAnswers) {
  start_worker();
  const std::string model = "claude-529~status=529";
  const std::string fallback = "gpt-after-529";
  DispatchResponse response =
      client().dispatch(request("claude", model).with_fallbacks({Target{"openai", fallback}}));

  EXPECT_EQ(response.provider, "openai");
  EXPECT_EQ(response.content, answer());
  ASSERT_EQ(response.attempts.size(), 4u) << describe(response.attempts);
  for (int i = 0; i < 3; ++i)
    expect_attempt(response.attempts[i], "claude", model, "overloaded", 529);
  expect_attempt(response.attempts[3], "openai", fallback, "ok");
  expect_provider_attempts(model, 3);
  expect_provider_attempts(fallback, 1);
}

TEST_F(ResilienceTest, PersistentOverloadWithoutFallbackIsTypedError) {
  start_worker();
  for (const auto& [provider, model, status] :
       {std::tuple<std::string, std::string, uint16_t>{"openai", "gpt-503e~status=503", 503},
        {"claude", "claude-529e~status=529", 529}}) {
    SCOPED_TRACE(provider + "/" + model);
    auto error = expect_error<OverloadedError>(request(provider, model).with_no_fallback());
    ASSERT_TRUE(error);
    EXPECT_EQ(error->kind(), ErrorKind::overloaded);
    EXPECT_EQ(error->status(), status);
    EXPECT_EQ(error->provider(), provider);
    EXPECT_EQ(error->model(), model);
    ASSERT_EQ(error->attempts().size(), 3u) << describe(error->attempts());
    for (const auto& attempt : error->attempts()) {
      expect_attempt(attempt, provider, model, "overloaded", status);
    }
    expect_provider_attempts(model, 3);
  }
}

// ============================================================================================
// Transport faults
// ============================================================================================

TEST_F(ResilienceTest, ConnectionResetIsRetriedThenFallbackAnswers) {
  WorkerSettings settings;
  // Nothing listens on port 1: every connect is refused.
  settings.extra_providers =
      "  down: {type: openai, base_url: \"http://127.0.0.1:1/v1\", api_key_env: FAKE_KEY}\n";
  start_worker(settings);
  const std::string model = "gpt-reset~reset";
  const std::string fallback = "llama-after-reset";
  DispatchResponse response =
      client().dispatch(request("openai", model).with_fallbacks({Target{"ollama", fallback}}));

  EXPECT_EQ(response.provider, "ollama");
  EXPECT_EQ(response.content, answer());
  ASSERT_EQ(response.attempts.size(), 4u) << describe(response.attempts);
  for (int i = 0; i < 3; ++i) expect_attempt(response.attempts[i], "openai", model, "network");
  expect_attempt(response.attempts[3], "ollama", fallback, "ok");

  const json log = expect_provider_attempts(model, 3);
  for (const auto& record : log) EXPECT_EQ(record["outcome"], "reset");
  expect_provider_attempts(fallback, 1);

  // A refused connection is the same kind of failure: retried, then the fallback.
  const std::string refused_fallback = "llama-after-refused";
  response = client().dispatch(
      request("down", "gpt-down").with_fallbacks({Target{"ollama", refused_fallback}}));
  EXPECT_EQ(response.provider, "ollama");
  EXPECT_EQ(response.content, answer());
  ASSERT_EQ(response.attempts.size(), 4u) << describe(response.attempts);
  for (int i = 0; i < 3; ++i) expect_attempt(response.attempts[i], "down", "gpt-down", "network");
  expect_attempt(response.attempts[3], "ollama", refused_fallback, "ok");
  expect_provider_attempts(refused_fallback, 1);
}

TEST_F(ResilienceTest, HangingProviderIsAttemptedOnceThenFallbackAnswers) {
  WorkerSettings settings;
  settings.first_token_timeout_ms = 500;
  settings.timeout_ms = 5000;
  start_worker(settings);
  const std::string model = "gpt-hang~hang";
  const std::string fallback = "claude-after-hang";
  DispatchResponse response =
      client().dispatch(request("openai", model).with_fallbacks({Target{"claude", fallback}}));

  EXPECT_EQ(response.provider, "claude");
  EXPECT_EQ(response.content, answer());
  ASSERT_EQ(response.attempts.size(), 2u) << describe(response.attempts);
  expect_attempt(response.attempts[0], "openai", model, "timeout");
  EXPECT_EQ(response.attempts[0].code, "first_token_timeout");
  expect_attempt(response.attempts[1], "claude", fallback, "ok");
  EXPECT_LT(response.total_duration(), 5000ms) << "the job overran its deadline";
  // The attempt records carry the timeline too.
  EXPECT_GE(response.attempts[0].duration_ms, 490u);
  EXPECT_GE(response.attempts[1].start_offset_ms, 490u);

  const json primary = expect_provider_attempts(model, 1);
  const json fb = expect_provider_attempts(fallback, 1);
  ASSERT_EQ(primary.size(), 1u);
  ASSERT_EQ(fb.size(), 1u);
  EXPECT_EQ(primary[0]["outcome"], "hang");
  ASSERT_TRUE(has(primary[0], "client_closed_ms")) << "the hanging connection was not closed";
  const double closed_after = num(primary[0], "client_closed_ms") - num(primary[0], "t_ms");
  EXPECT_GE(closed_after, 480.0);
  EXPECT_LT(closed_after, 1500.0);
  const double failover = num(fb[0], "t_ms") - num(primary[0], "t_ms");
  EXPECT_GE(failover, 480.0);
  EXPECT_LT(failover, 1700.0);
}

// ============================================================================================
// Stream faults after the first chunk: reset + the fallback's full answer, in every format
// ============================================================================================

struct MidStreamCase {
  std::string name;
  std::string fault;  // directive(s) of the primary
  std::string primary_provider;
  std::string fallback_provider;
};

std::string case_name(const ::testing::TestParamInfo<MidStreamCase>& info) {
  return info.param.name;
}

class MidStreamFailureTest : public ResilienceTest,
                             public ::testing::WithParamInterface<MidStreamCase> {};

TEST_P(MidStreamFailureTest, ClientGetsResetThenTheFallbacksFullAnswer) {
  const MidStreamCase& c = GetParam();
  WorkerSettings settings;
  settings.idle_timeout_ms = 500;
  start_worker(settings);
  const std::string primary_model = c.primary_provider + "-primary~tokens=10~" + c.fault;
  const std::string fallback_model = c.fallback_provider + "-fallback~tokens=6";
  const std::size_t chunks_before_fault = 2;  // every fault here is scripted "after 2 chunks"

  StreamLog events;
  DispatchResponse response =
      stream(request(c.primary_provider, primary_model)
                 .with_stream(true)
                 .with_fallbacks({Target{c.fallback_provider, fallback_model}}),
             events);

  // The client saw the primary's first chunks, then one reset, then the fallback's answer.
  const auto primary_chunks = answer_chunks(10);
  EXPECT_EQ(events.chunks_before_reset(),
            std::vector<std::string>(primary_chunks.begin(),
                                     primary_chunks.begin() + chunks_before_fault));
  ASSERT_EQ(events.resets(), 1u);
  const StreamEvent* reset = events.first_reset();
  EXPECT_EQ(reset->next_seq, chunks_before_fault);
  EXPECT_NE(reset->reason.find(c.fallback_provider + "/" + fallback_model), std::string::npos)
      << reset->reason;
  EXPECT_EQ(events.chunks_after_last_reset(), answer_chunks(6));
  // Numbering continues from the reset's next_seq.
  for (auto it = events.events.begin(); it != events.events.end(); ++it) {
    if (it->type != StreamEvent::Type::reset) continue;
    const auto next = std::find_if(it, events.events.end(), [](const StreamEvent& e) {
      return e.type == StreamEvent::Type::chunk;
    });
    ASSERT_NE(next, events.events.end());
    EXPECT_EQ(next->seq, it->next_seq);
    break;
  }
  // The final answer is the fallback's, whole — never the truncated one.
  EXPECT_EQ(response.content, answer(6));
  EXPECT_EQ(response.provider, c.fallback_provider);
  EXPECT_EQ(response.model, fallback_model);
  EXPECT_EQ(response.stream_resets, 1u);
  ASSERT_EQ(response.attempts.size(), 2u) << describe(response.attempts);
  EXPECT_EQ(response.attempts[0].provider, c.primary_provider);
  EXPECT_NE(response.attempts[0].outcome, "ok");
  expect_attempt(response.attempts[1], c.fallback_provider, fallback_model, "ok");

  // The broken route is not retried once the client has seen its chunks: the fallback exists.
  const json primary = expect_provider_attempts(primary_model, 1);
  const json fb = expect_provider_attempts(fallback_model, 1);
  ASSERT_EQ(primary.size(), 1u);
  ASSERT_EQ(fb.size(), 1u);
  EXPECT_EQ(primary[0]["chunks_sent"], static_cast<int>(chunks_before_fault));
  EXPECT_EQ(fb[0]["outcome"], "ok");
  // The fallback got the original messages (4 prompt words), not the partial answer as a
  // prefill; the usage reported is the fallback's alone.
  EXPECT_EQ(fb[0]["prompt_tokens"], 4);
  EXPECT_EQ(response.usage.prompt_tokens, 4u);
  EXPECT_EQ(response.usage.completion_tokens, 6u);
  EXPECT_EQ(response.usage.total_tokens, 10u);
  if (c.fault.rfind("stall", 0) == 0) {
    // Idle timeout: the stalled connection is given up after ~500 ms of silence, not earlier.
    const std::string& outcome = response.attempts[0].outcome;
    EXPECT_EQ(outcome, "timeout");
    EXPECT_EQ(response.attempts[0].code, "idle_timeout");
    ASSERT_TRUE(has(primary[0], "client_closed_ms"));
    const double silence = num(primary[0], "client_closed_ms") - num(primary[0], "first_chunk_ms");
    EXPECT_GE(silence, 480.0);
    EXPECT_LT(silence, 2000.0);
    EXPECT_GE(num(fb[0], "t_ms") - num(primary[0], "first_chunk_ms"), 480.0);
  } else {
    // A cut or an error event is noticed at once.
    EXPECT_LT(num(fb[0], "t_ms") - num(primary[0], "end_ms"), 800.0);
  }
}

INSTANTIATE_TEST_SUITE_P(
    EveryFormat, MidStreamFailureTest,
    ::testing::Values(MidStreamCase{"CutOllama", "cut_after=2", "ollama", "openai"},
                      MidStreamCase{"CutOpenAI", "cut_after=2", "openai", "claude"},
                      MidStreamCase{"CutClaude", "cut_after=2", "claude", "ali"},
                      MidStreamCase{"CutDashScope", "cut_after=2", "ali", "qwen"},
                      MidStreamCase{"CutQwenCompatible", "cut_after=2", "qwen", "ollama"},
                      MidStreamCase{"StallOllama", "stall_after=2", "ollama", "claude"},
                      MidStreamCase{"StallOpenAI", "stall_after=2", "openai", "ali"},
                      MidStreamCase{"StallClaude", "stall_after=2", "claude", "qwen"},
                      MidStreamCase{"StallDashScope", "stall_after=2", "ali", "ollama"},
                      MidStreamCase{"StallQwenCompatible", "stall_after=2", "qwen", "openai"},
                      MidStreamCase{"ErrorEventOllama", "error_mid_stream=2", "ollama", "ali"},
                      MidStreamCase{"ErrorEventOpenAI", "error_mid_stream=2", "openai", "qwen"},
                      MidStreamCase{"ErrorEventClaude", "error_mid_stream=2", "claude", "ollama"},
                      MidStreamCase{"ErrorEventDashScope", "error_mid_stream=2", "ali", "openai"},
                      MidStreamCase{"ErrorEventQwenCompatible", "error_mid_stream=2", "qwen",
                                    "claude"}),
    case_name);

TEST_F(ResilienceTest, StreamFailureBeforeTheFirstChunkIsInvisible) {
  start_worker();
  // Cut after the headers (and Anthropic's preamble events) but before any content: retried.
  {
    const std::string model = "claude-early-cut~cut_after=0";
    const std::string fallback = "qwen-after-early-cut~tokens=5";
    StreamLog events;
    DispatchResponse response = stream(
        request("claude", model).with_stream(true).with_fallbacks({Target{"qwen", fallback}}),
        events);
    EXPECT_EQ(response.provider, "qwen");
    EXPECT_EQ(response.content, answer(5));
    EXPECT_EQ(events.resets(), 0u) << "nothing had reached the client: no reset is needed";
    EXPECT_EQ(events.chunks_before_reset(), answer_chunks(5));
    EXPECT_EQ(response.stream_resets, 0u);
    ASSERT_EQ(response.attempts.size(), 4u) << describe(response.attempts);
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(response.attempts[i].provider, "claude");
      EXPECT_NE(response.attempts[i].outcome, "ok");
    }
    expect_attempt(response.attempts[3], "qwen", fallback, "ok");
    const json log = expect_provider_attempts(model, 3);
    for (const auto& record : log) EXPECT_EQ(record["chunks_sent"], 0);
    expect_provider_attempts(fallback, 1);
  }
  // Silent before the first content chunk: first-token timeout, failed over without a retry.
  {
    const std::string model = "llama-early-stall~stall_after=0";
    const std::string fallback = "ali-after-early-stall~tokens=5";
    StreamLog events;
    DispatchResponse response =
        stream(request("ollama", model).with_stream(true).with_fallbacks({Target{"ali", fallback}}),
               events);
    EXPECT_EQ(response.provider, "ali");
    EXPECT_EQ(response.content, answer(5));
    EXPECT_EQ(events.resets(), 0u);
    EXPECT_EQ(events.chunks_before_reset(), answer_chunks(5));
    ASSERT_EQ(response.attempts.size(), 2u) << describe(response.attempts);
    expect_attempt(response.attempts[0], "ollama", model, "timeout");
    EXPECT_EQ(response.attempts[0].code, "first_token_timeout");
    expect_attempt(response.attempts[1], "ali", fallback, "ok");
    expect_provider_attempts(model, 1);
    expect_provider_attempts(fallback, 1);
  }
}

TEST_F(ResilienceTest, MidStreamCutWithoutFallbackRetriesTheRouteThenFailsClearly) {
  start_worker();
  const std::string model = "gpt-cut-alone~cut_after=2~tokens=10";
  StreamLog events;
  std::optional<DispatchError> failure;
  try {
    DispatchResponse response = stream(
        request("openai", model).with_stream(true).with_retry_count(1).with_no_fallback(), events);
    ADD_FAILURE() << "a cut stream was reported as success: '" << response.content << "'";
  } catch (const DispatchError& error) {
    failure = error;
  }
  ASSERT_TRUE(failure);
  EXPECT_TRUE(failure->kind() == ErrorKind::network ||
              failure->kind() == ErrorKind::stream_interrupted)
      << protocol::to_string(failure->kind());
  ASSERT_EQ(failure->attempts().size(), 2u) << describe(failure->attempts());
  for (const auto& attempt : failure->attempts()) {
    EXPECT_EQ(attempt.outcome, protocol::to_string(failure->kind()));
  }
  // First try: 2 chunks; a reset announcing the retry; second try: 2 chunks; then the error.
  const auto chunks = answer_chunks(10);
  const std::vector<std::string> two(chunks.begin(), chunks.begin() + 2);
  EXPECT_EQ(events.chunks_before_reset(), two);
  ASSERT_EQ(events.resets(), 1u);
  EXPECT_EQ(events.first_reset()->next_seq, 2u);
  EXPECT_EQ(events.chunks_after_last_reset(), two);
  expect_provider_attempts(model, 2);
}

TEST_F(ResilienceTest, OtherRetryableStatusesAreRetried) {
  start_worker();
  for (int status : {408, 409, 502}) {
    SCOPED_TRACE(status);
    const std::string model =
        "gpt-" + std::to_string(status) + "~fail_first=1~status=" + std::to_string(status);
    DispatchResponse response = client().dispatch(request("openai", model).with_no_fallback());
    EXPECT_EQ(response.provider, "openai");
    EXPECT_EQ(response.content, answer());
    ASSERT_EQ(response.attempts.size(), 2u) << describe(response.attempts);
    EXPECT_EQ(response.attempts[0].status, status);
    EXPECT_NE(response.attempts[0].outcome, "ok");
    expect_attempt(response.attempts[1], "openai", model, "ok");
    expect_provider_attempts(model, 2);
  }
}

TEST_F(ResilienceTest, ErrorEventMidStreamOfNonStreamJobIsInvisible) {
  start_worker();
  const std::string model = "gpt-errns~error_mid_stream=2";
  const std::string fallback = "claude-after-err";
  DispatchResponse response = client().dispatch(
      request("openai", model).with_retry_count(1).with_fallbacks({Target{"claude", fallback}}));

  EXPECT_EQ(response.provider, "claude");
  EXPECT_EQ(response.content, answer());
  EXPECT_EQ(response.stream_resets, 0u);
  // Nothing reached the client, so the same route may be retried before failing over.
  ASSERT_EQ(response.attempts.size(), 3u) << describe(response.attempts);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(response.attempts[i].provider, "openai");
    EXPECT_NE(response.attempts[i].outcome, "ok");
  }
  expect_attempt(response.attempts[2], "claude", fallback, "ok");
  const json log = expect_provider_attempts(model, 2);
  for (const auto& record : log) EXPECT_EQ(record["outcome"], "error_mid_stream");
  expect_provider_attempts(fallback, 1);
}

TEST_F(ResilienceTest, StallAfterFirstChunkOfNonStreamJobIsInvisible) {
  WorkerSettings settings;
  settings.idle_timeout_ms = 500;
  start_worker(settings);
  const std::string model = "gpt-stallns~stall_after=2";
  const std::string fallback = "ali-after-stall";
  DispatchResponse response =
      client().dispatch(request("openai", model).with_fallbacks({Target{"ali", fallback}}));

  EXPECT_EQ(response.provider, "ali");
  EXPECT_EQ(response.content, answer());
  EXPECT_EQ(response.stream_resets, 0u);
  ASSERT_EQ(response.attempts.size(), 2u) << describe(response.attempts);
  // Silence is failed over, never retried on the same route.
  expect_attempt(response.attempts[0], "openai", model, "timeout");
  EXPECT_EQ(response.attempts[0].code, "idle_timeout");
  expect_attempt(response.attempts[1], "ali", fallback, "ok");
  const json log = expect_provider_attempts(model, 1);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_EQ(log[0]["outcome"], "stall");
  ASSERT_TRUE(has(log[0], "client_closed_ms"));
  const double silence = num(log[0], "client_closed_ms") - num(log[0], "first_chunk_ms");
  EXPECT_GE(silence, 480.0);
  EXPECT_LT(silence, 2000.0);
  expect_provider_attempts(fallback, 1);
}

TEST_F(ResilienceTest, OneMalformedChunkIsSkippedAndCountedInEveryFormat) {
  start_worker();
  for (const std::string provider : {"ollama", "openai", "claude", "ali", "qwen"}) {
    SCOPED_TRACE(provider);
    const std::string model = provider + "-malformed~malformed_at=2~tokens=6";
    StreamLog events;
    DispatchResponse response =
        stream(request(provider, model).with_stream(true).with_no_fallback(), events);

    // The second chunk was unreadable and is lost; everything else arrives, as a success.
    auto expected = answer_chunks(6);
    expected.erase(expected.begin() + 1);
    EXPECT_EQ(response.provider, provider);
    EXPECT_EQ(response.content, join(expected));
    EXPECT_EQ(response.skipped_events, 1u);
    EXPECT_EQ(events.resets(), 0u);
    ASSERT_EQ(response.attempts.size(), 1u) << describe(response.attempts);
    expect_attempt(response.attempts[0], provider, model, "ok");
    const json log = expect_provider_attempts(model, 1);
    ASSERT_EQ(log.size(), 1u);
    EXPECT_EQ(log[0]["outcome"], "malformed");
  }
}

TEST_F(ResilienceTest, StreamWithFinishButNoTerminatorEndsAtOnce) {
  WorkerSettings settings;
  // A worker that waited for the terminator would sit here for seconds.
  settings.first_token_timeout_ms = 4000;
  settings.idle_timeout_ms = 4000;
  settings.timeout_ms = 10000;
  start_worker(settings);
  // In these formats the finish reason comes before the terminator ([DONE] / message_stop).
  for (const std::string provider : {"openai", "claude", "qwen"}) {
    SCOPED_TRACE(provider);
    const std::string model = provider + "-noterm~no_terminator";
    StreamLog events;
    const auto started = SteadyClock::now();
    DispatchResponse response =
        stream(request(provider, model).with_stream(true).with_no_fallback(), events);
    const auto elapsed = SteadyClock::now() - started;

    EXPECT_EQ(response.provider, provider);
    EXPECT_EQ(response.content, answer());
    EXPECT_EQ(events.resets(), 0u);
    ASSERT_EQ(response.attempts.size(), 1u) << describe(response.attempts);
    expect_attempt(response.attempts[0], provider, model, "ok");
    EXPECT_NE(response.attempts[0].note.find("without terminator"), std::string::npos)
        << response.attempts[0].note;
    EXPECT_LT(response.total_duration(), 1500ms);
    EXPECT_LT(elapsed, 2500ms);
    const json log = expect_provider_attempts(model, 1);
    ASSERT_EQ(log.size(), 1u);
    EXPECT_EQ(log[0]["outcome"], "no_terminator");
  }
}

TEST_F(ResilienceTest, StreamWithoutFinishOrTerminatorIsNeverASuccess) {
  WorkerSettings settings;
  settings.first_token_timeout_ms = 4000;
  settings.idle_timeout_ms = 4000;
  settings.timeout_ms = 10000;
  start_worker(settings);
  // Ollama's `done` line and DashScope's last event carry the finish: without them the answer
  // may be truncated, so it is failed over (after a reset) — and at once, not after a timeout.
  for (const auto& [provider, fallback_provider] :
       {std::pair<std::string, std::string>{"ollama", "claude"}, {"ali", "openai"}}) {
    SCOPED_TRACE(provider);
    const std::string model = provider + "-noterm~no_terminator";
    const std::string fallback = fallback_provider + "-after-noterm~tokens=5";
    StreamLog events;
    DispatchResponse response = stream(request(provider, model)
                                           .with_stream(true)
                                           .with_fallbacks({Target{fallback_provider, fallback}}),
                                       events);

    EXPECT_EQ(response.provider, fallback_provider);
    EXPECT_EQ(response.content, answer(5));
    EXPECT_EQ(events.chunks_before_reset(), answer_chunks(kDefaultTokens));
    EXPECT_EQ(events.resets(), 1u);
    EXPECT_EQ(events.chunks_after_last_reset(), answer_chunks(5));
    ASSERT_EQ(response.attempts.size(), 2u) << describe(response.attempts);
    expect_attempt(response.attempts[0], provider, model, "stream_interrupted");
    EXPECT_EQ(response.attempts[0].code, "missing_terminator");
    expect_attempt(response.attempts[1], fallback_provider, fallback, "ok");
    EXPECT_LT(response.total_duration(), 2000ms);
    const json primary = expect_provider_attempts(model, 1);
    const json fb = expect_provider_attempts(fallback, 1);
    ASSERT_EQ(primary.size(), 1u);
    ASSERT_EQ(fb.size(), 1u);
    EXPECT_LT(num(fb[0], "t_ms") - num(primary[0], "end_ms"), 800.0);
  }
}

// ============================================================================================
// Errors that must not be retried on the same model
// ============================================================================================

TEST_F(ResilienceTest, ContextLengthGoesToTheLargerContextTarget) {
  WorkerSettings settings;
  settings.provider_extras["openai"] = "context_window: 8000";
  const std::string v1 = stack_->fake().openai_base_url();
  settings.extra_providers = "  small: {type: openai, base_url: \"" + v1 +
                             "\", api_key_env: FAKE_KEY, context_window: 4000}\n"
                             "  big: {type: openai, base_url: \"" +
                             v1 + "\", api_key_env: FAKE_KEY, context_window: 200000}\n";
  start_worker(settings);

  const std::string model = "gpt-ctx~context_length";
  DispatchResponse response = client().dispatch(
      request("openai", model)
          .with_fallbacks({Target{"small", "small-model"}, Target{"big", "big-model"}}));
  EXPECT_EQ(response.provider, "big");
  EXPECT_EQ(response.model, "big-model");
  EXPECT_EQ(response.content, answer());
  ASSERT_EQ(response.attempts.size(), 2u) << describe(response.attempts);
  expect_attempt(response.attempts[0], "openai", model, "context_length_exceeded", 400);
  expect_attempt(response.attempts[1], "big", "big-model", "ok");
  expect_provider_attempts(model, 1);
  expect_provider_attempts("big-model", 1);
  EXPECT_TRUE(stack_->fake_log("small-model").empty()) << "the smaller context was tried";

  // Without a fallback: the typed error, after one call.
  const std::string alone = "gpt-ctx-alone~context_length";
  auto error =
      expect_error<ContextLengthExceededError>(request("openai", alone).with_no_fallback());
  ASSERT_TRUE(error);
  EXPECT_EQ(error->status(), 400);
  EXPECT_EQ(error->code(), "context_length_exceeded");
  ASSERT_EQ(error->attempts().size(), 1u) << describe(error->attempts());
  expect_provider_attempts(alone, 1);
}

TEST_F(ResilienceTest, ContentFilterIsTypedErrorWithProvidersReason) {
  start_worker();
  const std::string model = "gpt-cf~content_filter";
  const std::string fallback = "claude-not-for-cf";
  auto error = expect_error<ContentFilteredError>(
      request("openai", model).with_fallbacks({Target{"claude", fallback}}));
  ASSERT_TRUE(error);
  EXPECT_EQ(error->kind(), ErrorKind::content_filtered);
  EXPECT_EQ(error->status(), 400);
  EXPECT_EQ(error->code(), "content_policy_violation");
  EXPECT_NE(error->message().find("safety system"), std::string::npos) << error->message();
  EXPECT_EQ(error->provider(), "openai");
  ASSERT_EQ(error->attempts().size(), 1u) << describe(error->attempts());
  expect_attempt(error->attempts()[0], "openai", model, "content_filtered", 400);
  expect_provider_attempts(model, 1);
  EXPECT_TRUE(stack_->fake_log(fallback).empty()) << "failed over although not configured to";
}

TEST_F(ResilienceTest, ContentFilterFailsOverWhenConfigured) {
  WorkerSettings settings;
  settings.failover_on_content_filter = true;
  start_worker(settings);
  const std::string model = "gpt-cf2~content_filter";
  const std::string fallback = "claude-for-cf";
  DispatchResponse response =
      client().dispatch(request("openai", model).with_fallbacks({Target{"claude", fallback}}));
  EXPECT_EQ(response.provider, "claude");
  EXPECT_EQ(response.content, answer());
  ASSERT_EQ(response.attempts.size(), 2u) << describe(response.attempts);
  expect_attempt(response.attempts[0], "openai", model, "content_filtered", 400);
  expect_attempt(response.attempts[1], "claude", fallback, "ok");
  expect_provider_attempts(model, 1);
  expect_provider_attempts(fallback, 1);
}

TEST_F(ResilienceTest, UnknownModelIsNotRetried) {
  start_worker();
  auto error =
      expect_error<ModelNotAvailableError>(request("openai", "no-such-model").with_no_fallback());
  ASSERT_TRUE(error);
  EXPECT_EQ(error->kind(), ErrorKind::model_not_available);
  EXPECT_EQ(error->status(), 404);
  ASSERT_EQ(error->attempts().size(), 1u) << describe(error->attempts());
  expect_attempt(error->attempts()[0], "openai", "no-such-model", "model_not_available", 404);
  json log = expect_provider_attempts("no-such-model", 1);

  // With a fallback, the fallback answers after the single 404.
  DispatchResponse response = client().dispatch(
      request("claude", "no-such-model").with_fallbacks({Target{"ollama", "llama-after-404"}}));
  EXPECT_EQ(response.provider, "ollama");
  EXPECT_EQ(response.content, answer());
  ASSERT_EQ(response.attempts.size(), 2u) << describe(response.attempts);
  expect_attempt(response.attempts[0], "claude", "no-such-model", "model_not_available", 404);
  expect_attempt(response.attempts[1], "ollama", "llama-after-404", "ok");
  log = expect_provider_attempts("no-such-model", 2);
  ASSERT_EQ(log.size(), 2u);
  EXPECT_EQ(log[1]["format"], "anthropic");
  expect_provider_attempts("llama-after-404", 1);
}

TEST_F(ResilienceTest, InvalidRequestAndAuthenticationAreNotRetried) {
  WorkerSettings settings;
  // No such variable: the provider is configured, but has no key.
  const std::string unset_variable = "DISPATCH_RESILIENCE_TEST_UNSET_KEY";
  ::unsetenv(unset_variable.c_str());
  settings.extra_providers = "  nokey: {type: openai, base_url: \"" +
                             stack_->fake().openai_base_url() +
                             "\", api_key_env: " + unset_variable + "}\n";
  start_worker(settings);

  {
    const std::string model = "gpt-400~status=400";
    auto error = expect_error<InvalidRequestError>(request("openai", model).with_no_fallback());
    ASSERT_TRUE(error);
    EXPECT_EQ(error->status(), 400);
    ASSERT_EQ(error->attempts().size(), 1u) << describe(error->attempts());
    expect_attempt(error->attempts()[0], "openai", model, "invalid_request", 400);
    expect_provider_attempts(model, 1);
  }
  {
    const std::string model = "gpt-401~status=401";
    auto error = expect_error<AuthenticationError>(request("openai", model).with_no_fallback());
    ASSERT_TRUE(error);
    EXPECT_EQ(error->status(), 401);
    ASSERT_EQ(error->attempts().size(), 1u) << describe(error->attempts());
    expect_attempt(error->attempts()[0], "openai", model, "authentication", 401);
    expect_provider_attempts(model, 1);
  }
  {
    const std::string model = "gpt-nokey";
    auto error = expect_error<AuthenticationError>(request("nokey", model).with_no_fallback());
    ASSERT_TRUE(error);
    EXPECT_EQ(error->kind(), ErrorKind::authentication);
    EXPECT_EQ(error->code(), "missing_api_key");
    EXPECT_NE(error->message().find(unset_variable), std::string::npos) << error->message();
    ASSERT_EQ(error->attempts().size(), 1u) << describe(error->attempts());
    expect_attempt(error->attempts()[0], "nokey", model, "authentication");
    // Nothing was sent without a key.
    EXPECT_TRUE(stack_->fake_log(model).empty());
  }
}

// ============================================================================================
// The circuit breaker across a flapping provider
// ============================================================================================

TEST_F(ResilienceTest, FlappingPrimaryIsBypassedDuringOutageAndUsedAgainAfterRecovery) {
  constexpr int64_t kOutageMs = 2000;
  constexpr uint32_t kCooldownMs = 400;
  constexpr uint32_t kFailures = 2;
  constexpr int kConcurrentJobs = 3;  // so that the single half-open probe is contended
  WorkerSettings settings;
  settings.retry_count = 1;
  settings.breaker_failures = kFailures;
  settings.breaker_cooldown_ms = kCooldownMs;
  start_worker(settings);
  const std::string primary = "gpt-flap~flap=" + std::to_string(kOutageMs);
  // The fallback's latency paces the loop below (each round takes >= 40 ms) without a sleep.
  const std::string fallback = "claude-flap-fallback~latency_ms=40";
  const auto req = request("openai", primary).with_fallbacks({Target{"claude", fallback}});

  // The fake's outage starts at its reset.
  const int64_t reset_before = unix_now_ms();
  stack_->reset_fake();
  const int64_t reset_after = unix_now_ms();

  std::vector<DispatchResponse> responses;
  const auto deadline = SteadyClock::now() + 12s;
  int primary_rounds_in_a_row = 0;
  for (int rounds = 0; rounds < 300 && SteadyClock::now() < deadline && primary_rounds_in_a_row < 2;
       ++rounds) {
    std::vector<PendingDispatch> round;
    for (int i = 0; i < kConcurrentJobs; ++i) round.push_back(client().dispatch_async(req));
    bool all_primary = true;
    for (auto& pending : round) {
      responses.push_back(pending.get());  // throws (fails the test) on any error
      all_primary = all_primary && responses.back().provider == "openai";
    }
    primary_rounds_in_a_row = all_primary ? primary_rounds_in_a_row + 1 : 0;
  }
  ASSERT_EQ(primary_rounds_in_a_row, 2)
      << "not back on the primary after " << responses.size() << " jobs";

  const auto served_by_fallback =
      std::count_if(responses.begin(), responses.end(),
                    [](const DispatchResponse& r) { return r.provider == "claude"; });
  EXPECT_GE(served_by_fallback, 10) << "the outage was not served by the fallback";
  const bool some_skipped = std::any_of(responses.begin(), responses.end(), [](const auto& r) {
    return std::any_of(r.attempts.begin(), r.attempts.end(),
                       [](const Attempt& a) { return a.outcome == "circuit_open"; });
  });
  EXPECT_TRUE(some_skipped) << "no job skipped the primary while its circuit was open";

  const json log = stack_->fake_log(primary);
  std::vector<json> failed;
  std::optional<json> first_ok;
  for (const auto& record : log) {
    if (record["outcome"] == "flap") {
      failed.push_back(record);
    } else if (record["outcome"] == "ok" && !first_ok) {
      first_ok = record;
    }
  }
  ASSERT_GE(failed.size(), kFailures);
  // The first round's jobs all reach the primary before the circuit opens (with at most one
  // retry each); after that only probes do, one at a time, each a cooldown after the last.
  const double opened_no_earlier_than = num(failed[0], "t_ms");
  std::vector<json> probes;
  for (const auto& record : failed) {
    if (num(record, "t_ms") >= opened_no_earlier_than + kCooldownMs - 30) probes.push_back(record);
  }
  const std::size_t burst = failed.size() - probes.size();
  EXPECT_LE(burst, 2u * kConcurrentJobs) << log.dump(1);
  EXPECT_LE(probes.size(), static_cast<std::size_t>(kOutageMs / kCooldownMs + 1)) << log.dump(1);
  for (std::size_t i = 1; i < probes.size(); ++i) {
    EXPECT_GE(num(probes[i], "t_ms") - num(probes[i - 1], "t_ms"), kCooldownMs - 30.0)
        << "two probes within one cooldown: " << log.dump(1);
  }
  // Back on the primary soon after the recovery: within one cooldown plus margin.
  ASSERT_TRUE(first_ok.has_value());
  const int64_t recovered_at = (*first_ok)["unix_ms"].get<int64_t>();
  EXPECT_GE(recovered_at, reset_before + kOutageMs - 50);
  EXPECT_LE(recovered_at, reset_after + kOutageMs + kCooldownMs + 1000);
}

// ============================================================================================
// Cancel and the total deadline
// ============================================================================================

TEST_F(ResilienceTest, CancelAbortsTheHttpTransferAtOnce) {
  WorkerSettings settings;
  settings.first_token_timeout_ms = 8000;
  settings.timeout_ms = 10000;
  start_worker(settings);
  const std::string model = "gpt-cancel~hang";
  PendingDispatch pending = client().dispatch_async(request("openai", model).with_no_fallback());

  // Wait until the provider holds the request.
  json log;
  const auto deadline = SteadyClock::now() + 5s;
  for (int polls = 0; polls < 500 && SteadyClock::now() < deadline; ++polls) {
    log = stack_->fake_log(model);
    if (!log.empty() && log[0]["outcome"] == "hang") break;
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(log.size(), 1u);
  ASSERT_EQ(log[0]["outcome"], "hang");

  const int64_t cancelled_at = unix_now_ms();
  const auto cancel_started = SteadyClock::now();
  pending.cancel();
  ASSERT_EQ(pending.wait_for(3000ms), std::future_status::ready);
  const auto answered_after = SteadyClock::now() - cancel_started;
  try {
    pending.get();
    ADD_FAILURE() << "a cancelled job answered";
  } catch (const CancelledError& error) {
    EXPECT_EQ(error.kind(), ErrorKind::cancelled);
    EXPECT_NE(error.code(), client_code::cancelled_locally)
        << "the broker / worker never confirmed the cancel";
  } catch (const DispatchError& error) {
    ADD_FAILURE() << "wrong error: " << protocol::to_string(error.kind()) << " " << error.message();
  }
  EXPECT_LT(answered_after, 1500ms);

  log = settled_log(model, 1);
  ASSERT_EQ(log.size(), 1u);
  ASSERT_TRUE(has(log[0], "client_closed_ms")) << "the transfer was never aborted";
  const int64_t closed_at =
      log[0]["unix_ms"].get<int64_t>() +
      static_cast<int64_t>(num(log[0], "client_closed_ms") - num(log[0], "t_ms"));
  EXPECT_GE(closed_at, cancelled_at - 20);
  EXPECT_LT(closed_at - cancelled_at, 1000) << "the HTTP transfer outlived the cancel";
}

TEST_F(ResilienceTest, CancelDuringARetryWaitStopsTheRetry) {
  start_worker();
  constexpr double kRetryAfterMs = 800;
  const std::string model = "gpt-cancel-wait~status=429~retry_after_ms=800";
  PendingDispatch pending = client().dispatch_async(request("openai", model).with_no_fallback());

  // The first attempt failed; the job now waits out the Retry-After.
  json log = settled_log(model, 1);
  ASSERT_EQ(log.size(), 1u);
  ASSERT_EQ(log[0]["status"], 429);

  const auto cancel_started = SteadyClock::now();
  pending.cancel();
  ASSERT_EQ(pending.wait_for(3000ms), std::future_status::ready);
  EXPECT_LT(SteadyClock::now() - cancel_started, 1500ms);
  try {
    pending.get();
    ADD_FAILURE() << "a cancelled job answered";
  } catch (const CancelledError& error) {
    EXPECT_NE(error.code(), client_code::cancelled_locally);
    ASSERT_EQ(error.attempts().size(), 1u) << describe(error.attempts());
    expect_attempt(error.attempts()[0], "openai", model, "rate_limited", 429);
  } catch (const DispatchError& error) {
    ADD_FAILURE() << "wrong error: " << protocol::to_string(error.kind()) << " " << error.message();
  }

  // Watch the provider until well past the moment the retry was due: it never comes.
  const double retry_due = num(log[0], "t_ms") + kRetryAfterMs;
  const auto deadline = SteadyClock::now() + 5s;
  double fake_now = 0;
  for (int polls = 0; polls < 500 && SteadyClock::now() < deadline; ++polls) {
    const auto stats = test::http_request("GET", stack_->fake().host_url() + "/_fake/stats");
    fake_now = json::parse(stats.body).value("uptime_ms", 0.0);
    if (fake_now > retry_due + 400) break;
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_GT(fake_now, retry_due + 400);
  EXPECT_EQ(stack_->fake_log(model).size(), 1u) << "the retry timer survived the cancel";
}

TEST_F(ResilienceTest, DeadlineEndsAJobWhoseEveryTargetHangs) {
  WorkerSettings settings;
  settings.first_token_timeout_ms = 1000;
  start_worker(settings);
  const std::string first = "gpt-dl~hang";
  const std::string second = "claude-dl~hang";
  const std::string third = "llama-dl~hang";
  constexpr uint32_t kDeadlineMs = 1500;
  const auto started = SteadyClock::now();
  auto error = expect_error<TimeoutError>(
      request("openai", first)
          .with_timeout_ms(kDeadlineMs)
          .with_fallbacks({Target{"claude", second}, Target{"ollama", third}}));
  const auto elapsed = SteadyClock::now() - started;
  ASSERT_TRUE(error);
  EXPECT_EQ(error->kind(), ErrorKind::timeout);
  EXPECT_EQ(error->code(), "deadline");
  EXPECT_LT(elapsed, milliseconds(kDeadlineMs + 1500));
  ASSERT_EQ(error->attempts().size(), 2u) << describe(error->attempts());
  expect_attempt(error->attempts()[0], "openai", first, "timeout");
  EXPECT_EQ(error->attempts()[0].code, "first_token_timeout");
  expect_attempt(error->attempts()[1], "claude", second, "timeout");
  EXPECT_EQ(error->attempts()[1].code, "deadline");

  const json a = expect_provider_attempts(first, 1);
  const json b = expect_provider_attempts(second, 1);
  ASSERT_EQ(a.size(), 1u);
  ASSERT_EQ(b.size(), 1u);
  EXPECT_TRUE(stack_->fake_log(third).empty()) << "a target was started after the deadline";
  ASSERT_TRUE(has(b[0], "client_closed_ms"));
  // The last hanging transfer is closed at the job's deadline, counted from the first attempt.
  const double ended = num(b[0], "client_closed_ms") - num(a[0], "t_ms");
  EXPECT_GE(ended, kDeadlineMs - 100.0);
  EXPECT_LT(ended, kDeadlineMs + 700.0);
}

}  // namespace
}  // namespace dispatch
