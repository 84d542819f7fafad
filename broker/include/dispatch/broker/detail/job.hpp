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
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>
#include <zmq.hpp>

#include "dispatch/broker/transport.hpp"
#include "dispatch/common/clock.hpp"
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

struct Job {
  std::string id;
  std::string client_route;  // where answers go; a resubmit from another route moves it
  std::string provider;      // routing key (submit.provider)
  protocol::Priority priority = protocol::Priority::interactive;
  bool stream = false;
  std::chrono::milliseconds queue_timeout{0};
  zmq::message_t request;  // the Request payload, kept for redelivery; freed when finished

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

  bool has_deadline = false;
  std::multimap<Clock::time_point, Job*>::iterator deadline;

  Worker* worker = nullptr;        // running
  bool client_saw_chunks = false;  // since the last reset: a redelivery must reset the client
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
  std::set<LoadKey, LoadKeyLess> available;  // workers with a free slot serving this provider
  uint32_t serving = 0;                      // connected workers (ready or draining)
};

}  // namespace dispatch::broker::detail
