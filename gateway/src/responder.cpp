#include "dispatch/gateway/responder.hpp"

#include <fmt/format.h>

#include "dispatch/formats/json_text.hpp"
#include "dispatch/gateway/http_text.hpp"

namespace dispatch::gateway {

namespace {

// The job id as the SDKs look for it: x-request-id (OpenAI's) and request-id (Anthropic's).
void add_request_id(ResponseHead& head, Api api, std::string_view job_id) {
  head.headers.emplace_back("x-request-id", std::string(job_id));
  if (api == Api::anthropic) head.headers.emplace_back("request-id", std::string(job_id));
}

std::string label_of(const protocol::Target& target) {
  return target.provider + "/" + target.model;
}

}  // namespace

JobResponder::JobResponder(ResponderOptions options) : options_(std::move(options)) {
  if (!options_.stream) return;
  if (options_.api == Api::openai) {
    openai_.emplace("chatcmpl-" + options_.job_id, options_.created, label_of(options_.target),
                    options_.include_usage);
  } else {
    anthropic_.emplace("msg_" + options_.job_id, label_of(options_.target));
  }
}

std::string JobResponder::on_event(const StreamEvent& event) {
  if (complete_ || !options_.stream) return {};
  switch (event.type) {
    case StreamEvent::Type::chunk: {
      auto step = splicer_.on_chunk(AnswerDelta{event.content, event.thinking, event.tool_calls});
      if (step.verdict == StreamSplicer::Verdict::diverged) {
        cancel_job_ = true;  // the job still runs, but nothing it says can be sent any more
        return divergence();
      }
      return step.delta.empty() ? std::string() : stream_piece(step.delta);
    }
    case StreamEvent::Type::reset:
      last_reset_reason_ = event.reason;
      splicer_.on_reset();
      return {};
    case StreamEvent::Type::gap:
      splicer_.on_gap();
      return {};
  }
  return {};
}

std::string JobResponder::on_outcome(const DispatchOutcome& outcome) {
  if (complete_) return {};
  if (!outcome.ok()) {
    const formats::HttpError error = formats::http_error_from(outcome.error->wire());
    return head_sent_ ? fail_stream(error) : whole_error(error);
  }
  const DispatchResponse& response = *outcome.response;
  if (!options_.stream) return whole_answer(response);
  const StreamSplicer::Step step = splicer_.on_final(response);
  if (step.verdict == StreamSplicer::Verdict::diverged) return divergence();
  std::string out = step.delta.empty() ? std::string() : stream_piece(step.delta);
  out += stream_end(response);
  return out;
}

void JobResponder::frame(std::string& out, std::string_view events) const {
  if (options_.http10) {
    out += events;
  } else {
    append_chunk(out, events);
  }
}

std::string JobResponder::stream_piece(const AnswerDelta& delta) {
  std::string out;
  std::string events;
  if (!head_sent_) {
    head_sent_ = true;
    status_ = 200;
    ResponseHead head{200,
                      "text/event-stream; charset=utf-8",
                      std::nullopt,
                      options_.keep_alive,
                      options_.http10,
                      {{"cache-control", "no-cache"}, {"x-accel-buffering", "no"}}};
    add_request_id(head, options_.api, options_.job_id);
    head.headers.emplace_back("x-dispatch-provider", options_.target.provider);
    head.headers.emplace_back("x-dispatch-model", options_.target.model);
    out = render_head(head);
    if (anthropic_) anthropic_->start(events);
  }
  if (openai_) {
    openai_->delta(events, delta.content, delta.thinking, delta.tool_calls);
  } else {
    anthropic_->delta(events, delta.content, delta.thinking, delta.tool_calls);
  }
  frame(out, events);
  return out;
}

std::string JobResponder::stream_end(const DispatchResponse& response) {
  // An empty answer has sent nothing yet: the head and the opening events go out now.
  std::string out = head_sent_ ? std::string() : stream_piece(AnswerDelta{});
  // A comment line, which every SSE reader skips: what the job took, for people and logs.
  // The cost, which the head could not carry (it went out before the answer), is here too.
  std::string events = fmt::format(
      ": dispatch job={} answered_by={}/{} attempts={} resets={} splices={}{}\n\n", options_.job_id,
      response.provider, response.model, response.attempts.size(), splicer_.resets_after_send(),
      splicer_.splices(), response.cost_usd ? fmt::format(" cost_usd={}", *response.cost_usd) : "");
  if (openai_) {
    openai_->finish(events, response);
  } else {
    anthropic_->finish(events, response);
  }
  frame(out, events);
  if (!options_.http10) out += kLastChunk;
  complete_ = true;
  close_after_ = !options_.keep_alive || options_.http10;
  return out;
}

std::string JobResponder::fail_stream(const formats::HttpError& error) {
  std::string out;
  frame(out, openai_ ? formats::openai_error_event(error)
                     : formats::anthropic_error_event(error, options_.job_id));
  complete_ = true;
  stream_failed_ = true;
  close_after_ = true;  // and no last chunk: the transfer itself is broken
  return out;
}

std::string JobResponder::divergence() {
  diverged_ = true;
  const std::string reason = last_reset_reason_.empty() ? "restarted" : last_reset_reason_;
  return fail_stream(formats::http_error(
      502,
      "the answer restarted after part of it was sent (" + reason +
          ") and the new answer differs from what was sent; send the request again",
      "stream_diverged"));
}

std::string JobResponder::whole_answer(const DispatchResponse& response) {
  const std::string body =
      formats::dump_line(options_.api == Api::openai ? formats::chat_completion_body(response)
                                                     : formats::anthropic_message_body(response));
  ResponseHead head{200, "application/json", body.size(), options_.keep_alive, options_.http10, {}};
  add_request_id(head, options_.api, options_.job_id);
  head.headers.emplace_back("x-dispatch-provider", response.provider);
  head.headers.emplace_back("x-dispatch-model", response.model);
  head.headers.emplace_back("x-dispatch-attempts", std::to_string(response.attempts.size()));
  if (response.cost_usd) {
    head.headers.emplace_back("x-dispatch-cost-usd", fmt::format("{}", *response.cost_usd));
  }
  std::string out = render_head(head);
  out += body;
  status_ = 200;
  complete_ = true;
  close_after_ = !options_.keep_alive;
  return out;
}

std::string JobResponder::whole_error(const formats::HttpError& error) {
  status_ = options_.api == Api::anthropic ? error.status_for_anthropic() : error.status;
  complete_ = true;
  close_after_ = !options_.keep_alive;
  return error_response(options_.api, error, options_.keep_alive, options_.http10, options_.job_id);
}

std::string error_response(Api api, const formats::HttpError& error, bool keep_alive, bool http10,
                           std::string_view request_id,
                           std::vector<std::pair<std::string_view, std::string>> extra_headers) {
  const std::string body = api == Api::openai ? formats::openai_error_body(error)
                                              : formats::anthropic_error_body(error, request_id);
  ResponseHead head;
  head.status = api == Api::anthropic ? error.status_for_anthropic() : error.status;
  head.content_length = body.size();
  head.keep_alive = keep_alive;
  head.http10 = http10;
  head.headers = std::move(extra_headers);
  if (!request_id.empty()) add_request_id(head, api, request_id);
  if (error.retry_after_s > 0) {
    head.headers.emplace_back("retry-after", std::to_string(error.retry_after_s));
  }
  std::string out = render_head(head);
  out += body;
  return out;
}

std::string body_response(int status, std::string_view content_type, std::string_view body,
                          bool keep_alive, bool http10) {
  std::string out =
      render_head(ResponseHead{status, content_type, body.size(), keep_alive, http10, {}});
  out += body;
  return out;
}

}  // namespace dispatch::gateway
