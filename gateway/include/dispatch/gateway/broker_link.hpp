#pragma once

// The gateway's side of the broker: one dispatch::Client for the whole process (thread-safe,
// any number of jobs in flight on one connection), behind an interface so that the HTTP layer
// can be tested against a scripted broker.

#include <chrono>
#include <optional>
#include <string>

#include "dispatch/client.hpp"

namespace dispatch::gateway {

class BrokerLink {
 public:
  virtual ~BrokerLink() = default;

  // Submits a job on behalf of `tenant` (the API key's; "" without keys: then the broker sees
  // no tenant) and returns its id. The request is taken by value so that the tenant can be set
  // on it without copying its messages. `on_done` (always, once) and `on_event` (for streams) run
  // on the link's own thread: they must be quick and must not block.
  virtual std::string submit_for_tenant(const std::string& tenant, DispatchRequest request,
                                        CompletionCallback on_done, StreamCallback on_event) = 0;
  // Ends a job (its provider call is aborted); unknown or finished ids are ignored.
  virtual void cancel(const std::string& job_id) = 0;
  // The broker's view, or nullopt when it does not answer within `timeout`. Blocks.
  virtual std::optional<protocol::StatusReply> status(std::chrono::milliseconds timeout) = 0;
};

class ClientBrokerLink final : public BrokerLink {
 public:
  explicit ClientBrokerLink(ClientOptions options) : client_(std::move(options)) {}

  std::string submit_for_tenant(const std::string& tenant, DispatchRequest request,
                                CompletionCallback on_done, StreamCallback on_event) override;
  void cancel(const std::string& job_id) override { client_.cancel(job_id); }
  std::optional<protocol::StatusReply> status(std::chrono::milliseconds timeout) override;

 private:
  Client client_;
};

}  // namespace dispatch::gateway
