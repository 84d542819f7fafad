#include "dispatch/protocol/curve.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <vector>

#include "dispatch/common/fd.hpp"
#include "dispatch/common/strings.hpp"

namespace dispatch::protocol {
namespace {

std::string errno_text() {
  return std::strerror(errno);
}

bool is_z85_key(std::string_view text) {
  if (text.size() != kCurveKeyTextSize) return false;
  std::array<uint8_t, 32> binary{};
  const std::string copy(text);  // zmq_z85_decode wants a NUL-terminated string
  return zmq_z85_decode(binary.data(), copy.c_str()) != nullptr;
}

std::string timestamp_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  std::array<char, 32> buf{};
  std::strftime(buf.data(), buf.size(), "%Y-%m-%d %H:%M:%S", &tm);
  return buf.data();
}

std::string certificate_text(const CurveKeys& keys, bool with_secret) {
  std::ostringstream out;
  out << "#   ****  Generated on " << timestamp_now() << " UTC by dispatch keygen  ****\n";
  if (with_secret) {
    out << "#   ZeroMQ CURVE **Secret** Certificate\n"
        << "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n\n";
  } else {
    out << "#   ZeroMQ CURVE Public Certificate\n"
        << "#   Exchange securely, or use a secure mechanism to verify the contents\n"
        << "#   of this file after exchange.\n\n";
  }
  out << "metadata\ncurve\n    public-key = \"" << keys.public_key << "\"\n";
  if (with_secret) out << "    secret-key = \"" << keys.secret_key << "\"\n";
  return out.str();
}

Result<void, std::string> write_new_file(const std::string& path, const std::string& text,
                                         mode_t mode) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (!fd) {
    if (errno == EEXIST) return path + ": already exists (remove it first to replace the key)";
    return path + ": cannot create: " + errno_text();
  }
  // The umask may have widened nothing, but make the mode exact whatever it was.
  if (::fchmod(fd.get(), mode) != 0) return path + ": cannot set its mode: " + errno_text();
  std::size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = ::write(fd.get(), text.data() + written, text.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      return path + ": cannot write: " + errno_text();
    }
    written += static_cast<std::size_t>(n);
  }
  return {};
}

// One ZPL line: its nesting level (4 spaces each), name and value (unquoted; empty for a
// section line).
struct ZplLine {
  std::size_t level = 0;
  std::string name;
  std::string value;
  bool has_value = false;
};

std::optional<ZplLine> parse_zpl_line(std::string_view line) {
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
  std::size_t indent = 0;
  while (indent < line.size() && line[indent] == ' ') ++indent;
  std::string_view rest = line.substr(indent);
  if (rest.empty() || rest.front() == '#') return std::nullopt;
  ZplLine out;
  out.level = indent / 4;
  const std::size_t eq = rest.find('=');
  out.name = std::string(trim(rest.substr(0, eq)));
  if (eq == std::string_view::npos) return out;
  std::string_view value = trim(rest.substr(eq + 1));
  if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'')) {
    const std::size_t close = value.find(value.front(), 1);
    value = value.substr(1, close == std::string_view::npos ? value.size() - 1 : close - 1);
  } else if (const std::size_t hash = value.find('#'); hash != std::string_view::npos) {
    value = trim(value.substr(0, hash));
  }
  out.value = std::string(value);
  out.has_value = true;
  return out;
}

Result<CurveKeys, std::string> parse_certificate(const std::string& text, const std::string& path) {
  CurveKeys keys;
  std::vector<std::string> sections;
  std::istringstream in(text);
  std::string raw;
  while (std::getline(in, raw)) {
    const std::optional<ZplLine> line = parse_zpl_line(raw);
    if (!line) continue;
    sections.resize(std::min(sections.size(), line->level));
    if (!line->has_value) {
      sections.push_back(line->name);
      continue;
    }
    if (sections.size() != 1 || sections[0] != "curve") continue;
    if (line->name == "public-key") keys.public_key = line->value;
    if (line->name == "secret-key") keys.secret_key = line->value;
  }
  if (keys.public_key.empty())
    return fail(path + ": no curve/public-key (not a ZeroMQ certificate?)");
  if (!is_z85_key(keys.public_key))
    return fail(path + ": curve/public-key is not a 40-character Z85 key");
  if (!keys.secret_key.empty() && !is_z85_key(keys.secret_key)) {
    return fail(path + ": curve/secret-key is not a 40-character Z85 key");
  }
  return keys;
}

// The secret must be the public key's own: a file edited by hand could pair them wrongly, and
// the handshake would then fail with no clear reason.
Result<void, std::string> check_pair(const CurveKeys& keys, const std::string& path) {
  std::array<char, kCurveKeyTextSize + 1> derived{};
  if (zmq_curve_public(derived.data(), keys.secret_key.c_str()) != 0) {
    return path +
           ": cannot derive the public key from the secret key: " + zmq_strerror(zmq_errno());
  }
  if (keys.public_key != derived.data()) {
    return path + ": public-key does not belong to secret-key";
  }
  return {};
}

Result<void, std::string> check_private_mode(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return path + ": " + errno_text();
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    std::ostringstream mode;
    mode << std::oct << (st.st_mode & 0777);
    return path + ": secret key file is accessible by group or others (mode 0" + mode.str() +
           "); run: chmod 600 " + path;
  }
  return {};
}

}  // namespace

Result<CurveKeys, std::string> generate_curve_keys() {
  std::array<char, kCurveKeyTextSize + 1> public_key{};
  std::array<char, kCurveKeyTextSize + 1> secret_key{};
  if (zmq_curve_keypair(public_key.data(), secret_key.data()) != 0) {
    return fail(std::string("cannot generate a CURVE key pair: ") + zmq_strerror(zmq_errno()));
  }
  return CurveKeys{public_key.data(), secret_key.data()};
}

Result<void, std::string> save_certificate(const std::string& path_base, const CurveKeys& keys) {
  const std::string public_path = path_base + std::string(kPublicCertificateSuffix);
  const std::string secret_path = path_base + std::string(kSecretCertificateSuffix);
  // Checked up front so that a refusal leaves neither file behind.
  for (const std::string& path : {public_path, secret_path}) {
    if (::access(path.c_str(), F_OK) == 0) {
      return path + ": already exists (remove it first to replace the key)";
    }
  }
  if (auto written = write_new_file(secret_path, certificate_text(keys, true), 0600); !written) {
    return written;
  }
  return write_new_file(public_path, certificate_text(keys, false), 0644);
}

Result<CurveKeys, std::string> load_certificate(const std::string& path, bool need_secret) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail(path + ": cannot read: " + errno_text());
  std::ostringstream text;
  text << in.rdbuf();
  auto keys = parse_certificate(text.str(), path);
  if (!keys || !need_secret) return keys;
  if (keys->secret_key.empty()) {
    return fail(path + ": holds no secret key (give the .key_secret file, not the .key file)");
  }
  if (auto mode = check_private_mode(path); !mode) return fail(std::move(mode).error());
  if (auto pair = check_pair(*keys, path); !pair) return fail(std::move(pair).error());
  return keys;
}

Result<std::map<std::string, std::string>, std::string> load_public_keys(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) return fail(dir + ": cannot list the directory: " + ec.message());
  std::map<std::string, std::string> keys;
  for (const fs::directory_entry& entry : it) {
    const fs::path& file = entry.path();
    if (file.extension() != kPublicCertificateSuffix || !entry.is_regular_file(ec)) continue;
    auto cert = load_certificate(file.string(), false);
    if (!cert) return fail(std::move(cert).error());
    const std::string name = file.stem().string();
    auto [existing, inserted] = keys.emplace(cert->public_key, name);
    if (!inserted) {
      return fail(dir + ": " + name + ".key and " + existing->second + ".key hold the same key");
    }
  }
  return keys;
}

std::string z85_of_binary_key(std::string_view binary) {
  if (binary.size() != 32) return {};
  std::array<char, kCurveKeyTextSize + 1> text{};
  if (zmq_z85_encode(text.data(), reinterpret_cast<const uint8_t*>(binary.data()), 32) == nullptr) {
    return {};
  }
  return text.data();
}

std::string key_fingerprint(std::string_view public_key) {
  return std::string(public_key.substr(0, 8));
}

bool is_loopback_endpoint(std::string_view endpoint) {
  if (endpoint.starts_with("ipc://") || endpoint.starts_with("inproc://")) return true;
  if (!endpoint.starts_with("tcp://")) return false;
  std::string_view host = endpoint.substr(6);
  const std::size_t colon = host.rfind(':');
  if (colon == std::string_view::npos) return false;
  host = host.substr(0, colon);
  if (host == "localhost" || host == "lo" || host == "[::1]") return true;
  in_addr v4{};
  const std::string host_text(host);
  if (inet_pton(AF_INET, host_text.c_str(), &v4) == 1) {
    return (ntohl(v4.s_addr) >> 24) == 127;
  }
  return false;
}

void make_curve_server(zmq::socket_ref socket, const CurveKeys& server,
                       const std::string& zap_domain) {
  socket.set(zmq::sockopt::curve_server, true);
  socket.set(zmq::sockopt::curve_secretkey, server.secret_key);
  socket.set(zmq::sockopt::zap_domain, zap_domain);
}

void make_curve_client(zmq::socket_ref socket, const CurveKeys& own,
                       const std::string& server_public_key) {
  socket.set(zmq::sockopt::curve_serverkey, server_public_key);
  socket.set(zmq::sockopt::curve_publickey, own.public_key);
  socket.set(zmq::sockopt::curve_secretkey, own.secret_key);
}

}  // namespace dispatch::protocol
