#include "dispatch/protocol/curve.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "dispatch/common/random.hpp"

namespace dispatch::protocol {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / ("dispatch-curve-" + random_hex_id(8))) {
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write_text(const std::string& path, const std::string& text, mode_t mode = 0644) {
  std::ofstream(path) << text;
  ::chmod(path.c_str(), mode);
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0);
  return st.st_mode & 0777;
}

TEST(CurveKeys, GeneratedPairRoundTripsThroughCertificateFiles) {
  TempDir dir;
  auto keys = generate_curve_keys();
  ASSERT_TRUE(keys) << keys.error();
  EXPECT_EQ(keys->public_key.size(), kCurveKeyTextSize);
  EXPECT_EQ(keys->secret_key.size(), kCurveKeyTextSize);

  ASSERT_TRUE(save_certificate(dir.file("alice"), *keys));
  EXPECT_EQ(mode_of(dir.file("alice.key_secret")), 0600u);
  EXPECT_EQ(mode_of(dir.file("alice.key")), 0644u);

  auto secret = load_certificate(dir.file("alice.key_secret"), true);
  ASSERT_TRUE(secret) << secret.error();
  EXPECT_EQ(secret->public_key, keys->public_key);
  EXPECT_EQ(secret->secret_key, keys->secret_key);

  auto pub = load_certificate(dir.file("alice.key"), false);
  ASSERT_TRUE(pub) << pub.error();
  EXPECT_EQ(pub->public_key, keys->public_key);
  EXPECT_TRUE(pub->secret_key.empty());

  std::ifstream in(dir.file("alice.key"));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text.find(keys->secret_key), std::string::npos) << "the public file leaks the secret";
}

TEST(CurveKeys, RefusesToOverwriteAnExistingKey) {
  TempDir dir;
  auto keys = generate_curve_keys();
  ASSERT_TRUE(keys);
  ASSERT_TRUE(save_certificate(dir.file("alice"), *keys));
  auto again = save_certificate(dir.file("alice"), *generate_curve_keys());
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().find("already exists"), std::string::npos) << again.error();
  EXPECT_EQ(load_certificate(dir.file("alice.key_secret"), true)->secret_key, keys->secret_key);
}

TEST(CurveKeys, ASecretReadableByOthersIsRefusedWithTheFix) {
  TempDir dir;
  ASSERT_TRUE(save_certificate(dir.file("w1"), *generate_curve_keys()));
  ::chmod(dir.file("w1.key_secret").c_str(), 0640);
  auto loaded = load_certificate(dir.file("w1.key_secret"), true);
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.error().find("chmod 600"), std::string::npos) << loaded.error();
  EXPECT_NE(loaded.error().find("0640"), std::string::npos) << loaded.error();
}

TEST(CurveKeys, APublicFileIsNotASecret) {
  TempDir dir;
  ASSERT_TRUE(save_certificate(dir.file("w1"), *generate_curve_keys()));
  auto loaded = load_certificate(dir.file("w1.key"), true);
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.error().find(".key_secret"), std::string::npos) << loaded.error();
}

TEST(CurveKeys, ReadsCertificatesWrittenByPyzmqAndCzmq) {
  TempDir dir;
  auto keys = generate_curve_keys();
  ASSERT_TRUE(keys);
  // As pyzmq's zmq.auth.create_certificates writes it (with CRLF line ends, as a file edited
  // on Windows would have), plus a metadata entry.
  const std::string text =
      "#   ****  Generated on 2026-01-01 10:00:00.000000 by pyzmq  ****\r\n"
      "#   ZeroMQ CURVE **Secret** Certificate\r\n"
      "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\r\n\r\n"
      "metadata\r\n    name = \"worker one\"\r\ncurve\r\n"
      "    public-key = \"" +
      keys->public_key +
      "\"\r\n"
      "    secret-key = \"" +
      keys->secret_key + "\"\r\n";
  write_text(dir.file("py.key_secret"), text, 0600);
  auto loaded = load_certificate(dir.file("py.key_secret"), true);
  ASSERT_TRUE(loaded) << loaded.error();
  EXPECT_EQ(loaded->public_key, keys->public_key);
  EXPECT_EQ(loaded->secret_key, keys->secret_key);
}

TEST(CurveKeys, MismatchedOrMalformedKeysAreNamed) {
  TempDir dir;
  auto a = generate_curve_keys();
  auto b = generate_curve_keys();
  write_text(dir.file("mixed.key_secret"),
             "curve\n    public-key = \"" + a->public_key + "\"\n    secret-key = \"" +
                 b->secret_key + "\"\n",
             0600);
  auto mixed = load_certificate(dir.file("mixed.key_secret"), true);
  ASSERT_FALSE(mixed);
  EXPECT_NE(mixed.error().find("does not belong"), std::string::npos) << mixed.error();

  write_text(dir.file("short.key"), "curve\n    public-key = \"abc\"\n");
  auto bad = load_certificate(dir.file("short.key"), false);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().find("short.key"), std::string::npos) << bad.error();

  write_text(dir.file("empty.key"), "# nothing\n");
  EXPECT_FALSE(load_certificate(dir.file("empty.key"), false));
  EXPECT_FALSE(load_certificate(dir.file("missing.key"), false));
}

TEST(CurveKeys, AllowListDirectoryMapsKeysToFileNames) {
  TempDir dir;
  auto alice = generate_curve_keys();
  auto bob = generate_curve_keys();
  ASSERT_TRUE(save_certificate(dir.file("alice"), *alice));
  ASSERT_TRUE(save_certificate(dir.file("bob"), *bob));
  write_text(dir.file("README.txt"), "not a key");
  auto keys = load_public_keys(dir.path().string());
  ASSERT_TRUE(keys) << keys.error();
  ASSERT_EQ(keys->size(), 2u);  // the .key_secret files and other files are not listed keys
  EXPECT_EQ(keys->at(alice->public_key), "alice");
  EXPECT_EQ(keys->at(bob->public_key), "bob");

  std::filesystem::copy_file(dir.file("alice.key"), dir.file("alice-copy.key"));
  auto dup = load_public_keys(dir.path().string());
  ASSERT_FALSE(dup);
  EXPECT_NE(dup.error().find("same key"), std::string::npos) << dup.error();

  EXPECT_FALSE(load_public_keys(dir.file("no-such-dir")));
}

TEST(CurveKeys, LoopbackEndpoints) {
  for (const char* endpoint :
       {"tcp://127.0.0.1:5555", "tcp://127.1.2.3:0", "tcp://localhost:5555", "tcp://[::1]:5555",
        "tcp://lo:5555", "ipc:///tmp/x.sock", "inproc://broker"}) {
    EXPECT_TRUE(is_loopback_endpoint(endpoint)) << endpoint;
  }
  for (const char* endpoint : {"tcp://*:5555", "tcp://0.0.0.0:5555", "tcp://10.0.0.5:5555",
                               "tcp://eth0:5555", "tcp://[::]:5555", "tcp://128.0.0.1:1",
                               "tcp://example.com:5555", "udp://127.0.0.1:1", "tcp://127.0.0.1"}) {
    EXPECT_FALSE(is_loopback_endpoint(endpoint)) << endpoint;
  }
}

TEST(CurveKeys, BinaryKeysFromZapBecomeZ85) {
  auto keys = generate_curve_keys();
  std::string binary(32, '\0');
  ASSERT_NE(zmq_z85_decode(reinterpret_cast<uint8_t*>(binary.data()), keys->public_key.c_str()),
            nullptr);
  EXPECT_EQ(z85_of_binary_key(binary), keys->public_key);
  EXPECT_EQ(z85_of_binary_key("short"), "");
  EXPECT_EQ(key_fingerprint(keys->public_key), keys->public_key.substr(0, 8));
}

}  // namespace
}  // namespace dispatch::protocol
