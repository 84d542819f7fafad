#include "dispatch/common/random.hpp"

#include <sys/random.h>

#include <cerrno>
#include <system_error>
#include <vector>

#include "dispatch/common/strings.hpp"

namespace dispatch {

void secure_random_bytes(std::span<unsigned char> out) {
  std::size_t filled = 0;
  while (filled < out.size()) {
    const ssize_t got = ::getrandom(out.data() + filled, out.size() - filled, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "getrandom");
    }
    filled += static_cast<std::size_t>(got);
  }
}

std::string random_hex_id(std::size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  secure_random_bytes(raw);
  return to_hex(std::string_view(reinterpret_cast<const char*>(raw.data()), raw.size()));
}

uint64_t secure_random_seed() {
  uint64_t seed = 0;
  secure_random_bytes(
      std::span<unsigned char>(reinterpret_cast<unsigned char*>(&seed), sizeof seed));
  return seed;
}

}  // namespace dispatch
