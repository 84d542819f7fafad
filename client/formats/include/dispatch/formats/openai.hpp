#pragma once

// OpenAI's chat completions format: the request body in, the `chat.completion` answer, the
// `chat.completion.chunk` stream and the error object out. Shared by `dispatch batch` (the
// Batch API wraps the same bodies) and dispatch-gateway's POST /v1/chat/completions.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/common/result.hpp"
#include "dispatch/formats/chat_request.hpp"
#include "dispatch/formats/request_error.hpp"
#include "dispatch/protocol/types.hpp"
#include "dispatch/response.hpp"

namespace dispatch::formats {

// The body of POST /v1/chat/completions. Understood: messages (roles system, developer, user,
// assistant, tool; content as a string or parts of type text / image_url with a base64 data:
// URL or an http(s) URL; tool_calls; tool_call_id), temperature, top_p, max_tokens /
// max_completion_tokens (the newer name wins), stop, n (1 only), tools, tool_choice,
// response_format, user, metadata, stream, stream_options.include_usage, and the extensions
// of read_extensions. Unknown fields are ignored, as OpenAI's SDKs expect of compatible servers.
Result<ChatRequest, RequestError> parse_openai_chat(const nlohmann::json& body);

// The batch CLI's form: `model` and each fallback must be "provider/model" (a fallback of ""
// or "provider/" means none); `stream` is ignored (a batch line is answered whole).
Result<protocol::Request, RequestError> request_from_openai_body(const nlohmann::json& body);

// The `chat.completion` object. `model` is the provider/model that answered; `id` the
// provider's response id, else "chatcmpl-<job id>".
nlohmann::json chat_completion_body(const DispatchResponse& response);

// Writes one streamed answer as `data: {chat.completion.chunk}\n\n` events. Every chunk has the
// same id and created time; the role rides on the first delta; tool-call deltas carry their
// index (and id, type and name on a call's first delta).
class OpenAiChunkWriter {
 public:
  OpenAiChunkWriter(std::string id, int64_t created, std::string model, bool include_usage);

  // Appends one chunk event to `out`.
  void delta(std::string& out, std::string_view content, std::string_view thinking,
             const std::vector<protocol::ToolCallDelta>& tool_calls);
  // The last delta (empty, with finish_reason), the usage chunk (empty choices) when
  // include_usage was asked for, then `data: [DONE]`. Its model is the one that answered.
  void finish(std::string& out, const DispatchResponse& response);

 private:
  void append_prefix(std::string& out, std::string_view model) const;

  std::string id_;
  int64_t created_;
  std::string model_;
  bool include_usage_;
  bool role_sent_ = false;
};

}  // namespace dispatch::formats
