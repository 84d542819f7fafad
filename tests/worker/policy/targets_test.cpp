#include "dispatch/worker/policy/targets.hpp"

#include <gtest/gtest.h>

#include "policy_test_support.hpp"

namespace dispatch::worker::test {
namespace {

std::vector<protocol::Target> names(const std::vector<PlannedTarget>& planned) {
  std::vector<protocol::Target> out;
  for (const auto& p : planned) out.push_back(p.target);
  return out;
}

protocol::Target t(std::string provider, std::string model) {
  return {std::move(provider), std::move(model)};
}

TEST(Targets, PrimaryThenRequestFallbacksWithTheirConfigs) {
  auto config = make_config({"a", "b"});
  auto planned = plan_targets(make_request("a", "m1", {t("b", "m2"), t("a", "m3")}), config);
  ASSERT_EQ(planned.size(), 3u);
  EXPECT_EQ(names(planned), (std::vector{t("a", "m1"), t("b", "m2"), t("a", "m3")}));
  EXPECT_EQ(planned[0].provider, config.provider("a"));
  EXPECT_EQ(planned[1].provider, config.provider("b"));
}

TEST(Targets, PresentAndEmptyFallbacksMeanNone) {
  auto config = make_config({"a", "b"});
  config.enable_fallback = true;
  config.fallbacks = {t("b", "m2")};
  auto planned = plan_targets(make_request("a", "m1", {}), config);
  EXPECT_EQ(names(planned), (std::vector{t("a", "m1")}));
}

TEST(Targets, AbsentFallbacksUseTheConfiguredChainWhenEnabled) {
  auto config = make_config({"a", "b", "c"});
  config.enable_fallback = true;
  config.fallbacks = {t("b", "m2")};
  config.fallback_providers = {"c", "b"};
  config.providers.at("c").fallback_model = "c-model";
  config.providers.at("b").fallback_model = "b-model";
  auto request = make_request("a", "m1");
  request.fallbacks.reset();
  EXPECT_EQ(names(plan_targets(request, config)),
            (std::vector{t("a", "m1"), t("b", "m2"), t("c", "c-model"), t("b", "b-model")}));

  config.enable_fallback = false;
  EXPECT_EQ(names(plan_targets(request, config)), (std::vector{t("a", "m1")}));
}

TEST(Targets, EmptyModelsAndDuplicatesAreDropped) {
  auto config = make_config({"a", "b"});
  config.enable_fallback = true;
  config.fallback_providers = {"b", "a"};  // a has no fallback_model: dropped
  config.providers.at("b").fallback_model = "m1";
  config.fallbacks = {t("a", "m1"), t("b", ""), t("b", "m1")};
  auto request = make_request("a", "m1");
  request.fallbacks.reset();
  EXPECT_EQ(names(plan_targets(request, config)), (std::vector{t("a", "m1"), t("b", "m1")}));

  auto explicit_request = make_request("a", "m1", {t("b", ""), t("a", "m1"), t("b", "x")});
  EXPECT_EQ(names(plan_targets(explicit_request, config)),
            (std::vector{t("a", "m1"), t("b", "x")}));
}

TEST(Targets, UnconfiguredProvidersStayWithoutConfig) {
  auto config = make_config({"a"});
  auto planned = plan_targets(make_request("zz", "m1", {t("a", "m2")}), config);
  ASSERT_EQ(planned.size(), 2u);
  EXPECT_EQ(planned[0].provider, nullptr);
  EXPECT_NE(planned[1].provider, nullptr);
}

TEST(Targets, ChainIsBounded) {
  auto config = make_config({"a"});
  std::vector<protocol::Target> many;
  for (int i = 0; i < 100; ++i) many.push_back(t("a", "m" + std::to_string(i)));
  EXPECT_EQ(plan_targets(make_request("a", "x", many), config).size(), kMaxTargets);
}

TEST(Targets, PreferLargerContextMovesTheFirstLargerForward) {
  auto config = make_config({"small", "tiny", "big", "huge"});
  config.providers.at("small").context_window = 8'000;
  config.providers.at("tiny").context_window = 4'000;
  config.providers.at("big").context_window = 32'000;
  config.providers.at("huge").context_window = 128'000;
  auto planned = plan_targets(
      make_request("small", "m", {t("tiny", "m"), t("zz", "m"), t("big", "m"), t("huge", "m")}),
      config);
  prefer_larger_context(planned, 1, 8'000);
  EXPECT_EQ(names(planned), (std::vector{t("small", "m"), t("big", "m"), t("tiny", "m"),
                                         t("zz", "m"), t("huge", "m")}));

  auto unchanged = planned;
  prefer_larger_context(unchanged, 1, 0);  // unknown window: nothing to compare
  EXPECT_EQ(unchanged, planned);
  prefer_larger_context(unchanged, 1, 1'000'000);  // nothing larger
  EXPECT_EQ(unchanged, planned);
}

}  // namespace
}  // namespace dispatch::worker::test
