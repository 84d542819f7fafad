#include "fake_broker.hpp"

#include <stdexcept>

namespace dispatch::worker::test {

FakeBroker::FakeBroker() {
  endpoint_ = "tcp://127.0.0.1:*";
  open();
  endpoint_ = socket_->get(zmq::sockopt::last_endpoint);
}

void FakeBroker::open() {
  socket_.emplace(context_, zmq::socket_type::router);
  protocol::apply_protocol_socket_options(*socket_);
  socket_->set(zmq::sockopt::linger, 0);
  socket_->set(zmq::sockopt::router_mandatory, 1);
  socket_->bind(endpoint_);
}

void FakeBroker::close() {
  socket_.reset();
}

void FakeBroker::reopen() {
  open();
}

std::optional<WorkerMessage> FakeBroker::receive(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (incoming_.receive(*socket_, /*routed=*/true)) {
      auto parsed = incoming_.parse();
      if (!parsed) throw std::runtime_error("worker sent bad frames: " + parsed.error().message);
      worker_ = std::string(incoming_.routing_id());
      WorkerMessage message{parsed.value().command, std::string(parsed.value().header),
                            std::string(parsed.value().payload)};
      seen.push_back(message);
      return message;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    zmq::pollitem_t item{socket_->handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::min(left, std::chrono::milliseconds(100)));
  }
}

std::optional<WorkerMessage> FakeBroker::receive_until(protocol::Command command,
                                                       std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    auto message = receive(left);
    if (!message) return std::nullopt;
    if (message->command == command) return message;
  }
}

void FakeBroker::send(protocol::Command command, const std::string& header,
                      const std::string& payload) {
  if (worker_.empty()) throw std::logic_error("no worker has spoken yet");
  protocol::send_routed(*socket_, worker_, command, header, payload, protocol::SendMode::blocking);
}

void FakeBroker::send_job(const std::string& job_id, const protocol::Request& request, bool stream,
                          uint32_t delivery) {
  send(protocol::Command::job, protocol::encode(protocol::JobHeader{job_id, delivery, stream, {}}),
       protocol::encode(request));
}

std::size_t FakeBroker::count(protocol::Command command) const {
  std::size_t n = 0;
  for (const WorkerMessage& message : seen) n += message.command == command ? 1 : 0;
  return n;
}

RunningWorker::RunningWorker(WorkerConfig config, RuntimeOptions options)
    : runtime_(std::move(config), std::move(options)), thread_([this] {
        runtime_.run();
        exited_ = true;
      }) {}

RunningWorker::~RunningWorker() {
  runtime_.request_drain();
  thread_.join();
}

bool RunningWorker::wait_for_exit(std::chrono::milliseconds timeout) {
  return poll_until([this] { return exited_.load(); }, timeout);
}

RuntimeOptions quiet_options(const FakeBroker& broker) {
  RuntimeOptions options;
  options.broker_endpoint = broker.endpoint();
  options.heartbeat_interval = 1000ms;
  options.liveness = 100;
  options.worker_id = "test-worker";
  options.drain_timeout = 10s;
  options.final_flush_min = 100ms;
  return options;
}

}  // namespace dispatch::worker::test
