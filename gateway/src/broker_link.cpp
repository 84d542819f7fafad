#include "dispatch/gateway/broker_link.hpp"

namespace dispatch::gateway {

std::string ClientBrokerLink::submit_for_tenant(const std::string& tenant, DispatchRequest request,
                                                CompletionCallback on_done,
                                                StreamCallback on_event) {
  // The one seam for tenants: the broker scopes job-id ownership, fairness and per-client
  // bounds per (this gateway's identity, tenant), so each API key is a client of its own there
  // rather than all keys sharing this one connection. With CURVE the broker honours it only if
  // this gateway's key is in its --allow-gateways.
  request.with_tenant(tenant);
  return client_.dispatch_async(request, std::move(on_done), std::move(on_event));
}

std::optional<protocol::StatusReply> ClientBrokerLink::status(std::chrono::milliseconds timeout) {
  try {
    return client_.status(timeout);
  } catch (const DispatchError&) {
    return std::nullopt;
  }
}

}  // namespace dispatch::gateway
