# Applied per target with dispatch_target_warnings(); third-party headers come in as SYSTEM.
function(dispatch_target_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
                                           -Wold-style-cast -Wcast-align -Woverloaded-virtual
                                           -Wimplicit-fallthrough)
  if(DISPATCH_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
