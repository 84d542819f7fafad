if(DISPATCH_SANITIZE)
  # Whole-tree so that every library and test links the same runtime.
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()
