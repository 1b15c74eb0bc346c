#!/usr/bin/env python3
"""Steady-rate load and memory sampler for bench/soak.sh (standard library only).

Sends chat completions to tollgate at a fixed rate (a quarter of them streamed;
non-streamed answers carry their cost, which is summed exactly),
samples tollgate's RSS and open file descriptors every few seconds, and writes
samples.csv and summary.json into --out. Exits non-zero when a request failed.
"""

import argparse
import csv
import http.client
import json
import os
import queue
import threading
import time
from decimal import Decimal

PLAIN = json.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say something about a fox."}]}
).encode()
STREAM = json.dumps(
    {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "Say something about a fox."}],
    }
).encode()


def proc_status(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Totals:
    def __init__(self):
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = 0
        self.first_failures = []
        self.streams = 0
        self.cost = Decimal(0)
        self.late = 0

    def record(self, cost=None, failure=None):
        with self.lock:
            if failure is None:
                self.ok += 1
                # Only a non-streamed answer carries x-tollgate-cost-usd.
                if cost is None:
                    self.streams += 1
                else:
                    self.cost += cost
            else:
                self.failed += 1
                if len(self.first_failures) < 5:
                    self.first_failures.append(failure)


def worker(host, port, key, tickets, totals):
    conn = None
    while True:
        ticket = tickets.get()
        if ticket is None:
            return
        stream = ticket % 4 == 0
        for attempt in (1, 2):
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(host, port, timeout=30)
                conn.request(
                    "POST",
                    "/v1/chat/completions",
                    body=STREAM if stream else PLAIN,
                    headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
                )
                response = conn.getresponse()
                body = response.read()
                if response.status != 200:
                    totals.record(failure=f"{response.status}: {body[:200]!r}")
                elif stream and b"[DONE]" not in body:
                    totals.record(failure="stream without [DONE]")
                elif stream:
                    totals.record()
                else:
                    totals.record(cost=Decimal(response.getheader("x-tollgate-cost-usd")))
                break
            except (ConnectionError, http.client.RemoteDisconnected) as error:
                # A keep-alive connection the server closed while idle: the request
                # never reached it, so one retry on a new connection is not a double.
                conn = None
                if attempt == 2:
                    totals.record(failure=repr(error))
            except (OSError, http.client.HTTPException) as error:
                conn = None
                totals.record(failure=repr(error))
                break


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True, help="tollgate's host:port")
    parser.add_argument("--key", required=True)
    parser.add_argument("--pid", type=int, required=True, help="tollgate's pid, to sample")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second")
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    host, port = args.addr.rsplit(":", 1)

    totals = Totals()
    tickets = queue.Queue(maxsize=args.workers * 4)
    workers = [
        threading.Thread(target=worker, args=(host, int(port), args.key, tickets, totals), daemon=True)
        for _ in range(args.workers)
    ]
    for thread in workers:
        thread.start()

    samples = []
    stop = threading.Event()

    def sampler():
        start = time.monotonic()
        while not stop.is_set():
            with totals.lock:
                done = totals.ok + totals.failed
            samples.append(
                {
                    "t_s": round(time.monotonic() - start, 1),
                    "rss_kb": proc_status(args.pid, "VmRSS"),
                    "hwm_kb": proc_status(args.pid, "VmHWM"),
                    "fds": fd_count(args.pid),
                    "threads": proc_status(args.pid, "Threads"),
                    "requests": done,
                }
            )
            stop.wait(args.sample_every)

    sampling = threading.Thread(target=sampler, daemon=True)
    sampling.start()

    # Fixed schedule: ticket n is due at start + n / rate. A late schedule is counted,
    # not made up for in a burst beyond the queue's size.
    start = time.monotonic()
    total = int(args.rate * args.duration)
    for n in range(total):
        due = start + n / args.rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1.0:
            totals.late += 1
        tickets.put(n)
    for _ in workers:
        tickets.put(None)
    for thread in workers:
        thread.join()
    elapsed = time.monotonic() - start
    stop.set()
    sampling.join()

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "samples.csv"), "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(samples[0].keys()))
        writer.writeheader()
        writer.writerows(samples)

    # Growth is judged after the first minute, once pools, caches and the allocator
    # have reached their working size.
    warm = [s for s in samples if s["t_s"] >= 60] or samples
    half = len(warm) // 2
    first_half_max = max(s["rss_kb"] for s in warm[: max(half, 1)])
    second_half_max = max(s["rss_kb"] for s in warm[half:])
    # Least-squares slope of RSS over time after warm-up, KiB per minute.
    n = len(warm)
    mean_t = sum(s["t_s"] for s in warm) / n
    mean_r = sum(s["rss_kb"] for s in warm) / n
    var = sum((s["t_s"] - mean_t) ** 2 for s in warm)
    slope = (
        sum((s["t_s"] - mean_t) * (s["rss_kb"] - mean_r) for s in warm) / var * 60 if var else 0.0
    )
    summary = {
        "requests_sent": total,
        "ok": totals.ok,
        "failed": totals.failed,
        "first_failures": totals.first_failures,
        "late_tickets": totals.late,
        "streams_ok": totals.streams,
        "plain_cost_told_usd": str(totals.cost),
        "elapsed_s": round(elapsed, 1),
        "achieved_rate": round(total / elapsed, 2),
        "samples": len(samples),
        "rss_kb_at_60s": warm[0]["rss_kb"],
        "rss_kb_end": samples[-1]["rss_kb"],
        "rss_kb_peak": max(s["rss_kb"] for s in samples),
        "hwm_kb_end": samples[-1]["hwm_kb"],
        "rss_kb_first_half_max": first_half_max,
        "rss_kb_second_half_max": second_half_max,
        "rss_slope_kb_per_min": round(slope, 2),
        "fds_min": min(s["fds"] for s in warm),
        "fds_max": max(s["fds"] for s in warm),
        "threads_max": max(s["threads"] for s in samples),
    }
    with open(os.path.join(args.out, "summary.json"), "w") as out:
        json.dump(summary, out, indent=2)
    print(json.dumps(summary, indent=2))
    return 1 if totals.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
