#!/usr/bin/env python3
"""Turns the raw runs of bench/load.sh (oha JSON + /proc samples of the mock, nginx and
tollgate) into the markdown report. Standard library only. Called by load.sh; not meant
to be run alone."""

from __future__ import annotations

import argparse
import datetime
import json
import sqlite3
from pathlib import Path

# Targets from the issue.
ADDED_P50_MS = 0.15
ADDED_P99_MS = 0.30
CPU_PLAIN_US = 40.0
CPU_STREAM_US = 60.0
PLAIN_RPS = 20_000
RSS_LOAD_MB = 40.0
RSS_OPEN_MB = 60.0

PATHS = {"direct": "straight to the mock", "nginx": "nginx, no logic", "tollgate": "**tollgate**"}
PROXIES = ("nginx", "tollgate")


def load_runs(work: Path, clock_ticks: int) -> dict[str, dict]:
    runs = {}
    for meta_path in sorted(work.glob("*.meta.json")):
        meta = json.loads(meta_path.read_text())
        oha = json.loads((work / f"{meta['name']}.oha.json").read_text())
        codes = {int(k): v for k, v in oha.get("statusCodeDistribution", {}).items()}
        errors = sum(oha.get("errorDistribution", {}).values())
        requests = sum(codes.values())
        ok = sum(v for k, v in codes.items() if 200 <= k < 300)
        wall = oha["summary"]["total"]
        percentiles = oha["latencyPercentiles"]
        cpu_s = meta["cpu_ticks"] / clock_ticks
        run = {
            **meta,
            "requests": requests,
            "failed": requests - ok + errors,
            "error_kinds": {**{str(k): v for k, v in codes.items() if not 200 <= k < 300},
                            **oha.get("errorDistribution", {})},
            "rps": ok / wall if wall else 0.0,
            "p50_ms": (percentiles.get("p50") or 0) * 1000,
            "p99_ms": (percentiles.get("p99") or 0) * 1000,
            "wall_s": wall,
            "cpu_s": cpu_s,
        }
        # Busy time of the machine that was not tollgate's, nginx's, the mock's or
        # oha's: other processes, as a share of one core.
        run["other_busy"] = other_busy(meta, clock_ticks)
        if meta["path"] in PROXIES and requests:
            run["cpu_us_per_req"] = cpu_s * 1e6 / requests
            run["busy"] = cpu_s / wall if wall else 0.0
        runs[meta["name"]] = run
    return runs


def other_busy(meta: dict, clock_ticks: int) -> float:
    """CPU the machine spent on anything but the bench's own processes, per core-second."""
    ours = (meta["tollgate_ticks"] + meta["nginx_ticks"] + meta["mock_ticks"]
            + seconds(meta["oha_times"]) * clock_ticks)
    return max(0.0, (meta["machine_ticks"] - ours) / clock_ticks / (meta["wall_ms"] / 1000))


def discarded_runs(work: Path, clock_ticks: int) -> list[dict]:
    """Runs set aside (and repeated) because other processes were busy during them."""
    runs = []
    for path in sorted(work.glob("*.discarded.json")):
        meta = json.loads(path.read_text())
        oha_path = work / path.name.replace(".discarded.json", ".oha-discarded.json")
        oha = json.loads(oha_path.read_text())
        requests = sum(oha.get("statusCodeDistribution", {}).values())
        runs.append({**meta, "requests": requests, "other_busy": other_busy(meta, clock_ticks)})
    return runs


def seconds(times_line: str) -> float:
    """User + system seconds from a bash `times` line: `0m1.250s 0m0.310s`."""
    total = 0.0
    for field in times_line.split():
        minutes, _, rest = field.partition("m")
        total += float(minutes or 0) * 60 + float(rest.rstrip("s") or 0)
    return total


def mb(kib: float) -> float:
    """/proc reports KiB; targets are in MB (10^6 bytes)."""
    return kib * 1024 / 1e6


def fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "**MISSED**"


def ledger_summary(path: Path) -> tuple[int, dict[str, int]]:
    if not path.exists():
        return 0, {}
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        outcomes = dict(connection.execute(
            "SELECT outcome, COUNT(*) FROM requests GROUP BY outcome ORDER BY 2 DESC"))
    finally:
        connection.close()
    return sum(outcomes.values()), outcomes


class Figures:
    """The issue's summary figures for one path, each measured in this run."""

    def __init__(self, runs: dict[str, dict], path: str, conns: int, open_streams: int):
        get = lambda name: runs.get(f"{name}-{path}")  # noqa: E731
        direct = lambda name: runs.get(f"{name}-direct")  # noqa: E731
        self.path = path
        self.p1, self.d1 = get("plain-1"), direct("plain-1")
        self.s1, self.ds1 = get("stream-1"), direct("stream-1")
        self.pn, self.sn = get(f"plain-{conns}"), get(f"stream-{conns}")
        self.open = get(f"open-{open_streams}")

    def added(self, which: str, kind: str = "plain") -> float | None:
        run, direct = (self.p1, self.d1) if kind == "plain" else (self.s1, self.ds1)
        if not run or not direct:
            return None
        if self.path == "direct":
            return run[f"{which}_ms"]
        return run[f"{which}_ms"] - direct[f"{which}_ms"]

    def cpu(self, kind: str) -> float | None:
        run = self.pn if kind == "plain" else self.sn
        return run.get("cpu_us_per_req") if run else None

    def peak_rss(self) -> float | None:
        loaded = [r for r in (self.pn, self.sn, self.p1, self.s1) if r]
        return max(mb(r["hwm_kb"]) for r in loaded) if loaded else None


def summary(say, runs: dict[str, dict], args) -> None:
    """The issue's table: each path side by side, and tollgate as a multiple of nginx."""
    c, n = args.conns, args.open_streams
    figures = {p: Figures(runs, p, c, n) for p in PATHS}
    say(f"| path | added p50 / p99 at 1 conn, ms | req/s at {c} conn | CPU µs per plain / "
        f"20-chunk stream request | peak RSS MB | RSS MB with {n} open streams |")
    say("|---|--:|--:|--:|--:|--:|")
    for path, label in PATHS.items():
        f = figures[path]
        if f.p1 is None and f.pn is None:
            continue
        sign = "" if path == "direct" else "+"
        latency = (f"{sign}{fmt(f.added('p50'), 3)} / {sign}{fmt(f.added('p99'), 3)}"
                   + (" (absolute)" if path == "direct" else ""))
        rps = fmt(f.pn["rps"], 0) if f.pn else "–"
        cpu = "—" if path == "direct" else f"{fmt(f.cpu('plain'), 1)} / {fmt(f.cpu('stream'), 1)}"
        rss = fmt(f.peak_rss(), 1)
        open_rss = fmt(mb(f.open["hwm_kb"]), 1) if f.open else "—"
        say(f"| {label} | {latency} | {rps} | {cpu} | {rss} | {open_rss} |")
    t, g = figures["tollgate"], figures["nginx"]
    if t.pn and g.pn:
        ratio = lambda a, b: f"{a / b:.2f}×" if a is not None and b else "–"  # noqa: E731
        say(f"| tollgate ÷ nginx | {ratio(t.added('p50'), g.added('p50'))} / "
            f"{ratio(t.added('p99'), g.added('p99'))} | {ratio(t.pn['rps'], g.pn['rps'])} | "
            f"{ratio(t.cpu('plain'), g.cpu('plain'))} / {ratio(t.cpu('stream'), g.cpu('stream'))} | "
            f"{ratio(t.peak_rss(), g.peak_rss())} | "
            f"{ratio(mb(t.open['hwm_kb']) if t.open else None, mb(g.open['hwm_kb']) if g.open else None)} |")
    say("")
    say("Added latency is the path's p50 (p99) minus the mock's own at the same moment; the "
        "mock's row is absolute. CPU is the proxy process's utime+stime over the run per request; "
        "peak RSS the largest VmHWM of its plain and stream runs.")
    say("")


def detail(say, runs: dict[str, dict], args) -> None:
    c, n = args.conns, args.open_streams
    say("| scenario | path | conns | requests | failed | req/s | p50 ms | p99 ms "
        "| proxy CPU µs / req | proxy core busy | peak RSS MB | other load |")
    say("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    names = []
    for base in ["plain-1", f"plain-{c}", "stream-1", f"stream-{c}"]:
        names += [f"{base}-{path}" for path in PATHS]
    names += [f"open-{n}-{path}" for path in PROXIES]
    for name in names:
        run = runs.get(name)
        if run is None:
            continue
        proxy = run["path"] in PROXIES
        if name.startswith("open-"):
            scenario = f"{n} open slow streams (20 chunks, {args.slow_delay_ms} ms apart)"
        elif run["kind"] == "plain":
            scenario = "plain chat"
        else:
            scenario = "streaming chat (20 chunks)"
        say("| " + " | ".join([
            scenario,
            PATHS[run["path"]],
            str(run["conns"]),
            f"{run['requests']:,}",
            str(run["failed"]) + (f" {run['error_kinds']}" if run["failed"] else ""),
            fmt(run["rps"], 0),
            fmt(run["p50_ms"], 3),
            fmt(run["p99_ms"], 3),
            fmt(run["cpu_us_per_req"], 1) if proxy else "",
            f"{run['busy'] * 100:.0f}%" if proxy else "",
            fmt(mb(run["hwm_kb"]), 1),
            f"{run['other_busy'] * 100:.0f}%",
        ]) + " |")
    say("")


def notes(say, runs: dict[str, dict], args, idle, stops) -> None:
    n = args.open_streams
    idle_mb = ", ".join(f"{mb(i['rss_kb']):.1f}" for _, i in sorted(idle.items()))
    say(f"- A fresh tollgate serves each group (plain, stream, open streams), after a short warm-up "
        f"that is not in the table; its idle RSS 1 s after startup: {idle_mb} MB. nginx and the "
        "mock run throughout; peak RSS (the mock's for the direct rows) is reset before each run.")
    say(f"- Peak RSS is VmHWM (reset possible: {args.hwm_reset}). CPU is utime+stime of the whole "
        "proxy process (all threads) from /proc/PID/stat over the run, divided by the requests "
        "it served; core busy = that CPU time / wall time.")
    say("- req/s counts 2xx answers; latency is oha's, to the last byte of the response.")
    open_run = runs.get(f"open-{n}-tollgate")
    if open_run:
        idle_fds = idle.get(open_run["instance"], {}).get("fds", 0)
        concurrent = max(0, (open_run["max_fds"] - idle_fds) // 2)
        say(f"- During the open-streams run tollgate held up to {open_run['max_fds']} file "
            f"descriptors ({idle_fds} idle), i.e. about {concurrent} streams open at once "
            "(one client and one upstream socket each).")
    timed = [r for r in runs.values() if not r["name"].startswith("warm-")]
    noisiest = max(timed, key=lambda r: r["other_busy"], default=None)
    if noisiest is not None:
        note = (" — **other work shared the machine; rerun on a quiet machine**"
                if noisiest["other_busy"] > 0.10 else "")
        say(f"- Other load: CPU used on the machine by anything but tollgate, nginx, the mock "
            f"and oha, as a share of one core; at most {noisiest['other_busy'] * 100:.0f}% "
            f"({noisiest['name']}){note}.")
    discarded = discarded_runs(args.work, args.clock_ticks)
    if discarded:
        listed = ", ".join(f"{r['name']} ({r['other_busy'] * 100:.0f}%)" for r in discarded)
        say(f"- Runs repeated because other processes were busy during them: {listed}.")
    rows_total, outcomes = ledger_summary(args.ledger)
    served = sum(r["requests"] for r in [*runs.values(), *discarded] if r["path"] == "tollgate")
    exits = ", ".join(f"exit {s['exit']} in {s['ms']} ms" for _, s in sorted(stops.items()))
    rows_match = "one each" if rows_total == served else "**MISMATCH**"
    say(f"- SIGTERM after each group: {exits}. Ledger rows: {rows_total:,} for {served:,} "
        f"requests sent through tollgate, {rows_match} "
        f"(outcomes: {', '.join(f'{k} {v:,}' for k, v in outcomes.items()) or 'none'}).")
    say("")


def targets(say, runs: dict[str, dict], args, idle) -> None:
    c, n = args.conns, args.open_streams
    say("## Against the targets")
    say("")
    say("| target | measured | verdict |")
    say("|---|---|---|")

    def added(kind: str) -> None:
        direct, through = runs.get(f"{kind}-1-direct"), runs.get(f"{kind}-1-tollgate")
        if not direct or not through:
            return
        d50 = through["p50_ms"] - direct["p50_ms"]
        d99 = through["p99_ms"] - direct["p99_ms"]
        say(f"| added latency, {kind}, 1 conn, p50 ≤ {ADDED_P50_MS} ms | {d50:.3f} ms "
            f"({through['p50_ms']:.3f} vs {direct['p50_ms']:.3f}) | {verdict(d50 <= ADDED_P50_MS)} |")
        say(f"| added latency, {kind}, 1 conn, p99 ≤ {ADDED_P99_MS} ms | {d99:.3f} ms "
            f"({through['p99_ms']:.3f} vs {direct['p99_ms']:.3f}) | {verdict(d99 <= ADDED_P99_MS)} |")

    added("plain")
    added("stream")
    for kind, limit in [("plain", CPU_PLAIN_US), ("stream", CPU_STREAM_US)]:
        run = runs.get(f"{kind}-{c}-tollgate")
        if run and "cpu_us_per_req" in run:
            label = "plain request" if kind == "plain" else "20-chunk stream"
            say(f"| CPU per {label} ≤ {limit:.0f} µs ({c} conns) | {run['cpu_us_per_req']:.1f} µs "
                f"| {verdict(run['cpu_us_per_req'] <= limit)} |")
    run = runs.get(f"plain-{c}-tollgate")
    if run and "cpu_us_per_req" in run:
        capacity = 1e6 / run["cpu_us_per_req"]
        say(f"| plain req/s on one core ≥ {PLAIN_RPS:,} | {run['rps']:,.0f} req/s measured with "
            f"tollgate's core {run['busy'] * 100:.0f}% busy (CPU cost implies ≈ {capacity:,.0f} req/s "
            f"at 100%) | {verdict(run['rps'] >= PLAIN_RPS)} |")
    loaded = [runs[r] for r in (f"plain-{c}-tollgate", f"stream-{c}-tollgate") if r in runs]
    if loaded:
        idle_mb = ", ".join(f"{mb(i['rss_kb']):.1f}" for _, i in sorted(idle.items()))
        peak = max(mb(r["hwm_kb"]) for r in loaded)
        say(f"| peak RSS under load ≤ {RSS_LOAD_MB:.0f} MB | {peak:.1f} MB "
            f"(idle {idle_mb} MB) | {verdict(peak <= RSS_LOAD_MB)} |")
    open_run = runs.get(f"open-{n}-tollgate")
    if open_run:
        peak = mb(open_run["hwm_kb"])
        say(f"| peak RSS with {n} open streams ≤ {RSS_OPEN_MB:.0f} MB | {peak:.1f} MB "
            f"| {verdict(peak <= RSS_OPEN_MB)} |")
    say("")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    for flag in ["cpu-model", "pinning", "duration", "hwm-reset", "oha-version", "commit",
                 "nginx-version", "auth", "limits"]:
        parser.add_argument(f"--{flag}", required=True)
    for flag in ["cores", "conns", "open-streams", "slow-delay-ms", "clock-ticks", "body-bytes"]:
        parser.add_argument(f"--{flag}", type=int, required=True)
    parser.add_argument("--ledger", type=Path, required=True)
    args = parser.parse_args()

    runs = load_runs(args.work, args.clock_ticks)
    idle = {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in args.work.glob("idle-*.json")}
    stops = {int(p.stem.split("-")[1]): json.loads(p.read_text()) for p in args.work.glob("stop-*.json")}
    out: list[str] = []
    say = out.append

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    say("# tollgate load bench")
    say("")
    say(f"- date: {now}; commit {args.commit}")
    say(f"- machine: {args.cpu_model}, {args.cores} cores; {args.pinning}")
    say(f"- command: `bench/load.sh` ({args.duration} per timed run; {args.oha_version}, "
        f"1 worker thread; mock upstream with 1 thread; nginx {args.nginx_version}, 1 worker)")
    say(f"- request: `POST /v1/chat/completions`, a {args.body_bytes:,}-byte chat body, plain or "
        "`\"stream\":true` (20 content chunks, usage-only chunk hidden by tollgate), HTTP/1.1 "
        f"keep-alive; tollgate release build, {args.auth} mode, rate limits {args.limits} (a custom "
        "tier no run reaches), SQLite ledger in a temp dir, metrics on, log filter `warn`")
    say("")
    summary(say, runs, args)
    detail(say, runs, args)
    notes(say, runs, args, idle, stops)
    targets(say, runs, args, idle)
    print("\n".join(out))


if __name__ == "__main__":
    main()
