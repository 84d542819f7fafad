// BrokerCore with identities (a CURVE broker, as BrokerServer drives it): jobs belong to the
// identity that submitted them, tenants are a gateway's, workers' ids are bound to their
// identity, status is scoped. Peers are made by hand here; tests/security and
// tests/integration/secure_broker_test.cpp prove the same through real handshakes.

#include "dispatch/broker/identity.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core_fixture.hpp"
#include "dispatch/protocol/codec.hpp"

namespace dispatch::broker {
namespace {

constexpr Roles kClient = static_cast<Roles>(Role::client);
constexpr Roles kWorker = static_cast<Roles>(Role::worker);
constexpr Roles kGateway = static_cast<Roles>(Role::gateway);
constexpr Roles kAdmin = static_cast<Roles>(Role::admin);

// A fake Z85 key: 40 characters, distinct per name.
std::string key_of(const std::string& name) {
  std::string key = name + std::string(40, 'K');
  return key.substr(0, 40);
}

struct Who {
  std::string route;
  std::string key;
  std::string name;
  Roles roles = 0;
  Peer peer() const { return Peer{route, key, name, roles}; }
};

class IdentityTest : public CoreTest {
 protected:
  static Who who(const std::string& name, Roles roles, const std::string& route = {}) {
    return Who{route.empty() ? "route-" + name : route, key_of(name), name, roles};
  }

  void submit_as(const Who& w, const std::string& job_id, const std::string& tenant = {},
                 const std::string& provider = "openai") {
    protocol::Submit s{job_id, provider, Priority::interactive, 0, false, tenant};
    core_->on_frontend(
        w.peer(), make_frames(Command::submit, protocol::encode(s), request_payload(provider)));
  }

  void cancel_as(const Who& w, const std::string& job_id) {
    core_->on_frontend(w.peer(),
                       make_frames(Command::cancel, protocol::encode(protocol::Cancel{job_id})));
  }

  void ready_as(const Who& w, const std::string& worker_id, uint32_t capacity) {
    protocol::Ready r{worker_id, "host", 7, capacity, {"openai"}, "test", {}};
    core_->on_backend(w.peer(), make_frames(Command::ready, protocol::encode(r)));
  }

  void result_as(const Who& w, const std::string& job_id, uint32_t delivery) {
    protocol::Response response;
    response.content = "answer to " + job_id;
    core_->on_backend(
        w.peer(), make_frames(Command::result, protocol::encode(protocol::JobEnd{job_id, delivery}),
                              protocol::encode(response)));
  }

  protocol::StatusReply status_as(const Who& w) {
    core_->on_frontend(w.peer(), make_frames(Command::status, std::string(protocol::kEmptyMap)));
    auto replies = take_of(Command::status);
    EXPECT_EQ(replies.size(), 1u);
    if (replies.empty()) return {};
    return decode_or_die<protocol::StatusReply>(replies[0].header());
  }

  // The one `rejected` among `sent`, to `route`.
  static protocol::Rejected rejection(std::vector<Sent>& sent, const std::string& route,
                                      bool to_client = true) {
    auto rejected = of(sent, Command::rejected, to_client);
    EXPECT_EQ(rejected.size(), 1u);
    if (rejected.size() != 1u) return {};
    EXPECT_EQ(rejected[0].route, route);
    return decode_or_die<protocol::Rejected>(rejected[0].header());
  }

  Who alice_ = who("alice", kClient);
  Who bob_ = who("bob", kClient);
  Who worker_ = who("w1", kWorker);
};

TEST_F(IdentityTest, AnotherIdentitysJobIdIsRejectedAndNeverAnsweredWithItsResult) {
  submit_as(alice_, "j1");
  take();
  submit_as(bob_, "j1");
  auto sent = take();
  const protocol::Rejected refused = rejection(sent, bob_.route);
  EXPECT_EQ(refused.kind, ErrorKind::invalid_request);
  EXPECT_EQ(refused.code, "duplicate_job_id");
  EXPECT_EQ(refused.job_id, "j1");
  EXPECT_TRUE(of(sent, Command::accepted).empty());

  ready_as(worker_, "worker-1", 4);
  ASSERT_EQ(take_job_ids(), std::vector<std::string>{"j1"});
  result_as(worker_, "j1", 1);
  auto results = take_of(Command::result);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].route, alice_.route);  // Bob's submit did not move the reply route

  // Finished and stored: Bob's resubmit still gets no copy of Alice's answer.
  submit_as(bob_, "j1");
  sent = take();
  EXPECT_EQ(rejection(sent, bob_.route).code, "duplicate_job_id");
  EXPECT_TRUE(of(sent, Command::result).empty());
  EXPECT_EQ(core_->status().rejected.at("duplicate_job_id"), 2u);
}

TEST_F(IdentityTest, TheOwnersResubmitFromANewConnectionIsDeduplicatedAndMovesItsAnswers) {
  submit_as(alice_, "j1");
  take();
  Who alice_again = who("alice", kClient, "route-alice-2");
  submit_as(alice_again, "j1");
  auto accepted = take_of(Command::accepted);
  ASSERT_EQ(accepted.size(), 1u);
  EXPECT_TRUE(decode_or_die<protocol::Accepted>(accepted[0].header()).duplicate);
  ready_as(worker_, "worker-1", 4);
  take();
  result_as(worker_, "j1", 1);
  auto results = take_of(Command::result);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].route, "route-alice-2");
}

TEST_F(IdentityTest, OnlyTheOwnerCanCancel) {
  ready_as(worker_, "worker-1", 1);
  submit_as(alice_, "running");
  submit_as(alice_, "queued");
  take();
  cancel_as(bob_, "running");
  cancel_as(bob_, "queued");
  EXPECT_TRUE(take().empty()) << "another identity's cancel must have no effect";
  EXPECT_EQ(core_->queued(), 1u);
  EXPECT_EQ(core_->running(), 1u);

  cancel_as(alice_, "running");
  auto sent = take();
  auto cancels = of(sent, Command::cancel, false);
  ASSERT_EQ(cancels.size(), 1u);
  EXPECT_EQ(cancels[0].route, worker_.route);
  cancel_as(alice_, "queued");
  auto errors = take_of(Command::error);
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors[0].route, alice_.route);
}

TEST_F(IdentityTest, WithoutCurveJobIdsAreOneNamespaceAsBefore) {
  submit("c1", "j1");
  take();
  submit("c2", "j1");
  auto accepted = take_of(Command::accepted);
  ASSERT_EQ(accepted.size(), 1u);
  EXPECT_TRUE(decode_or_die<protocol::Accepted>(accepted[0].header()).duplicate);
  cancel("c3", "j1");
  EXPECT_EQ(take_of(Command::error).size(), 1u);  // any connection may cancel
}

TEST_F(IdentityTest, OnlyAGatewayMaySetATenant) {
  submit_as(alice_, "j1", "team-a");
  auto sent = take();
  const protocol::Rejected refused = rejection(sent, alice_.route);
  EXPECT_EQ(refused.kind, ErrorKind::invalid_request);
  EXPECT_EQ(refused.code, "tenant_not_allowed");
  EXPECT_EQ(core_->queued(), 0u);

  const Who gateway = who("gw", kGateway | kAdmin);
  submit_as(gateway, "j1", "team-a");
  EXPECT_EQ(take_of(Command::accepted).size(), 1u);
  EXPECT_EQ(core_->queued(), 1u);
  // A plain connection of a broker without CURVE may take every role, tenants included.
  submit("c1", "j2", "openai");
  protocol::Submit s{"j3", "openai", Priority::interactive, 0, false, "team-b"};
  core_->on_frontend("c1",
                     make_frames(Command::submit, protocol::encode(s), request_payload("openai")));
  EXPECT_EQ(take_of(Command::accepted).size(), 2u);
}

TEST_F(IdentityTest, TenantsOfAGatewayOwnTheirJobsAndHaveTheirOwnBounds) {
  BrokerConfig config;
  config.client_jobs = 2;
  make(config);
  const Who gateway = who("gw", kGateway);
  submit_as(gateway, "a1", "team-a");
  submit_as(gateway, "a2", "team-a");
  submit_as(gateway, "a3", "team-a");  // team-a's bound
  submit_as(gateway, "b1", "team-b");  // team-b has its own
  auto sent = take();
  EXPECT_EQ(rejection_code(sent), "client_jobs");
  EXPECT_EQ(of(sent, Command::accepted).size(), 3u);

  // team-b cannot take team-a's job id; team-a's own resubmit is deduplicated.
  submit_as(gateway, "a1", "team-b");
  sent = take();
  EXPECT_EQ(rejection(sent, gateway.route).code, "duplicate_job_id");
  submit_as(gateway, "a1", "team-a");
  auto accepted = take_of(Command::accepted);
  ASSERT_EQ(accepted.size(), 1u);
  EXPECT_TRUE(decode_or_die<protocol::Accepted>(accepted[0].header()).duplicate);
}

TEST_F(IdentityTest, TenantsTakeTurnsLikeClients) {
  const Who gateway = who("gw", kGateway);
  for (int i = 0; i < 4; ++i) submit_as(gateway, "a" + std::to_string(i), "team-a");
  submit_as(gateway, "b0", "team-b");
  take();
  ready_as(worker_, "worker-1", 1);
  std::vector<std::string> order = take_job_ids();
  ASSERT_EQ(order.size(), 1u);
  result_as(worker_, order.back(), 1);
  auto next = take_job_ids();
  ASSERT_EQ(next.size(), 1u);
  order.push_back(next.front());
  // team-b's one job does not wait behind all of team-a's.
  EXPECT_EQ(order, (std::vector<std::string>{"a0", "b0"}));
}

TEST_F(IdentityTest, TwoConnectionsOfOneIdentityShareItsBounds) {
  BrokerConfig config;
  config.client_jobs = 2;
  make(config);
  submit_as(alice_, "j1");
  submit_as(who("alice", kClient, "route-alice-2"), "j2");
  submit_as(who("alice", kClient, "route-alice-3"), "j3");
  auto sent = take();
  EXPECT_EQ(rejection_code(sent), "client_jobs");
}

TEST_F(IdentityTest, AnAdminOnlyOrUnlistedIdentityCannotSubmit) {
  const Who ops = who("ops", kAdmin);
  submit_as(ops, "j1");
  auto sent = take();
  protocol::Rejected refused = rejection(sent, ops.route);
  EXPECT_EQ(refused.kind, ErrorKind::authentication);
  EXPECT_EQ(refused.code, "not_allowed");
  EXPECT_EQ(refused.job_id, "j1");
  EXPECT_EQ(status_as(ops).broker_id, "broker-1");  // but it may ask for status

  // A key removed from the lists since it connected: refused whatever it sends.
  const Who removed = who("mallory", 0);
  submit_as(removed, "j2");
  sent = take();
  EXPECT_EQ(rejection(sent, removed.route).code, "not_allowed");
  core_->on_frontend(removed.peer(),
                     make_frames(Command::status, std::string(protocol::kEmptyMap)));
  sent = take();
  EXPECT_EQ(rejection(sent, removed.route).kind, ErrorKind::authentication);
  EXPECT_EQ(core_->queued(), 0u);
  EXPECT_EQ(core_->counters().refused_messages, 3u);
}

TEST_F(IdentityTest, StatusShowsANonAdminTheWorkerCountAndItsOwnCountsOnly) {
  const Who gateway = who("gw", kGateway);
  const Who ops = who("ops", kAdmin);
  ready_as(worker_, "worker-1", 1);
  submit_as(alice_, "a1");
  submit_as(alice_, "a2");
  submit_as(bob_, "b1");
  submit_as(gateway, "g1", "team-a");
  take();

  const protocol::StatusReply mine = status_as(alice_);
  EXPECT_EQ(mine.identity, "alice");
  EXPECT_EQ(mine.worker_count, 1u);
  EXPECT_TRUE(mine.workers.empty());
  EXPECT_TRUE(mine.providers.empty());
  EXPECT_EQ(mine.in_flight, 0u);
  EXPECT_TRUE(mine.queue_depth.empty());
  ASSERT_EQ(mine.clients.size(), 1u);
  const protocol::ClientCounters& counts = mine.clients.at("alice");
  EXPECT_EQ(counts.submitted, 2u);
  EXPECT_EQ(counts.running, 1u);
  EXPECT_EQ(counts.queued, 1u);

  const protocol::StatusReply tenants = status_as(gateway);
  ASSERT_EQ(tenants.clients.size(), 1u);
  EXPECT_EQ(tenants.clients.at("gw/team-a").queued, 1u);

  const protocol::StatusReply all = status_as(ops);
  EXPECT_EQ(all.identity, "ops");
  ASSERT_EQ(all.workers.size(), 1u);
  EXPECT_EQ(all.workers[0].worker_id, "worker-1");
  EXPECT_EQ(all.worker_count, 1u);
  EXPECT_EQ(all.clients.size(), 3u);
  EXPECT_EQ(all.clients.at("bob").queued, 1u);
  EXPECT_EQ(all.in_flight, 1u);

  result_as(worker_, "a1", 1);
  take();
  const protocol::ClientCounters after = status_as(alice_).clients.at("alice");
  EXPECT_EQ(after.succeeded, 1u);
  EXPECT_EQ(after.running, 1u);  // a2 took the slot
  EXPECT_EQ(after.queued, 0u);
}

TEST_F(IdentityTest, WithoutCurveEveryoneSeesEverything) {
  ready("w1", "worker-1", 1);
  submit("c1", "j1");
  take();
  core_->on_frontend("c2", make_frames(Command::status, std::string(protocol::kEmptyMap)));
  auto replies = take_of(Command::status);
  ASSERT_EQ(replies.size(), 1u);
  const auto status = decode_or_die<protocol::StatusReply>(replies[0].header());
  EXPECT_EQ(status.workers.size(), 1u);
  EXPECT_EQ(status.worker_count, 1u);
  EXPECT_EQ(status.in_flight, 1u);
  EXPECT_TRUE(status.identity.empty());
  EXPECT_TRUE(status.clients.empty());  // connections have no names to count under
  EXPECT_FALSE(status.insecure);
}

TEST_F(IdentityTest, OnlyWorkerIdentitiesMayRegister) {
  ready_as(alice_, "worker-x", 4);
  auto sent = take();
  const protocol::Rejected refused = rejection(sent, alice_.route, false);
  EXPECT_EQ(refused.kind, ErrorKind::authentication);
  EXPECT_EQ(refused.code, "not_allowed");
  EXPECT_EQ(core_->worker_count(), 0u);
  submit_as(bob_, "j1");
  EXPECT_TRUE(take_jobs().empty());
}

TEST_F(IdentityTest, AWorkerIdIsBoundToTheIdentityThatRegisteredIt) {
  ready_as(worker_, "worker-1", 2);
  submit_as(alice_, "j1");
  take();
  const Who impostor = who("w2", kWorker);
  ready_as(impostor, "worker-1", 8);
  auto sent = take();
  const protocol::Rejected refused = rejection(sent, impostor.route, false);
  EXPECT_EQ(refused.code, "worker_id_in_use");
  EXPECT_TRUE(of(sent, Command::job, false).empty());
  ASSERT_EQ(core_->worker_count(), 1u);
  const detail::Job* job = core_->find_job("j1");
  ASSERT_NE(job, nullptr);
  ASSERT_NE(job->worker, nullptr);
  EXPECT_EQ(job->worker->route, worker_.route);  // the real worker keeps its job

  // New jobs still go to the real worker; the impostor gets none.
  submit_as(alice_, "j2");
  auto jobs = take_jobs();
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].first, worker_.route);
  result_as(impostor, "j1", 1);  // not registered: told to send ready, nothing relayed
  EXPECT_TRUE(take_of(Command::result).empty());

  // The same identity on a new connection is a reconnect and keeps the id.
  const Who reconnected = who("w1", kWorker, "route-w1-2");
  protocol::Ready r{"worker-1", "host", 7, 2, {"openai"}, "test", {{"j1", 1}, {"j2", 1}}};
  core_->on_backend(reconnected.peer(), make_frames(Command::ready, protocol::encode(r)));
  take();
  EXPECT_EQ(core_->find_job("j1")->worker->route, "route-w1-2");
}

TEST_F(IdentityTest, AWorkerWhoseKeyWasRemovedIsDroppedAndItsJobsRedelivered) {
  const Who other = who("w2", kWorker);
  ready_as(worker_, "worker-1", 1);
  submit_as(alice_, "j1");
  take();
  ready_as(other, "worker-2", 1);
  take();
  core_->revoke_workers(
      [&](std::string_view key) { return key == worker_.key ? Roles{0} : kWorker; });
  auto sent = take();
  auto disconnects = of(sent, Command::disconnect, false);
  ASSERT_EQ(disconnects.size(), 1u);
  EXPECT_EQ(disconnects[0].route, worker_.route);
  auto jobs = of(sent, Command::job, false);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].route, other.route);
  EXPECT_EQ(core_->worker_count(), 1u);

  // Its next message (a removed key: no roles) is refused, and it is not registered again.
  Who removed = worker_;
  removed.roles = 0;
  ready_as(removed, "worker-1", 1);
  sent = take();
  EXPECT_EQ(rejection(sent, removed.route, false).code, "not_allowed");
  EXPECT_EQ(core_->worker_count(), 1u);
}

TEST_F(IdentityTest, ARegisteredWorkerThatLostItsRoleIsLostOnItsNextMessage) {
  ready_as(worker_, "worker-1", 1);
  submit_as(alice_, "j1");
  take();
  Who removed = worker_;
  removed.roles = 0;
  core_->on_backend(removed.peer(),
                    make_frames(Command::heartbeat, protocol::encode(protocol::Heartbeat{"w", 1})));
  EXPECT_EQ(core_->worker_count(), 0u);
  EXPECT_EQ(core_->queued(), 1u);  // back in the queue for another worker
}

TEST_F(IdentityTest, ATenantOverTheLimitIsMalformed) {
  const Who gateway = who("gw", kGateway);
  submit_as(gateway, "j1", std::string(protocol::Limits::max_tenant + 1, 't'));
  auto sent = take();
  const protocol::Rejected refused = rejection(sent, gateway.route);
  EXPECT_EQ(refused.code, "malformed");
  EXPECT_NE(refused.message.find("tenant"), std::string::npos) << refused.message;
  submit_as(gateway, "j1", std::string(protocol::Limits::max_tenant, 't'));
  EXPECT_EQ(take_of(Command::accepted).size(), 1u);
}

}  // namespace
}  // namespace dispatch::broker
