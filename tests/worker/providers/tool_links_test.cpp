// ToolLinks answers what the backward scans it replaced answered, in O(log n) per question.

#include "tool_links.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace dispatch::worker::detail {
namespace {

// The former per-message scans, kept here as the reference.
std::string scan_name_for_call_id(const std::vector<protocol::Message>& messages,
                                  std::size_t before, const std::string& call_id) {
  for (std::size_t i = std::min(before, messages.size()); i-- > 0;) {
    for (const protocol::ToolCall& call : messages[i].tool_calls) {
      if (call.id == call_id) return call.name;
    }
  }
  return {};
}

std::string scan_call_id_for_name(const std::vector<protocol::Message>& messages,
                                  std::size_t before, const std::string& name) {
  for (std::size_t i = std::min(before, messages.size()); i-- > 0;) {
    if (messages[i].role != "assistant" || messages[i].tool_calls.empty()) continue;
    for (const protocol::ToolCall& call : messages[i].tool_calls) {
      if (call.name == name) return call.id;
    }
    return {};
  }
  return {};
}

TEST(ToolLinks, AnswersAsTheBackwardScansDid) {
  std::mt19937 random(20261129);
  const std::string roles[] = {"user", "assistant", "tool", "system"};
  const std::string words[] = {"", "a", "b", "c"};
  for (int round = 0; round < 2000; ++round) {
    std::vector<protocol::Message> messages(1 + random() % 10);
    for (protocol::Message& m : messages) {
      m.role = roles[random() % 4];
      for (int c = static_cast<int>(random() % 4); c > 0; --c) {
        m.tool_calls.push_back({words[random() % 4], words[random() % 4], "{}"});
      }
      m.tool_call_id = words[random() % 4];
      m.tool_name = words[random() % 4];
    }
    messages.back().role = "tool";
    messages.back().tool_name.clear();  // so that the index is built
    const ToolLinks links(messages);
    for (std::size_t before = 0; before <= messages.size() + 1; ++before) {
      for (const std::string& word : words) {
        ASSERT_EQ(links.name_for_call_id(before, word),
                  scan_name_for_call_id(messages, before, word))
            << "round " << round << " before " << before << " id '" << word << "'";
        ASSERT_EQ(links.call_id_for_name(before, word),
                  scan_call_id_for_name(messages, before, word))
            << "round " << round << " before " << before << " name '" << word << "'";
      }
    }
  }
}

TEST(ToolLinks, ManyResultsResolveWithoutAQuadraticScan) {
  // 100,000 results that name only their call's id: a scan per result would compare 5e9 ids.
  std::vector<protocol::Message> messages(2);
  messages[0].role = "assistant";
  for (int c = 0; c < 1000; ++c) {
    messages[0].tool_calls.push_back({"id" + std::to_string(c), "f" + std::to_string(c), ""});
  }
  messages[1].role = "user";
  for (int r = 0; r < 100'000; ++r) {
    protocol::Message result;
    result.role = "tool";
    result.tool_call_id = "id" + std::to_string(r % 1000);
    messages.push_back(std::move(result));
  }
  const ToolLinks links(messages);
  for (std::size_t i = 2; i < messages.size(); ++i) {
    ASSERT_EQ(links.name_for_call_id(i, messages[i].tool_call_id),
              "f" + std::to_string((i - 2) % 1000));
  }
}

}  // namespace
}  // namespace dispatch::worker::detail
