#include "dispatch/worker/event_loop.hpp"

#include <spdlog/spdlog.h>
#include <sys/epoll.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dispatch/common/fd.hpp"

namespace dispatch::worker {
namespace {

// Bounds the wait when idle so a loop never sleeps forever on a bug elsewhere; a wake-up costs
// nothing measurable at this interval.
constexpr int kMaxIdleWaitMs = 1000;
constexpr int kMaxEventsPerWait = 256;

[[noreturn]] void throw_errno(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

uint32_t to_epoll(uint32_t events) {
  uint32_t out = 0;
  if ((events & kReadable) != 0) out |= EPOLLIN;
  if ((events & kWritable) != 0) out |= EPOLLOUT;
  return out;
}

uint32_t from_epoll(uint32_t events) {
  uint32_t out = 0;
  // A hang-up is reported as readable too, so a reader sees the EOF.
  if ((events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) != 0) out |= kReadable;
  if ((events & EPOLLOUT) != 0) out |= kWritable;
  if ((events & (EPOLLERR | EPOLLHUP)) != 0) out |= kError;
  return out;
}

// epoll's user data carries the fd and the watch generation, so an event queued for a watch that
// a callback removed (or removed and re-added) earlier in the same batch is recognised as stale.
uint64_t pack(int fd, uint32_t generation) {
  return (static_cast<uint64_t>(generation) << 32) | static_cast<uint32_t>(fd);
}

template <typename Fn>
void run_guarded(const char* what, Fn&& fn) {
  // A throwing callback is a bug in its owner; the loop logs it and keeps serving the others.
  try {
    fn();
  } catch (const std::exception& e) {
    spdlog::error("event loop: {} callback threw: {}", what, e.what());
  } catch (...) {
    spdlog::error("event loop: {} callback threw a non-standard exception", what);
  }
}

}  // namespace

struct EventLoop::Impl {
  struct Watch {
    bool active = false;
    uint32_t interest = 0;
    uint32_t generation = 0;
    // Heap-held so the callable never moves while it runs, whatever a callback does to the
    // table (growing it, replacing or removing its own watch).
    std::unique_ptr<FdCallback> callback;
  };

  struct TimerEntry {
    Clock::time_point at;
    TimerId id;
    // Min-heap on (at, id): equal deadlines run in scheduling order.
    bool operator>(const TimerEntry& other) const {
      return at != other.at ? at > other.at : id > other.id;
    }
  };

  UniqueFd epoll_fd{::epoll_create1(EPOLL_CLOEXEC)};
  WakeupFd wake;  // post() and stop() from other threads (or a signal handler)

  // Indexed by fd: fds are small dense integers, so a vector beats a hash map on the hot path.
  std::vector<Watch> watches;
  // Callbacks replaced or unwatched while callbacks run are parked here, because the one being
  // replaced may be the one executing; they are destroyed once the iteration is over.
  std::vector<std::unique_ptr<FdCallback>> graveyard;
  bool dispatching = false;

  // Lazy cancellation: cancel() erases from `timer_fns`; the heap entry is dropped when it
  // reaches the top. The heap is compacted when stale entries dominate.
  std::vector<TimerEntry> timer_heap;
  std::unordered_map<TimerId, std::function<void()>> timer_fns;
  std::vector<TimerEntry> deferred_timers;
  TimerId next_timer_id = 1;

  std::atomic<bool> stop_requested{false};
  std::mutex posted_mutex;
  std::vector<std::function<void()>> posted;
  std::vector<std::function<void()>> posted_running;

  std::vector<epoll_event> events = std::vector<epoll_event>(kMaxEventsPerWait);

  Impl() {
    if (!epoll_fd) throw_errno("epoll_create1");
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = pack(wake.fd(), 0);
    if (::epoll_ctl(epoll_fd.get(), EPOLL_CTL_ADD, wake.fd(), &ev) != 0) {
      throw_errno("epoll_ctl(eventfd)");
    }
  }

  void set_callback(Watch& watch, FdCallback&& callback) {
    if (watch.callback && !dispatching) {
      *watch.callback = std::move(callback);  // reuse the allocation
      return;
    }
    if (watch.callback) graveyard.push_back(std::move(watch.callback));
    watch.callback = std::make_unique<FdCallback>(std::move(callback));
  }

  void clear_callback(Watch& watch) {
    if (!watch.callback) return;
    if (dispatching) {
      graveyard.push_back(std::move(watch.callback));
    } else {
      watch.callback.reset();
    }
  }

  void epoll_update(int fd, uint32_t interest, uint32_t generation, bool known) {
    epoll_event ev{};
    ev.events = to_epoll(interest);
    ev.data.u64 = pack(fd, generation);
    int op = known ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (::epoll_ctl(epoll_fd.get(), op, fd, &ev) == 0) return;
    // The fd was closed without unwatch (epoll dropped it) and its number reused, or the
    // reverse: retry with the other operation.
    if ((op == EPOLL_CTL_MOD && errno == ENOENT) || (op == EPOLL_CTL_ADD && errno == EEXIST)) {
      op = op == EPOLL_CTL_MOD ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
      if (::epoll_ctl(epoll_fd.get(), op, fd, &ev) == 0) return;
    }
    throw_errno("epoll_ctl");
  }

  void pop_cancelled_timers() {
    while (!timer_heap.empty() && !timer_fns.contains(timer_heap.front().id)) {
      std::pop_heap(timer_heap.begin(), timer_heap.end(), std::greater<>{});
      timer_heap.pop_back();
    }
  }

  void maybe_compact_heap() {
    if (timer_heap.size() < 64 || timer_heap.size() < 2 * timer_fns.size()) return;
    std::erase_if(timer_heap, [this](const TimerEntry& e) { return !timer_fns.contains(e.id); });
    std::make_heap(timer_heap.begin(), timer_heap.end(), std::greater<>{});
  }

  int wait_timeout(const Clock& clock, int timeout_ms) {
    if (timeout_ms == 0) return 0;
    pop_cancelled_timers();
    int limit = timeout_ms < 0 ? kMaxIdleWaitMs : timeout_ms;
    if (!timer_heap.empty()) {
      const auto until = timer_heap.front().at - clock.now();
      if (until <= Clock::duration::zero()) return 0;
      // Round up: waking a little late is harmless, waking early just spins.
      const auto ms = std::chrono::ceil<std::chrono::milliseconds>(until).count();
      if (ms < limit) limit = static_cast<int>(ms);
    }
    return limit;
  }

  int dispatch_fd_events(int ready_count) {
    int ran = 0;
    for (int i = 0; i < ready_count; ++i) {
      const uint64_t data = events[i].data.u64;
      const int fd = static_cast<int>(static_cast<uint32_t>(data));
      const auto generation = static_cast<uint32_t>(data >> 32);
      if (fd == wake.fd()) {
        ran += drain_wake_fd();
        continue;
      }
      if (static_cast<std::size_t>(fd) >= watches.size()) continue;
      Watch& watch = watches[fd];
      if (!watch.active || watch.generation != generation) continue;
      const uint32_t ready = from_epoll(events[i].events) & (watch.interest | kError);
      if (ready == 0 || !watch.callback || !*watch.callback) continue;
      FdCallback* target = watch.callback.get();  // stays alive until the iteration ends
      run_guarded("fd", [target, ready] { (*target)(ready); });
      ++ran;
    }
    return ran;
  }

  int drain_wake_fd() {
    wake.drain();
    {
      std::lock_guard lock(posted_mutex);
      posted_running.swap(posted);
    }
    int ran = 0;
    for (auto& fn : posted_running) {
      run_guarded("posted", fn);
      ++ran;
    }
    posted_running.clear();
    return ran;
  }

  int run_due_timers(const Clock& clock) {
    // Timers scheduled by the timers that run now wait for the next iteration, so a timer that
    // re-arms itself for "now" cannot starve the fds.
    const TimerId first_unseen = next_timer_id;
    const auto now = clock.now();
    int ran = 0;
    deferred_timers.clear();
    while (!timer_heap.empty()) {
      const TimerEntry top = timer_heap.front();
      if (top.at > now) break;
      std::pop_heap(timer_heap.begin(), timer_heap.end(), std::greater<>{});
      timer_heap.pop_back();
      auto it = timer_fns.find(top.id);
      if (it == timer_fns.end()) continue;  // cancelled
      if (top.id >= first_unseen) {
        deferred_timers.push_back(top);
        continue;
      }
      auto fn = std::move(it->second);
      timer_fns.erase(it);
      run_guarded("timer", fn);
      ++ran;
    }
    for (const TimerEntry& entry : deferred_timers) {
      timer_heap.push_back(entry);
      std::push_heap(timer_heap.begin(), timer_heap.end(), std::greater<>{});
    }
    maybe_compact_heap();
    return ran;
  }
};

EventLoop::EventLoop(const Clock& clock) : clock_(clock), impl_(std::make_unique<Impl>()) {}

EventLoop::~EventLoop() = default;

void EventLoop::watch(int fd, uint32_t events, FdCallback callback) {
  if (fd < 0) throw std::invalid_argument("EventLoop::watch: negative fd");
  auto& watches = impl_->watches;
  if (static_cast<std::size_t>(fd) >= watches.size()) {
    watches.resize(std::max<std::size_t>(static_cast<std::size_t>(fd) + 1, watches.size() * 2));
  }
  Impl::Watch& watch = watches[fd];
  const bool known = watch.active;
  if (!known) ++watch.generation;
  if (!known || watch.interest != events) {
    impl_->epoll_update(fd, events, watch.generation, known);
  }
  watch.active = true;
  watch.interest = events;
  impl_->set_callback(watch, std::move(callback));
}

void EventLoop::unwatch(int fd) {
  auto& watches = impl_->watches;
  if (fd < 0 || static_cast<std::size_t>(fd) >= watches.size()) return;
  Impl::Watch& watch = watches[fd];
  if (!watch.active) return;
  // EBADF/ENOENT when the owner closed the fd first: epoll already forgot it.
  ::epoll_ctl(impl_->epoll_fd.get(), EPOLL_CTL_DEL, fd, nullptr);
  watch.active = false;
  watch.interest = 0;
  ++watch.generation;
  impl_->clear_callback(watch);
}

TimerId EventLoop::schedule_at(Clock::time_point at, std::function<void()> fn) {
  const TimerId id = impl_->next_timer_id++;
  impl_->timer_fns.emplace(id, std::move(fn));
  impl_->timer_heap.push_back({at, id});
  std::push_heap(impl_->timer_heap.begin(), impl_->timer_heap.end(), std::greater<>{});
  return id;
}

void EventLoop::cancel(TimerId id) {
  if (id == kNoTimer) return;
  impl_->timer_fns.erase(id);
  impl_->maybe_compact_heap();
}

std::size_t EventLoop::pending_timers() const {
  return impl_->timer_fns.size();
}

int EventLoop::run_once(int timeout_ms) {
  Impl& impl = *impl_;
  if (impl.dispatching) throw std::logic_error("EventLoop::run_once called re-entrantly");
  const int wait_ms = impl.wait_timeout(clock_, timeout_ms);
  int ready = ::epoll_wait(impl.epoll_fd.get(), impl.events.data(),
                           static_cast<int>(impl.events.size()), wait_ms);
  if (ready < 0) {
    if (errno != EINTR) throw_errno("epoll_wait");
    ready = 0;
  }
  impl.dispatching = true;
  int ran = impl.dispatch_fd_events(ready);
  ran += impl.run_due_timers(clock_);
  impl.dispatching = false;
  impl.graveyard.clear();
  return ran;
}

void EventLoop::run() {
  while (!impl_->stop_requested.exchange(false)) {
    run_once(-1);
  }
}

void EventLoop::stop() {
  // Only async-signal-safe operations: a lock-free atomic store and write(2).
  impl_->stop_requested.store(true);
  impl_->wake.signal();
}

void EventLoop::post(std::function<void()> fn) {
  {
    std::lock_guard lock(impl_->posted_mutex);
    impl_->posted.push_back(std::move(fn));
  }
  impl_->wake.signal();
}

}  // namespace dispatch::worker
