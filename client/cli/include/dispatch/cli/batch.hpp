#pragma once

// `dispatch batch`: OpenAI Batch API lines in, OpenAI Batch API lines out.
//
// Input line:  {"custom_id": "...", "method": "POST", "url": "/v1/chat/completions",
//               "body": {"model": "provider/model", "messages": [...], ...}}
// Output line: {"id": "batch_req_<input line number>", "custom_id": "...",
//               "response": {"status_code": 200, "request_id": "<job id>",
//                            "body": {<chat.completion>}}, "error": null}
//          or  {"id": ..., "custom_id": ..., "response": null | {"status_code": <provider
//               status>, "request_id", "body": {"error": {...}}}, "error": {"code": <kind>,
//               "message": ...}}

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>

#include "dispatch/client.hpp"
#include "dispatch/common/result.hpp"
#include "dispatch/protocol/types.hpp"

namespace dispatch::cli {

struct BatchItem {
  std::size_t line_number = 0;  // 1-based
  std::string custom_id;
  protocol::Request request;
};

// Why a line was refused, e.g. "invalid JSON: ..." or "body.model must be \"provider/model\"".
struct LineProblem {
  std::string reason;
};

// Parses and validates one non-blank input line (duplicates are the runner's business). The
// body is read by dispatch::formats::request_from_openai_body (client/formats).
Result<BatchItem, LineProblem> parse_batch_line(std::string_view line, std::size_t line_number);

// Output lines, each ending in '\n'.
std::string format_success_line(std::size_t line_number, const std::string& custom_id,
                                const DispatchResponse& response);
std::string format_error_line(std::size_t line_number, const std::string& custom_id,
                              const DispatchError& error, const std::string& job_id = {});

// What an existing output file already holds.
struct ResumeState {
  std::unordered_set<std::string> done;  // custom_ids with an output line
  uint64_t valid_bytes = 0;              // length up to and including the last '\n'
  bool torn_tail = false;                // bytes after the last '\n' (a killed write)
  std::size_t unreadable_lines = 0;      // complete lines that are not JSON with a custom_id
};
ResumeState scan_output_text(std::string_view text);

// Progress and summary text.
struct BatchCounters {
  std::size_t total = 0;  // non-blank input lines
  std::size_t succeeded = 0;
  std::size_t failed = 0;
  std::size_t skipped = 0;     // already in the output
  std::size_t invalid = 0;     // refused input lines
  std::size_t incomplete = 0;  // not finished in this run (broker unreachable, client deadline)
  std::size_t in_flight = 0;
  uint64_t prompt_tokens = 0;
  uint64_t completion_tokens = 0;
  double cost_usd = 0;     // sum of the answers' cost_usd
  std::size_t priced = 0;  // answers that had a cost_usd (the others had no price)
  double elapsed_seconds = 0;

  std::size_t finished() const { return succeeded + failed + skipped + invalid + incomplete; }
};
// TTY: "\r\x1b[K[#####-----] 512/1000  51% | ok 500 | failed 12 | in flight 64 | 123.4/s | ETA 4s"
// else: "progress 512/1000 (51%) ok 500 failed 12 in_flight 64 rate 123.4/s eta 4s\n"
std::string format_progress(const BatchCounters& counters, bool tty);
std::string format_summary(const BatchCounters& counters);
std::string format_eta(double seconds);

struct BatchOptions {
  std::string input_path;
  std::string output_path;
  std::size_t concurrency = 64;
  Priority priority = Priority::batch;
  std::string traceparent;  // a valid W3C traceparent every job joins; "": none given
  ClientOptions client;
  std::chrono::milliseconds tty_progress_interval{200};     // ~5 updates/s on a terminal
  std::chrono::milliseconds plain_progress_interval{2000};  // log-friendly otherwise
  std::chrono::milliseconds fsync_interval{1000};
  // A line the broker refuses with queue_full is sent again after this (doubling, at most
  // 20x), up to max_queue_full_retries times; then it is left for a rerun.
  std::chrono::milliseconds queue_full_backoff{250};
  uint32_t max_queue_full_retries = 8;
};

// Runs the batch; progress, line problems and the summary go to `err`. Returns an exit code.
int run_batch(const BatchOptions& options, std::ostream& err, bool err_is_tty);

}  // namespace dispatch::cli
