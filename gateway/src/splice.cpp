#include "dispatch/gateway/splice.hpp"

#include <algorithm>
#include <string_view>

namespace dispatch::gateway {

namespace {

// Tool-call indexes come from a provider through the worker: bound what one can make us hold.
constexpr uint32_t kMaxTrackedCalls = 1024;

// One of the two is a prefix of the other.
bool prefix_related(std::string_view a, std::string_view b) {
  const std::size_t n = std::min(a.size(), b.size());
  return a.substr(0, n) == b.substr(0, n);
}

}  // namespace

void StreamSplicer::Transcript::append(const AnswerDelta& delta) {
  content += delta.content;
  thinking += delta.thinking;
  for (const auto& piece : delta.tool_calls) {
    if (piece.index >= kMaxTrackedCalls) continue;
    if (piece.index >= calls.size()) calls.resize(piece.index + 1);
    Call& call = calls[piece.index];
    if (!piece.id.empty()) call.id = piece.id;
    if (!piece.name.empty()) call.name = piece.name;
    call.arguments += piece.arguments;
  }
}

bool StreamSplicer::sent_anything() const {
  return !sent_.content.empty() || !sent_.thinking.empty() || !sent_.calls.empty();
}

StreamSplicer::Step StreamSplicer::on_chunk(AnswerDelta chunk) {
  switch (mode_) {
    case Mode::live:
      sent_.append(chunk);
      return Step{Verdict::send, std::move(chunk)};
    case Mode::replaying:
      return replay(chunk);
    case Mode::gapped:
      return Step{};  // the final answer completes the stream
    case Mode::failed:
      return Step{Verdict::diverged, {}};
  }
  return Step{};
}

void StreamSplicer::on_reset() {
  if (mode_ == Mode::gapped || mode_ == Mode::failed) return;
  replayed_ = Transcript{};
  if (!sent_anything()) return;  // nothing reached the client: the restart is invisible
  ++resets_after_send_;
  mode_ = Mode::replaying;
}

void StreamSplicer::on_gap() {
  if (mode_ != Mode::failed) mode_ = Mode::gapped;
}

StreamSplicer::Step StreamSplicer::replay(const AnswerDelta& chunk) {
  replayed_.append(chunk);
  if (!consistent_with_sent(replayed_)) {
    mode_ = Mode::failed;
    return Step{Verdict::diverged, {}};
  }
  if (!caught_up(replayed_)) return Step{};  // still repeating what the client has
  mode_ = Mode::live;
  ++splices_;
  return Step{Verdict::send, take_excess(replayed_)};
}

StreamSplicer::Step StreamSplicer::on_final(const DispatchResponse& response) {
  if (mode_ == Mode::live) return Step{};
  if (mode_ == Mode::failed) return Step{Verdict::diverged, {}};
  Transcript final_answer;
  final_answer.content = response.content;
  final_answer.thinking = response.thinking;
  for (const auto& call : response.tool_calls) {
    final_answer.calls.push_back(Call{call.id, call.name, call.arguments});
  }
  if (!consistent_with_sent(final_answer) || !caught_up(final_answer)) {
    mode_ = Mode::failed;
    return Step{Verdict::diverged, {}};
  }
  if (mode_ == Mode::replaying) ++splices_;
  mode_ = Mode::live;
  return Step{Verdict::send, take_excess(final_answer)};
}

bool StreamSplicer::consistent_with_sent(const Transcript& next) const {
  if (!prefix_related(sent_.content, next.content)) return false;
  if (!prefix_related(sent_.thinking, next.thinking)) return false;
  const std::size_t shared = std::min(sent_.calls.size(), next.calls.size());
  for (std::size_t i = 0; i < shared; ++i) {
    const Call& sent = sent_.calls[i];
    const Call& other = next.calls[i];
    // Ids are the provider's per attempt and differ on a retry; the client keeps the first.
    if (!sent.name.empty() && !other.name.empty() && sent.name != other.name) return false;
    if (!prefix_related(sent.arguments, other.arguments)) return false;
  }
  return true;
}

bool StreamSplicer::caught_up(const Transcript& next) const {
  if (next.content.size() < sent_.content.size()) return false;
  if (next.thinking.size() < sent_.thinking.size()) return false;
  if (next.calls.size() < sent_.calls.size()) return false;
  for (std::size_t i = 0; i < sent_.calls.size(); ++i) {
    if (next.calls[i].arguments.size() < sent_.calls[i].arguments.size()) return false;
    if (next.calls[i].name.empty() && !sent_.calls[i].name.empty()) return false;
  }
  return true;
}

AnswerDelta StreamSplicer::take_excess(const Transcript& next) {
  AnswerDelta excess;
  excess.content = next.content.substr(sent_.content.size());
  excess.thinking = next.thinking.substr(sent_.thinking.size());
  for (std::size_t i = 0; i < next.calls.size(); ++i) {
    const Call& call = next.calls[i];
    const auto index = static_cast<uint32_t>(i);
    if (i < sent_.calls.size()) {
      Call& sent = sent_.calls[i];
      std::string more = call.arguments.substr(sent.arguments.size());
      if (!more.empty()) excess.tool_calls.push_back({index, "", "", std::move(more)});
      sent.arguments = call.arguments;
    } else {
      excess.tool_calls.push_back({index, call.id, call.name, call.arguments});
      sent_.calls.push_back(call);
    }
  }
  sent_.content = next.content;
  sent_.thinking = next.thinking;
  return excess;
}

}  // namespace dispatch::gateway
