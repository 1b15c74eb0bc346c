#!/usr/bin/env python3
"""Folds `perf script` call chains (from bench/profile.sh) into stacks and stages.

    perf script -i dwarf.data | bench/stages.py FOLDED_OUT [CPU_US_PER_REQUEST]

Writes the folded stacks (one `frame;frame;... count` line per distinct stack, leaf last:
the input of any flame graph tool) to FOLDED_OUT and prints a table of tollgate's
stages. A sample goes to the kernel when its leaf is kernel code (syscalls: socket I/O,
epoll, futex), else to the innermost frame that names a stage, walking out from the
leaf past allocator and memcpy frames, so `malloc` counts in the stage that called it.
With CPU_US_PER_REQUEST (from bench/load.sh) the shares are also given in µs.
Standard library only."""

from __future__ import annotations

import collections
import re
import sys

# Innermost match wins; order only breaks ties within one frame.
STAGES = [
    ("tokenizer (tiktoken, fancy-regex)", r"tiktoken|fancy_regex"),
    ("prompt bound (JSON walk, no tokenizer)", r"tokens::prompt_bound|BoundTally"),
    ("ledger: SQLite (its worker thread, rollup triggers)", r"sqlite3|sqlx_sqlite"),
    ("ledger writer, tokio side", r"tollgate::ledger|sqlx_core"),
    ("limits (admit, settle, headers)", r"tollgate::limits|governor"),
    ("key check / fingerprint (SHA-256)", r"tollgate::auth|sha2::"),
    ("metrics", r"tollgate::metrics|prometheus::"),
    ("pricing", r"tollgate::pricing|Pricer"),
    ("usage and SSE metering, relay", r"tollgate::metering|tollgate::proxy::relay|tollgate::proxy::buffered|tollgate::proxy::sse"),
    ("request parse (serde_json)", r"MeteredRequest|serde_json|serde_core"),
    ("upstream headers and URL", r"tollgate::proxy::upstream|url::|idna::"),
    ("reqwest / hyper client", r"reqwest::|hyper::client|hyper_util::client|hyper::proto::h1::role::Client"),
    ("hyper server", r"hyper::proto|hyper::server|hyper_util::server|httparse"),
    ("axum router and tower layers", r"axum::|tower::|tower_http::"),
    ("tollgate handler and connection code", r"tollgate::"),
    ("tokio runtime, tasks, timers", r"tokio::|tokio_util::|mio::"),
]
SKIP = re.compile(r"malloc|_int_free|\bfree\b|cfree|realloc|memcpy|memmove|memset|memcmp|"
                  r"__rust_|alloc::|core::ptr|unlink_chunk|_int_realloc|tcache")
COMPILED = [(name, re.compile(pattern)) for name, pattern in STAGES]


def samples(lines):
    """Yields (comm, [frames leaf first], kernel_leaf) per perf script sample."""
    comm, frames, kernel = None, [], False
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if comm is not None:
                yield comm, frames, kernel
            comm, frames, kernel = None, [], False
            continue
        if not line.startswith((" ", "\t")):
            comm = line.split()[0]
            continue
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            continue
        symbol = re.sub(r"\+0x[0-9a-f]+", "", parts[1])
        if not frames:
            kernel = "[kernel" in symbol
        frames.append(symbol.split(" (")[0])
    if comm is not None:
        yield comm, frames, kernel


def stage_of(frames, kernel) -> str:
    if kernel:
        return "kernel (socket I/O, epoll, futex, scheduler)"
    for frame in frames:
        if SKIP.search(frame) and not any(p.search(frame) for _, p in COMPILED[:3]):
            continue
        for name, pattern in COMPILED:
            if pattern.search(frame):
                return name
    return "libc and other (allocator, memcpy outside any stage)"


def main() -> None:
    folded_out = sys.argv[1]
    per_request = float(sys.argv[2]) if len(sys.argv) > 2 else None
    stacks = collections.Counter()
    stages = collections.Counter()
    total = 0
    for comm, frames, kernel in samples(sys.stdin):
        total += 1
        stacks[";".join([comm, *reversed(frames)])] += 1
        stages[stage_of(frames, kernel)] += 1
    with open(folded_out, "w") as out:
        for stack, count in stacks.most_common():
            out.write(f"{stack} {count}\n")
    header = "| stage | share |" + (" µs / request |" if per_request else "")
    print(header)
    print("|---|--:|" + ("--:|" if per_request else ""))
    for name, count in stages.most_common():
        share = count / total if total else 0
        row = f"| {name} | {share * 100:.1f}% |"
        if per_request:
            row += f" {share * per_request:.1f} |"
        print(row)
    print(f"\n{total} samples; folded stacks in {folded_out}")


if __name__ == "__main__":
    main()
