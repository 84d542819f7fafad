// A child process that misbehaves on request, for the tests of ChildProcess's end-of-life check
// (child_process_test.cpp): each mode is one way a real broker, worker or fake provider could go
// wrong in a test.
//
//   misbehaving_child MODE
//     serve            print "ready", exit 0 on SIGTERM (a well-behaved server)
//     serve-exit-3     print "ready", exit 3 on SIGTERM
//     ignore-term      print "ready", ignore SIGTERM (only SIGKILL ends it)
//     no-handler       print "ready", no SIGTERM handler (dies of the signal)
//     slow-start       print "started" at once, install the SIGTERM handler 300 ms later (a
//                      daemon still loading when the test stops it), then serve
//     exit-N           exit N at once
//     abort            abort() at once (a crash)
//     segv             raise SIGSEGV at once
//     fake-report      write an AddressSanitizer-shaped report to stderr, then serve
//     leak             lose a heap block, then exit 0 (LeakSanitizer reports it at exit)
//     ub               a signed overflow, then exit 0 (UBSan reports it)

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

volatile sig_atomic_t g_term = 0;

void on_term(int) {
  g_term = 1;
}

// Prints "ready" (the test waits for it, so the handler is installed before any SIGTERM), then
// waits for SIGTERM and exits with `code`.
int serve(int code) {
  struct sigaction action {};
  action.sa_handler = on_term;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  std::printf("ready\n");
  std::fflush(stdout);
  while (!g_term) pause();
  std::fprintf(stderr, "misbehaving_child: SIGTERM, exiting %d\n", code);
  return code;
}

void wait_forever() {
  std::printf("ready\n");
  std::fflush(stdout);
  for (;;) pause();
}

}  // namespace

// volatile: the store (and so the allocation) cannot be optimised away.
void* volatile g_sink = nullptr;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: misbehaving_child MODE\n");
    return 2;
  }
  const std::string mode = argv[1];
  std::fprintf(stderr, "misbehaving_child: mode %s\n", mode.c_str());
  if (mode == "serve") return serve(0);
  if (mode == "serve-exit-3") return serve(3);
  if (mode == "ignore-term") {
    signal(SIGTERM, SIG_IGN);
    wait_forever();
  }
  if (mode == "no-handler") wait_forever();
  if (mode == "slow-start") {
    std::printf("started\n");
    std::fflush(stdout);
    usleep(300'000);
    return serve(0);
  }
  if (mode.rfind("exit-", 0) == 0) return std::atoi(mode.c_str() + 5);
  if (mode == "abort") std::abort();
  if (mode == "segv") raise(SIGSEGV);
  if (mode == "fake-report") {
    std::fprintf(
        stderr,
        "=================================================================\n"
        "==4242==ERROR: AddressSanitizer: heap-use-after-free on address 0x602000000010\n"
        "READ of size 4 at 0x602000000010 thread T0\n"
        "    #0 0x4f5d3e in main misbehaving_child.cpp:1\n"
        "SUMMARY: AddressSanitizer: heap-use-after-free misbehaving_child.cpp:1 in main\n");
    return serve(0);
  }
  if (mode == "leak") {
    // Reachable through no pointer once overwritten: LeakSanitizer's "definitely lost".
    g_sink = std::malloc(4096);
    std::memset(g_sink, 1, 4096);
    g_sink = nullptr;
    return 0;
  }
  if (mode == "ub") {
    volatile int big = 2147483647;
    volatile int one = 1;
    const int sum = big + one;
    std::printf("%d\n", sum);
    return 0;
  }
  std::fprintf(stderr, "misbehaving_child: unknown mode %s\n", mode.c_str());
  return 2;
}
