#!/usr/bin/env bash
# tools/localcluster-cluster-test.sh: connflood through HAProxy and 3 server
# replicas on a Redis Cluster of 3 masters while one master is killed and
# its replica promoted (issue 11's integration test of Redis Cluster mode).
#
# Starts a local cluster (`tools/localcluster up --redis-cluster 3`: 3
# replicas with REDIS_CLUSTER_NODES, 3 Redis masters with a replica each,
# nx-27017, HAProxy) in a temporary state directory on free ports, runs
# connflood through the balancer from 40 source addresses (300 connections,
# 30 rooms, so every master serves some, 1 message per connection per
# second), and KILL_AT seconds after the ramp SIGKILLs the master that
# serves room cf-0's slot (`kill-redis-master`), waits until its replica is
# promoted, then starts the killed node again (it rejoins as a replica).
# Asserts from connflood's JSON report: exit status 0, every connection open
# at the end, zero errors, zero rejected, nothing lost, duplicated or
# reordered, every delivery made; that the killed master held room keys when
# it died and that every master holds room keys at the end; and from
# MongoDB: every message stored exactly once. About 70 seconds. Always stops
# what it started, by PID.
#
# Uses target/release/{websocket-server,connflood} (WEBSOCKET_SERVER and
# CONNFLOOD override): cargo build --release -p websocket-server -p connflood
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export WEBSOCKET_SERVER=${WEBSOCKET_SERVER:-$ROOT/target/release/websocket-server}
CONNFLOOD=${CONNFLOOD:-$ROOT/target/release/connflood}
CONNECTIONS=300 ROOMS=30 RAMP=5 DURATION=40 KILL_AT=10 BIND=127.0.0.2-127.0.0.41
PY=$ROOT/.venv-test/bin/python

for bin in "$WEBSOCKET_SERVER" "$CONNFLOOD"; do
    [ -x "$bin" ] || { echo "missing $bin: cargo build --release -p websocket-server -p connflood" >&2; exit 1; }
done
"$PY" -c 'import pymongo' 2>/dev/null || { echo "no pymongo in .venv-test (tools/test.sh installs nx-27017 there)" >&2; exit 1; }

STATE=$(mktemp -d "${TMPDIR:-/tmp}/localcluster-cluster-test.XXXXXX")
export LOCALCLUSTER_DIR=$STATE
CF_PID=
OK=0
T_START=$SECONDS
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

# A base port whose 60 ports (replicas, Redis nodes and their buses) are
# free, below the ephemeral range.
all_free() {
    local p
    for ((p = $1; p < $1 + 60; p++)); do
        ! ss -Htln "sport = :$p" | grep -q . || return 1
    done
}
BASE=
for ((try = 0; try < 20; try++)); do
    candidate=$((20000 + (RANDOM % 100) * 100))
    if all_free "$candidate"; then BASE=$candidate; break; fi
done
[ -n "$BASE" ] || { echo "no free port range found" >&2; exit 1; }

echo "--- local cluster with a 3-master Redis Cluster on 127.0.0.1:$BASE (state $STATE)"
tools/localcluster up --replicas 3 --port "$BASE" --redis-cluster 3
mapfile -t NODE_PORTS < <(tools/localcluster ports | awk '$1 ~ /^redis-node-/ { print $2 }')
# Room keys (chat:{ROOM}:…) a node holds; the servers use no other keys.
room_keys() { timeout 5 redis-cli -p "$1" --scan --pattern 'chat:{*' 2>/dev/null | wc -l; }
role() { timeout 5 redis-cli -p "$1" role 2>/dev/null | head -n 1; }

echo "--- connflood: $CONNECTIONS connections, $ROOMS rooms, from $BIND, ramp ${RAMP}s, ${DURATION}s at 1 msg/s each"
"$CONNFLOOD" --url "ws://127.0.0.1:$BASE/ws" --connections "$CONNECTIONS" --rooms "$ROOMS" \
    --ramp-up "$RAMP" --duration "$DURATION" --msg-interval 1000 --bind "$BIND" \
    --status-every 10 --json "$STATE/connflood.json" >"$STATE/connflood.out" 2>&1 &
CF_PID=$!
START=$SECONDS

sleep $((RAMP + 3))
tools/localcluster status | tee "$STATE/status-before.txt"
PODS_BEFORE=$(awk '$1 == "replica" && $6 ~ /^[0-9]+$/ && $6 > 0' "$STATE/status-before.txt" | wc -l)

# What to kill is chosen before the kill time (the topology does not change
# until then): on a loaded machine these redis-cli calls take seconds.
# The master serving the slot of room cf-0 (connflood's first room).
SLOT=$(timeout 5 redis-cli -p "${NODE_PORTS[0]}" cluster keyslot 'chat:{cf-0}:seq')
KILLED_PORT=$(timeout 5 redis-cli -p "${NODE_PORTS[0]}" cluster nodes |
    awk -v s="$SLOT" '$3 ~ /master/ && $3 !~ /fail/ {
        for (i = 9; i <= NF; i++) { split($i, r, "-"); if (r[2] == "") r[2] = r[1]; if (s >= r[1] && s <= r[2]) { split($2, a, "[:@]"); print a[2] } } }')
# kill-redis-master numbers masters by their first slot; find K for the port.
K=$(for p in "${NODE_PORTS[@]}"; do
    [ "$(role "$p")" = master ] || continue
    first=$(timeout 5 redis-cli -p "$p" cluster nodes | awk '$3 ~ /myself/ { f = $9; sub(/-.*/, "", f); print f }')
    echo "$first $p"
done | sort -n | awk -v p="$KILLED_PORT" '$2 == p { print NR - 1 }')
sleep $((RAMP + KILL_AT - (SECONDS - START) > 0 ? RAMP + KILL_AT - (SECONDS - START) : 0))
KEYS_AT_KILL=$(room_keys "$KILLED_PORT")
echo "--- killing the Redis master on $KILLED_PORT (slot $SLOT of room cf-0, $KEYS_AT_KILL room keys) at $((SECONDS - START))s"
KILL_RC=0
tools/localcluster kill-redis-master "$K" | tee "$STATE/kill.txt" || KILL_RC=$?
# The failover (promotion, cluster ok on every live node) is over here; the
# rejoin of the killed node as a replica is not part of it.
KILL_END=$((SECONDS - START))
KILLED_NODE=$((KILLED_PORT - BASE - 40))
REJOIN_RC=0
tools/localcluster start-redis-node "$KILLED_NODE" || REJOIN_RC=$?
tools/localcluster status

echo "--- waiting for connflood (sending stops at ${RAMP}s + ${DURATION}s)"
CF_RC=0
wait "$CF_PID" || CF_RC=$?
CF_PID=
cat "$STATE/connflood.out"

echo "--- checks"
fail=0
check() {
    if [ "$2" = ok ]; then
        echo "ok   $1"
    else
        echo "FAIL $1: $2"
        fail=1
    fi
}
verdict() { if [ "$2" = 0 ]; then check "$1" ok; else check "$1" "$3"; fi; }
verdict "killed a master and its replica was promoted ($(cut -d';' -f2- "$STATE/kill.txt" 2>/dev/null | tr -d '\n'))" \
    "$KILL_RC" "exit status $KILL_RC"
verdict "the killed node rejoined as a replica" "$((REJOIN_RC != 0 || $(role "$KILLED_PORT" | grep -c slave) != 1))" \
    "exit status $REJOIN_RC, role $(role "$KILLED_PORT")"
verdict "the killed master held room keys ($KEYS_AT_KILL)" "$((KEYS_AT_KILL == 0))" "none"
verdict "failover done (${KILL_END}s) before sending stopped ($((RAMP + DURATION))s)" \
    "$((KILL_END >= RAMP + DURATION))" "it was not"
verdict "connections on $PODS_BEFORE pods before the kill (at least 2)" "$((PODS_BEFORE < 2))" "too few"
masters_without=()
for p in "${NODE_PORTS[@]}"; do
    if [ "$(role "$p")" = master ] && [ "$(room_keys "$p")" = 0 ]; then masters_without+=("$p"); fi
done
verdict "every master holds room keys at the end" "${#masters_without[@]}" "none on ${masters_without[*]}"
verdict "connflood exit status 0" "$CF_RC" "$CF_RC"
checks=$(python3 - "$STATE/connflood.json" "$CONNECTIONS" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
c, m, n = r["connections"], r["messages"], int(sys.argv[2])
def line(what, good, value):
    print(f"{what}|{'ok' if good else value}")
line(f"all {n} connected and active at the end", c["connected"] == n and c["active"] == n,
     f"connected {c['connected']}, active {c['active']}")
line("zero errors", c["errors"] == 0, f"{c['errors']} {r['errors_by_kind']}")
line("zero rejected (no `unavailable` through the failover)", m["rejected"] == 0,
     f"{m['rejected']} {r.get('rejected_by_code', {})}")
line("zero lost", m["lost"] == 0, m["lost"])
line("zero duplicated, zero reordered", m["duplicated"] == 0 and m["reordered"] == 0,
     f"duplicated {m['duplicated']}, reordered {m['reordered']}")
line(f"delivered {m['delivered']} of {m['expected']}", m["delivered"] == m["expected"] > 0, "incomplete")
line(f"joins on {len(r['pods']['all_opens'])} pods over the run", len(r["pods"]["all_opens"]) == 3,
     r["pods"]["all_opens"])
EOF
)
while IFS= read -r line; do check "${line%%|*}" "${line#*|}"; done <<<"$checks"

MONGO_PORT=$(tools/localcluster ports | awk '$1 == "mongo" { print $2 }')
checks=$(timeout 300 "$PY" tools/localcluster-mongo-check.py "$STATE/connflood.json" "$MONGO_PORT") ||
    checks="MongoDB check|it failed to run"
while IFS= read -r line; do check "${line%%|*}" "${line#*|}"; done <<<"$checks"

[ "$fail" = 0 ] || exit 1
OK=1
echo "local Redis Cluster test passed in $((SECONDS - T_START))s"
