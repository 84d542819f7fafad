// Writes schemas/golden/golden.json from golden_values.cpp. Run it only when the encoding changes
// on purpose (then say so in PROTOCOL.md): protocol_test fails while file and code disagree.
//   protocol_golden_gen schemas/golden/golden.json

#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "golden_values.hpp"

int main(int argc, char** argv) {
  using dispatch::to_hex;
  using dispatch::protocol::testing::golden_cases;
  if (argc != 2) {
    std::cerr << "usage: protocol_golden_gen OUTPUT.json\n";
    return 2;
  }
  nlohmann::ordered_json doc;
  doc["protocol"] = "LLMD1";
  doc["description"] =
      "Golden vectors of the LLMD/1 wire protocol (schemas/PROTOCOL.md). Each vector is one "
      "msgpack frame: 'hex' is the exact bytes a conforming encoder writes (keys in the order "
      "PROTOCOL.md lists them, defaults omitted, shortest int/str/array/map headers, float64), "
      "'value' is the same map as JSON. A decoder must turn 'hex' into 'value'.";
  auto& vectors = doc["vectors"];
  vectors = nlohmann::ordered_json::array();
  for (const auto& c : golden_cases()) {
    nlohmann::ordered_json v;
    v["name"] = c.name;
    v["type"] = c.type;
    v["command"] = c.command;
    v["frame"] = c.frame;
    v["hex"] = to_hex(c.bytes);
    v["value"] = nlohmann::ordered_json::from_msgpack(c.bytes);
    vectors.push_back(std::move(v));
  }
  std::ofstream out(argv[1], std::ios::binary | std::ios::trunc);
  out << doc.dump(2) << "\n";
  if (!out) {
    std::cerr << "cannot write " << argv[1] << "\n";
    return 1;
  }
  return 0;
}
