#include "scripted_link.hpp"

namespace dispatch::gateway::test {

std::string ScriptedLink::submit_for_tenant(const std::string& tenant, DispatchRequest request,
                                            CompletionCallback on_done, StreamCallback on_event) {
  Job job;
  {
    std::lock_guard lock(mutex_);
    job = Job{"job-" + std::to_string(jobs_.size()),
              tenant,
              request.wire(),
              request.priority(),
              std::move(on_done),
              std::move(on_event)};
    jobs_.push_back(job);
  }
  changed_.notify_all();
  if (auto_answer_) {
    const auto& messages = job.request.messages;
    job.on_done(success(job, "reply to: " + (messages.empty() ? "" : messages.back().content)));
  }
  return job.id;
}

void ScriptedLink::cancel(const std::string& job_id) {
  {
    std::lock_guard lock(mutex_);
    cancelled_.push_back(job_id);
  }
  changed_.notify_all();
}

std::optional<protocol::StatusReply> ScriptedLink::status(std::chrono::milliseconds) {
  std::lock_guard lock(mutex_);
  return status_;
}

void ScriptedLink::set_status(std::optional<protocol::StatusReply> status) {
  std::lock_guard lock(mutex_);
  status_ = std::move(status);
}

void ScriptedLink::forget_jobs() {
  std::lock_guard lock(mutex_);
  jobs_.clear();
}

std::optional<ScriptedLink::Job> ScriptedLink::job(std::size_t index,
                                                   std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!changed_.wait_for(lock, timeout, [&] { return jobs_.size() > index; })) return std::nullopt;
  return jobs_[index];
}

bool ScriptedLink::wait_for_cancel(const std::string& job_id, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] {
    return std::find(cancelled_.begin(), cancelled_.end(), job_id) != cancelled_.end();
  });
}

std::size_t ScriptedLink::submitted() const {
  std::lock_guard lock(mutex_);
  return jobs_.size();
}

DispatchOutcome ScriptedLink::success(const Job& job, std::string content) {
  DispatchResponse response;
  response.content = std::move(content);
  response.provider = job.request.provider;
  response.model = job.request.model;
  response.finish_reason = "stop";
  response.usage = {2, 3, 5};
  response.job_id = job.id;
  response.attempts.resize(1);
  return DispatchOutcome{job.id, std::move(response), nullptr};
}

DispatchOutcome ScriptedLink::failure(const Job& job, protocol::ErrorKind kind, std::string code) {
  protocol::Error error;
  error.kind = kind;
  error.code = std::move(code);
  error.message = "scripted failure";
  return DispatchOutcome{job.id, std::nullopt, make_dispatch_error(error)};
}

StreamEvent ScriptedLink::chunk(std::string content) {
  StreamEvent event;
  event.type = StreamEvent::Type::chunk;
  event.content = std::move(content);
  return event;
}

StreamEvent ScriptedLink::reset(std::string reason) {
  StreamEvent event;
  event.type = StreamEvent::Type::reset;
  event.reason = std::move(reason);
  return event;
}

}  // namespace dispatch::gateway::test
