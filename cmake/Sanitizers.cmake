if(DISPATCH_SANITIZE)
  # Whole-tree so that every library and test links the same runtime.
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

if(DISPATCH_FUZZ)
  # The libFuzzer build, in a build directory of its own (scripts/fuzz: build-fuzz, clang): every
  # library gets coverage instrumentation and ASan + UBSan, so that the harnesses in tests/fuzz
  # see the code they drive; only the harnesses link libFuzzer's main (-fsanitize=fuzzer).
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "DISPATCH_FUZZ needs clang: CXX=clang++ cmake -DDISPATCH_FUZZ=ON ... "
                        "(or scripts/fuzz, which does it)")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
