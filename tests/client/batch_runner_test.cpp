// run_batch end to end against the in-process FakeBroker: output lines, invalid lines,
// failures, resume (including a torn last line), the output lock, concurrency bound and a
// broker that never answers.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>

#include "dispatch/cli/batch.hpp"
#include "dispatch/cli/exit_codes.hpp"
#include "dispatch/common/fd.hpp"
#include "support/fake_broker.hpp"

namespace dispatch::cli {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;
using test::FakeBroker;

class TempDir {
 public:
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "dispatch-batch-XXXXXX").string();
    path_ = ::mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

std::string input_line(const std::string& custom_id, const std::string& model,
                       const std::string& prompt) {
  return json{
      {"custom_id", custom_id},
      {"method", "POST"},
      {"url", "/v1/chat/completions"},
      {"body",
       {{"model", model}, {"messages", json::array({{{"role", "user"}, {"content", prompt}}})}}}}
      .dump();
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// custom_id -> output line, failing the test on a duplicate or a malformed line.
std::map<std::string, json> output_by_id(const std::string& path) {
  std::map<std::string, json> lines;
  const auto text = read_file(path);
  EXPECT_TRUE(text.empty() || text.back() == '\n');
  std::istringstream stream(text);
  std::string line;
  while (std::getline(stream, line)) {
    auto object = json::parse(line);
    const auto id = object["custom_id"].get<std::string>();
    EXPECT_EQ(lines.count(id), 0u) << "duplicate " << id;
    lines[id] = std::move(object);
  }
  return lines;
}

BatchOptions options_for(const FakeBroker& broker, const TempDir& dir) {
  BatchOptions options;
  options.input_path = dir.file("in.jsonl");
  options.output_path = dir.file("out.jsonl");
  options.client.broker_endpoint = broker.endpoint();
  options.client.ack_timeout = milliseconds(100);
  options.client.max_ack_timeout = milliseconds(100);
  options.client.heartbeat_interval = milliseconds(100);
  options.client.max_submits = 3;
  options.plain_progress_interval = milliseconds(50);
  return options;
}

TEST(BatchRunnerTest, WritesOneLinePerValidInputAndReportsInvalidOnes) {
  FakeBroker broker;
  TempDir dir;
  std::string input;
  for (int i = 0; i < 50; ++i)
    input += input_line("ok-" + std::to_string(i), "openai/gpt", "q" + std::to_string(i)) + "\n";
  input += input_line("fail-1", "openai/error:invalid_request:400", "x") + "\n";
  input += input_line("fail-2", "openai/error:unsupported_provider", "x") + "\n";
  input += "{broken json\n";                                  // line 53
  input += "\n";                                              // blank: ignored
  input += input_line("ok-3", "openai/gpt", "again") + "\n";  // line 55: duplicate
  input += input_line("no-slash", "gpt-4o", "x") + "\n";      // line 56
  input += R"({"custom_id":"get","method":"GET","url":"/v1/chat/completions","body":{}})"
           "\n";
  write_file(dir.file("in.jsonl"), input);

  std::ostringstream err;
  auto options = options_for(broker, dir);
  options.concurrency = 8;
  const int code = run_batch(options, err, false);
  EXPECT_EQ(code, exit_code::ok) << err.str();

  const auto lines = output_by_id(dir.file("out.jsonl"));
  ASSERT_EQ(lines.size(), 52u);
  for (int i = 0; i < 50; ++i) {
    const auto& line = lines.at("ok-" + std::to_string(i));
    EXPECT_TRUE(line["error"].is_null());
    EXPECT_EQ(line["id"], "batch_req_" + std::to_string(i + 1));
    EXPECT_EQ(line["response"]["status_code"], 200);
    EXPECT_EQ(line["response"]["body"]["choices"][0]["message"]["content"],
              "echo: q" + std::to_string(i));
    EXPECT_EQ(line["response"]["body"]["model"], "openai/gpt");
  }
  EXPECT_EQ(lines.at("fail-1")["error"]["code"], "invalid_request");
  EXPECT_EQ(lines.at("fail-1")["response"]["status_code"], 400);
  EXPECT_EQ(lines.at("fail-2")["error"]["code"], "unsupported_provider");
  EXPECT_TRUE(lines.at("fail-2")["response"].is_null());

  const auto log = err.str();
  EXPECT_NE(log.find("line 53: invalid JSON"), std::string::npos) << log;
  EXPECT_NE(log.find("line 55: duplicate custom_id 'ok-3' (first on line 4)"), std::string::npos);
  EXPECT_NE(log.find("line 56: custom_id 'no-slash': body.model"), std::string::npos);
  EXPECT_NE(log.find("line 57: custom_id 'get': method must be \"POST\""), std::string::npos);
  EXPECT_NE(log.find("batch summary: total 56 | succeeded 50 | failed 2 | skipped 0 (already "
                     "done) | invalid 4"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("tokens: prompt 150 | completion 250 | total 400"), std::string::npos);
  EXPECT_NE(log.find("progress "), std::string::npos);
  // Batch jobs go in at batch priority.
  for (const auto& job : broker.submits()) EXPECT_EQ(job.submit.priority, Priority::batch);
}

TEST(BatchRunnerTest, ResumeSkipsDoneLinesAndCutsATornTail) {
  FakeBroker broker;
  TempDir dir;
  std::string input;
  for (int i = 0; i < 20; ++i)
    input += input_line("r" + std::to_string(i), "ollama/llama3.2", "p") + "\n";
  write_file(dir.file("in.jsonl"), input);
  // A previous run finished r0..r4, then was killed while writing r5's line.
  std::string previous;
  for (int i = 0; i < 5; ++i) {
    previous += json{{"id", "batch_req_" + std::to_string(i + 1)},
                     {"custom_id", "r" + std::to_string(i)},
                     {"response", {{"status_code", 200}}},
                     {"error", nullptr}}
                    .dump() +
                "\n";
  }
  write_file(dir.file("out.jsonl"), previous + R"({"id":"batch_req_6","custom_id":"r5","respo)");

  std::ostringstream err;
  EXPECT_EQ(run_batch(options_for(broker, dir), err, false), exit_code::ok) << err.str();
  const auto lines = output_by_id(dir.file("out.jsonl"));
  EXPECT_EQ(lines.size(), 20u);
  // r0..r4 were not sent again (counted by custom_id: a slow run may resubmit a job).
  std::set<std::string> sent;
  for (const auto& job : broker.submits()) sent.insert(job.request.metadata.at("custom_id"));
  EXPECT_EQ(sent.size(), 15u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(sent.count("r" + std::to_string(i)), 0u);
  const auto submits_before = broker.submit_count();
  EXPECT_NE(err.str().find("removed a torn last line"), std::string::npos);
  EXPECT_NE(err.str().find("skipped 5 (already done)"), std::string::npos);

  // A third run has nothing left to do.
  std::ostringstream again;
  EXPECT_EQ(run_batch(options_for(broker, dir), again, false), exit_code::ok);
  EXPECT_EQ(broker.submit_count(), submits_before);
  EXPECT_EQ(output_by_id(dir.file("out.jsonl")).size(), 20u);
  EXPECT_NE(again.str().find("skipped 20 (already done)"), std::string::npos);
}

TEST(BatchRunnerTest, ASecondRunOnTheSameOutputIsRefused) {
  FakeBroker broker;
  TempDir dir;
  write_file(dir.file("in.jsonl"), input_line("a", "openai/gpt", "x") + "\n");
  UniqueFd holder(::open(dir.file("out.jsonl").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  ASSERT_TRUE(holder.valid());
  ASSERT_EQ(::flock(holder.get(), LOCK_EX | LOCK_NB), 0);
  std::ostringstream err;
  EXPECT_EQ(run_batch(options_for(broker, dir), err, false), exit_code::output_locked);
  EXPECT_NE(err.str().find("is locked by another `dispatch batch` run"), std::string::npos);
  EXPECT_EQ(broker.submit_count(), 0u);
  holder.reset();  // releases the lock
  std::ostringstream after;
  EXPECT_EQ(run_batch(options_for(broker, dir), after, false), exit_code::ok) << after.str();
}

TEST(BatchRunnerTest, ConcurrencyBoundsJobsInFlight) {
  FakeBroker broker;
  std::atomic<int> outstanding{0};
  std::atomic<int> most{0};
  broker.set_on_submit([&](FakeBroker& b, const FakeBroker::Submitted& job) {
    b.accept(job);
    const int now = ++outstanding;
    int seen = most.load();
    while (now > seen && !most.compare_exchange_weak(seen, now)) {
    }
    // Answer on a later turn of the broker loop, so that jobs overlap.
    b.post([&outstanding, job](FakeBroker& broker_again) {
      --outstanding;
      broker_again.send_result(job.route, job.submit.job_id,
                               FakeBroker::echo_response(job.request));
    });
  });
  TempDir dir;
  std::string input;
  for (int i = 0; i < 40; ++i)
    input += input_line("c" + std::to_string(i), "openai/gpt", "x") + "\n";
  write_file(dir.file("in.jsonl"), input);
  auto options = options_for(broker, dir);
  options.concurrency = 3;
  std::ostringstream err;
  EXPECT_EQ(run_batch(options, err, false), exit_code::ok) << err.str();
  EXPECT_LE(most.load(), 3);
  EXPECT_GE(most.load(), 2);
  EXPECT_EQ(output_by_id(dir.file("out.jsonl")).size(), 40u);
}

TEST(BatchRunnerTest, UnreachableBrokerWritesNothingAndExits3ThenResumes) {
  FakeBroker broker;
  broker.set_silent(true);
  TempDir dir;
  std::string input;
  for (int i = 0; i < 10; ++i)
    input += input_line("u" + std::to_string(i), "openai/gpt", "x") + "\n";
  write_file(dir.file("in.jsonl"), input);
  std::ostringstream err;
  auto options = options_for(broker, dir);
  options.concurrency = 4;
  EXPECT_EQ(run_batch(options, err, false), exit_code::broker_unreachable);
  EXPECT_EQ(read_file(dir.file("out.jsonl")), "");
  EXPECT_NE(err.str().find("incomplete 10"), std::string::npos) << err.str();
  EXPECT_NE(err.str().find("rerun the same command to resume"), std::string::npos);

  broker.set_silent(false);
  std::ostringstream again;
  EXPECT_EQ(run_batch(options, again, false), exit_code::ok) << again.str();
  EXPECT_EQ(output_by_id(dir.file("out.jsonl")).size(), 10u);
}

TEST(BatchRunnerTest, QueueFullLinesAreSentAgainNotRecordedAsFailures) {
  FakeBroker broker;
  std::mutex mutex;
  std::map<std::string, int> refusals;  // job id -> queue_full answers so far
  broker.set_on_submit([&](FakeBroker& b, const FakeBroker::Submitted& job) {
    const auto& custom_id = job.request.metadata.at("custom_id");
    int refused = 0;
    {
      std::lock_guard lock(mutex);
      refused = refusals[custom_id]++;
    }
    // "stuck" is refused forever; the others twice.
    if (custom_id == "stuck" || refused < 2) {
      b.send_rejected(job.route, protocol::Rejected{job.submit.job_id, ErrorKind::queue_full,
                                                    "queue_full", "queue is full"});
      return;
    }
    FakeBroker::answer(b, job);
  });
  TempDir dir;
  std::string input;
  for (int i = 0; i < 5; ++i)
    input += input_line("q" + std::to_string(i), "openai/gpt", "x") + "\n";
  input += input_line("stuck", "openai/gpt", "x") + "\n";
  write_file(dir.file("in.jsonl"), input);
  auto options = options_for(broker, dir);
  options.queue_full_backoff = milliseconds(10);
  options.max_queue_full_retries = 3;
  std::ostringstream err;
  EXPECT_EQ(run_batch(options, err, false), exit_code::failed) << err.str();
  const auto lines = output_by_id(dir.file("out.jsonl"));
  EXPECT_EQ(lines.size(), 5u);  // "stuck" is left for a rerun, not written as a failure
  EXPECT_EQ(lines.count("stuck"), 0u);
  for (const auto& [id, line] : lines) EXPECT_TRUE(line["error"].is_null()) << id;
  EXPECT_NE(err.str().find("incomplete 1"), std::string::npos) << err.str();
  std::lock_guard lock(mutex);
  EXPECT_EQ(refusals["stuck"], 4);  // the first try and 3 retries
}

TEST(BatchRunnerTest, TtyProgressIsARedrawnBar) {
  FakeBroker broker;
  TempDir dir;
  write_file(dir.file("in.jsonl"), input_line("t", "openai/gpt", "x") + "\n" + "oops\n");
  std::ostringstream err;
  EXPECT_EQ(run_batch(options_for(broker, dir), err, true), exit_code::ok);
  const auto log = err.str();
  EXPECT_NE(log.find("\r\x1b[K["), std::string::npos);
  EXPECT_NE(log.find("line 2: invalid JSON"), std::string::npos);
}

}  // namespace
}  // namespace dispatch::cli
