#pragma once

// Tells a peer of the broker (client library, `dispatch`, dispatch-worker) why the broker's end
// refused its connection, within one handshake instead of after a generic timeout. ZeroMQ does
// not surface handshake failures on the socket itself — messages just wait — so a socket
// monitor (an inproc PAIR fed by libzmq, polled by the owner's I/O loop) reports them:
//
//   HANDSHAKE_FAILED_AUTH (ZAP refused our key)    "authentication refused by the broker at E"
//   HANDSHAKE_FAILED_PROTOCOL, mechanism mismatch  we are plaintext: "the broker at E requires
//                                                  CURVE: give --broker-key and --curve-secret";
//                                                  we use CURVE: "the broker at E does not use
//                                                  CURVE"
//   HANDSHAKE_FAILED_NO_DETAIL, 3 times in a row   "CURVE handshake with the broker at E failed
//   with CURVE on (the broker hangs up on a HELLO  (wrong broker key?)"
//   it cannot decrypt: a wrong broker key)
//
// A CURVE peer facing a plaintext broker sees the mismatch as HANDSHAKE_FAILED_PROTOCOL only
// when it reads the broker's greeting before the broker hangs up; otherwise as NO_DETAIL, like
// a wrong key (libzmq 4.3.4: roughly one attempt in three). Requiring three silent failures
// makes that rare, and a mismatch once seen wins over later silent failures (carry_over).
//
// libzmq 4.3 keeps reconnecting after AUTH and NO_DETAIL failures (every reconnect_ivl, up to
// reconnect_ivl_max) but gives up after a mechanism mismatch; owners replace the socket to try
// again.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>
#include <zmq.hpp>

namespace dispatch::protocol {

enum class HandshakeFailure : uint8_t {
  auth_refused,    // the broker's ZAP handler refused our key (unlisted, or not for this socket)
  curve_required,  // we speak plaintext, the broker requires CURVE
  curve_not_used,  // we speak CURVE, the broker is plaintext
  curve_failed,    // CURVE handshakes fail without detail: most likely the wrong broker key
  protocol_error,  // another ZMTP handshake error: not a dispatch broker at that endpoint?
};

// The error code the client reports for each: broker_auth_refused, broker_requires_curve,
// broker_without_curve, curve_handshake_failed, handshake_failed.
std::string_view handshake_failure_code(HandshakeFailure failure);

struct HandshakeProblem {
  HandshakeFailure failure;
  std::string message;  // the sentence for the user; names the endpoint, never a key
};

class HandshakeMonitor {
 public:
  // NO_DETAIL failures in a row (no success between) taken as a wrong broker key: one alone can
  // be a connection lost mid-handshake, or a mechanism mismatch seen late (above). At
  // reconnect_ivl 100 ms the third comes about 0.3-0.7 s after the first attempt.
  static constexpr unsigned kSilentFailuresReported = 3;

  // Starts monitoring `socket`; call before it connects, so the first handshake is seen.
  // `endpoint` is what messages name; `curve`: the socket uses CURVE. Throws zmq::error_t.
  HandshakeMonitor(zmq::context_t& context, zmq::socket_ref socket, std::string endpoint,
                   bool curve);
  HandshakeMonitor(const HandshakeMonitor&) = delete;
  HandshakeMonitor& operator=(const HandshakeMonitor&) = delete;

  // The PAIR to poll for ZMQ_POLLIN.
  zmq::socket_ref socket() noexcept { return pair_; }
  // Its ZMQ_FD, for epoll: edge-like, so call read() after every wake-up until it is empty.
  int fd() const;

  // Reads every event waiting (never blocks) and returns the failures they show, oldest first.
  std::vector<HandshakeProblem> read();

  // A handshake has succeeded on this socket since it was created.
  bool succeeded() const noexcept { return succeeded_; }

  // What a replacement socket's monitor should know: the mechanism mismatch seen (whether a
  // mismatch shows as HANDSHAKE_FAILED_PROTOCOL or, when the broker hangs up first, as
  // NO_DETAIL is a race) and the silent failures counted so far. Owners that replace the
  // socket pass history() of the old monitor to carry_over() of the new one, so that the
  // accurate message survives and reconnects do not restart the count.
  struct History {
    std::optional<HandshakeFailure> mismatch;
    unsigned silent_failures = 0;
  };
  History history() const noexcept { return {mismatch_, silent_failures_}; }
  void carry_over(const History& history) noexcept {
    mismatch_ = history.mismatch;
    silent_failures_ = history.silent_failures;
  }

 private:
  std::optional<HandshakeProblem> on_event(uint16_t event, uint32_t value);
  HandshakeProblem problem(HandshakeFailure failure) const;

  zmq::socket_t pair_;
  std::string endpoint_;
  bool curve_;
  unsigned silent_failures_ = 0;
  bool succeeded_ = false;
  std::optional<HandshakeFailure> mismatch_;
};

}  // namespace dispatch::protocol
