// Reading price tables: the shipped file, a config's `prices_file:` and `prices:`, and the
// errors that stop a worker at start-up (exit 2).

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "dispatch/worker/config.hpp"
#include "dispatch/worker/prices.hpp"
#include "providers_test_support.hpp"

namespace dispatch::worker {
namespace {

using test::MapEnvironment;

const char* const kDocument = R"(
date: "2025-10-01"
currency: USD
sources:
  openai: "pricing page"
prices:
  openai:
    gpt-4o: {input: 2.50, output: 10.00, cached_input: 1.25}
  anthropic:
    claude-haiku-4-5: {input: 1, output: 5}
)";

// A directory of its own, removed at the end.
class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/dispatch_prices_test_XXXXXX";
    if (mkdtemp(pattern) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string write(const std::string& name, const std::string& text) const {
    const std::string file = (path_ / name).string();
    std::ofstream(file) << text;
    return file;
  }

 private:
  std::filesystem::path path_;
};

std::string config_error(const std::string& path) {
  try {
    load_config(path, MapEnvironment{});
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "no error";
}

TEST(PriceFile, ParsesADocument) {
  auto table = parse_price_file(kDocument, "prices.yaml");
  ASSERT_TRUE(table) << table.error();
  EXPECT_EQ(table->date, "2025-10-01");
  EXPECT_EQ(table->size(), 2u);
  EXPECT_EQ(*table->find("openai", "gpt-4o"), (Price{2.50, 10.00, 1.25}));
  EXPECT_EQ(*table->find("anthropic", "claude-haiku-4-5"), (Price{1.0, 5.0, std::nullopt}));
}

TEST(PriceFile, RefusesBadDataWithThePath) {
  const std::pair<std::string, std::string> cases[] = {
      {"prices: {}\nsources: {a: b}\n", "p.yaml: date: missing"},
      {"date: x\nprices: {}\n",
       "p.yaml: sources: missing (name the pricing pages the figures "
       "come from)"},
      {"date: x\nsources: {a: b}\n", "p.yaml: prices: missing"},
      {"date: x\ncurrency: EUR\nsources: {a: b}\nprices: {}\n",
       "p.yaml: currency: only USD is supported"},
      {"date: x\nsources: {a: b}\nprices: {openai: {gpt-4o: {input: 1}}}\n",
       "p.yaml: prices.openai.gpt-4o.output: missing"},
      {"date: x\nsources: {a: b}\nprices: {openai: {gpt-4o: {input: -1, output: 1}}}\n",
       "p.yaml: prices.openai.gpt-4o.input: must be a finite number >= 0"},
      {"date: x\nsources: {a: b}\nprices: {openai: {gpt-4o: {input: cheap, output: 1}}}\n",
       "p.yaml: prices.openai.gpt-4o.input: 'cheap' is not a number"},
      {"date: x\nsources: {a: b}\nprices: {openai: {gpt-4o: {input: 1, output: 1, in: 2}}}\n",
       "p.yaml: prices.openai.gpt-4o.in: unknown key (expected input, output, cached_input)"},
      {"date: x\nsources: {a: b}\nprices: {openai: [1]}\n",
       "p.yaml: prices.openai: expected a map of model -> price"},
      {"date: x\nsources: {a: b}\nprices: {}\nextra: 1\n",
       "p.yaml: extra: unknown key (expected date, currency, sources, prices)"},
      {"[1, 2", ""},  // YAML syntax: a line and column
  };
  for (const auto& [text, expected] : cases) {
    auto table = parse_price_file(text, "p.yaml");
    ASSERT_FALSE(table) << text;
    if (expected.empty()) {
      EXPECT_EQ(table.error().rfind("p.yaml: line ", 0), 0u) << table.error();
    } else {
      EXPECT_EQ(table.error(), expected) << text;
    }
  }
}

TEST(PriceFile, TheShippedTableParsesAndHasTheRequiredModels) {
  std::ifstream in(DISPATCH_SHIPPED_PRICES);
  ASSERT_TRUE(in) << DISPATCH_SHIPPED_PRICES;
  std::ostringstream text;
  text << in.rdbuf();
  auto table = parse_price_file(text.str(), "prices.yaml");
  ASSERT_TRUE(table) << table.error();
  EXPECT_FALSE(table->date.empty());
  for (const auto& [type, model] :
       std::vector<std::pair<std::string, std::string>>{{"openai", "gpt-4o"},
                                                        {"openai", "gpt-4o-mini"},
                                                        {"anthropic", "claude-sonnet-4-5"},
                                                        {"anthropic", "claude-haiku-4-5"},
                                                        {"dashscope", "qwen-plus"},
                                                        {"dashscope", "qwen-max"}}) {
    const Price* price = table->find(type, model);
    ASSERT_NE(price, nullptr) << type << "/" << model;
    EXPECT_GT(price->input, 0.0) << model;
    EXPECT_GT(price->output, price->input) << model;
  }
  // Dated snapshots find their family; the first gpt-4o snapshot has its own (higher) price.
  EXPECT_EQ(table->find("openai", "gpt-4o-2024-08-06"), table->find("openai", "gpt-4o"));
  EXPECT_GT(table->find("openai", "gpt-4o-2024-05-13")->input,
            table->find("openai", "gpt-4o")->input);
  EXPECT_EQ(table->find("anthropic", "claude-sonnet-4-5-20250929"),
            table->find("anthropic", "claude-sonnet-4-5"));
}

TEST(PriceConfig, PricesFileRelativeToTheConfigThenPricesOverIt) {
  TempDir dir;
  dir.write("my-prices.yaml", kDocument);
  const std::string config = dir.write("worker.yaml", R"(
prices_file: my-prices.yaml
prices:
  openai:
    gpt-4o: {input: 2.00, output: 8.00}
  ollama:
    llama3.2: {input: 0, output: 0}
)");
  const WorkerConfig loaded = load_config(config, MapEnvironment{});
  EXPECT_EQ(loaded.prices.size(), 3u);
  EXPECT_EQ(*loaded.prices.find("openai", "gpt-4o"), (Price{2.00, 8.00, std::nullopt}));
  EXPECT_EQ(loaded.prices.find("anthropic", "claude-haiku-4-5")->output, 5.0);
  EXPECT_EQ(loaded.prices.find("ollama", "llama3.2")->input, 0.0);
  EXPECT_EQ(loaded.prices.date, "2025-10-01");
}

TEST(PriceConfig, BadPriceDataIsAConfigError) {
  TempDir dir;
  const std::string bad_entry = dir.write("a.yaml", "prices:\n  openai:\n    gpt-4o: {input: 1}\n");
  EXPECT_EQ(config_error(bad_entry), bad_entry + ": prices.openai.gpt-4o.output: missing");
  const std::string missing_file = dir.write("b.yaml", "prices_file: nowhere.yaml\n");
  EXPECT_NE(config_error(missing_file).find("nowhere.yaml: cannot open"), std::string::npos)
      << config_error(missing_file);
  dir.write("broken.yaml",
            "date: x\nsources: {a: b}\nprices: {openai: {m: {input: x, output: 1}}}\n");
  const std::string broken_file = dir.write("c.yaml", "prices_file: broken.yaml\n");
  EXPECT_NE(config_error(broken_file).find("prices.openai.m.input: 'x' is not a number"),
            std::string::npos)
      << config_error(broken_file);
  const std::string empty_name = dir.write("d.yaml", "prices_file: ''\n");
  EXPECT_EQ(config_error(empty_name),
            empty_name + ": prices_file: empty (remove the key for the default)");
}

}  // namespace
}  // namespace dispatch::worker
