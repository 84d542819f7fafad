#pragma once

// GET /status: one self-contained HTML page (inline CSS and JS, no external assets) that polls
// GET /status.json every 2 s and renders workers, queue depth by priority, providers with their
// breaker and quota state, and throughput and error counts over the last 1 and 5 minutes,
// computed in the page from successive counter snapshots.

#include <string_view>

namespace dispatch::gateway {

std::string_view status_page_html() noexcept;

}  // namespace dispatch::gateway
