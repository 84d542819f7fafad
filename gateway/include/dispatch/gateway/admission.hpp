#pragma once

// From an HTTP request to a job, without I/O: who is asking (API key), what they ask for (the
// body in the API's format, the x-dispatch-* headers), which target that is (aliases, default
// provider) and whether their key may use it. Every refusal is an HttpError in the status the
// API's SDKs expect.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "dispatch/client.hpp"
#include "dispatch/common/result.hpp"
#include "dispatch/formats/http_errors.hpp"
#include "dispatch/formats/json_text.hpp"
#include "dispatch/gateway/auth.hpp"
#include "dispatch/gateway/config.hpp"
#include "dispatch/gateway/responder.hpp"

namespace dispatch::gateway {

// The request headers admission reads; absent ones are nullopt.
struct RequestHeaders {
  std::optional<std::string_view> authorization;
  std::optional<std::string_view> x_api_key;
  std::optional<std::string_view> fallbacks;      // x-dispatch-fallbacks: "p/m, p/m" ("" = none)
  std::optional<std::string_view> timeout_ms;     // x-dispatch-timeout-ms
  std::optional<std::string_view> priority;       // x-dispatch-priority
  std::optional<std::string_view> traceparent{};  // W3C trace context, passed on with the job
};

struct Admission {
  DispatchRequest request;
  bool stream = false;
  bool include_usage = false;
  protocol::Target target;  // the primary target
  std::string key_name;     // "" without keys
  std::string tenant;       // the key's tenant, "" without keys
  // Why the request's traceparent was ignored ("" when it had none or it was valid). The W3C
  // spec asks a receiver to ignore an invalid one and start a fresh trace, which the broker
  // does; the gateway only logs it.
  std::string traceparent_problem{};
};

class Admitter {
 public:
  explicit Admitter(const GatewayConfig& config);

  bool authentication_enabled() const noexcept { return keys_.enabled(); }
  // The caller's key; null when the gateway has no keys. 401 for a missing or unknown key.
  Result<const ApiKey*, formats::HttpError> authenticate(const RequestHeaders& headers) const;
  // An authenticated caller's chat request (POST /v1/chat/completions or /v1/messages).
  Result<Admission, formats::HttpError> admit(Api api, const ApiKey* key,
                                              const RequestHeaders& headers,
                                              std::string_view body) const;
  // GET /v1/models: every alias and configured provider/model the key may use, in OpenAI's
  // list format, or Anthropic's when the caller speaks it.
  std::string models_body(Api api, const ApiKey* key) const;

 private:
  KeyRing keys_;
  formats::ModelCatalog catalog_;
  formats::JsonLimits json_limits_;
};

}  // namespace dispatch::gateway
