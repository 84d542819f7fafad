#include "dispatch/loop_client.hpp"

#include <utility>
#include <zmq.hpp>

#include "broker_connection.hpp"
#include "dispatch/common/random.hpp"

namespace dispatch {

namespace {
// How long the cancels sent on destruction may take to leave.
constexpr std::chrono::milliseconds kCloseLinger{200};
}  // namespace

LoopClient::LoopClient(const ClientOptions& options, zmq::context_t& context)
    : clock_(options.clock != nullptr ? *options.clock : SystemClock::instance()),
      connection_(std::make_unique<detail::BrokerConnection>(
          options, context, clock_, options.random != nullptr ? *options.random : own_random_)) {}

LoopClient::~LoopClient() {
  connection_->close(kCloseLinger);
}

std::string LoopClient::submit(const DispatchRequest& request, CompletionCallback on_done,
                               StreamCallback on_event) {
  std::string job_id = random_hex_id();
  detail::JobCallbacks callbacks{std::move(on_event), std::move(on_done)};
  const bool want_chunks = static_cast<bool>(callbacks.on_event);
  connection_->before_new_work();
  connection_->session().submit(
      detail::prepare_job(connection_->settings(), job_id, request, want_chunks),
      std::move(callbacks));
  return job_id;
}

void LoopClient::cancel(const std::string& job_id) {
  connection_->session().cancel(job_id);
}

void LoopClient::request_status(std::chrono::milliseconds timeout, StatusDone done) {
  connection_->before_new_work();
  connection_->session().request_status(timeout, std::move(done));
}

LoopClient::Progress LoopClient::process() {
  Progress progress;
  // The descriptor announces only changes: a message that arrived while pump() was sending
  // is not announced again, so look before the caller goes back to waiting.
  progress.again = connection_->pump() || connection_->readable_now();
  progress.next_due = connection_->session().next_wakeup();
  return progress;
}

std::array<int, 2> LoopClient::descriptors() const {
  return {connection_->socket().get(zmq::sockopt::fd), connection_->monitor_fd()};
}

uint64_t LoopClient::generation() const noexcept {
  return connection_->generation();
}

std::size_t LoopClient::in_flight() const noexcept {
  return connection_->session().unfinished();
}

}  // namespace dispatch
