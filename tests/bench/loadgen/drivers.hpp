#pragma once

// The two ways the load generator sends jobs: through the dispatcher's client library, or as
// plain OpenAI chat-completions HTTP requests (to the fake provider directly, or to a peer
// gateway in front of it). Both follow a RunPlan and fill one JobRecord per job.

#include <cstdint>
#include <string>
#include <vector>

#include "job_record.hpp"

namespace dispatch::bench {

struct HttpTarget {
  std::string url;                   // the full chat-completions URL
  std::vector<std::string> headers;  // "Name: value"
  std::string body;                  // the request body, identical for every job
};

// One thread: libcurl multi (socket API) on epoll, with a timerfd for the send schedule.
void run_http(const HttpTarget& target, const RunPlan& plan, std::vector<JobRecord>& records,
              RunObserver& observer);

struct DispatchTarget {
  std::string broker_endpoint;
  std::string provider;
  std::string model;
  std::string prompt;
  std::size_t clients = 1;  // Client objects (each one I/O thread); jobs are spread round-robin
  uint32_t retry_count = 0;
  uint32_t ack_timeout_ms = 1000;
  std::string
      broker_key_file;  // CURVE: the broker's NAME.key ("" with curve_secret_file: plaintext)
  std::string curve_secret_file;  // CURVE: our own NAME.key_secret
};

// The calling thread sends on schedule; completions arrive on the clients' I/O threads.
void run_dispatch(const DispatchTarget& target, const RunPlan& plan,
                  std::vector<JobRecord>& records, RunObserver& observer);

// The OpenAI chat-completions body both targets' requests amount to.
std::string openai_chat_body(const std::string& model, const std::string& prompt, bool stream);

// SSE scanning for the HTTP target: feeds raw bytes, counts `data:` events that carry content
// and notices the `[DONE]` terminator. Lines may be split across calls.
class SseScanner {
 public:
  // Returns how many content events the bytes completed.
  uint32_t feed(const char* data, std::size_t size);
  bool done() const { return done_; }
  void reset() {
    line_.clear();
    done_ = false;
  }

 private:
  std::string line_;
  bool done_ = false;
};

}  // namespace dispatch::bench
