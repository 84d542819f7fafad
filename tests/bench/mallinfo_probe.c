// Heap probe for the soak (BENCHMARKS.md, "Soak"): preloaded into a run, it makes
// dispatch-broker (and no other program) append glibc's mallinfo2() and its VmRSS to
// $MALLINFO_OUT every 5 s, so RSS growth can be told apart: live heap (uordblks) growing is a
// leak or a table filling; free space inside the arenas (fordblks) growing is fragmentation.
// With $MALLINFO_TRIM set it calls malloc_trim(0) before each sample. Not built by CMake:
//
//   gcc -O1 -shared -fPIC -o /tmp/mallinfo_probe.so tests/bench/mallinfo_probe.c -lpthread
//   LD_PRELOAD=/tmp/mallinfo_probe.so MALLINFO_OUT=/tmp/broker-heap.csv scripts/soak --minutes 8
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char* out_path;

static long rss_kb(void) {
  FILE* status = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  if (!status) return -1;
  while (fgets(line, sizeof line, status)) {
    if (!strncmp(line, "VmRSS:", 6)) {
      kb = atol(line + 6);
      break;
    }
  }
  fclose(status);
  return kb;
}

static void* sample_loop(void* unused) {
  (void)unused;
  struct timespec start;
  clock_gettime(CLOCK_MONOTONIC, &start);
  for (int i = 0; i < 100000; ++i) {  // bounded: ~5.8 days at 5 s
    if (getenv("MALLINFO_TRIM")) malloc_trim(0);
    struct mallinfo2 heap = mallinfo2();
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    FILE* out = fopen(out_path, "a");
    if (out) {
      fprintf(out, "%.1f,%ld,%zu,%zu,%zu,%zu,%zu\n",
              (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9,
              rss_kb(), heap.arena, heap.hblkhd, heap.uordblks, heap.fordblks, heap.keepcost);
      fclose(out);
    }
    sleep(5);
  }
  return NULL;
}

__attribute__((constructor)) static void start_probe(void) {
  if (strcmp(program_invocation_short_name, "dispatch-broker") != 0) return;
  out_path = getenv("MALLINFO_OUT");
  if (!out_path) return;
  FILE* out = fopen(out_path, "w");
  if (out) {
    fputs("t_s,rss_kb,arena,hblkhd,uordblks,fordblks,keepcost\n", out);
    fclose(out);
  }
  pthread_t thread;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_create(&thread, &attr, sample_loop, NULL);
}
