#include <time.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <thread>

#include "dispatch/client.hpp"
#include "drivers.hpp"

namespace dispatch::bench {

namespace {

int64_t now_ns(BenchClock::time_point origin) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(BenchClock::now() - origin).count();
}

// Sleeps until `origin + due_ns` on the monotonic clock (steady_clock's), without spinning:
// the machine is shared with the processes under test.
void sleep_until_due(BenchClock::time_point origin, int64_t due_ns) {
  const auto at = origin.time_since_epoch() + std::chrono::nanoseconds(due_ns);
  const int64_t at_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(at).count();
  timespec deadline{};
  deadline.tv_sec = at_ns / 1'000'000'000;
  deadline.tv_nsec = at_ns % 1'000'000'000;
  // Bounded: EINTR is the only reason to go round again, and the deadline does not move.
  for (int attempt = 0; attempt < 100; ++attempt) {
    if (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, nullptr) == 0) return;
  }
}

class DispatchLoad {
 public:
  DispatchLoad(const DispatchTarget& target, const RunPlan& plan, std::vector<JobRecord>& records,
               RunObserver& observer)
      : plan_(plan),
        records_(records),
        observer_(observer),
        request_(target.provider, target.model, {Message::user(target.prompt)}) {
    request_.with_stream(plan.stream)
        .with_timeout_ms(static_cast<uint32_t>(plan.request_timeout.count()))
        .with_retry_count(target.retry_count)
        .with_no_fallback();
    ClientOptions options;
    options.broker_endpoint = target.broker_endpoint;
    options.ack_timeout = std::chrono::milliseconds(target.ack_timeout_ms);
    options.max_ack_timeout = std::max(options.max_ack_timeout, options.ack_timeout * 4);
    if (auto keys = options.load_curve_keys(target.broker_key_file, target.curve_secret_file);
        !keys) {
      throw std::runtime_error(keys.error());
    }
    for (std::size_t i = 0; i < std::max<std::size_t>(1, target.clients); ++i) {
      clients_.push_back(std::make_unique<Client>(options));
    }
  }

  ~DispatchLoad() { shut_down(); }
  DispatchLoad(const DispatchLoad&) = delete;
  DispatchLoad& operator=(const DispatchLoad&) = delete;

  void run() {
    origin_ = BenchClock::now();
    const std::size_t total = plan_.total_jobs();
    if (plan_.mode == LoadMode::closed_loop) {
      for (std::size_t i = 0; i < std::min(plan_.concurrency, total); ++i) send_next_closed();
    } else {
      for (std::size_t index = 0; index < total; ++index) {
        const int64_t due = open_loop_due_ns(plan_, index);
        sleep_until_due(origin_, due);
        JobRecord& record = records_[index];
        record.scheduled_ns = due;
        if (index == plan_.warmup_jobs) observer_.on_measurement_start();
        if (in_flight_.load() >= plan_.max_in_flight) {
          record.error = "loadgen_overflow";
          record.finished = true;
          finished_.fetch_add(1);
          continue;
        }
        send(index);
        observer_.on_in_flight(in_flight_.load(), streaming_.load());
      }
    }
    // Bounded by the drain deadline: after the last send, unfinished jobs get drain_timeout.
    std::unique_lock lock(done_mutex_);
    done_.wait_until(lock, std::chrono::steady_clock::now() + plan_.drain_timeout,
                     [&] { return finished_.load() >= total; });
    lock.unlock();
    shut_down();
  }

 private:
  void send_next_closed() {
    const std::size_t index = next_.fetch_add(1);
    if (index >= plan_.total_jobs()) return;
    JobRecord& record = records_[index];
    record.scheduled_ns = now_ns(origin_);
    if (index == plan_.warmup_jobs) observer_.on_measurement_start();
    send(index);
  }

  void send(std::size_t index) {
    JobRecord& record = records_[index];
    // Written before the job is handed over: the I/O thread owns the record afterwards.
    record.sent_ns = now_ns(origin_);
    in_flight_.fetch_add(1);
    Client& client = *clients_[index % clients_.size()];
    StreamCallback on_event;
    if (plan_.stream) {
      on_event = [this, index](const StreamEvent& event) {
        if (event.type != StreamEvent::Type::chunk || event.content.empty()) return;
        JobRecord& r = records_[index];
        if (r.chunks == 0) {
          r.first_chunk_ns = now_ns(origin_);
          streaming_.fetch_add(1);
        }
        ++r.chunks;
      };
    }
    client.dispatch_async(
        request_, [this, index](DispatchOutcome outcome) { on_done(index, std::move(outcome)); },
        std::move(on_event));
  }

  void on_done(std::size_t index, DispatchOutcome outcome) {
    JobRecord& record = records_[index];
    record.done_ns = now_ns(origin_);
    record.finished = true;
    record.ok = outcome.ok();
    if (outcome.response)
      record.worker_ns = static_cast<int64_t>(outcome.response->total_duration_ns);
    if (!record.ok) {
      record.error =
          outcome.error
              ? std::string(protocol::to_string(outcome.error->kind())) +
                    (outcome.error->code().empty() ? std::string() : "/" + outcome.error->code())
              : std::string("unknown");
    }
    if (record.chunks > 0) streaming_.fetch_sub(1);
    const std::size_t in_flight = in_flight_.fetch_sub(1) - 1;
    observer_.on_in_flight(in_flight, streaming_.load());
    if (plan_.mode == LoadMode::closed_loop) {
      std::shared_lock guard(shutdown_mutex_);
      if (!stopping_) send_next_closed();
    }
    if (finished_.fetch_add(1) + 1 >= plan_.total_jobs()) {
      std::lock_guard lock(done_mutex_);
      done_.notify_all();
    }
  }

  void shut_down() {
    {
      // No callback may reach another client while they are being destroyed.
      std::unique_lock guard(shutdown_mutex_);
      stopping_ = true;
    }
    clients_.clear();
  }

  const RunPlan& plan_;
  std::vector<JobRecord>& records_;
  RunObserver& observer_;
  DispatchRequest request_;
  std::vector<std::unique_ptr<Client>> clients_;
  BenchClock::time_point origin_;
  std::atomic<std::size_t> next_{0};
  std::atomic<std::size_t> finished_{0};
  std::atomic<std::size_t> in_flight_{0};
  std::atomic<std::size_t> streaming_{0};
  std::mutex done_mutex_;
  std::condition_variable done_;
  std::shared_mutex shutdown_mutex_;
  bool stopping_ = false;
};

}  // namespace

void run_dispatch(const DispatchTarget& target, const RunPlan& plan,
                  std::vector<JobRecord>& records, RunObserver& observer) {
  DispatchLoad load(target, plan, records, observer);
  load.run();
}

}  // namespace dispatch::bench
