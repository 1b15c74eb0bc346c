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
# shellcheck source=bench/lib.sh
source bench/lib.sh
KIND=${1:-plain}
CONNS=${2:-64}
SECONDS_=${3:-4}
RESULTS_DIR="$ROOT/bench/results"
export PATH="$PATH:$HOME/.cargo/bin"
for tool in perf oha taskset curl python3; do
    command -v "$tool" >/dev/null || { echo "profile.sh: $tool is required" >&2; exit 1; }
done

bench_workdir profile

[[ "${BENCH_SKIP_BUILD:-0}" == 1 ]] || cargo build --release --bins >&2
RELEASE="${CARGO_TARGET_DIR:-$ROOT/target}/release"
start_mock "$RELEASE/tollgate-mock-upstream" "$WORK" taskset -c 1
PIDS+=("$MOCK_PID")
PORT=$(free_port)
AUTH=${BENCH_AUTH:-keys}
bench_config "127.0.0.1:$PORT" "$AUTH" "${BENCH_LIMITS:-on}" "$WORK/ledger.db" >"$WORK/tollgate.toml"
ADMIN_KEY="profile-admin-$RANDOM$RANDOM"
TOLLGATE_ADMIN_KEY=$ADMIN_KEY taskset -c 0 "$RELEASE/tollgate" serve --config "$WORK/tollgate.toml" \
    2>"$WORK/tollgate.log" &
TG_PID=$!
PIDS+=("$TG_PID")
for _ in $(seq 300); do curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
# Keys mode, as in production: the profile includes checking the key (on the bench
# tier, whose limits no run reaches). BENCH_AUTH=passthrough profiles the other mode.
KEY="sk-profile-$RANDOM"
[[ $AUTH == keys ]] && KEY=$(bench_key "http://127.0.0.1:$PORT" "$ADMIN_KEY" profile)

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
# `|| true`: head leaves early, and under pipefail grep's SIGPIPE would end the script.
grep -E '^ +[0-9]' "$out-threads.txt" | head -12 || true
echo
echo "## Hottest symbols (self time)"
grep -E '^ +[0-9]' "$out-symbols.txt" | head -25 | cut -c1-150 || true
echo
echo "## Inclusive time of tollgate's stages and the big dependencies"
grep -E '^ +[0-9]' "$out-inclusive.txt" | grep -v inlined |
    grep -E 'tollgate::|sqlite3_step|sqlx_sqlite::connection::handle|reqwest::async_impl::client::PendingRequest|serde_json::de::from_trait|url::parser::Parser::parse_url|do_fsync|__x64_sys_futex|_int_malloc|_int_free|writev|readv|recvfrom' |
    head -40 | cut -c1-150 || true
echo
echo "## Stages (innermost stage frame per sample; folded stacks for a flame graph)"
perf script -i "$WORK/dwarf.data" 2>/dev/null | python3 "$ROOT/bench/stages.py" "$out-folded.txt" ${BENCH_CPU_US:+"$BENCH_CPU_US"}
echo
echo "full reports: ${out#"$ROOT"/}-{threads,symbols,inclusive,folded}.txt"
