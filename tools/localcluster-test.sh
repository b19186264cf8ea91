#!/usr/bin/env bash
# tools/localcluster-test.sh: connflood through HAProxy while every replica
# restarts (issue 5's integration test of tools/localcluster).
#
# Starts a local cluster (3 replicas, Redis, nx-27017, HAProxy) in a temporary
# state directory on free ports, runs connflood through the balancer from 40
# source addresses (300 connections, 10 rooms, 1 message per connection per
# second), rolls every replica once while it runs, and asserts from
# connflood's JSON report: exit status 0, nothing lost or duplicated, no
# errors, reconnects (the roll happened), connections on at least two pods
# before the roll; and from MongoDB: every message stored exactly once.
# About 80 seconds. Always stops what it started, by PID.
#
# Uses target/release/{websocket-server,connflood} (WEBSOCKET_SERVER and
# CONNFLOOD override): cargo build --release -p websocket-server -p connflood
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=localcluster-checks.sh
. tools/localcluster-checks.sh
export WEBSOCKET_SERVER=${WEBSOCKET_SERVER:-$ROOT/target/release/websocket-server}
CONNFLOOD=${CONNFLOOD:-$ROOT/target/release/connflood}
CONNECTIONS=300 ROOMS=10 RAMP=5 DURATION=60 BIND=127.0.0.2-127.0.0.41

for bin in "$WEBSOCKET_SERVER" "$CONNFLOOD"; do
    [ -x "$bin" ] || { echo "missing $bin: cargo build --release -p websocket-server -p connflood" >&2; exit 1; }
done

STATE=$(mktemp -d "${TMPDIR:-/tmp}/localcluster-test.XXXXXX")
export LOCALCLUSTER_DIR=$STATE
CF_PID=
OK=0
cleanup() {
    set +e
    if [ -n "$CF_PID" ] && kill -0 "$CF_PID" 2>/dev/null; then kill -TERM "$CF_PID"; fi
    tools/localcluster down 2>&1 | sed 's/^/  /'
    if [ "$OK" = 1 ]; then
        rm -rf "$STATE"
    else
        echo "FAILED; logs kept in $STATE (tools/localcluster logs with LOCALCLUSTER_DIR=$STATE)" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A base port whose 30 ports are free, below the ephemeral range.
BASE=$(free_base 30)

echo "--- local cluster on 127.0.0.1:$BASE (state $STATE)"
tools/localcluster up --replicas 3 --port "$BASE"

echo "--- connflood: $CONNECTIONS connections, $ROOMS rooms, from $BIND, ramp ${RAMP}s, ${DURATION}s at 1 msg/s each"
"$CONNFLOOD" --url "ws://127.0.0.1:$BASE/ws" --connections "$CONNECTIONS" --rooms "$ROOMS" \
    --ramp-up "$RAMP" --duration "$DURATION" --msg-interval 1000 --bind "$BIND" \
    --status-every 10 --json "$STATE/connflood.json" >"$STATE/connflood.out" 2>&1 &
CF_PID=$!
START=$SECONDS

# Wait for the ramp, then see where the connections went.
sleep $((RAMP + 3))
tools/localcluster status | tee "$STATE/status-before.txt"
PODS_BEFORE=$(awk '$1 == "replica" && $6 ~ /^[0-9]+$/ && $6 > 0' "$STATE/status-before.txt" | wc -l)

echo "--- rolling every replica"
ROLL_RC=0
tools/localcluster roll --pause 2 || ROLL_RC=$?
ROLL_END=$((SECONDS - START))
tools/localcluster status

echo "--- waiting for connflood (sending stops at ${RAMP}s + ${DURATION}s)"
CF_RC=0
wait "$CF_PID" || CF_RC=$?
CF_PID=
cat "$STATE/connflood.out"

echo "--- checks"
verdict "roll completed" "$ROLL_RC" "exit status $ROLL_RC"
verdict "roll ended (${ROLL_END}s) before sending stopped ($((RAMP + DURATION))s)" \
    "$((ROLL_END >= RAMP + DURATION))" "it did not"
verdict "connections on $PODS_BEFORE pods before the roll (at least 2)" "$((PODS_BEFORE < 2))" "too few"
verdict "connflood exit status 0" "$CF_RC" "$CF_RC"
checks=$(python3 tools/localcluster-report-check.py "$STATE/connflood.json" "$CONNECTIONS" roll)
check_lines "$checks"

# Every message in MongoDB exactly once: per room, seqs 1..max without gap or
# repeat, and each sent message (its marker cf|tag|conn|n) stored once.
MONGO_PORT=$(tools/localcluster ports | awk '$1 == "mongo" { print $2 }')
if "$ROOT/.venv-test/bin/python" -c 'import pymongo' 2>/dev/null; then
    checks=$(timeout 300 "$ROOT/.venv-test/bin/python" tools/localcluster-mongo-check.py "$STATE/connflood.json" "$MONGO_PORT")
    check_lines "$checks"
else
    echo "skip MongoDB check (no pymongo in .venv-test)"
fi

all_passed || exit 1
OK=1
echo "local cluster test passed"
