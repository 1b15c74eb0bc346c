# What the bench scripts share; sourced by load.sh, instructions.sh, profile.sh and
# soak.sh so that each measures tollgate with the same mock and the same config.

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_mock BINARY WORKDIR [PREFIX...]: starts tollgate-mock-upstream on a free port,
# run under PREFIX (e.g. `taskset -c 1`); sets MOCK_PID and MOCK_ADDR.
start_mock() {
    local binary=$1 work=$2
    shift 2
    "$@" "$binary" --listen 127.0.0.1:0 --threads 1 >"$work/mock.out" 2>"$work/mock.log" &
    MOCK_PID=$!
    for _ in $(seq 100); do
        grep -q '^listening on ' "$work/mock.out" 2>/dev/null && break
        sleep 0.05
    done
    MOCK_ADDR=$(sed -n 's/^listening on //p' "$work/mock.out" | head -n1)
    if [[ -z $MOCK_ADDR ]]; then
        echo "mock upstream did not start: $(cat "$work/mock.log")" >&2
        return 1
    fi
}

# bench_config LISTEN AUTH LIMITS DB: tollgate's config for a timed run, on stdout.
# LIMITS on: a custom tier whose limits no run reaches, so every figure is checked on
# every request and nothing is refused (passthrough callers get it as the default
# tier, keys as their tier). Needs MOCK_ADDR.
bench_config() {
    local listen=$1 auth=$2 limits=$3 db=$4
    cat <<TOML
[server]
listen = "$listen"

[auth]
mode = "$auth"

[database]
url = "sqlite://$db"

[log]
filter = "warn"

[limits]
enabled = $([[ $limits == off ]] && echo false || echo true)
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
TOML
}

# bench_workdir NAME: sets WORK (a fresh temp dir) and PIDS (empty), and on exit stops
# every process in PIDS and removes WORK.
bench_workdir() {
    WORK=$(mktemp -d -t "tollgate-$1.XXXXXX")
    PIDS=()
    trap bench_cleanup EXIT
}

bench_cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}

# bench_key URL ADMIN_KEY TEAM: creates TEAM and a key for it on the bench tier through
# the admin API at URL; the key on stdout.
bench_key() {
    local url=$1 admin=$2 team=$3
    curl -fsS "$url/admin/teams" -H "Authorization: Bearer $admin" \
        -d "{\"name\":\"$team\"}" >/dev/null
    curl -fsS "$url/admin/keys" -H "Authorization: Bearer $admin" \
        -d "{\"team\":\"$team\",\"name\":\"load\",\"tier\":\"bench\"}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'
}

# utime + stime of a whole process (all threads), in clock ticks; 0 for no process.
pid_ticks() {
    [[ -n $1 ]] || { echo 0; return; }
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
