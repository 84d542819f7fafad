#pragma once

// The client library: submit chat jobs to a dispatch-broker and get their answers.
//
//   dispatch::Client client({.broker_endpoint = "tcp://127.0.0.1:5555"});
//   auto request = dispatch::DispatchRequest(dispatch::Provider::ollama, "llama3.2",
//                                            {dispatch::Message::user("Hello, how are you?")})
//                      .with_temperature(0.7)
//                      .with_max_tokens(1000);
//   dispatch::DispatchResponse response = client.dispatch(request);  // or throws DispatchError
//
// Thread-safety: every public method of Client may be called from any number of threads at
// once. One Client keeps any number of jobs in flight on one connection: a background I/O
// thread owns the ZeroMQ socket and every other thread hands work to it through a
// mutex-protected queue and a wake-up descriptor. Prefer one Client per process.
//
// Reliability (see schemas/PROTOCOL.md):
//   * a job not acknowledged within ack_timeout is resubmitted under the same job id (the
//     broker deduplicates), with the wait doubling up to max_ack_timeout; after max_submits
//     unacknowledged submits the job fails with NetworkError, code "broker_unreachable";
//   * while jobs are unfinished the client heartbeats the broker; when the broker is silent
//     for `liveness` heartbeat intervals the socket is replaced and every unfinished job is
//     resubmitted; a new broker instance (new broker_id) also gets every unfinished job again;
//   * every job has a client-side deadline — the request's timeout_ms (or
//     default_request_timeout) plus its queue timeout plus deadline_allowance — after which it
//     fails with TimeoutError, code "client_deadline". Nothing waits forever.
//
// Security: against a broker started with --curve-secret, set broker_public_key and
// curve_keys (or call load_curve_keys). If the broker refuses the connection — our key is not
// listed, the wrong broker key, CURVE on one side only — every waiting job and status request
// fails at once with AuthenticationError (codes in errors.hpp, e.g. "broker_auth_refused",
// message "authentication refused by the broker at ENDPOINT"), not after the ack timeouts.

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <string>

#include "dispatch/common/clock.hpp"
#include "dispatch/common/result.hpp"
#include "dispatch/errors.hpp"
#include "dispatch/protocol/curve.hpp"
#include "dispatch/protocol/messages.hpp"
#include "dispatch/request.hpp"
#include "dispatch/response.hpp"

namespace dispatch {

inline constexpr const char* kDefaultBrokerEndpoint = "tcp://127.0.0.1:5555";

struct ClientOptions {
  std::string broker_endpoint = kDefaultBrokerEndpoint;
  // CURVE, for a broker started with --curve-secret: the broker's public key (Z85, the
  // `public-key` of its NAME.key) and this client's own key pair (Z85, from its
  // NAME.key_secret; the public half must be in the broker's --allow-clients directory). Both
  // empty: plaintext. One without the other makes the Client constructor throw
  // std::invalid_argument. curve_keys holds a secret: keep it out of logs.
  std::string broker_public_key{};
  protocol::CurveKeys curve_keys{};
  // Resubmit a job the broker has not acknowledged after this long; doubles per resubmit.
  std::chrono::milliseconds ack_timeout{1000};
  std::chrono::milliseconds max_ack_timeout{4000};
  // Submits of one job without an ack before it fails as broker_unreachable (1 s + 2 s + 4 s
  // with the defaults: a dead broker is reported after about 7 s).
  uint32_t max_submits = 3;
  // Heartbeats while jobs are unfinished; the broker is presumed gone after `liveness`
  // silent intervals (4 tolerates a lost heartbeat or two without flapping).
  std::chrono::milliseconds heartbeat_interval{1000};
  uint32_t liveness = 4;
  // The worker's own default total deadline, assumed for requests that set no timeout_ms.
  std::chrono::milliseconds default_request_timeout{30000};
  // Added to each job's client-side deadline: queue wait (when the request sets no queue
  // timeout), redelivery after a worker death, transport. Large on purpose: the broker and
  // the worker end jobs long before; this only guards against a lost answer.
  std::chrono::milliseconds deadline_allowance{60000};
  // After cancel(), how long to wait for the broker's confirmation before ending the job
  // locally with CancelledError.
  std::chrono::milliseconds cancel_grace{2000};
  // Queue timeout sent with jobs whose request sets none (0: the broker's default).
  uint32_t queue_timeout_ms = 0;
  // Injectable for tests; null means the system clock / a generator seeded from the OS.
  // `random` only jitters resubmission waits: job ids always come from the OS CSPRNG
  // (random_hex_id: 128 bits, 32 lowercase hex digits), whatever is injected here.
  Clock* clock = nullptr;
  Random* random = nullptr;

  // Fills broker_public_key and curve_keys from certificate files, as `dispatch keygen` writes
  // them: the broker's NAME.key and this client's own NAME.key_secret (refused when group- or
  // world-readable). Both paths empty: plaintext (nothing changes); one alone is an error. The
  // error names the file and the fix.
  Result<void, std::string> load_curve_keys(const std::string& broker_key_file,
                                            const std::string& secret_key_file);
};

// Either the response or the typed error of one finished job.
struct DispatchOutcome {
  std::string job_id;
  std::optional<DispatchResponse> response;
  std::shared_ptr<const DispatchError> error;  // set when !response

  bool ok() const noexcept { return response.has_value(); }
  // The response, or throws the typed error.
  DispatchResponse take() &&;
};

using StreamCallback = std::function<void(const StreamEvent&)>;
using CompletionCallback = std::function<void(DispatchOutcome)>;

class ClientEngine;  // the I/O thread and its state (client/src)

// A job in flight, as dispatch_async returns it.
class PendingDispatch {
 public:
  PendingDispatch(std::string job_id, std::future<DispatchResponse> future,
                  std::weak_ptr<ClientEngine> engine);
  PendingDispatch(PendingDispatch&&) noexcept = default;
  PendingDispatch& operator=(PendingDispatch&&) noexcept = default;

  const std::string& job_id() const noexcept { return job_id_; }
  // Waits for the answer; throws the typed error. Call once.
  DispatchResponse get() { return future_.get(); }
  void wait() const { future_.wait(); }
  std::future_status wait_for(std::chrono::milliseconds timeout) const {
    return future_.wait_for(timeout);
  }
  bool ready() const { return wait_for(std::chrono::milliseconds(0)) == std::future_status::ready; }
  // Ends the job: the future then throws CancelledError (unless the answer won the race).
  void cancel();
  std::future<DispatchResponse>& future() noexcept { return future_; }

 private:
  std::string job_id_;
  std::future<DispatchResponse> future_;
  std::weak_ptr<ClientEngine> engine_;
};

class Client {
 public:
  explicit Client(ClientOptions options = {});
  // Cancels unfinished jobs at the broker (best effort); their futures throw CancelledError
  // with code "client_shutdown".
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Blocks until the answer; throws a DispatchError subclass. A request with stream set is
  // still answered as a whole (use dispatch_stream to see chunks).
  DispatchResponse dispatch(const DispatchRequest& request);

  // Returns at once; many may be in flight from any threads.
  PendingDispatch dispatch_async(const DispatchRequest& request);

  // Callback form for high-volume callers (the batch runner). Returns the job id.
  // `on_done` — and `on_event` when given, which also asks for chunks — run on the client's
  // I/O thread: they must be quick, must not block, and must not call dispatch() or
  // dispatch_stream() (dispatch_async and cancel are fine).
  std::string dispatch_async(const DispatchRequest& request, CompletionCallback on_done,
                             StreamCallback on_event = {});

  // Streams the answer: `on_event` runs on the calling thread for each chunk, reset or gap,
  // in order, as they arrive. Returns the final response (its content is the complete answer
  // even when chunks were lost) or throws. If on_event throws, the job is cancelled and the
  // exception propagates.
  DispatchResponse dispatch_stream(const DispatchRequest& request, const StreamCallback& on_event);

  // Cancels a job by id; unknown or finished ids are ignored.
  void cancel(const std::string& job_id);

  // The broker's view. Throws NetworkError (code "broker_unreachable") when no broker
  // answers within `timeout`.
  protocol::StatusReply status(std::chrono::milliseconds timeout = std::chrono::seconds(3));

  // Jobs submitted and not yet finished.
  std::size_t in_flight() const;

  const ClientOptions& options() const noexcept { return options_; }

 private:
  ClientOptions options_;
  std::shared_ptr<ClientEngine> engine_;
};

}  // namespace dispatch
