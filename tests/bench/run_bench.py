#!/usr/bin/env python3
"""Benchmarks of issue 7, run by scripts/bench (see BENCHMARKS.md for what each part means).

Starts real processes on 127.0.0.1 (fake-provider, dispatch-broker, dispatch-worker, the
Portkey gateway), drives them with dispatch-loadgen, writes one JSON file per run plus
summary.json into the results directory, and rewrites the generated sections of BENCHMARKS.md
(between `<!-- BEGIN bench:NAME -->` and `<!-- END bench:NAME -->`; text outside the markers is
kept). Every process it starts is stopped by PID on exit, whatever the exit.

Only the Python standard library is used.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEER_PACKAGE = os.path.join(ROOT, "tests", "bench", "peer", "package.json")

# Everything started here, stopped in reverse order at exit.
CHILDREN = []


def log(message):
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Child:
    """A process we started; its stderr (and stdout after the first line) go to `log_path`."""

    def __init__(self, name, argv, log_path, env=None, first_line=False):
        self.name = name
        self.argv = argv
        self.log_file = open(log_path, "ab")
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE if first_line else self.log_file,
            stderr=self.log_file,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        self.pid = self.proc.pid
        CHILDREN.append(self)

    def read_first_line(self, timeout_s=15):
        deadline = time.monotonic() + timeout_s
        data = b""
        while time.monotonic() < deadline and b"\n" not in data:
            if self.proc.poll() is not None:
                break
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                data += chunk
        if b"\n" not in data:
            raise RuntimeError(f"{self.name} printed no first line within {timeout_s} s "
                               f"(exit {self.proc.poll()}); see {self.log_file.name}")
        line, rest = data.split(b"\n", 1)
        self.log_file.write(rest)
        # Keep draining stdout so the child never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()
        return line.decode().strip()

    def _drain(self):
        for chunk in iter(lambda: os.read(self.proc.stdout.fileno(), 65536), b""):
            self.log_file.write(chunk)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout_s=10):
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.pid}) ignored SIGTERM; killing")
                self.proc.kill()
                self.proc.wait(timeout=timeout_s)
        if self in CHILDREN:
            CHILDREN.remove(self)
        self.log_file.close()


def stop_all():
    for child in reversed(list(CHILDREN)):
        try:
            child.stop(timeout_s=5)
        except Exception as e:  # keep stopping the others
            log(f"stopping {child.name}: {e}")


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get_json(url, timeout_s=5):
    with urllib.request.urlopen(url, timeout=timeout_s) as reply:
        return json.loads(reply.read())


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# ----------------------------------------------------------------------------------------------
# The processes under test


class Bench:
    def __init__(self, args):
        self.args = args
        self.bin = os.path.join(args.build_dir, "bin")
        self.out = args.out
        self.logs = os.path.join(self.out, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.summary = {}
        self.run_counter = 0
        self.stage = "setup"

    def log_path(self, name):
        return os.path.join(self.logs, f"{self.stage}-{name}.log")

    def binary(self, name):
        path = os.path.join(self.bin, name)
        if not os.access(path, os.X_OK):
            raise RuntimeError(f"{path} is missing: build it (scripts/bench builds it unless --no-build)")
        return path

    def start_fake(self, threads=None):
        threads = threads or self.args.fake_threads
        child = Child("fake-provider",
                      [self.binary("fake-provider"), "--listen", "127.0.0.1:0", "--quiet",
                       "--threads", str(threads)],
                      self.log_path("fake-provider"), first_line=True)
        child.port = int(child.read_first_line())
        child.base = f"http://127.0.0.1:{child.port}"
        return child

    def start_broker(self, extra=()):
        child = Child("broker",
                      [self.binary("dispatch-broker"), "--frontend", "tcp://127.0.0.1:0",
                       "--backend", "tcp://127.0.0.1:0", *extra],
                      self.log_path("broker"), first_line=True)
        line = child.read_first_line()
        match = re.search(r"frontend=(\S+) backend=(\S+)", line)
        if not match:
            raise RuntimeError(f"unexpected broker banner: {line!r}")
        child.frontend, child.backend = match.group(1), match.group(2)
        return child

    def start_workers(self, broker, fake, count, concurrency, extra=(), stream_upstream=True):
        config = os.path.join(self.out, f"worker-{fake.port}-{int(stream_upstream)}.yaml")
        provider_extra = "" if stream_upstream else ", stream_upstream: false"
        with open(config, "w") as f:
            f.write("defaults:\n"
                    "  timeout_ms: 120000\n"
                    "  first_token_timeout_ms: 60000\n"
                    "  idle_timeout_ms: 60000\n"
                    "providers:\n"
                    f"  openai: {{type: openai, base_url: \"{fake.base}/v1\", api_key_env: FAKE_KEY"
                    f"{provider_extra}}}\n")
        env = dict(os.environ, FAKE_KEY="sk-bench")
        workers = []
        for i in range(count):
            workers.append(Child(f"worker-{i}",
                                 [self.binary("dispatch-worker"), "--broker", broker.backend,
                                  "--config", config, "--concurrency", str(concurrency), *extra],
                                 self.log_path(f"worker-{i}"), env=env))
        self.wait_for_workers(broker, count)
        return workers

    def wait_for_workers(self, broker, count, timeout_s=20):
        deadline = time.monotonic() + timeout_s
        seen = -1
        while time.monotonic() < deadline:
            reply = subprocess.run([self.binary("dispatch"), "status", "--broker", broker.frontend,
                                    "--json", "--timeout-ms", "2000",
                                    *getattr(broker, "client_keys", [])],
                                   capture_output=True, text=True, timeout=10)
            if reply.returncode == 0:
                seen = len(json.loads(reply.stdout).get("workers", []))
                if seen >= count:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"only {seen} of {count} workers registered within {timeout_s} s")

    def start_peer(self, fake):
        entry = os.path.join(self.args.peer_dir, "node_modules", "@portkey-ai", "gateway",
                             "build", "start-server.js")
        if not os.path.exists(entry):
            raise RuntimeError(f"Portkey gateway not installed at {entry}")
        port = free_port()
        child = Child("portkey", ["node", entry, f"--port={port}", "--headless"],
                      self.log_path("portkey"))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if not child.alive():
                    raise RuntimeError("Portkey gateway exited; see logs/portkey.log")
                time.sleep(0.2)
        else:
            raise RuntimeError("Portkey gateway did not answer within 30 s")
        child.url = f"http://127.0.0.1:{port}/v1/chat/completions"
        # As Portkey documents for an OpenAI-compatible upstream: provider + custom host.
        child.headers = ["x-portkey-provider: openai",
                         f"x-portkey-custom-host: {fake.base}/v1"]
        return child

    # ------------------------------------------------------------------------------------------
    # One loadgen run

    def settle(self, children, idle_cores=0.05, timeout_s=30):
        """Waits until the processes under test are idle (a run may leave an overloaded peer
        working through its backlog), so that one run's tail does not land in the next."""
        tick = os.sysconf("SC_CLK_TCK")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            before = {c.pid: cpu_ticks(c.pid) for c in children}
            time.sleep(0.3)
            busy = [c.name for c in children
                    if cpu_ticks(c.pid) is not None and before[c.pid] is not None
                    and (cpu_ticks(c.pid) - before[c.pid]) / tick / 0.3 > idle_cores]
            if not busy:
                return
        log(f"still busy after {timeout_s} s: {busy}")

    def loadgen(self, name, target, load, watch, timeout_s):
        self.settle(list(watch.values()))
        self.run_counter += 1
        path = os.path.join(self.out, f"{self.run_counter:03d}-{name}.json")
        argv = [self.binary("dispatch-loadgen"), "--label", name, "-o", path]
        argv += target + load
        for label, child in watch.items():
            argv += ["--watch", f"{label}={child.pid}"]
        started = time.monotonic()
        reply = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
        if reply.returncode != 0:
            raise RuntimeError(f"loadgen {name} failed ({reply.returncode}): {reply.stderr[-2000:]}")
        with open(path) as f:
            result = json.load(f)
        r = result["results"]
        lat = r["latency_ms"]
        extra = f" ttfc p50 {r['ttfc_ms']['p50']:.2f}" if "ttfc_ms" in r else ""
        log(f"{name}: ok {r['ok']}/{r['jobs']} rate {r['achieved_rate']:.0f}/s "
            f"p50 {lat['p50']:.2f} p99 {lat['p99']:.2f} max {lat['max']:.1f} ms{extra} "
            f"load {result['processes']['load_avg_1m_start']:.1f} "
            f"({time.monotonic() - started:.0f} s)")
        return result

    @staticmethod
    def dispatch_target(broker, model):
        return ["--target", "dispatch", "--broker", broker.frontend, "--provider", "openai",
                "--model", model]

    @staticmethod
    def http_target(url, model, headers=()):
        argv = ["--target", "http", "--url", url, "--model", model]
        for header in headers:
            argv += ["--header", header]
        return argv

    # ------------------------------------------------------------------------------------------
    # Part 1 (+5): overhead at fixed rates, direct vs dispatcher vs peer, interleaved per rep

    def part_overhead(self, with_peer):
        args = self.args
        self.stage = "overhead"
        fake = self.start_fake()
        broker = self.start_broker()
        workers = self.start_workers(broker, fake, 1, 1000)
        peer = self.start_peer(fake) if with_peer else None
        models = {False: args.model_plain, True: args.model_stream}
        # Interleaved within each repetition so that background noise hits every path alike.
        targets = ["direct", "dispatch"] + (["peer"] if peer else [])
        runs = []
        try:
            for stream in (False, True):
                model = models[stream]
                for rate in args.rates:
                    for rep in range(args.overhead_reps):
                        for name in targets:
                            if name == "direct":
                                target = self.http_target(f"{fake.base}/v1/chat/completions", model)
                                watch = {"fake": fake}
                            elif name == "dispatch":
                                target = self.dispatch_target(broker, model)
                                watch = {"fake": fake, "broker": broker, "worker": workers[0]}
                            else:
                                target = self.http_target(peer.url, model, peer.headers)
                                watch = {"fake": fake, "peer": peer}
                            load = ["--rate", str(rate), "--duration-s", str(args.duration_s),
                                    "--warmup-s", str(args.warmup_s), "--timeout-ms", "10000",
                                    "--drain-ms", "15000", "--max-in-flight", "4000"]
                            if stream:
                                load.append("--stream")
                            label = f"overhead-{'stream' if stream else 'plain'}-{rate}-{name}-r{rep}"
                            result = self.loadgen(label, target, load, watch,
                                                  timeout_s=args.duration_s + args.warmup_s + 120)
                            runs.append({"stream": stream, "rate": rate, "rep": rep,
                                         "target": name, "result": result})
        finally:
            for child in ([peer] if peer else []) + workers + [broker, fake]:
                child.stop()
        self.summary["overhead"] = summarize_overhead(runs, args)
        self.summary["overhead"]["zmq_round_trip_us"] = self.zmq_round_trip()

    def zmq_round_trip(self):
        """The floor under the dispatcher's added latency: one ZeroMQ round trip between two
        processes, paced at 1 ms (the dispatcher makes two per job)."""
        tool = os.path.join(self.bin, "dispatch-zmq-rtt")
        if not os.access(tool, os.X_OK):
            return None
        results = []
        for _ in range(3):
            reply = subprocess.run([tool, "--messages", "3000", "--interval-us", "1000"],
                                   capture_output=True, text=True, timeout=120)
            if reply.returncode == 0:
                results.append(json.loads(reply.stdout)["round_trip_us"])
        if not results:
            return None
        rtt = {p: median([r[p] for r in results]) for p in ("p50", "p90", "p99")}
        log(f"ZeroMQ round trip p50 {rtt['p50']:.0f} us p99 {rtt['p99']:.0f} us")
        return rtt

    # ------------------------------------------------------------------------------------------
    # Part metrics: saturation with --metrics-listen off and on, interleaved in one run

    def part_metrics(self):
        args = self.args
        self.stage = "metrics"
        model = args.model_instant
        concurrency = args.metrics_concurrency
        fake = self.start_fake()
        runs = {"off": [], "on": []}
        try:
            for rep in range(args.reps):
                # Alternate the order so that a drift of the machine's load hits both alike.
                for mode in (("off", "on") if rep % 2 == 0 else ("on", "off")):
                    extra = ["--metrics-listen", "127.0.0.1:0"] if mode == "on" else []
                    broker = self.start_broker(extra)
                    workers = self.start_workers(broker, fake, 1, 1000, extra)
                    try:
                        target = self.dispatch_target(broker, model) + ["--clients",
                                                                        str(args.sat_clients)]
                        load = ["--concurrency", str(concurrency), "--jobs", str(args.sat_jobs),
                                "--warmup", str(max(concurrency * 4, args.sat_jobs // 10)),
                                "--timeout-ms", "30000"]
                        watch = {"fake": fake, "broker": broker, "worker": workers[0]}
                        runs[mode].append(self.loadgen(f"metrics-{mode}-c{concurrency}-r{rep}",
                                                       target, load, watch, timeout_s=600))
                    finally:
                        for child in workers + [broker]:
                            child.stop()
        finally:
            fake.stop()
        rows = {mode: summarize_saturation(f"dispatch-metrics-{mode}", concurrency, reps)
                for mode, reps in runs.items()}
        # The two runs of one repetition ran back to back: their ratio is the steadier figure on
        # a shared machine, and the median of the ratios the one judged.
        ratios = [on["results"]["achieved_rate"] / off["results"]["achieved_rate"]
                  for off, on in zip(runs["off"], runs["on"])]
        ratio = median(ratios)
        log(f"metrics: {rows['off']['jobs_per_s']:.0f} jobs/s off, {rows['on']['jobs_per_s']:.0f} "
            f"jobs/s on; median ratio on/off {ratio:.3f} ({(ratio - 1) * 100:+.1f} %)")
        self.summary["metrics"] = {"model": model, "concurrency": concurrency,
                                   "jobs": args.sat_jobs, "reps": args.reps,
                                   "rows": list(rows.values()),
                                   "throughput_ratios": [round(r, 4) for r in ratios],
                                   "throughput_ratio": round(ratio, 4),
                                   "difference_pct": round((ratio - 1) * 100, 2)}

    # Part 2 (+5): saturation with an instant provider, closed loop

    def part_saturation(self, with_peer):
        args = self.args
        self.stage = "saturation"
        model = args.model_instant
        rows = []
        fake = self.start_fake()
        broker = self.start_broker()
        workers = self.start_workers(broker, fake, 1, 1000)
        peer = self.start_peer(fake) if with_peer else None
        try:
            plans = [("direct", c) for c in args.sat_http_concurrency]
            plans += [("dispatch", c) for c in args.sat_concurrency]
            if peer:
                plans += [("peer", c) for c in args.peer_concurrency]
            # The worker streams from the provider even for non-streamed jobs (so that its
            # first-token and idle timeouts work); the same load with `stream_upstream: false`
            # shows what that costs.
            plans += [("dispatch-whole", c) for c in args.sat_whole_concurrency]
            for name, concurrency in plans:
                if name == "dispatch-whole" and workers[0].name != "worker-whole":
                    workers[0].stop()
                    workers = self.start_workers(broker, fake, 1, 1000, stream_upstream=False)
                    workers[0].name = "worker-whole"
                jobs = args.sat_jobs if name != "peer" else args.peer_jobs
                load = ["--concurrency", str(concurrency), "--jobs", str(jobs),
                        "--warmup", str(max(concurrency * 4, jobs // 10)), "--timeout-ms", "30000"]
                if name == "direct":
                    target = self.http_target(f"{fake.base}/v1/chat/completions", model)
                    watch = {"fake": fake}
                elif name.startswith("dispatch"):
                    target = self.dispatch_target(broker, model) + ["--clients", str(args.sat_clients)]
                    watch = {"fake": fake, "broker": broker, "worker": workers[0]}
                else:
                    target = self.http_target(peer.url, model, peer.headers)
                    watch = {"fake": fake, "peer": peer}
                reps = []
                for rep in range(args.reps):
                    reps.append(self.loadgen(f"saturation-{name}-c{concurrency}-r{rep}", target,
                                             load, watch, timeout_s=600))
                rows.append(summarize_saturation(name, concurrency, reps))
        finally:
            for child in ([peer] if peer else []) + workers + [broker, fake]:
                child.stop()
        self.summary["saturation"] = {"model": model, "rows": rows}

    # ------------------------------------------------------------------------------------------
    # Part 3: concurrent slow streams on one worker, fresh processes per level

    def part_concurrency(self):
        args = self.args
        rows = []
        for level in args.stream_levels:
            self.stage = f"concurrency-{level}"
            fake = self.start_fake()
            broker = self.start_broker(["--client-buffer", str(max(10000, level * 4))])
            workers = self.start_workers(broker, fake, 1, level + 100)
            try:
                time.sleep(0.5)  # idle RSS baseline after start-up settles
                idle = {"broker": rss_kb(broker.pid), "worker": rss_kb(workers[0].pid),
                        "fake": rss_kb(fake.pid)}
                load = ["--concurrency", str(level), "--jobs", str(level), "--stream",
                        "--timeout-ms", "60000", "--drain-ms", "90000", "--sample-ms", "50"]
                result = self.loadgen(f"concurrency-{level}",
                                      self.dispatch_target(broker, args.model_slow_stream), load,
                                      {"fake": fake, "broker": broker, "worker": workers[0]},
                                      timeout_s=300)
                stats = http_get_json(f"{fake.base}/_fake/stats")
                hwm = {"broker": hwm_kb(broker.pid), "worker": hwm_kb(workers[0].pid)}
                rows.append(summarize_concurrency(level, result, idle, hwm, stats))
            finally:
                for child in workers + [broker, fake]:
                    child.stop()
        self.summary["concurrency"] = {"model": args.model_slow_stream, "rows": rows}

    # ------------------------------------------------------------------------------------------
    # Part 4: scale-out, workers made the bottleneck by provider latency and --concurrency

    def part_scaleout(self):
        args = self.args
        rows = []
        self.stage = "scaleout"
        fake = self.start_fake()
        try:
            for count in args.worker_counts:
                self.stage = f"scaleout-{count}"
                broker = self.start_broker()
                workers = self.start_workers(broker, fake, count, args.scale_worker_concurrency)
                try:
                    capacity = count * args.scale_worker_concurrency
                    # Twice the workers' total capacity in flight keeps the broker's queue fed.
                    jobs = int(args.scale_duration_s * count * args.scale_worker_concurrency
                               * 1000 / args.scale_latency_ms)
                    load = ["--concurrency", str(capacity * 2), "--jobs", str(jobs),
                            "--warmup", str(capacity * 4), "--timeout-ms", "30000"]
                    watch = {"fake": fake, "broker": broker}
                    for i, worker in enumerate(workers):
                        watch[f"worker{i}"] = worker
                    reps = [self.loadgen(f"scaleout-w{count}-r{rep}",
                                         self.dispatch_target(broker, f"gpt-bench~latency_ms={args.scale_latency_ms}"),
                                         load, watch, timeout_s=600)
                            for rep in range(args.reps)]
                    rows.append(summarize_scaleout(count, args, reps))
                finally:
                    for child in workers + [broker]:
                        child.stop()
        finally:
            fake.stop()
        base = rows[0]["jobs_per_s"] if rows else None
        for row in rows:
            row["ratio_vs_1"] = row["jobs_per_s"] / base if base else None
        self.summary["scaleout"] = {"latency_ms": args.scale_latency_ms,
                                    "worker_concurrency": args.scale_worker_concurrency,
                                    "rows": rows}

    # ------------------------------------------------------------------------------------------
    # Part 6 (issue 14): the HTTP gateway beside direct calls and Portkey, in one run

    def start_gateway(self, broker, max_connections=None, binary=None):
        """dispatch-gateway in front of `broker`, without keys (loopback), its default threads
        (one per core); ready once /readyz says the broker answered and a worker is registered.
        `binary`: another build of it (part gateway-ab)."""
        argv = [binary or self.binary("dispatch-gateway"), "--listen", "127.0.0.1:0",
                "--broker", broker.frontend]
        if max_connections:
            config = os.path.join(self.out, f"gateway-{max_connections}.yaml")
            with open(config, "w") as f:
                f.write(f"limits:\n  max_connections: {max_connections}\n")
            argv += ["--config", config]
        log_name = "gateway-before" if binary else "gateway"
        child = Child("gateway", argv, self.log_path(log_name), first_line=True)
        line = child.read_first_line()
        match = re.search(r"listening (http://\S+)", line)
        if not match:
            raise RuntimeError(f"unexpected gateway banner: {line!r}")
        child.base = match.group(1)
        child.url = f"{child.base}/v1/chat/completions"
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{child.base}/readyz", timeout=2).read()
                return child
            except OSError as e:  # HTTPError 503 while no worker is registered
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gateway not ready within 20 s: {e}")
                if not child.alive():
                    raise RuntimeError("gateway exited; see its log")
                time.sleep(0.1)

    def part_gateway(self):
        args = self.args
        if shutil.which("node") is None:
            raise RuntimeError("node is not installed: the gateway part runs Portkey beside it")
        self.stage = "gateway"
        fake = self.start_fake()
        # One gateway is one client of the broker: its per-client buffer bounds all the
        # gateway's requests together (README), so it is raised as for part 3.
        broker = self.start_broker(["--client-buffer", "40000"])
        workers = self.start_workers(broker, fake, 1, 1000)
        gateway = self.start_gateway(broker)
        peer = self.start_peer(fake)
        models = {False: args.model_plain, True: args.model_stream}
        targets = ["direct", "gateway", "peer"]
        runs = []
        rows = []

        def target_for(name, model):
            if name == "direct":
                return self.http_target(f"{fake.base}/v1/chat/completions", model), {"fake": fake}
            if name == "gateway":
                # The gateway's model is `provider/model`: the worker's provider `openai`.
                return (self.http_target(gateway.url, f"openai/{model}"),
                        {"fake": fake, "gateway": gateway, "broker": broker, "worker": workers[0]})
            if name == "dispatch":
                return (self.dispatch_target(broker, model) + ["--clients", str(args.sat_clients)],
                        {"fake": fake, "broker": broker, "worker": workers[0]})
            return self.http_target(peer.url, model, peer.headers), {"fake": fake, "peer": peer}

        try:
            # Added latency at fixed rates, interleaved within each repetition.
            for stream in (False, True):
                model = models[stream]
                for rate in args.rates:
                    for rep in range(args.gateway_reps):
                        for name in targets:
                            target, watch = target_for(name, model)
                            load = ["--rate", str(rate), "--duration-s", str(args.duration_s),
                                    "--warmup-s", str(args.warmup_s), "--timeout-ms", "10000",
                                    "--drain-ms", "15000", "--max-in-flight", "4000"]
                            if stream:
                                load.append("--stream")
                            label = f"gateway-{'stream' if stream else 'plain'}-{rate}-{name}-r{rep}"
                            result = self.loadgen(label, target, load, watch,
                                                  timeout_s=args.duration_s + args.warmup_s + 120)
                            runs.append({"stream": stream, "rate": rate, "rep": rep,
                                         "target": name, "result": result})
            # Maximum throughput, closed loop, instant provider.
            plans = [("direct", c) for c in args.sat_http_concurrency]
            plans += [("gateway", c) for c in args.gateway_sat_concurrency]
            plans += [("dispatch", c) for c in args.gateway_sat_concurrency]
            plans += [("peer", c) for c in args.peer_concurrency]
            for name, concurrency in plans:
                target, watch = target_for(name, args.model_instant)
                jobs = args.peer_jobs if name == "peer" else args.sat_jobs
                load = ["--concurrency", str(concurrency), "--jobs", str(jobs),
                        "--warmup", str(max(concurrency * 4, jobs // 10)), "--timeout-ms", "30000"]
                reps = [self.loadgen(f"gateway-max-{name}-c{concurrency}-r{rep}", target, load,
                                     watch, timeout_s=600)
                        for rep in range(args.gateway_reps)]
                rows.append(summarize_saturation(name, concurrency, reps))
        finally:
            for child in [peer, gateway] + workers + [broker, fake]:
                child.stop()
        overhead = summarize_overhead(runs, args, reps_wanted=args.gateway_reps)
        streams = [self.gateway_streams(level) for level in args.gateway_stream_levels]
        self.summary["gateway"] = {"overhead": overhead,
                                   "saturation": {"model": args.model_instant, "rows": rows},
                                   "streams": {"model": args.model_slow_stream, "rows": streams}}

    def part_gateway_ab(self):
        """Two gateway binaries A/B in one run (issue 14's "one io_context per thread"): direct,
        the C++ client library, the `--gateway-before` binary and this build's gateway at the
        fixed rates (non-stream), interleaved per repetition with the two gateways' order
        alternating, then one saturation point each (closed loop, 64 in flight), alternated."""
        args = self.args
        if not args.gateway_before or not os.access(args.gateway_before, os.X_OK):
            raise RuntimeError("part gateway-ab needs --gateway-before PATH (an executable)")
        self.stage = "gateway-ab"
        fake = self.start_fake()
        broker = self.start_broker(["--client-buffer", "40000"])
        workers = self.start_workers(broker, fake, 1, 1000)
        after = self.start_gateway(broker)
        before = self.start_gateway(broker, binary=args.gateway_before)
        gateways = {"gateway-before": before, "gateway-after": after}
        runs = []
        saturation = []

        def target_for(name, model):
            if name == "direct":
                return self.http_target(f"{fake.base}/v1/chat/completions", model), {"fake": fake}
            if name == "dispatch":
                return (self.dispatch_target(broker, model) + ["--clients", str(args.sat_clients)],
                        {"fake": fake, "broker": broker, "worker": workers[0]})
            gateway = gateways[name]
            return (self.http_target(gateway.url, f"openai/{model}"),
                    {"fake": fake, "gateway": gateway, "broker": broker, "worker": workers[0]})

        try:
            for rate in args.rates:
                for rep in range(args.gateway_reps):
                    pair = ["gateway-before", "gateway-after"]
                    if rep % 2:
                        pair.reverse()
                    for name in ["direct", "dispatch"] + pair:
                        target, watch = target_for(name, args.model_plain)
                        load = ["--rate", str(rate), "--duration-s", str(args.duration_s),
                                "--warmup-s", str(args.warmup_s), "--timeout-ms", "10000",
                                "--drain-ms", "15000", "--max-in-flight", "4000"]
                        result = self.loadgen(f"gateway-ab-{rate}-{name}-r{rep}", target, load,
                                              watch, timeout_s=args.duration_s + args.warmup_s + 120)
                        runs.append({"rate": rate, "rep": rep, "target": name, "result": result})
            concurrency = 64
            for rep in range(args.gateway_reps):
                pair = ["gateway-before", "gateway-after"]
                if rep % 2:
                    pair.reverse()
                for name in pair:
                    target, watch = target_for(name, args.model_instant)
                    load = ["--concurrency", str(concurrency), "--jobs", str(args.sat_jobs),
                            "--warmup", str(max(concurrency * 4, args.sat_jobs // 10)),
                            "--timeout-ms", "30000"]
                    result = self.loadgen(f"gateway-ab-max-{name}-r{rep}", target, load, watch,
                                          timeout_s=600)
                    saturation.append({"rep": rep, "target": name, "result": result})
        finally:
            for child in [before, after] + workers + [broker, fake]:
                child.stop()
        self.summary["gateway_ab"] = summarize_gateway_ab(runs, saturation, args)
        log(json.dumps(self.summary["gateway_ab"], indent=1))

    def gateway_streams(self, level):
        """`level` slow SSE streams at once through one gateway (fresh processes), as part 3
        does on one worker: how many succeed and what each costs the gateway in memory."""
        args = self.args
        self.stage = f"gateway-streams-{level}"
        fake = self.start_fake()
        broker = self.start_broker(["--client-buffer", str(max(10000, level * 4))])
        workers = self.start_workers(broker, fake, 1, level + 100)
        # The default limit (10,000 connections) would refuse the readiness probe's neighbours.
        gateway = self.start_gateway(broker, max_connections=level + 2000)
        try:
            time.sleep(0.5)  # idle RSS baseline after start-up settles
            idle = {"gateway": rss_kb(gateway.pid), "broker": rss_kb(broker.pid),
                    "worker": rss_kb(workers[0].pid), "fake": rss_kb(fake.pid)}
            load = ["--concurrency", str(level), "--jobs", str(level), "--stream",
                    "--timeout-ms", "60000", "--drain-ms", "90000", "--sample-ms", "50"]
            result = self.loadgen(f"gateway-streams-{level}",
                                  self.http_target(gateway.url, f"openai/{args.model_slow_stream}"),
                                  load, {"gateway": gateway, "broker": broker,
                                         "worker": workers[0], "fake": fake},
                                  timeout_s=300)
            stats = http_get_json(f"{fake.base}/_fake/stats")
            hwm = {"gateway": hwm_kb(gateway.pid)}
            return summarize_gateway_streams(level, result, idle, hwm, stats)
        finally:
            for child in [gateway] + workers + [broker, fake]:
                child.stop()

    # ------------------------------------------------------------------------------------------
    # Other engineers' benchmarks, included as they print

    # ------------------------------------------------------------------------------------------
    # Part 7: what CURVE costs (issue 12): one stack in plaintext and one with keys, alternated

    def make_curve_keys(self):
        """A broker certificate and one client (also admin, for `dispatch status`) and one
        worker certificate, made by `dispatch keygen` as a user would."""
        keys = os.path.join(self.out, "curve-keys")
        if os.path.exists(os.path.join(keys, "broker.key")):
            return keys
        for role in ("clients", "workers", "admins"):
            os.makedirs(os.path.join(keys, role), exist_ok=True)
        for name in ("broker", "client", "worker"):
            subprocess.run([self.binary("dispatch"), "keygen", os.path.join(keys, name)],
                           check=True, capture_output=True, timeout=30)
        for name, roles in (("client", ("clients", "admins")), ("worker", ("workers",))):
            for role in roles:
                shutil.copy(os.path.join(keys, f"{name}.key"), os.path.join(keys, role))
        return keys

    def start_stack(self, fake, secure):
        broker_extra, worker_extra, client_keys = [], [], []
        if secure:
            keys = self.make_curve_keys()
            broker_extra = ["--curve-secret", os.path.join(keys, "broker.key_secret"),
                            "--allow-clients", os.path.join(keys, "clients"),
                            "--allow-workers", os.path.join(keys, "workers"),
                            "--allow-admins", os.path.join(keys, "admins")]
            broker_key = ["--broker-key", os.path.join(keys, "broker.key")]
            worker_extra = broker_key + ["--curve-secret", os.path.join(keys, "worker.key_secret")]
            client_keys = broker_key + ["--curve-secret", os.path.join(keys, "client.key_secret")]
        broker = self.start_broker(broker_extra)
        broker.client_keys = client_keys
        workers = self.start_workers(broker, fake, 1, 1000, extra=worker_extra)
        return broker, workers[0]

    def part_curve(self):
        args = self.args
        self.stage = "curve"
        fake = self.start_fake()
        stacks = {}
        try:
            for mode in ("plaintext", "curve"):
                stacks[mode] = self.start_stack(fake, mode == "curve")
            runs = {mode: {"saturation": [], "paced": []} for mode in stacks}
            for rep in range(args.curve_reps):
                # Alternated, and the order flipped each repetition, so that drift in the
                # background load falls on both modes alike.
                order = ("plaintext", "curve") if rep % 2 == 0 else ("curve", "plaintext")
                for mode in order:
                    broker, worker = stacks[mode]
                    target = (self.dispatch_target(broker, args.model_instant) + broker.client_keys
                              + ["--clients", str(args.sat_clients)])
                    watch = {"fake": fake, "broker": broker, "worker": worker}
                    jobs = args.curve_sat_jobs
                    saturation = ["--concurrency", str(args.curve_concurrency), "--jobs", str(jobs),
                                  "--warmup", str(jobs // 10), "--timeout-ms", "30000"]
                    runs[mode]["saturation"].append(self.loadgen(
                        f"curve-{mode}-saturation-r{rep}", target, saturation, watch, timeout_s=600))
                    paced = ["--rate", str(args.curve_rate), "--duration-s", str(args.duration_s),
                             "--warmup-s", str(args.warmup_s), "--timeout-ms", "10000",
                             "--drain-ms", "15000", "--max-in-flight", "4000"]
                    runs[mode]["paced"].append(self.loadgen(
                        f"curve-{mode}-{args.curve_rate}-r{rep}", target, paced, watch,
                        timeout_s=args.duration_s + args.warmup_s + 120))
        finally:
            for broker, worker in stacks.values():
                worker.stop()
                broker.stop()
            fake.stop()
        self.summary["curve"] = summarize_curve(runs, args)

    def part_fake_capacity(self):
        tool = os.path.join(self.args.build_dir, "tests", "fake_provider", "fake_provider_load")
        if not os.access(tool, os.X_OK):
            log("fake_provider_load not built; skipping")
            return
        argv = [tool, "--connections", str(self.args.fake_connections), "--tokens", "20",
                "--chunk-delay-ms", "100"]
        reply = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        self.summary["fake_capacity"] = {"command": " ".join(["fake_provider_load"] + argv[1:]), "exit": reply.returncode,
                                         "output": reply.stdout.strip()[-6000:]}
        log(f"fake_provider_load exit {reply.returncode}")

    def part_worker_stream(self):
        tool = os.path.join(self.args.build_dir, "tests", "worker", "providers", "worker_stream_bench")
        if not os.access(tool, os.X_OK):
            log("worker_stream_bench not built; skipping")
            return
        argv = [tool, "--streams", str(self.args.worker_streams)]
        reply = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        self.summary["worker_stream"] = {"command": " ".join(["worker_stream_bench"] + argv[1:]), "exit": reply.returncode,
                                         "output": (reply.stdout + (reply.stderr[-1000:] if reply.returncode else "")).strip()[-6000:]}
        log(f"worker_stream_bench exit {reply.returncode}")


def cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return None


def proc_status_kb(pid, field):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_kb(pid):
    return proc_status_kb(pid, "VmRSS")


def hwm_kb(pid):
    return proc_status_kb(pid, "VmHWM")


# ----------------------------------------------------------------------------------------------
# Summaries (medians over repetitions)

PCTS = ("p50", "p90", "p99")


TARGET_ORDER = ["direct", "dispatch", "gateway", "peer"]


def summarize_overhead(runs, args, reps_wanted=None):
    cells = []
    keys = sorted({(r["stream"], r["rate"]) for r in runs})
    for stream, rate in keys:
        group = [r for r in runs if r["stream"] == stream and r["rate"] == rate]
        reps = sorted({r["rep"] for r in group})
        targets = sorted({r["target"] for r in group}, key=TARGET_ORDER.index)
        metrics = ["latency_ms", "ttfc_ms"] if stream else ["latency_ms"]
        cell = {"stream": stream, "rate": rate, "reps": len(reps), "targets": {}, "added": {}}
        for target in targets:
            results = [r["result"] for r in group if r["target"] == target]
            entry = {"success_rate": median([x["results"]["success_rate"] for x in results]),
                     "min_success_rate": min(x["results"]["success_rate"] for x in results),
                     "achieved_rate": median([x["results"]["achieved_rate"] for x in results]),
                     "errors": merge_errors(x["results"]["errors"] for x in results),
                     "load_avg": max(x["processes"]["load_avg_1m_start"] for x in results),
                     "cpu_us_per_job": cpu_medians(results)}
            for metric in metrics:
                entry[metric] = {p: median([x["results"][metric][p] for x in results])
                                 for p in PCTS + ("max",)}
            cell["targets"][target] = entry
        # Added latency: per repetition (the runs of one rep are back to back), then the median.
        for target in targets:
            if target == "direct":
                continue
            added = {}
            for metric in metrics:
                added[metric] = {}
                for p in PCTS:
                    diffs = []
                    for rep in reps:
                        mine = [r for r in group if r["rep"] == rep and r["target"] == target]
                        base = [r for r in group if r["rep"] == rep and r["target"] == "direct"]
                        if mine and base:
                            diffs.append(mine[0]["result"]["results"][metric][p]
                                         - base[0]["result"]["results"][metric][p])
                    added[metric][p] = median(diffs)
            cell["added"][target] = added
        cells.append(cell)
    return {"model_plain": args.model_plain, "model_stream": args.model_stream,
            "duration_s": args.duration_s, "reps": reps_wanted or args.overhead_reps, "cells": cells}


def summarize_gateway_ab(runs, saturation, args):
    """Per rate: each target's median p50/p99 and CPU µs per request, the added p50/p99 over
    direct per repetition (then medians), and per repetition the after/before ratios."""
    def pct(run, p):
        return run["result"]["results"]["latency_ms"][p]

    def cpu(run, name):
        return run["result"]["processes"]["processes"].get(name, {}).get("cpu_us_per_job")

    cells = []
    for rate in sorted({r["rate"] for r in runs}):
        group = [r for r in runs if r["rate"] == rate]
        reps = sorted({r["rep"] for r in group})
        by = {(r["rep"], r["target"]): r for r in group}
        cell = {"rate": rate, "reps": len(reps), "targets": {}, "pairs": []}
        for target in ("direct", "dispatch", "gateway-before", "gateway-after"):
            mine = [by[(rep, target)] for rep in reps if (rep, target) in by]
            entry = {"p50_ms": median([pct(r, "p50") for r in mine]),
                     "p99_ms": median([pct(r, "p99") for r in mine]),
                     "success_rate": min(r["result"]["results"]["success_rate"] for r in mine),
                     "load_avg": [r["result"]["processes"]["load_avg_1m_start"] for r in mine]}
            if target != "direct":
                added = {p: [pct(by[(rep, target)], p) - pct(by[(rep, "direct")], p)
                             for rep in reps] for p in ("p50", "p99")}
                entry["added_p50_ms_runs"] = added["p50"]
                entry["added_p99_ms_runs"] = added["p99"]
                entry["added_p50_ms"] = median(added["p50"])
                entry["added_p99_ms"] = median(added["p99"])
            if target.startswith("gateway"):
                entry["gateway_cpu_us_runs"] = [cpu(r, "gateway") for r in mine]
                entry["gateway_cpu_us_per_req"] = median(entry["gateway_cpu_us_runs"])
            cell["targets"][target] = entry
        for rep in reps:
            b, a = by[(rep, "gateway-before")], by[(rep, "gateway-after")]
            d = by[(rep, "direct")]
            pair = {"rep": rep}
            for p in ("p50", "p99"):
                added_b, added_a = pct(b, p) - pct(d, p), pct(a, p) - pct(d, p)
                pair[f"added_{p}_after_over_before"] = added_a / added_b if added_b > 0 else None
            cb, ca = cpu(b, "gateway"), cpu(a, "gateway")
            pair["cpu_after_over_before"] = ca / cb if cb and ca else None
            cell["pairs"].append(pair)
        cells.append(cell)
    sat = {}
    for target in ("gateway-before", "gateway-after"):
        mine = [r["result"] for r in saturation if r["target"] == target]
        if mine:
            sat[target] = {"runs_req_per_s": [x["results"]["achieved_rate"] for x in mine],
                           "req_per_s": median([x["results"]["achieved_rate"] for x in mine]),
                           "gateway_cpu_us_per_req": median(
                               [x["processes"]["processes"].get("gateway", {}).get("cpu_us_per_job")
                                for x in mine]),
                           "success_rate": min(x["results"]["success_rate"] for x in mine)}
    return {"model": args.model_plain, "duration_s": args.duration_s, "reps": args.gateway_reps,
            "before": args.gateway_before, "cells": cells, "saturation_c64": sat}


def merge_errors(dicts):
    merged = {}
    for d in dicts:
        for k, v in d.items():
            merged[k] = merged.get(k, 0) + v
    return merged


def cpu_medians(results):
    names = set()
    for x in results:
        names |= set(x["processes"]["processes"])
    return {n: median([x["processes"]["processes"].get(n, {}).get("cpu_us_per_job") for x in results])
            for n in sorted(names)}


def summarize_saturation(name, concurrency, reps):
    procs = {}
    names = set()
    for x in reps:
        names |= set(x["processes"]["processes"])
    for n in sorted(names):
        procs[n] = {k: median([x["processes"]["processes"].get(n, {}).get(k) for x in reps])
                    for k in ("cpu_us_per_job", "cpu_cores", "rss_peak_kb")}
    return {"target": name, "concurrency": concurrency, "reps": len(reps),
            "jobs_per_s": median([x["results"]["achieved_rate"] for x in reps]),
            "runs_jobs_per_s": [x["results"]["achieved_rate"] for x in reps],
            "success_rate": min(x["results"]["success_rate"] for x in reps),
            "errors": merge_errors(x["results"]["errors"] for x in reps),
            "latency_ms": {p: median([x["results"]["latency_ms"][p] for x in reps]) for p in PCTS},
            "load_avg": max(x["processes"]["load_avg_1m_start"] for x in reps),
            "processes": procs}


def summarize_curve(runs, args):
    modes = {}
    for mode, r in runs.items():
        sat, paced = r["saturation"], r["paced"]
        modes[mode] = {
            "jobs_per_s": median([x["results"]["achieved_rate"] for x in sat]),
            "runs_jobs_per_s": [x["results"]["achieved_rate"] for x in sat],
            "saturation_success": min(x["results"]["success_rate"] for x in sat),
            "paced_success": min(x["results"]["success_rate"] for x in paced),
            "paced_ms": {p: median([x["results"]["latency_ms"][p] for x in paced])
                         for p in ("p50", "p99")},
            "runs_paced_p50_ms": [x["results"]["latency_ms"]["p50"] for x in paced],
            "cpu_us_per_job": {n: median([x["processes"]["processes"].get(n, {}).get("cpu_us_per_job")
                                          for x in sat]) for n in ("broker", "worker", "loadgen")},
            "load_avg": max(x["processes"]["load_avg_1m_start"] for x in sat + paced),
        }
    plain, curve = modes["plaintext"], modes["curve"]
    # Per repetition, then the median: the two modes of one repetition ran back to back.
    pairs = list(zip(runs["plaintext"]["saturation"], runs["curve"]["saturation"]))
    ratios = [c["results"]["achieved_rate"] / p["results"]["achieved_rate"] for p, c in pairs]
    pairs = list(zip(runs["plaintext"]["paced"], runs["curve"]["paced"]))
    p50_deltas = [c["results"]["latency_ms"]["p50"] - p["results"]["latency_ms"]["p50"]
                  for p, c in pairs]
    p99_deltas = [c["results"]["latency_ms"]["p99"] - p["results"]["latency_ms"]["p99"]
                  for p, c in pairs]
    return {"reps": args.curve_reps, "concurrency": args.curve_concurrency,
            "jobs": args.curve_sat_jobs, "rate": args.curve_rate, "model": args.model_instant,
            "modes": modes, "throughput_ratio": median(ratios), "throughput_ratios": ratios,
            "p50_added_ms": median(p50_deltas), "p50_added_runs_ms": p50_deltas,
            "p99_added_ms": median(p99_deltas)}


def summarize_concurrency(level, result, idle, hwm, stats):
    procs = result["processes"]["processes"]
    row = {"streams": level, "success_rate": result["results"]["success_rate"],
           "errors": result["results"]["errors"],
           "peak_streaming_at_client": result["peaks"]["streaming"],
           "peak_active_streams_at_provider": stats.get("peak_active_streams"),
           "ttfc_ms": {p: result["results"]["ttfc_ms"][p] for p in PCTS + ("max",)},
           "ttlc_ms": {p: result["results"]["latency_ms"][p] for p in PCTS + ("max",)},
           "chunks_per_job": result["results"].get("chunks_per_job"),
           "window_s": result["results"]["window_s"],
           "load_avg": result["processes"]["load_avg_1m_start"]}
    # The broker holds every submitted job; the worker (and provider) hold the streams actually
    # open at once, which the provider counts.
    in_flight = {"broker": level, "worker": stats.get("peak_active_streams") or level,
                 "fake": stats.get("peak_active_streams") or level, "loadgen": level}
    for name in ("broker", "worker", "fake", "loadgen"):
        p = procs.get(name, {})
        base = idle.get(name) or p.get("rss_start_kb") or 0
        peak = p.get("rss_peak_kb") or 0
        row[name] = {"rss_idle_kb": base, "rss_peak_kb": peak, "hwm_kb": hwm.get(name),
                     "in_flight": in_flight[name],
                     "kb_per_stream": (peak - base) / in_flight[name] if in_flight[name] else None,
                     "cpu_s": p.get("cpu_s"), "cpu_cores": p.get("cpu_cores")}
    return row


def summarize_gateway_streams(level, result, idle, hwm, stats):
    procs = result["processes"]["processes"]
    peak_open = result["peaks"]["in_flight"]
    row = {"streams": level, "success_rate": result["results"]["success_rate"],
           "errors": result["results"]["errors"],
           "peak_open_at_client": peak_open,
           "peak_streaming_at_client": result["peaks"]["streaming"],
           "peak_active_streams_at_provider": stats.get("peak_active_streams"),
           "ttfc_ms": {p: result["results"]["ttfc_ms"][p] for p in PCTS + ("max",)},
           "ttlc_ms": {p: result["results"]["latency_ms"][p] for p in PCTS + ("max",)},
           "window_s": result["results"]["window_s"],
           "load_avg": result["processes"]["load_avg_1m_start"]}
    # The gateway holds one HTTP connection per request open at the client; the broker holds
    # every submitted job; the worker the streams open at the provider.
    held = {"gateway": peak_open, "broker": level,
            "worker": stats.get("peak_active_streams") or level}
    for name in ("gateway", "broker", "worker", "fake"):
        p = procs.get(name, {})
        base = idle.get(name) or p.get("rss_start_kb") or 0
        peak = max(p.get("rss_peak_kb") or 0, hwm.get(name) or 0)
        row[name] = {"rss_idle_kb": base, "rss_peak_kb": peak, "in_flight": held.get(name),
                     "kb_per_stream": (peak - base) / held[name] if held.get(name) else None,
                     "cpu_s": p.get("cpu_s"), "cpu_cores": p.get("cpu_cores")}
    return row


def summarize_scaleout(count, args, reps):
    return {"workers": count, "reps": len(reps),
            "jobs_per_s": median([x["results"]["achieved_rate"] for x in reps]),
            "runs_jobs_per_s": [x["results"]["achieved_rate"] for x in reps],
            "ideal_jobs_per_s": count * args.scale_worker_concurrency * 1000 / args.scale_latency_ms,
            "success_rate": min(x["results"]["success_rate"] for x in reps),
            "errors": merge_errors(x["results"]["errors"] for x in reps),
            "latency_ms": {p: median([x["results"]["latency_ms"][p] for x in reps]) for p in PCTS},
            "broker_cpu_cores": median([x["processes"]["processes"]["broker"]["cpu_cores"] for x in reps]),
            "load_avg": max(x["processes"]["load_avg_1m_start"] for x in reps)}


# ----------------------------------------------------------------------------------------------
# Markdown


def fmt(value, digits=2):
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def pct(value):
    return "–" if value is None else f"{value * 100:.2f} %"


def md_overhead(s):
    out = [f"Provider: `{s['model_plain']}` (non-stream), `{s['model_stream']}` (stream); "
           f"open loop, {s['duration_s']} s measured per run after warm-up, "
           f"median of {s['reps']} runs; latency from each job's scheduled send time (ms).", ""]
    for stream in (False, True):
        cells = [c for c in s["cells"] if c["stream"] == stream]
        if not cells:
            continue
        metrics = [("ttfc_ms", "TTFC"), ("latency_ms", "TTLC")] if stream else [("latency_ms", "latency")]
        out.append(f"**{'Streaming' if stream else 'Non-streaming'}**")
        out.append("")
        head = "| rate/s | path | " + " | ".join(f"{label} {p}" for _, label in metrics for p in PCTS) + \
               " | success | achieved/s | max load |"
        out.append(head)
        out.append("|" + "---|" * (head.count("|") - 1))
        for c in cells:
            for target, e in c["targets"].items():
                row = [str(c["rate"]), target]
                row += [fmt(e[m][p]) for m, _ in metrics for p in PCTS]
                row += [pct(e["min_success_rate"]), fmt(e["achieved_rate"], 0), fmt(e["load_avg"], 1)]
                out.append("| " + " | ".join(row) + " |")
            for target, added in c["added"].items():
                row = [str(c["rate"]), f"**added by {target}**"]
                row += [f"**{fmt(added[m][p], 3)}**" for m, _ in metrics for p in PCTS]
                row += ["", "", ""]
                out.append("| " + " | ".join(row) + " |")
        out.append("")
    rtt = s.get("zmq_round_trip_us")
    if rtt:
        out.append(f"Floor: one ZeroMQ round trip between two processes on this machine "
                   f"(`dispatch-zmq-rtt`, paced at 1 ms, median of 3) takes p50 {rtt['p50']:.0f} µs, "
                   f"p99 {rtt['p99']:.0f} µs; a job through the dispatcher makes two "
                   f"(client ↔ broker, broker ↔ worker): {2 * rtt['p50'] / 1000:.2f} ms at p50 "
                   "before any work.")
    return "\n".join(out)


def md_saturation(s):
    out = [f"Instant provider `{s['model']}`, closed loop; jobs/s is the median of the runs, "
           "CPU is µs of CPU per job (user+system, all threads) and cores busy.", ""]
    out.append("| path | in flight | jobs/s (runs) | success | p50 / p99 ms | CPU µs/job: loadgen · broker · worker · fake · peer | cores busy: loadgen · broker · worker · fake · peer | max load |")
    out.append("|---|---|---|---|---|---|---|---|")
    for r in s["rows"]:
        p = r["processes"]
        names = ("loadgen", "broker", "worker", "fake", "peer")
        cpu = " · ".join(fmt(p.get(n, {}).get("cpu_us_per_job"), 1) for n in names)
        cores = " · ".join(fmt(p.get(n, {}).get("cpu_cores"), 2) for n in names)
        runs = ", ".join(f"{v:.0f}" for v in r["runs_jobs_per_s"])
        out.append(f"| {r['target']} | {r['concurrency']} | **{r['jobs_per_s']:.0f}** ({runs}) | "
                   f"{pct(r['success_rate'])} | {fmt(r['latency_ms']['p50'])} / {fmt(r['latency_ms']['p99'])} | "
                   f"{cpu} | {cores} | {fmt(r['load_avg'], 1)} |")
    return "\n".join(out)


def md_curve(s):
    out = [f"One fake provider (`{s['model']}`, instant), two stacks side by side — broker + one "
           "worker in plaintext, and the same with CURVE on both broker sockets (keys from "
           "`dispatch keygen`, clients and workers admitted by the ZAP handler) — driven "
           f"alternately, {s['reps']} repetitions. Saturation: closed loop, {s['concurrency']} "
           f"in flight, {s['jobs']:,} jobs; paced: {s['rate']:,} jobs/s open loop.", ""]
    out.append("| mode | saturation jobs/s (runs) | CPU µs/job: broker · worker · loadgen | "
               f"{s['rate']:,}/s p50 / p99 ms | success | max load |")
    out.append("|---|---|---|---|---|---|")
    for mode in ("plaintext", "curve"):
        m = s["modes"][mode]
        runs = ", ".join(f"{v:.0f}" for v in m["runs_jobs_per_s"])
        cpu = " · ".join(fmt(m["cpu_us_per_job"][n], 1) for n in ("broker", "worker", "loadgen"))
        success = min(m["saturation_success"], m["paced_success"])
        out.append(f"| {mode} | **{m['jobs_per_s']:.0f}** ({runs}) | {cpu} | "
                   f"{fmt(m['paced_ms']['p50'])} / {fmt(m['paced_ms']['p99'])} | {pct(success)} | "
                   f"{fmt(m['load_avg'], 1)} |")
    loss = 1 - s["throughput_ratio"]
    ratios = ", ".join(f"{r:.3f}" for r in s["throughput_ratios"])
    deltas = ", ".join(f"{d:+.3f}" for d in s["p50_added_runs_ms"])
    out += ["", f"- Throughput with CURVE: **{s['throughput_ratio']:.3f}×** plaintext (median of the "
                f"per-repetition ratios {ratios}): {pct(loss)} lower — goal ≤ 15 %: "
                f"**{'met' if loss <= 0.15 else 'missed'}**.",
            f"- Added p50 at {s['rate']:,} jobs/s: **{s['p50_added_ms']:+.3f} ms** (per repetition "
            f"{deltas}); p99 {s['p99_added_ms']:+.3f} ms — goal ≤ 0.1 ms p50: "
            f"**{'met' if s['p50_added_ms'] <= 0.1 else 'missed'}**."]
    return "\n".join(out)


def md_metrics(s):
    out = [f"One fake provider (`{s['model']}`, instant), a fresh broker + one worker per run, "
           "without and with `--metrics-listen 127.0.0.1:0` on both (the worker also times every "
           "attempt and job into histograms), driven alternately: closed loop, "
           f"{s['concurrency']} in flight, {s['jobs']:,} jobs, {s['reps']} repetitions.", ""]
    out.append("| metrics | saturation jobs/s (runs) | CPU µs/job: broker · worker | p50 / p99 ms "
               "| success | max load |")
    out.append("|---|---|---|---|---|---|")
    for row in s["rows"]:
        mode = row["target"].rsplit("-", 1)[-1]
        runs = ", ".join(f"{v:.0f}" for v in row["runs_jobs_per_s"])
        cpu = " · ".join(fmt(row["processes"].get(n, {}).get("cpu_us_per_job"), 1)
                         for n in ("broker", "worker"))
        out.append(f"| {mode} | **{row['jobs_per_s']:.0f}** ({runs}) | {cpu} | "
                   f"{fmt(row['latency_ms']['p50'])} / {fmt(row['latency_ms']['p99'])} | "
                   f"{pct(row['success_rate'])} | {fmt(row['load_avg'], 1)} |")
    ratios = ", ".join(f"{r:.3f}" for r in s["throughput_ratios"])
    diff = abs(s["throughput_ratio"] - 1)
    out += ["", f"- Throughput with metrics on: **{s['throughput_ratio']:.3f}×** off (median of the "
                f"per-repetition ratios {ratios}) — goal ≤ 3 % difference: "
                f"**{'met' if diff <= 0.03 else 'missed'}**."]
    return "\n".join(out)


def md_concurrency(s):
    out = [f"Provider `{s['model']}` (20 chunks over ~2 s), all jobs submitted at once through one "
           "client, one worker with --concurrency streams+100; fresh processes per level. KB per "
           "stream = (peak RSS − idle RSS) / jobs held: the broker holds every submitted job, the "
           "worker the streams open at once (the provider's peak count of active streams).", ""]
    out.append("| streams | success | peak streams (client / provider) | TTFC p50/p99 ms | TTLC p50/p99/max ms | broker RSS idle → peak MB | worker RSS idle → peak MB | KB per stream: broker · worker | CPU s: broker · worker · fake · loadgen | max load |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for r in s["rows"]:
        b, w = r["broker"], r["worker"]
        out.append(
            f"| {r['streams']} | {pct(r['success_rate'])} | {r['peak_streaming_at_client']} / "
            f"{r['peak_active_streams_at_provider']} | {fmt(r['ttfc_ms']['p50'], 0)} / {fmt(r['ttfc_ms']['p99'], 0)} | "
            f"{fmt(r['ttlc_ms']['p50'], 0)} / {fmt(r['ttlc_ms']['p99'], 0)} / {fmt(r['ttlc_ms']['max'], 0)} | "
            f"{b['rss_idle_kb'] / 1024:.1f} → {b['rss_peak_kb'] / 1024:.1f} | "
            f"{w['rss_idle_kb'] / 1024:.1f} → {w['rss_peak_kb'] / 1024:.1f} | "
            f"**{fmt(b['kb_per_stream'], 1)} · {fmt(w['kb_per_stream'], 1)}** | "
            f"{fmt(b['cpu_s'], 1)} · {fmt(w['cpu_s'], 1)} · {fmt(r['fake']['cpu_s'], 1)} · {fmt(r['loadgen']['cpu_s'], 1)} | "
            f"{fmt(r['load_avg'], 1)} |")
        if r["errors"]:
            out.append(f"|  | errors: {json.dumps(r['errors'])} |||||||||")
    return "\n".join(out)


def md_scaleout(s):
    out = [f"Provider latency {s['latency_ms']} ms, each worker --concurrency {s['worker_concurrency']} "
           f"(ideal {s['worker_concurrency'] * 1000 / s['latency_ms']:.0f} jobs/s per worker); closed loop "
           "with twice the total worker capacity in flight.", ""]
    out.append("| workers | jobs/s (runs) | ideal | × vs 1 worker | success | p50 / p99 ms | broker cores | max load |")
    out.append("|---|---|---|---|---|---|---|---|")
    for r in s["rows"]:
        runs = ", ".join(f"{v:.0f}" for v in r["runs_jobs_per_s"])
        out.append(f"| {r['workers']} | **{r['jobs_per_s']:.0f}** ({runs}) | {r['ideal_jobs_per_s']:.0f} | "
                   f"**×{fmt(r['ratio_vs_1'])}** | {pct(r['success_rate'])} | "
                   f"{fmt(r['latency_ms']['p50'])} / {fmt(r['latency_ms']['p99'])} | "
                   f"{fmt(r['broker_cpu_cores'])} | {fmt(r['load_avg'], 1)} |")
    return "\n".join(out)


def md_peer(summary):
    out = []
    ov = summary.get("overhead")
    if ov:
        out.append("Added latency over the direct call (ms, median of per-run differences), ours vs "
                   "Portkey, and how many times lower ours is (goal ≥ 5×):")
        out.append("")
        out.append("| mode | rate/s | metric | ours p50 / p99 | Portkey p50 / p99 | × lower p50 / p99 | Portkey success |")
        out.append("|---|---|---|---|---|---|---|")
        for c in ov["cells"]:
            if "peer" not in c["added"]:
                continue
            for metric in (["ttfc_ms", "latency_ms"] if c["stream"] else ["latency_ms"]):
                ours = c["added"]["dispatch"][metric]
                theirs = c["added"]["peer"][metric]
                ratio = [theirs[p] / ours[p] if ours[p] and ours[p] > 0 else None for p in ("p50", "p99")]
                label = {"ttfc_ms": "TTFC", "latency_ms": "TTLC" if c["stream"] else "latency"}[metric]
                out.append(f"| {'stream' if c['stream'] else 'plain'} | {c['rate']} | {label} | "
                           f"{fmt(ours['p50'], 3)} / {fmt(ours['p99'], 3)} | "
                           f"{fmt(theirs['p50'], 3)} / {fmt(theirs['p99'], 3)} | "
                           f"{fmt(ratio[0], 1)} / {fmt(ratio[1], 1)} | "
                           f"{pct(c['targets']['peer']['min_success_rate'])} |")
        out.append("")
    sat = summary.get("saturation")
    if sat:
        best = {}
        for r in sat["rows"]:
            if r["target"] not in best or r["jobs_per_s"] > best[r["target"]]["jobs_per_s"]:
                best[r["target"]] = r
        if "peer" in best:
            out.append("Maximum throughput with the instant provider (best closed-loop level):")
            out.append("")
            out.append("| path | jobs/s | in flight | CPU µs per job in the gateway process(es) |")
            out.append("|---|---|---|---|")
            for name in ("direct", "dispatch", "peer"):
                if name in best:
                    r = best[name]
                    p = r["processes"]
                    if name == "dispatch":
                        gw = (p.get("broker", {}).get("cpu_us_per_job") or 0) + \
                             (p.get("worker", {}).get("cpu_us_per_job") or 0)
                        gw_text = f"{gw:.1f} (broker + worker)"
                    elif name == "peer":
                        gw_text = f"{fmt(p.get('peer', {}).get('cpu_us_per_job'), 1)} (node)"
                    else:
                        gw_text = "– (no gateway)"
                    out.append(f"| {name} | {r['jobs_per_s']:.0f} | {r['concurrency']} | {gw_text} |")
    return "\n".join(out)


def ratio_lower(ours, theirs):
    """How many times lower our added latency is than the peer's (None when unknown; an added
    latency at or below zero is infinitely lower)."""
    if ours is None or theirs is None:
        return None
    return float("inf") if ours <= 0 else theirs / ours


def fmt_ratio(value):
    if value is None:
        return "–"
    return "∞" if value == float("inf") else f"{value:.1f}"


def gateway_goal_rows(g):
    """The issue's goals against this run's figures: (goal, figure, met) — a benchmark verdict,
    never a test assertion."""
    rows = []
    ov = g.get("overhead", {})
    cells = {(c["stream"], c["rate"]): c for c in ov.get("cells", [])}

    def added(stream, rate, metric, p, who="gateway"):
        c = cells.get((stream, rate))
        return c and c["added"].get(who, {}).get(metric, {}).get(p)

    at = 1000
    for p, limit in (("p50", 0.6), ("p99", 2.0)):
        plain, ttfc = added(False, at, "latency_ms", p), added(True, at, "ttfc_ms", p)
        if plain is not None or ttfc is not None:
            met = all(v is not None and v <= limit for v in (plain, ttfc))
            rows.append((f"added {p} ≤ {limit:g} ms at {at:,} req/s",
                         f"non-stream {fmt(plain, 3)} ms, stream first chunk {fmt(ttfc, 3)} ms", met))
    for p, goal in (("p50", 3), ("p99", 10)):
        ratios = []
        for (stream, rate), c in sorted(cells.items()):
            if "peer" not in c["added"]:
                continue
            metric = "ttfc_ms" if stream else "latency_ms"
            r = ratio_lower(added(stream, rate, metric, p), added(stream, rate, metric, p, "peer"))
            ratios.append((r, f"{'stream' if stream else 'non-stream'} {rate}/s"))
        if ratios:
            known = [r for r in ratios if r[0] is not None]
            worst = min(known, key=lambda r: r[0]) if known else (None, "–")
            rows.append((f"≥ {goal}× lower added {p} than Portkey at every rate",
                         f"lowest {fmt_ratio(worst[0])}× ({worst[1]})",
                         bool(known) and len(known) == len(ratios) and worst[0] >= goal))
    best = gateway_best_throughput(g)
    if "gateway" in best and "peer" in best:
        x = best["gateway"]["jobs_per_s"] / best["peer"]["jobs_per_s"]
        rows.append(("max throughput ≥ 10× Portkey's",
                     f"{best['gateway']['jobs_per_s']:.0f} vs {best['peer']['jobs_per_s']:.0f} req/s = {x:.1f}×",
                     x >= 10))
    if "gateway" in best and "dispatch" in best:
        share = best["gateway"]["jobs_per_s"] / best["dispatch"]["jobs_per_s"]
        rows.append(("max throughput ≥ 60 % of the C++-client path's",
                     f"{best['gateway']['jobs_per_s']:.0f} vs {best['dispatch']['jobs_per_s']:.0f} jobs/s = {share * 100:.1f} %",
                     share >= 0.6))
    for r in g.get("streams", {}).get("rows", []):
        kb = r["gateway"]["kb_per_stream"]
        rows.append((f"{r['streams']:,} concurrent slow streams: 100 % success, < 20 KB each in the gateway",
                     f"{pct(r['success_rate'])}, {fmt(kb, 1)} KB per stream",
                     r["success_rate"] >= 1.0 and kb is not None and kb < 20))
    return rows


def gateway_best_throughput(g):
    best = {}
    for r in g.get("saturation", {}).get("rows", []):
        if r["target"] not in best or r["jobs_per_s"] > best[r["target"]]["jobs_per_s"]:
            best[r["target"]] = r
    return best


def md_gateway(g):
    out = []
    ov = g.get("overhead")
    if ov:
        out.append("Added latency over the direct call (ms): per repetition, the path's percentile "
                   "minus the direct call's in the same repetition, then the median over the "
                   f"{ov['reps']} repetitions; × lower = Portkey's added latency / the gateway's "
                   "(goals: ≥ 3× at p50, ≥ 10× at p99). Streams: first content chunk (TTFC) and "
                   "last (TTLC).")
        out.append("")
        out.append("| mode | rate/s | metric | gateway p50 / p90 / p99 | Portkey p50 / p90 / p99 | × lower p50 / p90 / p99 | success gateway · Portkey |")
        out.append("|---|---|---|---|---|---|---|")
        for c in ov["cells"]:
            for metric in (["ttfc_ms", "latency_ms"] if c["stream"] else ["latency_ms"]):
                ours = c["added"].get("gateway", {}).get(metric)
                theirs = c["added"].get("peer", {}).get(metric)
                if not ours:
                    continue
                label = {"ttfc_ms": "TTFC", "latency_ms": "TTLC" if c["stream"] else "latency"}[metric]
                triple = lambda d: " / ".join(fmt(d[p], 3) for p in PCTS) if d else "–"
                ratios = " / ".join(fmt_ratio(ratio_lower(ours[p], theirs[p] if theirs else None))
                                    for p in PCTS)
                succ = " · ".join(pct(c["targets"][t]["min_success_rate"]) if t in c["targets"] else "–"
                                  for t in ("gateway", "peer"))
                out.append(f"| {'stream' if c['stream'] else 'plain'} | {c['rate']} | {label} | "
                           f"**{triple(ours)}** | {triple(theirs)} | {ratios} | {succ} |")
        out.append("")
        out.append("Each path's own latency in the same runs:")
        out.append("")
        out.append(md_overhead(ov).rstrip())
        out.append("")
    sat = g.get("saturation")
    if sat and sat["rows"]:
        out.append(f"Maximum throughput: instant provider `{sat['model']}`, closed loop; req/s is "
                   "the median of the runs; CPU is µs per request (user+system, all threads) and "
                   "cores busy. `dispatch` is the C++ client library straight to the broker, "
                   "`gateway` the same broker and worker behind dispatch-gateway.")
        out.append("")
        names = ("loadgen", "gateway", "broker", "worker", "fake", "peer")
        out.append("| path | in flight | req/s (runs) | success | p50 / p99 ms | CPU µs/req: "
                   + " · ".join(names) + " | cores busy: " + " · ".join(names) + " | max load |")
        out.append("|---|---|---|---|---|---|---|---|")
        for r in sat["rows"]:
            p = r["processes"]
            cpu = " · ".join(fmt(p.get(n, {}).get("cpu_us_per_job"), 1) for n in names)
            cores = " · ".join(fmt(p.get(n, {}).get("cpu_cores"), 2) for n in names)
            runs = ", ".join(f"{v:.0f}" for v in r["runs_jobs_per_s"])
            out.append(f"| {r['target']} | {r['concurrency']} | **{r['jobs_per_s']:.0f}** ({runs}) | "
                       f"{pct(r['success_rate'])} | {fmt(r['latency_ms']['p50'])} / {fmt(r['latency_ms']['p99'])} | "
                       f"{cpu} | {cores} | {fmt(r['load_avg'], 1)} |")
        out.append("")
    streams = g.get("streams")
    if streams and streams["rows"]:
        out.append(f"Concurrent slow streams through one gateway: provider `{streams['model']}` "
                   "(20 chunks over ~2 s), every request sent at once on its own HTTP connection "
                   "(libcurl multi), one broker, one worker with --concurrency streams+100, the "
                   "gateway's `limits.max_connections` streams+2000; fresh processes per level. "
                   "KB per stream = (peak RSS − idle RSS) / what the process held at its peak: the "
                   "gateway the connections open at once, the broker every job, the worker the "
                   "provider's peak of active streams.")
        out.append("")
        out.append("| streams | success | open at once (client) / streaming at provider | TTFC p50/p99 ms | TTLC p50/p99/max ms | gateway RSS idle → peak MB | KB per stream: gateway · broker · worker | CPU s: gateway · broker · worker · fake | max load |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for r in streams["rows"]:
            gw, b, w = r["gateway"], r["broker"], r["worker"]
            out.append(
                f"| {r['streams']} | {pct(r['success_rate'])} | {r['peak_open_at_client']} / "
                f"{r['peak_active_streams_at_provider']} | {fmt(r['ttfc_ms']['p50'], 0)} / {fmt(r['ttfc_ms']['p99'], 0)} | "
                f"{fmt(r['ttlc_ms']['p50'], 0)} / {fmt(r['ttlc_ms']['p99'], 0)} / {fmt(r['ttlc_ms']['max'], 0)} | "
                f"{gw['rss_idle_kb'] / 1024:.1f} → {gw['rss_peak_kb'] / 1024:.1f} | "
                f"**{fmt(gw['kb_per_stream'], 1)}** · {fmt(b['kb_per_stream'], 1)} · {fmt(w['kb_per_stream'], 1)} | "
                f"{fmt(gw['cpu_s'], 1)} · {fmt(b['cpu_s'], 1)} · {fmt(w['cpu_s'], 1)} · {fmt(r['fake']['cpu_s'], 1)} | "
                f"{fmt(r['load_avg'], 1)} |")
            if r["errors"]:
                out.append(f"|  | errors: {json.dumps(r['errors'])} ||||||||")
        out.append("")
    goals = gateway_goal_rows(g)
    if goals:
        out.append("The issue's goals against this run (benchmark targets, never test assertions):")
        out.append("")
        out.append("| goal | this run | verdict |")
        out.append("|---|---|---|")
        for goal, figure, met in goals:
            out.append(f"| {goal} | {figure} | {'met' if met else '**missed**'} |")
    return "\n".join(out).rstrip()


def md_text_block(entry, tool):
    command = entry["command"]
    if not command.startswith(tool):
        command = f"{tool} {command}"
    return f"Command: `{command}` (exit {entry['exit']})\n\n```\n{entry['output']}\n```"


def machine_info():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kb = proc_meminfo_kb("MemTotal")
    return {"nproc": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
            "mem_gb": round(mem_kb / 1024 / 1024, 1) if mem_kb else None,
            "load_avg_at_start": os.getloadavg()[0]}


def proc_meminfo_kb(field):
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


SECTIONS = [
    ("fake_capacity", "Fake provider capacity"),
    ("worker_stream", "Worker streaming (issue 3)"),
    ("overhead", "1. Overhead: latency added by the dispatcher"),
    ("saturation", "2. Saturation: maximum jobs/s and the bottleneck"),
    ("concurrency", "3. Concurrency and memory: slow streams on one worker"),
    ("scaleout", "4. Scale-out: 1, 2 and 4 workers"),
    ("peer", "5. A peer side by side: Portkey AI gateway"),
    ("gateway", "6. The HTTP gateway beside Portkey (issue 14)"),
    ("curve", "7. Security: CURVE against plaintext (issue 12)"),
    ("metrics", "8. Metrics on and off (issue 16)"),
]


def render_sections(summary, header):
    rendered = {}
    for key, _title in SECTIONS:
        if key == "peer":
            body = md_peer(summary) if ("overhead" in summary or "saturation" in summary) else None
            if body and ("peer" in json.dumps(summary.get("overhead", {}).get("cells", []))
                         or any(r["target"] == "peer" for r in summary.get("saturation", {}).get("rows", []))):
                rendered[key] = header + body
            continue
        if key not in summary:
            continue
        body = {"overhead": md_overhead, "saturation": md_saturation, "concurrency": md_concurrency,
                "scaleout": md_scaleout, "gateway": md_gateway, "curve": md_curve,
                "metrics": md_metrics,
                "fake_capacity": lambda e: md_text_block(e, "fake_provider_load"),
                "worker_stream": lambda e: md_text_block(e, "worker_stream_bench")}[key](summary[key])
        rendered[key] = header + body
    return rendered


def update_markdown(path, rendered):
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    for key, title in SECTIONS:
        if key not in rendered:
            continue
        begin, end = f"<!-- BEGIN bench:{key} -->", f"<!-- END bench:{key} -->"
        block = f"{begin}\n{rendered[key]}\n{end}"
        if begin in text and end in text:
            start = text.index(begin)
            stop = text.index(end) + len(end)
            text = text[:start] + block + text[stop:]
        else:
            text = text.rstrip() + f"\n\n## {title}\n\n{block}\n"
    with open(path, "w") as f:
        f.write(text)


# ----------------------------------------------------------------------------------------------


PART_NAMES = {"1": "overhead", "2": "saturation", "3": "concurrency", "4": "scaleout", "5": "peer",
              "6": "gateway", "gateway": "gateway", "7": "curve", "curve": "curve", "8": "metrics", "overhead": "overhead", "saturation": "saturation", "concurrency": "concurrency",
              "scaleout": "scaleout", "peer": "peer", "fake": "fake", "worker-stream": "worker-stream",
              "metrics": "metrics", "gateway-ab": "gateway-ab"}


def raise_priority(nice):
    """Linux groups tasks by session ("autogroups") and shares the CPU fairly between groups
    before nice values count, so a plain nice does nothing against other sessions' compilers.
    A session of our own with a raised autogroup priority does; every child inherits both."""
    try:
        os.setsid()
    except OSError:
        pass  # already a session leader
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(nice))
    except OSError as e:
        log(f"cannot set the autogroup priority: {e}")
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError as e:
        log(f"cannot set the priority: {e}")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="fake,worker-stream,1,2,3,4,5,6,7",
                   help="comma list of: 1|overhead 2|saturation 3|concurrency 4|scaleout "
                        "5|peer (Portkey inside parts 1 and 2) 6|gateway (dispatch-gateway beside "
                        "direct calls, the client library and Portkey) 7|curve (CURVE against "
                        "plaintext) fake worker-stream "
                        "8|metrics (saturation with broker and worker --metrics-listen off and "
                        "on, alternated; not in the default list) "
                        "gateway-ab (--gateway-before's binary against this build's gateway at "
                        "--rates, interleaved; not in the default list nor written)")
    p.add_argument("--metrics-concurrency", type=int, default=256,
                   help="part metrics: jobs in flight")
    p.add_argument("--quick", action="store_true", help="one short run per cell (a smoke run)")
    p.add_argument("--build-dir", default=os.path.join(ROOT, "build-release"))
    p.add_argument("--peer-dir", default=os.path.join(ROOT, ".bench-node"))
    p.add_argument("--out", default=None, help="results directory (default bench-results/DATE-TIME)")
    p.add_argument("--markdown", default=os.path.join(ROOT, "BENCHMARKS.md"))
    p.add_argument("--no-markdown", action="store_true",
                   help="do not touch BENCHMARKS.md nor the latest summary (implied by --quick)")
    p.add_argument("--latest", default=os.path.join(ROOT, "tests", "bench", "latest-summary.json"),
                   help="the summary kept in the repo; a run of some parts replaces only those")
    p.add_argument("--command", default="scripts/bench", help="the command line to record")
    p.add_argument("--render-only", metavar="SUMMARY_JSON",
                   help="run nothing: rewrite the generated sections of --markdown from a "
                        "summary.json of an earlier run")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--duration-s", type=float, default=None, help="part 1: measured seconds per run")
    p.add_argument("--rates", default="200,1000,2000")
    p.add_argument("--fake-threads", type=int, default=1)
    p.add_argument("--realtime", dest="realtime", action="store_true",
                   default=os.geteuid() == 0,
                   help="run the runner and everything it starts under SCHED_RR (priority 10): "
                        "on a shared machine wake-ups then do not wait for other work's time "
                        "slices (default as root; the kernel's RT throttling still leaves other "
                        "work 5 %% of the CPU)")
    p.add_argument("--no-realtime", dest="realtime", action="store_false")
    p.add_argument("--nice", type=int, default=-20 if os.geteuid() == 0 else 0,
                   help="scheduling priority of the runner and everything it starts: the machine "
                        "is shared, and a negative value keeps other work from distorting the "
                        "figures (default -20 as root)")
    p.add_argument("--stream-levels", default=None)
    p.add_argument("--worker-counts", default="1,2,4")
    p.add_argument("--gateway-before", default=None, metavar="PATH",
                   help="part gateway-ab: the dispatch-gateway binary to compare this build's "
                        "against (not in the default list and not written to BENCHMARKS.md)")
    p.add_argument("--gateway-stream-levels", default=None,
                   help="part 6: concurrent slow streams through one gateway (default 10000)")
    args = p.parse_args(argv)
    parts = set()
    for name in args.parts.split(","):
        name = name.strip()
        if not name:
            continue
        if name not in PART_NAMES:
            p.error(f"unknown part {name!r}")
        parts.add(PART_NAMES[name])
    args.part_set = parts
    q = args.quick
    # Latency percentiles of one 10 s run move with the background load: part 1 gets more
    # repetitions than the throughput parts unless --reps says otherwise.
    args.overhead_reps = args.reps or (1 if q else 5)
    args.gateway_reps = args.reps or (1 if q else 3)
    args.curve_reps = args.reps or (1 if q else 5)
    args.reps = args.reps or (1 if q else 3)
    args.duration_s = args.duration_s or (3 if q else 10)
    args.warmup_s = 1 if q else 2
    args.rates = [int(x) for x in args.rates.split(",")]
    args.model_plain = "gpt-bench"
    args.model_stream = "gpt-bench~chunk_delay_ms=1~tokens=10"
    args.model_instant = "gpt-bench"
    args.model_slow_stream = "gpt-bench~tokens=20~chunk_delay_ms=100"
    args.sat_jobs = 20000 if q else 100000
    args.sat_concurrency = [64, 256] if q else [16, 64, 256, 1024]
    args.sat_http_concurrency = [64] if q else [16, 64]
    args.sat_clients = 1
    args.sat_whole_concurrency = [64] if q else [64, 256]
    args.peer_jobs = 3000 if q else 15000
    args.peer_concurrency = [64] if q else [16, 64]
    args.stream_levels = [int(x) for x in (args.stream_levels or "1000,5000,10000").split(",")]
    args.worker_counts = [int(x) for x in args.worker_counts.split(",")]
    args.gateway_stream_levels = [int(x) for x in (args.gateway_stream_levels
                                                   or ("1000" if q else "10000")).split(",")]
    args.gateway_sat_concurrency = [64] if q else [64, 256]
    args.curve_sat_jobs = 20000 if q else 100000
    args.curve_concurrency = 256
    args.curve_rate = 1000
    args.scale_latency_ms = 50
    args.scale_worker_concurrency = 20
    args.scale_duration_s = 4 if q else 10
    args.fake_connections = 5000
    args.worker_streams = 5000
    now = datetime.datetime.now()
    args.date = now.strftime("%Y-%m-%d")
    args.out = args.out or os.path.join(ROOT, "bench-results", now.strftime("%Y-%m-%d-%H%M%S"))
    return args


def render_only(args):
    with open(args.render_only) as f:
        summary = json.load(f)
    machine = summary["machine"]
    results_dir = os.path.dirname(os.path.abspath(args.render_only))
    update_markdown(args.markdown, render_sections(summary, header_line(summary, machine, results_dir)))
    log(f"rewrote {args.markdown} from {args.render_only}")
    return 0


def header_line(summary, machine, results_dir):
    realtime = "SCHED_RR, " if summary.get("realtime") else ""
    return (f"_Generated by `{summary['command']}` on {summary['date']} · {machine['nproc']} × "
            f"{machine['cpu']}, kernel {machine['kernel']} · load average "
            f"{machine['load_avg_at_start']:.1f} at start, {summary['load_avg_at_end']:.1f} at end "
            f"(other work) · {realtime}autogroup nice {summary.get('nice', 0)} · results "
            f"`{os.path.relpath(results_dir, ROOT)}/`_\n\n")


def main(argv):
    args = parse_args(argv)
    if args.render_only:
        return render_only(args)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.nice:
        raise_priority(args.nice)
    if args.realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(10))  # inherited by children
        except OSError as e:
            log(f"cannot switch to SCHED_RR: {e}; running without")
            args.realtime = False
    os.makedirs(args.out, exist_ok=True)
    bench = Bench(args)
    machine = machine_info()
    started = time.monotonic()
    log(f"results in {args.out}; parts {sorted(args.part_set)}; machine {machine}")
    if "peer" in args.part_set and shutil.which("node") is None:
        raise RuntimeError("node is not installed: Portkey (part 5) needs it")
    try:
        if "fake" in args.part_set:
            bench.part_fake_capacity()
        if "worker-stream" in args.part_set:
            bench.part_worker_stream()
        with_peer = "peer" in args.part_set
        if "overhead" in args.part_set or with_peer:
            bench.part_overhead(with_peer)
        if "saturation" in args.part_set or with_peer:
            bench.part_saturation(with_peer)
        if "concurrency" in args.part_set:
            bench.part_concurrency()
        if "scaleout" in args.part_set:
            bench.part_scaleout()
        if "gateway" in args.part_set:
            bench.part_gateway()
        if "curve" in args.part_set:
            bench.part_curve()
        if "gateway-ab" in args.part_set:
            bench.part_gateway_ab()
        if "metrics" in args.part_set:
            bench.part_metrics()
    finally:
        stop_all()
        elapsed = time.monotonic() - started
        summary = {"date": args.date, "command": args.command, "quick": args.quick, "nice": args.nice,
                   "realtime": args.realtime,
                   "machine": machine, "load_avg_at_end": os.getloadavg()[0],
                   "elapsed_s": round(elapsed, 1), **bench.summary}
        with open(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        log(f"summary: {os.path.join(args.out, 'summary.json')} ({elapsed:.0f} s)")
    if args.quick:
        log("quick run: BENCHMARKS.md and the latest summary are left alone")
    elif not args.no_markdown and bench.summary:
        merged = {}
        if os.path.exists(args.latest):
            with open(args.latest) as f:
                merged = json.load(f).get("parts", {})
        for key, value in bench.summary.items():
            merged[key] = dict(value, run={k: summary[k] for k in ("date", "command", "machine",
                                                                  "load_avg_at_end")})
        with open(args.latest, "w") as f:
            json.dump({"note": "latest full figures of scripts/bench, per part", "parts": merged},
                      f, indent=1)
        header = header_line(summary, machine, args.out)
        update_markdown(args.markdown, render_sections(summary, header))
        log(f"updated {args.markdown}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    finally:
        stop_all()
