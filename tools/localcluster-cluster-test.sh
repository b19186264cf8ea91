#!/usr/bin/env bash
# tools/localcluster-cluster-test.sh: connflood through HAProxy and 3 server
# replicas on a Redis Cluster of 3 masters while one master is killed and
# its replica promoted (issue 11's integration test of Redis Cluster mode;
# a step of tools/test.sh).
#
# Starts a local cluster (`tools/localcluster up --redis-cluster 3`: 3
# replicas with REDIS_CLUSTER_NODES, 3 Redis masters with a replica each,
# nx-27017, HAProxy) in a temporary state directory on free ports and runs
# connflood through the balancer from 40 source addresses (300 connections,
# 30 rooms, so every master serves some, 1 message per connection per
# second). Nothing in it runs on a fixed clock: each step waits for a
# condition, with a generous deadline, so a loaded machine makes the run
# longer, not red:
#   1. every connection open and joined (connflood's status lines);
#   2. room cf-0 has BEFORE_KILL messages on the master that serves it;
#   3. that master SIGKILLed (`kill-redis-master`, which waits until the
#      other masters flag it failed, its replica is promoted and every live
#      node says cluster_state:ok);
#   4. every replica's /metrics shows websocket_redis_held 0 (what the
#      servers held through the failover is published);
#   5. the killed node started again, until it is a replica with its link up;
#   6. AFTER_REJOIN more messages of room cf-0 sequenced by the promoted
#      master;
#   7. then the script ends connflood's sending (--stop-file; --duration is
#      only the upper bound), connflood settles and judges;
#   8. every replica's MongoDB queue empty.
# Asserts from connflood's JSON report: exit status 0, every connection open
# at the end, zero errors, zero rejected, nothing lost, duplicated or
# reordered, every delivery made, sending stopped by the script after the
# failover; that the killed master held room keys when it died, rejoined as
# a replica, and that every master holds room keys at the end; and from
# MongoDB: every message stored exactly once. About 75 seconds on an idle
# machine. Always stops what it started, by PID.
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
CONNECTIONS=300 ROOMS=30 RAMP=5 BIND=127.0.0.2-127.0.0.41
# Room cf-0 gets 10 messages a second (10 senders, 1 msg/s each).
BEFORE_KILL=50 AFTER_REJOIN=100
# The upper bound of connflood's sending time; the script ends it earlier.
MAX_DURATION=300
# Deadline of each wait, in seconds: long enough for a machine loaded many
# times over, short enough that a real hang fails the run.
WAIT=120
PY=$ROOT/.venv-test/bin/python

for bin in "$WEBSOCKET_SERVER" "$CONNFLOOD"; do
    [ -x "$bin" ] || { echo "missing $bin: cargo build --release -p websocket-server -p connflood" >&2; exit 1; }
done
"$PY" -c 'import pymongo' 2>/dev/null || { echo "no pymongo in .venv-test (tools/test.sh installs nx-27017 there)" >&2; exit 1; }

STATE=$(mktemp -d "${TMPDIR:-/tmp}/localcluster-cluster-test.XXXXXX")
export LOCALCLUSTER_DIR=$STATE
STOP=$STATE/stop-sending
CF_PID=
OK=0
T_START=$SECONDS
START=$SECONDS
cleanup() {
    set +e
    if [ -n "$CF_PID" ] && kill -0 "$CF_PID" 2>/dev/null; then kill -TERM "$CF_PID"; fi
    # What every process looked like at the end, when it failed (on a loaded
    # machine this takes seconds, so not on the way of a passing run).
    [ "$OK" = 1 ] || [ ! -f "$STATE/cluster.conf" ] || tools/localcluster status
    tools/localcluster down 2>&1 | sed 's/^/  /'
    if [ "$OK" = 1 ]; then
        rm -rf "$STATE"
    else
        echo "FAILED; logs kept in $STATE (tools/localcluster logs with LOCALCLUSTER_DIR=$STATE)" >&2
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Seconds since connflood started, for the log.
at() { echo "$((SECONDS - START))s"; }

# wait_until DESCRIPTION COMMAND...: polls COMMAND every 0.5 s until it
# succeeds (then logs how long that took) or WAIT seconds pass (then fails).
wait_until() {
    local what=$1 t0=$SECONDS
    shift
    until "$@"; do
        if ((SECONDS - t0 >= WAIT)); then
            echo "--- timed out after ${WAIT}s waiting for $what (at $(at))"
            return 1
        fi
        sleep 0.5
    done
    echo "--- $what: after $((SECONDS - t0))s (at $(at))"
}
# answer COMMAND...: COMMAND's output once it succeeds, retried for up to
# 30 s (one redis-cli or curl call can time out on a loaded machine); empty
# if it never does. Always status 0, so `x=$(answer …)` never ends the script.
answer() {
    local t0=$SECONDS out
    while :; do
        if out=$("$@" 2>/dev/null); then
            printf '%s\n' "$out"
            return 0
        fi
        ((SECONDS - t0 < 30)) || return 0
        sleep 0.5
    done
}
rc() { timeout 10 redis-cli -h 127.0.0.1 -p "$@"; }
role() { answer rc "$1" role | head -n 1; }
# Room keys (chat:{ROOM}:…) a node holds; the servers use no other keys.
room_keys() { answer rc "$1" --scan --pattern 'chat:{*' | grep -c . || true; }
# Room cf-0's sequence on the master at PORT (empty if it does not answer).
cf0_seq() { answer rc "$1" get 'chat:{cf-0}:seq' | grep -E '^[0-9]+$' || true; }
seq_at_least() { local s; s=$(cf0_seq "$1"); [ -n "$s" ] && ((s >= $2)); }
# A replica's /metrics value NAME (empty if it does not answer).
metric() {
    answer curl -fs --max-time 5 "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n { print $2 }'
}
# Every replica reports metric NAME as 0.
all_zero() {
    local p v
    for p in "${REPLICA_PORTS[@]}"; do
        v=$(metric "$p" "$1")
        [ "$v" = 0 ] || return 1
    done
}

# connflood's last progress line, e.g.
# "[  12.0s run    ] conn 300/300 active 300 reconn 0 err 0 | sent …".
cf_line() { grep '^\[' "$STATE/connflood.out" | tail -n 1 || true; }
# Fails the test at once if connflood has exited before the script ended
# its sending (nothing left to watch).
cf_alive() {
    kill -0 "$CF_PID" 2>/dev/null && return 0
    echo "FAIL connflood exited before the script ended its sending (at $(at)):"
    cat "$STATE/connflood.out"
    exit 1
}
cf_ramped() {
    cf_alive
    cf_line | grep -Eq "^\[ *[0-9.]+s run +\] conn $CONNECTIONS/$CONNECTIONS active $CONNECTIONS "
}
cf0_before_kill() { cf_alive && seq_at_least "$KILLED_PORT" "$BEFORE_KILL"; }
cf0_after_rejoin() { cf_alive && seq_at_least "$PROMOTED_PORT" "$((SEQ_AT_REJOIN + AFTER_REJOIN))"; }

# The master serving room cf-0's slot and its number K for
# `kill-redis-master` (masters in order of their first slot), both from one
# node's CLUSTER NODES, so a slow or failed call cannot mix two views.
find_target() {
    local nodes line
    SLOT=$(answer rc "${NODE_PORTS[0]}" cluster keyslot 'chat:{cf-0}:seq')
    [[ $SLOT =~ ^[0-9]+$ ]] || return 1
    nodes=$(answer rc "${NODE_PORTS[0]}" cluster nodes)
    line=$(awk -v s="$SLOT" '$3 ~ /master/ && $3 !~ /fail/ && NF >= 9 {
            split($2, a, "[:@]"); first = $9; sub(/-.*/, "", first); owns = 0
            for (i = 9; i <= NF; i++) { split($i, r, "-"); if (r[2] == "") r[2] = r[1]; if (s >= r[1] && s <= r[2]) owns = 1 }
            print first, a[2], owns }' <<<"$nodes" | sort -n |
        awk '{ n++ } $3 == 1 { k = n - 1; p = $2 } END { if (n == 3 && p) print k, p }')
    [ -n "$line" ] || return 1
    read -r K KILLED_PORT <<<"$line"
}
rejoined() { [ "$(role "$KILLED_PORT")" = slave ] && answer rc "$KILLED_PORT" info replication | grep -q '^master_link_status:up'; }

# A base port whose 60 ports (replicas, Redis nodes and their buses) are
# free, below the ephemeral range.
BASE=$(free_base 60)

echo "--- local cluster with a 3-master Redis Cluster on 127.0.0.1:$BASE (state $STATE)"
tools/localcluster up --replicas 3 --port "$BASE" --redis-cluster 3
mapfile -t NODE_PORTS < <(tools/localcluster ports | awk '$1 ~ /^redis-node-/ { print $2 }')
mapfile -t REPLICA_PORTS < <(tools/localcluster ports | awk '$1 ~ /^replica-/ { print $2 }')

echo "--- connflood: $CONNECTIONS connections, $ROOMS rooms, from $BIND, ramp ${RAMP}s, 1 msg/s each until the script stops it (at most ${MAX_DURATION}s)"
"$CONNFLOOD" --url "ws://127.0.0.1:$BASE/ws" --connections "$CONNECTIONS" --rooms "$ROOMS" \
    --ramp-up "$RAMP" --duration "$MAX_DURATION" --stop-file "$STOP" --settle 10 --msg-interval 1000 \
    --bind "$BIND" --status-every 1 --json "$STATE/connflood.json" >"$STATE/connflood.out" 2>&1 &
CF_PID=$!
START=$SECONDS

wait_until "all $CONNECTIONS connections open and joined" cf_ramped
PODS_BEFORE=0
for p in "${REPLICA_PORTS[@]}"; do
    n=$(answer curl -fs --max-time 5 "http://127.0.0.1:$p/health" | sed -n 's/.*"connections":\([0-9]*\).*/\1/p')
    if [ "${n:-0}" -gt 0 ]; then PODS_BEFORE=$((PODS_BEFORE + 1)); fi
done

wait_until "the master that serves room cf-0" find_target
echo "--- room cf-0 is in slot $SLOT, served by master $K on port $KILLED_PORT"
wait_until "$BEFORE_KILL messages of room cf-0 on port $KILLED_PORT" cf0_before_kill
KEYS_AT_KILL=$(room_keys "$KILLED_PORT")
echo "--- killing the Redis master on $KILLED_PORT ($KEYS_AT_KILL room keys) at $(at)"
KILL_RC=0
tools/localcluster kill-redis-master "$K" | tee "$STATE/kill.txt" || KILL_RC=$?
# The failover (fail flag, promotion, cluster ok on every live node) is over
# here; the rejoin of the killed node as a replica is not part of it.
FAILOVER_END=$((SECONDS - START))
# kill-redis-master finds the master by its number; it must be the one chosen.
if [ "$KILL_RC" = 0 ] && ! grep -q "port $KILLED_PORT, pid" "$STATE/kill.txt"; then KILL_RC=1; fi
PROMOTED_PORT=$(sed -n 's/.*(port \([0-9]*\)) promoted.*/\1/p' "$STATE/kill.txt")
cf_alive
HELD_RC=0
wait_until "websocket_redis_held 0 on every replica" all_zero websocket_redis_held || HELD_RC=1

KILLED_NODE=$((KILLED_PORT - BASE - 40))
REJOIN_RC=0
tools/localcluster start-redis-node "$KILLED_NODE" || REJOIN_RC=$?
wait_until "node $KILLED_NODE (port $KILLED_PORT) a replica with its link up" rejoined || REJOIN_RC=1
SEQ_AT_REJOIN=$(cf0_seq "${PROMOTED_PORT:-0}")
AFTER_RC=0
if [ -n "$SEQ_AT_REJOIN" ]; then
    wait_until "$AFTER_REJOIN more messages of room cf-0 on the promoted master (port $PROMOTED_PORT)" \
        cf0_after_rejoin || AFTER_RC=1
else
    echo "--- no sequence of room cf-0 on the promoted master (port ${PROMOTED_PORT:-?})"
    AFTER_RC=1
fi
echo "--- the cluster as the promoted master sees it:"
answer rc "${PROMOTED_PORT:-${NODE_PORTS[0]}}" cluster nodes | cut -d' ' -f2,3,9- | sed 's/^/  /'

echo "--- ending connflood's sending at $(at); it settles 10 s and judges"
: >"$STOP"
CF_RC=0
wait "$CF_PID" || CF_RC=$?
CF_PID=
cat "$STATE/connflood.out"
# Each replica's counters, kept with the logs (rejections by code, what was
# held, Redis and MongoDB errors) for a run that fails.
for i in "${!REPLICA_PORTS[@]}"; do
    answer curl -fs --max-time 5 "http://127.0.0.1:${REPLICA_PORTS[i]}/metrics" >"$STATE/metrics-replica-$i.txt"
done
# The MongoDB writers' queues: nx-27017 is slow on a loaded machine (over a
# minute for ~16,000 messages), so this wait lasts while the queues shrink
# and fails only when they stop shrinking for WAIT seconds (or after 900 s).
FLUSH_RC=0
flush_t0=$SECONDS best=-1 best_at=$SECONDS
while :; do
    depth=0
    for p in "${REPLICA_PORTS[@]}"; do
        v=$(metric "$p" websocket_mongo_queue_depth)
        depth=$((depth + ${v:-999999}))
    done
    if [ "$depth" = 0 ]; then
        echo "--- websocket_mongo_queue_depth 0 on every replica: after $((SECONDS - flush_t0))s (at $(at))"
        break
    fi
    if ((best < 0 || depth < best)); then best=$depth best_at=$SECONDS; fi
    if ((SECONDS - best_at >= WAIT || SECONDS - flush_t0 >= 900)); then
        echo "--- the MongoDB queues stopped shrinking at $best messages (at $(at))"
        FLUSH_RC=1
        break
    fi
    sleep 1
done

echo "--- checks"
SEND_END=$(python3 -c 'import json, sys; print(int(json.load(open(sys.argv[1]))["timing"]["send_window_secs"]))' \
    "$STATE/connflood.json" 2>/dev/null || echo 0)
verdict "killed master $K on port $KILLED_PORT and its replica was promoted ($(cut -d';' -f2- "$STATE/kill.txt" 2>/dev/null | tr -d '\n'))" \
    "$KILL_RC" "exit status $KILL_RC, or not that master ($(head -c 120 "$STATE/kill.txt" 2>/dev/null))"
verdict "the servers published what they held through the failover" "$HELD_RC" "websocket_redis_held not 0"
verdict "the killed node rejoined as a replica" "$REJOIN_RC" "role $(role "$KILLED_PORT")"
verdict "the killed master held room keys ($KEYS_AT_KILL)" "$((KEYS_AT_KILL == 0))" "none"
verdict "room cf-0 sent on through the promoted master after the rejoin" "$AFTER_RC" "not $AFTER_REJOIN more messages"
verdict "failover done (${FAILOVER_END}s) before sending stopped (${SEND_END}s), which the script ended" \
    "$((FAILOVER_END >= SEND_END || SEND_END >= RAMP + MAX_DURATION))" "it was not"
verdict "connections on $PODS_BEFORE pods before the kill (at least 2)" "$((PODS_BEFORE < 2))" "too few"
masters_without=()
for p in "${NODE_PORTS[@]}"; do
    if [ "$(role "$p")" = master ] && [ "$(room_keys "$p")" = 0 ]; then masters_without+=("$p"); fi
done
verdict "every master holds room keys at the end" "${#masters_without[@]}" "none on ${masters_without[*]}"
verdict "connflood exit status 0" "$CF_RC" "$CF_RC"
checks=$(python3 tools/localcluster-report-check.py "$STATE/connflood.json" "$CONNECTIONS" failover) || checks="connflood's JSON report|unreadable"
check_lines "$checks"

verdict "every replica wrote its MongoDB queue out" "$FLUSH_RC" "websocket_mongo_queue_depth not 0"
MONGO_PORT=$(tools/localcluster ports | awk '$1 == "mongo" { print $2 }')
checks=$(timeout 300 "$PY" tools/localcluster-mongo-check.py "$STATE/connflood.json" "$MONGO_PORT") ||
    checks="MongoDB check|it failed to run"
check_lines "$checks"

all_passed || exit 1
OK=1
echo "local Redis Cluster test passed in $((SECONDS - T_START))s"
