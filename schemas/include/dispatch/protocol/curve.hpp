#pragma once

// CURVE keys for the broker's sockets (ZeroMQ's own encryption and authentication, RFC 26/
// CurveZMQ): generating key pairs, the certificate files that carry them, allow-list
// directories, and the socket options on each side.
//
// Certificate files use ZeroMQ's ZPL format, as czmq's zcert and pyzmq's
// zmq.auth.create_certificates write and read them, so users can make and inspect keys with the
// tools they already have:
//
//   NAME.key         the public key only (share it)
//   NAME.key_secret  public and secret key (mode 0600; refused when group- or world-readable)
//
//   metadata
//   curve
//       public-key = "<40 Z85 characters>"
//       secret-key = "<40 Z85 characters>"      (only in NAME.key_secret)

#include <map>
#include <string>
#include <string_view>
#include <zmq.hpp>

#include "dispatch/common/result.hpp"

namespace dispatch::protocol {

// Z85 text of a CURVE key: 40 characters for the 32 bytes.
inline constexpr std::size_t kCurveKeyTextSize = 40;
inline constexpr std::string_view kPublicCertificateSuffix = ".key";
inline constexpr std::string_view kSecretCertificateSuffix = ".key_secret";

struct CurveKeys {
  std::string public_key;  // Z85
  std::string secret_key;  // Z85; empty when only the public key is known
};

// A fresh key pair from libzmq (zmq_curve_keypair, libsodium's CSPRNG).
Result<CurveKeys, std::string> generate_curve_keys();

// Writes PATH_BASE.key (mode 0644) and PATH_BASE.key_secret (mode 0600). Refuses to overwrite
// an existing file (a lost secret key cannot be recovered, a replaced one locks peers out).
Result<void, std::string> save_certificate(const std::string& path_base, const CurveKeys& keys);

// Reads a certificate file. With `need_secret` the file must hold a secret key and must not be
// readable by group or others. The error names the file and says how to fix it.
Result<CurveKeys, std::string> load_certificate(const std::string& path, bool need_secret);

// Every `*.key` file in `dir`: public key (Z85) -> display name (the file name without .key).
// A file that does not parse is an error naming it; two files with the same key are an error.
Result<std::map<std::string, std::string>, std::string> load_public_keys(const std::string& dir);

// The public key of a 32-byte binary key as ZAP hands it over, as Z85 text; empty if the size
// is wrong.
std::string z85_of_binary_key(std::string_view binary);

// Short, non-secret fingerprint of a public key for log lines: its first 8 Z85 characters.
std::string key_fingerprint(std::string_view public_key);

// True for endpoints no other host can reach: tcp:// on 127.0.0.0/8, [::1] or localhost, and
// ipc:// and inproc://. Anything else (a wildcard, a routable address, a name) is not.
bool is_loopback_endpoint(std::string_view endpoint);

// Socket options, set before bind / connect.
// Server: CURVE with the server's secret key; every handshake is checked by the ZAP handler
// for `zap_domain` (the handler sees the domain, so one handler can serve several sockets).
void make_curve_server(zmq::socket_ref socket, const CurveKeys& server,
                       const std::string& zap_domain);
// Client: CURVE with its own key pair, trusting only `server_public_key`.
void make_curve_client(zmq::socket_ref socket, const CurveKeys& own,
                       const std::string& server_public_key);

}  // namespace dispatch::protocol
