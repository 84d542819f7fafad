#include "dispatch/broker/auth.hpp"

#include <gtest/gtest.h>
#include <zmq.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "dispatch/common/random.hpp"
#include "dispatch/protocol/curve.hpp"

namespace dispatch::broker {
namespace {

namespace fs = std::filesystem;
using protocol::CurveKeys;

class KeyDirs {
 public:
  KeyDirs() : root_(fs::temp_directory_path() / ("dispatch-auth-" + random_hex_id(8))) {
    for (const char* sub : {"clients", "workers", "gateways", "admins", "secrets"}) {
      fs::create_directories(root_ / sub);
    }
  }
  ~KeyDirs() {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  AllowListDirs dirs() const {
    return {(root_ / "clients").string(), (root_ / "workers").string(),
            (root_ / "gateways").string(), (root_ / "admins").string()};
  }
  // A new identity: secret in secrets/, public copies in each listed role directory.
  CurveKeys add(const std::string& name, std::initializer_list<const char*> role_dirs) {
    CurveKeys keys = *protocol::generate_curve_keys();
    EXPECT_TRUE(protocol::save_certificate((root_ / "secrets" / name).string(), keys));
    for (const char* dir : role_dirs) {
      fs::copy_file(root_ / "secrets" / (name + ".key"), root_ / dir / (name + ".key"));
    }
    return keys;
  }
  void remove(const std::string& name, const char* dir) {
    fs::remove(root_ / dir / (name + ".key"));
  }
  fs::path root() const { return root_; }

 private:
  fs::path root_;
};

std::string binary_of(const std::string& z85) {
  std::string binary(32, '\0');
  zmq_z85_decode(reinterpret_cast<uint8_t*>(binary.data()), z85.c_str());
  return binary;
}

std::vector<std::string> zap(Authenticator& auth, std::string_view domain,
                             std::string_view mechanism, const std::string& credential) {
  std::vector<std::string_view> request = {"1.0", "req-7", domain, "127.0.0.1", "", mechanism};
  if (!credential.empty()) request.push_back(credential);
  return auth.answer(request);
}

TEST(KeyTable, AKeyInSeveralDirectoriesHasEveryRole) {
  KeyDirs keys;
  const CurveKeys gw = keys.add("gw", {"gateways", "admins"});
  const CurveKeys alice = keys.add("alice", {"clients"});
  auto table = KeyTable::load(keys.dirs());
  ASSERT_TRUE(table) << table.error();
  const Identity* gateway = table->find(gw.public_key);
  ASSERT_NE(gateway, nullptr);
  EXPECT_EQ(gateway->name, "gw");
  EXPECT_TRUE(has_role(gateway->roles, Role::gateway));
  EXPECT_TRUE(has_role(gateway->roles, Role::admin));
  EXPECT_FALSE(has_role(gateway->roles, Role::client));
  EXPECT_EQ(roles_text(gateway->roles), "gateway,admin");
  EXPECT_EQ(table->find(alice.public_key)->roles, static_cast<Roles>(Role::client));
  EXPECT_EQ(table->find("not-a-key"), nullptr);
  EXPECT_EQ(table->count(Role::admin), 1u);
}

TEST(KeyTable, AbsentDirectoriesGiveNobodyThatRole) {
  KeyDirs keys;
  const CurveKeys w = keys.add("w1", {"workers"});
  AllowListDirs dirs;
  dirs.workers = keys.dirs().workers;
  auto table = KeyTable::load(dirs);
  ASSERT_TRUE(table);
  EXPECT_EQ(table->size(), 1u);
  EXPECT_EQ(table->count(Role::client), 0u);
}

TEST(Authenticator, EachSocketAdmitsOnlyItsRoles) {
  KeyDirs keys;
  const CurveKeys alice = keys.add("alice", {"clients"});
  const CurveKeys worker = keys.add("w1", {"workers"});
  const CurveKeys admin = keys.add("ops", {"admins"});
  ManualClock clock;
  Authenticator auth(keys.dirs(), clock);
  ASSERT_TRUE(auth.reload());

  auto ok = zap(auth, kFrontendZapDomain, "CURVE", binary_of(alice.public_key));
  ASSERT_EQ(ok.size(), 6u);
  EXPECT_EQ(ok[0], "1.0");
  EXPECT_EQ(ok[1], "req-7");
  EXPECT_EQ(ok[2], "200");
  EXPECT_EQ(ok[4], alice.public_key);  // the user id every message then carries
  EXPECT_EQ(zap(auth, kFrontendZapDomain, "CURVE", binary_of(admin.public_key))[2], "200");
  EXPECT_EQ(zap(auth, kBackendZapDomain, "CURVE", binary_of(worker.public_key))[2], "200");

  // A client key may not register as a worker, nor a worker key submit.
  EXPECT_EQ(zap(auth, kBackendZapDomain, "CURVE", binary_of(alice.public_key))[2], "400");
  EXPECT_EQ(zap(auth, kFrontendZapDomain, "CURVE", binary_of(worker.public_key))[2], "400");
  // Unknown keys, plaintext peers, unknown domains.
  const CurveKeys stranger = *protocol::generate_curve_keys();
  EXPECT_EQ(zap(auth, kFrontendZapDomain, "CURVE", binary_of(stranger.public_key))[2], "400");
  EXPECT_EQ(zap(auth, kFrontendZapDomain, "NULL", "")[2], "400");
  EXPECT_EQ(zap(auth, "elsewhere", "CURVE", binary_of(alice.public_key))[2], "400");
  EXPECT_EQ(auth.counters().accepted, 3u);
  EXPECT_EQ(auth.counters().refused, 5u);

  std::vector<std::string_view> truncated = {"1.0", "x"};
  EXPECT_EQ(auth.answer(truncated)[2], "500");
  std::vector<std::string_view> old_version = {"0.9", "x", "d", "a", "i", "CURVE", "k"};
  EXPECT_EQ(auth.answer(old_version)[2], "500");
}

TEST(Authenticator, ReloadDropsRemovedKeysAndKeepsTheOldTableOnError) {
  KeyDirs keys;
  const CurveKeys alice = keys.add("alice", {"clients"});
  const CurveKeys bob = keys.add("bob", {"clients"});
  ManualClock clock;
  Authenticator auth(keys.dirs(), clock);
  ASSERT_TRUE(auth.reload());
  ASSERT_NE(auth.identity(bob.public_key), nullptr);

  keys.remove("bob", "clients");
  ASSERT_TRUE(auth.reload());
  EXPECT_EQ(auth.identity(bob.public_key), nullptr);
  EXPECT_NE(auth.identity(alice.public_key), nullptr);

  // A broken file: the reload fails and the table in force stays.
  std::ofstream(keys.root() / "clients" / "broken.key") << "curve\n    public-key = \"x\"\n";
  auto reloaded = auth.reload();
  ASSERT_FALSE(reloaded);
  EXPECT_NE(reloaded.error().find("broken.key"), std::string::npos) << reloaded.error();
  EXPECT_NE(auth.identity(alice.public_key), nullptr);
}

// The ZAP handler as the broker runs it, on a thread here: libzmq asks it about every
// handshake on the CURVE server socket.
class ZapThread {
 public:
  ZapThread(zmq::context_t& context, Authenticator& auth)
      : socket_(context, zmq::socket_type::rep) {
    socket_.bind("inproc://zeromq.zap.01");
    thread_ = std::thread([this, &auth] {
      socket_.set(zmq::sockopt::rcvtimeo, 50);
      while (!stop_) {
        std::vector<zmq::message_t> frames;
        zmq::message_t frame;
        if (!socket_.recv(frame)) continue;
        frames.push_back(std::move(frame));
        while (frames.back().more()) {
          frames.emplace_back();
          (void)socket_.recv(frames.back());
        }
        std::vector<std::string_view> request;
        for (auto& f : frames) request.emplace_back(f.data<char>(), f.size());
        const std::vector<std::string> reply = auth.answer(request);
        for (std::size_t i = 0; i < reply.size(); ++i) {
          socket_.send(zmq::buffer(reply[i]),
                       i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
        }
      }
    });
  }
  ~ZapThread() {
    stop_ = true;
    thread_.join();
  }

 private:
  zmq::socket_t socket_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// Waits for a monitor event among `wanted`; returns it or 0 after the deadline.
int wait_event(zmq::socket_t& monitor, std::initializer_list<int> wanted,
               std::chrono::milliseconds deadline) {
  const auto until = std::chrono::steady_clock::now() + deadline;
  monitor.set(zmq::sockopt::rcvtimeo, 100);
  while (std::chrono::steady_clock::now() < until) {
    zmq::message_t event;
    if (!monitor.recv(event)) continue;
    zmq::message_t address;
    (void)monitor.recv(address);
    uint16_t id = 0;
    std::memcpy(&id, event.data(), sizeof id);
    for (int w : wanted) {
      if (id == w) return id;
    }
  }
  return 0;
}

TEST(CurveHandshake, ListedKeyIsServedWithItsUserIdAndAStrangerIsToldAuthFailed) {
  KeyDirs keys;
  const CurveKeys alice = keys.add("alice", {"clients"});
  const CurveKeys server = *protocol::generate_curve_keys();
  ManualClock clock;
  Authenticator auth(keys.dirs(), clock);
  ASSERT_TRUE(auth.reload());

  zmq::context_t context;
  ZapThread zap_handler(context, auth);
  zmq::socket_t router(context, zmq::socket_type::router);
  protocol::make_curve_server(router, server, std::string(kFrontendZapDomain));
  router.bind("tcp://127.0.0.1:*");
  const std::string endpoint = router.get(zmq::sockopt::last_endpoint);

  zmq::socket_t good(context, zmq::socket_type::dealer);
  protocol::make_curve_client(good, alice, server.public_key);
  good.connect(endpoint);
  good.send(zmq::str_buffer("hello"), zmq::send_flags::none);
  router.set(zmq::sockopt::rcvtimeo, 5000);
  zmq::message_t routing;
  ASSERT_TRUE(router.recv(routing));
  zmq::message_t body;
  ASSERT_TRUE(router.recv(body));
  EXPECT_EQ(body.to_string(), "hello");
  EXPECT_EQ(std::string(body.gets("User-Id")), alice.public_key);

  const CurveKeys stranger = *protocol::generate_curve_keys();
  zmq::socket_t bad(context, zmq::socket_type::dealer);
  zmq::socket_t monitor(context, zmq::socket_type::pair);
  ASSERT_EQ(zmq_socket_monitor(bad.handle(), "inproc://bad-monitor",
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_SUCCEEDED),
            0);
  monitor.connect("inproc://bad-monitor");
  protocol::make_curve_client(bad, stranger, server.public_key);
  bad.connect(endpoint);
  EXPECT_EQ(wait_event(monitor, {ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, ZMQ_EVENT_HANDSHAKE_SUCCEEDED},
                       std::chrono::seconds(5)),
            ZMQ_EVENT_HANDSHAKE_FAILED_AUTH);
  bad.set(zmq::sockopt::linger, 0);
  good.set(zmq::sockopt::linger, 0);
  router.set(zmq::sockopt::linger, 0);
}

}  // namespace
}  // namespace dispatch::broker
