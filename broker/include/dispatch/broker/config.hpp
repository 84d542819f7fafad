#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "dispatch/broker/quota.hpp"

namespace dispatch::broker {

// The four allow-list directories of a CURVE broker (--allow-clients, --allow-workers,
// --allow-gateways, --allow-admins): each holds one `NAME.key` public certificate per identity
// that has the role. An empty path means "nobody has that role".
struct AllowListDirs {
  std::string clients;
  std::string workers;
  std::string gateways;
  std::string admins;
  bool empty() const {
    return clients.empty() && workers.empty() && gateways.empty() && admins.empty();
  }
};

// Every tunable of the broker with its default. The CLI flags of dispatch-broker map 1:1 onto
// these fields (see broker/main.cpp and PROTOCOL.md "Broker behaviour").
struct BrokerConfig {
  std::string frontend = "tcp://127.0.0.1:5555";  // clients (ROUTER)
  std::string backend = "tcp://127.0.0.1:5556";   // workers (ROUTER)

  // Security. `curve_secret` (the broker's NAME.key_secret) turns CURVE on for both sockets:
  // every peer is encrypted and must hold a key listed in `allow` for its role. Without it the
  // broker serves only loopback endpoints, unless `insecure` (a plaintext broker that other
  // hosts can reach: anyone there may submit, register as a worker and read every prompt).
  std::string curve_secret;
  AllowListDirs allow;
  bool insecure = false;

  // Jobs waiting for a worker, over all providers and priorities. Running jobs do not count:
  // they are bounded by the workers' advertised capacity.
  std::size_t queue_limit = 100'000;
  // Default of submit.queue_timeout_ms (0 there). Counts from each (re)queueing.
  std::chrono::milliseconds queue_timeout{60'000};
  // Ceiling on submit.queue_timeout_ms: a longer ask is clamped to it (not refused), so that no
  // client can park a job - and its payload - for weeks.
  std::chrono::milliseconds max_queue_timeout{3'600'000};
  // A job for a provider that no worker has advertised since the broker started fails
  // unsupported_provider (code unknown_provider) after this long instead of its queue deadline:
  // most likely a typo, and the payload should not be held for an hour.
  std::chrono::milliseconds unknown_provider_grace{10'000};

  // Memory bounds, in request payload bytes (the broker holds each job's payload until it ends,
  // for redelivery). queue_bytes: all queued and running jobs together. client_jobs /
  // client_bytes: what one client (ClientKey) may have waiting, so that one client cannot fill
  // the queue for everyone. Over any of them a submit is rejected queue_full with a code naming
  // the bound.
  std::size_t queue_bytes = std::size_t{512} << 20;
  std::size_t client_jobs = 10'000;
  std::size_t client_bytes = std::size_t{64} << 20;

  // A running job's deadline: its Request.timeout_ms (running_timeout when it sets none) plus
  // running_grace. Past it the worker is told to cancel; an answer, or running_grace more
  // without one, ends the job with timeout / running_deadline and frees the worker's slot.
  std::chrono::milliseconds running_timeout{300'000};
  std::chrono::milliseconds running_grace{30'000};

  std::chrono::milliseconds heartbeat_interval{1'000};
  // A worker silent for this many intervals is dead (3-5 is usual: one lost heartbeat or a
  // short GC-like stall must not cost a redelivery).
  uint32_t liveness = 4;
  // Re-queues after losing the worker; the next loss ends the job (internal/redelivery_limit).
  uint32_t redelivery_limit = 3;

  // Finished jobs are kept this long (and at most result_keep of them) so that a client that
  // resubmits after a lost reply gets the stored answer instead of a second provider call.
  std::chrono::milliseconds result_ttl{300'000};
  std::size_t result_keep = 100'000;

  // Messages buffered per client when its ZeroMQ pipe is full (a slow reader). Over it chunks
  // are dropped; final messages (result/error/reset) are kept. Over client_buffer_bytes only
  // resets are kept: finals then wait in the result store for a resubmit (see ClientOutbox).
  std::size_t client_buffer = 10'000;
  std::size_t client_buffer_bytes = std::size_t{64} << 20;

  // After SIGTERM: how long running jobs get to finish.
  std::chrono::milliseconds drain_timeout{30'000};

  // ZeroMQ high-water marks (messages) of both ROUTER sockets. Large so that bursts of
  // submits and chunks are absorbed by ZeroMQ before the broker's own client buffer is used.
  int hwm = 100'000;

  // Replies to undecodable input and the log lines about it are rate-limited so a hostile peer
  // cannot turn the broker into an amplifier or flood the log.
  double hostile_replies_per_second = 200.0;
  double log_lines_per_second = 5.0;

  // Provider quotas (broker.yaml `limits:`, --config); replaced on SIGHUP through
  // BrokerCore::configure_quotas.
  QuotaConfig quotas;
  // A 429 reported without Retry-After pauses its key this long; a longer Retry-After than
  // max_pause is cut to it (a worker's report must not park a provider for hours).
  std::chrono::milliseconds default_pause{1'000};
  std::chrono::milliseconds max_pause{600'000};
};

}  // namespace dispatch::broker
