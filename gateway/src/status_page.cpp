#include "dispatch/gateway/status_page.hpp"

namespace dispatch::gateway {
namespace {

// The page is static: everything live comes from /status.json. Every string from the JSON goes
// into the DOM through textContent (never innerHTML), so a worker id or quota key cannot inject
// markup. The ring of snapshots lives in the page: the broker keeps totals only, and the rates
// over the last minutes are differences between snapshots.
constexpr std::string_view kPage = R"page(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>LLM Dispatcher status</title>
<style>
  :root { color-scheme: light dark; --muted: #6b7280; --line: #d1d5db; --ok: #15803d;
          --warn: #b45309; --bad: #b91c1c; }
  body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2rem 2rem; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; }
  h2 { font-size: 1rem; margin: 1.4rem 0 .4rem; }
  #meta, .note { color: var(--muted); }
  #banner { display: none; padding: .5rem .8rem; margin: .6rem 0; border: 1px solid var(--bad);
            color: var(--bad); border-radius: 4px; }
  .cards { display: flex; flex-wrap: wrap; gap: .8rem; margin-top: .8rem; }
  .card { border: 1px solid var(--line); border-radius: 6px; padding: .5rem .9rem; min-width: 8rem; }
  .card .label { color: var(--muted); font-size: .8rem; }
  .card .value { font-size: 1.4rem; font-variant-numeric: tabular-nums; }
  table { border-collapse: collapse; min-width: 28rem; }
  th, td { text-align: left; padding: .25rem .7rem; border-bottom: 1px solid var(--line); }
  th { font-weight: 600; font-size: .8rem; color: var(--muted); }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .state-ready, .state-closed { color: var(--ok); }
  .state-draining, .state-half_open { color: var(--warn); }
  .state-open { color: var(--bad); font-weight: 600; }
  .empty { color: var(--muted); font-style: italic; }
</style>
</head>
<body>
<h1>LLM Dispatcher status</h1>
<div id="meta">waiting for the first answer from /status.json…</div>
<div id="banner"></div>
<div class="cards">
  <div class="card"><div class="label">workers</div><div class="value" id="worker-count">–</div></div>
  <div class="card"><div class="label">running</div><div class="value" id="in-flight">–</div></div>
  <div class="card"><div class="label">queued</div><div class="value" id="queued-total">–</div></div>
  <div class="card"><div class="label">completed</div><div class="value" id="completed-total">–</div></div>
  <div class="card"><div class="label">failed</div><div class="value" id="failed-total">–</div></div>
  <div class="card"><div class="label">jobs/s, last 1 min</div><div class="value" id="rate-1m">–</div></div>
  <div class="card"><div class="label">jobs/s, last 5 min</div><div class="value" id="rate-5m">–</div></div>
</div>
<h2>Workers</h2>
<div id="workers"></div>
<h2>Queue depth by priority</h2>
<div id="queue"></div>
<h2>Providers</h2>
<div id="providers"></div>
<h2>Quotas and breakers</h2>
<div id="quotas"></div>
<h2>Errors by kind</h2>
<div id="errors"></div>
<h2>Clients</h2>
<div id="clients"></div>
<p class="note">Refreshed every 2 s from <a href="status.json">/status.json</a> (the same
data as <code>dispatch status --json</code>). Rates and recent counts are computed in this page
from the snapshots it has seen, so they cover at most the time it has been open.</p>
<script>
"use strict";
const POLL_MS = 2000;
const KEEP_MS = 5 * 60 * 1000 + 4 * POLL_MS;  // enough snapshots for the 5-minute window
// Snapshots are timed by the broker's uptime, not the browser's clock: a throttled background
// tab (or a headless browser's virtual time) then still gets true rates.
const ring = [];  // {t: broker uptime ms, broker, finished, counters: {kind: total}}

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

// Replaces the contents of #id with a table (cells: strings or {text, cls, num}), or a note.
function table(id, headers, rows, emptyText) {
  const box = document.getElementById(id);
  box.replaceChildren();
  if (rows.length === 0) { box.appendChild(el("div", emptyText, "empty")); return; }
  const t = el("table");
  const head = el("tr");
  for (const h of headers) head.appendChild(el("th", h));
  t.appendChild(head);
  for (const row of rows) {
    const tr = el("tr");
    for (const cell of row) {
      const c = (cell !== null && typeof cell === "object") ? cell : {text: cell};
      const td = el("td", c.text, c.cls || (typeof c.text === "number" ? "num" : ""));
      tr.appendChild(td);
    }
    t.appendChild(tr);
  }
  box.appendChild(t);
}

function setText(id, text) { document.getElementById(id).textContent = String(text); }

function duration(ms) {
  if (ms < 1000) return ms + " ms";
  const s = Math.floor(ms / 1000);
  if (s < 60) return (ms / 1000).toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h" + String(Math.floor(s % 3600 / 60)).padStart(2, "0") + "m";
  return Math.floor(s / 86400) + "d" + String(Math.floor(s % 86400 / 3600)).padStart(2, "0") + "h";
}

function entries(object) { return Object.entries(object || {}); }
function sum(values) { return values.reduce((a, b) => a + b, 0); }

// Every counter an error kind is read from, as one flat {kind: total} map.
function errorCounters(s) {
  const out = {};
  for (const [kind, n] of entries(s.failed_by_kind)) out["failed: " + kind] = n;
  for (const [code, n] of entries(s.broker_errors)) out["ended by the broker: " + code] = n;
  for (const [code, n] of entries(s.rejected)) out["rejected: " + code] = n;
  for (const [name, p] of entries(s.providers)) {
    out[name + ": retried"] = p.retried;
    out[name + ": fell over"] = p.fell_over;
  }
  return out;
}

function finishedOf(s) {
  return sum(Object.values(s.providers || {}).map(p => p.succeeded + p.failed));
}

// The oldest snapshot no older than `windowMs`, and the newest: what a rate is taken between.
function span(windowMs) {
  if (ring.length < 2) return null;
  const newest = ring[ring.length - 1];
  const oldest = ring.find(r => newest.t - r.t <= windowMs) || newest;
  if (oldest === newest) return null;
  return {oldest, newest, seconds: (newest.t - oldest.t) / 1000};
}

function rate(windowMs) {
  const s = span(windowMs);
  if (!s) return "–";
  const perSecond = (s.newest.finished - s.oldest.finished) / s.seconds;
  const covered = s.seconds * 1000 < windowMs - 2 * POLL_MS ? " (" + Math.round(s.seconds) + " s)" : "";
  return perSecond.toFixed(2) + covered;
}

function recent(kind, windowMs) {
  const s = span(windowMs);
  if (!s) return "–";
  return (s.newest.counters[kind] || 0) - (s.oldest.counters[kind] || 0);
}

function remember(s) {
  const now = s.uptime_ms;
  const last = ring[ring.length - 1];
  // A restarted broker starts its counters again: earlier snapshots no longer subtract.
  if (last && (now < last.t || s.broker_id !== last.broker)) ring.length = 0;
  if (last && now === last.t) return;  // the gateway's cached answer again
  ring.push({t: now, broker: s.broker_id, finished: finishedOf(s), counters: errorCounters(s)});
  while (ring.length > 0 && now - ring[0].t > KEEP_MS) ring.shift();
}

function render(s) {
  remember(s);
  setText("meta", "broker " + s.broker_id + " · up " + duration(s.uptime_ms) +
          (s.identity ? " · you are " + s.identity : "") +
          " · updated " + new Date().toLocaleTimeString());
  const banner = document.getElementById("banner");
  banner.style.display = s.insecure ? "block" : "none";
  if (s.insecure) banner.textContent = "This broker runs without CURVE on an endpoint other hosts can reach (--insecure).";

  const workers = s.workers || [];
  const order = ["interactive", "normal", "batch"];
  const rank = level => (order.indexOf(level) + order.length + 1) % (order.length + 1);
  const queue = entries(s.queue_depth).sort((a, b) => rank(a[0]) - rank(b[0]));
  const providers = entries(s.providers);
  setText("worker-count", s.worker_count);
  setText("in-flight", s.in_flight);
  setText("queued-total", sum(queue.map(([, n]) => n)));
  setText("completed-total", sum(providers.map(([, p]) => p.succeeded)));
  setText("failed-total", sum(providers.map(([, p]) => p.failed)));
  setText("rate-1m", rate(60 * 1000));
  setText("rate-5m", rate(5 * 60 * 1000));

  table("workers", ["worker", "state", "running / capacity", "providers", "host", "pid", "heartbeat"],
        workers.map(w => [w.worker_id, {text: w.state, cls: "state-" + w.state},
                          w.in_flight + " / " + w.capacity, (w.providers || []).join(", "),
                          w.host, {text: w.pid, cls: "num"}, duration(w.last_heartbeat_ms_ago) + " ago"]),
        s.worker_count > 0 ? "worker details are shown to admin identities only" : "no worker is registered");

  table("queue", ["priority", "queued"],
        queue.length === 0 ? [] : queue.map(([level, n]) => [level, n])
                                      .concat([["limit (all priorities)", s.queue_limit]]),
        "no queue information (admin identities only)");

  // A provider's breaker: the worst of its quota keys ("provider" and "provider/model").
  const severity = {closed: 0, half_open: 1, open: 2};
  const breakerOf = name => {
    let worst = "closed";
    for (const q of s.quotas || []) {
      if (q.key !== name && !q.key.startsWith(name + "/")) continue;
      if ((severity[q.breaker] || 0) > severity[worst]) worst = q.breaker;
    }
    return worst;
  };
  table("providers", ["provider", "submitted", "succeeded", "failed", "retried", "fell over",
                      "prompt tokens", "completion tokens", "breaker"],
        providers.map(([name, p]) => {
          const breaker = breakerOf(name);
          return [name, p.submitted, p.succeeded, p.failed, p.retried, p.fell_over,
                  p.prompt_tokens, p.completion_tokens, {text: breaker, cls: "state-" + breaker}];
        }),
        "no provider has had a job yet");

  const usedOf = (used, limit) => limit === null || limit === undefined ? String(used) : used + " / " + limit;
  table("quotas", ["key", "requests last min / rpm", "tokens last min / tpm", "running / concurrency",
                   "waiting", "paused", "breaker"],
        (s.quotas || []).map(q => [q.key, usedOf(q.requests_last_minute, q.rpm),
                                   usedOf(q.tokens_last_minute, q.tpm), usedOf(q.running, q.concurrency),
                                   q.waiting,
                                   q.paused_ms === null ? "–" : duration(q.paused_ms) + " (" + q.paused_reason + ")",
                                   {text: q.breaker + (q.breaker_ms === null ? "" : " " + duration(q.breaker_ms)),
                                    cls: "state-" + q.breaker}]),
        "no quota or breaker is configured or active");

  const kinds = entries(ring[ring.length - 1].counters).filter(([, n]) => n > 0);
  table("errors", ["kind", "since the broker started", "last 1 min", "last 5 min"],
        kinds.map(([kind, n]) => [kind, n, recent(kind, 60 * 1000), recent(kind, 5 * 60 * 1000)]),
        "no errors, rejections or retries");

  table("clients", ["client", "queued", "running", "submitted", "succeeded", "failed", "rejected"],
        entries(s.clients).map(([name, c]) => [name, c.queued, c.running, c.submitted, c.succeeded,
                                               c.failed, c.rejected]),
        "no per-client counts (a broker without CURVE and no gateway tenants)");
}

async function poll() {
  const banner = document.getElementById("banner");
  try {
    const response = await fetch("status.json", {cache: "no-store"});
    const body = await response.json();
    if (!response.ok) throw new Error((body.error && body.error.message) || ("HTTP " + response.status));
    render(body);
  } catch (e) {
    banner.style.display = "block";
    banner.textContent = "status unavailable: " + e.message + " (retrying every 2 s)";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}
poll();
</script>
</body>
</html>
)page";

}  // namespace

std::string_view status_page_html() noexcept {
  return kPage;
}

}  // namespace dispatch::gateway
