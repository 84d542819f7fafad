#include "dispatch/client.hpp"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <zmq.hpp>

#include "dispatch/protocol/codec.hpp"
#include "dispatch/protocol/zmq_io.hpp"
#include "session.hpp"

namespace dispatch {

namespace {

using std::chrono::milliseconds;

// Random is used from callers' threads (job ids) and the I/O thread (jitter).
class LockedRandom final : public Random {
 public:
  explicit LockedRandom(Random* injected) : injected_(injected) {}
  double uniform() override {
    std::lock_guard lock(mutex_);
    return injected_ != nullptr ? injected_->uniform() : own_.uniform();
  }

 private:
  std::mutex mutex_;
  Random* injected_;
  DefaultRandom own_;
};

// The wake-up descriptor other threads poke after queueing work for the I/O thread.
class EventFd {
 public:
  EventFd() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  }
  ~EventFd() { ::close(fd_); }
  EventFd(const EventFd&) = delete;
  EventFd& operator=(const EventFd&) = delete;

  int fd() const noexcept { return fd_; }
  void signal() const noexcept {
    const uint64_t one = 1;
    // EAGAIN only when the counter is saturated, i.e. a wake-up is already pending.
    [[maybe_unused]] auto written = ::write(fd_, &one, sizeof one);
  }
  void drain() const noexcept {
    uint64_t value = 0;
    [[maybe_unused]] auto got = ::read(fd_, &value, sizeof value);
  }

 private:
  int fd_;
};

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

// Owns the I/O thread, the socket and the Session. Everything but post()/stop() runs on the
// I/O thread.
class ClientEngine {
 public:
  using Task = std::function<void(detail::Session&)>;

  explicit ClientEngine(const ClientOptions& options)
      : options_(options),
        clock_(options.clock != nullptr ? *options.clock : SystemClock::instance()),
        random_(options.random),
        settings_(detail::SessionSettings::from(options)),
        session_(settings_, clock_, random_),
        context_(1),
        socket_(make_socket()) {
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

  std::string new_job_id() { return detail::make_job_id(random_); }
  const detail::SessionSettings& settings() const noexcept { return settings_; }

  std::size_t in_flight() const noexcept { return in_flight_.load(); }

  // Called on the caller's thread: encodes, then queues the job for the I/O thread.
  std::string submit(const DispatchRequest& request, detail::JobSink sink) {
    std::string job_id = new_job_id();
    auto prepared = std::make_shared<detail::PreparedJob>(
        detail::prepare_job(settings_, job_id, request, static_cast<bool>(sink.on_event)));
    in_flight_.fetch_add(1);
    auto on_done = std::move(sink.on_done);
    sink.on_done = [this, on_done = std::move(on_done)](DispatchOutcome outcome) {
      in_flight_.fetch_sub(1);
      if (on_done) on_done(std::move(outcome));
    };
    post([prepared, sink = std::move(sink)](detail::Session& session) mutable {
      session.submit(std::move(*prepared), std::move(sink));
    });
    return job_id;
  }

 private:
  zmq::socket_t make_socket() {
    zmq::socket_t socket(context_, zmq::socket_type::dealer);
    socket.set(zmq::sockopt::linger, 0);
    protocol::apply_protocol_socket_options(socket);
    socket.set(zmq::sockopt::reconnect_ivl, 100);
    socket.set(zmq::sockopt::reconnect_ivl_max, 2000);
    try {
      socket.connect(options_.broker_endpoint);
    } catch (const zmq::error_t& e) {
      throw std::invalid_argument("dispatch client: cannot connect to '" +
                                  options_.broker_endpoint + "': " + e.what());
    }
    return socket;
  }

  void run() {
    std::deque<detail::Frames> pending;  // messages the socket could not take yet (HWM)
    std::vector<Task> tasks;
    while (true) {
      bool stopping = false;
      {
        std::lock_guard lock(mutex_);
        tasks.swap(tasks_);
        stopping = stop_requested_;
      }
      for (auto& task : tasks) task(session_);
      tasks.clear();
      if (stopping) {
        session_.shutdown();
        for (auto& frames : session_.take_outbox()) pending.push_back(std::move(frames));
        // Give the cancels a moment to leave; the broker ends those jobs itself otherwise.
        socket_.set(zmq::sockopt::linger, 200);
        flush(pending);
        socket_.close();
        return;
      }
      receive_available();
      session_.tick();
      if (session_.take_reconnect_request()) {
        pending.clear();  // they were for the old socket; on_reconnected resends what matters
        try {
          socket_ = make_socket();
        } catch (const std::exception& e) {
          spdlog::error("{}", e.what());
        }
        session_.on_reconnected();
      }
      for (auto& frames : session_.take_outbox()) pending.push_back(std::move(frames));
      flush(pending);
      wait(pending.empty() ? 0 : ZMQ_POLLOUT);
    }
  }

  void receive_available() {
    // Bounded so that timers and queued work are looked at even under a flood of replies.
    for (int i = 0; i < 10000; ++i) {
      try {
        if (!incoming_.receive(socket_, /*routed=*/false)) return;
      } catch (const zmq::error_t& e) {
        spdlog::warn("dispatch client: receive failed: {}", e.what());
        return;
      }
      session_.on_message(incoming_.protocol_frames());
    }
  }

  void flush(std::deque<detail::Frames>& pending) {
    std::vector<std::string_view> views;
    while (!pending.empty()) {
      const auto& frames = pending.front();
      views.assign(frames.begin(), frames.end());
      try {
        if (!protocol::send_frames(socket_, views, protocol::SendMode::nonblocking)) return;
      } catch (const zmq::error_t& e) {
        spdlog::warn("dispatch client: send failed: {}", e.what());
      }
      pending.pop_front();
    }
  }

  void wait(short extra_socket_events) {
    long timeout_ms = -1;
    const auto next = session_.next_wakeup();
    if (next != Clock::time_point::max()) {
      const auto now = clock_.now();
      timeout_ms = next <= now ? 0 : std::chrono::ceil<milliseconds>(next - now).count();
    }
    // A bound so that an injected clock moved by hand is noticed.
    if (timeout_ms < 0 || timeout_ms > 1000) timeout_ms = session_.has_work() ? 1000 : -1;
    zmq::pollitem_t items[] = {
        {socket_.handle(), 0, static_cast<short>(ZMQ_POLLIN | extra_socket_events), 0},
        {nullptr, wake_.fd(), ZMQ_POLLIN, 0},
    };
    try {
      zmq::poll(items, 2, milliseconds(timeout_ms));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) spdlog::warn("dispatch client: poll failed: {}", e.what());
    }
    if ((items[1].revents & ZMQ_POLLIN) != 0) wake_.drain();
  }

  ClientOptions options_;
  Clock& clock_;
  LockedRandom random_;
  detail::SessionSettings settings_;
  detail::Session session_;
  zmq::context_t context_;
  zmq::socket_t socket_;
  protocol::IncomingMessage incoming_;
  EventFd wake_;
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
  detail::JobSink sink;
  sink.on_done = [promise](DispatchOutcome outcome) {
    if (outcome.ok()) {
      promise->set_value(std::move(*outcome.response));
    } else {
      promise->set_exception(exception_of(*outcome.error));
    }
  };
  auto job_id = engine_->submit(request, std::move(sink));
  return PendingDispatch(std::move(job_id), std::move(future), engine_);
}

std::string Client::dispatch_async(const DispatchRequest& request, CompletionCallback on_done,
                                   StreamCallback on_event) {
  detail::JobSink sink;
  sink.on_done = std::move(on_done);
  sink.on_event = std::move(on_event);
  return engine_->submit(request, std::move(sink));
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
  detail::JobSink sink;
  sink.on_event = [channel](const StreamEvent& event) {
    {
      std::lock_guard lock(channel->mutex);
      channel->events.push_back(event);
    }
    channel->changed.notify_one();
  };
  sink.on_done = [channel](DispatchOutcome outcome) {
    {
      std::lock_guard lock(channel->mutex);
      channel->outcome = std::move(outcome);
    }
    channel->changed.notify_one();
  };
  const auto job_id = engine_->submit(request, std::move(sink));

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
  auto promise = std::make_shared<std::promise<std::optional<protocol::StatusReply>>>();
  auto future = promise->get_future();
  engine_->post([promise, timeout](detail::Session& session) {
    session.request_status(timeout, [promise](std::optional<protocol::StatusReply> reply) {
      promise->set_value(std::move(reply));
    });
  });
  // The session answers by its own deadline; the extra wait only guards against a bug.
  if (future.wait_for(timeout + std::chrono::seconds(5)) == std::future_status::ready) {
    if (auto reply = future.get()) return std::move(*reply);
  }
  throw NetworkError(make_wire_error(ErrorKind::network, client_code::broker_unreachable,
                                     "no broker answered at " + options_.broker_endpoint +
                                         " within " + std::to_string(timeout.count()) + " ms"));
}

std::size_t Client::in_flight() const {
  return engine_->in_flight();
}

}  // namespace dispatch
