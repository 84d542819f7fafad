#pragma once

// The broker's bookkeeping types. Internal to dispatch_broker; public only so that BrokerCore
// can hold them by value and tests can read them.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>
#include <zmq.hpp>

#include "dispatch/broker/quota.hpp"
#include "dispatch/broker/transport.hpp"
#include "dispatch/common/clock.hpp"
#include "dispatch/protocol/messages.hpp"
#include "dispatch/protocol/types.hpp"

namespace dispatch::broker::detail {

// Heterogeneous lookup so that a string_view routing id or job id finds a std::string key
// without building a temporary string per message.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};
template <class V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

struct Job;
struct Worker;
struct ProviderState;
struct ClientFifo;
class ClassQueue;
class ProviderQueue;

// Intrusive doubly-linked list of jobs. A job is in at most one list at a time: a client's
// FIFO or the urgent list of a priority class (queued), a worker's in-flight list (running), or
// the finished list (kept for deduplication). That makes every removal O(1).
class JobList {
 public:
  JobList() = default;
  JobList(const JobList&) = delete;
  JobList& operator=(const JobList&) = delete;

  bool empty() const noexcept { return head_ == nullptr; }
  std::size_t size() const noexcept { return size_; }
  Job* front() const noexcept { return head_; }
  void push_back(Job& job) noexcept;
  void push_front(Job& job) noexcept;
  void erase(Job& job) noexcept;
  Job* pop_front() noexcept;

 private:
  Job* head_ = nullptr;
  Job* tail_ = nullptr;
  std::size_t size_ = 0;
};

enum class JobState : uint8_t { queued, running, finished };

// Who a per-client bound is charged to, and whose jobs take turns against other clients' jobs
// in a priority class: the connection (frontend routing id) without CURVE, the identity (public
// key) with it; then a NUL and the tenant when a gateway names one. See
// BrokerCore::client_key_of().
struct ClientKey {
  std::string id;

  bool operator==(const ClientKey&) const = default;
};

// Who a job belongs to: only its owner's resubmits are deduplicated onto it, only its owner's
// identity may cancel it. `key` is the submitter's public key with CURVE and "" without (job ids
// are then one namespace); `tenant` is the one a gateway named ("" for none).
struct Owner {
  std::string key;
  std::string tenant;

  bool operator==(const Owner&) const = default;
};

// Status counters of one owner (StatusReply.clients).
struct OwnerStats {
  std::string key;    // the owner's public key: a non-admin sees the entries of its own key
  std::string label;  // NAME, NAME/TENANT, or /TENANT without CURVE
  protocol::ClientCounters counts;
};

// What one client has waiting in the queue, for the per-client bounds.
struct ClientUsage {
  std::size_t jobs = 0;
  std::size_t bytes = 0;
};

struct Job {
  std::string id;
  std::string client_route;  // where answers go; a resubmit from another route moves it
  ClientKey client;          // who submitted it: charged for it while it waits
  Owner owner;               // whose job it is (dedup, cancel)
  protocol::ClientCounters* counts = nullptr;  // its owner's status counters, if counted
  std::string provider;                        // routing key (submit.provider)
  std::string model;  // submit.model: narrows quota and health keys ("" = provider only)
  protocol::Priority priority = protocol::Priority::interactive;
  bool stream = false;
  std::chrono::milliseconds queue_timeout{0};  // clamped to the broker's ceiling
  // Its total deadline at a worker: Request.timeout_ms, or the broker's default when absent.
  std::chrono::milliseconds run_timeout{0};
  zmq::message_t request;         // the Request payload, kept for redelivery; freed when finished
  std::size_t payload_bytes = 0;  // request.size(), counted against the byte bounds while held
  // The Request lists fallbacks: when its first target's circuit is open for the fleet it goes
  // to a worker anyway, which skips that target (JobHeader.open_targets).
  bool has_fallbacks = false;
  // Its W3C trace context (the client's, or a fresh one): sent on in JobHeader.traceparent, and
  // trace_id is in every log line about the job.
  std::string traceparent;
  std::string trace_id;
  std::optional<uint64_t> tokens;  // the quota estimate, computed when first needed

  // Quotas while running: what it reserved, the usage of its answer when the answer came from
  // its own target (settles the reservation), whether it is the fleet's half-open probe.
  QuotaBook::Ticket ticket;
  std::optional<uint64_t> used_tokens;
  bool probe = false;

  JobState state = JobState::queued;
  uint32_t delivery = 0;     // deliveries so far; the current one while running
  uint64_t enqueue_seq = 0;  // global order of (re)queueing, for ties across providers
  bool urgent = false;       // re-queued after a lost worker: front of its class

  // List membership (see JobList).
  Job* prev = nullptr;
  Job* next = nullptr;
  JobList* list = nullptr;
  ClientFifo* fifo = nullptr;  // queued in a client FIFO
  ClassQueue* queued_in = nullptr;
  ProviderState* queued_provider = nullptr;
  ProviderQueue* lane = nullptr;  // the provider's main queue or one of its model lanes

  bool has_deadline = false;  // queued: its queue deadline (or unknown-provider grace) is armed
  std::multimap<Clock::time_point, Job*>::iterator deadline;
  Clock::time_point queued_at{};  // the last (re)queueing: the queue deadline counts from here

  Worker* worker = nullptr;  // running
  // Running: its deadline at the worker (run_timeout + grace), then the grace for the answer to
  // the cancel sent at that deadline.
  bool has_run_deadline = false;
  std::multimap<Clock::time_point, Job*>::iterator run_deadline;
  bool overdue = false;  // the running deadline passed and the worker was told to cancel
  // The client may hold text of this job (a chunk or a reset was relayed): a redelivery, which
  // starts again at seq 0, must first tell it to start over.
  bool client_saw_stream = false;
  bool cancel_requested = false;

  Frames final_frames;  // result / error as sent to the client, replayed to resubmits
  Clock::time_point finished_at{};
};

// One client's jobs in one priority class of one provider, and its place in the class's
// round-robin ring.
struct ClientFifo {
  std::string client;
  JobList jobs;
};

// One priority class of one provider: re-queued jobs first (front of the class), then
// round-robin over the clients that have jobs waiting, FIFO within each client — so one client's
// big batch cannot starve another client's jobs of the same class.
class ClassQueue {
 public:
  ClassQueue() = default;
  ClassQueue(const ClassQueue&) = delete;
  ClassQueue& operator=(const ClassQueue&) = delete;

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  void push(Job& job, std::string_view client);
  void push_urgent(Job& job);
  Job* peek() const noexcept;
  Job* pop();
  void erase(Job& job);

 private:
  using Ring = std::list<ClientFifo>;
  void drop_if_empty(ClientFifo& fifo);

  JobList urgent_;
  Ring ring_;  // clients with waiting jobs; the front is served next
  StringMap<Ring::iterator> by_client_;
  std::size_t size_ = 0;
};

// A provider's waiting jobs, one ClassQueue per priority.
class ProviderQueue {
 public:
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  void push(Job& job, std::string_view client);
  void push_urgent(Job& job);
  // The job pop() would return, without removing it.
  Job* peek() const noexcept;
  Job* pop();
  void erase(Job& job);

 private:
  ClassQueue classes_[protocol::kPriorityLevels];
  std::size_t size_ = 0;
};

// Worker order for dispatch: least loaded (in_flight / capacity) first, ties to the one idle
// longest (lowest dispatch sequence). A copy of the key lives in the sets so that updating a
// worker is erase-old-key / insert-new-key.
struct LoadKey {
  uint32_t in_flight = 0;
  uint32_t capacity = 1;
  uint64_t idle_seq = 0;
  Worker* worker = nullptr;
};
struct LoadKeyLess {
  bool operator()(const LoadKey& a, const LoadKey& b) const noexcept {
    const uint64_t lhs = uint64_t{a.in_flight} * b.capacity;
    const uint64_t rhs = uint64_t{b.in_flight} * a.capacity;
    if (lhs != rhs) return lhs < rhs;
    if (a.idle_seq != b.idle_seq) return a.idle_seq < b.idle_seq;
    return std::less<Worker*>{}(a.worker, b.worker);
  }
};

struct Worker {
  std::string route;
  std::string worker_id;
  // The identity that registered it (public key; "" without CURVE): only that identity may use
  // its worker id, so another one cannot take over its jobs by reusing the id.
  std::string identity_key;
  std::string host;
  std::string version;
  uint32_t pid = 0;
  uint32_t capacity = 0;  // 0: draining
  std::vector<std::string> provider_names;
  std::vector<ProviderState*> providers;
  JobList in_flight;
  Clock::time_point last_heard{};
  Clock::time_point last_sent{};
  uint64_t idle_seq = 0;
  bool available = false;  // in the load sets of its providers
  bool lost = false;       // its pipe is full; removed after the current event
  // Its connection is gone (a send found no such peer). Its jobs wait one liveness window for
  // it to come back on a new connection with a `ready` listing them; then they are redelivered.
  bool detached = false;
  Clock::time_point detached_at{};
  LoadKey key;  // the key it is stored under while available
};

struct ProviderState {
  std::string name;
  ProviderQueue queue;
  // Jobs that reached the head of `queue` while their model's own key (a provider/model limit,
  // pause or open circuit) held them, by model: they wait here so that other models' jobs
  // behind them can go. A lane exists while it holds jobs; new jobs of its model join it.
  StringMap<std::unique_ptr<ProviderQueue>> lanes;
  // When a job held by quota may go (max(): no wake-up armed; a job's end will tell).
  Clock::time_point wake_at = Clock::time_point::max();
  std::set<LoadKey, LoadKeyLess> available;  // workers with a free slot serving this provider
  uint32_t serving = 0;                      // connected workers (ready or draining)
};

}  // namespace dispatch::broker::detail
