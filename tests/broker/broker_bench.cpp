// broker_bench: throughput of the real dispatch-broker binary over TCP loopback.
//
// Scripted clients (one thread) keep a window of tiny jobs in flight; scripted workers (another
// thread) answer each job at once. Reports jobs/s and the broker process's CPU time per job
// (utime + stime from /proc, so ZeroMQ's I/O thread is included).
//
//   broker_bench [--jobs 200000] [--clients 4] [--workers 4] [--window 2000] [--capacity 512]
//                [--chunks 0]

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "dispatch/protocol/codec.hpp"
#include "dispatch/protocol/zmq_io.hpp"
#include "dispatch/test/child_process.hpp"

namespace {

using namespace std::chrono_literals;
using dispatch::protocol::Command;
namespace protocol = dispatch::protocol;
using Clock = std::chrono::steady_clock;

struct Options {
  long jobs = 200'000;
  int clients = 4;
  int workers = 4;
  long window = 2'000;  // per client
  uint32_t capacity = 512;
  int chunks = 0;  // chunks per job (streamed when > 0)
};

double process_cpu_seconds(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string content((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  // Fields after the command name (which may hold spaces) start after the last ')'.
  const auto close = content.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream fields(content.substr(close + 2));
  std::string field;
  unsigned long long utime = 0;
  unsigned long long stime = 0;
  for (int index = 3; fields >> field; ++index) {
    if (index == 14) utime = std::stoull(field);
    if (index == 15) {
      stime = std::stoull(field);
      break;
    }
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

zmq::socket_t dealer(zmq::context_t& context, const std::string& endpoint) {
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  protocol::apply_protocol_socket_options(socket);
  socket.set(zmq::sockopt::linger, 0);
  socket.set(zmq::sockopt::sndhwm, 1'000'000);
  socket.set(zmq::sockopt::rcvhwm, 1'000'000);
  socket.connect(endpoint);
  return socket;
}

void run_workers(zmq::context_t& context, const std::string& endpoint, const Options& options,
                 std::atomic<bool>& stop) {
  std::vector<zmq::socket_t> sockets;
  for (int w = 0; w < options.workers; ++w) {
    sockets.push_back(dealer(context, endpoint));
    protocol::Ready ready{"bench-worker-" + std::to_string(w),
                          "localhost",
                          1,
                          options.capacity,
                          {"bench"},
                          "bench",
                          {}};
    protocol::send_message(sockets.back(), Command::ready, protocol::encode(ready), {},
                           protocol::SendMode::blocking);
  }
  protocol::Response response;
  response.content = "ok";
  response.provider = "bench";
  response.model = "m";
  response.usage = {1, 1, 2};
  response.attempts = {{"bench", "m", "ok", 200, {}, {}, 0, 0, {}}};
  const std::string payload = protocol::encode(response);
  std::vector<zmq::pollitem_t> items;
  for (auto& s : sockets) items.push_back({s.handle(), 0, ZMQ_POLLIN, 0});
  std::vector<protocol::IncomingMessage> incoming(sockets.size());
  auto last_heartbeat = Clock::now();
  while (!stop.load(std::memory_order_relaxed)) {
    zmq::poll(items.data(), items.size(), 20ms);
    for (std::size_t i = 0; i < sockets.size(); ++i) {
      if ((items[i].revents & ZMQ_POLLIN) == 0) continue;
      while (incoming[i].receive(sockets[i], false)) {
        auto parsed = incoming[i].parse();
        if (!parsed || parsed.value().command != Command::job) continue;
        auto header = protocol::decode<protocol::JobHeader>(parsed.value().header);
        if (!header) continue;
        for (int c = 0; c < options.chunks; ++c) {
          protocol::ChunkHeader chunk{
              protocol::Chunk{header.value().job_id, static_cast<uint64_t>(c), "tok", {}, {}},
              header.value().delivery};
          protocol::send_message(sockets[i], Command::chunk, protocol::encode(chunk), {},
                                 protocol::SendMode::blocking);
        }
        const std::string end =
            protocol::encode(protocol::JobEnd{header.value().job_id, header.value().delivery});
        protocol::send_message(sockets[i], Command::result, end, payload,
                               protocol::SendMode::blocking);
      }
    }
    if (Clock::now() - last_heartbeat > 500ms) {
      for (auto& s : sockets) {
        protocol::send_message(s, Command::heartbeat, protocol::encode(protocol::Heartbeat{}), {},
                               protocol::SendMode::blocking);
      }
      last_heartbeat = Clock::now();
    }
  }
}

struct ClientResult {
  long results = 0;
  long errors = 0;
  long rejected = 0;
  long chunks = 0;
};

ClientResult run_clients(zmq::context_t& context, const std::string& endpoint,
                         const Options& options) {
  std::vector<zmq::socket_t> sockets;
  for (int c = 0; c < options.clients; ++c) sockets.push_back(dealer(context, endpoint));
  protocol::Request request;
  request.provider = "bench";
  request.model = "m";
  request.stream = options.chunks > 0;
  request.messages.push_back(protocol::Message{"user", "hi", {}, {}, {}, {}, {}});
  const std::string payload = protocol::encode(request);
  const long per_client = options.jobs / options.clients;
  std::vector<long> sent(sockets.size(), 0);
  std::vector<long> done(sockets.size(), 0);
  std::vector<zmq::pollitem_t> items;
  for (auto& s : sockets) items.push_back({s.handle(), 0, ZMQ_POLLIN, 0});
  std::vector<protocol::IncomingMessage> incoming(sockets.size());
  ClientResult result;
  const auto deadline = Clock::now() + 600s;
  long total_done = 0;
  while (total_done < per_client * options.clients && Clock::now() < deadline) {
    for (std::size_t i = 0; i < sockets.size(); ++i) {
      while (sent[i] < per_client && sent[i] - done[i] < options.window) {
        protocol::Submit submit{"c" + std::to_string(i) + "-" + std::to_string(sent[i]),
                                "bench",
                                protocol::Priority::normal,
                                0,
                                options.chunks > 0,
                                {}};
        protocol::send_message(sockets[i], Command::submit, protocol::encode(submit), payload,
                               protocol::SendMode::blocking);
        ++sent[i];
      }
    }
    zmq::poll(items.data(), items.size(), 50ms);
    for (std::size_t i = 0; i < sockets.size(); ++i) {
      if ((items[i].revents & ZMQ_POLLIN) == 0) continue;
      while (incoming[i].receive(sockets[i], false)) {
        auto parsed = incoming[i].parse();
        if (!parsed) continue;
        switch (parsed.value().command) {
          case Command::result:
            ++result.results;
            ++done[i];
            ++total_done;
            break;
          case Command::error:
            ++result.errors;
            ++done[i];
            ++total_done;
            break;
          case Command::rejected:
            ++result.rejected;
            ++done[i];
            ++total_done;
            break;
          case Command::chunk:
            ++result.chunks;
            break;
          default:
            break;
        }
      }
    }
  }
  return result;
}

// Asks the broker for its status until all workers are registered (bounded).
bool wait_for_workers(zmq::context_t& context, const std::string& frontend, int expected) {
  zmq::socket_t socket = dealer(context, frontend);
  protocol::IncomingMessage incoming;
  const auto deadline = Clock::now() + 10s;
  while (Clock::now() < deadline) {
    protocol::send_message(socket, Command::status, protocol::kEmptyMap, {},
                           protocol::SendMode::blocking);
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, 50ms);
    while (incoming.receive(socket, false)) {
      auto parsed = incoming.parse();
      if (!parsed || parsed.value().command != Command::status) continue;
      auto status = protocol::decode<protocol::StatusReply>(parsed.value().header);
      if (status && static_cast<int>(status.value().workers.size()) == expected) return true;
    }
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const long value = std::strtol(argv[i + 1], nullptr, 10);
    if (flag == "--jobs")
      options.jobs = value;
    else if (flag == "--clients")
      options.clients = static_cast<int>(value);
    else if (flag == "--workers")
      options.workers = static_cast<int>(value);
    else if (flag == "--window")
      options.window = value;
    else if (flag == "--capacity")
      options.capacity = static_cast<uint32_t>(value);
    else if (flag == "--chunks")
      options.chunks = static_cast<int>(value);
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  options.jobs = (options.jobs / options.clients) * options.clients;

  auto broker = dispatch::test::ChildProcess::spawn(
      {DISPATCH_BROKER_BIN, "--frontend", "tcp://127.0.0.1:0", "--backend", "tcp://127.0.0.1:0",
       "--log-level", "warn", "--queue-limit", "1000000"});
  auto line = broker.read_line(10s);
  const auto frontend_at = line ? line->find("frontend=") : std::string::npos;
  const auto backend_at = line ? line->find(" backend=") : std::string::npos;
  if (frontend_at == std::string::npos || backend_at == std::string::npos) {
    std::fprintf(stderr, "broker did not start\n");
    return 1;
  }
  const std::string frontend = line->substr(frontend_at + 9, backend_at - frontend_at - 9);
  const std::string backend = line->substr(backend_at + 9);

  zmq::context_t context(1);
  std::atomic<bool> stop{false};
  std::thread workers([&] { run_workers(context, backend, options, stop); });
  if (!wait_for_workers(context, frontend, options.workers)) {
    std::fprintf(stderr, "workers did not register\n");
    stop = true;
    workers.join();
    return 1;
  }

  const double cpu_before = process_cpu_seconds(broker.pid());
  const auto started = Clock::now();
  ClientResult result = run_clients(context, frontend, options);
  const double seconds = std::chrono::duration<double>(Clock::now() - started).count();
  const double cpu = process_cpu_seconds(broker.pid()) - cpu_before;
  stop = true;
  workers.join();

  const long finished = result.results + result.errors + result.rejected;
  std::printf("jobs %ld (results %ld, errors %ld, rejected %ld, chunks %ld)\n", finished,
              result.results, result.errors, result.rejected, result.chunks);
  std::printf("clients %d window %ld, workers %d capacity %u, chunks/job %d\n", options.clients,
              options.window, options.workers, options.capacity, options.chunks);
  std::printf("wall %.2f s -> %.0f jobs/s\n", seconds, static_cast<double>(finished) / seconds);
  std::printf("broker cpu %.2f s -> %.1f us/job (%.0f%% of one core)\n", cpu,
              cpu * 1e6 / static_cast<double>(std::max(finished, 1L)), 100.0 * cpu / seconds);
  broker.stop();
  return finished == options.jobs ? 0 : 1;
}
