#pragma once

// Commands of the LLMD/1 wire protocol (client <-> broker <-> worker). See schemas/PROTOCOL.md.
//
// Every message is 3 or 4 ZeroMQ frames after any ROUTER routing frames:
//   frame 0  protocol tag, exactly "LLMD1"
//   frame 1  command name, ASCII, e.g. "submit"
//   frame 2  header: one msgpack map keyed by field name
//   frame 3  payload (only submit, job, result, error): one msgpack map (Request / Response /
//            Error). Kept as its own frame so the broker forwards it without decoding it.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dispatch/protocol/types.hpp"

namespace dispatch::protocol {

inline constexpr std::string_view kProtocolTag = "LLMD1";
inline constexpr std::string_view kProtocolPrefix = "LLMD";  // a tag with another version digit
inline constexpr uint32_t kProtocolVersion = 1;

enum class Command : uint8_t {
  submit,      // client -> broker   header Submit, payload Request
  accepted,    // broker -> client   header Accepted
  rejected,    // broker -> client   header Rejected (also: any peer, for undecodable input)
  cancel,      // client -> broker, broker -> worker   header Cancel
  job,         // broker -> worker   header JobHeader, payload Request
  chunk,       // worker -> broker -> client   header Chunk (+ delivery)
  reset,       // worker -> broker -> client, or broker -> client   header StreamReset
  result,      // worker -> broker -> client   header JobEnd, payload Response
  error,       // worker -> broker -> client, or broker -> client   header JobEnd, payload Error
  ready,       // worker -> broker   header Ready
  credit,      // worker -> broker   header Credit
  heartbeat,   // both ways on both sockets   header Heartbeat
  disconnect,  // worker <-> broker   header Disconnect
  status,      // client -> broker (empty map) and broker -> client (StatusReply)
  provider_health,  // worker -> broker   header ProviderHealth (rate limits, circuit state)
};

std::string_view to_string(Command command) noexcept;
std::optional<Command> command_from_string(std::string_view name) noexcept;
// True for the commands that carry a 4th (payload) frame.
bool command_has_payload(Command command) noexcept;

struct Submit {
  std::string job_id;    // chosen by the client, 1..128 bytes; resubmits reuse it (dedup key)
  std::string provider;  // routing: only workers serving it get the job
  Priority priority = Priority::interactive;
  uint32_t queue_timeout_ms = 0;  // 0: broker default
  bool stream = false;            // the client wants chunk events
  // The tenant a gateway submits for (1..kMaxTenant bytes; "" = none). Only identities the
  // broker lists as gateways may set it; ownership, fairness and per-client bounds then apply
  // per (gateway, tenant).
  std::string tenant{};
  // The Request's model, for limits keyed `provider/model` and shared provider health. Empty
  // (an older client): only the provider's keys apply.
  std::string model{};
  // W3C trace context of the job ("00-<trace id>-<parent id>-<flags>", see
  // dispatch/common/trace.hpp). Empty or invalid: the broker starts a fresh trace.
  std::string traceparent{};

  bool operator==(const Submit&) const = default;
};

struct Accepted {
  std::string job_id;
  std::string broker_id;   // broker instance; a change tells the client the broker restarted
  bool duplicate = false;  // the job was already known (queued, running or finished)

  bool operator==(const Accepted&) const = default;
};

struct Rejected {
  std::string job_id;  // empty when the input could not be decoded far enough to know it
  ErrorKind kind = ErrorKind::invalid_request;
  std::string code;  // e.g. "version_mismatch", "malformed", "queue_full", "draining"
  std::string message;

  bool operator==(const Rejected&) const = default;
};

struct Cancel {
  std::string job_id;

  bool operator==(const Cancel&) const = default;
};

// broker -> worker: run this job. delivery counts from 1 and grows on each redelivery; the
// worker echoes it so the broker can drop traffic from a delivery it has given up on.
struct JobHeader {
  std::string job_id;
  uint32_t delivery = 1;
  bool stream = false;
  // "provider/model" targets whose circuit the broker holds open for the whole fleet: the
  // worker skips them without a call (attempt outcome circuit_open) and goes to the next
  // target. Empty in the usual case.
  std::vector<std::string> open_targets;
  // The job's W3C trace context: the client's, or one the broker started. The worker logs its
  // trace id and sends providers a traceparent with its own span id as the parent id.
  std::string traceparent{};

  bool operator==(const JobHeader&) const = default;
};

// Header of result and error.
struct JobEnd {
  std::string job_id;
  uint32_t delivery = 0;

  bool operator==(const JobEnd&) const = default;
};

// Chunk and StreamReset from types.hpp are headers of their own commands; on the worker ->
// broker leg they carry the delivery number too (a field clients ignore).
struct ChunkHeader {
  Chunk chunk;
  uint32_t delivery = 0;

  bool operator==(const ChunkHeader&) const = default;
};

struct ResetHeader {
  StreamReset reset;
  uint32_t delivery = 0;

  bool operator==(const ResetHeader&) const = default;
};

// A delivery a (re)connecting worker still holds: running, or finished with its result not yet
// sent. Listed in Ready so that the broker keeps those deliveries instead of redelivering them.
struct HeldJob {
  std::string job_id;
  uint32_t delivery = 0;

  bool operator==(const HeldJob&) const = default;
};

struct Ready {
  std::string worker_id;  // stable for the process; unique across hosts (host:pid:random)
  std::string host;
  uint32_t pid = 0;
  uint32_t capacity = 0;  // jobs this worker runs at once
  std::vector<std::string> providers;
  std::string version;        // software version, informational
  std::vector<HeldJob> jobs;  // deliveries it still holds (empty on a first connect)

  bool operator==(const Ready&) const = default;
};

// Absolute (not a delta) so that it is idempotent: the worker's current capacity.
// Capacity 0 means "send me nothing more" (draining).
struct Credit {
  uint32_t capacity = 0;

  bool operator==(const Credit&) const = default;
};

struct Heartbeat {
  std::string sender_id;   // broker instance id, worker id, or empty from a client
  uint32_t in_flight = 0;  // worker: jobs running now

  bool operator==(const Heartbeat&) const = default;
};

struct Disconnect {
  std::string reason;

  bool operator==(const Disconnect&) const = default;
};

// worker -> broker: what a provider told one worker about its limits, or a change of that
// worker's circuit breaker for a target, so that the broker acts for the whole fleet.
// `kind` (a string so that newer kinds pass an older broker, which ignores them):
//   rate_limited    a 429 or a provider's rate-limit error: pause provider/model for
//                   retry_after_ms (the broker's default when absent)
//   quota           remaining-quota headers of an answer (rate-limited at the worker)
//   circuit_open    the worker's breaker opened: open for everyone for cooldown_ms
//   circuit_closed  the worker's breaker closed after a successful probe
struct ProviderHealth {
  std::string provider;
  std::string model{};
  std::string kind;
  std::optional<uint64_t> retry_after_ms;
  std::optional<uint64_t> limit_requests;
  std::optional<uint64_t> remaining_requests;
  std::optional<uint64_t> reset_requests_ms;
  std::optional<uint64_t> limit_tokens;
  std::optional<uint64_t> remaining_tokens;
  std::optional<uint64_t> reset_tokens_ms;
  uint64_t cooldown_ms = 0;

  bool operator==(const ProviderHealth&) const = default;
};

namespace health_kind {
inline constexpr std::string_view rate_limited = "rate_limited";
inline constexpr std::string_view quota = "quota";
inline constexpr std::string_view circuit_open = "circuit_open";
inline constexpr std::string_view circuit_closed = "circuit_closed";
}  // namespace health_kind

// One quota key (`provider` or `provider/model`) in StatusReply: its limits, its use, what
// waits for it, and the fleet-wide pause and breaker state the broker holds for it.
struct QuotaStatus {
  std::string key;
  std::optional<double> rpm;
  std::optional<double> tpm;
  std::optional<uint32_t> concurrency;
  uint64_t requests_last_minute = 0;
  uint64_t tokens_last_minute = 0;
  uint32_t running = 0;
  uint64_t waiting = 0;
  std::optional<uint64_t> paused_ms;  // time left of a pause from provider feedback
  std::string paused_reason;
  std::string breaker;                 // "" (closed) | open | half_open
  std::optional<uint64_t> breaker_ms;  // open: time left of the cooldown

  bool operator==(const QuotaStatus&) const = default;
};

struct ProviderCounters {
  uint64_t submitted = 0;
  uint64_t succeeded = 0;
  uint64_t failed = 0;
  uint64_t retried = 0;    // extra attempts on the same target
  uint64_t fell_over = 0;  // jobs answered (or failed) by a target other than the first
  uint64_t prompt_tokens = 0;
  uint64_t completion_tokens = 0;

  bool operator==(const ProviderCounters&) const = default;
};

struct WorkerStatus {
  std::string worker_id;
  std::string host;
  uint32_t pid = 0;
  uint32_t capacity = 0;
  uint32_t in_flight = 0;
  std::vector<std::string> providers;
  uint64_t last_heartbeat_ms_ago = 0;
  std::string state;  // "ready" | "draining"

  bool operator==(const WorkerStatus&) const = default;
};

// One client's jobs at the broker (StatusReply.clients): what it has now and since the start.
struct ClientCounters {
  uint64_t queued = 0;     // waiting for a worker now
  uint64_t running = 0;    // at workers now
  uint64_t submitted = 0;  // accepted
  uint64_t succeeded = 0;  // ended with a result
  uint64_t failed = 0;     // ended with an error (the worker's or the broker's)
  uint64_t rejected = 0;   // submits refused, and accepted jobs rejected at a drain

  bool operator==(const ClientCounters&) const = default;
};

struct StatusReply {
  std::string broker_id;
  uint64_t uptime_ms = 0;
  std::vector<uint64_t> queue_depth;  // index = priority level
  uint64_t queue_limit = 0;
  uint64_t in_flight = 0;
  uint64_t finished_kept = 0;  // results kept for deduplication
  std::vector<WorkerStatus> workers;
  std::map<std::string, ProviderCounters> providers;
  // Request payload bytes the broker holds for queued and running jobs, and their bound.
  uint64_t payload_bytes = 0;
  uint64_t payload_bytes_limit = 0;
  // Submits the broker refused, by Rejected.code ("queue_full", "queue_bytes", "client_jobs",
  // "client_bytes", "draining"), since it started.
  std::map<std::string, uint64_t> rejected{};
  // Jobs the broker itself ended with `error`, by Error.code ("queue_deadline",
  // "unknown_provider", "running_deadline", "redelivery_limit", ...), since it started.
  std::map<std::string, uint64_t> broker_errors{};
  // Every job that ended with `error`, by the ErrorKind name its client saw ("rate_limited",
  // "timeout", ...: the worker's endings and the broker's own), since it started.
  std::map<std::string, uint64_t> failed_by_kind{};
  // Connected workers. Every asker gets this; `workers` (the details) only identities with the
  // admin role (everyone when the broker runs without CURVE).
  uint64_t worker_count = 0;
  // The asking identity's display name as the broker knows it ("" without CURVE).
  std::string identity{};
  // Per client identity ("NAME", or "NAME/TENANT" for a gateway's tenant; "/TENANT" without
  // CURVE): an admin sees every one, any other identity only its own.
  std::map<std::string, ClientCounters> clients{};
  // The broker runs without CURVE on an endpoint other hosts can reach (--insecure).
  bool insecure = false;
  // Per quota key (configured limits, paused or open keys), sorted by key.
  std::vector<QuotaStatus> quotas{};

  bool operator==(const StatusReply&) const = default;
};

}  // namespace dispatch::protocol
