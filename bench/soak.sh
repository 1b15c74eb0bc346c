#!/usr/bin/env bash
# The tollgate soak: bench/soak.sh  (30 minutes by default; not part of CI)
#
# Starts tollgate-mock-upstream and tollgate (keys mode, rate limits on, a SQLite ledger
# in a temp dir), sends chat completions at a steady rate for SOAK_DURATION seconds (a
# quarter of them streamed) while bench/soak.py samples tollgate's RSS, open fds and
# threads every SOAK_SAMPLE_EVERY seconds, then stops tollgate with SIGTERM and checks
# the ledger: one row per answered request (streams counted apart) and, for the
# non-streamed ones, the exact sum of the costs the client was told. Fails when a
# request failed, the ledger is off, or RSS after the first minute grew past the bound
# (SOAK_GROWTH_LIMIT_KB, default 16384 KiB, between the largest sample of the first and
# of the second half).
#
# Knobs (environment): SOAK_DURATION (1800 s), SOAK_RATE (50 req/s),
# SOAK_SAMPLE_EVERY (5 s), SOAK_PROFILE (release; "debug" uses target/debug),
# SOAK_SKIP_BUILD=1, SOAK_GROWTH_LIMIT_KB (16384), SOAK_OUT (bench/results/soak).
# Needs: cargo, curl, python3.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

DURATION=${SOAK_DURATION:-1800}
RATE=${SOAK_RATE:-50}
SAMPLE_EVERY=${SOAK_SAMPLE_EVERY:-5}
PROFILE=${SOAK_PROFILE:-release}
GROWTH_LIMIT_KB=${SOAK_GROWTH_LIMIT_KB:-16384}
OUT=${SOAK_OUT:-$ROOT/bench/results/soak}

log() { printf '[soak.sh] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

WORK=$(mktemp -d -t tollgate-soak.XXXXXX)
MOCK_PID="" TG_PID=""
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in $TG_PID $MOCK_PID; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $TG_PID $MOCK_PID; do
        wait "$pid" 2>/dev/null || true
    done
    mkdir -p "$OUT"
    cp "$WORK"/*.log "$OUT"/ 2>/dev/null || true
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in cargo curl python3; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
if [[ "${SOAK_SKIP_BUILD:-0}" != 1 ]]; then
    log "building $PROFILE binaries"
    if [[ $PROFILE == release ]]; then cargo build --release --bins >&2; else cargo build --bins >&2; fi
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TOLLGATE="$TARGET_DIR/$PROFILE/tollgate"
MOCK="$TARGET_DIR/$PROFILE/tollgate-mock-upstream"
[[ -x $TOLLGATE && -x $MOCK ]] || die "$PROFILE binaries missing"

start_mock "$MOCK" "$WORK" || die "no mock upstream"

TG_PORT=$(free_port)
TG_ADDR="127.0.0.1:$TG_PORT"
cat >"$WORK/tollgate.toml" <<EOF
[server]
listen = "$TG_ADDR"

[database]
url = "sqlite://$WORK/ledger.db"

[ledger]
spill_dir = "$WORK/spill"

[log]
filter = "warn"

[[upstreams]]
name = "mock"
base_url = "http://$MOCK_ADDR/v1"
models = ["*"]
EOF

ADMIN_KEY="soak-admin-$RANDOM$RANDOM"
TOLLGATE_ADMIN_KEY=$ADMIN_KEY "$TOLLGATE" serve --config "$WORK/tollgate.toml" \
    >"$WORK/tollgate.log" 2>&1 </dev/null &
TG_PID=$!
for _ in $(seq 300); do
    curl -fsS "http://$TG_ADDR/healthz" >/dev/null 2>&1 && break
    kill -0 "$TG_PID" 2>/dev/null || die "tollgate exited at startup: $(cat "$WORK/tollgate.log")"
    sleep 0.1
done
curl -fsS "http://$TG_ADDR/healthz" >/dev/null || die "tollgate did not become healthy"
curl -fsS "http://$TG_ADDR/admin/teams" -H "Authorization: Bearer $ADMIN_KEY" \
    -d '{"name":"soak"}' >/dev/null || die "cannot create the soak team"
# Limits stay on (checked on every request) with figures the soak never reaches:
# tier-5 has no RPD, and the key sets RPM and TPM far above the rate.
KEY=$(curl -fsS "http://$TG_ADDR/admin/keys" -H "Authorization: Bearer $ADMIN_KEY" \
    -d '{"team":"soak","name":"soak","tier":"tier-5","rpm":1000000000,"tpm":1000000000000}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])') || die "cannot create the soak key"

log "tollgate ($PROFILE) pid $TG_PID on $TG_ADDR; $RATE req/s for ${DURATION}s, RSS every ${SAMPLE_EVERY}s"
mkdir -p "$OUT"
load_status=0
python3 "$ROOT/bench/soak.py" --addr "$TG_ADDR" --key "$KEY" --pid "$TG_PID" --rate "$RATE" \
    --duration "$DURATION" --sample-every "$SAMPLE_EVERY" --out "$OUT" || load_status=$?

start=$(date +%s%N)
kill -TERM "$TG_PID"
tg_status=0
wait "$TG_PID" || tg_status=$?
TG_PID=""
stop_ms=$((($(date +%s%N) - start) / 1000000))
log "tollgate stopped: exit $tg_status after ${stop_ms} ms"

python3 - "$OUT/summary.json" "$WORK/ledger.db" "$GROWTH_LIMIT_KB" "$tg_status" "$stop_ms" "$PROFILE" "$RATE" <<'EOF'
import json, sqlite3, sys
from decimal import Decimal
path, db, limit, tg_status, stop_ms, profile, rate = sys.argv[1:]
summary = json.load(open(path))
rows, streamed, pico = sqlite3.connect(db).execute(
    "SELECT COUNT(*), COALESCE(SUM(streamed), 0),"
    " COALESCE(SUM(CASE WHEN streamed THEN 0 ELSE cost_pico END), 0) FROM requests").fetchone()
told_pico = int(Decimal(summary["plain_cost_told_usd"]) * 10**12)
growth = summary["rss_kb_second_half_max"] - summary["rss_kb_first_half_max"]
summary.update({
    "profile": profile, "rate": float(rate),
    "ledger_rows": rows, "ledger_streamed_rows": streamed,
    "ledger_plain_cost_pico": pico, "told_plain_cost_pico": told_pico,
    "rows_lost": summary["ok"] - rows, "rss_growth_kb": growth,
    "growth_limit_kb": int(limit), "sigterm_exit": int(tg_status), "sigterm_ms": int(stop_ms),
})
json.dump(summary, open(path, "w"), indent=2)
print(json.dumps(summary, indent=2))
problems = []
if summary["failed"]:
    problems.append(f"{summary['failed']} requests failed: {summary['first_failures']}")
if rows != summary["ok"]:
    problems.append(f"ledger holds {rows} rows for {summary['ok']} answered requests")
if streamed != summary["streams_ok"]:
    problems.append(f"ledger holds {streamed} streamed rows for {summary['streams_ok']} streams")
if pico != told_pico:
    problems.append(f"plain rows sum {pico} pico-USD, the client was told {told_pico}")
if growth > int(limit):
    problems.append(f"RSS grew {growth} KiB after warm-up (bound {limit} KiB)")
if int(tg_status) != 0:
    problems.append(f"tollgate exited {tg_status} on SIGTERM")
for problem in problems:
    print(f"[soak.sh] FAIL: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
log "samples: $OUT/samples.csv, summary: $OUT/summary.json"
exit "$load_status"
