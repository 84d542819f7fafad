// dispatch-zmq-rtt: the round-trip time of one small ZeroMQ message between two processes
// (DEALER -> ROUTER echo over TCP loopback), paced like an open-loop load. The dispatcher's
// path has two such round trips (client <-> broker, broker <-> worker), so this is the floor
// under its added latency on the machine at hand. Prints one JSON object.
//
//   dispatch-zmq-rtt [--messages 3000] [--interval-us 1000] [--bytes 300]

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "stats.hpp"

namespace {

// Binds an ephemeral port, tells the parent which through `report_fd`, echoes `count`
// messages back to their sender, then exits.
int run_echo(int report_fd, int count) {
  zmq::context_t context(1);
  zmq::socket_t router(context, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.set(zmq::sockopt::rcvtimeo, 10000);  // bounded: the parent may die
  router.bind("tcp://127.0.0.1:*");
  const std::string endpoint = router.get(zmq::sockopt::last_endpoint) + "\n";
  if (write(report_fd, endpoint.data(), endpoint.size()) != static_cast<ssize_t>(endpoint.size())) {
    return 1;
  }
  close(report_fd);
  for (int i = 0; i < count; ++i) {
    zmq::message_t identity;
    zmq::message_t body;
    if (!router.recv(identity) || !router.recv(body)) return 1;
    router.send(identity, zmq::send_flags::sndmore);
    router.send(body, zmq::send_flags::none);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"dispatch-zmq-rtt: ZeroMQ round trip between two processes on this machine"};
  int messages = 3000;
  int interval_us = 1000;
  std::size_t bytes = 300;
  int warmup = 200;
  app.add_option("--messages", messages, "round trips measured")->check(CLI::Range(1, 10'000'000));
  app.add_option("--interval-us", interval_us, "pause between round trips")
      ->check(CLI::Range(0, 10'000'000));
  app.add_option("--bytes", bytes, "message size")->check(CLI::Range(1, 1 << 20));
  CLI11_PARSE(app, argc, argv);

  const int total = messages + warmup;
  int report[2];
  if (pipe(report) != 0) {
    std::perror("pipe");
    return 1;
  }
  // Forked before any ZeroMQ context exists in this process.
  const pid_t child = fork();
  if (child < 0) {
    std::perror("fork");
    return 1;
  }
  if (child == 0) {
    close(report[0]);
    _exit(run_echo(report[1], total));
  }
  close(report[1]);
  std::string endpoint;
  {
    pollfd readable{report[0], POLLIN, 0};
    char text[256];
    // Bounded: the child reports at once or has failed.
    if (poll(&readable, 1, 5000) == 1) {
      const ssize_t n = read(report[0], text, sizeof text - 1);
      if (n > 0) endpoint.assign(text, static_cast<std::size_t>(n));
    }
    close(report[0]);
    while (!endpoint.empty() && endpoint.back() == '\n') endpoint.pop_back();
  }
  int status = 0;
  if (endpoint.empty()) {
    std::cerr << "dispatch-zmq-rtt: the echo process did not start\n";
    kill(child, SIGTERM);
    waitpid(child, &status, 0);
    return 1;
  }

  std::vector<double> rtt_us;
  {
    zmq::context_t context(1);
    zmq::socket_t dealer(context, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::linger, 0);
    dealer.set(zmq::sockopt::rcvtimeo, 5000);
    dealer.connect(endpoint);
    const std::string payload(bytes, 'x');
    for (int i = 0; i < total; ++i) {
      const auto start = std::chrono::steady_clock::now();
      dealer.send(zmq::buffer(payload), zmq::send_flags::none);
      zmq::message_t reply;
      if (!dealer.recv(reply)) {
        std::cerr << "dispatch-zmq-rtt: no echo within 5 s\n";
        kill(child, SIGTERM);
        waitpid(child, &status, 0);
        return 1;
      }
      if (i >= warmup) {
        rtt_us.push_back(
            std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start)
                .count());
      }
      if (interval_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(interval_us));
    }
  }
  waitpid(child, &status, 0);
  const auto d = dispatch::bench::summarize(std::move(rtt_us));
  nlohmann::json out = {{"round_trip_us", dispatch::bench::to_json(d)},
                        {"messages", messages},
                        {"interval_us", interval_us},
                        {"bytes", bytes}};
  std::cout << out.dump() << std::endl;
  return 0;
}
