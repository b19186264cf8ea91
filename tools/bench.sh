#!/usr/bin/env bash
# tools/bench.sh: the benchmarks of issue 4, on loopback, with tools/localcluster
# and connflood. Reports figures; asserts nothing about time.
#
#   tools/bench.sh [--scenario seed|idle|fanout|peers|roll|redis|all] [--runs N] [--quick]
#                  [--no-profile]
#   tools/bench.sh --report bench-results/<date>    (regenerate the doc only)
#
# Raw results go to bench-results/<date>/ (git-ignored): per run, connflood's
# JSON reports and progress output, the server/cluster logs, and measure.txt
# (the /proc and /metrics samples); tools/bench/report.py turns them into
# run.json, runs.csv and docs/benchmarks.md (median and range over the runs,
# the targets, the machine, the commands).
#
# A full run (--scenario all --runs 3) takes about 90 minutes (the peers
# ladder up to 40 of them) and loads both cores: run it on an otherwise idle
# machine. --quick uses tiny sizes (about 6 minutes for everything) to check
# the scripts, says so in its report, and writes that report only into its
# results directory.
# After the fan-out runs, when `perf` is installed, one more run at the first
# rate is profiled (perf record on the server, 10 s of the steady phase) into
# profile/; --no-profile skips it. That run's figures are not in the tables.
# peers runs a rising ladder (one room of 2,000, 64-byte messages, 100 to
# 1,000 senders at 1 msg/s: 200k to 2.0M deliveries/s, a fresh server per
# step) against websocket-server (WORKERS=1 and the default WORKERS=2) and the
# peer servers of tools/bench/peers (uWebSockets in Bun, Node's ws; installed
# there with npm ci, which needs node and npm). The load comes from
# PEERS_CLIENTS (default 2) connflood processes; a server's ladder stops after
# the first step that is incomplete, behind, or at p99 >= 250 ms. At most
# about 15 minutes per run; run alone, it replaces only its own section of the
# doc. PEERS_SERVERS="websocket-server-1w uws-bun" and PEERS_STEPS="500 650"
# narrow the ladder (to rerun a part of it).
# redis measures Redis CPU per chat message with one Redis and with a
# 3-master Redis Cluster (tools/localcluster --redis-cluster 3), and what a
# replica spends on messages of rooms it has no member in; run alone, it
# replaces only its own section of docs/benchmarks.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SERVER_BIN=${WEBSOCKET_SERVER:-$ROOT/target/release/websocket-server}
CONNFLOOD=${CONNFLOOD:-$ROOT/target/release/connflood}
# Where the report goes (BENCH_DOC overrides): docs/benchmarks.md for a full
# run or --report; a --quick run writes only into its results directory, so
# it never replaces the committed figures.
DOC=${BENCH_DOC:-}
CLK_TCK=$(getconf CLK_TCK)
PAGE_SIZE=$(getconf PAGESIZE)

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }

SCENARIO=all RUNS=3 QUICK=0 REPORT_ONLY='' PROFILE=1
PEERS_STEPS_ENV=${PEERS_STEPS:-} # see PEER_KINDS below
while [ $# -gt 0 ]; do
    case $1 in
    --scenario) SCENARIO=${2:?--scenario NAME}; shift 2 ;;
    --runs) RUNS=${2:?--runs N}; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --no-profile) PROFILE=0; shift ;;
    --report) REPORT_ONLY=${2:?--report DIR}; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -n "$REPORT_ONLY" ]; then
    # The results of a --quick run stay in their directory, as when it ran.
    if [ -z "$DOC" ] && grep -qx 'quick yes' "$REPORT_ONLY/machine.txt" 2>/dev/null; then
        DOC=$REPORT_ONLY/benchmarks.md
    fi
    DOC=${DOC:-$ROOT/docs/benchmarks.md}
    python3 tools/bench/report.py "$REPORT_ONLY" "$DOC"
    echo "wrote $DOC"
    exit 0
fi
case $SCENARIO in
all) SCENARIOS=(seed idle fanout peers roll redis) ;;
seed | idle | fanout | peers | roll | redis) SCENARIOS=("$SCENARIO") ;;
*) echo "--scenario must be seed, idle, fanout, peers, roll, redis or all" >&2; exit 2 ;;
esac
[[ $RUNS =~ ^[1-9][0-9]?$ ]] || { echo "--runs must be 1-99" >&2; exit 2; }
for bin in "$SERVER_BIN" "$CONNFLOOD"; do
    [ -x "$bin" ] || { echo "missing $bin: cargo build --release -p websocket-server -p connflood" >&2; exit 1; }
done

# ---------------------------------------------------------------------------
# Sizes. The full sizes are issue 4's; --quick only proves the plumbing.

if [ "$QUICK" = 1 ]; then
    SEED_CONNS=200 SEED_ROOMS=10 SEED_RAMP=3 SEED_DURATION=12 SEED_INTERVAL=1000 SEED_WARM=3 SEED_TAIL=2
    ROLL_DURATION=30 ROLL_AT=2 CLUSTER_DRAIN=(--drain-delay 1 --drain-window 2)
    IDLE_CONNS=600 IDLE_RAMP=3 IDLE_HOLD=6
    FANOUT_CONNS=200 FANOUT_RATES=(20 40) FANOUT_RAMP=2 FANOUT_DURATION=8 FANOUT_SKIP=2 PROFILE_SECS=3
    PEERS_CONNS=200 PEERS_STEPS=(20 40) PEERS_RAMP=2 PEERS_DURATION=8 PEERS_SKIP=2 PEERS_TAIL=1 PEERS_SETTLE=2
    REDIS_CONNS=200 REDIS_ROOMS=100 REDIS_INTERVAL=200 REDIS_RAMP=3 REDIS_DURATION=14 REDIS_WARM=3 REDIS_TAIL=2
else
    SEED_CONNS=10000 SEED_ROOMS=100 SEED_RAMP=60 SEED_DURATION=120 SEED_INTERVAL=10000 SEED_WARM=10 SEED_TAIL=10
    ROLL_DURATION=120 ROLL_AT=20 CLUSTER_DRAIN=()
    # 13 of a server's 20,000 descriptors are its own (listeners, epoll,
    # wakers, stdio): 19,950 probes how close one process gets to the limit.
    IDLE_CONNS=19950 IDLE_RAMP=30 IDLE_HOLD=20
    FANOUT_CONNS=2000 FANOUT_RATES=(100 200 400 800 1600) FANOUT_RAMP=5 FANOUT_DURATION=25 FANOUT_SKIP=5 PROFILE_SECS=10
    # Issue 13's ladder: one room of 2,000, S senders at 1 msg/s each, so
    # 2,000 × S deliveries/s (200k … 2.0M); shorter steps than the fanout's so
    # that four servers × eight steps × three runs stay under about 40 minutes.
    PEERS_CONNS=2000 PEERS_STEPS=(100 200 300 400 500 650 800 1000) PEERS_RAMP=3 PEERS_DURATION=15 PEERS_SKIP=5
    PEERS_TAIL=2 PEERS_SETTLE=3
    # Issue 11's measurement: 1,000 connections in 500 rooms, one message per
    # connection every 100 ms (~10,000 msg/s).
    REDIS_CONNS=1000 REDIS_ROOMS=500 REDIS_INTERVAL=100 REDIS_RAMP=10 REDIS_DURATION=40 REDIS_WARM=10 REDIS_TAIL=5
fi
SETTLE=5
# Source addresses: a separate range for every connflood process of a run.
SEED_BIND_A=127.0.0.10-127.0.0.59 SEED_BIND_B=127.0.0.60-127.0.0.109
IDLE_BINDS=(127.0.0.110-127.0.0.119 127.0.0.120-127.0.0.129 127.0.0.130-127.0.0.139)
FANOUT_BIND=127.0.0.1-127.0.0.4
REDIS_BIND=127.0.0.140-127.0.0.179
# The peers ladder's client: PEERS_CLIENTS connflood processes, process i
# with the source addresses 127.0.0.(180 + 4i) to 127.0.0.(183 + 4i).
PEERS_CLIENTS=${PEERS_CLIENTS:-2}
[[ $PEERS_CLIENTS =~ ^([1-9]|1[0-6])$ ]] || { echo "PEERS_CLIENTS must be 1-16" >&2; exit 2; }
# A step that is incomplete, not in real time or at p99 >= this ends a server's ladder.
PEERS_P99_LIMIT_MS=250
# The servers of the peers scenario (see start_server), in ladder order.
PEER_KINDS=(websocket-server-1w websocket-server uws-bun node-ws)
# PEERS_SERVERS and PEERS_STEPS (space-separated) narrow the ladder, e.g. to
# rerun a part of it; the report says which steps and servers ran.
if [ -n "${PEERS_SERVERS:-}" ]; then
    read -r -a PEER_KINDS <<<"$PEERS_SERVERS"
    for k in "${PEER_KINDS[@]}"; do
        [[ " websocket-server-1w websocket-server uws-bun node-ws " == *" $k "* ]] ||
            { echo "PEERS_SERVERS: unknown server $k" >&2; exit 2; }
    done
fi
if [ -n "$PEERS_STEPS_ENV" ]; then
    read -r -a PEERS_STEPS <<<"$PEERS_STEPS_ENV"
    for k in "${PEERS_STEPS[@]}"; do
        if ! [[ $k =~ ^[1-9][0-9]{0,5}$ ]] || ((k > PEERS_CONNS)); then
            echo "PEERS_STEPS: $k is not 1-$PEERS_CONNS" >&2
            exit 2
        fi
    done
fi
PEERS=$ROOT/tools/bench/peers
SERVER_KIND=websocket-server

STAMP=$(date -u +%Y-%m-%d_%H%M%S)
OUT=$ROOT/bench-results/$STAMP
[ "$QUICK" = 1 ] && OUT=$OUT-quick
mkdir -p "$OUT"
COMMAND="tools/bench.sh --scenario $SCENARIO --runs $RUNS"
[ "$QUICK" = 0 ] || COMMAND+=" --quick"

# ---------------------------------------------------------------------------
# Helpers. Everything started here is recorded by PID and stopped by PID.

say() { printf '[bench %s] %s\n' "$(date +%T)" "$*"; }
# put KEY VALUE: one measurement of the current run.
put() { printf '%s %s\n' "$1" "$2" >>"$MEASURE"; }
# Logs a command of the first run of a scenario, for the doc.
LOG_CMDS=0
log_cmd() {
    [ "$LOG_CMDS" = 1 ] || return 0
    local line
    printf -v line '%q ' "$@"
    line=${line//$OUT\//\$OUT\/}
    line=${line//$ROOT\//}
    printf '%s %s\n' "$CURRENT" "${line% }" >>"$OUT/commands.txt"
}
cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
# runq_wait_ns PID: how long the process's threads have waited, runnable, for
# a core (the second field of /proc/PID/task/*/schedstat, in ns; 0 if gone).
# Beside its CPU time this says whether it was idle or held back by the others.
runq_wait_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ w += $2 } END { printf "%.0f\n", w }'; }
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
metric() {
    curl -s --max-time 2 "http://127.0.0.1:$1/metrics" 2>/dev/null | awk -v m="$2" '$1 == m { print $2; exit }' || true
}
health_conns() {
    curl -s --max-time 2 "http://127.0.0.1:$1/health" 2>/dev/null | sed -n 's/.*"connections":\([0-9]*\).*/\1/p' || true
}
# Busy and total jiffies of the whole machine, all CPUs (/proc/stat: busy is
# everything but idle and iowait; guest time is already in user).
# machine_ticks: the machine's busy, total and stolen CPU ticks (/proc/stat;
# busy counts steal: time the hypervisor gave our cores to someone else).
machine_ticks() { awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t, $9; exit }' /proc/stat; }
# busy_pct BUSY0 TOTAL0 BUSY1 TOTAL1 NCPU: machine CPU busy between two samples, % of one core.
busy_pct() { awk -v b0="$1" -v t0="$2" -v b1="$3" -v t1="$4" -v n="$5" 'BEGIN { printf "%.0f", (t1 > t0 ? (b1 - b0) / (t1 - t0) * 100 * n : 0) }'; }
# put_machine BUSY0 TOTAL0 STEAL0 BUSY1 TOTAL1 STEAL1: the machine's busy and
# stolen CPU over a window, % of one core, into the measure file.
put_machine() {
    put window_machine_busy_pct "$(busy_pct "$1" "$2" "$4" "$5" "$(nproc)")"
    put window_machine_steal_pct "$(busy_pct "$3" "$2" "$6" "$5" "$(nproc)")"
}
# The connflood processes under the `timeout` wrappers of CF_PIDS.
cf_procs() { local p; for p in "${CF_PIDS[@]}"; do pgrep -P "$p" || true; done; }
tcp_mem_pages() { awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1) }' /proc/net/sockstat; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg | tr ' ' /; }
sum() { awk '{ s += $1 } END { printf "%d\n", s }'; }
# Seconds (float) since T0.
elapsed() { awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }
# Sleeps until OFFSET seconds after T0.
sleep_until() {
    local left
    left=$(awk -v a="$T0" -v b="$EPOCHREALTIME" -v o="$1" 'BEGIN { l = a + o - b; printf "%.3f", (l > 0 ? l : 0) }')
    sleep "$left"
}
all_free() {
    local p
    for ((p = $1; p < $1 + 30; p++)); do
        ! ss -Htln "sport = :$p" | grep -q . || return 1
    done
}
pick_base() {
    local try c
    for ((try = 0; try < 20; try++)); do
        c=$((20000 + (RANDOM % 100) * 100))
        if all_free "$c"; then
            echo "$c"
            return 0
        fi
    done
    echo "no free port range found" >&2
    return 1
}

CF_PIDS=() CF_NAMES=()
SERVER_PID=
CLUSTER_DIR=
ROLL_PID=
cleanup() {
    set +e
    local p
    for p in "${CF_PIDS[@]}" "$ROLL_PID"; do [ -n "$p" ] && kill -0 "$p" 2>/dev/null && kill -TERM "$p"; done
    [ -z "$SERVER_PID" ] || stop_server
    [ -z "$CLUSTER_DIR" ] || LOCALCLUSTER_DIR=$CLUSTER_DIR tools/localcluster down >/dev/null 2>&1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# cf_start NAME LIMIT_SECS ARGS...: a connflood process in the background.
cf_start() {
    local name=$1 limit=$2
    shift 2
    log_cmd "$CONNFLOOD" "$@" --json "$RUN/$name.json"
    timeout -k 5 "$limit" "$CONNFLOOD" "$@" --json "$RUN/$name.json" >"$RUN/$name.out" 2>&1 &
    CF_PIDS+=($!)
    CF_NAMES+=("$name")
}
# Waits for every connflood started since the last cf_wait; records exit statuses.
cf_wait() {
    local i rc
    for i in "${!CF_PIDS[@]}"; do
        rc=0
        wait "${CF_PIDS[$i]}" || rc=$?
        put "cf_rc_${CF_NAMES[$i]}" "$rc"
    done
    CF_PIDS=() CF_NAMES=()
}

# start_server PORT [VAR=VALUE...]: the server SERVER_KIND names on
# 127.0.0.1:PORT, in the background, and waits for its /ready. websocket-server
# (idle, fanout): release, WORKERS=2, single node; websocket-server-1w: the same
# with WORKERS=1; uws-bun, node-ws: the peers of tools/bench/peers.
start_server() {
    local port=$1 cmd
    shift
    case $SERVER_KIND in
    websocket-server | websocket-server-1w)
        local workers=2
        [ "$SERVER_KIND" = websocket-server ] || workers=1
        cmd=(env "PORT=$port" BIND_ADDR=127.0.0.1 "WORKERS=$workers" "POD_NAME=bench-$CURRENT" DRAIN_DELAY_SECS=0
            DRAIN_WINDOW_SECS=1 "$@" "$SERVER_BIN") ;;
    uws-bun) cmd=(env "PORT=$port" BIND_ADDR=127.0.0.1 "POD_NAME=bench-$CURRENT" "$PEERS/node_modules/.bin/bun"
        "$PEERS/uws-bun.js") ;;
    node-ws) cmd=(env "PORT=$port" BIND_ADDR=127.0.0.1 "POD_NAME=bench-$CURRENT" node "$PEERS/node-ws.js") ;;
    *) echo "unknown server kind $SERVER_KIND" >&2; return 1 ;;
    esac
    log_cmd "${cmd[@]}"
    "${cmd[@]}" >>"$RUN/server.log" 2>&1 &
    SERVER_PID=$!
    local i
    for ((i = 0; i < 50; i++)); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/ready" 2>/dev/null)" = 200 ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.2
    done
    echo "the server did not become ready (see $RUN/server.log)" >&2
    return 1
}
stop_server() {
    local i
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.2
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

new_run() {
    RUN=$OUT/$CURRENT/run-$1
    mkdir -p "$RUN"
    MEASURE=$RUN/measure.txt
    : >"$MEASURE"
    put clk_tck "$CLK_TCK"
    put page_size "$PAGE_SIZE"
    put loadavg_before "$(loadavg)"
    LOG_CMDS=0
    [ "$1" != 1 ] || LOG_CMDS=1
    CF_NAMES=()
}

# ---------------------------------------------------------------------------
# seed and roll: connections over rooms through the balancers.

cluster_pids() { # replica or haproxy PIDs of the current cluster
    local f
    for f in "$CLUSTER_DIR"/pids/"$1"-*.pid; do [ -f "$f" ] && cat "$f"; done
}
ticks_of() { local p; for p in "$@"; do cpu_ticks "$p"; done | sum; }

# sample_window NAME PORT PID...: one end of a fan-out's steady window, into
# the associative array NAME: the wall time of the /proc reads (u), the
# machine's busy and total ticks (mb, mt), the server's CPU ticks (c), each
# connflood process's (f0, f1, ... for the PIDs given), then the server's
# delivered and write-syscall counters (d, s) from /metrics, the delivered
# request timed by its start and end (a, b): a loaded server can take a
# second or two to answer, so a window's length is taken between the
# midpoints of those requests. A counter the server did not answer is empty.
# shellcheck disable=SC2034 # w names the caller's array (a nameref)
sample_window() {
    local -n w=$1
    local port=$2 i=0 p
    shift 2
    w["u"]=$EPOCHREALTIME
    read -r "w[mb]" "w[mt]" "w[ms]" < <(machine_ticks)
    w["c"]=$(cpu_ticks "$SERVER_PID")
    w["q"]=$(runq_wait_ns "$SERVER_PID")
    for p in "$@"; do
        w["f$i"]=$(cpu_ticks "$p")
        w["g$i"]=$(runq_wait_ns "$p")
        i=$((i + 1))
    done
    w["a"]=$EPOCHREALTIME
    w["d"]=$(metric "$port" websocket_messages_delivered_total)
    w["b"]=$EPOCHREALTIME
    w["s"]=$(metric "$port" websocket_write_syscalls_total)
}
# window_delta NAME: the delivered and write-syscall counts between the two
# samples W0 and W1 (0 when either sample lacks it: the report then falls back
# on connflood's own counts, never on half a window).
window_delta() {
    local key=$1
    if [ -n "${W0[$key]}" ] && [ -n "${W1[$key]}" ]; then echo $((${W1[$key]} - ${W0[$key]})); else echo 0; fi
}

run_cluster() {
    local k=$1 base duration i half pids hpids
    new_run "$k"
    duration=$SEED_DURATION
    [ "$CURRENT" != roll ] || duration=$ROLL_DURATION
    base=$(pick_base)
    CLUSTER_DIR=$RUN/cluster
    log_cmd env "LOCALCLUSTER_DIR=$CLUSTER_DIR" tools/localcluster up --replicas 3 --port "$base" --balancers 2 "${CLUSTER_DRAIN[@]}"
    LOCALCLUSTER_DIR=$CLUSTER_DIR tools/localcluster up --replicas 3 --port "$base" --balancers 2 \
        "${CLUSTER_DRAIN[@]}" >"$RUN/up.out" 2>&1 || { cat "$RUN/up.out" >&2; return 1; }
    put replicas 3
    mapfile -t pids < <(cluster_pids replica)
    mapfile -t hpids < <(cluster_pids haproxy)
    local r0 h0
    r0=$(ticks_of "${pids[@]}")
    h0=$(ticks_of "${hpids[@]}")

    half=$((SEED_CONNS / 2))
    local limit=$((SEED_RAMP + duration + SETTLE + 60))
    local common=(--rooms "$SEED_ROOMS" --ramp-up "$SEED_RAMP" --duration "$duration"
        --msg-interval "$SEED_INTERVAL" --settle "$SETTLE" --status-every 10)
    T0=$EPOCHREALTIME
    cf_start cf-a "$limit" --url "ws://127.0.0.1:$base/ws" --connections "$half" --bind "$SEED_BIND_A" "${common[@]}"
    cf_start cf-b "$limit" --url "ws://127.0.0.1:$((base + 1))/ws" --connections "$((SEED_CONNS - half))" \
        --bind "$SEED_BIND_B" "${common[@]}"
    put sending_stops_at "$((SEED_RAMP + duration))"

    # Steady window (seed), or the moment to roll (roll).
    local warm=$SEED_WARM
    [ "$CURRENT" != roll ] || warm=$ROLL_AT
    sleep_until $((SEED_RAMP + warm))
    local w0 d0 c0 g0 mb0 mt0 ms0 s0 cf
    mapfile -t cf < <(cf_procs)
    local side=("$(cat "$CLUSTER_DIR/pids/redis.pid" 2>/dev/null)" "$(cat "$CLUSTER_DIR/pids/mongo.pid" 2>/dev/null)")
    w0=$EPOCHREALTIME
    d0=$(for ((i = 0; i < 3; i++)); do metric "$((base + 20 + i))" websocket_messages_delivered_total; done | sum)
    c0=$(ticks_of "${pids[@]}")
    g0=$(ticks_of "${hpids[@]}")
    s0="$(cpu_ticks "${side[0]}") $(cpu_ticks "${side[1]}") $(ticks_of "${cf[@]}")"
    read -r mb0 mt0 ms0 < <(machine_ticks)
    for ((i = 0; i < 3; i++)); do put "conns_replica_$i" "$(health_conns "$((base + 20 + i))")"; done
    if [ "$CURRENT" = roll ]; then
        put roll_started_at "$(elapsed)"
        log_cmd env "LOCALCLUSTER_DIR=$CLUSTER_DIR" tools/localcluster roll --pause 2
        LOCALCLUSTER_DIR=$CLUSTER_DIR tools/localcluster roll --pause 2 >"$RUN/roll.out" 2>&1 &
        ROLL_PID=$!
        local rc=0
        wait "$ROLL_PID" || rc=$?
        ROLL_PID=
        put roll_ended_at "$(elapsed)"
        put roll_rc "$rc"
        put roll_secs "$(awk -v a="$w0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')"
    else
        sleep_until $((SEED_RAMP + duration - SEED_TAIL))
        local d1 c1 g1 mb1 mt1 ms1 s1
        d1=$(for ((i = 0; i < 3; i++)); do metric "$((base + 20 + i))" websocket_messages_delivered_total; done | sum)
        c1=$(ticks_of "${pids[@]}")
        g1=$(ticks_of "${hpids[@]}")
        s1="$(cpu_ticks "${side[0]}") $(cpu_ticks "${side[1]}") $(ticks_of "${cf[@]}")"
        read -r mb1 mt1 ms1 < <(machine_ticks)
        read -r -a s0 <<<"$s0"
        read -r -a s1 <<<"$s1"
        put window_cpu_ticks_redis "$((s1[0] - s0[0]))"
        put window_cpu_ticks_mongo "$((s1[1] - s0[1]))"
        put window_cpu_ticks_connflood "$((s1[2] - s0[2]))"
        put_machine "$mb0" "$mt0" "$ms0" "$mb1" "$mt1" "$ms1"
        put window_secs "$(awk -v a="$w0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')"
        put window_delivered "$((d1 - d0))"
        put window_cpu_ticks_replicas "$((c1 - c0))"
        put window_cpu_ticks_haproxy "$((g1 - g0))"
    fi
    cf_wait
    if [ "$CURRENT" != roll ]; then
        # Whole-run CPU and peak RSS (a roll replaces the processes, so not there).
        put run_cpu_ticks_replicas "$(($(ticks_of "${pids[@]}") - r0))"
        for ((i = 0; i < 3; i++)); do put "hwm_kib_replica_$i" "$(status_kib "${pids[$i]}" VmHWM)"; done
    fi
    put run_cpu_ticks_haproxy "$(($(ticks_of "${hpids[@]}") - h0))"
    put loadavg_after "$(loadavg)"
    LOCALCLUSTER_DIR=$CLUSTER_DIR tools/localcluster down >"$RUN/down.out" 2>&1 || true
    CLUSTER_DIR=
    say "$CURRENT run $k: $(summary_line)"
}

summary_line() {
    python3 - "$RUN" <<'EOF' || true
import glob, json, sys
rs = [json.load(open(p)) for p in sorted(glob.glob(sys.argv[1] + "/cf-*.json"))]
if not rs:
    print("no connflood report"); sys.exit()
c = lambda k: sum(r["connections"][k] for r in rs)
m = lambda k: sum(r["messages"][k] for r in rs)
print(f"passed {all(r['passed'] for r in rs)}; connected {c('connected')}/{c('target')}, errors {c('errors')}, "
      f"reconnects {c('reconnects')}, lost {m('lost')}, duplicated {m('duplicated')}, "
      f"p99 {max(r['latency_ms']['p99'] for r in rs):.2f} ms")
EOF
}

# ---------------------------------------------------------------------------
# idle: as many idle connections as one process holds.

run_idle() {
    local k=$1 base port i n per binds=${#IDLE_BINDS[@]}
    new_run "$k"
    base=$(pick_base)
    port=$((base + 1))
    start_server "$port" "MAX_CONNECTIONS=$((IDLE_CONNS + 20))"
    sleep 1
    put rss_before_kib "$(status_kib "$SERVER_PID" VmRSS)"
    put tcp_mem_pages_before "$(tcp_mem_pages)"
    local t0
    t0=$(cpu_ticks "$SERVER_PID")
    per=$(((IDLE_CONNS + binds - 1) / binds))
    local limit=$((IDLE_RAMP + IDLE_HOLD + SETTLE + 60))
    T0=$EPOCHREALTIME
    for ((i = 0; i < binds; i++)); do
        n=$per
        ((i < binds - 1)) || n=$((IDLE_CONNS - per * (binds - 1)))
        cf_start "cf-$i" "$limit" --url "ws://127.0.0.1:$port/ws" --connections "$n" --senders 0 \
            --rooms 100 --ramp-up "$IDLE_RAMP" --duration "$IDLE_HOLD" --settle "$SETTLE" \
            --bind "${IDLE_BINDS[$i]}" --status-every 10
    done
    # Wait (bounded) until the server holds every connection, then sample.
    local held=0
    for ((i = 0; i < (IDLE_RAMP + IDLE_HOLD) * 5; i++)); do
        held=$(metric "$port" websocket_connections_active)
        [ "${held:-0}" -lt "$IDLE_CONNS" ] || break
        sleep 0.2
    done
    local rss=0
    for ((i = 0; i < 3; i++)); do
        sleep 1
        rss=$(status_kib "$SERVER_PID" VmRSS)
    done
    put connections_held "$(metric "$port" websocket_connections_active)"
    put rss_after_kib "$rss"
    put tcp_mem_pages_after "$(tcp_mem_pages)"
    put at_secs "$(elapsed)"
    cf_wait
    put hwm_kib "$(status_kib "$SERVER_PID" VmHWM)"
    put run_cpu_ticks "$(($(cpu_ticks "$SERVER_PID") - t0))"
    put loadavg_after "$(loadavg)"
    stop_server
    say "idle run $k: held $(awk '$1 == "connections_held" { print $2 }' "$MEASURE"), RSS $(awk '$1 == "rss_before_kib" { print $2 }' "$MEASURE") → $rss KiB; $(summary_line)"
}

# ---------------------------------------------------------------------------
# fanout: one room, rising rate, fresh server per rate.

# fanout_load PORT SENDERS: one room of FANOUT_CONNS connections, SENDERS of them
# sending once a second, against the server on PORT; returns once the ramp and
# FANOUT_SKIP have passed (the start of the steady window).
fanout_load() {
    cf_start cf-a $((FANOUT_RAMP + FANOUT_DURATION + SETTLE + 60)) --url "ws://127.0.0.1:$1/ws" \
        --connections "$FANOUT_CONNS" --rooms 1 --senders "$2" --msg-interval 1000 \
        --ramp-up "$FANOUT_RAMP" --duration "$FANOUT_DURATION" --settle "$SETTLE" \
        --bind "$FANOUT_BIND" --status-every 10
    sleep_until $((FANOUT_RAMP + FANOUT_SKIP))
}

# fanout_once SENDERS: one fan-out measurement into the (new) directory $RUN: a
# fresh server (SERVER_KIND), the load, the steady-window samples, the server
# stopped. Sets VERDICT to "go|stop <one-line summary>" (go: delivery kept
# up — complete, and at least 95 % of the offered deliveries/s in the steady
# window; the ladder rises until it does not). Rates are senders at one
# message a second each, so at most one per connection.
fanout_once() {
    local senders=$1 base port
    mkdir -p "$RUN"
    MEASURE=$RUN/measure.txt
    : >"$MEASURE"
    put clk_tck "$CLK_TCK"
    put server "$SERVER_KIND"
    put senders "$senders"
    put msg_interval_ms 1000
    put loadavg_before "$(loadavg)"
    base=$(pick_base)
    port=$((base + 1))
    start_server "$port"
    T0=$EPOCHREALTIME
    fanout_load "$port" "$senders"
    local cf i total=0
    declare -A W0=() W1=()
    mapfile -t cf < <(cf_procs)
    sample_window W0 "$port" "${cf[@]}"
    sleep_until $((FANOUT_RAMP + FANOUT_DURATION - FANOUT_SKIP))
    sample_window W1 "$port" "${cf[@]}"
    for i in "${!cf[@]}"; do total=$((total + ${W1["f$i"]} - ${W0["f$i"]})); done
    put window_cpu_ticks_connflood "$total"
    put_machine "${W0[mb]}" "${W0[mt]}" "${W0[ms]}" "${W1[mb]}" "${W1[mt]}" "${W1[ms]}"
    put window_secs "$(awk -v a0="${W0[a]}" -v b0="${W0[b]}" -v a1="${W1[a]}" -v b1="${W1[b]}" 'BEGIN { printf "%.3f", (a1 + b1 - a0 - b0) / 2 }')"
    put window_cpu_ticks "$((W1[c] - W0[c]))"
    put window_runq_wait_ns "$((W1[q] - W0[q]))"
    put window_delivered "$(window_delta d)"
    put window_write_syscalls "$(window_delta s)"
    cf_wait
    stop_server
    VERDICT=$(python3 - "$MEASURE" "$RUN/cf-a.json" <<'EOF' || echo "stop no report"
import json, sys
m = dict(l.split(" ", 1) for l in open(sys.argv[1]).read().splitlines())
r = json.load(open(sys.argv[2]))
hz, win = float(m["clk_tck"]), float(m["window_secs"])
d, w, t = int(m["window_delivered"]), int(m["window_write_syscalls"]), int(m["window_cpu_ticks"])
complete = r["passed"] and r["messages"]["lost"] == 0 and r["messages"]["delivered"] == r["messages"]["expected"]
p99 = r["latency_ms"]["p99"]
offered = int(m["senders"]) * 1000 / float(m["msg_interval_ms"]) * r["connections"]["target"]
kept_up = complete and d / win >= 0.95 * offered
go = "go" if kept_up else "stop"
writes = f"{d / w:.2f} deliveries/write, " if w else ""
print(f"{go} {d / win:.0f} deliveries/s, {t / hz / (d / 1e6) if d else 0:.2f} CPU s/M, "
      f"{writes}p50 {r['latency_ms']['p50']:.2f} ms, p99 {p99:.2f} ms, complete {complete}, kept up {kept_up}")
EOF
    )
}

run_fanout() {
    local k=$1 senders parent
    new_run "$k"
    parent=$RUN
    for senders in "${FANOUT_RATES[@]}"; do
        RUN=$parent/rate-$senders
        fanout_once "$senders"
        say "fanout run $k, $senders msg/s: ${VERDICT#* }"
        [ "${VERDICT%% *}" = go ] || break
    done
    RUN=$parent
    MEASURE=$parent/measure.txt
    put loadavg_after "$(loadavg)"
}

# ---------------------------------------------------------------------------
# peers: a rising ladder of the fan-out, the same steps against
# websocket-server (WORKERS=1 and the default 2) and the peer servers of
# tools/bench/peers, one server after the other in each run, so that every
# server meets the same machine, client and load.

# peers_load PORT SENDERS: PEERS_CONNS connections in one room, SENDERS of
# them sending once a second, split as evenly as they go over PEERS_CLIENTS
# connflood processes (cf-0, cf-1, ...), each with its own source addresses;
# returns at the start of the steady window (PEERS_SKIP after the ramp).
# Progress lines every 2 s: the report falls back on them for deliveries/s
# when a loaded server does not answer /metrics in time.
peers_load() {
    local port=$1 senders=$2 i n s limit=$((PEERS_RAMP + PEERS_DURATION + PEERS_SETTLE + 60))
    for ((i = 0; i < PEERS_CLIENTS; i++)); do
        n=$((PEERS_CONNS / PEERS_CLIENTS + (i < PEERS_CONNS % PEERS_CLIENTS ? 1 : 0)))
        s=$((senders / PEERS_CLIENTS + (i < senders % PEERS_CLIENTS ? 1 : 0)))
        cf_start "cf-$i" "$limit" --url "ws://127.0.0.1:$port/ws" --connections "$n" --rooms 1 --senders "$s" \
            --msg-interval 1000 --payload 64 --ramp-up "$PEERS_RAMP" --duration "$PEERS_DURATION" \
            --settle "$PEERS_SETTLE" --bind "127.0.0.$((180 + 4 * i))-127.0.0.$((183 + 4 * i))" --status-every 2
    done
    sleep_until $((PEERS_RAMP + PEERS_SKIP))
}

# peers_step SENDERS: one step of the ladder into the (new) directory $RUN: a
# fresh server (SERVER_KIND), the load, the steady-window samples (server CPU,
# each connflood process's CPU, deliveries and write syscalls from /metrics,
# the whole machine), the server stopped. Sets VERDICT to "go|stop <summary>"
# from `tools/bench/report.py --step`, the rule the report applies too.
peers_step() {
    local senders=$1 base port i
    mkdir -p "$RUN"
    MEASURE=$RUN/measure.txt
    : >"$MEASURE"
    put clk_tck "$CLK_TCK"
    put server "$SERVER_KIND"
    put senders "$senders"
    put msg_interval_ms 1000
    put connections "$PEERS_CONNS"
    put clients "$PEERS_CLIENTS"
    put ramp_secs "$PEERS_RAMP"
    put skip_secs "$PEERS_SKIP"
    put sending_secs "$PEERS_DURATION"
    put p99_limit_ms "$PEERS_P99_LIMIT_MS"
    put loadavg_before "$(loadavg)"
    base=$(pick_base)
    port=$((base + 1))
    start_server "$port"
    T0=$EPOCHREALTIME
    peers_load "$port" "$senders"
    # Two windows, each timed by its own samples: CPU (the /proc reads,
    # quick) and deliveries (see sample_window).
    local cf i total=0 gone=0
    declare -A W0=() W1=()
    mapfile -t cf < <(cf_procs)
    sample_window W0 "$port" "${cf[@]}"
    sleep_until $((PEERS_RAMP + PEERS_DURATION - PEERS_TAIL))
    sample_window W1 "$port" "${cf[@]}"
    put window_secs "$(awk -v a0="${W0[a]}" -v b0="${W0[b]}" -v a1="${W1[a]}" -v b1="${W1[b]}" 'BEGIN { printf "%.3f", (a1 + b1 - a0 - b0) / 2 }')"
    put window_sample_secs "$(awk -v a0="${W0[a]}" -v b0="${W0[b]}" -v a1="${W1[a]}" -v b1="${W1[b]}" 'BEGIN { printf "%.3f", (b0 - a0) + (b1 - a1) }')"
    put window_cpu_secs "$(awk -v a="${W0[u]}" -v b="${W1[u]}" 'BEGIN { printf "%.3f", b - a }')"
    for i in "${!cf[@]}"; do
        # A process gone before the end (cpu_ticks 0) has no figure.
        if ((${W1["f$i"]} >= ${W0["f$i"]})); then
            put "window_cpu_ticks_connflood_$i" "$((${W1["f$i"]} - ${W0["f$i"]}))"
            put "window_runq_wait_ns_connflood_$i" "$((${W1["g$i"]} - ${W0["g$i"]}))"
            total=$((total + ${W1["f$i"]} - ${W0["f$i"]}))
        else
            gone=$((gone + 1))
        fi
    done
    put connflood_processes_sampled "$((${#cf[@]} - gone))"
    put window_cpu_ticks_connflood "$total"
    put_machine "${W0[mb]}" "${W0[mt]}" "${W0[ms]}" "${W1[mb]}" "${W1[mt]}" "${W1[ms]}"
    put window_cpu_ticks "$((W1[c] - W0[c]))"
    put window_runq_wait_ns "$((W1[q] - W0[q]))"
    put window_delivered "$(window_delta d)"
    put window_write_syscalls "$(window_delta s)"
    cf_wait
    put loadavg_after "$(loadavg)"
    stop_server
    VERDICT=$(python3 tools/bench/report.py --step "$RUN") || VERDICT="stop no report"
}

run_peers() {
    local k=$1 parent senders
    new_run "$k"
    parent=$RUN
    for SERVER_KIND in "${PEER_KINDS[@]}"; do
        for senders in "${PEERS_STEPS[@]}"; do
            RUN=$parent/$SERVER_KIND/step-$senders
            peers_step "$senders"
            LOG_CMDS=0 # the doc lists the first step of each server of run 1
            say "peers run $k, $SERVER_KIND, $((senders * PEERS_CONNS)) deliveries/s offered: $VERDICT"
            [ "${VERDICT%% *}" = go ] || break
        done
        [ "$k" != 1 ] || LOG_CMDS=1
    done
    LOG_CMDS=0
    SERVER_KIND=websocket-server
    RUN=$parent
    MEASURE=$parent/measure.txt
    put loadavg_after "$(loadavg)"
}

# ---------------------------------------------------------------------------
# redis: Redis CPU per chat message, one Redis against a 3-master Redis
# Cluster, and a replica's CPU for rooms it does not host.

# redis_cluster_up DIR PORT ARGS...: a local cluster for this scenario;
# the replicas get a rate limit above the load's 10 msg/s per connection,
# and no MongoDB (MONGO_URI empty): what is measured is Redis, and
# nx-27017 (MongoDB's stand-in here, on SQLite) cannot take 10,000 writes
# a second on these cores; behind on its writes, it answered the history
# loader's reads for cold rooms so late that joins timed out.
redis_cluster_up() {
    local dir=$1 port=$2
    shift 2
    CLUSTER_DIR=$dir
    local env=(--env RATE_LIMIT=100 --env RATE_BURST=200 --env MONGO_URI=)
    log_cmd env "LOCALCLUSTER_DIR=$dir" tools/localcluster up --port "$port" "${env[@]}" "$@"
    LOCALCLUSTER_DIR=$dir tools/localcluster up --port "$port" "${env[@]}" "$@" \
        >"$RUN/up.out" 2>&1 || { cat "$RUN/up.out" >&2; return 1; }
}
redis_cluster_down() {
    LOCALCLUSTER_DIR=$CLUSTER_DIR tools/localcluster down >"$RUN/down.out" 2>&1 || true
    CLUSTER_DIR=
}
# published PORTS...: messages the replicas on PORTS published to Redis.
published() { local p; for p in "$@"; do metric "$p" websocket_redis_published_total; done | sum; }

# redis_load NAME URL: REDIS_CONNS connections over REDIS_ROOMS rooms at one
# message per REDIS_INTERVAL ms each; returns at the start of the window.
redis_load() {
    cf_start "$1" $((REDIS_RAMP + REDIS_DURATION + SETTLE + 60)) --url "$2" --connections "$REDIS_CONNS" \
        --rooms "$REDIS_ROOMS" --msg-interval "$REDIS_INTERVAL" --ramp-up "$REDIS_RAMP" \
        --duration "$REDIS_DURATION" --settle "$SETTLE" --bind "$REDIS_BIND" --status-every 10
    sleep_until $((REDIS_RAMP + REDIS_WARM))
}
redis_window_secs() { echo $((REDIS_DURATION - REDIS_WARM - REDIS_TAIL)); }

# One Redis, or a Redis Cluster of 3 masters (MODE cluster), under the load
# through the balancer to 3 replicas: every Redis process's CPU and the
# messages published in the steady window.
redis_deployment() {
    local mode=$1 base i j rports=() roles=() c0=() c1=() p0 p1 r0 r1 rp=() mb0 mt0 ms0 mb1 mt1 ms1 w0
    RUN=$PARENT/$mode
    mkdir -p "$RUN"
    MEASURE=$RUN/measure.txt
    : >"$MEASURE"
    put clk_tck "$CLK_TCK"
    put mode "$mode"
    base=$(pick_base)
    if [ "$mode" = cluster ]; then
        redis_cluster_up "$RUN/cluster" "$base" --replicas 3 --redis-cluster 3 || return 1
    else
        redis_cluster_up "$RUN/cluster" "$base" --replicas 3 || return 1
    fi
    for ((i = 0; i < 3; i++)); do rports+=("$((base + 20 + i))"); done
    mapfile -t rp < <(cluster_pids replica)
    T0=$EPOCHREALTIME
    redis_load cf-a "ws://127.0.0.1:$base/ws"
    # The Redis processes and their roles at the start of the window.
    local rpids=() names=()
    if [ "$mode" = cluster ]; then
        for ((j = 0; j < 6; j++)); do
            rpids+=("$(cat "$CLUSTER_DIR/pids/redis-node-$j.pid")")
            names+=("node_$j")
            roles+=("$(timeout 5 redis-cli -p $((base + 40 + j)) role 2>/dev/null | head -n 1)")
        done
    else
        rpids+=("$(cat "$CLUSTER_DIR/pids/redis.pid")")
        names+=(single)
        roles+=(master)
    fi
    read -r mb0 mt0 ms0 < <(machine_ticks)
    w0=$EPOCHREALTIME
    p0=$(published "${rports[@]}")
    r0=$(ticks_of "${rp[@]}")
    for i in "${!rpids[@]}"; do c0+=("$(cpu_ticks "${rpids[$i]}")"); done
    sleep_until $((REDIS_RAMP + REDIS_DURATION - REDIS_TAIL))
    for i in "${!rpids[@]}"; do c1+=("$(cpu_ticks "${rpids[$i]}")"); done
    r1=$(ticks_of "${rp[@]}")
    p1=$(published "${rports[@]}")
    read -r mb1 mt1 ms1 < <(machine_ticks)
    put window_secs "$(awk -v a="$w0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')"
    put window_published "$((p1 - p0))"
    put window_cpu_ticks_replicas "$((r1 - r0))"
    put_machine "$mb0" "$mt0" "$ms0" "$mb1" "$mt1" "$ms1"
    for i in "${!rpids[@]}"; do
        put "window_cpu_ticks_redis_${names[$i]}" "$((c1[i] - c0[i]))"
        put "role_redis_${names[$i]}" "${roles[$i]:-unknown}"
    done
    cf_wait
    put loadavg_after "$(loadavg)"
    redis_cluster_down
    say "redis run $K_RUN, $mode: $(summary_line)"
}

# Two replicas on one Redis; every client on replica 0, so replica 1 hosts
# no room: its CPU over an idle window, then over the loaded window, and
# the messages it received from Redis.
redis_idle_replica() {
    local base idle0 idle1 c0 c1 p0 p1 q0 q1 w0 secs
    RUN=$PARENT/idle-replica
    mkdir -p "$RUN"
    MEASURE=$RUN/measure.txt
    : >"$MEASURE"
    put clk_tck "$CLK_TCK"
    base=$(pick_base)
    redis_cluster_up "$RUN/cluster" "$base" --replicas 2 || return 1
    local r1pid
    r1pid=$(cat "$CLUSTER_DIR/pids/replica-1.pid")
    secs=$(redis_window_secs)
    idle0=$(cpu_ticks "$r1pid")
    sleep "$secs"
    idle1=$(cpu_ticks "$r1pid")
    put idle_window_secs "$secs"
    put idle_cpu_ticks_replica_1 "$((idle1 - idle0))"
    T0=$EPOCHREALTIME
    redis_load cf-a "ws://127.0.0.1:$((base + 20))/ws"
    w0=$EPOCHREALTIME
    c0=$(cpu_ticks "$r1pid")
    p0=$(published "$((base + 20))")
    q0=$(metric "$((base + 21))" websocket_redis_received_total)
    sleep_until $((REDIS_RAMP + REDIS_DURATION - REDIS_TAIL))
    c1=$(cpu_ticks "$r1pid")
    p1=$(published "$((base + 20))")
    q1=$(metric "$((base + 21))" websocket_redis_received_total)
    put window_secs "$(awk -v a="$w0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')"
    put window_published "$((p1 - p0))"
    put window_cpu_ticks_replica_1 "$((c1 - c0))"
    put window_received_replica_1 "$((${q1:-0} - ${q0:-0}))"
    put conns_replica_1 "$(health_conns "$((base + 21))")"
    cf_wait
    put loadavg_after "$(loadavg)"
    redis_cluster_down
    say "redis run $K_RUN, idle replica: $(summary_line)"
}

run_redis() {
    K_RUN=$1
    new_run "$1"
    PARENT=$RUN
    redis_deployment single
    redis_deployment cluster
    redis_idle_replica
    RUN=$PARENT
    MEASURE=$PARENT/measure.txt
    put loadavg_after "$(loadavg)"
}

# ---------------------------------------------------------------------------
# profile: one more fan-out run at the first rate, with perf on the server.

run_profile() {
    local base port senders=${FANOUT_RATES[0]} rc=0
    if ! command -v perf >/dev/null; then
        say "perf is not installed (Debian: linux-perf): no profile"
        return 0
    fi
    RUN=$OUT/profile
    mkdir -p "$RUN"
    MEASURE=$RUN/measure.txt
    : >"$MEASURE"
    LOG_CMDS=1
    CF_NAMES=()
    put senders "$senders"
    put profile_secs "$PROFILE_SECS"
    base=$(pick_base)
    port=$((base + 1))
    start_server "$port"
    T0=$EPOCHREALTIME
    fanout_load "$port" "$senders"
    log_cmd perf record -e cpu-clock -F 999 -g -p "<server pid>" -o "$RUN/perf.data" -- sleep "$PROFILE_SECS"
    perf record -e cpu-clock -F 999 -g -p "$SERVER_PID" -o "$RUN/perf.data" -- sleep "$PROFILE_SECS" \
        >"$RUN/perf-record.out" 2>&1 || rc=$?
    put perf_rc "$rc"
    cf_wait
    stop_server
    [ "$rc" = 0 ] || { say "perf record failed (see $RUN/perf-record.out)"; return 0; }
    # Self time by binary (kernel, server, libc), and inclusive time by symbol.
    perf report -i "$RUN/perf.data" --no-children --sort dso --stdio -g none >"$RUN/dso.txt" 2>/dev/null || true
    perf report -i "$RUN/perf.data" --children --sort symbol --stdio -g none --percent-limit 0.5 \
        >"$RUN/symbols.txt" 2>/dev/null || true
    say "profile: $(grep -m1 -E '^ +[0-9.]+%' "$RUN/dso.txt" | tr -s ' ')"
}

# ---------------------------------------------------------------------------

{
    echo "date $(date -u +%FT%TZ)"
    echo "command $COMMAND"
    echo "quick $([ "$QUICK" = 1 ] && echo yes || echo no)"
    echo "git_commit $(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
    echo "git_dirty $(git diff --quiet HEAD -- server tools/connflood 2>/dev/null && echo no || echo yes)"
    echo "nproc $(nproc)"
    echo "mem_total_kib $(awk '$1 == "MemTotal:" { print $2 }' /proc/meminfo)"
    echo "cpu_model $(awk -F': ' '$1 ~ /^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "kernel $(uname -sr)"
    echo "rustc $(rustc -V 2>/dev/null || echo unknown)"
    echo "haproxy $(haproxy -v 2>/dev/null | head -n 1 | awk '{ print $3 }')"
    echo "redis $(redis-server --version 2>/dev/null | grep -o 'v=[0-9.]*' | cut -c3-)"
    echo "nofile $(ulimit -Hn)"
    echo "loadavg $(loadavg)"
    echo "seed_connections $SEED_CONNS"
    echo "seed_rooms $SEED_ROOMS"
    echo "seed_ramp $SEED_RAMP"
    echo "seed_duration $SEED_DURATION"
    echo "seed_interval $SEED_INTERVAL"
    echo "idle_connections $IDLE_CONNS"
    echo "seed_warm $SEED_WARM"
    echo "seed_tail $SEED_TAIL"
    echo "roll_duration $ROLL_DURATION"
    echo "roll_at $ROLL_AT"
    echo "idle_ramp $IDLE_RAMP"
    echo "idle_hold $IDLE_HOLD"
    echo "fanout_connections $FANOUT_CONNS"
    echo "fanout_ramp $FANOUT_RAMP"
    echo "fanout_duration $FANOUT_DURATION"
    echo "fanout_skip $FANOUT_SKIP"
    echo "fanout_rates ${FANOUT_RATES[*]}"
    echo "peers_connections $PEERS_CONNS"
    echo "peers_steps ${PEERS_STEPS[*]}"
    echo "peers_ramp $PEERS_RAMP"
    echo "peers_duration $PEERS_DURATION"
    echo "peers_skip $PEERS_SKIP"
    echo "peers_tail $PEERS_TAIL"
    echo "peers_settle $PEERS_SETTLE"
    echo "peers_clients $PEERS_CLIENTS"
    echo "peers_p99_limit_ms $PEERS_P99_LIMIT_MS"
    echo "idle_max_connections $((IDLE_CONNS + 20))"
    echo "redis_connections $REDIS_CONNS"
    echo "redis_rooms $REDIS_ROOMS"
    echo "redis_interval $REDIS_INTERVAL"
    echo "redis_ramp $REDIS_RAMP"
    echo "redis_duration $REDIS_DURATION"
    echo "redis_warm $REDIS_WARM"
    echo "redis_tail $REDIS_TAIL"
} >"$OUT/machine.txt"

if [[ " ${SCENARIOS[*]} " == *" peers "* ]]; then
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        echo "the peers scenario needs node and npm" >&2
        exit 1
    fi
    if [ ! -f "$PEERS/node_modules/.package-lock.json" ] || [ "$PEERS/package-lock.json" -nt "$PEERS/node_modules/.package-lock.json" ]; then
        (cd "$PEERS" && npm ci --no-audit --no-fund --loglevel=error)
    fi
    {
        echo "peer_node $(node --version)"
        echo "peer_bun $("$PEERS/node_modules/.bin/bun" --version)"
        echo "peer_ws $(node -p 'require(process.argv[1]).version' "$PEERS/node_modules/ws/package.json")"
    } >>"$OUT/machine.txt"
fi

say "results in $OUT"
for CURRENT in "${SCENARIOS[@]}"; do
    for ((k = 1; k <= RUNS; k++)); do
        say "$CURRENT: run $k of $RUNS"
        case $CURRENT in
        seed | roll) run_cluster "$k" ;;
        idle) run_idle "$k" ;;
        fanout) run_fanout "$k" ;;
        peers) run_peers "$k" ;;
        redis) run_redis "$k" ;;
        esac
    done
    if [ "$CURRENT" = fanout ] && [ "$PROFILE" = 1 ]; then
        CURRENT=profile
        run_profile
    fi
done

if [ -z "$DOC" ]; then
    DOC=$ROOT/docs/benchmarks.md
    [ "$QUICK" = 0 ] || DOC=$OUT/benchmarks.md
fi
python3 tools/bench/report.py "$OUT" "$DOC"
say "wrote $DOC (and $OUT/benchmarks.md)"
