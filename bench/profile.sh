#!/usr/bin/env bash
# Where tollgate's CPU goes under load: bench/profile.sh [plain|stream] [CONNS] [SECONDS]
#
# Same setup as bench/load.sh (release build, 1 KB chat body, keys mode with the bench
# tier's limits checked on every request, or BENCH_AUTH=passthrough / BENCH_LIMITS=off;
# tollgate on core 0, mock + oha on core 1),
# then `perf record` on tollgate while oha runs, and prints: CPU by thread and binary,
# the hottest symbols, and the inclusive cost of tollgate's own stages (DWARF call
# graphs, from the release build's line tables). Uses the software cpu-clock event, so
# it works in VMs without hardware counters. Needs perf (`apt-get install linux-perf`).
# Full reports land in bench/results/profile-*.txt, with the folded stacks (for any
# flame graph tool) and a table of tollgate's stages from bench/stages.py; set
# BENCH_CPU_US to bench/load.sh's CPU µs per request to have the stages in µs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
KIND=${1:-plain}
CONNS=${2:-64}
SECONDS_=${3:-4}
RESULTS_DIR="$ROOT/bench/results"
export PATH="$PATH:$HOME/.cargo/bin"
for tool in perf oha taskset curl python3; do
    command -v "$tool" >/dev/null || { echo "profile.sh: $tool is required" >&2; exit 1; }
done

WORK=$(mktemp -d -t tollgate-profile.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

[[ "${BENCH_SKIP_BUILD:-0}" == 1 ]] || cargo build --release --bins >&2
RELEASE="${CARGO_TARGET_DIR:-$ROOT/target}/release"
taskset -c 1 "$RELEASE/tollgate-mock-upstream" --listen 127.0.0.1:0 >"$WORK/mock.out" &
PIDS+=($!)
for _ in $(seq 100); do grep -q '^listening on ' "$WORK/mock.out" && break; sleep 0.05; done
MOCK_ADDR=$(sed -n 's/^listening on //p' "$WORK/mock.out")
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
AUTH=${BENCH_AUTH:-keys}
cat >"$WORK/tollgate.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT"
[auth]
mode = "$AUTH"
[database]
url = "sqlite://$WORK/ledger.db"
[log]
filter = "warn"
[limits]
enabled = $([[ ${BENCH_LIMITS:-on} == off ]] && echo false || echo true)
default_tier = "bench"
[limits.tiers.bench]
rpm = 1000000000
tpm = 1000000000000
rpd = 100000000000
tpd = 100000000000000
[[upstreams]]
name = "mock"
base_url = "http://$MOCK_ADDR/v1"
models = ["*"]
EOF
ADMIN_KEY="profile-admin-$RANDOM$RANDOM"
TOLLGATE_ADMIN_KEY=$ADMIN_KEY taskset -c 0 "$RELEASE/tollgate" serve --config "$WORK/tollgate.toml" \
    2>"$WORK/tollgate.log" &
TG_PID=$!
PIDS+=("$TG_PID")
for _ in $(seq 300); do curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
# Keys mode, as in production: the profile includes checking the key (on the bench
# tier, whose limits no run reaches). BENCH_AUTH=passthrough profiles the other mode.
KEY="sk-profile-$RANDOM"
if [[ $AUTH == keys ]]; then
    curl -fsS "http://127.0.0.1:$PORT/admin/teams" -H "Authorization: Bearer $ADMIN_KEY" \
        -d '{"name":"profile"}' >/dev/null
    KEY=$(curl -fsS "http://127.0.0.1:$PORT/admin/keys" -H "Authorization: Bearer $ADMIN_KEY" \
        -d '{"team":"profile","name":"load","tier":"bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
fi

# The 1 KB chat body of bench/load.sh.
BODY=$(sed -n '/^chat_body() {/,/^}/p' bench/load.sh | bash -c "$(cat); chat_body $KIND")
load() {
    taskset -c 1 oha --no-tui --worker-threads 1 -c "$CONNS" -z "$1" -m POST \
        -T application/json -d "$BODY" -H "Authorization: Bearer $KEY" \
        "http://127.0.0.1:$PORT/v1/chat/completions" >/dev/null
}
load 2s # warm-up
load "$((SECONDS_ * 2 + 4))s" &
PIDS+=($!)
sleep 1
perf record -q -e cpu-clock -F 999 -g -p "$TG_PID" -o "$WORK/flat.data" -- sleep "$SECONDS_" 2>/dev/null
perf record -q -e cpu-clock -F 499 --call-graph dwarf,32768 -p "$TG_PID" -o "$WORK/dwarf.data" \
    -- sleep "$SECONDS_" 2>/dev/null

mkdir -p "$RESULTS_DIR"
out="$RESULTS_DIR/profile-$KIND-$CONNS"
perf report -i "$WORK/flat.data" --stdio --no-children --sort comm,dso -g none 2>/dev/null >"$out-threads.txt"
perf report -i "$WORK/flat.data" --stdio --no-children --sort sym -g none 2>/dev/null >"$out-symbols.txt"
perf report -i "$WORK/dwarf.data" --stdio --children --sort sym -g none 2>/dev/null >"$out-inclusive.txt"

echo "## CPU by thread and binary ($KIND, $CONNS connections)"
grep -E '^ +[0-9]' "$out-threads.txt" | head -12
echo
echo "## Hottest symbols (self time)"
grep -E '^ +[0-9]' "$out-symbols.txt" | head -25 | cut -c1-150
echo
echo "## Inclusive time of tollgate's stages and the big dependencies"
grep -E '^ +[0-9]' "$out-inclusive.txt" | grep -v inlined |
    grep -E 'tollgate::|sqlite3_step|sqlx_sqlite::connection::handle|reqwest::async_impl::client::PendingRequest|serde_json::de::from_trait|url::parser::Parser::parse_url|do_fsync|__x64_sys_futex|_int_malloc|_int_free|writev|readv|recvfrom' |
    head -40 | cut -c1-150
echo
echo "## Stages (innermost stage frame per sample; folded stacks for a flame graph)"
perf script -i "$WORK/dwarf.data" 2>/dev/null | python3 "$ROOT/bench/stages.py" "$out-folded.txt" ${BENCH_CPU_US:+"$BENCH_CPU_US"}
echo
echo "full reports: ${out#"$ROOT"/}-{threads,symbols,inclusive,folded}.txt"
