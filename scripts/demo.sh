#!/usr/bin/env bash
# Run the whole demo on 127.0.0.1 in the foreground: `make demo` calls this.
#
# Loads seven days of demo API metrics into a fresh Prometheus, then starts
# Prometheus, the live traffic generator, the scheduler and the app. Each process
# logs to data/logs/NAME.log. Ctrl-C or SIGTERM stops every process this script
# started, by PID; so does any of them exiting on its own.
set -euo pipefail
cd "$(dirname "$0")/.."

PROMETHEUS_PORT=9090
TRAFFIC_PORT=9101
APP_PORT=8501
EVENTS_PORT=8502
SCHEDULER_INTERVAL=20
# promtool reads the whole input once per block: long blocks load the history in seconds.
BACKFILL_BLOCK_DURATION=744h
READY_TIMEOUT_SECONDS=90
STOP_TIMEOUT_SECONDS=10

PY=.venv/bin/python
DATA=data
LOGS=$DATA/logs
PROMETHEUS_DIR=$DATA/prometheus
HISTORY=$DATA/demo_history.om

names=()
pids=()

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*"; }

stop_all() {
    trap - INT TERM EXIT
    local i pid attempt
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        pid=${pids[i]}
        kill -0 "$pid" 2>/dev/null || continue
        log "stopping ${names[i]} (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((attempt = 0; attempt < STOP_TIMEOUT_SECONDS * 5; attempt++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "${names[i]} (pid $pid) did not stop within ${STOP_TIMEOUT_SECONDS} s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap stop_all EXIT

fail() {
    echo "error: $*" >&2
    exit 1
}

# Start NAME COMMAND...: run a command in the background, logging to data/logs/NAME.log.
start() {
    local name=$1
    shift
    "$@" >"$LOGS/$name.log" 2>&1 </dev/null &
    names+=("$name")
    pids+=("$!")
    log "started $name (pid $!), log: $LOGS/$name.log"
}

show_log_tail() {
    echo "--- last lines of $LOGS/$1.log ---" >&2
    tail -n 25 "$LOGS/$1.log" >&2 || true
}

# Succeed when nothing listens on 127.0.0.1:PORT.
port_is_free() {
    "$PY" - "$1" <<'EOF'
import socket, sys
with socket.socket() as sock:
    # SO_REUSEADDR ignores sockets in TIME_WAIT from an earlier run, but not listeners.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", int(sys.argv[1])))
    except OSError:
        sys.exit(1)
EOF
}

# Wait until URL returns 200, or fail with the log of process NAME.
wait_ready() {
    local name=$1 url=$2 pid=$3 status=0
    "$PY" - "$url" "$READY_TIMEOUT_SECONDS" "$pid" <<'EOF' || status=$?
import os, sys, time, urllib.request
url, timeout, pid = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(3)
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit(4)
EOF
    if [[ $status -eq 0 ]]; then
        return
    fi
    show_log_tail "$name"
    if [[ $status -eq 3 ]]; then
        fail "$name exited before it was ready at $url"
    fi
    fail "$name did not become ready at $url within ${READY_TIMEOUT_SECONDS} s"
}

# --- prerequisites ------------------------------------------------------------

scripts/ensure_packages.sh prometheus=prometheus promtool=prometheus
scripts/ensure_venv.sh requirements.txt

for entry in "Prometheus:$PROMETHEUS_PORT" "traffic generator:$TRAFFIC_PORT" "app:$APP_PORT" "event endpoints:$EVENTS_PORT"; do
    port=${entry##*:}
    if ! port_is_free "$port"; then
        fail "port $port on 127.0.0.1 (for the ${entry%:*}) is in use; stop whatever listens there, e.g. an earlier 'make demo', and run it again"
    fi
done

mkdir -p "$LOGS"

# The demo always uses its own files and Prometheus, whatever .env or behavemail.toml set.
# It writes email to data/outbox instead of sending it.
export BEHAVEMAIL_DATABASE_URL="sqlite:///$PWD/$DATA/behavemail.db"
export BEHAVEMAIL_ACCOUNTS_URL="sqlite:///$PWD/$DATA/accounts.db"
export BEHAVEMAIL_PROMETHEUS_URL="http://127.0.0.1:$PROMETHEUS_PORT"
export BEHAVEMAIL_SCRAPE_INTERVAL=15
export BEHAVEMAIL_EMAIL_BACKEND=outbox
export BEHAVEMAIL_OUTBOX_DIR="$PWD/$DATA/outbox"
export BEHAVEMAIL_EVENTS_ADDRESS="127.0.0.1:$EVENTS_PORT"
export BEHAVEMAIL_PUBLIC_URL="http://127.0.0.1:$EVENTS_PORT"

# --- demo data ----------------------------------------------------------------

log "generating the accounts database and seven days of metrics"
"$PY" -m behavemail_core.demo prepare --accounts "$DATA/accounts.csv" --db "$DATA/accounts.db" --history "$HISTORY"

log "loading the metric history into a fresh $PROMETHEUS_DIR (promtool)"
rm -rf "$PROMETHEUS_DIR"
mkdir -p "$PROMETHEUS_DIR/tsdb"
began=$SECONDS
promtool tsdb create-blocks-from openmetrics --quiet --max-block-duration="$BACKFILL_BLOCK_DURATION" \
    "$HISTORY" "$PROMETHEUS_DIR/tsdb" >"$LOGS/promtool.log" 2>&1 || {
    show_log_tail promtool
    fail "promtool could not load $HISTORY"
}
rm -f "$HISTORY"
log "loaded the history in $((SECONDS - began)) s"

cat >"$PROMETHEUS_DIR/prometheus.yml" <<EOF
# Written by scripts/demo.sh; the backfilled history carries job="demo_history".
global:
  scrape_interval: 15s
  evaluation_interval: 15s
scrape_configs:
  - job_name: demo_traffic
    static_configs:
      - targets: ["127.0.0.1:$TRAFFIC_PORT"]
EOF

# --- processes ----------------------------------------------------------------

start prometheus prometheus \
    --config.file="$PROMETHEUS_DIR/prometheus.yml" \
    --storage.tsdb.path="$PROMETHEUS_DIR/tsdb" \
    --storage.tsdb.retention.time=30d \
    --web.listen-address="127.0.0.1:$PROMETHEUS_PORT"
wait_ready prometheus "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" "${pids[-1]}"

start traffic "$PY" -m behavemail_core.demo.traffic --port "$TRAFFIC_PORT" --accounts "$DATA/accounts.csv"
wait_ready traffic "http://127.0.0.1:$TRAFFIC_PORT/metrics" "${pids[-1]}"

# The history ends minutes ago, so quota gauges come from the live traffic: let Prometheus
# scrape it once before the scheduler's first evaluation.
wait_scraped() {
    "$PY" - "http://127.0.0.1:$PROMETHEUS_PORT" "$READY_TIMEOUT_SECONDS" <<'EOF' ||
import json, sys, time, urllib.parse, urllib.request
base, timeout = sys.argv[1], float(sys.argv[2])
query = urllib.parse.urlencode({"query": 'count(api_quota_used_ratio{job="demo_traffic"})'})
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    with urllib.request.urlopen(f"{base}/api/v1/query?{query}", timeout=5) as response:
        if json.load(response)["data"]["result"]:
            sys.exit(0)
    time.sleep(1)
sys.exit(1)
EOF
        fail "Prometheus did not scrape the traffic generator within ${READY_TIMEOUT_SECONDS} s; see $LOGS/prometheus.log"
}
wait_scraped

log "preparing the app database and importing the starter rules"
"$PY" -m behavemail_core db upgrade
"$PY" -m behavemail_core rules import "$DATA/starter_rules.yaml"
log "adding 30 days of past sends for the dashboard (skipped when already there)"
"$PY" -m behavemail_core.demo.send_history --accounts "$DATA/accounts.csv"

start scheduler env BEHAVEMAIL_SCHEDULER_INTERVAL="$SCHEDULER_INTERVAL" "$PY" scheduler.py
wait_ready scheduler "http://127.0.0.1:$EVENTS_PORT/healthz" "${pids[-1]}"

start app "$PY" -m streamlit run app.py \
    --server.address 127.0.0.1 --server.port "$APP_PORT" --server.headless true \
    --browser.gatherUsageStats false
wait_ready app "http://127.0.0.1:$APP_PORT/_stcore/health" "${pids[-1]}"

cat <<EOF

Behavemail demo is running:
  app              http://127.0.0.1:$APP_PORT
  Prometheus       http://127.0.0.1:$PROMETHEUS_PORT
  event endpoints  http://127.0.0.1:$EVENTS_PORT (scheduler, every $SCHEDULER_INTERVAL s)
  live traffic     http://127.0.0.1:$TRAFFIC_PORT/metrics
  outbox           $DATA/outbox (the emails, as .eml files)
  logs             $LOGS/
Press Ctrl-C to stop everything.
EOF

# Stay in the foreground until a signal arrives or one of the processes exits.
while true; do
    wait -n "${pids[@]}" || true
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[i]}" 2>/dev/null; then
            show_log_tail "${names[i]}"
            fail "${names[i]} (pid ${pids[i]}) exited; stopping the demo"
        fi
    done
done
