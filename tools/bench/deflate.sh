#!/usr/bin/env bash
# tools/bench/deflate.sh: what permessage-deflate costs and saves, on loopback.
# A benchmark, not a test: it reports figures and asserts nothing about time.
#
#   tools/bench/deflate.sh [--conns N] [--senders N] [--duration S] [--idle N]
#                          [--only fanout|idle] [--peer uws-bun] [--quick]
#   (BENCH_SERVER_ENV="NAME=value ..." adds settings to every server,
#    BENCH_CONNFLOOD_ARGS="--token-secret S ..." options to every connflood)
#
# For compression off (clients do not offer it) and on (connflood --deflate,
# which offers it as browsers do), each against a fresh release server
# (WORKERS=2, defaults otherwise):
#   fan-out: N connections in one room, SENDERS of them sending a chat message
#     (a 100-character text: a ~280-byte chat frame) once a second for S
#     seconds; in the steady window (ramp + 3 s to the end of sending): server
#     CPU per million deliveries (/proc/PID/stat over websocket_messages_
#     delivered_total), and chat bytes on the wire per delivery (connflood);
#   idle: IDLE connections that only join, after 100 that warm the threads
#     up; server RSS growth per connection.
# --peer uws-bun runs the same against uWebSockets (tools/bench/peers/
# uws-bun.js, in Bun; `npm ci` there first) instead, compression on being its
# shared compressor (COMPRESSION=shared: one compression per published
# message, like this server's); its figures lack the server-only counters.
# --quick: tiny sizes (100 connections, 6 s, 500 idle) to check the script.
# About 2 minutes with the defaults; everything started is stopped by PID and
# every run is bounded by `timeout`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SERVER_BIN=${WEBSOCKET_SERVER:-$ROOT/target/release/websocket-server}
CONNFLOOD=${CONNFLOOD:-$ROOT/target/release/connflood}
PEERS=$ROOT/tools/bench/peers
CONNS=1000 SENDERS=20 DURATION=20 IDLE=5000 RAMP=5 PAYLOAD=100 ONLY='' PEER=websocket-server MODE=off
while [ $# -gt 0 ]; do
    case $1 in
    --conns) CONNS=$2; shift 2 ;;
    --senders) SENDERS=$2; shift 2 ;;
    --duration) DURATION=$2; shift 2 ;;
    --idle) IDLE=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --peer) PEER=$2; shift 2 ;;
    --quick) CONNS=100 SENDERS=5 DURATION=6 IDLE=500 RAMP=2; shift ;;
    -h | --help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done
case $PEER in
websocket-server) ;;
uws-bun) SERVER_BIN=$PEERS/node_modules/.bin/bun ;;
*) echo "--peer must be uws-bun (or websocket-server, the default)" >&2; exit 2 ;;
esac
for bin in "$SERVER_BIN" "$CONNFLOOD"; do
    [ -x "$bin" ] || { echo "missing $bin: cargo build --release -p websocket-server -p connflood" >&2; exit 1; }
done
OUT=$(mktemp -d "${TMPDIR:-/tmp}/bench-deflate.XXXXXX")
CLK_TCK=$(getconf CLK_TCK)
SERVER_PID=''
cleanup() { [ -z "$SERVER_PID" ] || { kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }; }
trap cleanup EXIT

start_server() {  # start_server LOG: a fresh server; sets SERVER_PID and PORT
    if [ "$PEER" = uws-bun ]; then
        local compression=off
        [ "$MODE" = on ] && compression=shared
        env PORT=0 BIND_ADDR=127.0.0.1 POD_NAME=bench "COMPRESSION=$compression" "$SERVER_BIN" "$PEERS/uws-bun.js" \
            >"$1" 2>&1 &
    else
        # shellcheck disable=SC2086 # BENCH_SERVER_ENV is a list of NAME=value words
        env PORT=0 BIND_ADDR=127.0.0.1 WORKERS=2 POD_NAME=bench RATE_LIMIT=1000 RATE_BURST=1000 ${BENCH_SERVER_ENV:-} \
            "$SERVER_BIN" >"$1" 2>&1 &
    fi
    SERVER_PID=$!
    PORT=''
    for _ in $(seq 1 100); do
        PORT=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$1" | head -1 | cut -d: -f2) || true
        [ -n "$PORT" ] && return 0
        sleep 0.1
    done
    echo "server did not start" >&2
    exit 1
}
stop_server() { kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=''; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$SERVER_PID/status"; }
metric() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }

fanout() {  # fanout off|on
    local mode=$1 flag=() json=$OUT/fanout-$1.json
    MODE=$mode
    [ "$mode" = on ] && flag=(--deflate)
    start_server "$OUT/server-fanout-$mode.log"
    # shellcheck disable=SC2086 # BENCH_CONNFLOOD_ARGS is a list of words
    timeout $((RAMP + DURATION + 60)) "$CONNFLOOD" --url "ws://127.0.0.1:$PORT/ws" --connections "$CONNS" \
        --rooms 1 --senders "$SENDERS" --msg-interval 1000 --payload "$PAYLOAD" --ramp-up "$RAMP" \
        --duration "$DURATION" --settle 3 --quiet --json "$json" "${flag[@]}" ${BENCH_CONNFLOOD_ARGS:-} >"$OUT/cf-fanout-$mode.txt" 2>&1 &
    local cf=$!
    sleep $((RAMP + 3))
    local c0 d0 c1 d1
    c0=$(cpu_ticks); d0=$(metric websocket_messages_delivered_total)
    sleep $((DURATION - 4))
    c1=$(cpu_ticks); d1=$(metric websocket_messages_delivered_total)
    local z
    z=$(metric websocket_compressed_frames_sent_total)
    wait "$cf" || echo "connflood ($mode) did not pass: see $OUT/cf-fanout-$mode.txt" >&2
    stop_server
    python3 - "$json" "$mode" "$((c1 - c0))" "$CLK_TCK" "$((${d1%.*} - ${d0%.*}))" "${z%.*}" <<'EOF'
import json, sys
path, mode, ticks, clk, delivered = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
compressed = sys.argv[6] or "n/a"
r = json.load(open(path))
m = r["messages"]
cpu = ticks / clk
print(f"fanout {mode:3}: {m['wire_bytes_per_delivery']:.1f} B on the wire per chat delivery, "
      f"{cpu / delivered * 1e6:.2f} CPU s per million deliveries ({delivered} deliveries, {cpu:.2f} CPU s in the window), "
      f"delivered {m['delivered']}/{m['expected']}, lost {m['lost']}, compressed frames sent {compressed}, "
      f"deflate agreed {r['connections']['deflate_negotiated']}")
EOF
}

idle() {  # idle off|on
    local mode=$1 flag=()
    MODE=$mode
    [ "$mode" = on ] && flag=(--deflate)
    start_server "$OUT/server-idle-$mode.log"
    # A first 100 connections make the threads allocate what they keep
    # (buffers, the per-thread compressor a compressed welcome needs): the
    # RSS growth of the next IDLE connections is then theirs alone.
    # shellcheck disable=SC2086 # BENCH_CONNFLOOD_ARGS is a list of words
    timeout $((RAMP + 60)) "$CONNFLOOD" --url "ws://127.0.0.1:$PORT/ws" --connections 100 --rooms 10 \
        --senders 0 --ramp-up 1 --duration $((RAMP + 12)) --settle 1 --quiet "${flag[@]}" ${BENCH_CONNFLOOD_ARGS:-} >"$OUT/cf-warm-$mode.txt" 2>&1 &
    local warm=$!
    sleep 3
    local r0 r1 n
    r0=$(rss_kib)
    # shellcheck disable=SC2086 # BENCH_CONNFLOOD_ARGS is a list of words
    timeout $((RAMP + 30)) "$CONNFLOOD" --url "ws://127.0.0.1:$PORT/ws" --connections "$IDLE" --rooms 10 \
        --senders 0 --ramp-up "$RAMP" --duration 6 --settle 1 --quiet "${flag[@]}" ${BENCH_CONNFLOOD_ARGS:-} >"$OUT/cf-idle-$mode.txt" 2>&1 &
    local cf=$!
    sleep $((RAMP + 4))
    r1=$(rss_kib)
    n=$(metric websocket_connections_active)
    local z
    z=$(metric websocket_deflate_connections_active)
    wait "$cf" || echo "connflood idle ($mode) did not pass: see $OUT/cf-idle-$mode.txt" >&2
    wait "$warm" || true
    stop_server
    awk -v a="$r0" -v b="$r1" -v n="${n:-n/a}" -v z="${z:-n/a}" -v m="$mode" -v i="$IDLE" \
        'BEGIN { printf "idle   %-3s: %s connections (%s with deflate), RSS %d -> %d KiB over the last %d: %.0f B per connection\n", m, n, z, a, b, i, (b - a) * 1024 / i }'
}

echo "bench-deflate ($PEER): $CONNS connections in one room, $SENDERS senders at 1/s, ${PAYLOAD}-character messages, ${DURATION} s; idle $IDLE; $(nproc) cores; raw output in $OUT"
[ "$ONLY" = idle ] || for mode in off on; do fanout "$mode"; done
[ "$ONLY" = fanout ] || for mode in off on; do idle "$mode"; done
