#!/usr/bin/env bash
# Instructions per request, under callgrind: bench/instructions.sh [plain|stream] [REQUESTS]
#
# Wall-clock and CPU-time figures move with whatever else the machine runs; instruction
# counts do not, so this is the figure to compare commits by on a shared machine. Starts
# the mock upstream and tollgate (release build, SQLite ledger, metrics, the 1 KB chat
# body of bench/load.sh) with tollgate under `valgrind --tool=callgrind`, warms it up,
# zeroes the counters, sends REQUESTS requests from one connection, and reports the
# instructions tollgate executed per request (every thread: tokio, SQLite, blocking
# pool), for each of keys and passthrough mode, rate limits on and off. The callgrind
# files (for callgrind_annotate or kcachegrind) go to bench/results/callgrind-*.
# Needs valgrind, oha, curl, python3.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh
KIND=${1:-plain}
REQUESTS=${2:-2000}
MODES=${BENCH_MODES:-"keys-on keys-off passthrough-on passthrough-off"}
RESULTS_DIR="$ROOT/bench/results"
export PATH="$PATH:$HOME/.cargo/bin"
for tool in valgrind callgrind_control oha curl python3; do
    command -v "$tool" >/dev/null || { echo "instructions.sh: $tool is required" >&2; exit 1; }
done
[[ "${BENCH_SKIP_BUILD:-0}" == 1 ]] || cargo build --release --bins >&2
RELEASE="${CARGO_TARGET_DIR:-$ROOT/target}/release"

bench_workdir instructions

start_mock "$RELEASE/tollgate-mock-upstream" "$WORK"
PIDS+=("$MOCK_PID")
# The same request as bench/load.sh.
BODY=$(sed -n '/^chat_body() {/,/^}/p' bench/load.sh | bash -c "$(cat); chat_body $KIND")
mkdir -p "$RESULTS_DIR"

measure() {
    local auth=$1 limits=$2 port admin="ins-admin-$RANDOM$RANDOM" key="sk-ins-$RANDOM" tg
    port=$(free_port)
    bench_config "127.0.0.1:$port" "$auth" "$limits" "$WORK/ledger-$auth-$limits.db" >"$WORK/tollgate.toml"
    local out="$RESULTS_DIR/callgrind-$KIND-$auth-$limits.out"
    TOLLGATE_ADMIN_KEY=$admin valgrind --tool=callgrind --callgrind-out-file="$out" \
        --collect-atstart=yes "$RELEASE/tollgate" serve --config "$WORK/tollgate.toml" \
        2>"$WORK/valgrind.log" &
    tg=$!
    PIDS+=("$tg")
    for _ in $(seq 600); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
    [[ $auth == keys ]] && key=$(bench_key "http://127.0.0.1:$port" "$admin" ins)
    local load=(oha --no-tui --worker-threads 1 -c 1 -m POST -T application/json -d "$BODY"
        -H "Authorization: Bearer $key" "http://127.0.0.1:$port/v1/chat/completions")
    "${load[@]}" -n 300 >/dev/null # warm-up: pools, allocator, lazily built state
    sleep 1                         # the ledger's last batch of the warm-up
    callgrind_control -z "$tg" >/dev/null 2>&1
    "${load[@]}" -n "$REQUESTS" >/dev/null
    sleep 1 # the ledger commits the last rows (batches wait up to 50 ms)
    callgrind_control -d "$tg" >/dev/null 2>&1
    kill -TERM "$tg"
    wait "$tg" || true
    # The dump taken after the zeroing is the part file with the highest number.
    local part
    part=$(ls -1 "$out".* 2>/dev/null | sort -t. -k3 -n | tail -n1)
    local total
    total=$(sed -n 's/^summary: //p; s/^totals: //p' "$part" | head -n1)
    printf '| %s | %s | %s | %s | %s |\n' "$KIND" "$auth" "$limits" "$(printf '%d' $((total / REQUESTS)))" "${part#"$ROOT"/}"
}

echo "| request | auth | limits | instructions per request | callgrind file |"
echo "|---|---|---|--:|---|"
for mode in $MODES; do
    measure "${mode%-*}" "${mode#*-}"
done
