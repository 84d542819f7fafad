#pragma once

// One job's HTTP response, without I/O: the job's stream events and its outcome in, the bytes
// to write out. Non-streamed requests get one response; streamed ones a head on their first
// piece of the answer, then events in the API's format. Streams never end as a truncated
// success: a failure after bytes were sent ends with the API's error event and no terminator
// ([DONE] / message_stop), and the connection is closed without the chunked body's last chunk,
// so a client that ignored the event still sees a broken transfer.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dispatch/client.hpp"
#include "dispatch/formats/anthropic.hpp"
#include "dispatch/formats/http_errors.hpp"
#include "dispatch/formats/openai.hpp"
#include "dispatch/gateway/splice.hpp"

namespace dispatch::gateway {

enum class Api { openai, anthropic };

struct ResponderOptions {
  Api api = Api::openai;
  bool stream = false;
  bool include_usage = false;
  std::string job_id;
  protocol::Target target;  // the primary target (streams name it before the answer is known)
  int64_t created = 0;      // Unix seconds
  bool keep_alive = true;   // the connection may serve another request afterwards
  bool http10 = false;      // no chunked encoding: a stream ends by closing the connection
};

class JobResponder {
 public:
  explicit JobResponder(ResponderOptions options);

  // Bytes to write for one stream event (often empty: nothing to send yet).
  std::string on_event(const StreamEvent& event);
  // Bytes to write for the job's end; the response is then complete.
  std::string on_outcome(const DispatchOutcome& outcome);

  bool complete() const noexcept { return complete_; }
  // After the bytes, close the connection (a failed stream, an HTTP/1.0 stream, no keep-alive).
  bool close_after() const noexcept { return close_after_; }
  // The stream diverged before the job ended: its answer is of no more use.
  bool cancel_job() const noexcept { return cancel_job_; }
  bool head_sent() const noexcept { return head_sent_; }
  bool diverged() const noexcept { return diverged_; }
  // The stream ended with an error event after bytes were sent.
  bool stream_failed() const noexcept { return stream_failed_; }
  int status() const noexcept { return status_; }
  const StreamSplicer& splicer() const noexcept { return splicer_; }

 private:
  std::string stream_piece(const AnswerDelta& delta);
  std::string stream_end(const DispatchResponse& response);
  std::string fail_stream(const formats::HttpError& error);
  std::string divergence();
  std::string whole_answer(const DispatchResponse& response);
  std::string whole_error(const formats::HttpError& error);
  // Wraps event text for the transfer: a chunk (HTTP/1.1) or as is (HTTP/1.0).
  void frame(std::string& out, std::string_view events) const;

  ResponderOptions options_;
  StreamSplicer splicer_;
  std::optional<formats::OpenAiChunkWriter> openai_;
  std::optional<formats::AnthropicStreamWriter> anthropic_;
  std::string last_reset_reason_;
  bool head_sent_ = false;
  bool complete_ = false;
  bool close_after_ = false;
  bool cancel_job_ = false;
  bool diverged_ = false;
  bool stream_failed_ = false;
  int status_ = 0;
};

// The whole response for a request that never became a job (authentication, a refused body,
// routing, limits), in the API's error format. `request_id` becomes x-request-id when set.
std::string error_response(
    Api api, const formats::HttpError& error, bool keep_alive, bool http10,
    std::string_view request_id = {},
    std::vector<std::pair<std::string_view, std::string>> extra_headers = {});

// A whole response with a body (models, health, metrics).
std::string body_response(int status, std::string_view content_type, std::string_view body,
                          bool keep_alive, bool http10);

}  // namespace dispatch::gateway
