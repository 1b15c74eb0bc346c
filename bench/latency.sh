#!/usr/bin/env bash
# Latency through tollgate alone, for one setting at a time:
#   bench/latency.sh [EXTRA_TOML] [DURATION]
#
# The quick loop for a latency question (does this setting move the p99?): the mock
# upstream and tollgate as bench/load.sh starts them (release build, keys mode, rate
# limits on, SQLite ledger, metrics, the 1 KB chat body; tollgate on core 0, the mock
# and oha on core 1), EXTRA_TOML appended to tollgate's config (e.g. a `[ledger]`
# table), a 2 s warm-up, then one oha run of DURATION (10s) at BENCH_CONNS (1)
# connections. Prints one line: req/s, p50, p90, p99, p99.9 and the slowest, in ms,
# and tollgate's CPU time (user + system, all threads) per request.
# BENCH_KIND=stream sends load.sh's 20-chunk stream instead of the plain request.
# TOLLGATE_BIN runs another build (e.g. a copy of an earlier commit's binary), so two
# builds can be alternated run by run; BENCH_AUTH=passthrough and BENCH_LIMITS=off as
# in load.sh. No nginx and no table: bench/load.sh is the bench of record. Needs
# taskset, oha, curl, python3.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh
EXTRA=${1:-/dev/null}
DURATION=${2:-10s}
CONNS=${BENCH_CONNS:-1}
KIND=${BENCH_KIND:-plain}
AUTH=${BENCH_AUTH:-keys}
LIMITS=${BENCH_LIMITS:-on}
export PATH="$PATH:$HOME/.cargo/bin"
for tool in taskset oha curl python3; do
    command -v "$tool" >/dev/null || { echo "latency.sh: $tool is required" >&2; exit 1; }
done
[[ "${BENCH_SKIP_BUILD:-0}" == 1 ]] || cargo build --release --bins >&2
RELEASE="${CARGO_TARGET_DIR:-$ROOT/target}/release"
TOLLGATE=${TOLLGATE_BIN:-$RELEASE/tollgate}

bench_workdir latency

start_mock "$RELEASE/tollgate-mock-upstream" "$WORK" taskset -c 1
PIDS+=("$MOCK_PID")
port=$(free_port)
admin="lat-admin-$RANDOM$RANDOM"
bench_config "127.0.0.1:$port" "$AUTH" "$LIMITS" "$WORK/ledger.db" >"$WORK/tollgate.toml"
cat "$EXTRA" >>"$WORK/tollgate.toml"
TOLLGATE_ADMIN_KEY=$admin taskset -c 0 "$TOLLGATE" serve --config "$WORK/tollgate.toml" \
    2>"$WORK/tollgate.log" &
TG_PID=$!
PIDS+=("$TG_PID")
for _ in $(seq 100); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
key="sk-latency-$RANDOM" # passthrough: the caller's own upstream key (the mock takes any)
[[ $AUTH == keys ]] && key=$(bench_key "http://127.0.0.1:$port" "$admin" lat)
# The same request as bench/load.sh.
BODY=$(sed -n '/^chat_body() {/,/^}/p' bench/load.sh | bash -c "$(cat); chat_body $KIND")
load() {
    taskset -c 1 oha --no-tui --worker-threads 1 -c "$CONNS" -m POST -T application/json \
        -d "$BODY" -H "Authorization: Bearer $key" --output-format json "$@" \
        "http://127.0.0.1:$port/v1/chat/completions"
}
load -z 2s >/dev/null
before=$(pid_ticks "$TG_PID")
load -z "$DURATION" >"$WORK/oha.json"
after=$(pid_ticks "$TG_PID")
python3 - "$WORK/oha.json" "$CONNS" "$((after - before))" "$(getconf CLK_TCK)" "$KIND" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
p, s = report["latencyPercentiles"], report["summary"]
ticks, hz = int(sys.argv[3]), int(sys.argv[4])
requests = s["requestsPerSec"] * s["total"]
ms = lambda seconds: seconds * 1e3
print(f"{sys.argv[5]} {sys.argv[2]} conn: {s['requestsPerSec']:.0f} req/s, p50 {ms(p['p50']):.3f}, "
      f"p90 {ms(p['p90']):.3f}, p99 {ms(p['p99']):.3f}, p99.9 {ms(p['p99.9']):.3f}, "
      f"slowest {ms(s['slowest']):.3f} ms; tollgate CPU {ticks / hz / requests * 1e6:.1f} us a request")
PY
