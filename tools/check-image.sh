#!/usr/bin/env bash
# Builds the container image (docker/Dockerfile) with podman and runs it the
# way k8s/33-websocket-statefulset.yaml does: read-only root filesystem, the
# pod's numeric uid/gid, no capabilities, the manifest's environment.
#
#   tools/check-image.sh
#
# Environment:
#   IMAGE                the tag to build (default localhost/websocket-server:check)
#   CHECK_IMAGE_CACHE=0  skip the cache check (a rebuild from a fresh clone
#                        after a source change must reuse the dependency layer)
#   MAX_IMAGE_MB, MAX_BINARY_MB   size limits (default 35 and 12)
#
# Steps:
# 1. the engine: podman, buildah, runc, uidmap and mmdebstrap from Debian,
#    installed when missing (root on Debian; elsewhere the script exits 77,
#    "skipped", when no podman is there), and /etc/containers/containers.conf
#    written when absent with the two settings this kind of machine needs:
#    default ulimits within the hard limits, and runc (crun refuses the hybrid
#    cgroup layout);
# 2. the base images: the real ones (rust:<RUST_VERSION>-slim-bookworm,
#    gcr.io/distroless/cc-debian12:nonroot) when they can be pulled, else
#    local stand-ins under localhost/standin/, built once from Debian packages
#    and this machine's Rust toolchain (never tagged with a real image's
#    name; the Dockerfile takes both bases as build arguments). The output
#    says which were used;
# 3. the build, as docs/kubernetes.md documents it, with the host's CA
#    bundle mounted for the crate downloads (not part of any layer);
# 4. sizes: the image and the binary within the limits, no debug info in
#    the binary, the OCI labels set;
# 5. the run: /health, /ready, the chat page, a WebSocket chat round-trip
#    between two clients, /metrics; then SIGTERM with a client connected:
#    /ready 503 during the drain, the client closed with 1001, exit status 0
#    within terminationGracePeriodSeconds;
# 6. the cache: a fresh `git clone` of HEAD with one source file changed is
#    built again; the dependency layer must come from the cache, and only
#    the server crate is compiled (not the MongoDB crate, server/mongo).
#
# Every container and temporary directory it creates is removed on exit.
# The last line is "check-image: passed" or the reason it failed.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

IMAGE=${IMAGE:-localhost/websocket-server:check}
MAX_IMAGE_MB=${MAX_IMAGE_MB:-35}
MAX_BINARY_MB=${MAX_BINARY_MB:-12}
MANIFEST=k8s/33-websocket-statefulset.yaml
DOCKERFILE=docker/Dockerfile
DEBIAN_PACKAGES=(podman buildah runc uidmap mmdebstrap)
# What gcr.io/distroless/cc-debian12 is made of (its Bazel rules): Debian
# packages unpacked without maintainer scripts, so no shell.
DISTROLESS_PACKAGES=(base-files netbase tzdata libc6 libgcc-s1 libstdc++6 libgomp1 libssl3 ca-certificates)

RUST_VERSION=$(sed -n 's/^ARG RUST_VERSION=//p' "$DOCKERFILE")
[[ -n "$RUST_VERSION" ]] || { echo "check-image: no ARG RUST_VERSION in $DOCKERFILE" >&2; exit 1; }
REAL_RUST=docker.io/library/rust:${RUST_VERSION}-slim-bookworm
REAL_RUNTIME=gcr.io/distroless/cc-debian12:nonroot
STANDIN_RUST=localhost/standin/rust:${RUST_VERSION}-slim-bookworm
STANDIN_RUNTIME=localhost/standin/distroless-cc-debian12:nonroot

say() { printf '\n--- %s\n' "$*"; }
die() {
    echo "check-image: FAILED: $*" >&2
    exit 1
}

containers=()
# Every temporary file lives under WORK (newtmp runs in a command
# substitution, a subshell, so it cannot record what it creates).
WORK=$(mktemp -d "${TMPDIR:-/tmp}/check-image.XXXXXX")
cleanup() {
    local c
    for c in "${containers[@]}"; do podman rm -f -t 0 "$c" >/dev/null 2>&1 || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
newtmp() {
    mktemp -d "$WORK/XXXXXX"
}
apt_install() {
    # Another process (a parallel apt run) may hold the dpkg lock: wait for it.
    apt-get -o DPkg::Lock::Timeout=600 update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@"
}

# ---------------------------------------------------------------- 1. engine
say "container engine"
need=()
for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
done
if [[ ${#need[@]} -gt 0 ]]; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        apt_install "${need[@]}"
    elif ! command -v podman >/dev/null; then
        echo "check-image: SKIPPED: no podman, and it cannot be installed here (needs root and apt-get: apt-get install ${DEBIAN_PACKAGES[*]})"
        exit 77
    else
        die "podman is there but ${need[*]} are missing (apt-get install ${need[*]})"
    fi
fi
CONF=/etc/containers/containers.conf
if [[ ! -e "$CONF" ]]; then
    # The engine's default ulimits (nofile 1048576) exceed the hard limits of
    # this kind of machine, and every RUN and `podman run` fails until they
    # fit; crun refuses its hybrid cgroup layout, runc does not.
    nofile=$(ulimit -Hn)
    [[ "$nofile" == unlimited || "$nofile" -gt 1048576 ]] && nofile=1048576
    nproc=$(ulimit -Hu)
    [[ "$nproc" == unlimited || "$nproc" -gt 32768 ]] && nproc=32768
    [[ -w /etc/containers ]] || die "$CONF is missing and cannot be written (run as root)"
    cat >"$CONF" <<EOF
# Written by websocket-k8s tools/check-image.sh: the defaults exceed this
# machine's hard limits, and crun refuses its cgroup layout.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
EOF
    echo "wrote $CONF (nofile $nofile, nproc $nproc, runtime runc)"
fi
echo "$(podman --version), $(buildah --version | cut -d' ' -f1-3), $(runc --version | head -1)"
podman run --help >/dev/null

# ------------------------------------------------------------ 2. base images
have_image() { podman image exists "$1"; }
pull() {
    have_image "$1" && return 0
    timeout 120 podman pull -q "$1" >/dev/null 2>&1
}

build_standin_runtime() {
    local t rootfs deb
    t=$(newtmp)
    rootfs=$t/rootfs
    mkdir -p "$t/debs" "$rootfs"
    (cd "$t/debs" && apt-get download -qq "${DISTROLESS_PACKAGES[@]}" 2>/dev/null) ||
        { apt-get -o DPkg::Lock::Timeout=600 update -qq && (cd "$t/debs" && apt-get download -qq "${DISTROLESS_PACKAGES[@]}"); }
    for deb in "$t"/debs/*.deb; do dpkg-deb -x "$deb" "$rootfs"; done
    # What the packages' maintainer scripts and distroless add: the CA
    # bundle (from the package's own certificates, not the host's), the
    # users, name service order, and writable /tmp and home.
    mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$rootfs/home/nonroot" "$rootfs/root"
    cat "$rootfs"/usr/share/ca-certificates/mozilla/*.crt >"$rootfs/etc/ssl/certs/ca-certificates.crt"
    cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
    cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
    printf 'hosts: files dns\nnetworks: files\npasswd: files\ngroup: files\n' >"$rootfs/etc/nsswitch.conf"
    chmod 1777 "$rootfs/tmp"
    chown 65532:65532 "$rootfs/home/nonroot"
    rm -rf "$rootfs/usr/share/doc" "$rootfs/usr/share/man" "$rootfs/usr/share/lintian"
    tar -C "$rootfs" --numeric-owner -c . | podman import -q \
        --change 'USER 65532:65532' --change 'WORKDIR /home/nonroot' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        - "$STANDIN_RUNTIME" >/dev/null
}

host_toolchain() {
    # The machine's toolchain whose rustc is RUST_VERSION (1.95 -> 1.95.x).
    local home=${RUSTUP_HOME:-$HOME/.rustup} tc
    for tc in "$home"/toolchains/*; do
        [[ -x "$tc/bin/rustc" && -x "$tc/bin/cargo" ]] || continue
        if "$tc/bin/rustc" --version | grep -Eq "^rustc ${RUST_VERSION//./\\.}(\.[0-9]+)? "; then
            readlink -f "$tc"
            return 0
        fi
    done
    return 1
}

build_standin_rust() {
    local t rootfs tc rustup_bin name p
    tc=$(host_toolchain) || die "no Rust $RUST_VERSION toolchain on this machine to build $STANDIN_RUST from (rustup toolchain install $RUST_VERSION)"
    rustup_bin=$(command -v rustup) || die "rustup is not on PATH"
    t=$(newtmp)
    rootfs=$t/rootfs
    # The Debian part of the official image: a minimal bookworm with the C
    # toolchain cargo links with, from this machine's apt sources.
    mmdebstrap --quiet --variant=minbase --include=gcc,libc6-dev,pkg-config,ca-certificates \
        bookworm "$rootfs" </dev/null
    # The Rust part: rustup's layout under /usr/local as in the official
    # image, one toolchain (without its documentation).
    name=$("$tc/bin/rustc" --version | awk '{print $2}')-x86_64-unknown-linux-gnu
    mkdir -p "$rootfs/usr/local/rustup/toolchains/$name" "$rootfs/usr/local/cargo/bin"
    tar -C "$tc" --exclude=./share/doc -c . | tar -C "$rootfs/usr/local/rustup/toolchains/$name" -x
    printf 'version = "12"\ndefault_toolchain = "%s"\nprofile = "minimal"\n' "$name" >"$rootfs/usr/local/rustup/settings.toml"
    install -m 0755 "$rustup_bin" "$rootfs/usr/local/cargo/bin/rustup"
    for p in cargo rustc rustdoc rust-gdb rust-gdbgui rust-lldb; do
        ln "$rootfs/usr/local/cargo/bin/rustup" "$rootfs/usr/local/cargo/bin/$p"
    done
    chmod -R a+w "$rootfs/usr/local/rustup" "$rootfs/usr/local/cargo"
    tar -C "$rootfs" --numeric-owner -c . | podman import -q \
        --change 'ENV RUSTUP_HOME=/usr/local/rustup' --change 'ENV CARGO_HOME=/usr/local/cargo' \
        --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "ENV RUST_VERSION=${name%%-*}" --change 'CMD ["bash"]' \
        - "$STANDIN_RUST" >/dev/null
}

say "base images"
if pull "$REAL_RUST"; then
    RUST_IMAGE=$REAL_RUST
else
    have_image "$STANDIN_RUST" || { echo "building the stand-in $STANDIN_RUST"; build_standin_rust; }
    RUST_IMAGE=$STANDIN_RUST
fi
if pull "$REAL_RUNTIME"; then
    RUNTIME_IMAGE=$REAL_RUNTIME
else
    have_image "$STANDIN_RUNTIME" || { echo "building the stand-in $STANDIN_RUNTIME"; build_standin_runtime; }
    RUNTIME_IMAGE=$STANDIN_RUNTIME
fi
echo "build stage:   $RUST_IMAGE$([[ $RUST_IMAGE == "$STANDIN_RUST" ]] && echo " (stand-in: $REAL_RUST cannot be pulled here)")"
echo "runtime stage: $RUNTIME_IMAGE$([[ $RUNTIME_IMAGE == "$STANDIN_RUNTIME" ]] && echo " (stand-in: $REAL_RUNTIME cannot be pulled here)")"

# --------------------------------------------------------------- 3. build
# The documented command (docs/kubernetes.md), plus the bases and the
# revision. The host's CA bundle is mounted so cargo trusts whatever
# re-signs TLS on this network; it is not part of any layer.
SOURCE_URL=$(git remote get-url origin 2>/dev/null || echo unknown)
build() { # build CONTEXT TAG LOG
    local revision
    revision=$(git -C "$1" rev-parse HEAD 2>/dev/null || echo unknown)
    podman build --force-rm -f "$1/$DOCKERFILE" -t "$2" \
        --build-arg RUST_IMAGE="$RUST_IMAGE" --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" \
        --build-arg REVISION="$revision" --build-arg SOURCE_URL="$SOURCE_URL" \
        -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro \
        "$1" >"$3" 2>&1
}
say "build $IMAGE"
log=$(newtmp)/build.log
start=$SECONDS
if ! build "$ROOT" "$IMAGE" "$log"; then
    tail -n 40 "$log" >&2
    die "podman build failed (above: the end of its output)"
fi
echo "built in $((SECONDS - start)) s ($(grep -c -- '--> Using cache' "$log" || true) steps from the cache)"

# --------------------------------------------------------------- 4. sizes
say "size and metadata"
image_bytes=$(podman image inspect -f '{{.Size}}' "$IMAGE")
bin=$(newtmp)/websocket-server
cid=$(podman create "$IMAGE")
containers+=("$cid")
podman cp "$cid:/usr/local/bin/websocket-server" "$bin"
podman rm "$cid" >/dev/null
bin_bytes=$(stat -c %s "$bin")
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1e6 }'; }
echo "image $(mb "$image_bytes") MB (limit $MAX_IMAGE_MB), binary $(mb "$bin_bytes") MB (limit $MAX_BINARY_MB)"
[[ "$image_bytes" -le $((MAX_IMAGE_MB * 1000000)) ]] || die "the image is $(mb "$image_bytes") MB, over $MAX_IMAGE_MB MB"
[[ "$bin_bytes" -le $((MAX_BINARY_MB * 1000000)) ]] || die "the binary is $(mb "$bin_bytes") MB, over $MAX_BINARY_MB MB"
if readelf -S "$bin" | grep -q '\.debug_'; then
    die "the binary has debug sections: $(readelf -S "$bin" | grep -o '\.debug_[a-z_]*' | tr '\n' ' ')"
fi
echo "binary has no .debug_* sections"
for label in source revision version licenses title; do
    v=$(podman image inspect -f "{{index .Labels \"org.opencontainers.image.$label\"}}" "$IMAGE")
    [[ -n "$v" && "$v" != "<no value>" ]] || die "label org.opencontainers.image.$label is not set"
    echo "org.opencontainers.image.$label=$v"
done
want_version=$(sed -n 's/^version = "\(.*\)"/\1/p' server/Cargo.toml | head -1)
got_version=$(podman image inspect -f '{{index .Labels "org.opencontainers.image.version"}}' "$IMAGE")
[[ "$got_version" == "$want_version" ]] || die "label version $got_version != server/Cargo.toml's $want_version"
user=$(podman image inspect -f '{{.Config.User}}' "$IMAGE")
[[ "$user" == 10001:10001 ]] || die "the image's USER is $user, not 10001:10001"

# ------------------------------------------------------------------ 5. run
say "run as the StatefulSet does"
# The manifest's container: its env (literal values; POD_NAME from the
# downward API; Secrets are left out, so the server runs as one node), its
# ports, the probes' paths and ports, the scrape port, the grace period.
PY=python3
[[ -x "${K8S_VENV:-.venv-k8s}/bin/python" ]] && PY=${K8S_VENV:-.venv-k8s}/bin/python
"$PY" -c 'import yaml' 2>/dev/null || { apt_install python3-yaml && PY=python3; }
spec=$("$PY" - "$MANIFEST" <<'PY'
import sys, yaml
sts = next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "StatefulSet")
pod = sts["spec"]["template"]
c = next(c for c in pod["spec"]["containers"] if c["name"] == "websocket-server")
ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
def port(ref):
    return ports[ref] if isinstance(ref, str) else int(ref)
print("GRACE", pod["spec"].get("terminationGracePeriodSeconds", 30))
print("HTTP", ports["http"])
for name, n in ports.items():
    print("PORT", n)
print("LIVE", c["livenessProbe"]["httpGet"]["path"], port(c["livenessProbe"]["httpGet"]["port"]))
print("READY", c["readinessProbe"]["httpGet"]["path"], port(c["readinessProbe"]["httpGet"]["port"]))
ann = pod["metadata"].get("annotations", {})
print("METRICS", ann.get("prometheus.io/path", "/metrics"), int(ann.get("prometheus.io/port", ports["http"])))
for e in c.get("env", []):
    if "value" in e:
        print("ENV", "%s=%s" % (e["name"], e["value"]))
    elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
        print("ENV", "%s=%s-0" % (e["name"], sts["metadata"]["name"]))
    else:
        print("SECRET", e["name"])
PY
)
env_args=()
port_args=()
declare -A hostport
secrets=()
while read -r kind a b; do
    case "$kind" in
        GRACE) GRACE=$a ;;
        HTTP) HTTP_PORT=$a ;;
        PORT) hostport[$a]=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
              port_args+=(-p "127.0.0.1:${hostport[$a]}:$a") ;;
        LIVE) LIVE_PATH=$a LIVE_PORT=$b ;;
        READY) READY_PATH=$a READY_PORT=$b ;;
        METRICS) METRICS_PATH=$a METRICS_PORT=$b ;;
        ENV) env_args+=(-e "$a") ;;
        SECRET) secrets+=("$a") ;;
    esac
done <<<"$spec"
env_shown=()
for a in "${env_args[@]}"; do [[ "$a" == -e ]] || env_shown+=("$a"); done
echo "env: ${env_shown[*]}"
[[ ${#secrets[@]} -eq 0 ]] || echo "not set (from Secrets, the cluster's Redis and MongoDB): ${secrets[*]}; the server runs as one node"
name=websocket-image-check-$$
podman run -d --name "$name" --read-only --user 10001:10001 --cap-drop=ALL \
    --security-opt no-new-privileges "${env_args[@]}" "${port_args[@]}" "$IMAGE" >/dev/null
containers+=("$name")
url() { printf 'http://127.0.0.1:%s%s' "${hostport[$2]}" "$1"; }
for _ in $(seq 100); do
    curl -fsS -o /dev/null "$(url "$LIVE_PATH" "$LIVE_PORT")" 2>/dev/null && break
    [[ "$(podman inspect -f '{{.State.Running}}' "$name")" == true ]] || { podman logs "$name" >&2; die "the container exited"; }
    sleep 0.2
done
get() { # get PATH PORT EXPECTED_STATUS -> body on stdout
    local out status
    out=$(curl -sS -w '\n%{http_code}' "$(url "$1" "$2")") || die "GET $1: no answer"
    status=${out##*$'\n'}
    [[ "$status" == "$3" ]] || die "GET $1: status $status, expected $3 (${out%$'\n'*})"
    printf '%s' "${out%$'\n'*}"
}
body=$(get "$LIVE_PATH" "$LIVE_PORT" 200)
grep -q '"status":"healthy"' <<<"$body" || die "$LIVE_PATH: $body"
echo "ok: $LIVE_PATH 200 $body"
body=$(get "$READY_PATH" "$READY_PORT" 200)
grep -q '"status":"ready"' <<<"$body" || die "$READY_PATH: $body"
echo "ok: $READY_PATH 200 $body"
body=$(get / "$HTTP_PORT" 200)
grep -qi '<html' <<<"$body" || die "/ is not the chat page"
echo "ok: / 200, the chat page ($(wc -c <<<"$body") bytes)"
user_in=$(podman top "$name" user group 2>/dev/null | tail -1 | xargs)
[[ "$user_in" == "10001 10001" ]] || die "the server runs as '$user_in', not 10001 10001"
echo "ok: the server runs as uid/gid $user_in on a read-only root filesystem"

# A minimal RFC 6455 client (stdlib only): connect, read the system frame,
# send chat frames, read frames until a predicate holds.
WSCLIENT=$(newtmp)/wsclient.py
cat >"$WSCLIENT" <<'PY'
import base64, json, os, socket, struct, sys, time

class Client:
    def __init__(self, port, path):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.s.recv(4096)
            if not chunk:
                sys.exit(f"{path}: connection closed during the handshake")
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            sys.exit(f"{path}: handshake answered {head.splitlines()[0]!r}")

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("connection closed without a close frame")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self):
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._read(8))[0]
        return b0 & 0x0F, self._read(n)

    def send(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        head += bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
        self.s.sendall(head + mask + bytes(p ^ mask[i % 4] for i, p in enumerate(payload)))

    def until(self, pred, what):
        """Text frames until pred(json) holds; answers pings."""
        while True:
            op, data = self.frame()
            if op == 1:
                msg = json.loads(data)
                if pred(msg):
                    return msg
            elif op == 9:
                self.send(10, data)
            elif op == 8:
                code = struct.unpack(">H", data[:2])[0] if len(data) >= 2 else None
                sys.exit(f"closed with {code} while waiting for {what}")

def chat(port):
    room = "imagecheck%d" % os.getpid()
    a = Client(port, f"/ws?room={room}&name=alice")
    b = Client(port, f"/ws?room={room}&name=bob")
    for c in (a, b):
        c.until(lambda m: m.get("type") == "system", "the system frame")
    text = "hello from the image check %d" % time.time_ns()
    a.send(1, json.dumps({"type": "chat", "message": text}).encode())
    for who, c in (("alice", a), ("bob", b)):
        m = c.until(lambda m: m.get("type") == "chat", "the chat frame")
        if m.get("message") != text or m.get("username") != "alice":
            sys.exit(f"{who} got {m}, expected alice's {text!r}")
    print(f"ok: chat round-trip, bob and alice got alice's message (seq {m.get('seq')}, pod {m.get('podName')})")

def drain(port, ready_file):
    c = Client(port, "/ws?room=drain&name=carol")
    c.until(lambda m: m.get("type") == "system", "the system frame")
    open(ready_file, "w").close()
    notice = False
    c.s.settimeout(60)
    while True:
        op, data = c.frame()
        if op == 1 and json.loads(data).get("type") == "system":
            notice = True
        elif op == 9:
            c.send(10, data)
        elif op == 8:
            code = struct.unpack(">H", data[:2])[0] if len(data) >= 2 else None
            c.send(8, data[:2])
            if code != 1001:
                sys.exit(f"drain: closed with {code}, expected 1001")
            print(f"ok: the connected client got {'the shutdown notice and ' if notice else ''}close 1001")
            return

if __name__ == "__main__":
    if sys.argv[1] == "chat":
        chat(int(sys.argv[2]))
    else:
        drain(int(sys.argv[2]), sys.argv[3])
PY
python3 "$WSCLIENT" chat "${hostport[$HTTP_PORT]}" || die "the WebSocket chat round-trip"
metrics=$(get "$METRICS_PATH" "$METRICS_PORT" 200)
grep -Eq '^websocket_messages_received_total(\{[^}]*\})? [1-9]' <<<"$metrics" ||
    die "$METRICS_PATH does not count the chat message: $(grep '^websocket_messages_received_total' <<<"$metrics")"
echo "ok: $METRICS_PATH 200, $(grep -c '^# TYPE' <<<"$metrics") metrics, $(grep -E '^websocket_messages_received_total' <<<"$metrics" | head -1)"

say "SIGTERM with a client connected (grace period ${GRACE}s)"
flag=$(newtmp)/connected
python3 "$WSCLIENT" drain "${hostport[$HTTP_PORT]}" "$flag" &
drain_pid=$!
for _ in $(seq 100); do [[ -e "$flag" ]] && break; sleep 0.1; done
[[ -e "$flag" ]] || die "the drain client did not connect"
podman kill --signal TERM "$name" >/dev/null
t0=$(date +%s.%N)
status=""
for _ in $(seq 50); do
    status=$(curl -s -o /dev/null -w '%{http_code}' "$(url "$READY_PATH" "$READY_PORT")" || true)
    [[ "$status" == 503 ]] && break
    sleep 0.1
done
[[ "$status" == 503 ]] || die "$READY_PATH is $status after SIGTERM, expected 503"
echo "ok: $READY_PATH 503 $(awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.1f", t1 - t0 }') s after SIGTERM"
wait "$drain_pid" || die "the connected client was not closed with 1001"
exited=""
for _ in $(seq $((GRACE * 10))); do
    [[ "$(podman inspect -f '{{.State.Running}}' "$name")" == false ]] && { exited=1; break; }
    sleep 0.1
done
took=$(awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.1f", t1 - t0 }')
[[ -n "$exited" ]] || die "still running ${GRACE}s after SIGTERM (the kubelet would SIGKILL it)"
code=$(podman inspect -f '{{.State.ExitCode}}' "$name")
[[ "$code" == 0 ]] || { podman logs "$name" 2>&1 | tail -20 >&2; die "exit status $code after SIGTERM"; }
echo "ok: exit status 0, ${took} s after SIGTERM (grace period ${GRACE} s)"

# ------------------------------------------------------------------ 6. cache
if [[ "${CHECK_IMAGE_CACHE:-1}" != 0 ]]; then
    say "dependency cache: a fresh clone with a changed source file"
    clone=$(newtmp)/clone
    git clone -q "$ROOT" "$clone"
    # The working tree's Cargo files, so that uncommitted dependency changes
    # (already built above) do not count as a miss.
    cp Cargo.toml Cargo.lock "$clone/"
    cp server/Cargo.toml "$clone/server/"
    cp server/mongo/Cargo.toml "$clone/server/mongo/"
    cp tools/connflood/Cargo.toml "$clone/tools/connflood/"
    cp "$DOCKERFILE" "$clone/$DOCKERFILE"
    cp .dockerignore "$clone/"
    # A change no earlier run made: the same text twice would find its own
    # layer in the cache (the server's sources unchanged between two runs),
    # and the check would measure nothing.
    printf '\n// check-image: a source change (%s)\n' "$(date +%s.%N)-$$" >>"$clone/server/src/main.rs"
    log2=$(newtmp)/rebuild.log
    start=$SECONDS
    build "$clone" localhost/websocket-server:check-rebuild "$log2" || { tail -n 40 "$log2" >&2; die "the rebuild failed"; }
    took=$((SECONDS - start))
    podman rmi localhost/websocket-server:check-rebuild >/dev/null 2>&1 || true
    # The dependency build is the first `cargo build`: it must come from the
    # cache, the second must run (the source changed).
    dep=$(awk '/STEP [0-9]+\/[0-9]+: RUN .*cargo build/ { step = 1; next } step && /^--> / { print; exit }' "$log2")
    [[ "$dep" == '--> Using cache'* ]] || { cat "$log2" >&2; die "the dependency layer was rebuilt for a source change in a fresh clone"; }
    # The MongoDB crate (server/mongo) is built in that layer: the second
    # build compiles the server crate alone.
    compiled=$({ grep -o 'Compiling [a-z0-9_-]* ' "$log2" || true; } | awk '{ print $2 }' | sort -u | tr '\n' ' ')
    [[ "$compiled" == "websocket-server " ]] || { cat "$log2" >&2; die "the rebuild compiled ${compiled:-nothing}, expected websocket-server alone"; }
    echo "ok: rebuilt in ${took} s from a fresh clone; the dependency layer came from the cache"
fi

echo
echo "check-image: passed (build stage $RUST_IMAGE, runtime $RUNTIME_IMAGE; image $(mb "$image_bytes") MB, binary $(mb "$bin_bytes") MB)"
