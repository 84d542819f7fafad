#include "tool_links.hpp"

#include <algorithm>
#include <tuple>

namespace dispatch::worker::detail {
namespace {

bool is_caller(const protocol::Message& message) {
  return message.role == "assistant" && !message.tool_calls.empty();
}

bool lacks_a_side(const protocol::Message& message) {
  return message.role == "tool" && (message.tool_call_id.empty() || message.tool_name.empty());
}

}  // namespace

ToolLinks::ToolLinks(const std::vector<protocol::Message>& messages) : messages_(messages) {
  if (std::any_of(messages.begin(), messages.end(), lacks_a_side)) build();
}

void ToolLinks::build() {
  caller_before_.reserve(messages_.size() + 1);
  uint32_t caller = 0;
  for (uint32_t m = 0; m < messages_.size(); ++m) {
    caller_before_.push_back(caller);
    const protocol::Message& message = messages_[m];
    for (uint32_t c = 0; c < message.tool_calls.size(); ++c) {
      by_id_.push_back({m, c});
      if (is_caller(message)) by_name_.push_back({m, c});
    }
    if (is_caller(message)) caller = m + 1;
  }
  caller_before_.push_back(caller);
  std::sort(by_id_.begin(), by_id_.end(), [this](CallRef a, CallRef b) {
    return std::forward_as_tuple(call_of(a).id, a.message, b.call) <
           std::forward_as_tuple(call_of(b).id, b.message, a.call);
  });
  std::sort(by_name_.begin(), by_name_.end(), [this](CallRef a, CallRef b) {
    return std::forward_as_tuple(a.message, call_of(a).name, a.call) <
           std::forward_as_tuple(b.message, call_of(b).name, b.call);
  });
}

std::string_view ToolLinks::name_for_call_id(std::size_t before, std::string_view call_id) const {
  // The first entry at or past (call_id, before); the one in front of it is the latest earlier
  // message's call with this id, and the first such call of that message (calls descend).
  const auto it = std::lower_bound(
      by_id_.begin(), by_id_.end(), before, [&](CallRef ref, std::size_t position) {
        const std::string_view id = call_of(ref).id;
        return id < call_id || (id == call_id && ref.message < position);
      });
  if (it == by_id_.begin()) return {};
  const CallRef found = *std::prev(it);
  if (call_of(found).id != call_id) return {};
  return call_of(found).name;
}

std::string_view ToolLinks::call_id_for_name(std::size_t before, std::string_view name) const {
  if (caller_before_.empty()) return {};
  const uint32_t caller = caller_before_[std::min(before, caller_before_.size() - 1)];
  if (caller == 0) return {};
  const uint32_t message = caller - 1;
  const auto it = std::lower_bound(
      by_name_.begin(), by_name_.end(), message, [&](CallRef ref, uint32_t wanted) {
        return ref.message < wanted || (ref.message == wanted && call_of(ref).name < name);
      });
  if (it == by_name_.end() || it->message != message || call_of(*it).name != name) return {};
  return call_of(*it).id;
}

}  // namespace dispatch::worker::detail
