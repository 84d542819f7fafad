#pragma once

// A BrokerLink driven by the test: it records every submit and cancel, and the test answers
// jobs (from its own thread, as the client library's I/O thread would) — or, in auto-answer
// mode, every job is answered at once.

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "dispatch/gateway/broker_link.hpp"

namespace dispatch::gateway::test {

class ScriptedLink final : public BrokerLink {
 public:
  struct Job {
    std::string id;
    std::string tenant;
    protocol::Request request;
    protocol::Priority priority = protocol::Priority::interactive;
    CompletionCallback on_done;
    StreamCallback on_event;
  };

  std::string submit_for_tenant(const std::string& tenant, DispatchRequest request,
                                CompletionCallback on_done, StreamCallback on_event) override;
  void cancel(const std::string& job_id) override;
  std::optional<protocol::StatusReply> status(std::chrono::milliseconds timeout) override;

  // The index-th job submitted (0-based), waiting for it at most `timeout`.
  std::optional<Job> job(std::size_t index,
                         std::chrono::milliseconds timeout = std::chrono::seconds(10));
  bool wait_for_cancel(const std::string& job_id,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10));
  std::size_t submitted() const;

  // Answers every job at once with `content` ("reply to: <last message>" when empty).
  void auto_answer(bool on) { auto_answer_ = on; }
  void set_status(std::optional<protocol::StatusReply> status);
  // Drops the recorded jobs and their callbacks. Call it while the server's io_context still
  // exists: the callbacks hold its executors.
  void forget_jobs();

  static DispatchOutcome success(const Job& job, std::string content);
  static DispatchOutcome failure(const Job& job, protocol::ErrorKind kind, std::string code = {});
  static StreamEvent chunk(std::string content);
  static StreamEvent reset(std::string reason);

 private:
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<Job> jobs_;
  std::vector<std::string> cancelled_;
  std::optional<protocol::StatusReply> status_;
  bool auto_answer_ = false;
};

}  // namespace dispatch::gateway::test
