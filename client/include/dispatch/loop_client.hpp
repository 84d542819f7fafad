#pragma once

// The client library without a thread of its own, for programs that already run an event loop
// (dispatch-gateway runs one per HTTP thread): the caller's loop waits on two descriptors and a
// timer, and every callback runs on the caller's thread. dispatch::Client does the same work on
// an I/O thread of its own, which costs two thread hand-offs per job (the caller's thread to the
// I/O thread and back); at a thousand requests a second on a small machine those wake-ups
// are most of the latency a gateway adds.
//
// Driving it (every call from the one thread that owns it):
//   - wait until either of descriptors() is readable, or until the time process() returned;
//     then call process(). The descriptors are ZeroMQ's ZMQ_FD: edge-triggered, so wait for
//     them again only after process() returned `again == false`; when it returned true, call
//     it again without waiting (it stopped early under a flood of messages).
//   - call process() after submit(), cancel() and request_status() too (they only queue).
//   - generation() changes when the socket was replaced (the broker went silent, or a refused
//     handshake and new work): the descriptors change with it; wait on the new ones.
// Callbacks (on_done, on_event, status) run inside process() or the destructor.

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "dispatch/client.hpp"
#include "dispatch/common/result.hpp"

namespace zmq {
class context_t;
}

namespace dispatch {

namespace detail {
class BrokerConnection;
}

class LoopClient {
 public:
  // `context`: the ZeroMQ context its socket lives in (one context with one I/O thread can
  // serve many LoopClients). Throws std::invalid_argument as Client's constructor does.
  LoopClient(const ClientOptions& options, zmq::context_t& context);
  // Cancels unfinished jobs at the broker (best effort, 200 ms) and ends them with
  // CancelledError "client_shutdown".
  ~LoopClient();
  LoopClient(const LoopClient&) = delete;
  LoopClient& operator=(const LoopClient&) = delete;

  // Queues a job and returns its id (128 bits from the OS CSPRNG, as Client's). Callbacks as
  // Client::dispatch_async's, on this thread; `on_event` also asks for chunks.
  std::string submit(const DispatchRequest& request, CompletionCallback on_done,
                     StreamCallback on_event = {});
  // Cancels a job by id; unknown or finished ids are ignored.
  void cancel(const std::string& job_id);
  // The broker's status, or the error (network / broker_unreachable after `timeout`, or the
  // handshake's refusal).
  using StatusDone = std::function<void(Result<protocol::StatusReply, protocol::Error>)>;
  void request_status(std::chrono::milliseconds timeout, StatusDone done);

  struct Progress {
    bool again = false;  // call process() again now, without waiting
    Clock::time_point next_due = Clock::time_point::max();  // call it by then at the latest
  };
  Progress process();

  // The DEALER's and its handshake monitor's ZMQ_FD.
  std::array<int, 2> descriptors() const;
  uint64_t generation() const noexcept;
  // Jobs submitted and not yet finished.
  std::size_t in_flight() const noexcept;
  const Clock& clock() const noexcept { return clock_; }

 private:
  Clock& clock_;
  DefaultRandom own_random_;  // resubmission jitter when options.random is null
  std::unique_ptr<detail::BrokerConnection> connection_;
};

}  // namespace dispatch
