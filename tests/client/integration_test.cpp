// The client library, the `dispatch` CLI and the examples end to end: real fake-provider,
// dispatch-broker and dispatch-worker processes on ephemeral loopback ports.
//
// A binary that is missing fails every test (the build always makes them; a skip would hide a
// broken build).

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "dispatch/client.hpp"
#include "dispatch/test/child_process.hpp"
#include "dispatch/test/fake_provider_process.hpp"

namespace dispatch {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using test::ChildOptions;
using test::ChildProcess;
using test::FakeProviderProcess;

bool executable(const std::string& path) {
  return ::access(path.c_str(), X_OK) == 0;
}

std::string missing_binaries() {
  std::string missing;
  for (const auto& [name, path] :
       std::vector<std::pair<std::string, std::string>>{{"dispatch-broker", BROKER_BINARY},
                                                        {"dispatch-worker", WORKER_BINARY},
                                                        {"fake-provider", FAKE_PROVIDER_BINARY},
                                                        {"dispatch", DISPATCH_CLI_BINARY}}) {
    if (!executable(path)) missing += (missing.empty() ? "" : ", ") + name + " (" + path + ")";
  }
  return missing;
}

class TempDir {
 public:
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "dispatch-client-it-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

// Everything a test needs: fake provider, broker, workers. Started once for the suite.
struct Stack {
  TempDir dir;
  std::unique_ptr<FakeProviderProcess> fake;
  std::unique_ptr<ChildProcess> broker;
  std::vector<ChildProcess> workers;
  std::string frontend;
  std::string backend;

  void start(int worker_count) {
    fake = std::make_unique<FakeProviderProcess>(FAKE_PROVIDER_BINARY);
    broker = std::make_unique<ChildProcess>(
        ChildProcess::spawn({BROKER_BINARY, "--frontend", "tcp://127.0.0.1:0", "--backend",
                             "tcp://127.0.0.1:0", "--log-level", "warn"}));
    const auto line = broker->read_line(milliseconds(10000));
    if (!line) throw std::runtime_error("dispatch-broker printed no listening line");
    // "dispatch-broker listening frontend=<ep> backend=<ep>"
    const auto front = line->find("frontend=");
    const auto back = line->find(" backend=");
    if (front == std::string::npos || back == std::string::npos) {
      throw std::runtime_error("unexpected broker line: " + *line);
    }
    frontend = line->substr(front + 9, back - front - 9);
    backend = line->substr(back + 9);

    const std::string config = dir.file("worker.yaml");
    write_file(config,
               "defaults:\n"
               "  timeout_ms: 10000\n"
               "  retry_count: 1\n"
               "  backoff: {base_ms: 10, max_ms: 50}\n"
               "  breaker: {failures: 100000, failure_rate: 1.0, window: 100000}\n"
               "providers:\n"
               "  ollama: {type: ollama, base_url: " +
                   fake->host_url() +
                   "}\n"
                   "  openai: {type: openai, base_url: " +
                   fake->openai_base_url() +
                   ", api_key_env: FAKE_KEY}\n"
                   "  claude: {type: anthropic, base_url: " +
                   fake->host_url() + ", api_key_env: FAKE_KEY}\n");
    ChildOptions options;
    options.extra_env = {"FAKE_KEY=sk-test"};
    options.capture_stdout = false;
    for (int i = 0; i < worker_count; ++i) {
      workers.push_back(ChildProcess::spawn(
          {WORKER_BINARY, "--broker", backend, "--config", config, "--log-level", "warn"},
          options));
    }
    // Ready when the broker lists every worker.
    ClientOptions client_options;
    client_options.broker_endpoint = frontend;
    Client client(client_options);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (std::chrono::steady_clock::now() < deadline) {
      try {
        if (client.status(milliseconds(1000)).workers.size() ==
            static_cast<std::size_t>(worker_count)) {
          return;
        }
      } catch (const DispatchError&) {
      }
      std::this_thread::sleep_for(milliseconds(20));
    }
    throw std::runtime_error("workers did not register with the broker in time");
  }
};

struct ProcessResult {
  int exit_code = -1;
  bool signaled = false;
  std::vector<std::string> out;
  std::string err;
};

// Runs a binary to completion (bounded), collecting stdout lines and stderr.
ProcessResult run_process(std::vector<std::string> argv, const TempDir& dir,
                          std::vector<std::string> env = {},
                          milliseconds timeout = milliseconds(60000)) {
  static int counter = 0;
  ChildOptions options;
  options.extra_env = std::move(env);
  options.stderr_path = dir.file("stderr-" + std::to_string(++counter) + ".txt");
  auto child = ChildProcess::spawn(argv, options);
  ProcessResult result;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    auto line = child.read_line(milliseconds(500));
    if (line) {
      result.out.push_back(*line);
    } else if (!child.running()) {
      break;
    }
  }
  // Anything still buffered after the exit.
  while (auto line = child.read_line(milliseconds(50))) result.out.push_back(*line);
  auto status = child.wait_for_exit(milliseconds(100));
  if (!status) status = child.stop();
  result.exit_code = status->exited ? status->code : -1;
  result.signaled = status->signaled;
  result.err = read_file(*options.stderr_path);
  return result;
}

class ClientIntegrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    missing_ = missing_binaries();
    if (!missing_.empty()) return;
    stack_ = std::make_unique<Stack>();
    try {
      stack_->start(2);
    } catch (const std::exception& e) {
      start_error_ = e.what();
    }
  }
  static void TearDownTestSuite() { stack_.reset(); }

  void SetUp() override {
    ASSERT_TRUE(missing_.empty()) << "not built: " << missing_;
    ASSERT_TRUE(start_error_.empty()) << start_error_;
  }

  static ClientOptions client_options() {
    ClientOptions options;
    options.broker_endpoint = stack_->frontend;
    return options;
  }
  static std::string frontend() { return stack_->frontend; }

  static std::string missing_;
  static std::string start_error_;
  static std::unique_ptr<Stack> stack_;
  TempDir dir_;
};

std::string ClientIntegrationTest::missing_;
std::string ClientIntegrationTest::start_error_;
std::unique_ptr<Stack> ClientIntegrationTest::stack_;

TEST_F(ClientIntegrationTest, SyncDispatch) {
  Client client(client_options());
  auto response = client.dispatch(
      DispatchRequest(Provider::ollama, "llama3.2", {Message::user("Hello, how are you?")})
          .with_temperature(0.7)
          .with_max_tokens(1000));
  EXPECT_EQ(response.content.rfind("reply to: Hello, how are you?", 0), 0u) << response.content;
  EXPECT_EQ(response.provider, "ollama");
  EXPECT_EQ(response.model, "llama3.2");
  EXPECT_GT(response.usage.prompt_tokens, 0u);
  EXPECT_GT(response.usage.completion_tokens, 0u);
  EXPECT_EQ(response.usage.total_tokens,
            response.usage.prompt_tokens + response.usage.completion_tokens);
  EXPECT_EQ(response.finish_reason, "stop");
  ASSERT_FALSE(response.attempts.empty());
  EXPECT_EQ(response.attempts.back().outcome, "ok");
  EXPECT_GT(response.total_duration_ns, 0u);
}

TEST_F(ClientIntegrationTest, ManyAsyncJobsInFlight) {
  Client client(client_options());
  std::vector<PendingDispatch> pending;
  constexpr int kJobs = 300;
  for (int i = 0; i < kJobs; ++i) {
    const auto provider = i % 3 == 0 ? "ollama" : (i % 3 == 1 ? "openai" : "claude");
    pending.push_back(client.dispatch_async(DispatchRequest(
        provider, "m" + std::to_string(i % 5), {Message::user("question " + std::to_string(i))})));
  }
  int ok = 0;
  for (int i = 0; i < kJobs; ++i) {
    auto response = pending[static_cast<std::size_t>(i)].get();
    if (response.content.rfind("reply to: question " + std::to_string(i) + " ", 0) == 0) ++ok;
  }
  EXPECT_EQ(ok, kJobs);
}

TEST_F(ClientIntegrationTest, StreamChunksArriveInOrderAndMakeTheAnswer) {
  Client client(client_options());
  std::string streamed;
  std::vector<uint64_t> seqs;
  int other_events = 0;
  auto response = client.dispatch_stream(
      DispatchRequest(Provider::openai, "gpt-4o-mini~tokens=30~chunk_delay_ms=2",
                      {Message::user("stream please")}),
      [&](const StreamEvent& event) {
        if (event.type != StreamEvent::Type::chunk) {
          ++other_events;
          return;
        }
        seqs.push_back(event.seq);
        streamed += event.content;
      });
  EXPECT_EQ(other_events, 0);
  ASSERT_GE(seqs.size(), 10u);
  for (std::size_t i = 0; i < seqs.size(); ++i) EXPECT_EQ(seqs[i], i);
  EXPECT_EQ(streamed, response.content);
  EXPECT_EQ(response.usage.completion_tokens, 30u);
  EXPECT_FALSE(response.stream_gap);
}

TEST_F(ClientIntegrationTest, UnknownModelIsModelNotAvailable) {
  Client client(client_options());
  try {
    client.dispatch(DispatchRequest(Provider::openai, "no-such-model", {Message::user("hi")})
                        .with_no_fallback());
    FAIL() << "expected ModelNotAvailableError";
  } catch (const ModelNotAvailableError& e) {
    EXPECT_EQ(e.status(), 404);
    EXPECT_EQ(e.provider(), "openai");
  }
}

TEST_F(ClientIntegrationTest, UnknownProviderIsUnsupportedAfterTheQueueDeadline) {
  Client client(client_options());
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(client.dispatch(DispatchRequest("nobody-serves-this", "m", {Message::user("hi")})
                                   .with_queue_timeout_ms(300)),
               UnsupportedProviderError);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
}

TEST_F(ClientIntegrationTest, ProviderErrorFallsBackToTheNextTarget) {
  Client client(client_options());
  auto response =
      client.dispatch(DispatchRequest(Provider::openai, "gpt-4o~status=500", {Message::user("hi")})
                          .with_retry_count(0)
                          .with_fallback(Provider::ollama, "llama3.2"));
  EXPECT_EQ(response.provider, "ollama");
  ASSERT_GE(response.attempts.size(), 2u);
  EXPECT_EQ(response.attempts.front().provider, "openai");
  EXPECT_NE(response.attempts.front().outcome, "ok");
  EXPECT_EQ(response.attempts.back().outcome, "ok");
}

TEST_F(ClientIntegrationTest, ProviderHttpErrorIsTypedWithStatus) {
  Client client(client_options());
  try {
    client.dispatch(DispatchRequest(Provider::openai, "gpt~status=400", {Message::user("hi")})
                        .with_no_fallback());
    FAIL() << "expected InvalidRequestError";
  } catch (const InvalidRequestError& e) {
    EXPECT_EQ(e.status(), 400);
  }
}

TEST_F(ClientIntegrationTest, CliChatPlainAndJson) {
  auto plain = run_process({DISPATCH_CLI_BINARY, "chat", "--broker", frontend(), "--provider",
                            "ollama", "--model", "llama3.2", "Hello there"},
                           dir_);
  EXPECT_EQ(plain.exit_code, 0) << plain.err;
  ASSERT_EQ(plain.out.size(), 1u);
  EXPECT_EQ(plain.out[0].rfind("reply to: Hello there", 0), 0u);

  auto as_json =
      run_process({DISPATCH_CLI_BINARY, "chat", "--broker", frontend(), "--provider", "openai",
                   "--model", "gpt-4o-mini", "--max-tokens", "5", "--json", "Hello there"},
                  dir_);
  EXPECT_EQ(as_json.exit_code, 0) << as_json.err;
  ASSERT_EQ(as_json.out.size(), 1u);
  const auto object = json::parse(as_json.out[0]);
  EXPECT_EQ(object["provider"], "openai");
  EXPECT_EQ(object["model"], "gpt-4o-mini");
  EXPECT_EQ(object["usage"]["completion_tokens"], 5);
  EXPECT_EQ(object["usage"]["total_tokens"].get<int>(),
            object["usage"]["prompt_tokens"].get<int>() + 5);
  EXPECT_EQ(object["finish_reason"], "length");
  EXPECT_TRUE(object["attempts"].is_array());
}

TEST_F(ClientIntegrationTest, CliChatStreamJsonEndsWithTheResult) {
  auto result =
      run_process({DISPATCH_CLI_BINARY, "chat", "--broker", frontend(), "--provider", "claude",
                   "--model", "claude-3-5-haiku~tokens=6", "--stream", "--json", "stream it"},
                  dir_);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  ASSERT_GE(result.out.size(), 2u);
  std::string joined;
  for (std::size_t i = 0; i + 1 < result.out.size(); ++i) {
    const auto event = json::parse(result.out[i]);
    EXPECT_EQ(event["event"], "chunk");
    joined += event["content"].get<std::string>();
  }
  const auto last = json::parse(result.out.back());
  EXPECT_FALSE(last.contains("event"));
  EXPECT_EQ(last["content"], joined);
  EXPECT_EQ(last["provider"], "claude");
}

TEST_F(ClientIntegrationTest, CliChatStreamPlainPrintsTheAnswer) {
  auto result = run_process({DISPATCH_CLI_BINARY, "chat", "--broker", frontend(), "--provider",
                             "ollama", "--model", "llama3.2~tokens=4", "--stream", "abc"},
                            dir_);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  ASSERT_EQ(result.out.size(), 1u);
  EXPECT_EQ(result.out[0].rfind("reply to: abc", 0), 0u);
}

TEST_F(ClientIntegrationTest, CliChatFailureJson) {
  auto result =
      run_process({DISPATCH_CLI_BINARY, "chat", "--broker", frontend(), "--provider", "openai",
                   "--model", "no-such-model", "--fallback", "", "--json", "hi"},
                  dir_);
  EXPECT_EQ(result.exit_code, 1);
  ASSERT_EQ(result.out.size(), 1u);
  const auto object = json::parse(result.out[0]);
  EXPECT_EQ(object["error"]["kind"], "model_not_available");
  EXPECT_EQ(object["error"]["status"], 404);
}

TEST_F(ClientIntegrationTest, CliStatus) {
  auto table = run_process({DISPATCH_CLI_BINARY, "status", "--broker", frontend()}, dir_);
  EXPECT_EQ(table.exit_code, 0) << table.err;
  std::string all;
  for (const auto& line : table.out) all += line + "\n";
  EXPECT_NE(all.find("workers: 2"), std::string::npos) << all;
  EXPECT_NE(all.find("WORKER"), std::string::npos);

  auto as_json =
      run_process({DISPATCH_CLI_BINARY, "status", "--broker", frontend(), "--json"}, dir_);
  EXPECT_EQ(as_json.exit_code, 0);
  ASSERT_EQ(as_json.out.size(), 1u);
  const auto object = json::parse(as_json.out[0]);
  EXPECT_EQ(object["workers"].size(), 2u);
  EXPECT_EQ(object["queue_depth"].size(), 3u);

  auto nobody = run_process(
      {DISPATCH_CLI_BINARY, "status", "--broker", "tcp://127.0.0.1:1", "--timeout-ms", "300"},
      dir_);
  EXPECT_EQ(nobody.exit_code, 3);
}

// 1,000 lines: mostly good, some provider failures (400), some invalid lines.
struct BatchInput {
  std::set<std::string> valid_ids;
  std::set<std::string> failing_ids;
  std::set<std::size_t> invalid_line_numbers;
};

BatchInput write_batch_input(const std::string& path, int lines, const std::string& good_model) {
  BatchInput input;
  std::string text;
  for (int i = 1; i <= lines; ++i) {
    const std::string id = "req-" + std::to_string(i);
    if (i % 97 == 0) {
      text += "{\"custom_id\": \"broken-" + std::to_string(i) + "\", \"method\": \n";
      input.invalid_line_numbers.insert(static_cast<std::size_t>(i));
      continue;
    }
    if (i % 101 == 0) {
      text += json{{"custom_id", id},
                   {"method", "POST"},
                   {"url", "/v1/chat/completions"},
                   {"body",
                    {{"model", "no-slash-model"},
                     {"messages", json::array({{{"role", "user"}, {"content", "x"}}})}}}}
                  .dump() +
              "\n";
      input.invalid_line_numbers.insert(static_cast<std::size_t>(i));
      continue;
    }
    const bool failing = i % 10 == 0;
    const std::string model = failing ? "openai/m~status=400" : good_model;
    text += json{{"custom_id", id},
                 {"method", "POST"},
                 {"url", "/v1/chat/completions"},
                 {"body",
                  {{"model", model},
                   {"messages",
                    json::array({{{"role", "user"}, {"content", "line " + std::to_string(i)}}})},
                   {"max_tokens", 8}}}}
                .dump() +
            "\n";
    input.valid_ids.insert(id);
    if (failing) input.failing_ids.insert(id);
  }
  write_file(path, text);
  return input;
}

struct OutputIds {
  std::map<std::string, int> counts;  // custom_id -> lines carrying it
  bool all_lines_whole = true;        // the file ends with a newline
};

OutputIds count_output_ids(const std::string& path) {
  OutputIds ids;
  const auto text = read_file(path);
  ids.all_lines_whole = text.empty() || text.back() == '\n';
  std::istringstream stream(text);
  std::string line;
  while (std::getline(stream, line)) {
    const auto object = json::parse(line);
    ++ids.counts[object["custom_id"].get<std::string>()];
  }
  return ids;
}

TEST_F(ClientIntegrationTest, BatchOfAThousandLines) {
  const auto input = write_batch_input(dir_.file("in.jsonl"), 1000, "ollama/llama3.2");
  auto result = run_process({DISPATCH_CLI_BINARY, "batch", dir_.file("in.jsonl"), "-o",
                             dir_.file("out.jsonl"), "--broker", frontend(), "--concurrency", "64"},
                            dir_);
  EXPECT_EQ(result.exit_code, 0) << result.err;
  const auto [counts, whole] = count_output_ids(dir_.file("out.jsonl"));
  EXPECT_TRUE(whole);
  EXPECT_EQ(counts.size(), input.valid_ids.size());
  for (const auto& id : input.valid_ids) EXPECT_EQ(counts.count(id) ? counts.at(id) : 0, 1) << id;
  for (const auto number : input.invalid_line_numbers) {
    EXPECT_NE(result.err.find("line " + std::to_string(number) + ": "), std::string::npos)
        << "line " << number << " not reported";
  }
  // Provider failures are error lines with the provider's status.
  std::istringstream stream(read_file(dir_.file("out.jsonl")));
  std::string line;
  std::size_t errors = 0;
  while (std::getline(stream, line)) {
    const auto object = json::parse(line);
    const auto id = object["custom_id"].get<std::string>();
    if (input.failing_ids.count(id) != 0) {
      ++errors;
      EXPECT_EQ(object["error"]["code"], "invalid_request") << line;
      EXPECT_EQ(object["response"]["status_code"], 400) << line;
    } else {
      EXPECT_TRUE(object["error"].is_null()) << line;
      EXPECT_EQ(object["response"]["status_code"], 200);
      EXPECT_EQ(object["response"]["body"]["object"], "chat.completion");
    }
  }
  EXPECT_EQ(errors, input.failing_ids.size());
  EXPECT_NE(result.err.find("batch summary: total 1000 | succeeded " +
                            std::to_string(input.valid_ids.size() - input.failing_ids.size()) +
                            " | failed " + std::to_string(input.failing_ids.size())),
            std::string::npos)
      << result.err;
}

TEST_F(ClientIntegrationTest, BatchKilledMidwayResumesWithoutLossOrDuplicates) {
  const auto input =
      write_batch_input(dir_.file("in.jsonl"), 1000, "openai/gpt-4o-mini~latency_ms=15");
  const auto output = dir_.file("out.jsonl");
  {
    ChildOptions options;
    options.stderr_path = dir_.file("killed-stderr.txt");
    options.capture_stdout = false;
    auto child = ChildProcess::spawn({DISPATCH_CLI_BINARY, "batch", dir_.file("in.jsonl"), "-o",
                                      output, "--broker", frontend(), "--concurrency", "16"},
                                     options);
    // Kill once a good part of the output exists, but well before the end.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    bool enough = false;
    while (std::chrono::steady_clock::now() < deadline && child.running()) {
      std::error_code ec;
      const auto size = std::filesystem::file_size(output, ec);
      if (!ec && size > 20'000) {
        enough = true;
        break;
      }
      std::this_thread::sleep_for(milliseconds(2));
    }
    ASSERT_TRUE(enough) << "the batch ended or stalled before it could be killed";
    child.send_signal(SIGKILL);
    const auto status = child.wait_for_exit(milliseconds(5000));
    ASSERT_TRUE(status.has_value());
    EXPECT_TRUE(status->signaled);
  }
  const auto partial = count_output_ids(output).counts;
  ASSERT_LT(partial.size(), input.valid_ids.size()) << "the kill came too late to test resume";

  auto rerun = run_process({DISPATCH_CLI_BINARY, "batch", dir_.file("in.jsonl"), "-o", output,
                            "--broker", frontend(), "--concurrency", "16"},
                           dir_);
  EXPECT_EQ(rerun.exit_code, 0) << rerun.err;
  EXPECT_NE(rerun.err.find("skipped " + std::to_string(partial.size()) + " (already done)"),
            std::string::npos)
      << rerun.err;
  const auto [counts, whole] = count_output_ids(output);
  EXPECT_TRUE(whole);
  EXPECT_EQ(counts.size(), input.valid_ids.size());
  for (const auto& id : input.valid_ids) EXPECT_EQ(counts.count(id) ? counts.at(id) : 0, 1) << id;
}

TEST_F(ClientIntegrationTest, SecondBatchOnTheSameOutputIsRefused) {
  write_batch_input(dir_.file("in.jsonl"), 300, "openai/gpt-4o-mini~latency_ms=20");
  ChildOptions options;
  options.stderr_path = dir_.file("first-stderr.txt");
  options.capture_stdout = false;
  auto first =
      ChildProcess::spawn({DISPATCH_CLI_BINARY, "batch", dir_.file("in.jsonl"), "-o",
                           dir_.file("out.jsonl"), "--broker", frontend(), "--concurrency", "4"},
                          options);
  // The first run holds the lock from before it writes its first line.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    std::error_code ec;
    if (std::filesystem::file_size(dir_.file("out.jsonl"), ec) > 0 && !ec) break;
    std::this_thread::sleep_for(milliseconds(2));
  }
  auto second = run_process({DISPATCH_CLI_BINARY, "batch", dir_.file("in.jsonl"), "-o",
                             dir_.file("out.jsonl"), "--broker", frontend()},
                            dir_);
  EXPECT_EQ(second.exit_code, 4);
  EXPECT_NE(second.err.find("locked"), std::string::npos) << second.err;
  first.kill();  // on purpose: the CLI has no clean stop, and this run is not needed any more
}

TEST_F(ClientIntegrationTest, ExamplesRunAgainstTheFakeProvider) {
  auto simple = run_process({SIMPLE_DEMO_BINARY, frontend()}, dir_);
  EXPECT_EQ(simple.exit_code, 0) << simple.err;
  ASSERT_FALSE(simple.out.empty());
  EXPECT_EQ(simple.out[0].rfind("Response: reply to: Hello, how are you?", 0), 0u);
  bool usage_line = false;
  for (const auto& line : simple.out)
    usage_line = usage_line || line.rfind("Usage: prompt_tokens=", 0) == 0;
  EXPECT_TRUE(usage_line);

  auto simple_env = run_process({SIMPLE_DEMO_BINARY}, dir_, {"DISPATCH_BROKER=" + frontend()});
  EXPECT_EQ(simple_env.exit_code, 0) << simple_env.err;

  auto demo = run_process({DEMO_BINARY, frontend()}, dir_, {"DEMO_PROVIDERS=ollama,openai,claude"});
  EXPECT_EQ(demo.exit_code, 0) << demo.err;
  std::string all;
  for (const auto& line : demo.out) all += line + "\n";
  EXPECT_NE(all.find("== streaming"), std::string::npos);
  EXPECT_NE(all.find("as expected: model_not_available"), std::string::npos) << all;

  auto unreachable = run_process({SIMPLE_DEMO_BINARY, "tcp://127.0.0.1:1"}, dir_);
  EXPECT_NE(unreachable.exit_code, 0);
}

}  // namespace
}  // namespace dispatch
