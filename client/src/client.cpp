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

#include "dispatch/common/fd.hpp"
#include "dispatch/common/random.hpp"
#include "dispatch/protocol/broker_keys.hpp"
#include "dispatch/protocol/codec.hpp"
#include "dispatch/protocol/handshake_monitor.hpp"
#include "dispatch/protocol/zmq_io.hpp"
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

// Owns the I/O thread, the socket and the Session. Everything but post()/stop() runs on the
// I/O thread.
class ClientEngine {
 public:
  using Task = std::function<void(detail::Session&)>;

  explicit ClientEngine(const ClientOptions& options)
      : options_(options),
        clock_(options.clock != nullptr ? *options.clock : SystemClock::instance()),
        random_(options.random != nullptr ? *options.random : own_random_),
        settings_(detail::SessionSettings::from(options)),
        session_(settings_, clock_, random_),
        keys_(curve_keys_of(options)),
        context_(1) {
    open_socket();
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

  // 128 bits from the OS CSPRNG: ids of two clients must never collide, or the broker's
  // deduplication would hand one client's answer to the other.
  static std::string new_job_id() { return random_hex_id(); }
  const detail::SessionSettings& settings() const noexcept { return settings_; }

  std::size_t in_flight() const noexcept { return in_flight_.load(); }

  // Called on the caller's thread: encodes, then queues the job for the I/O thread.
  std::string submit(const DispatchRequest& request, detail::JobCallbacks callbacks) {
    std::string job_id = new_job_id();
    auto prepared = std::make_shared<detail::PreparedJob>(
        detail::prepare_job(settings_, job_id, request, static_cast<bool>(callbacks.on_event)));
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
  static protocol::BrokerKeys curve_keys_of(const ClientOptions& options) {
    protocol::BrokerKeys keys;
    keys.broker_public_key = options.broker_public_key;
    keys.own = options.curve_keys;
    if (auto checked = protocol::check_broker_keys(keys); !checked) {
      throw std::invalid_argument("dispatch client: " + checked.error());
    }
    return keys;
  }

  // A new DEALER with its handshake monitor, replacing the old pair only once both exist (on
  // failure the old ones stay and the error is thrown).
  void open_socket() {
    zmq::socket_t socket(context_, zmq::socket_type::dealer);
    socket.set(zmq::sockopt::linger, 0);
    protocol::apply_protocol_socket_options(socket);
    socket.set(zmq::sockopt::reconnect_ivl, 100);
    socket.set(zmq::sockopt::reconnect_ivl_max, 2000);
    protocol::apply_broker_keys(socket, keys_);
    // Before connect, so that the first handshake is seen.
    auto monitor = std::make_unique<protocol::HandshakeMonitor>(
        context_, socket, options_.broker_endpoint, keys_.enabled());
    try {
      socket.connect(options_.broker_endpoint);
    } catch (const zmq::error_t& e) {
      throw std::invalid_argument("dispatch client: cannot connect to '" +
                                  options_.broker_endpoint + "': " + e.what());
    }
    if (monitor_) monitor->carry_over(monitor_->history());
    monitor_ = std::move(monitor);
    socket_ = std::move(socket);
  }

  // The broker went silent, or refused the last connection and new work came: a fresh socket
  // (a fresh handshake), and every unfinished job is sent again on it.
  void replace_socket(std::deque<detail::EncodedMessage>& pending) {
    pending.clear();  // they were for the old socket; on_reconnected resends what matters
    try {
      open_socket();
    } catch (const std::exception& e) {
      spdlog::error("{}", e.what());
    }
    session_.on_reconnected();
  }

  // A refused handshake fails everything waiting at once: nothing sent on this connection will
  // be answered, and the user should learn why now rather than after the ack timeouts.
  void check_handshakes() {
    for (const protocol::HandshakeProblem& problem : monitor_->read()) {
      spdlog::info("dispatch client: {}", problem.message);
      const ErrorKind kind = problem.failure == protocol::HandshakeFailure::protocol_error
                                 ? ErrorKind::network
                                 : ErrorKind::authentication;
      session_.fail_all(make_wire_error(
          kind, std::string(protocol::handshake_failure_code(problem.failure)), problem.message));
      refused_ = true;
    }
  }

  void run() {
    std::deque<detail::EncodedMessage> pending;  // messages the socket could not take yet (HWM)
    std::vector<Task> tasks;
    while (true) {
      bool stopping = false;
      {
        std::lock_guard lock(mutex_);
        tasks.swap(tasks_);
        stopping = stop_requested_;
      }
      // libzmq gives up after some refusals (a mechanism mismatch): new work gets a new try.
      if (refused_ && !tasks.empty() && !stopping) {
        refused_ = false;
        replace_socket(pending);
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
      check_handshakes();
      session_.tick();
      if (session_.take_reconnect_request()) replace_socket(pending);
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

  void flush(std::deque<detail::EncodedMessage>& pending) {
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
        {monitor_->socket().handle(), 0, ZMQ_POLLIN, 0},
    };
    try {
      zmq::poll(items, 3, milliseconds(timeout_ms));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) spdlog::warn("dispatch client: poll failed: {}", e.what());
    }
    if ((items[1].revents & ZMQ_POLLIN) != 0) wake_.drain();
  }

  ClientOptions options_;
  Clock& clock_;
  // Jitter of resubmission waits, drawn on the I/O thread only. Job ids come from
  // random_hex_id() (the OS CSPRNG), never from here.
  DefaultRandom own_random_;
  Random& random_;
  detail::SessionSettings settings_;
  detail::Session session_;
  protocol::BrokerKeys keys_;  // plaintext when empty; holds a secret key: never logged
  zmq::context_t context_;
  zmq::socket_t socket_;
  std::unique_ptr<protocol::HandshakeMonitor> monitor_;  // of socket_
  bool refused_ = false;  // the last handshake was refused; new work replaces the socket
  protocol::IncomingMessage incoming_;
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
