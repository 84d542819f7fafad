#!/usr/bin/env python3
"""Soak test of issue 11 (run by scripts/soak; figures in BENCHMARKS.md, "Soak"; not in CI).

Starts a fake provider, one broker and K workers on 127.0.0.1 (ephemeral ports), drives a mixed
load for --minutes with dispatch-loadgen, restarts one worker (SIGTERM, then a new one) every
minute, and samples VmRSS of the broker and every worker every 5 s. The load, in lanes that run
side by side, each a sequence of dispatch-loadgen runs (open loop, a share of --rate):

  plain   35 %  non-streamed answers (provider `openai`)
  stream  30 %  streamed answers, ~12 chunks 30 ms apart
  faults  30 %  the fake provider's scripted faults, one kind per 15-s run in rotation (500s,
                429s with retry-after, connection resets, streams cut / broken / malformed
                mid-way, a slow first token), through a second provider `faulty` whose
                circuit breaker never opens (an always-failing model would otherwise keep its
                circuit open and its jobs waiting at the broker rather than meeting the fault)
  cancel   5 %  20-s streams; each 10-s run ends with its jobs still running, and the client
                library cancels them when the loadgen shuts its clients down (the `dispatch`
                CLI has no cancel: Ctrl-C just ends the process)

The broker keeps finished results for --result-ttl-s (60 s here, 5 min by default), so its RSS
rises for that long by design: runs shorter than 5 minutes judge a store still filling.
The last worker slot is the restarted one; the broker and the other workers live the whole run
and are the ones judged: RSS after the warm-up (the first 20 % of the run or 2 min, whichever
is less) against RSS at the end (medians of 30 s of samples each); growth above --max-growth-pct
(5) or any process that died (or exited non-zero on SIGTERM) fails the run (exit 1).

Writes rss.csv, summary.json and the logs under bench-results/soak-DATE/ and prints the summary.
Only the Python standard library. Every process it starts is stopped by PID, also on Ctrl-C.
"""

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHILDREN = []  # every process started here, stopped in reverse order at exit
CHILDREN_LOCK = threading.Lock()
STOP = threading.Event()  # set when the run ends (time up, Ctrl-C, a crash)

FAULTS = [  # (kind, directives, streamed)
    ("status_500", "status=500", False),
    ("status_429", "status=429~retry_after_ms=50", False),
    ("reset", "reset", False),
    ("cut_mid_stream", "cut_after=3", True),
    ("error_mid_stream", "error_mid_stream=2", True),
    ("malformed_event", "malformed_at=2", True),
    ("slow_first_token", "first_token_ms=1500", True),
]


def log(message):
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def start(argv, log_path, stdout_pipe=False, env=None):
    with CHILDREN_LOCK:
        if STOP.is_set() and argv[0].endswith("dispatch-loadgen"):
            return None  # the run is over: no new load
        log_file = open(log_path, "ab")
        process = subprocess.Popen(argv, stdout=subprocess.PIPE if stdout_pipe else log_file,
                                   stderr=log_file, stdin=subprocess.DEVNULL, env=env)
        log_file.close()  # the child holds its own descriptor
        CHILDREN.append(process)
    return process


def stop(process, timeout_s=15):
    """SIGTERM, wait, SIGKILL if ignored; returns the exit code."""
    if process.poll() is None:
        try:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log(f"pid {process.pid} ignored SIGTERM for {timeout_s} s; killing it")
            process.kill()
            process.wait(timeout=timeout_s)
    with CHILDREN_LOCK:
        if process in CHILDREN:
            CHILDREN.remove(process)
    return process.returncode


def stop_all():
    with CHILDREN_LOCK:
        remaining = list(CHILDREN)
    for process in reversed(remaining):
        try:
            stop(process, timeout_s=10)
        except Exception as e:  # keep stopping the others
            log(f"stopping pid {process.pid}: {e}")


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def rss_kb(pid):
    """(VmRSS, RssAnon, RssFile) in KiB, or None when the process is gone. RssFile is mostly
    code and libraries paged in as new paths run; RssAnon is the heap, stacks and buffers."""
    fields = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "RssAnon", "RssFile"):
                    fields[name] = int(value.split()[0])
    except OSError:
        return None
    if "VmRSS" not in fields:
        return None
    return fields["VmRSS"], fields.get("RssAnon", 0), fields.get("RssFile", 0)


class Soak:
    def __init__(self, args):
        self.args = args
        self.bin = os.path.join(args.build, "bin")
        self.out = args.out
        self.logs = os.path.join(self.out, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.lock = threading.Lock()
        self.crashes = []  # text per process that died or exited badly
        self.lanes = {}  # lane/kind -> {"runs", "jobs", "ok", "failed", "errors": {...}}
        self.restarts = 0
        self.samples = []  # (t_s, name, pid, rss_kb, anon_kb, file_kb)
        self.workers = []  # slot -> Popen
        self.began = None

    def binary(self, name):
        path = os.path.join(self.bin, name)
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"{path} is missing (scripts/soak builds it)")
        return path

    def elapsed(self):
        return time.monotonic() - self.began

    # -- the processes under test ----------------------------------------------------------------

    def first_line(self, process, name, timeout_s=15):
        result = []
        reader = threading.Thread(target=lambda: result.append(process.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(timeout_s)
        if not result or not result[0]:
            raise RuntimeError(f"{name} printed no first line within {timeout_s} s; see logs/")
        # Keep draining stdout so the child never blocks on a full pipe.
        threading.Thread(target=lambda: process.stdout.read(), daemon=True).start()
        return result[0].decode().strip()

    def start_stack(self):
        self.fake = start([self.binary("fake-provider"), "--listen", "127.0.0.1:0", "--quiet"],
                          os.path.join(self.logs, "fake-provider.log"), stdout_pipe=True)
        port = int(self.first_line(self.fake, "fake-provider"))
        self.broker = start([self.binary("dispatch-broker"), "--frontend", "tcp://127.0.0.1:0",
                             "--backend", "tcp://127.0.0.1:0", "--log-level", "warn",
                             "--result-ttl-ms", str(int(self.args.result_ttl_s * 1000))],
                            os.path.join(self.logs, "broker.log"), stdout_pipe=True)
        banner = self.first_line(self.broker, "dispatch-broker")
        match = re.search(r"frontend=(\S+) backend=(\S+)", banner)
        if not match:
            raise RuntimeError(f"unexpected broker banner: {banner!r}")
        self.frontend, self.backend = match.group(1), match.group(2)
        self.worker_config = os.path.join(self.out, "worker.yaml")
        base = f"http://127.0.0.1:{port}/v1"
        with open(self.worker_config, "w") as out:
            out.write("defaults: {retry_count: 1}\nproviders:\n"
                      f"  openai: {{type: openai, base_url: \"{base}\", api_key_env: FAKE_KEY}}\n"
                      f"  faulty: {{type: openai, base_url: \"{base}\", api_key_env: FAKE_KEY,\n"
                      # Every fault kind fails all its calls: with the breaker on, its circuit
                      # would stay open and its jobs would wait at the broker instead of
                      # meeting their fault; so this provider's breaker never opens.
                      "    breaker: {failures: 1000000000, window: 1000000000}}\n")
        for slot in range(self.args.workers):
            self.workers.append(self.start_worker(slot))
        self.wait_for_workers(self.args.workers)

    def start_worker(self, slot):
        return start([self.binary("dispatch-worker"), "--broker", self.backend, "--config",
                      self.worker_config, "--log-level", "warn", "--drain-timeout-ms",
                      str(self.args.worker_drain_ms)],
                     os.path.join(self.logs, f"worker-{slot}.log"),
                     env=dict(os.environ, FAKE_KEY="sk-soak"))

    def wait_for_workers(self, count, timeout_s=30):
        deadline = time.monotonic() + timeout_s
        seen = -1
        while time.monotonic() < deadline:
            reply = subprocess.run([self.binary("dispatch"), "status", "--broker", self.frontend,
                                    "--json", "--timeout-ms", "2000"],
                                   capture_output=True, text=True, timeout=10)
            if reply.returncode == 0:
                seen = len(json.loads(reply.stdout).get("workers", []))
                if seen >= count:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"only {seen} of {count} workers registered within {timeout_s} s")

    def crashed(self, text):
        with self.lock:
            self.crashes.append(f"{time.strftime('%H:%M:%S')} {text}")
        log(f"CRASH: {text}")

    def check_alive(self):
        for name, process in [("fake-provider", self.fake), ("broker", self.broker)] + [
                (f"worker-{slot}", p) for slot, p in enumerate(self.workers)]:
            if process.poll() is not None:
                self.crashed(f"{name} (pid {process.pid}) exited with {process.returncode}")
                return False
        return True

    # -- the load --------------------------------------------------------------------------------

    def record(self, lane, result):
        r = result["results"]
        with self.lock:
            entry = self.lanes.setdefault(lane, {"runs": 0, "jobs": 0, "ok": 0, "failed": 0,
                                                 "errors": {}})
            entry["runs"] += 1
            entry["jobs"] += r["jobs"]
            entry["ok"] += r["ok"]
            entry["failed"] += r["failed"]
            for kind, count in r.get("errors", {}).items():
                entry["errors"][kind] = entry["errors"].get(kind, 0) + count

    def loadgen(self, lane, provider, model, stream, rate, seconds, retry_count, timeout_ms,
                drain_ms):
        jobs = max(1, int(rate * seconds))
        path = os.path.join(self.out, "loadgen",
                            f"{lane.replace('/', '-')}-{int(self.elapsed())}.json")
        argv = [self.binary("dispatch-loadgen"), "--target", "dispatch", "--broker",
                self.frontend, "--provider", provider, "--model", model, "--rate", str(rate),
                "--jobs", str(jobs), "--retry-count", str(retry_count), "--timeout-ms",
                str(timeout_ms), "--drain-ms", str(drain_ms), "--max-in-flight", "2000",
                "--sample-ms", "1000", "--label", lane, "-o", path]
        if stream:
            argv.append("--stream")
        process = start(argv, os.path.join(self.logs, "loadgen.log"))
        if process is None:
            return
        process.wait()
        with CHILDREN_LOCK:
            if process in CHILDREN:
                CHILDREN.remove(process)
        if process.returncode != 0 or not os.path.exists(path):
            if not STOP.is_set():
                log(f"loadgen {lane} exited with {process.returncode}; see logs/loadgen.log")
                self.record(lane, {"results": {"jobs": jobs, "ok": 0, "failed": jobs,
                                               "errors": {"loadgen_failed": jobs}}})
            return
        with open(path) as f:
            self.record(lane, json.load(f))

    def lane(self, name, share, run_s, end, **kwargs):
        rate = max(0.5, self.args.rate * share)
        # --client-run-s: fewer, longer-lived client connections (to tell per-connection state
        # in the broker from per-job state).
        run_s = self.args.client_run_s or run_s
        turn = 0
        while not STOP.is_set():
            remaining = end - time.monotonic()
            if remaining < 2:
                return
            if name == "faults":
                kind, directives, stream = FAULTS[turn % len(FAULTS)]
                turn += 1
                self.loadgen(f"faults/{kind}", "faulty", f"gpt-4o-mini~{directives}", stream,
                             rate, min(run_s, remaining), retry_count=1, timeout_ms=20000,
                             drain_ms=25000)
            else:
                self.loadgen(name, "openai", kwargs["model"], kwargs["stream"], rate,
                             min(run_s, remaining), retry_count=1,
                             timeout_ms=kwargs.get("timeout_ms", 20000),
                             drain_ms=kwargs.get("drain_ms", 25000))

    # -- restarts and samples --------------------------------------------------------------------

    def restart_worker(self):
        slot = len(self.workers) - 1
        old = self.workers[slot]
        code = stop(old, timeout_s=self.args.worker_drain_ms / 1000 + 15)
        if code != 0:
            self.crashed(f"worker-{slot} (pid {old.pid}) exited with {code} on SIGTERM")
        self.workers[slot] = self.start_worker(slot)
        self.restarts += 1
        log(f"restarted worker-{slot}: pid {old.pid} (exit {code}) -> {self.workers[slot].pid}")

    def sample(self):
        t = round(self.elapsed(), 1)
        rows = [("broker", self.broker.pid)]
        rows += [(f"worker-{slot}", p.pid) for slot, p in enumerate(self.workers)]
        rows.append(("fake-provider", self.fake.pid))
        with self.lock:
            for name, pid in rows:
                kb = rss_kb(pid)
                if kb is not None:
                    self.samples.append((t, name, pid) + kb)
                    # Written as it goes: an interrupted run keeps its samples.
                    with open(os.path.join(self.out, "rss.csv"), "a") as csv:
                        if csv.tell() == 0:
                            csv.write("t_s,process,pid,rss_kb,anon_kb,file_kb\n")
                        csv.write(f"{t},{name},{pid},{kb[0]},{kb[1]},{kb[2]}\n")

    def run(self):
        args = self.args
        os.makedirs(os.path.join(self.out, "loadgen"), exist_ok=True)
        self.start_stack()
        log(f"broker {self.broker.pid}, workers {[p.pid for p in self.workers]}, fake "
            f"{self.fake.pid}; {args.minutes} min at {args.rate} jobs/s; results in {self.out}")
        self.began = time.monotonic()
        duration = args.minutes * 60
        end = self.began + duration
        lanes = [
            threading.Thread(target=self.lane, args=("plain", 0.35, 30, end),
                             kwargs={"model": "gpt-4o-mini~latency_ms=20", "stream": False}),
            threading.Thread(target=self.lane, args=("stream", 0.30, 30, end),
                             kwargs={"model": "gpt-4o-mini~chunk_delay_ms=30~tokens=12",
                                     "stream": True}),
            threading.Thread(target=self.lane, args=("faults", 0.30, 15, end)),
            # Streams of 20 s in runs of 10 s with a 0.5-s drain: every job is still running
            # when its run ends, and shutting the clients down cancels it.
            threading.Thread(target=self.lane, args=("cancel", 0.05, 10, end),
                             kwargs={"model": "gpt-4o-mini~chunk_delay_ms=500~tokens=40",
                                     "stream": True, "timeout_ms": 60000, "drain_ms": 500}),
        ]
        for thread in lanes:
            thread.start()
        next_sample = self.began
        next_restart = self.began + 60
        try:
            while time.monotonic() < end and not STOP.is_set():
                now = time.monotonic()
                if now >= next_sample:
                    self.sample()
                    next_sample += args.sample_s
                if now >= next_restart:
                    self.restart_worker()
                    next_restart += 60
                if not self.check_alive():
                    break
                time.sleep(0.2)
        except BaseException:  # Ctrl-C: stop the loadgens now rather than wait for their runs
            STOP.set()
            stop_all()
            raise
        finally:
            STOP.set()
            self.sample()
            load_end = self.elapsed()
            for thread in lanes:
                thread.join(timeout=60)
        self.final_exits()
        return self.summarize(duration, load_end)

    def final_exits(self):
        for name, process in [(f"worker-{slot}", p) for slot, p in enumerate(self.workers)] + [
                ("broker", self.broker), ("fake-provider", self.fake)]:
            was_running = process.poll() is None
            code = stop(process)
            if was_running and code != 0:
                self.crashed(f"{name} (pid {process.pid}) exited with {code} on SIGTERM")

    # -- the verdict -----------------------------------------------------------------------------

    def summarize(self, duration, load_end):
        args = self.args
        warmup = min(0.2 * duration, 120.0)
        window = 30.0
        judged = ["broker"] + [f"worker-{slot}" for slot in range(len(self.workers) - 1)]
        processes = {}
        for name in judged + [f"worker-{len(self.workers) - 1}", "fake-provider"]:
            rows = [(t, kb, anon, file) for t, n, _pid, kb, anon, file in self.samples if n == name]
            # The two windows never overlap: a run too short for both is not judged.
            after = [r for r in rows if warmup <= r[0] < min(warmup + window, load_end - window)]
            final = [r for r in rows if load_end - window <= r[0]]
            entry = {"judged": name in judged, "samples": len(rows),
                     "peak_kb": max((r[1] for r in rows), default=None)}
            if after and final:
                # VmRSS is judged; its anonymous and file-backed parts are reported beside it.
                for key, column in (("", 1), ("anon_", 2), ("file_", 3)):
                    start = int(statistics.median(r[column] for r in after))
                    end = int(statistics.median(r[column] for r in final))
                    entry[f"{key}after_warmup_kb"] = start
                    entry[f"{key}end_kb"] = end
                    if start > 0:
                        entry[f"{key}growth_pct"] = round(100.0 * (end - start) / start, 2)
            if name == f"worker-{len(self.workers) - 1}":
                entry["note"] = "restarted every minute: RSS restarts with each process"
            processes[name] = entry
        failures = list(self.crashes)
        for name in judged:
            growth = processes[name].get("growth_pct")
            if growth is None:
                failures.append(f"{name}: run too short to judge (needs the warm-up + 60 s)")
            elif growth > args.max_growth_pct:
                failures.append(f"{name}: RSS grew {growth} % > {args.max_growth_pct} %")
        totals = {"jobs": 0, "ok": 0, "failed": 0}
        for entry in self.lanes.values():
            for key in totals:
                totals[key] += entry[key]
        return {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": " ".join(["scripts/soak"] + sys.argv[1:]),
            "minutes": args.minutes, "workers": args.workers, "rate": args.rate,
            "load_s": round(load_end, 1), "warmup_s": warmup, "window_s": window,
            "worker_restarts": self.restarts, "jobs": totals, "lanes": self.lanes,
            "rss": processes, "max_growth_pct": args.max_growth_pct,
            "crashes": self.crashes, "failures": failures,
            "verdict": "pass" if not failures else "fail",
        }


def print_summary(summary):
    out = sys.stdout
    j = summary["jobs"]
    print(f"soak: {summary['load_s']} s of load, {summary['worker_restarts']} worker restarts, "
          f"{summary['workers']} workers, {summary['rate']} jobs/s offered", file=out)
    print(f"jobs: sent {j['jobs']}, succeeded {j['ok']}, failed {j['failed']}", file=out)
    print(f"{'lane / kind':<28}{'sent':>8}{'ok':>8}{'failed':>8}  errors", file=out)
    for lane in sorted(summary["lanes"]):
        e = summary["lanes"][lane]
        errors = ", ".join(f"{k} {v}" for k, v in sorted(e["errors"].items()))
        print(f"{lane:<28}{e['jobs']:>8}{e['ok']:>8}{e['failed']:>8}  {errors}", file=out)
    print(f"RSS (MiB; medians of {summary['window_s']:.0f} s after a {summary['warmup_s']:.0f}-s "
          f"warm-up and at the end):", file=out)
    for name, e in summary["rss"].items():
        if "growth_pct" in e:
            print(f"  {name:<16}{e['after_warmup_kb'] / 1024:>8.1f} -> {e['end_kb'] / 1024:>8.1f}"
                  f"  {e['growth_pct']:+.2f} %{'' if e['judged'] else '  (not judged)'}"
                  f"   [anon {e['anon_after_warmup_kb'] / 1024:.1f} -> {e['anon_end_kb'] / 1024:.1f},"
                  f" file {e['file_after_warmup_kb'] / 1024:.1f} -> {e['file_end_kb'] / 1024:.1f}]",
                  file=out)
        else:
            print(f"  {name:<16} too few samples", file=out)
    for failure in summary["failures"]:
        print(f"FAIL: {failure}", file=out)
    print(f"verdict: {summary['verdict'].upper()} (RSS growth <= {summary['max_growth_pct']} % "
          f"for the broker and the workers not restarted, no crash)", file=out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--workers", type=int, default=2,
                        help="the last one is restarted every minute (at least 2)")
    parser.add_argument("--rate", type=float, default=40, help="jobs per second, all lanes")
    parser.add_argument("--build", default=os.path.join(ROOT, "build-ci"))
    parser.add_argument("--out", default=None,
                        help="results directory (default bench-results/soak-DATE-TIME)")
    parser.add_argument("--sample-s", type=float, default=5)
    parser.add_argument("--max-growth-pct", type=float, default=5)
    # The broker keeps finished results this long for deduplication (5 min by default), so its
    # RSS climbs for that long by design; 60 s lets the result store reach its steady size
    # within the warm-up of a run of 5 minutes or more.
    parser.add_argument("--result-ttl-s", type=float, default=60,
                        help="the broker's --result-ttl-ms, in seconds")
    parser.add_argument("--client-run-s", type=float, default=0,
                        help="how long each dispatch-loadgen run (one client connection) lasts; "
                             "0: the lanes' own 30/30/15/10 s (~500 connections in 30 min)")
    parser.add_argument("--worker-drain-ms", type=int, default=5000,
                        help="the workers' --drain-timeout-ms (a restart waits at most this)")
    args = parser.parse_args()
    if args.workers < 2:
        parser.error("--workers must be at least 2 (one is restarted, the others are judged)")
    if args.minutes <= 0 or args.rate <= 0:
        parser.error("--minutes and --rate must be positive")
    args.out = args.out or os.path.join(ROOT, "bench-results",
                                        time.strftime("soak-%Y%m%d-%H%M%S", time.gmtime()))
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    soak = Soak(args)
    try:
        summary = soak.run()
    except RuntimeError as e:
        log(f"error: {e}")
        return 2
    finally:
        STOP.set()
        stop_all()
    with open(os.path.join(args.out, "summary.json"), "w") as out:
        json.dump(summary, out, indent=1)
    print_summary(summary)
    print(f"results: {args.out}/summary.json, rss.csv, logs/")
    return 0 if summary["verdict"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
