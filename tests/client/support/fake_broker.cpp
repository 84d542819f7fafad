#include "fake_broker.hpp"

#include <sstream>

#include "dispatch/protocol/codec.hpp"
#include "dispatch/protocol/zmq_io.hpp"

namespace dispatch::test {

using protocol::Command;

FakeBroker::FakeBroker(std::string broker_id, std::optional<Curve> curve)
    : curve_(std::move(curve)),
      socket_(context_, zmq::socket_type::router),
      broker_id_(std::move(broker_id)),
      on_submit_(&FakeBroker::answer) {
  if (curve_) {
    // The ZAP handler exists before the socket binds, as in dispatch-broker.
    zap_ = zmq::socket_t(context_, zmq::socket_type::rep);
    zap_.set(zmq::sockopt::linger, 0);
    zap_.set(zmq::sockopt::rcvtimeo, 20);
    zap_.bind("inproc://zeromq.zap.01");
    zap_thread_ = std::thread([this] { run_zap(); });
    protocol::make_curve_server(socket_, curve_->server, "dispatch-frontend");
  }
  socket_.set(zmq::sockopt::linger, 0);
  socket_.set(zmq::sockopt::router_mandatory, 1);
  socket_.bind("tcp://127.0.0.1:0");
  endpoint_ = socket_.get(zmq::sockopt::last_endpoint);
  thread_ = std::thread([this] { run(); });
}

FakeBroker::~FakeBroker() {
  stop_ = true;
  thread_.join();
  if (zap_thread_.joinable()) zap_thread_.join();
}

void FakeBroker::set_allowed_clients(std::set<std::string> keys) {
  std::lock_guard lock(mutex_);
  if (curve_) curve_->allowed_clients = std::move(keys);
}

std::vector<std::string> FakeBroker::submit_user_ids() const {
  std::lock_guard lock(mutex_);
  return submit_user_ids_;
}

std::set<std::string> FakeBroker::peer_user_ids() const {
  std::lock_guard lock(mutex_);
  return peer_user_ids_;
}

std::size_t FakeBroker::zap_admissions() const {
  std::lock_guard lock(mutex_);
  return zap_admissions_;
}

std::size_t FakeBroker::zap_refusals() const {
  std::lock_guard lock(mutex_);
  return zap_refusals_;
}

void FakeBroker::run_zap() {
  while (!stop_) {
    std::vector<std::string> request;
    zmq::message_t frame;
    if (!zap_.recv(frame)) continue;
    request.push_back(frame.to_string());
    while (frame.more() && zap_.recv(frame)) request.push_back(frame.to_string());
    const std::vector<std::string> reply = zap_reply(request);
    for (std::size_t i = 0; i < reply.size(); ++i) {
      zap_.send(zmq::buffer(reply[i]),
                i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }
}

// RFC 27: [version, request id, domain, address, identity, mechanism, credentials...] ->
// [version, request id, status code, status text, user id, metadata].
std::vector<std::string> FakeBroker::zap_reply(const std::vector<std::string>& request) {
  const std::string request_id = request.size() > 1 ? request[1] : "";
  if (request.size() < 7 || request[5] != "CURVE") {
    std::lock_guard lock(mutex_);
    ++zap_refusals_;
    return {"1.0", request_id, "400", "CURVE required", "", ""};
  }
  const std::string key = protocol::z85_of_binary_key(request[6]);
  std::lock_guard lock(mutex_);
  if (curve_->allowed_clients.count(key) == 0) {
    ++zap_refusals_;
    return {"1.0", request_id, "400", "key not allowed", "", ""};
  }
  ++zap_admissions_;
  return {"1.0", request_id, "200", "OK", key, ""};
}

void FakeBroker::set_on_submit(OnSubmit handler) {
  std::lock_guard lock(mutex_);
  on_submit_ = std::move(handler);
}

void FakeBroker::set_broker_id(std::string id) {
  std::lock_guard lock(mutex_);
  broker_id_ = std::move(id);
}

void FakeBroker::post(std::function<void(FakeBroker&)> task) {
  std::lock_guard lock(mutex_);
  tasks_.push_back(std::move(task));
}

void FakeBroker::run() {
  protocol::IncomingMessage incoming;
  while (!stop_) {
    std::vector<std::function<void(FakeBroker&)>> tasks;
    {
      std::lock_guard lock(mutex_);
      tasks.swap(tasks_);
    }
    for (auto& task : tasks) task(*this);
    zmq::pollitem_t items[] = {{socket_.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, std::chrono::milliseconds(5));
    while (incoming.receive(socket_, /*routed=*/true)) {
      if (curve_) {
        const char* user_id = zmq_msg_gets(incoming.frame(1).handle(), "User-Id");
        last_user_id_ = user_id != nullptr ? user_id : "";
        std::lock_guard lock(mutex_);
        peer_user_ids_.insert(last_user_id_);
      }
      handle(incoming.routing_id(), incoming.protocol_frames());
    }
  }
}

void FakeBroker::handle(std::string_view route_view, std::span<const std::string_view> frames) {
  const std::string route(route_view);
  auto parsed = protocol::parse_frames(frames);
  if (!parsed) return;
  const auto& message = parsed.value();
  OnSubmit handler;
  {
    std::lock_guard lock(mutex_);
    routes_.insert(route);
    handler = on_submit_;
  }
  switch (message.command) {
    case Command::submit: {
      auto submit = protocol::decode<protocol::Submit>(message.header);
      auto request = protocol::decode<protocol::Request>(message.payload);
      if (!submit || !request) return;
      Submitted job{route, submit.value(), request.value()};
      {
        std::lock_guard lock(mutex_);
        submits_.push_back(job);
        if (curve_) submit_user_ids_.push_back(last_user_id_);
      }
      if (!silent_ && handler) handler(*this, job);
      return;
    }
    case Command::cancel: {
      auto cancel = protocol::decode<protocol::Cancel>(message.header);
      if (!cancel) return;
      {
        std::lock_guard lock(mutex_);
        cancels_.push_back(cancel.value().job_id);
      }
      if (!silent_) {
        send_error(
            route, cancel.value().job_id,
            protocol::Error{
                protocol::ErrorKind::cancelled, "cancelled by the client", 0, "", "", "", {}});
      }
      return;
    }
    case Command::heartbeat: {
      {
        std::lock_guard lock(mutex_);
        ++heartbeats_;
      }
      if (!silent_) send_heartbeat(route);
      return;
    }
    case Command::status: {
      {
        std::lock_guard lock(mutex_);
        ++status_requests_;
      }
      if (silent_) return;
      protocol::StatusReply reply;
      {
        std::lock_guard lock(mutex_);
        reply.broker_id = broker_id_;
      }
      reply.uptime_ms = 65'000;
      reply.queue_depth = {1, 0, 7};
      reply.queue_limit = 10'000;
      reply.in_flight = 3;
      reply.finished_kept = 12;
      reply.workers.push_back(protocol::WorkerStatus{
          "host-a:100:ab12", "host-a", 100, 8, 3, {"ollama", "openai"}, 250, "ready"});
      reply.providers["openai"] = protocol::ProviderCounters{10, 8, 2, 1, 1, 120, 340};
      protocol::send_routed(socket_, route, Command::status, protocol::encode(reply));
      return;
    }
    default:
      return;
  }
}

void FakeBroker::accept(const Submitted& job, bool duplicate) {
  protocol::Accepted accepted;
  accepted.job_id = job.submit.job_id;
  {
    std::lock_guard lock(mutex_);
    accepted.broker_id = broker_id_;
  }
  accepted.duplicate = duplicate;
  protocol::send_routed(socket_, job.route, Command::accepted, protocol::encode(accepted));
}

void FakeBroker::send_result(const std::string& route, const std::string& job_id,
                             const protocol::Response& response) {
  protocol::send_routed(socket_, route, Command::result,
                        protocol::encode(protocol::JobEnd{job_id, 1}), protocol::encode(response));
}

void FakeBroker::send_error(const std::string& route, const std::string& job_id,
                            const protocol::Error& error) {
  protocol::send_routed(socket_, route, Command::error,
                        protocol::encode(protocol::JobEnd{job_id, 1}), protocol::encode(error));
}

void FakeBroker::send_chunk(const std::string& route, const protocol::Chunk& chunk) {
  protocol::send_routed(socket_, route, Command::chunk, protocol::encode(chunk));
}

void FakeBroker::send_reset(const std::string& route, const protocol::StreamReset& reset) {
  protocol::send_routed(socket_, route, Command::reset, protocol::encode(reset));
}

void FakeBroker::send_heartbeat(const std::string& route) {
  protocol::Heartbeat heartbeat;
  {
    std::lock_guard lock(mutex_);
    heartbeat.sender_id = broker_id_;
  }
  protocol::send_routed(socket_, route, Command::heartbeat, protocol::encode(heartbeat));
}

void FakeBroker::send_rejected(const std::string& route, const protocol::Rejected& rejected) {
  protocol::send_routed(socket_, route, Command::rejected, protocol::encode(rejected));
}

protocol::Response FakeBroker::echo_response(const protocol::Request& request) {
  protocol::Response response;
  response.content =
      "echo: " + (request.messages.empty() ? std::string() : request.messages.back().content);
  response.provider = request.provider;
  response.model = request.model;
  response.usage = protocol::Usage{3, 5, 8};
  response.finish_reason = "stop";
  response.raw_finish_reason = "stop";
  response.request_id = "req-1";
  response.created_at = 1'700'000'000;
  response.total_duration_ns = 1'500'000;
  response.attempts.push_back(
      protocol::Attempt{request.provider, request.model, "ok", 200, "", "", 0, 1, ""});
  return response;
}

void FakeBroker::answer(FakeBroker& broker, const Submitted& job) {
  broker.accept(job);
  const auto& model = job.request.model;
  if (model.rfind("error:", 0) == 0) {
    // error:<kind>[:<status>]
    std::string spec = model.substr(6);
    protocol::Error error;
    const auto colon = spec.find(':');
    error.kind = protocol::error_kind_from_string(spec.substr(0, colon));
    if (colon != std::string::npos) {
      error.status = static_cast<uint16_t>(std::stoi(spec.substr(colon + 1)));
    }
    error.message = "scripted " + spec.substr(0, colon);
    error.code = "scripted";
    error.provider = job.request.provider;
    error.model = model;
    broker.send_error(job.route, job.submit.job_id, error);
    return;
  }
  auto response = echo_response(job.request);
  if (job.submit.stream) {
    std::istringstream words(response.content);
    std::string word;
    uint64_t seq = 0;
    bool first = true;
    while (words >> word) {
      broker.send_chunk(
          job.route, protocol::Chunk{job.submit.job_id, seq++, (first ? "" : " ") + word, "", {}});
      first = false;
    }
  }
  broker.send_result(job.route, job.submit.job_id, response);
}

std::vector<FakeBroker::Submitted> FakeBroker::submits() const {
  std::lock_guard lock(mutex_);
  return submits_;
}

std::size_t FakeBroker::submit_count(const std::string& job_id) const {
  std::lock_guard lock(mutex_);
  if (job_id.empty()) return submits_.size();
  std::size_t count = 0;
  for (const auto& job : submits_) count += job.submit.job_id == job_id ? 1 : 0;
  return count;
}

std::vector<std::string> FakeBroker::cancels() const {
  std::lock_guard lock(mutex_);
  return cancels_;
}

std::size_t FakeBroker::heartbeats() const {
  std::lock_guard lock(mutex_);
  return heartbeats_;
}

std::size_t FakeBroker::status_requests() const {
  std::lock_guard lock(mutex_);
  return status_requests_;
}

std::set<std::string> FakeBroker::routes() const {
  std::lock_guard lock(mutex_);
  return routes_;
}

std::optional<std::string> FakeBroker::route_of(const std::string& job_id) const {
  std::lock_guard lock(mutex_);
  for (auto it = submits_.rbegin(); it != submits_.rend(); ++it) {
    if (it->submit.job_id == job_id) return it->route;
  }
  return std::nullopt;
}

bool FakeBroker::eventually(const std::function<bool()>& predicate,
                            std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (predicate()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return predicate();
}

}  // namespace dispatch::test
