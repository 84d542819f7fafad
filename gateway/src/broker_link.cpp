#include "dispatch/gateway/broker_link.hpp"

#include <spdlog/spdlog.h>

#include <array>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <future>
#include <stdexcept>
#include <utility>
#include <zmq.hpp>

#include "dispatch/loop_client.hpp"

namespace dispatch::gateway {

namespace net = boost::asio;
using boost::system::error_code;

// One loop's broker connection. Every member function runs on the loop's thread (or, for the
// constructor and destructor, while the loop is not running).
class LoopBrokerLink::LoopConnection {
 public:
  LoopConnection(net::io_context& loop, const ClientOptions& options, zmq::context_t& context)
      : loop_(loop), client_(options, context), timer_(loop) {
    watch_descriptors();
  }

  // The descriptors belong to ZeroMQ: released, never closed. Handlers still queued in the
  // stopped loop are destroyed with it, never run.
  ~LoopConnection() { release_descriptors(); }

  LoopConnection(const LoopConnection&) = delete;
  LoopConnection& operator=(const LoopConnection&) = delete;

  bool runs_here() const { return loop_.get_executor().running_in_this_thread(); }
  net::io_context& loop() noexcept { return loop_; }
  LoopClient& client() noexcept { return client_; }

  // Lets the client do what is due, then waits again: after every call into the client, and
  // whenever a descriptor or the timer fires.
  void process() {
    const LoopClient::Progress progress = client_.process();
    if (client_.generation() != generation_) watch_descriptors();
    if (progress.again && !process_posted_) {
      process_posted_ = true;
      net::post(loop_, [this] {
        process_posted_ = false;
        process();
      });
    }
    for (std::size_t i = 0; i < descriptors_.size(); ++i) {
      if (!waiting_[i]) wait_on(i);
    }
    arm_timer(progress.next_due);
  }

 private:
  void watch_descriptors() {
    release_descriptors();
    generation_ = client_.generation();
    const std::array<int, 2> fds = client_.descriptors();
    for (std::size_t i = 0; i < fds.size(); ++i) {
      descriptors_[i].emplace(loop_, fds[i]);
      waiting_[i] = false;
    }
  }

  void release_descriptors() {
    for (auto& descriptor : descriptors_) {
      if (!descriptor) continue;
      error_code ignored;
      descriptor->cancel(ignored);
      descriptor->release();
      descriptor.reset();
    }
  }

  void wait_on(std::size_t i) {
    waiting_[i] = true;
    descriptors_[i]->async_wait(net::posix::descriptor_base::wait_read,
                                [this, i, generation = generation_](error_code ec) {
                                  // Cancelled, or a descriptor of a replaced socket.
                                  if (ec || generation != generation_) return;
                                  waiting_[i] = false;
                                  process();
                                });
  }

  // One timer at the earliest due time: re-armed only when something earlier comes up, since
  // the session's next wakeup moves with every job and re-arming costs a system call.
  void arm_timer(Clock::time_point due) {
    if (due == Clock::time_point::max() || due >= timer_due_) return;
    timer_due_ = due;
    timer_.expires_after(due - client_.clock().now());
    timer_.async_wait([this](error_code ec) {
      if (ec) return;  // re-armed earlier, or stopped
      timer_due_ = Clock::time_point::max();
      process();
    });
  }

  net::io_context& loop_;
  LoopClient client_;
  std::array<std::optional<net::posix::stream_descriptor>, 2> descriptors_;
  std::array<bool, 2> waiting_{false, false};
  uint64_t generation_ = 0;  // of the socket whose descriptors are watched
  net::steady_timer timer_;
  Clock::time_point timer_due_ = Clock::time_point::max();
  bool process_posted_ = false;
};

LoopBrokerLink::LoopBrokerLink(ClientOptions options)
    : options_(std::move(options)), context_(std::make_unique<zmq::context_t>(1)) {}

LoopBrokerLink::~LoopBrokerLink() {
  detach();
}

void LoopBrokerLink::attach(net::io_context& loop) {
  auto connection = std::make_unique<LoopConnection>(loop, options_, *context_);
  // Its first waits are armed on the loop, once it runs.
  net::post(loop, [raw = connection.get()] { raw->process(); });
  std::lock_guard lock(mutex_);
  loops_.push_back(std::move(connection));
}

void LoopBrokerLink::detach() {
  std::vector<std::unique_ptr<LoopConnection>> loops;
  {
    std::lock_guard lock(mutex_);
    loops.swap(loops_);
  }
  // Each LoopClient cancels its unfinished jobs at the broker as it goes; their callbacks post
  // into the stopped loops and are dropped.
  loops.clear();
}

LoopBrokerLink::LoopConnection* LoopBrokerLink::on_this_thread() const {
  // Only attach() and detach() change loops_, and never while a loop runs.
  for (const auto& loop : loops_) {
    if (loop->runs_here()) return loop.get();
  }
  return nullptr;
}

std::string LoopBrokerLink::submit_for_tenant(const std::string& tenant, DispatchRequest request,
                                              CompletionCallback on_done, StreamCallback on_event) {
  LoopConnection* connection = on_this_thread();
  if (connection == nullptr) {
    throw std::logic_error("a job was submitted outside the gateway's event loops");
  }
  // The one seam for tenants: the broker scopes job-id ownership, fairness and per-client
  // bounds per (this gateway's identity, tenant), so each API key is a client of its own there
  // rather than all keys sharing this connection. With CURVE the broker honours it only if
  // this gateway's key is in its --allow-gateways.
  request.with_tenant(tenant);
  std::string job_id =
      connection->client().submit(request, std::move(on_done), std::move(on_event));
  connection->process();  // sends it now
  return job_id;
}

void LoopBrokerLink::cancel(const std::string& job_id) {
  if (LoopConnection* connection = on_this_thread()) {
    connection->client().cancel(job_id);
    connection->process();
    return;
  }
  // Job ids are unique, and each loop ignores ids it does not know.
  std::lock_guard lock(mutex_);
  for (const auto& loop : loops_) {
    net::post(loop->loop(), [raw = loop.get(), job_id] {
      raw->client().cancel(job_id);
      raw->process();
    });
  }
}

std::optional<protocol::StatusReply> LoopBrokerLink::status(std::chrono::milliseconds timeout) {
  using Answer = std::optional<protocol::StatusReply>;
  auto promise = std::make_shared<std::promise<Answer>>();
  auto future = promise->get_future();
  {
    std::lock_guard lock(mutex_);
    if (loops_.empty()) return std::nullopt;
    LoopConnection* connection = loops_.front().get();
    net::post(connection->loop(), [connection, promise, timeout] {
      connection->client().request_status(
          timeout, [promise](Result<protocol::StatusReply, protocol::Error> outcome) {
            promise->set_value(outcome ? Answer(std::move(outcome).value()) : std::nullopt);
          });
      connection->process();
    });
  }
  // The session answers by its own deadline; the extra wait only guards against a bug. A loop
  // that stopped drops the request, and the promise with it (broken_promise).
  if (future.wait_for(timeout + std::chrono::seconds(5)) != std::future_status::ready) {
    return std::nullopt;
  }
  try {
    return future.get();
  } catch (const std::future_error&) {
    return std::nullopt;
  }
}

}  // namespace dispatch::gateway
