#!/usr/bin/env bash
# Drives the chat page (server/static/) in Debian's headless Chromium against
# the real server, in replica mode: a redis-server, a MongoDB wire-protocol
# server (nx-27017) and websocket-server, all on free 127.0.0.1 ports, all
# stopped by PID when this script exits. The tests (chat.test.mjs) start
# further server processes of their own (a second pod, a pod they restart).
#
#   tools/browser/run.sh                  SERVER_BIN defaults to target/debug/websocket-server
#   SCREENSHOT=1 tools/browser/run.sh     also writes docs/chat.png
#
# Needs: node and npm, /usr/bin/chromium (Debian's package), redis-server,
# nx-27017 (tools/test.sh installs it into .venv-test; or set NX27017).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SERVER_BIN=${SERVER_BIN:-$ROOT/target/debug/websocket-server}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
REDIS_SERVER=${REDIS_SERVER:-redis-server}
if [ -z "${NX27017:-}" ]; then
    if [ -x "$ROOT/.venv-test/bin/nx-27017" ]; then
        NX27017=$ROOT/.venv-test/bin/nx-27017
    else
        NX27017=nx-27017
    fi
fi
# The whole run, and each wait for a process to come up, are bounded.
RUN_TIMEOUT_SECS=${RUN_TIMEOUT_SECS:-600}
START_TIMEOUT_SECS=20

die() { echo "browser tests: $*" >&2; exit 1; }

[ -x "$SERVER_BIN" ] || die "no server binary at $SERVER_BIN (cargo build -p websocket-server, or set SERVER_BIN)"
[ -x "$CHROMIUM" ] || die "no Chromium at $CHROMIUM (apt-get install chromium)"
command -v node >/dev/null || die "node is missing (apt-get install nodejs npm)"
command -v npm >/dev/null || die "npm is missing (apt-get install npm)"
command -v "$REDIS_SERVER" >/dev/null || die "redis-server is missing (apt-get install redis-server)"
command -v "$NX27017" >/dev/null || die "nx-27017 is missing (tools/test.sh installs it into .venv-test, or set NX27017)"

cd "$HERE"
# npm ci when node_modules is missing or older than the lockfile.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/chat-browser.XXXXXX")
PIDS=()
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    node -e 'const s = require("net").createServer();
             s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); });'
}

# Waits until something accepts TCP connections on port $1 ($2 names it).
wait_port() {
    local deadline=$((SECONDS + START_TIMEOUT_SECS))
    until node -e 'const c = require("net").connect(+process.argv[1], "127.0.0.1");
                   c.on("connect", () => process.exit(0)); c.on("error", () => process.exit(1));' "$1"; do
        [ "$SECONDS" -lt "$deadline" ] || die "$2 did not listen on port $1 within ${START_TIMEOUT_SECS}s"
        sleep 0.1
    done
}

REDIS_PORT=$(free_port)
"$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
wait_port "$REDIS_PORT" redis-server

MONGO_PORT=$(free_port)
"$NX27017" --host 127.0.0.1 -p "$MONGO_PORT" --db "$WORK/chat.db" --log-file "$WORK/nx.log" \
    --pid-file "$WORK/nx.pid" >/dev/null 2>&1 &
PIDS+=($!)
wait_port "$MONGO_PORT" nx-27017

export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export MONGO_URI="mongodb://127.0.0.1:$MONGO_PORT/chat"
# Settings every server of the tests runs with (the tests add POD_NAME, PORT).
export TEST_SERVER_ENV="RATE_LIMIT=100000 RATE_BURST=100000 DRAIN_DELAY_SECS=0 DRAIN_WINDOW_SECS=0 LOG_LEVEL=info"

# The first pod; the server prints "listening on ADDR:PORT" when it is ready.
# shellcheck disable=SC2086 # TEST_SERVER_ENV is a list of NAME=value words
env $TEST_SERVER_ENV PORT=0 BIND_ADDR=127.0.0.1 POD_NAME=websocket-server-0 \
    "$SERVER_BIN" >"$WORK/server.log" 2>&1 &
PIDS+=($!)
deadline=$((SECONDS + START_TIMEOUT_SECS))
until grep -q "listening on" "$WORK/server.log"; do
    if [ "$SECONDS" -ge "$deadline" ] || ! kill -0 "${PIDS[-1]}" 2>/dev/null; then
        cat "$WORK/server.log" >&2
        die "the server did not start"
    fi
    sleep 0.1
done
SERVER_PORT=$(grep -m1 -o 'listening on [^ ]*' "$WORK/server.log" | sed 's/.*://')
export BASE_URL="http://127.0.0.1:$SERVER_PORT"
export SERVER_BIN CHROMIUM
export SCREENSHOT_PATH="$ROOT/docs/chat.png"
echo "server $BASE_URL (replica mode: redis :$REDIS_PORT, nx-27017 :$MONGO_PORT), $("$CHROMIUM" --version 2>/dev/null)"

# In the background, so that a signal to this script is acted on at once
# (bash runs traps only between commands, and `wait` is one).
timeout --kill-after=10 "$RUN_TIMEOUT_SECS" node --test --test-reporter=spec chat.test.mjs &
PIDS=("$!" "${PIDS[@]}")
status=0
wait "${PIDS[0]}" || status=$?
if [ "$status" -ne 0 ]; then
    echo "--- server log (last 40 lines)" >&2
    tail -n 40 "$WORK/server.log" >&2
fi
exit "$status"
