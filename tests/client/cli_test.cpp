// The `dispatch` CLI in-process (run_cli) against the in-process FakeBroker: argument
// handling, output formats and exit codes.

#include <gtest/gtest.h>

#include <sstream>

#include "dispatch/cli/app.hpp"
#include "dispatch/cli/exit_codes.hpp"
#include "dispatch/cli/json_output.hpp"
#include "support/fake_broker.hpp"

namespace dispatch::cli {
namespace {

using nlohmann::json;
using test::FakeBroker;

struct Run {
  int code;
  std::string out;
  std::string err;
};

Run run(std::vector<std::string> args) {
  std::ostringstream out, err;
  args.insert(args.begin(), "dispatch");
  const int code = run_cli(args, CliStreams{out, err, false});
  return Run{code, out.str(), err.str()};
}

std::vector<json> json_lines(const std::string& text) {
  std::vector<json> lines;
  std::istringstream stream(text);
  std::string line;
  while (std::getline(stream, line)) {
    if (!line.empty()) lines.push_back(json::parse(line));
  }
  return lines;
}

TEST(CliTest, UsageErrorsExitWith2) {
  EXPECT_EQ(run({}).code, exit_code::usage);
  EXPECT_EQ(run({"chat", "--provider", "ollama", "hello"}).code, exit_code::usage);  // no --model
  EXPECT_EQ(run({"chat", "--provider", "p", "--model", "m", "--temperature", "9", "x"}).code,
            exit_code::usage);
  auto bad_fallback = run({"chat", "--provider", "p", "--model", "m", "--fallback", "/x", "hi"});
  EXPECT_EQ(bad_fallback.code, exit_code::usage);
  EXPECT_NE(bad_fallback.err.find("empty provider"), std::string::npos);
  EXPECT_EQ(run({"batch", "/nonexistent/in.jsonl", "-o", "/tmp/x"}).code, exit_code::usage);
  EXPECT_EQ(run({"frobnicate"}).code, exit_code::usage);
}

TEST(CliTest, HelpExitsZero) {
  auto help = run({"--help"});
  EXPECT_EQ(help.code, exit_code::ok);
  EXPECT_NE(help.out.find("Exit codes"), std::string::npos);
}

TEST(CliTest, ChatPrintsTheAnswer) {
  FakeBroker broker;
  auto result = run({"chat", "--broker", broker.endpoint(), "--provider", "ollama", "--model",
                     "llama3.2", "Hello, how are you?"});
  EXPECT_EQ(result.code, exit_code::ok) << result.err;
  EXPECT_EQ(result.out, "echo: Hello, how are you?\n");
}

TEST(CliTest, ChatOptionsReachTheRequest) {
  FakeBroker broker;
  auto result = run({"chat",
                     "--broker",
                     broker.endpoint(),
                     "--provider",
                     "openai",
                     "--model",
                     "gpt-4o",
                     "--fallback",
                     "claude/claude-3-5-haiku",
                     "--fallback",
                     "together/meta/llama-3",
                     "--temperature",
                     "0.3",
                     "--max-tokens",
                     "77",
                     "--top-p",
                     "0.8",
                     "--stop",
                     "END",
                     "--stop",
                     "STOP",
                     "--timeout-ms",
                     "9000",
                     "--retry-count",
                     "1",
                     "--system",
                     "Be brief.",
                     "--priority",
                     "normal",
                     "Hi"});
  ASSERT_EQ(result.code, exit_code::ok) << result.err;
  const auto submits = broker.submits();
  ASSERT_EQ(submits.size(), 1u);
  const auto& job = submits[0];
  EXPECT_EQ(job.submit.priority, protocol::Priority::normal);
  const auto& r = job.request;
  EXPECT_EQ(r.provider, "openai");
  EXPECT_EQ(r.model, "gpt-4o");
  ASSERT_TRUE(r.fallbacks.has_value());
  EXPECT_EQ(*r.fallbacks, (std::vector<protocol::Target>{{"claude", "claude-3-5-haiku"},
                                                         {"together", "meta/llama-3"}}));
  EXPECT_EQ(r.temperature, 0.3);
  EXPECT_EQ(r.max_tokens, 77u);
  EXPECT_EQ(r.top_p, 0.8);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"END", "STOP"}));
  EXPECT_EQ(r.timeout_ms, 9000u);
  EXPECT_EQ(r.retry_count, 1u);
  ASSERT_EQ(r.messages.size(), 2u);
  EXPECT_EQ(r.messages[0].role, "system");
  EXPECT_EQ(r.messages[1].content, "Hi");
}

TEST(CliTest, FallbackWithEmptyModelMeansNoFallback) {
  FakeBroker broker;
  ASSERT_EQ(run({"chat", "--broker", broker.endpoint(), "--provider", "openai", "--model", "m",
                 "--fallback", "claude/", "Hi"})
                .code,
            exit_code::ok);
  ASSERT_EQ(
      run({"chat", "--broker", broker.endpoint(), "--provider", "openai", "--model", "m", "Hi"})
          .code,
      exit_code::ok);
  ASSERT_EQ(run({"chat", "--broker", broker.endpoint(), "--provider", "openai", "--model", "m",
                 "--fallback", "", "Hi"})
                .code,
            exit_code::ok);
  const auto submits = broker.submits();
  ASSERT_EQ(submits.size(), 3u);
  ASSERT_TRUE(submits[0].request.fallbacks.has_value());
  EXPECT_TRUE(submits[0].request.fallbacks->empty());
  EXPECT_FALSE(submits[1].request.fallbacks.has_value());  // not given: worker default chain
  ASSERT_TRUE(submits[2].request.fallbacks.has_value());   // given empty: no fallback at all
  EXPECT_TRUE(submits[2].request.fallbacks->empty());
  // Options not given are not sent, so the worker's defaults apply.
  const auto& plain = submits[1].request;
  EXPECT_FALSE(plain.temperature.has_value());
  EXPECT_FALSE(plain.max_tokens.has_value());
  EXPECT_FALSE(plain.top_p.has_value());
  EXPECT_FALSE(plain.timeout_ms.has_value());
  EXPECT_FALSE(plain.retry_count.has_value());
}

TEST(CliTest, ChatJsonSuccessShape) {
  FakeBroker broker;
  auto result = run({"chat", "--broker", broker.endpoint(), "--provider", "ollama", "--model",
                     "llama3.2", "--json", "Hello"});
  ASSERT_EQ(result.code, exit_code::ok) << result.err;
  auto lines = json_lines(result.out);
  ASSERT_EQ(lines.size(), 1u);
  const auto& object = lines[0];
  EXPECT_EQ(object["content"], "echo: Hello");
  EXPECT_EQ(object["provider"], "ollama");
  EXPECT_EQ(object["model"], "llama3.2");
  EXPECT_EQ(object["usage"],
            (json{{"prompt_tokens", 3}, {"completion_tokens", 5}, {"total_tokens", 8}}));
  EXPECT_EQ(object["finish_reason"], "stop");
  ASSERT_EQ(object["attempts"].size(), 1u);
  EXPECT_EQ(object["attempts"][0]["outcome"], "ok");
  EXPECT_EQ(object["request_id"], "req-1");
  EXPECT_EQ(object["created_at"], 1'700'000'000);
  EXPECT_EQ(object["total_duration_ns"], 1'500'000);
  EXPECT_FALSE(object.contains("tool_calls"));
}

TEST(CliTest, ChatJsonFailureShapeAndExitCode) {
  FakeBroker broker;
  auto result = run({"chat", "--broker", broker.endpoint(), "--provider", "openai", "--model",
                     "error:invalid_request:400", "--json", "Hello"});
  EXPECT_EQ(result.code, exit_code::failed);
  auto lines = json_lines(result.out);
  ASSERT_EQ(lines.size(), 1u);
  const auto& error = lines[0]["error"];
  EXPECT_EQ(error["kind"], "invalid_request");
  EXPECT_EQ(error["message"], "scripted invalid_request");
  EXPECT_EQ(error["status"], 400);
  EXPECT_EQ(error["code"], "scripted");

  auto human = run({"chat", "--broker", broker.endpoint(), "--provider", "openai", "--model",
                    "error:timeout", "Hello"});
  EXPECT_EQ(human.code, exit_code::failed);
  EXPECT_EQ(human.out, "");
  EXPECT_EQ(human.err.rfind("error: timeout: scripted timeout", 0), 0u) << human.err;
}

TEST(CliTest, ChatStreamPrintsChunksThenTheRest) {
  FakeBroker broker;
  auto result = run({"chat", "--broker", broker.endpoint(), "--provider", "ollama", "--model",
                     "llama3.2", "--stream", "one two three"});
  ASSERT_EQ(result.code, exit_code::ok) << result.err;
  EXPECT_EQ(result.out, "echo: one two three\n");
}

TEST(CliTest, ChatStreamJsonEmitsEventsThenTheResult) {
  FakeBroker broker;
  auto result = run({"chat", "--broker", broker.endpoint(), "--provider", "ollama", "--model",
                     "llama3.2", "--stream", "--json", "one two"});
  ASSERT_EQ(result.code, exit_code::ok) << result.err;
  auto lines = json_lines(result.out);
  ASSERT_EQ(lines.size(), 4u);
  std::string joined;
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(lines[i]["event"], "chunk");
    EXPECT_EQ(lines[i]["seq"], i);
    joined += lines[i]["content"].get<std::string>();
  }
  EXPECT_EQ(joined, "echo: one two");
  EXPECT_EQ(lines[3]["content"], "echo: one two");
  EXPECT_FALSE(lines[3].contains("event"));
}

TEST(CliTest, ChatStreamShowsResetMarkerOnStderr) {
  FakeBroker broker;
  broker.set_on_submit([](FakeBroker& b, const FakeBroker::Submitted& job) {
    b.accept(job);
    b.send_chunk(job.route, {job.submit.job_id, 0, "wrong", "", {}});
    b.send_reset(job.route, {job.submit.job_id, 1, "fallback to claude/haiku"});
    b.send_chunk(job.route, {job.submit.job_id, 1, "right ", "", {}});
    auto response = FakeBroker::echo_response(job.request);
    response.content = "right answer";
    b.send_result(job.route, job.submit.job_id, response);
  });
  auto result = run({"chat", "--broker", broker.endpoint(), "--provider", "openai", "--model", "m",
                     "--stream", "q"});
  ASSERT_EQ(result.code, exit_code::ok) << result.err;
  EXPECT_EQ(result.out, "wrong\nright answer\n");
  EXPECT_NE(result.err.find("[stream restarted: fallback to claude/haiku]"), std::string::npos);
}

TEST(CliTest, StatusTableAndJson) {
  FakeBroker broker("b-status");
  auto table = run({"status", "--broker", broker.endpoint()});
  ASSERT_EQ(table.code, exit_code::ok) << table.err;
  EXPECT_NE(table.out.find("broker b-status  up 1m05s  in flight 3  results kept 12"),
            std::string::npos)
      << table.out;
  EXPECT_NE(table.out.find("queue: interactive 1, normal 0, batch 7  (limit 10000)"),
            std::string::npos);
  EXPECT_NE(table.out.find("WORKER"), std::string::npos);
  EXPECT_NE(table.out.find("host-a:100:ab12"), std::string::npos);
  EXPECT_NE(table.out.find("ollama,openai"), std::string::npos);
  EXPECT_NE(table.out.find("PROVIDER"), std::string::npos);

  auto as_json = run({"status", "--broker", broker.endpoint(), "--json"});
  ASSERT_EQ(as_json.code, exit_code::ok);
  auto object = json::parse(as_json.out);
  EXPECT_EQ(object["broker_id"], "b-status");
  EXPECT_EQ(object["queue_depth"], (json{{"interactive", 1}, {"normal", 0}, {"batch", 7}}));
  EXPECT_EQ(object["workers"][0]["providers"], (json{"ollama", "openai"}));
  EXPECT_EQ(object["providers"]["openai"]["succeeded"], 8);
}

TEST(CliTest, StatusShowsTheBrokerBoundsAndRejections) {
  protocol::StatusReply status;
  status.broker_id = "b";
  status.payload_bytes = 3u << 20;
  status.payload_bytes_limit = 512u << 20;
  status.rejected = {{"client_bytes", 5}, {"queue_bytes", 2}};
  status.broker_errors = {{"unknown_provider", 1}};
  status.failed_by_kind = {{"rate_limited", 3}, {"unsupported_provider", 1}};
  const std::string table = format_status_table(status);
  EXPECT_NE(table.find("failed by kind: rate_limited 3, unsupported_provider 1"), std::string::npos)
      << table;
  EXPECT_NE(table.find("payload held: 3.0 MiB  (limit 512.0 MiB)"), std::string::npos) << table;
  EXPECT_NE(table.find("rejected: client_bytes 5, queue_bytes 2"), std::string::npos) << table;
  EXPECT_NE(table.find("ended by the broker: unknown_provider 1"), std::string::npos) << table;
  const json object = status_to_json(status);
  EXPECT_EQ(object["payload_bytes_limit"], 512u << 20);
  EXPECT_EQ(object["rejected"], (json{{"client_bytes", 5}, {"queue_bytes", 2}}));
  EXPECT_EQ(object["broker_errors"], (json{{"unknown_provider", 1}}));
  EXPECT_EQ(object["failed_by_kind"], (json{{"rate_limited", 3}, {"unsupported_provider", 1}}));
  // An older broker sends none of them: no such lines.
  status = protocol::StatusReply{};
  status.broker_id = "old";
  EXPECT_EQ(format_status_table(status).find("payload held"), std::string::npos);
  EXPECT_EQ(format_status_table(status).find("rejected"), std::string::npos);
}

TEST(CliTest, StatusTableAndJsonShowQuotaKeys) {
  protocol::StatusReply status;
  status.broker_id = "b";
  protocol::QuotaStatus openai;
  openai.key = "openai";
  openai.rpm = 600;
  openai.tpm = 150000;
  openai.concurrency = 64;
  openai.requests_last_minute = 596;
  openai.tokens_last_minute = 141200;
  openai.running = 40;
  openai.waiting = 1100;
  protocol::QuotaStatus model;
  model.key = "openai/gpt-4o-mini";
  model.paused_ms = 1800;
  model.paused_reason = "rate_limited at worker vm:8476";
  model.breaker = "open";
  model.breaker_ms = 25000;
  status.quotas = {openai, model};
  const std::string table = format_status_table(status);
  EXPECT_NE(table.find("QUOTA"), std::string::npos) << table;
  EXPECT_NE(table.find("596/600"), std::string::npos) << table;
  EXPECT_NE(table.find("141200/150000"), std::string::npos) << table;
  EXPECT_NE(table.find("40/64"), std::string::npos) << table;
  EXPECT_NE(table.find("1.8s (rate_limited at worker vm:8476)"), std::string::npos) << table;
  EXPECT_NE(table.find("open 25.0s"), std::string::npos) << table;
  const json object = status_to_json(status);
  ASSERT_EQ(object["quotas"].size(), 2u);
  EXPECT_EQ(object["quotas"][0]["rpm"], 600.0);
  EXPECT_EQ(object["quotas"][0]["breaker"], "closed");
  EXPECT_TRUE(object["quotas"][0]["paused_ms"].is_null());
  EXPECT_EQ(object["quotas"][1]["paused_ms"], 1800);
  EXPECT_TRUE(object["quotas"][1]["rpm"].is_null());
  // No quota keys: no such table.
  status.quotas.clear();
  EXPECT_EQ(format_status_table(status).find("QUOTA"), std::string::npos);
}

// A CURVE broker: a non-admin identity sees the number of workers and its own counts only; an
// --insecure broker is flagged.
TEST(CliTest, StatusShowsAScopedReplyAndTheInsecureWarning) {
  protocol::StatusReply status;
  status.broker_id = "b";
  status.worker_count = 2;
  status.identity = "alice";
  status.clients["alice"] = protocol::ClientCounters{1, 2, 10, 6, 1, 0};
  std::string table = format_status_table(status);
  EXPECT_NE(table.find("you are: alice"), std::string::npos) << table;
  EXPECT_NE(table.find("workers: 2  (details, the queue and other clients: admins only)"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("CLIENT"), std::string::npos) << table;
  EXPECT_EQ(table.find("queue:"), std::string::npos) << table;
  const json object = status_to_json(status);
  EXPECT_EQ(object["worker_count"], 2);
  EXPECT_EQ(object["clients"]["alice"]["submitted"], 10);
  EXPECT_EQ(object["insecure"], false);

  status = protocol::StatusReply{};
  status.broker_id = "b";
  status.queue_depth = {0, 0, 0};
  status.insecure = true;
  table = format_status_table(status);
  EXPECT_EQ(table.rfind("WARNING: this broker runs without CURVE", 0), 0u) << table;
  EXPECT_NE(table.find("queue: interactive 0"), std::string::npos) << table;
}

TEST(CliTest, StatusWithoutBrokerExits3) {
  FakeBroker broker;
  broker.set_silent(true);
  auto result = run({"status", "--broker", broker.endpoint(), "--timeout-ms", "200"});
  EXPECT_EQ(result.code, exit_code::broker_unreachable);
  EXPECT_NE(result.err.find("no broker answered"), std::string::npos);
}

TEST(JsonOutputTest, EventShapes) {
  StreamEvent reset;
  reset.type = StreamEvent::Type::reset;
  reset.next_seq = 4;
  reset.reason = "r";
  EXPECT_EQ(event_to_json(reset), (json{{"event", "reset"}, {"next_seq", 4}, {"reason", "r"}}));
  StreamEvent gap;
  gap.type = StreamEvent::Type::gap;
  gap.expected_seq = 2;
  gap.seq = 5;
  EXPECT_EQ(event_to_json(gap), (json{{"event", "gap"}, {"expected_seq", 2}, {"seq", 5}}));
}

TEST(JsonOutputTest, DumpLineNeverThrowsOnBadUtf8) {
  EXPECT_NO_THROW(dump_line(json{{"content", std::string("bad \xff byte")}}));
}

TEST(JsonOutputTest, DurationFormatting) {
  EXPECT_EQ(format_duration_ms(250), "250ms");
  EXPECT_EQ(format_duration_ms(1500), "1.5s");
  EXPECT_EQ(format_duration_ms(65'000), "1m05s");
  EXPECT_EQ(format_duration_ms(7'500'000), "2h05m");
}

}  // namespace
}  // namespace dispatch::cli
