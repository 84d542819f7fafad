// The price table's arithmetic and matching rule (no file: see price_file_test.cpp).
#include "dispatch/worker/prices.hpp"

#include <gtest/gtest.h>

namespace dispatch::worker {
namespace {

protocol::Usage usage(uint64_t prompt, uint64_t completion, uint64_t cached = 0) {
  return protocol::Usage{prompt, completion, prompt + completion, cached};
}

TEST(CostTest, InputAndOutputPerMillion) {
  const Price gpt4o{2.50, 10.00, 1.25};
  // 1,000,000 prompt + 1,000,000 completion tokens: exactly the two prices.
  EXPECT_DOUBLE_EQ(cost_usd(usage(1'000'000, 1'000'000), gpt4o), 12.50);
  // 1200 in, 300 out: 1200 x 2.50 + 300 x 10.00 = 6000 per million = 0.006 USD.
  EXPECT_DOUBLE_EQ(cost_usd(usage(1200, 300), gpt4o), 0.006);
  EXPECT_DOUBLE_EQ(cost_usd(usage(0, 0), gpt4o), 0.0);
}

TEST(CostTest, CachedTokensAtTheCachedPrice) {
  const Price gpt4o_mini{0.15, 0.60, 0.075};
  // (1200 - 1024) x 0.15 + 1024 x 0.075 + 80 x 0.60 = 26.4 + 76.8 + 48 = 151.2 per million.
  EXPECT_NEAR(cost_usd(usage(1200, 80, 1024), gpt4o_mini), 0.0001512, 1e-15);
  const Price sonnet{3.00, 15.00, 0.30};
  // Anthropic: 10 fresh + 5000 cache reads + 200 out = 30 + 1500 + 3000 per million.
  EXPECT_NEAR(cost_usd(usage(5010, 200, 5000), sonnet), 0.00453, 1e-15);
}

TEST(CostTest, NoCachedPriceMeansTheInputPrice) {
  const Price qwen_plus{0.40, 1.20, std::nullopt};
  EXPECT_DOUBLE_EQ(cost_usd(usage(1000, 1000, 600), qwen_plus),
                   cost_usd(usage(1000, 1000), qwen_plus));
}

TEST(CostTest, CachedAbovePromptIsClampedToIt) {
  const Price price{1.0, 2.0, 0.5};
  // A provider's inconsistent report cannot make the cost negative or larger than all-cached.
  EXPECT_DOUBLE_EQ(cost_usd(usage(100, 0, 500), price), 100 * 0.5 / 1e6);
}

TEST(FamilyTest, DatedSnapshotSuffixes) {
  EXPECT_EQ(family_of_model("gpt-4o-2024-08-06"), "gpt-4o");
  EXPECT_EQ(family_of_model("gpt-4o-mini-2024-07-18"), "gpt-4o-mini");
  EXPECT_EQ(family_of_model("claude-sonnet-4-5-20250929"), "claude-sonnet-4-5");
  EXPECT_EQ(family_of_model("claude-3-5-haiku-latest"), "claude-3-5-haiku");
  EXPECT_EQ(family_of_model("qwen-max-0919"), "qwen-max");
  EXPECT_EQ(family_of_model("qwen-plus-2025-01-25"), "qwen-plus");
  EXPECT_EQ(family_of_model("gpt-4o"), std::nullopt);
  EXPECT_EQ(family_of_model("claude-haiku-4-5"), std::nullopt);  // "-5" is a version, not a date
  EXPECT_EQ(family_of_model("llama3.2"), std::nullopt);
  EXPECT_EQ(family_of_model("-latest"), std::nullopt);
  EXPECT_EQ(family_of_model("model-123"), std::nullopt);
}

TEST(PriceTableTest, ExactBeatsFamilyAndTypeMatters) {
  PriceTable table;
  table.set("openai", "gpt-4o", Price{2.50, 10.00, 1.25});
  table.set("openai", "gpt-4o-2024-05-13", Price{5.00, 15.00, std::nullopt});
  ASSERT_NE(table.find("openai", "gpt-4o"), nullptr);
  EXPECT_EQ(table.find("openai", "gpt-4o-2024-08-06")->input, 2.50);  // the family
  EXPECT_EQ(table.find("openai", "gpt-4o-2024-05-13")->input, 5.00);  // its own entry
  EXPECT_EQ(table.find("openai-compatible", "gpt-4o"), nullptr);      // another adapter type
  EXPECT_EQ(table.find("openai", "gpt-4o-mini"), nullptr);            // not a snapshot of gpt-4o
  EXPECT_EQ(table.find("openai", "gpt-5"), nullptr);
}

TEST(PriceTableTest, MergeOverridesAndAdds) {
  PriceTable shipped;
  shipped.set("openai", "gpt-4o", Price{2.50, 10.00, 1.25});
  shipped.set("anthropic", "claude-haiku-4-5", Price{1.00, 5.00, 0.10});
  PriceTable overrides;
  overrides.set("openai", "gpt-4o", Price{2.00, 8.00, std::nullopt});
  overrides.set("ollama", "llama3.2", Price{0, 0, std::nullopt});
  shipped.merge(overrides);
  EXPECT_EQ(shipped.size(), 3u);
  EXPECT_EQ(*shipped.find("openai", "gpt-4o"), (Price{2.00, 8.00, std::nullopt}));
  EXPECT_EQ(shipped.find("anthropic", "claude-haiku-4-5")->output, 5.00);
  EXPECT_EQ(shipped.find("ollama", "llama3.2")->input, 0.0);
}

}  // namespace
}  // namespace dispatch::worker
