# jemalloc for the two long-running daemons, broker and worker.
#
# Why: under client connection churn glibc's malloc keeps the holes that libzmq's per-connection
# buffers leave between longer-lived allocations, so the broker's RSS crept up for as long as
# clients came and went (the 30-minute soak of issue 11: +13 % with glibc, +6 % even with a
# malloc_trim every 10 s) while its live heap stayed flat. jemalloc's size-class slabs and its
# time-based purging of dirty pages keep RSS with the live heap (BENCHMARKS.md, "Soak").
#
# Off under the sanitizers and in the fuzzing build: ASan brings its own allocator.
option(DISPATCH_JEMALLOC "Link dispatch-broker and dispatch-worker with jemalloc" ON)

set(DISPATCH_JEMALLOC_IN_USE OFF)
if(DISPATCH_JEMALLOC AND NOT DISPATCH_SANITIZE AND NOT DISPATCH_FUZZ)
  find_library(DISPATCH_JEMALLOC_LIBRARY NAMES jemalloc)
  if(NOT DISPATCH_JEMALLOC_LIBRARY)
    message(FATAL_ERROR "jemalloc not found: apt-get install libjemalloc-dev (scripts/setup), "
                        "or configure with -DDISPATCH_JEMALLOC=OFF to keep the C library's malloc")
  endif()
  set(DISPATCH_JEMALLOC_IN_USE ON)
endif()

# Links `target` (an executable) with jemalloc when it is in use; nothing otherwise.
function(dispatch_use_jemalloc target)
  if(DISPATCH_JEMALLOC_IN_USE)
    target_link_libraries(${target} PRIVATE ${DISPATCH_JEMALLOC_LIBRARY})
  endif()
endfunction()
