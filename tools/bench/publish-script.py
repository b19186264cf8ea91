#!/usr/bin/env python3
"""tools/bench/publish-script.py: where the Redis CPU of a chat message goes.

A benchmark, not a test: it reports figures and asserts nothing about time.

    tools/bench/publish-script.py [--per-call K ...] [--calls N] [--subscribers S]
                                  [--runs N] [--script-only] [--redis-config "NAME VALUE"]...

Runs the server's own publish script (PUBLISH_SCRIPT, read from
server/src/replica/mod.rs) on a fresh redis-server, the way the publisher
calls it: one EVALSHA per batch of K messages, each in a different one of
500 rooms (the issue-11 load: most calls carry one message per room), a
~250-byte chat JSON each, no clientId; S subscriber connections SSUBSCRIBEd
to every room's channel read what is published. Redis CPU is utime + stime
from /proc/PID/stat over the calls, divided by the messages.

Besides the script as it is, it runs it with the check a cluster call makes
(each room's keys probed with EXISTS before they are written), and
ablations of it, to split the cost:
  no SPUBLISH         the script without its publish (delivery to subscribers)
  no RPUSH            the script without the Redis history list
  neither             without both: what the seq counter, the arguments and
                      the script's own Lua cost alone
  arguments only      a script that returns at once (the call, its arguments
                      turned into Redis and Lua strings, the reply, the socket)
Each row is the median of --runs runs. Everything runs on 127.0.0.1, on a
free port, bounded by --calls; the redis-server started is stopped by PID.
"""
import argparse
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROOMS = 500


def the_script():
    src = open(os.path.join(ROOT, "server/src/replica/mod.rs")).read()
    m = re.search(r'pub const PUBLISH_SCRIPT: &str = r#"(.*?)"#;', src, re.S)
    if not m:
        sys.exit("PUBLISH_SCRIPT not found in server/src/replica/mod.rs")
    return m.group(1)


def ablations(script):
    publish = "    redis.call('SPUBLISH', base .. 'ch', table.concat(items, '\\n'))\n"
    push = "    if redis.call('RPUSH', histk, unpack(items)) > ring + slack then\n      redis.call('LTRIM', histk, -ring, -1)\n    end\n"
    for part in (publish, push):
        if part not in script:
            sys.exit("the script changed: update the ablations of tools/bench/publish-script.py")
    return [
        ("the publish script", script, False),
        ("the same, with the cluster check", script, True),
        ("no SPUBLISH", script.replace(publish, ""), False),
        ("no RPUSH", script.replace(push, ""), False),
        ("neither", script.replace(publish, "").replace(push, ""), False),
        ("arguments only", "#!lua\nreturn {}\n", False),
    ]


def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Conn:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(1 << 20)
        if not data:
            raise EOFError("redis closed the connection")
        self.buf += data

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        line = self._line()
        kind = line[:1]
        if kind in (b"+", b":"):
            return line[1:]
        if kind == b"-":
            raise RuntimeError(line.decode())
        if kind == b"$":
            n = int(line[1:])
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind in (b"*", b">"):
            return [self.reply() for _ in range(int(line[1:]))]
        raise RuntimeError("unexpected reply %r" % line)

    def call(self, *args):
        self.sock.sendall(resp(*args))
        return self.reply()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_ticks(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def run(script, check, per_call, calls, subscribers, config=()):
    """Redis CPU µs per message for one script; `config` is extra
    redis-server options, as NAME VALUE strings."""
    port = free_port()
    extra = [w for option in config for w in ["--" + option.split()[0]] + option.split()[1:]]
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"] + extra,
        stdout=subprocess.DEVNULL,
    )
    stop = threading.Event()
    try:
        deadline = time.time() + 10
        while True:
            try:
                con = Conn(port)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        sha = con.call("SCRIPT", "LOAD", script).decode()
        rooms = ["cf-%d" % i for i in range(ROOMS)]

        def subscriber(ready):
            sub = Conn(port)
            sub.sock.sendall(b"".join(resp("SSUBSCRIBE", "chat:{%s}:ch" % r) for r in rooms))
            for _ in rooms:
                sub.reply()
            ready.set()
            sub.sock.settimeout(0.2)
            while not stop.is_set():
                try:
                    if not sub.sock.recv(1 << 20):
                        return
                except socket.timeout:
                    pass

        readers = []
        for _ in range(subscribers):
            ready = threading.Event()
            t = threading.Thread(target=subscriber, args=(ready,), daemon=True)
            t.start()
            if not ready.wait(10):
                sys.exit("a subscriber did not subscribe within 10 s")
            readers.append(t)
        body = json.dumps(
            {
                "room": "cf-0",
                "id": "0123456789abcdef",
                "username": "user-123",
                "message": "m" * 64,
                "podName": "websocket-server-0",
                "timestamp": 1733200000000,
            }
        )
        n = 0
        t0 = cpu_ticks(redis.pid)
        for _ in range(calls):
            args = ["1000", "600", "1" if check else "0"]
            picked = random.sample(rooms, per_call)
            for room in picked:
                args += [room, "0", "1", "id%d" % n, "", "0", body]
                n += 1
            con.call("EVALSHA", sha, 1, "chat:{%s}:seq" % picked[0], *args)
        t1 = cpu_ticks(redis.pid)
        return (t1 - t0) / os.sysconf("SC_CLK_TCK") * 1e6 / n
    finally:
        stop.set()
        redis.terminate()
        redis.wait(10)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--per-call", type=int, nargs="+", default=[1, 16, 64], help="messages per script call")
    ap.add_argument("--calls", type=int, default=0, help="calls per run (default: 64,000 messages' worth)")
    ap.add_argument("--subscribers", type=int, default=2, help="subscriber connections (replicas hosting the room)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--redis-config",
        action="append",
        default=[],
        metavar="'NAME VALUE'",
        help="a redis-server option for every run (repeatable), e.g. 'list-max-listpack-size 4'",
    )
    ap.add_argument("--script-only", action="store_true", help="only the script as it is, no ablations")
    opts = ap.parse_args()
    rows = ablations(the_script())
    if opts.script_only:
        rows = rows[:1]
    if opts.redis_config:
        print("redis-server options: %s" % ", ".join(opts.redis_config))
    print("Redis CPU µs per message; %d subscribers; median of %d runs; %s" % (opts.subscribers, opts.runs, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    print("| script | " + " | ".join("%d per call" % k for k in opts.per_call) + " |")
    print("| --- |" + " --- |" * len(opts.per_call))
    for name, script, check in rows:
        cells = []
        for k in opts.per_call:
            calls = opts.calls or max(1, 64000 // k)
            runs = [run(script, check, k, calls, opts.subscribers, opts.redis_config) for _ in range(opts.runs)]
            cells.append("%.1f" % statistics.median(runs))
        print("| %s | %s |" % (name, " | ".join(cells)), flush=True)
    print("load average after: %s" % open("/proc/loadavg").read().split()[:3])


if __name__ == "__main__":
    main()
