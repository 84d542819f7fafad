// The price table (prices.hpp): matching a provider type and model, and the arithmetic. No
// file or YAML here (the providers library reads the table): the policy prices each answer.

#include "dispatch/worker/prices.hpp"

#include <algorithm>

namespace dispatch::worker {
namespace {

std::string key_of(std::string_view type, std::string_view model) {
  std::string key;
  key.reserve(type.size() + 1 + model.size());
  key.append(type).append("/").append(model);
  return key;
}

bool all_digits(std::string_view text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The length of `model`'s dated-snapshot suffix (with its dash), 0 when it has none.
std::size_t snapshot_suffix_length(std::string_view model) {
  constexpr std::string_view kLatest = "-latest";
  if (model.size() > kLatest.size() && model.ends_with(kLatest)) return kLatest.size();
  // -YYYY-MM-DD
  if (model.size() > 11) {
    const std::string_view tail = model.substr(model.size() - 11);
    if (tail[0] == '-' && tail[5] == '-' && tail[8] == '-' && all_digits(tail.substr(1, 4)) &&
        all_digits(tail.substr(6, 2)) && all_digits(tail.substr(9, 2))) {
      return 11;
    }
  }
  // -YYYYMMDD or -MMDD: a last dash-separated part of exactly 8 or 4 digits.
  const std::size_t dash = model.rfind('-');
  if (dash == std::string_view::npos || dash == 0) return 0;
  const std::string_view part = model.substr(dash + 1);
  if ((part.size() == 8 || part.size() == 4) && all_digits(part)) return part.size() + 1;
  return 0;
}

}  // namespace

void PriceTable::set(std::string type, std::string model, Price price) {
  entries_.insert_or_assign(key_of(type, model), price);
}

void PriceTable::merge(const PriceTable& other) {
  for (const auto& [key, price] : other.entries_) entries_.insert_or_assign(key, price);
}

const Price* PriceTable::find(std::string_view type, std::string_view model) const {
  if (entries_.empty()) return nullptr;
  if (auto it = entries_.find(key_of(type, model)); it != entries_.end()) return &it->second;
  if (auto family = family_of_model(model)) {
    if (auto it = entries_.find(key_of(type, *family)); it != entries_.end()) return &it->second;
  }
  return nullptr;
}

std::optional<std::string> family_of_model(std::string_view model) {
  const std::size_t suffix = snapshot_suffix_length(model);
  if (suffix == 0) return std::nullopt;
  return std::string(model.substr(0, model.size() - suffix));
}

double cost_usd(const protocol::Usage& usage, const Price& price) {
  const uint64_t cached = std::min(usage.cached_tokens, usage.prompt_tokens);
  const double fresh = static_cast<double>(usage.prompt_tokens - cached);
  const double cached_price = price.cached_input.value_or(price.input);
  return (fresh * price.input + static_cast<double>(cached) * cached_price +
          static_cast<double>(usage.completion_tokens) * price.output) /
         1e6;
}

}  // namespace dispatch::worker
