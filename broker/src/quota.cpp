#include "dispatch/broker/quota.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "dispatch/common/time.hpp"

namespace dispatch::broker {
namespace {

using std::chrono::duration_cast;
using std::chrono::seconds;

int64_t whole_seconds(Clock::time_point t) {
  return duration_cast<seconds>(t.time_since_epoch()).count();
}

template <class T>
Result<std::optional<T>, std::string> read_positive(const YAML::Node& node, const char* name,
                                                    const std::string& where) {
  const YAML::Node value = node[name];
  if (!value || value.IsNull()) return std::optional<T>();
  try {
    const double number = value.as<double>();
    if (!(number > 0) || !std::isfinite(number)) {
      return fail(where + "." + name + ": must be a positive number");
    }
    if constexpr (std::is_integral_v<T>) {
      if (number != std::floor(number) || number > 1e9) {
        return fail(where + "." + name + ": must be a whole number up to 1000000000");
      }
    }
    return std::optional<T>(static_cast<T>(number));
  } catch (const YAML::Exception&) {
    return fail(where + "." + name + ": must be a number");
  }
}

Result<QuotaLimit, std::string> parse_limit(const YAML::Node& node, const std::string& where) {
  if (!node.IsMap()) return fail(where + ": must be a map of rpm, tpm, concurrency, burst");
  for (const auto& entry : node) {
    const std::string key = entry.first.as<std::string>();
    if (key != "rpm" && key != "tpm" && key != "concurrency" && key != "burst" &&
        key != "token_burst") {
      return fail(where + "." + key +
                  ": unknown key (expected rpm, tpm, concurrency, burst, token_burst)");
    }
  }
  QuotaLimit limit;
  auto rpm = read_positive<double>(node, "rpm", where);
  auto tpm = read_positive<double>(node, "tpm", where);
  auto concurrency = read_positive<uint32_t>(node, "concurrency", where);
  auto burst = read_positive<double>(node, "burst", where);
  auto token_burst = read_positive<double>(node, "token_burst", where);
  for (auto* r : {&rpm, &tpm, &burst, &token_burst}) {
    if (!*r) return fail(std::move(*r).error());
  }
  if (!concurrency) return fail(std::move(concurrency).error());
  limit.rpm = *rpm;
  limit.tpm = *tpm;
  limit.concurrency = *concurrency;
  limit.burst = *burst;
  limit.token_burst = *token_burst;
  if (limit.burst && !limit.rpm) return fail(where + ".burst: needs rpm");
  if (limit.token_burst && !limit.tpm) return fail(where + ".token_burst: needs tpm");
  return limit;
}

}  // namespace

Result<QuotaConfig, std::string> parse_quota_config(std::string_view yaml_text,
                                                    std::string_view source_name) {
  const std::string source(source_name);
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    return fail(source + ": not valid YAML: " + e.msg);
  }
  QuotaConfig config;
  if (!root || root.IsNull()) return config;
  if (!root.IsMap()) return fail(source + ": must be a map (with `limits:`)");
  if (const YAML::Node answer = root["default_answer_tokens"]) {
    auto value = read_positive<uint32_t>(root, "default_answer_tokens", source);
    if (!value) return fail(std::move(value).error());
    config.default_answer_tokens = **value;
  }
  const YAML::Node limits = root["limits"];
  if (!limits || limits.IsNull()) return config;
  if (!limits.IsMap())
    return fail(source + ": limits: must be a map keyed by provider or provider/model");
  for (const auto& entry : limits) {
    const std::string key = entry.first.as<std::string>();
    if (key.empty() || key.front() == '/' || key.back() == '/') {
      return fail(source + ": limits." + key + ": a key is `provider` or `provider/model`");
    }
    auto limit = parse_limit(entry.second, source + ": limits." + key);
    if (!limit) return fail(std::move(limit).error());
    config.limits.emplace(key, *limit);
  }
  return config;
}

Result<QuotaConfig, std::string> load_quota_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return fail("cannot read " + path + ": " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return fail("cannot read " + path + ": " + std::strerror(errno));
  return parse_quota_config(text.str(), path);
}

uint64_t estimate_tokens(std::size_t payload_bytes, std::optional<uint32_t> max_tokens,
                         uint32_t default_answer_tokens) {
  const uint64_t prompt = (static_cast<uint64_t>(payload_bytes) + 3) / 4;
  return prompt + (max_tokens ? *max_tokens : default_answer_tokens);
}

std::string model_key(std::string_view provider, std::string_view model) {
  std::string key(provider);
  key += '/';
  key += model;
  return key;
}

void QuotaBook::MinuteCounter::add(double amount, Clock::time_point now) {
  const int64_t second = whole_seconds(now);
  const std::size_t slot = static_cast<std::size_t>(second % 60);
  if (slot_second_[slot] != second) {
    slot_second_[slot] = second;
    slots_[slot] = 0;
  }
  slots_[slot] += amount;
}

double QuotaBook::MinuteCounter::total(Clock::time_point now) const {
  const int64_t second = whole_seconds(now);
  double sum = 0;
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    if (second - slot_second_[i] < 60) sum += slots_[i];
  }
  return sum;
}

QuotaBook::QuotaBook(const Clock& clock) : clock_(clock) {}

void QuotaBook::apply_limit(KeyState& state, const QuotaLimit& limit) {
  const Clock::time_point now = clock_.now();
  state.limit = limit;
  const auto set_bucket = [&](std::optional<TokenBucket>& bucket, std::optional<double> per_minute,
                              std::optional<double> burst) {
    if (!per_minute) {
      bucket.reset();
      return;
    }
    const double capacity = burst ? *burst : std::max(1.0, *per_minute / 120.0);
    // The burst is part of the minute's budget: refilling at (limit - burst) per minute keeps
    // every sliding minute within the limit, a cold start included (the bucket starts full).
    // Never below half the limit, so a burst as large as the limit still refills.
    const double rate = std::max(*per_minute - capacity, *per_minute / 2.0) / 60.0;
    if (bucket) {
      bucket->reconfigure(rate, capacity, now);
    } else {
      bucket.emplace(rate, capacity, now);
    }
  };
  set_bucket(state.requests, limit.rpm, limit.burst);
  set_bucket(state.tokens, limit.tpm, limit.token_burst);
}

void QuotaBook::configure(const QuotaConfig& config) {
  config_ = config;
  for (auto it = keys_.begin(); it != keys_.end();) {
    it = config.limits.contains(it->first) ? std::next(it) : keys_.erase(it);
  }
  for (const auto& [key, limit] : config.limits) apply_limit(keys_[key], limit);
}

const QuotaBook::KeyState* QuotaBook::find(std::string_view key) const {
  auto it = keys_.find(key);
  return it == keys_.end() ? nullptr : &it->second;
}

QuotaBook::KeyState* QuotaBook::find(std::string_view key) {
  auto it = keys_.find(key);
  return it == keys_.end() ? nullptr : &it->second;
}

void QuotaBook::block(Admission& admission, Clock::time_point retry_at, std::string why) const {
  if (admission.allowed || retry_at < admission.retry_at) {
    admission.retry_at = retry_at;
    admission.blocked_by = std::move(why);
  }
  admission.allowed = false;
}

void QuotaBook::check_key(std::string_view key, uint64_t tokens, Admission& admission) const {
  const Clock::time_point now = clock_.now();
  const auto at = [now](Clock::duration wait) {
    return wait == Clock::duration::max() ? Clock::time_point::max() : now + wait;
  };
  if (auto pause = pauses_.find(key); pause != pauses_.end() && pause->second.until > now) {
    block(admission, pause->second.until, std::string(key) + " paused: " + pause->second.reason);
  }
  if (auto a = request_allowances_.find(key);
      a != request_allowances_.end() && a->second.until > now && a->second.remaining < 1) {
    block(admission, a->second.until, std::string(key) + " remaining requests 0");
  }
  if (auto a = token_allowances_.find(key); a != token_allowances_.end() && a->second.until > now &&
                                            a->second.remaining < static_cast<double>(tokens)) {
    block(admission, a->second.until, std::string(key) + " remaining tokens");
  }
  const KeyState* state = find(key);
  if (state == nullptr) return;
  if (state->limit.concurrency && state->running >= *state->limit.concurrency) {
    block(admission, Clock::time_point::max(), std::string(key) + " concurrency");
  }
  if (state->requests && !state->requests->can_take(1, now)) {
    block(admission, at(state->requests->wait_for(1, now)), std::string(key) + " rpm");
  }
  const double cost = static_cast<double>(tokens);
  if (state->tokens && !state->tokens->can_take(cost, now)) {
    block(admission, at(state->tokens->wait_for(cost, now)), std::string(key) + " tpm");
  }
}

QuotaBook::Admission QuotaBook::check(std::string_view provider, std::string_view model,
                                      uint64_t tokens) const {
  Admission admission;
  check_key(provider, tokens, admission);
  admission.by_provider = !admission.allowed;
  if (!model.empty()) check_key(model_key(provider, model), tokens, admission);
  return admission;
}

QuotaBook::Ticket QuotaBook::take(std::string_view provider, std::string_view model,
                                  uint64_t tokens) {
  const Clock::time_point now = clock_.now();
  const double cost = static_cast<double>(tokens);
  const auto charge = [&](std::string_view key) {
    if (auto a = request_allowances_.find(key); a != request_allowances_.end())
      a->second.remaining -= 1;
    if (auto a = token_allowances_.find(key); a != token_allowances_.end())
      a->second.remaining -= cost;
    KeyState* state = find(key);
    if (state == nullptr) return;
    ++state->running;
    if (state->requests) state->requests->take(1, now);
    if (state->tokens) state->tokens->take(cost, now);
    state->requests_used.add(1, now);
    state->tokens_used.add(cost, now);
  };
  charge(provider);
  if (!model.empty()) charge(model_key(provider, model));
  return Ticket{std::string(provider), std::string(model), tokens, true};
}

void QuotaBook::settle(Ticket& ticket, std::optional<uint64_t> used_tokens) {
  if (!ticket.held) return;
  ticket.held = false;
  const Clock::time_point now = clock_.now();
  const auto release = [&](std::string_view key) {
    KeyState* state = find(key);
    if (state == nullptr) return;
    if (state->running > 0) --state->running;
    if (!used_tokens) return;
    const double difference =
        static_cast<double>(ticket.tokens) - static_cast<double>(*used_tokens);
    if (state->tokens) {
      // Reserved too much: the rest goes back. Too little: the overrun is charged now, so the
      // average rate still holds.
      if (difference > 0) {
        state->tokens->give_back(difference, now);
      } else {
        state->tokens->take(-difference, now);
      }
    }
    state->tokens_used.add(-difference, now);
  };
  release(ticket.provider);
  if (!ticket.model.empty()) release(model_key(ticket.provider, ticket.model));
}

void QuotaBook::pause(std::string_view key, Clock::duration for_how_long, std::string reason) {
  const Clock::time_point until = clock_.now() + for_how_long;
  Pause& pause = pauses_[std::string(key)];
  // Several workers report the same 429: keep the latest end.
  if (until > pause.until) {
    pause.until = until;
    pause.reason = std::move(reason);
  }
}

void QuotaBook::observe_remaining_requests(std::string_view key, uint64_t remaining,
                                           Clock::duration reset_in) {
  request_allowances_[std::string(key)] = {static_cast<double>(remaining), clock_.now() + reset_in};
}

void QuotaBook::observe_remaining_tokens(std::string_view key, uint64_t remaining,
                                         Clock::duration reset_in) {
  token_allowances_[std::string(key)] = {static_cast<double>(remaining), clock_.now() + reset_in};
}

void QuotaBook::forget_expired() {
  const Clock::time_point now = clock_.now();
  std::erase_if(pauses_, [now](const auto& entry) { return entry.second.until <= now; });
  std::erase_if(request_allowances_,
                [now](const auto& entry) { return entry.second.until <= now; });
  std::erase_if(token_allowances_, [now](const auto& entry) { return entry.second.until <= now; });
}

std::vector<QuotaKeyStatus> QuotaBook::status() const {
  const Clock::time_point now = clock_.now();
  std::map<std::string, QuotaKeyStatus, std::less<>> out;
  for (const auto& [key, state] : keys_) {
    QuotaKeyStatus& s = out[key];
    s.key = key;
    s.limit = state.limit;
    s.running = state.running;
    s.requests_last_minute = state.requests_used.total(now);
    s.tokens_last_minute = std::max(0.0, state.tokens_used.total(now));
  }
  for (const auto& [key, pause] : pauses_) {
    if (pause.until <= now) continue;
    QuotaKeyStatus& s = out[key];
    s.key = key;
    s.paused_ms = to_ms(pause.until - now);
    s.paused_reason = pause.reason;
  }
  std::vector<QuotaKeyStatus> list;
  list.reserve(out.size());
  for (auto& [key, s] : out) list.push_back(std::move(s));
  return list;
}

}  // namespace dispatch::broker
