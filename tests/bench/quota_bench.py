#!/usr/bin/env python3
"""Fleet-wide quota benchmark (issue 15; figures in BENCHMARKS.md, "Provider quotas").

Starts a fake provider that enforces --limit-rpm / --limit-tpm per API key, one broker (with a
broker.yaml holding the same limits, or none with --no-limits), N workers, then runs a
`dispatch batch` of --jobs jobs at priority batch while an interactive `dispatch chat` is sent
every --probe-ms. Prints one JSON object: jobs that succeeded, 429s as a share of the
provider's attempts, achieved request rate as a share of the limit, wall time against the
ideal (jobs / limit), and the interactive jobs' latency percentiles (their queue wait plus one
CLI start and one fake-provider answer).

  tests/bench/quota_bench.py --build build-ci --jobs 5000 --rpm 1200 --tpm 60000 --long-every 4
  tests/bench/quota_bench.py --build build-ci --jobs 5000 --rpm 1200 --tpm 60000 --long-every 4 --no-limits

Only the Python standard library. Every process it starts is stopped by PID at exit.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHILDREN = []


def start(argv, **kwargs):
    process = subprocess.Popen(argv, **kwargs)
    CHILDREN.append(process)
    return process


def stop_all():
    for process in reversed(CHILDREN):
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in reversed(CHILDREN):
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def percentile(values, share):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def write_batch(path, jobs, long_every, long_words):
    long_prompt = " ".join(["word"] * long_words)
    with open(path, "w") as out:
        for i in range(jobs):
            prompt = long_prompt if long_every and i % long_every == 0 else f"question {i}"
            body = {"model": "openai/gpt-4o-mini", "max_tokens": 16,
                    "messages": [{"role": "user", "content": prompt}]}
            out.write(json.dumps({"custom_id": f"q{i}", "method": "POST",
                                  "url": "/v1/chat/completions", "body": body}) + "\n")


def start_stack(args, tmp):
    bin_dir = os.path.join(args.build, "bin")
    fake_args = [os.path.join(bin_dir, "fake-provider"), "--quiet", "--tokens", "8",
                 "--limit-rpm", str(args.rpm)]
    if args.tpm:
        fake_args += ["--limit-tpm", str(args.tpm)]
    fake = start(fake_args, stdout=subprocess.PIPE, text=True)
    port = fake.stdout.readline().strip()
    broker_args = [os.path.join(bin_dir, "dispatch-broker"), "--frontend", "tcp://127.0.0.1:0",
                   "--backend", "tcp://127.0.0.1:0", "--log-level", "warn",
                   "--queue-timeout-ms", "3600000"]
    if not args.no_limits:
        config = os.path.join(tmp, "broker.yaml")
        with open(config, "w") as out:
            tpm = f", tpm: {args.tpm}" if args.tpm else ""
            out.write(f"limits:\n  openai: {{rpm: {args.rpm}{tpm}}}\n")
        broker_args += ["--config", config]
    broker = start(broker_args, stdout=subprocess.PIPE, text=True)
    line = broker.stdout.readline()
    fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
    worker_yaml = os.path.join(tmp, "worker.yaml")
    with open(worker_yaml, "w") as out:
        out.write(f"defaults: {{retry_count: {args.retry_count}}}\nproviders:\n"
                  f"  openai: {{type: openai, base_url: \"http://127.0.0.1:{port}/v1\", "
                  "api_key_env: FAKE_KEY}\n")
    env = dict(os.environ, FAKE_KEY="sk-bench")
    for _ in range(args.workers):
        start([os.path.join(bin_dir, "dispatch-worker"), "--broker", fields["backend"],
               "--config", worker_yaml, "--log-level", "warn"], env=env,
              stderr=open(os.path.join(tmp, "worker.log"), "a"))
    time.sleep(2)  # the workers register
    return port, fields["frontend"]


def probe_interactive(cli, frontend, every_ms, stop, latencies, failures):
    while not stop.is_set():
        began = time.monotonic()
        done = subprocess.run([cli, "chat", "--broker", frontend, "--provider", "openai",
                               "--model", "gpt-4o-mini", "--retry-count", "0", "ping"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elapsed = (time.monotonic() - began) * 1000
        if done.returncode == 0:
            latencies.append(elapsed)
        else:
            failures.append(elapsed)
        stop.wait(max(0, every_ms - elapsed) / 1000)


def run(args):
    tmp = tempfile.mkdtemp(prefix="quota-bench-")
    port, frontend = start_stack(args, tmp)
    batch_in = os.path.join(tmp, "in.jsonl")
    batch_out = os.path.join(tmp, "out.jsonl")
    write_batch(batch_in, args.jobs, args.long_every, args.long_words)
    cli = os.path.join(args.build, "bin", "dispatch")
    stop = threading.Event()
    latencies, failures = [], []
    prober = threading.Thread(target=probe_interactive,
                              args=(cli, frontend, args.probe_ms, stop, latencies, failures))
    began = time.monotonic()
    prober.start()
    subprocess.run([cli, "batch", batch_in, "-o", batch_out, "--broker", frontend,
                    "--concurrency", str(args.concurrency)], stdout=subprocess.DEVNULL,
                   stderr=open(os.path.join(tmp, "batch.log"), "w"))
    wall = time.monotonic() - began
    stop.set()
    prober.join()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_fake/stats") as reply:
        stats = json.load(reply)
    succeeded = failed = 0
    with open(batch_out) as results:
        for line in results:
            if json.loads(line).get("error") is None:
                succeeded += 1
            else:
                failed += 1
    attempts = stats["attempts_total"]
    requests_ok = attempts - stats["status_429_total"]
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "limits_at_broker": not args.no_limits, "jobs": args.jobs, "workers": args.workers,
        "rpm": args.rpm, "tpm": args.tpm, "long_every": args.long_every,
        "concurrency": args.concurrency,
        "succeeded": succeeded, "failed": failed, "attempts": attempts,
        "status_429": stats["status_429_total"],
        "share_429": round(stats["status_429_total"] / attempts, 5) if attempts else None,
        "retries": attempts - succeeded - failed - len(latencies) - len(failures),
        "wall_s": round(wall, 1), "ideal_s": round(args.jobs / args.rpm * 60, 1),
        "achieved_rate_share": round(requests_ok / wall / (args.rpm / 60), 3),
        "interactive": {"count": len(latencies), "failed": len(failures),
                        "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
                        "max_ms": max(latencies) if latencies else None},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default=os.path.join(ROOT, "build-ci"))
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rpm", type=int, default=1200)
    parser.add_argument("--tpm", type=int, default=0)
    parser.add_argument("--long-every", type=int, default=0, help="every Nth job has a long prompt")
    parser.add_argument("--long-words", type=int, default=400)
    parser.add_argument("--retry-count", type=int, default=5)
    parser.add_argument("--probe-ms", type=int, default=1000)
    # In flight at once: the client gives a job up after its timeout plus its queue timeout
    # (90 s by default), so more than 90 s of quota queued at once would be left incomplete.
    parser.add_argument("--concurrency", type=int, default=600)
    parser.add_argument("--no-limits", action="store_true")
    args = parser.parse_args()
    try:
        print(json.dumps(run(args), indent=1))
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
