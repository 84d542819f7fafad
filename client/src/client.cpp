#include "dispatch/client.hpp"

#include <spdlog/spdlog.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <zmq.hpp>

#include "broker_connection.hpp"
#include "dispatch/common/fd.hpp"
#include "dispatch/common/random.hpp"
#include "dispatch/protocol/codec.hpp"
#include "session.hpp"

namespace dispatch {

namespace {

using std::chrono::milliseconds;

std::exception_ptr exception_of(const DispatchError& error) {
  try {
    error.raise();
  } catch (...) {
    return std::current_exception();
  }
  return nullptr;  // unreachable: raise() always throws
}

}  // namespace

DispatchResponse DispatchOutcome::take() && {
  if (response) return std::move(*response);
  if (error) error->raise();  // always throws
  throw InternalError(make_wire_error(ErrorKind::internal, "empty_outcome", "no outcome"));
}

// Owns the I/O thread and the broker connection (socket + Session). Everything but
// post()/stop() runs on the I/O thread.
class ClientEngine {
 public:
  using Task = std::function<void(detail::Session&)>;

  explicit ClientEngine(const ClientOptions& options)
      : clock_(options.clock != nullptr ? *options.clock : SystemClock::instance()),
        random_(options.random != nullptr ? *options.random : own_random_),
        context_(1),
        connection_(options, context_, clock_, random_) {
    thread_ = std::thread([this] { run(); });
  }

  ~ClientEngine() { stop(); }
  ClientEngine(const ClientEngine&) = delete;
  ClientEngine& operator=(const ClientEngine&) = delete;

  void post(Task task) {
    {
      std::lock_guard lock(mutex_);
      tasks_.push_back(std::move(task));
    }
    wake_.signal();
  }

  void stop() {
    {
      std::lock_guard lock(mutex_);
      stop_requested_ = true;
    }
    wake_.signal();
    if (thread_.joinable()) thread_.join();
  }

  std::size_t in_flight() const noexcept { return in_flight_.load(); }

  // Called on the caller's thread: encodes, then queues the job for the I/O thread.
  std::string submit(const DispatchRequest& request, detail::JobCallbacks callbacks) {
    // 128 bits from the OS CSPRNG: ids of two clients must never collide, or the broker's
    // deduplication would hand one client's answer to the other.
    std::string job_id = random_hex_id();
    auto prepared = std::make_shared<detail::PreparedJob>(detail::prepare_job(
        connection_.settings(), job_id, request, static_cast<bool>(callbacks.on_event)));
    in_flight_.fetch_add(1);
    auto on_done = std::move(callbacks.on_done);
    callbacks.on_done = [this, on_done = std::move(on_done)](DispatchOutcome outcome) {
      in_flight_.fetch_sub(1);
      if (on_done) on_done(std::move(outcome));
    };
    post([prepared, callbacks = std::move(callbacks)](detail::Session& session) mutable {
      session.submit(std::move(*prepared), std::move(callbacks));
    });
    return job_id;
  }

 private:
  void run() {
    std::vector<Task> tasks;
    while (true) {
      bool stopping = false;
      {
        std::lock_guard lock(mutex_);
        tasks.swap(tasks_);
        stopping = stop_requested_;
      }
      if (!tasks.empty() && !stopping) connection_.before_new_work();
      for (auto& task : tasks) task(connection_.session());
      tasks.clear();
      if (stopping) {
        connection_.close(kCloseLinger);
        return;
      }
      const bool more = connection_.pump();
      wait(more);
    }
  }

  // Blocks until the socket, the handshake monitor or another thread has something, or the
  // session's next timer is due; returns at once when `ready` (messages are still waiting).
  void wait(bool ready) {
    detail::Session& session = connection_.session();
    long timeout_ms = -1;
    const auto next = session.next_wakeup();
    if (ready) {
      timeout_ms = 0;
    } else if (next != Clock::time_point::max()) {
      const auto now = clock_.now();
      timeout_ms = next <= now ? 0 : std::chrono::ceil<milliseconds>(next - now).count();
    }
    // A bound so that an injected clock moved by hand is noticed.
    if (timeout_ms < 0 || timeout_ms > 1000) timeout_ms = session.has_work() ? 1000 : -1;
    const short socket_events =
        static_cast<short>(ZMQ_POLLIN | (connection_.has_unsent() ? ZMQ_POLLOUT : 0));
    zmq::pollitem_t items[] = {
        {connection_.socket().handle(), 0, socket_events, 0},
        {nullptr, wake_.fd(), ZMQ_POLLIN, 0},
        {connection_.monitor_socket().handle(), 0, ZMQ_POLLIN, 0},
    };
    try {
      zmq::poll(items, 3, milliseconds(timeout_ms));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) spdlog::warn("dispatch client: poll failed: {}", e.what());
    }
    if ((items[1].revents & ZMQ_POLLIN) != 0) wake_.drain();
  }

  // How long the cancels sent on shutdown may take to leave.
  static constexpr milliseconds kCloseLinger{200};

  Clock& clock_;
  // Jitter of resubmission waits, drawn on the I/O thread only. Job ids come from
  // random_hex_id() (the OS CSPRNG), never from here.
  DefaultRandom own_random_;
  Random& random_;
  zmq::context_t context_;
  detail::BrokerConnection connection_;
  WakeupFd wake_;  // other threads signal it after queueing work for the I/O thread
  std::mutex mutex_;
  std::vector<Task> tasks_;
  bool stop_requested_ = false;
  std::atomic<std::size_t> in_flight_{0};
  std::thread thread_;  // last: starts after everything it uses exists
};

PendingDispatch::PendingDispatch(std::string job_id, std::future<DispatchResponse> future,
                                 std::weak_ptr<ClientEngine> engine)
    : job_id_(std::move(job_id)), future_(std::move(future)), engine_(std::move(engine)) {}

void PendingDispatch::cancel() {
  if (auto engine = engine_.lock()) {
    engine->post([id = job_id_](detail::Session& session) { session.cancel(id); });
  }
}

Result<void, std::string> ClientOptions::load_curve_keys(const std::string& broker_key_file,
                                                         const std::string& secret_key_file) {
  auto keys = protocol::load_broker_keys(broker_key_file, secret_key_file);
  if (!keys) return std::move(keys).error();
  if (!keys->enabled()) return {};
  broker_public_key = std::move(keys->broker_public_key);
  curve_keys = std::move(keys->own);
  return {};
}

Client::Client(ClientOptions options)
    : options_(std::move(options)), engine_(std::make_shared<ClientEngine>(options_)) {}

Client::~Client() {
  engine_->stop();
}

DispatchResponse Client::dispatch(const DispatchRequest& request) {
  return dispatch_async(request).get();
}

PendingDispatch Client::dispatch_async(const DispatchRequest& request) {
  auto promise = std::make_shared<std::promise<DispatchResponse>>();
  auto future = promise->get_future();
  detail::JobCallbacks callbacks;
  callbacks.on_done = [promise](DispatchOutcome outcome) {
    if (outcome.ok()) {
      promise->set_value(std::move(*outcome.response));
    } else {
      promise->set_exception(exception_of(*outcome.error));
    }
  };
  auto job_id = engine_->submit(request, std::move(callbacks));
  return PendingDispatch(std::move(job_id), std::move(future), engine_);
}

std::string Client::dispatch_async(const DispatchRequest& request, CompletionCallback on_done,
                                   StreamCallback on_event) {
  detail::JobCallbacks callbacks;
  callbacks.on_done = std::move(on_done);
  callbacks.on_event = std::move(on_event);
  return engine_->submit(request, std::move(callbacks));
}

namespace {
// Hands stream events from the I/O thread to the thread that called dispatch_stream.
struct StreamChannel {
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<StreamEvent> events;
  std::optional<DispatchOutcome> outcome;
};
}  // namespace

DispatchResponse Client::dispatch_stream(const DispatchRequest& request,
                                         const StreamCallback& on_event) {
  auto channel = std::make_shared<StreamChannel>();
  detail::JobCallbacks callbacks;
  callbacks.on_event = [channel](const StreamEvent& event) {
    {
      std::lock_guard lock(channel->mutex);
      channel->events.push_back(event);
    }
    channel->changed.notify_one();
  };
  callbacks.on_done = [channel](DispatchOutcome outcome) {
    {
      std::lock_guard lock(channel->mutex);
      channel->outcome = std::move(outcome);
    }
    channel->changed.notify_one();
  };
  const auto job_id = engine_->submit(request, std::move(callbacks));

  std::deque<StreamEvent> batch;
  while (true) {
    {
      std::unique_lock lock(channel->mutex);
      // The session ends every job by its deadline, so this wait is bounded.
      channel->changed.wait(lock, [&] { return !channel->events.empty() || channel->outcome; });
      batch.swap(channel->events);
      if (batch.empty() && channel->outcome) break;
    }
    for (const auto& event : batch) {
      if (!on_event) continue;
      try {
        on_event(event);
      } catch (...) {
        cancel(job_id);
        throw;
      }
    }
    batch.clear();
  }
  std::lock_guard lock(channel->mutex);
  return std::move(*channel->outcome).take();
}

void Client::cancel(const std::string& job_id) {
  engine_->post([job_id](detail::Session& session) { session.cancel(job_id); });
}

protocol::StatusReply Client::status(milliseconds timeout) {
  auto promise = std::make_shared<std::promise<detail::StatusOutcome>>();
  auto future = promise->get_future();
  engine_->post([promise, timeout](detail::Session& session) {
    session.request_status(timeout, [promise](detail::StatusOutcome outcome) {
      promise->set_value(std::move(outcome));
    });
  });
  // The session answers by its own deadline; the extra wait only guards against a bug.
  if (future.wait_for(timeout + std::chrono::seconds(5)) == std::future_status::ready) {
    detail::StatusOutcome outcome = future.get();
    if (!outcome) throw_dispatch_error(std::move(outcome).error());
    return std::move(outcome).value();
  }
  throw NetworkError(make_wire_error(ErrorKind::network, client_code::broker_unreachable,
                                     "no broker answered at " + options_.broker_endpoint +
                                         " within " + std::to_string(timeout.count()) + " ms"));
}

std::size_t Client::in_flight() const {
  return engine_->in_flight();
}

}  // namespace dispatch
