#include "dispatch/fake_provider/quota.hpp"

#include <algorithm>
#include <ctime>

namespace dispatch::fake_provider {
namespace {

using std::chrono::milliseconds;
constexpr Clock::duration kMinute = std::chrono::minutes(1);
constexpr Clock::duration kSecond = std::chrono::seconds(1);

milliseconds ceil_ms(Clock::duration d) {
  return std::max(milliseconds(0), std::chrono::ceil<milliseconds>(d));
}

}  // namespace

void QuotaLimiter::Window::expire(Clock::time_point now, Clock::duration length) {
  // A charge made exactly `length` ago has left the window (windows are (now - length, now]).
  while (!charges.empty() && charges.front().at + length <= now) {
    tokens -= charges.front().tokens;
    charges.pop_front();
  }
}

QuotaLimiter::QuotaLimiter(QuotaLimits limits, const Clock& clock)
    : limits_(limits), clock_(clock) {}

int64_t QuotaLimiter::per_second(int64_t per_minute) {
  return std::max<int64_t>(1, 2 * per_minute / 60);
}

QuotaState QuotaLimiter::state(const Window& minute, bool tokens, Clock::time_point now) const {
  QuotaState s;
  s.limit = tokens ? limits_.tpm : limits_.rpm;
  const int64_t used = tokens ? minute.tokens : minute.requests();
  s.remaining = std::max<int64_t>(0, s.limit - used);
  if (!minute.charges.empty()) s.reset = ceil_ms(minute.charges.back().at + kMinute - now);
  return s;
}

QuotaDecision QuotaLimiter::admit(const std::string& key, int64_t tokens) {
  QuotaDecision decision;
  if (!enabled()) return decision;
  tokens = std::max<int64_t>(0, tokens);
  std::lock_guard lock(mutex_);
  const Clock::time_point now = clock_.now();
  if (++admissions_since_prune_ >= 1024) prune_idle(now);
  KeyState& k = keys_[key];
  k.minute.expire(now, kMinute);
  k.second.expire(now, kSecond);

  // Each window's wait, from the same snapshot; the largest is when all have room.
  Clock::duration wait = Clock::duration::zero();
  bool never = false;
  // Requests: every charge counts one.
  const auto request_wait = [&](const Window& w, int64_t limit, Clock::duration length) {
    if (w.requests() + 1 <= limit) return Clock::duration::zero();
    // The (requests - limit + 1)th oldest charge must leave.
    const size_t must_leave = static_cast<size_t>(w.requests() - limit);
    return std::max(Clock::duration::zero(), w.charges[must_leave].at + length - now);
  };
  // Tokens: charges leave oldest first until the new one fits.
  const auto token_wait = [&](const Window& w, int64_t limit, bool empty_is_enough,
                              Clock::duration length) -> std::optional<Clock::duration> {
    if (w.tokens + tokens <= limit) return Clock::duration::zero();
    if (!empty_is_enough && tokens > limit) return std::nullopt;
    int64_t left = w.tokens;
    for (const Charge& c : w.charges) {
      left -= c.tokens;
      if (left + tokens <= limit || (empty_is_enough && left == 0)) {
        return std::max(Clock::duration::zero(), c.at + length - now);
      }
    }
    return Clock::duration::zero();
  };

  if (limits_.rpm > 0) {
    const Clock::duration m = request_wait(k.minute, limits_.rpm, kMinute);
    const Clock::duration s = request_wait(k.second, per_second(limits_.rpm), kSecond);
    if (m > Clock::duration::zero() || s > Clock::duration::zero()) {
      decision.requests_exceeded = true;
      wait = std::max({wait, m, s});
    }
  }
  if (limits_.tpm > 0) {
    const auto m = token_wait(k.minute, limits_.tpm, false, kMinute);
    const auto s = token_wait(k.second, per_second(limits_.tpm), true, kSecond);
    if (!m || *m > Clock::duration::zero() || *s > Clock::duration::zero()) {
      decision.tokens_exceeded = true;
      if (!m) never = true;
      wait = std::max({wait, m.value_or(Clock::duration::zero()), *s});
    }
  }
  decision.admitted = !decision.requests_exceeded && !decision.tokens_exceeded;
  if (decision.admitted) {
    decision.ticket = next_ticket_++;
    const Charge charge{now, decision.ticket, tokens};
    k.minute.charges.push_back(charge);
    k.minute.tokens += tokens;
    k.second.charges.push_back(charge);
    k.second.tokens += tokens;
  } else {
    decision.retry_after = never ? std::chrono::duration_cast<milliseconds>(kMinute)
                                 : std::max(milliseconds(1), ceil_ms(wait));
  }
  if (limits_.rpm > 0) decision.requests = state(k.minute, false, now);
  if (limits_.tpm > 0) decision.tokens = state(k.minute, true, now);
  return decision;
}

void QuotaLimiter::reconcile(const std::string& key, uint64_t ticket, int64_t tokens) {
  if (limits_.tpm <= 0) return;
  tokens = std::max<int64_t>(0, tokens);
  std::lock_guard lock(mutex_);
  const auto it = keys_.find(key);
  if (it == keys_.end()) return;
  // Tickets grow with time, so each window is sorted by ticket.
  for (Window* w : {&it->second.minute, &it->second.second}) {
    const auto charge = std::lower_bound(w->charges.begin(), w->charges.end(), ticket,
                                         [](const Charge& c, uint64_t t) { return c.ticket < t; });
    if (charge == w->charges.end() || charge->ticket != ticket) continue;
    w->tokens += tokens - charge->tokens;
    charge->tokens = tokens;
  }
}

void QuotaLimiter::clear() {
  std::lock_guard lock(mutex_);
  keys_.clear();
}

size_t QuotaLimiter::tracked_keys() {
  std::lock_guard lock(mutex_);
  prune_idle(clock_.now());
  return keys_.size();
}

// Keys whose last charge has left the minute window hold nothing worth keeping: a client that
// tries many keys must not grow the map for ever.
void QuotaLimiter::prune_idle(Clock::time_point now) {
  admissions_since_prune_ = 0;
  for (auto it = keys_.begin(); it != keys_.end();) {
    it->second.minute.expire(now, kMinute);
    it = it->second.minute.charges.empty() ? keys_.erase(it) : std::next(it);
  }
}

std::string go_duration(std::chrono::milliseconds duration) {
  int64_t ms = std::max<int64_t>(0, duration.count());
  if (ms == 0) return "0s";
  if (ms < 1000) return std::to_string(ms) + "ms";
  std::string out;
  const int64_t hours = ms / 3'600'000;
  ms %= 3'600'000;
  const int64_t minutes = ms / 60'000;
  ms %= 60'000;
  if (hours > 0) out += std::to_string(hours) + "h";
  if (hours > 0 || minutes > 0) out += std::to_string(minutes) + "m";
  out += std::to_string(ms / 1000);
  if (const int64_t frac = ms % 1000; frac != 0) {
    std::string digits = std::to_string(frac);
    digits.insert(0, 3 - digits.size(), '0');
    while (digits.back() == '0') digits.pop_back();
    out += "." + digits;
  }
  return out + "s";
}

std::vector<std::pair<std::string, std::string>> quota_headers(const QuotaDecision& decision,
                                                               bool anthropic,
                                                               int64_t now_unix_ms) {
  std::vector<std::pair<std::string, std::string>> headers;
  const auto rfc3339 = [](int64_t unix_ms) {
    const std::time_t seconds = static_cast<std::time_t>((unix_ms + 999) / 1000);
    std::tm tm{};
    gmtime_r(&seconds, &tm);
    char text[32];
    std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return std::string(text);
  };
  const auto add = [&](const std::optional<QuotaState>& state, const std::string& what) {
    if (!state) return;
    headers.emplace_back("x-ratelimit-limit-" + what, std::to_string(state->limit));
    headers.emplace_back("x-ratelimit-remaining-" + what, std::to_string(state->remaining));
    headers.emplace_back("x-ratelimit-reset-" + what, go_duration(state->reset));
    if (anthropic) {
      headers.emplace_back("anthropic-ratelimit-" + what + "-limit", std::to_string(state->limit));
      headers.emplace_back("anthropic-ratelimit-" + what + "-remaining",
                           std::to_string(state->remaining));
      headers.emplace_back("anthropic-ratelimit-" + what + "-reset",
                           rfc3339(now_unix_ms + state->reset.count()));
    }
  };
  add(decision.requests, "requests");
  add(decision.tokens, "tokens");
  if (!decision.admitted) {
    const int64_t ms = decision.retry_after.count();
    headers.emplace_back("retry-after", std::to_string(std::max<int64_t>(1, (ms + 999) / 1000)));
    headers.emplace_back("retry-after-ms", std::to_string(ms));
  }
  return headers;
}

}  // namespace dispatch::fake_provider
