#pragma once

// A tool result may name only one side of the call it answers - the call's id or the
// function's name - while a format needs the other (Ollama keys results on the name, the others
// on the id). The other side comes from the nearest earlier tool call. Found through one index
// over the request: a backwards scan per result would be quadratic in the number of messages,
// which a request of 100,000 results turns into minutes of a worker's only thread.

#include <cstdint>
#include <string_view>
#include <vector>

#include "dispatch/protocol/types.hpp"

namespace dispatch::worker::detail {

class ToolLinks {
 public:
  // Indexes only when some tool result lacks a side; `messages` must outlive this.
  explicit ToolLinks(const std::vector<protocol::Message>& messages);

  // The name of the call with this id in the nearest message before `before` that has one
  // (the first such call in that message); "" when none.
  std::string_view name_for_call_id(std::size_t before, std::string_view call_id) const;
  // The id of the first call named `name` in the nearest assistant message before `before`
  // that has tool calls; "" when that message has no such call, or there is no such message.
  std::string_view call_id_for_name(std::size_t before, std::string_view name) const;

 private:
  struct CallRef {
    uint32_t message;
    uint32_t call;
  };
  const protocol::ToolCall& call_of(CallRef ref) const {
    return messages_[ref.message].tool_calls[ref.call];
  }
  void build();

  const std::vector<protocol::Message>& messages_;
  std::vector<CallRef> by_id_;    // every call, by (id, message, call descending)
  std::vector<CallRef> by_name_;  // calls of assistant messages, by (message, name, call)
  // Per position: 1 + the nearest earlier assistant message with tool calls, 0 when none.
  std::vector<uint32_t> caller_before_;
};

}  // namespace dispatch::worker::detail
