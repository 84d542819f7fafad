#pragma once

// What the HTTP client has received of a streamed answer, and what it may still receive when
// the answer restarts (a worker's reset: a retry or a fallback after chunks were sent).
//
// A reset before anything was sent changes nothing. After that, the restarted answer is held
// back while it repeats what was sent; once it has caught up (its text begins with exactly
// what the client has, as a deterministic model's retry does), only the new part is sent and
// the client sees one seamless answer — a splice. If the texts differ anywhere, the stream
// has diverged and must end with an error: the client's partial answer can no longer be
// completed honestly.
//
// After a gap (the broker dropped chunks for a slow reader) nothing more is relayed; the
// final answer completes the stream if it extends what was sent.

#include <cstdint>
#include <string>
#include <vector>

#include "dispatch/protocol/types.hpp"
#include "dispatch/response.hpp"

namespace dispatch::gateway {

// A piece of an answer: text, thinking and tool-call fragments (as in a chunk).
struct AnswerDelta {
  std::string content;
  std::string thinking;
  std::vector<protocol::ToolCallDelta> tool_calls;

  bool empty() const { return content.empty() && thinking.empty() && tool_calls.empty(); }
};

class StreamSplicer {
 public:
  enum class Verdict {
    send,      // send `delta` (may be empty: nothing to send yet)
    diverged,  // the restarted answer differs from what was sent: end the stream with an error
  };
  struct Step {
    Verdict verdict = Verdict::send;
    AnswerDelta delta;
  };

  Step on_chunk(AnswerDelta chunk);
  void on_reset();
  void on_gap();
  // The final answer: what is still missing (after a reset or a gap), or diverged.
  Step on_final(const DispatchResponse& response);

  bool sent_anything() const;
  uint32_t splices() const noexcept { return splices_; }
  uint32_t resets_after_send() const noexcept { return resets_after_send_; }

 private:
  struct Call {
    std::string id;
    std::string name;
    std::string arguments;
  };
  struct Transcript {
    std::string content;
    std::string thinking;
    std::vector<Call> calls;  // by tool-call index
    void append(const AnswerDelta& delta);
  };
  enum class Mode { live, replaying, gapped, failed };

  Step replay(const AnswerDelta& chunk);
  // `next` extends (or is extended by) what was sent, field by field.
  bool consistent_with_sent(const Transcript& next) const;
  bool caught_up(const Transcript& next) const;
  // What `next` has beyond what was sent; then `next` becomes what was sent.
  AnswerDelta take_excess(const Transcript& next);

  Mode mode_ = Mode::live;
  Transcript sent_;
  Transcript replayed_;
  uint32_t splices_ = 0;
  uint32_t resets_after_send_ = 0;
};

}  // namespace dispatch::gateway
