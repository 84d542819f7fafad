#pragma once

// The gateway's side of the broker, behind an interface so that the HTTP layer can be tested
// against a scripted broker.

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "dispatch/client.hpp"

namespace zmq {
class context_t;
}

namespace dispatch::gateway {

class BrokerLink {
 public:
  virtual ~BrokerLink() = default;

  // The server's event loops: attach() for each before it runs, detach() once all have
  // stopped and before they are destroyed. A link that runs broker connections on those loops
  // sets them up and tears them down here; the default does neither.
  virtual void attach(boost::asio::io_context& loop) { (void)loop; }
  virtual void detach() {}

  // Submits a job on behalf of `tenant` (the API key's; "" without keys: then the broker sees
  // no tenant) and returns its id. Called on one of the server's loop threads. The request is
  // taken by value so that the tenant can be set on it without copying its messages. `on_done`
  // (always, once) and `on_event` (for streams) must be quick and must not block: they may run
  // on a thread of the link's own (hand the work to the connection's executor).
  virtual std::string submit_for_tenant(const std::string& tenant, DispatchRequest request,
                                        CompletionCallback on_done, StreamCallback on_event) = 0;
  // Ends a job (its provider call is aborted); unknown or finished ids are ignored.
  virtual void cancel(const std::string& job_id) = 0;
  // The broker's view, or nullopt when it does not answer within `timeout`. Blocks: never call
  // it on a loop thread.
  virtual std::optional<protocol::StatusReply> status(std::chrono::milliseconds timeout) = 0;
};

// One broker connection per server loop (a LoopClient each, all on one ZeroMQ context with one
// I/O thread): a job is submitted, and its answer arrives, on the thread of the HTTP connection
// that asked for it. With one dispatch::Client for the whole gateway every request crossed
// from its HTTP thread to the client's I/O thread and back, two wake-ups that were most of the
// latency the gateway added at 1,000 req/s (BENCHMARKS.md, the gateway's profiles).
//
// Each connection is a client of its own at the broker: without CURVE the broker's per-client
// bounds (--client-jobs, --client-bytes) apply per (loop, tenant); with CURVE they apply per
// (gateway key, tenant) whatever the number of loops, as job ownership does.
class LoopBrokerLink final : public BrokerLink {
 public:
  explicit LoopBrokerLink(ClientOptions options);
  ~LoopBrokerLink() override;

  void attach(boost::asio::io_context& loop) override;
  void detach() override;
  // Throws std::logic_error when called off the attached loops' threads.
  std::string submit_for_tenant(const std::string& tenant, DispatchRequest request,
                                CompletionCallback on_done, StreamCallback on_event) override;
  void cancel(const std::string& job_id) override;
  std::optional<protocol::StatusReply> status(std::chrono::milliseconds timeout) override;

  class LoopConnection;  // one loop's LoopClient and the waits that drive it (broker_link.cpp)

 private:
  // The connection whose loop runs on the calling thread, or null.
  LoopConnection* on_this_thread() const;

  ClientOptions options_;
  std::unique_ptr<zmq::context_t> context_;
  mutable std::mutex mutex_;  // guards loops_ against status() from the readiness thread
  std::vector<std::unique_ptr<LoopConnection>> loops_;
};

}  // namespace dispatch::gateway
