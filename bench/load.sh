#!/usr/bin/env bash
# The tollgate load bench, in one command: bench/load.sh
#
# Builds the release binaries, starts tollgate-mock-upstream (benches/mock_upstream.rs),
# nginx as a plain keep-alive reverse proxy (the floor for any proxy) and tollgate on
# 127.0.0.1, and drives them with oha: plain and streaming chat completions (a 1 KB
# body) at 1 connection (latency) and at $BENCH_CONNS connections (throughput),
# straight to the mock, through nginx and through tollgate in the same run, then
# $BENCH_OPEN_STREAMS slow streams held open at once through each proxy. The proxy
# under test is pinned to one core, the mock and oha to the other. Prints a markdown
# report and writes it to bench/results/latest.md. See bench/README.md.
#
# Knobs (environment): BENCH_DURATION (per run, default 10s), BENCH_CONNS (32),
# BENCH_OPEN_STREAMS (1000), BENCH_SLOW_DELAY_MS (250), BENCH_NOISE_LIMIT_PCT (10),
# BENCH_RETRIES (3), BENCH_SKIP_BUILD=1 (use the binaries already built),
# BENCH_LIMITS=off (rate limits disabled, to measure what checking them costs),
# BENCH_EXTRA_CONFIG=FILE (TOML appended to tollgate's config, e.g. bench/routing.toml).
# BENCH_AUTH=passthrough (callers' own upstream keys, fingerprinted, instead of
# tollgate keys), BENCH_NGINX=off (leave nginx out).
# Needs: cargo, taskset, curl, python3, oha (installed with `cargo install oha --locked`
# when missing) and nginx (installed with `apt-get install nginx-light` when missing).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

DURATION=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNS:-32}
OPEN_STREAMS=${BENCH_OPEN_STREAMS:-1000}
# Slow streams: 20 chunks, this far apart, so each stays open ~6 s (23 events).
SLOW_DELAY_MS=${BENCH_SLOW_DELAY_MS:-250}
RESULTS_DIR="$ROOT/bench/results"
# A timed run is repeated (up to RETRIES times) when other processes used more than
# this share of a core during it: on a shared machine a compile skews every figure.
NOISE_LIMIT_PCT=${BENCH_NOISE_LIMIT_PCT:-10}
RETRIES=${BENCH_RETRIES:-3}
AUTH=${BENCH_AUTH:-keys}
LIMITS=${BENCH_LIMITS:-on}
USE_NGINX=${BENCH_NGINX:-on}

log() { printf '[load.sh] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# A 1 KB chat request (1,024 bytes plain): a system prompt and a question, as an
# application sends them, with an output cap; the stream adds `"stream":true`.
chat_body() {
    python3 - "$1" <<'PY'
import json, sys
system = ("You are a careful assistant for a small team that writes field notes about "
          "animals. Answer in plain English, in short paragraphs, and say when you are not sure. ")
filler = "Keep every answer factual, friendly and brief, and avoid lists unless asked. "
user = "Say something about a fox: where it lives, what it eats, and how it raises its young."
def body(system, pad=""):
    request = {"model": "gpt-4o-mini", "max_tokens": 256, "messages": [
        {"role": "system", "content": system}, {"role": "user", "content": user + pad}]}
    return json.dumps(request, separators=(",", ":"))
while len(body(system + filler)) <= 1024:
    system += filler
plain = body(system, " " * (1024 - len(body(system))))
print(plain[:-1] + ',"stream":true}' if sys.argv[1] == "stream" else plain)
PY
}
PLAIN_BODY=$(chat_body plain)
STREAM_BODY=$(chat_body stream)

# === processes and cleanup ===

WORK=$(mktemp -d -t tollgate-bench.XXXXXX)
MOCK_PID="" TG_PID="" NGINX_PID="" LOAD_PID=""

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    [[ -z $LOAD_PID ]] || pkill -P "$LOAD_PID" 2>/dev/null || true
    for pid in $LOAD_PID $TG_PID $NGINX_PID $MOCK_PID; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in $LOAD_PID $TG_PID $NGINX_PID $MOCK_PID; do
        wait "$pid" 2>/dev/null || true
    done
    mkdir -p "$RESULTS_DIR"
    cp "$WORK"/*.log "$RESULTS_DIR"/ 2>/dev/null || true
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# === tools ===

for tool in cargo taskset curl python3; do
    command -v "$tool" >/dev/null || die "$tool is required"
done
export PATH="$PATH:$HOME/.cargo/bin:/usr/sbin"
if ! command -v oha >/dev/null; then
    log "oha not found: cargo install oha --locked (takes a few minutes, once)"
    cargo install oha --locked >&2 || die "cannot install oha"
fi
if [[ $USE_NGINX == on ]] && ! command -v nginx >/dev/null; then
    log "nginx not found: apt-get install nginx-light"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light; } >&2 ||
        die "cannot install nginx (or run with BENCH_NGINX=off)"
fi
if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "building release binaries"
    cargo build --release --bins >&2
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TOLLGATE="$TARGET_DIR/release/tollgate"
MOCK="$TARGET_DIR/release/tollgate-mock-upstream"
[[ -x $TOLLGATE && -x $MOCK ]] || die "release binaries missing"

# 1,000 open streams need ~2,000 sockets in each proxy and as many in the mock and oha.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[[ $(ulimit -n) == unlimited || $(ulimit -n) -ge $((OPEN_STREAMS * 2 + 200)) ]] ||
    log "warning: open-file limit $(ulimit -n) may be too low for $OPEN_STREAMS streams"

# Pin the proxies to core 0 and everything else to core 1 when there are two cores.
CPUS=$(nproc)
if ((CPUS >= 2)); then
    PIN_PROXY=(taskset -c 0)
    PIN_LOAD=(taskset -c 1)
    PINNING="tollgate and nginx on core 0 (one at a time); mock upstream and oha on core 1"
else
    PIN_PROXY=()
    PIN_LOAD=()
    PINNING="not pinned (only $CPUS core)"
fi

# === start the mock, nginx and tollgate ===

start_mock "$MOCK" "$WORK" "${PIN_LOAD[@]}" || die "no mock upstream"

# nginx with no logic: one worker process (no master, so its pid is the one to
# measure), access log off, HTTP/1.1 keep-alive to the mock, responses unbuffered so
# streams pass as they come (as tollgate relays them).
NGINX_ADDR="127.0.0.1:$(free_port)"
if [[ $USE_NGINX == on ]]; then
    mkdir -p "$WORK/nginx"
    cat >"$WORK/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx.log warn;
worker_rlimit_nofile 8192;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    upstream mock {
        server $MOCK_ADDR;
        keepalive 64;
        keepalive_requests 100000000;
    }
    server {
        listen $NGINX_ADDR;
        keepalive_requests 100000000;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 120s;
        }
    }
}
EOF
    "${PIN_PROXY[@]}" nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" >>"$WORK/nginx.log" 2>&1 </dev/null &
    NGINX_PID=$!
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "http://$NGINX_ADDR/v1/models" 2>/dev/null && break
        kill -0 "$NGINX_PID" 2>/dev/null || die "nginx exited at startup: $(cat "$WORK/nginx.log")"
        sleep 0.05
    done
    log "nginx on $NGINX_ADDR (pid $NGINX_PID), $(nginx -v 2>&1)"
fi

TG_ADDR="127.0.0.1:$(free_port)"
bench_config "$TG_ADDR" "$AUTH" "$LIMITS" "$WORK/ledger.db" >"$WORK/tollgate.toml"
if [[ -n ${BENCH_EXTRA_CONFIG:-} ]]; then
    cat "$BENCH_EXTRA_CONFIG" >>"$WORK/tollgate.toml" || die "cannot read $BENCH_EXTRA_CONFIG"
fi

# === measurements ===

pid_status() { awk -v key="$2:" '$1 == key {print $2}' "/proc/$1/status"; }
# Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0), so each
# run reports its own peak; where that is refused the peak is since startup.
HWM_RESET=yes
reset_hwm() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || HWM_RESET=no; }
# Busy ticks of the whole machine (user+nice+system+irq+softirq+steal), to spot other
# work running alongside (a compile in the background would skew every figure).
machine_ticks() { awk '$1 == "cpu" {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
pid_fds() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }

# Each scenario group gets a fresh tollgate, so its peak RSS is its own (the allocator
# keeps what an earlier run grew to). All instances share one ledger file.
TG_INSTANCE=0
ADMIN_KEY="bench-admin-$RANDOM$RANDOM"
# In passthrough mode the bearer is the caller's own upstream key (the mock takes any).
KEY="sk-bench-$RANDOM$RANDOM"
KEY_ISSUED=no
start_tollgate() {
    TG_INSTANCE=$((TG_INSTANCE + 1))
    TOLLGATE_ADMIN_KEY=$ADMIN_KEY "${PIN_PROXY[@]}" "$TOLLGATE" serve --config "$WORK/tollgate.toml" \
        >>"$WORK/tollgate.log" 2>&1 </dev/null &
    TG_PID=$!
    for _ in $(seq 300); do
        curl -fsS "http://$TG_ADDR/healthz" >/dev/null 2>&1 && break
        kill -0 "$TG_PID" 2>/dev/null || die "tollgate exited at startup: $(cat "$WORK/tollgate.log")"
        sleep 0.1
    done
    curl -fsS "http://$TG_ADDR/healthz" >/dev/null || die "tollgate did not become healthy"
    # Let startup work (migrations) settle before reading idle figures.
    sleep 1
    # Keys mode, as in production: every request carries a tollgate key (issued once;
    # all instances share the ledger, and with it the key) on the bench tier.
    if [[ $AUTH == keys && $KEY_ISSUED == no ]]; then
        curl -fsS "http://$TG_ADDR/admin/teams" -H "Authorization: Bearer $ADMIN_KEY" \
            -d '{"name":"bench"}' >/dev/null || die "cannot create the bench team"
        KEY=$(curl -fsS "http://$TG_ADDR/admin/keys" -H "Authorization: Bearer $ADMIN_KEY" \
            -d '{"team":"bench","name":"load","tier":"bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])') ||
            die "cannot create the bench key"
        KEY_ISSUED=yes
    fi
    log "tollgate #$TG_INSTANCE on $TG_ADDR (pid $TG_PID), mock on $MOCK_ADDR; $AUTH mode, limits $LIMITS; $PINNING"
    echo "{\"rss_kb\": $(pid_status "$TG_PID" VmRSS), \"fds\": $(pid_fds "$TG_PID")}" >"$WORK/idle-$TG_INSTANCE.json"
}

# SIGTERM: tollgate drains and flushes the ledger; report.py checks the row count.
stop_tollgate() {
    local start status=0
    start=$(date +%s%N)
    kill -TERM "$TG_PID"
    wait "$TG_PID" || status=$?
    TG_PID=""
    echo "{\"exit\": $status, \"ms\": $((($(date +%s%N) - start) / 1000000))}" \
        >"$WORK/stop-$TG_INSTANCE.json"
    log "tollgate #$TG_INSTANCE stopped: exit $status"
}

# run NAME PATH(direct|nginx|tollgate) KIND(plain|stream) CONNS OHA_ARGS...
# Runs oha and writes $WORK/NAME.oha.json and $WORK/NAME.meta.json. A timed run during
# which other processes kept the machine busy (over $NOISE_LIMIT_PCT% of a core) is
# set aside and repeated, up to $RETRIES times; the report lists the set-aside runs.
run() {
    local name=$1 path=$2 other try
    [[ $path != nginx || $USE_NGINX == on ]] || return 0
    for ((try = 1; ; try++)); do
        run_once "$@"
        other=$(other_load_pct "$name")
        if [[ $name == warm-* ]] || ((other <= NOISE_LIMIT_PCT || try > RETRIES)); then
            return
        fi
        log "  other processes used ${other}% of a core during $name: running it again"
        mv "$WORK/$name.meta.json" "$WORK/$name.try$try.discarded.json"
        mv "$WORK/$name.oha.json" "$WORK/$name.try$try.oha-discarded.json"
    done
}

# CPU of everything but tollgate, nginx, the mock and oha during run NAME, in % of one core.
other_load_pct() {
    python3 - "$WORK/$1.meta.json" "$(getconf CLK_TCK)" <<'EOF'
import json, sys
meta, hz = json.load(open(sys.argv[1])), int(sys.argv[2])
oha = 0.0
for field in meta["oha_times"].split():
    minutes, _, rest = field.partition("m")
    oha += float(minutes or 0) * 60 + float(rest.rstrip("s") or 0)
ours = meta["tollgate_ticks"] + meta["nginx_ticks"] + meta["mock_ticks"] + oha * hz
print(max(0, round((meta["machine_ticks"] - ours) / hz / (meta["wall_ms"] / 1000) * 100)))
EOF
}

run_once() {
    local name=$1 path=$2 kind=$3 conns=$4
    shift 4
    local addr=$MOCK_ADDR body=$PLAIN_BODY pid=$MOCK_PID
    case $path in
        tollgate) addr=$TG_ADDR pid=$TG_PID ;;
        nginx) addr=$NGINX_ADDR pid=$NGINX_PID ;;
    esac
    [[ $kind == stream ]] && body=$STREAM_BODY
    log "run $name: $kind via $path, $conns connection(s) $*"
    reset_hwm "$pid"
    local tg0 tg1 ng0 ng1 machine0 machine1 mock0 mock1 start max_fds=0 max_rss=0 fds rss
    start=$(date +%s%N)
    tg0=$(pid_ticks "$TG_PID")
    ng0=$(pid_ticks "$NGINX_PID")
    machine0=$(machine_ticks)
    mock0=$(pid_ticks "$MOCK_PID")
    # A subshell, so `times` can report oha's own CPU time once it has exited.
    (
        "${PIN_LOAD[@]}" oha --no-tui --output-format json --worker-threads 1 -c "$conns" \
            -m POST -T application/json -d "$body" -H "Authorization: Bearer $KEY" "$@" \
            "http://$addr/v1/chat/completions" >"$WORK/$name.oha.json" 2>"$WORK/$name.oha.err"
        status=$?
        times >"$WORK/$name.times" # not in a pipe: its children would be a subshell's
        exit "$status"
    ) &
    LOAD_PID=$!
    # Sample the measured process's open sockets and RSS while the load runs.
    while kill -0 "$LOAD_PID" 2>/dev/null; do
        fds=$(pid_fds "$pid")
        rss=$(pid_status "$pid" VmRSS)
        ((fds > max_fds)) && max_fds=$fds
        ((rss > max_rss)) && max_rss=$rss
        sleep 0.2
    done
    wait "$LOAD_PID" || die "oha failed in $name: $(cat "$WORK/$name.oha.err")"
    LOAD_PID=""
    tg1=$(pid_ticks "$TG_PID")
    ng1=$(pid_ticks "$NGINX_PID")
    machine1=$(machine_ticks)
    mock1=$(pid_ticks "$MOCK_PID")
    local cpu=0
    case $path in
        tollgate) cpu=$((tg1 - tg0)) ;;
        nginx) cpu=$((ng1 - ng0)) ;;
    esac
    cat >"$WORK/$name.meta.json" <<EOF
{"name": "$name", "path": "$path", "kind": "$kind", "conns": $conns, "instance": $TG_INSTANCE,
 "wall_ms": $((($(date +%s%N) - start) / 1000000)),
 "cpu_ticks": $cpu, "tollgate_ticks": $((tg1 - tg0)), "nginx_ticks": $((ng1 - ng0)),
 "machine_ticks": $((machine1 - machine0)), "mock_ticks": $((mock1 - mock0)),
 "oha_times": "$(tail -n1 "$WORK/$name.times")", "hwm_kb": $(pid_status "$pid" VmHWM),
 "max_fds": $max_fds, "max_rss_kb": $max_rss}
EOF
}

# group KIND: straight to the mock, through nginx, through tollgate, at 1 connection
# and at $CONNS, on a fresh tollgate warmed up first.
group() {
    local kind=$1
    start_tollgate
    run "warm-$kind-direct" direct "$kind" 4 -z 2s -w
    run "warm-$kind-nginx" nginx "$kind" 4 -z 2s -w
    run "warm-$kind-tollgate" tollgate "$kind" 4 -z 2s -w
    for conns in 1 "$CONNS"; do
        for path in direct nginx tollgate; do
            run "$kind-$conns-$path" "$path" "$kind" "$conns" -z "$DURATION" -w
        done
    done
    stop_tollgate
}

group plain
group stream
start_tollgate
run warm-open-tollgate tollgate stream 4 -z 1s -w
for path in nginx tollgate; do
    run "open-$OPEN_STREAMS-$path" "$path" stream "$OPEN_STREAMS" -n "$OPEN_STREAMS" \
        -H "x-mock-chunk-delay-ms: $SLOW_DELAY_MS" -t 120s
done
stop_tollgate

# === report ===

mkdir -p "$RESULTS_DIR"
python3 "$ROOT/bench/report.py" "$WORK" \
    --cpu-model "$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n1)" \
    --cores "$CPUS" --pinning "$PINNING" --duration "$DURATION" --conns "$CONNS" \
    --open-streams "$OPEN_STREAMS" --slow-delay-ms "$SLOW_DELAY_MS" \
    --hwm-reset "$HWM_RESET" --clock-ticks "$(getconf CLK_TCK)" \
    --ledger "$WORK/ledger.db" --oha-version "$(oha --version)" \
    --nginx-version "$([[ $USE_NGINX == on ]] && nginx -v 2>&1 | sed 's/^nginx version: //' || echo none)" \
    --body-bytes "${#PLAIN_BODY}" --auth "$AUTH" --limits "$LIMITS" \
    --commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || echo '+dirty')" \
    >"$RESULTS_DIR/latest.md"
cat "$RESULTS_DIR/latest.md"
log "written to bench/results/latest.md (logs: bench/results/*.log)"
