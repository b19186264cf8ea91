#!/usr/bin/env bash
# Deploys the WebSocket chat system to minikube, or removes it.
#
#   tools/deploy.sh              build the image inside minikube and deploy everything
#   tools/deploy.sh --delete     remove it all (asks first; --yes skips the question)
#   tools/deploy.sh --help
#
# Idempotent: a second run changes nothing that is already right. Existing
# Secrets keep their passwords, the replica count the HPA chose is kept,
# an HPA that scales on connections stays, the server pods restart only
# when the image actually changed, and the MongoDB init Job runs again
# only when it (or its script) changed or it failed. An install that is
# not this one (the original deployment) is detected before anything is
# changed. Every wait is bounded. See docs/kubernetes.md.
set -euo pipefail

# ---------------------------------------------------------------------------
# Names shared with the manifests. tools/k8s-checks/contract_test.py reads
# these assignments and the `create secret generic` commands below and fails
# if they disagree with k8s/.
NAMESPACE="websocket-system"
IMAGE="websocket-server:latest"
NODE_PORT="30080"
REDIS_HOSTPORT="redis-service:6379"
MONGO_HOSTS="mongodb-0.mongodb-service:27017,mongodb-1.mongodb-service:27017,mongodb-2.mongodb-service:27017"
MONGO_DATABASE="chat"
MONGO_REPLICA_SET="rs0"
# The immutable StatefulSet fields k8s/ sets (podManagementPolicy|
# serviceName|claim templates as name=size,...). An existing StatefulSet
# with other values is not ours (the original deployment, see
# check_existing_install): applying over it would fail halfway.
MONGO_STS_SHAPE="Parallel|mongodb-service|data=5Gi,"
SERVER_STS_SHAPE="Parallel|websocket-service|"
# The only Deployment k8s/ creates.
DEPLOYMENTS="redis"
# ---------------------------------------------------------------------------

PROFILE="${MINIKUBE_PROFILE:-minikube}"
CONTEXT="${KUBE_CONTEXT:-$PROFILE}"
ROLLOUT_TIMEOUT="${ROLLOUT_TIMEOUT:-300s}"
# A first start pulls the mongo image on every node and builds the replica
# set; docs/kubernetes.md says 10 minutes.
MONGO_ROLLOUT_TIMEOUT="${MONGO_ROLLOUT_TIMEOUT:-600s}"
JOB_TIMEOUT_SECS="${JOB_TIMEOUT_SECS:-900}"
MINIKUBE_START_ARGS="${MINIKUBE_START_ARGS:---cpus=4 --memory=6144 --cni=calico}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
K8S="$ROOT/k8s"

usage() {
    cat <<EOF
Usage: tools/deploy.sh [--no-build] | --delete [--yes] | --help

Deploys the WebSocket chat system (MongoDB replica set, Redis, the chat
server, its HPA, PodDisruptionBudgets and NetworkPolicies) into the
namespace ${NAMESPACE} of a minikube cluster.

  (no option)   start minikube if it is not running, enable metrics-server,
                build ${IMAGE} inside minikube's Docker, create the
                Secrets (random passwords unless given below), apply k8s/
                in order and wait until everything is ready; then print the
                URLs and the commands to watch it
  --no-build    skip the image build (the image must already be in minikube)
  --delete      delete the namespace ${NAMESPACE} and everything in it,
                MongoDB's PersistentVolumeClaims (all stored messages)
                included; asks for confirmation
  --yes, -y     with --delete: do not ask
  --help, -h    this text

Environment (all optional):
  MINIKUBE_PROFILE     minikube profile (default: minikube)
  KUBE_CONTEXT         kubectl context (default: the profile's name)
  MINIKUBE_START_ARGS  flags for 'minikube start' when it is not running
                       (default: ${MINIKUBE_START_ARGS})
  ROLLOUT_TIMEOUT      per-rollout wait (default: 300s)
  MONGO_ROLLOUT_TIMEOUT  wait for the MongoDB members (default: 600s)
  JOB_TIMEOUT_SECS     wait for the MongoDB init Job (default: 900)
  REDIS_PASSWORD, MONGO_ROOT_USERNAME (default root), MONGO_ROOT_PASSWORD,
  MONGO_APP_USERNAME (default chat), MONGO_APP_PASSWORD
                       credentials for a first deployment; generated when
                       unset. Ignored (with a warning) once the Secrets
                       exist: a redeploy never changes a password.
EOF
}

log() { printf '==> %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
    printf 'ERROR: %s\n' "$*" >&2
    exit 1
}

kc() { kubectl --context "$CONTEXT" "$@"; }
kn() { kubectl --context "$CONTEXT" -n "$NAMESPACE" "$@"; }

# ---------------------------------------------------------------------------
# Prerequisites

check_prerequisites() {
    local missing=0 tool
    for tool in "$@"; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            missing=1
            case "$tool" in
                docker) warn "docker (the CLI) is not installed. It builds the image against minikube's own Docker engine (minikube docker-env), so no local daemon is needed; install the Docker CLI, or pass --no-build if the image is already in minikube." ;;
                minikube) warn "minikube is not installed. Install minikube (see its documentation), then run this script again." ;;
                kubectl) warn "kubectl is not installed. Install kubectl matching your cluster's minor version (or alias 'minikube kubectl --')." ;;
                *) warn "$tool is not installed." ;;
            esac
        fi
    done
    ((missing == 0)) || die "missing prerequisites (see above)"
}

ensure_minikube() {
    local state
    state="$(minikube -p "$PROFILE" status --format '{{.Host}}/{{.Kubelet}}/{{.APIServer}}' 2>/dev/null || true)"
    if [[ "$state" == "Running/Running/Running" ]]; then
        log "minikube profile '$PROFILE' is running"
    else
        log "minikube profile '$PROFILE' is not running (${state:-absent}): starting it"
        # Word splitting of the flags is intended.
        # shellcheck disable=SC2086
        minikube -p "$PROFILE" start $MINIKUBE_START_ARGS
    fi
    # The HPA needs resource metrics; enabling an enabled addon is a no-op.
    if ! minikube -p "$PROFILE" addons list 2>/dev/null | grep -E '^\| *metrics-server *\|' | grep -q enabled; then
        log "enabling the metrics-server addon (the HPA reads CPU and memory from it)"
        minikube -p "$PROFILE" addons enable metrics-server
    fi
    kc get --raw /readyz >/dev/null 2>&1 || die "the API server of context '$CONTEXT' does not answer"
}

# ---------------------------------------------------------------------------
# Image

IMAGE_ID=""
build_image() {
    log "building $IMAGE inside minikube's Docker"
    # Talk to the Docker engine inside minikube, so the kubelet finds the
    # image locally (imagePullPolicy: IfNotPresent) instead of pulling it.
    eval "$(minikube -p "$PROFILE" docker-env --shell bash)"
    docker build -f "$ROOT/docker/Dockerfile" -t "$IMAGE" "$ROOT"
    IMAGE_ID="$(docker image inspect -f '{{.Id}}' "$IMAGE")"
}

# ---------------------------------------------------------------------------
# Secrets

# Prints the decoded value of one key of an existing Secret (nothing if the
# Secret or the key does not exist).
secret_value() {
    local b64
    b64="$(kn get secret "$1" -o go-template="{{ index .data \"$2\" }}" 2>/dev/null || true)"
    if [[ -n "$b64" && "$b64" != "<no value>" ]]; then
        printf '%s' "$b64" | base64 -d
    fi
}

gen_password() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }
gen_keyfile() { head -c 756 /dev/urandom | base64 | tr -d '\n'; }

# resolve SECRET KEY ENV_NAME DEFAULT_COMMAND...
# The existing Secret's value wins (a redeploy never changes a password the
# databases already use); then the environment; then the default.
resolve() {
    local secret="$1" key="$2" env_name="$3" existing given
    shift 3
    existing="$(secret_value "$secret" "$key")"
    given="${!env_name:-}"
    if [[ -n "$existing" ]]; then
        if [[ -n "$given" && "$given" != "$existing" ]]; then
            warn "$env_name differs from the existing $secret/$key; keeping the existing value (docs/kubernetes.md: rotating credentials)"
        fi
        printf '%s' "$existing"
    elif [[ -n "$given" ]]; then
        printf '%s' "$given"
    else
        "$@"
    fi
}

# Percent-encodes a value for the userinfo part of a URL.
urlencode() {
    local LC_ALL=C s="$1" out="" c i
    for ((i = 0; i < ${#s}; i++)); do
        c="${s:i:1}"
        case "$c" in
            [A-Za-z0-9._~-]) out+="$c" ;;
            *) printf -v c '%%%02X' "'$c" && out+="$c" ;;
        esac
    done
    printf '%s' "$out"
}

SECRET_DIR=""
cleanup() { if [[ -n "$SECRET_DIR" ]]; then rm -rf "$SECRET_DIR"; fi; }
trap cleanup EXIT

# Writes one value into the private directory; prints the file's path.
# Values go to kubectl through files, never on a command line (where other
# local users could read them in the process list).
value_file() {
    printf '%s' "$2" >"$SECRET_DIR/$1"
    printf '%s' "$SECRET_DIR/$1"
}

create_secrets() {
    local redis_password root_username root_password app_username app_password keyfile
    SECRET_DIR="$(umask 077 && mktemp -d)"

    redis_password="$(resolve redis-secret password REDIS_PASSWORD gen_password)"
    root_username="$(resolve mongodb-secret root-username MONGO_ROOT_USERNAME printf root)"
    root_password="$(resolve mongodb-secret root-password MONGO_ROOT_PASSWORD gen_password)"
    app_username="$(resolve mongodb-secret app-username MONGO_APP_USERNAME printf chat)"
    app_password="$(resolve mongodb-secret app-password MONGO_APP_PASSWORD gen_password)"
    keyfile="$(secret_value mongodb-secret keyfile)"
    [[ -n "$keyfile" ]] || keyfile="$(gen_keyfile)"

    local v
    for v in "$redis_password" "$root_username" "$root_password" "$app_username" "$app_password" "$keyfile"; do
        [[ -n "$v" ]] || die "an empty credential was resolved; refusing to create the Secrets"
    done

    log "applying Secrets redis-secret and mongodb-secret (existing values are kept)"
    kubectl create secret generic redis-secret --namespace "$NAMESPACE" \
        --from-file=password="$(value_file redis-password "$redis_password")" \
        --from-file=url="$(value_file redis-url "redis://:$(urlencode "$redis_password")@${REDIS_HOSTPORT}/0")" \
        --dry-run=client -o yaml | kc apply -f -

    kubectl create secret generic mongodb-secret --namespace "$NAMESPACE" \
        --from-file=root-username="$(value_file root-username "$root_username")" \
        --from-file=root-password="$(value_file root-password "$root_password")" \
        --from-file=app-username="$(value_file app-username "$app_username")" \
        --from-file=app-password="$(value_file app-password "$app_password")" \
        --from-file=keyfile="$(value_file keyfile "$keyfile")" \
        --from-file=uri="$(value_file mongo-uri "mongodb://$(urlencode "$app_username"):$(urlencode "$app_password")@${MONGO_HOSTS}/${MONGO_DATABASE}?replicaSet=${MONGO_REPLICA_SET}&authSource=admin")" \
        --dry-run=client -o yaml | kc apply -f -

    rm -rf "$SECRET_DIR"
    SECRET_DIR=""
}

# ---------------------------------------------------------------------------
# Applying and waiting

apply() {
    local f
    for f in "$@"; do
        kc apply -f "$f"
    done
}

# A Job's pod template is immutable: if the init Job changed since it last
# ran, delete and re-create it. It is idempotent, so re-running is safe.
# A Job that failed stays failed (re-applying it unchanged does nothing), so
# a failed one is deleted first and the apply creates it afresh; a completed
# one is left alone.
apply_init_job() {
    local out failed
    if ! failed="$(kn get job mongodb-init --ignore-not-found \
        -o go-template='{{range .status.conditions}}{{if and (eq .type "Failed") (eq .status "True")}}yes{{end}}{{end}}')"; then
        die "cannot read the MongoDB init Job (is the cluster running?)"
    fi
    if [[ "$failed" == yes ]]; then
        log "the MongoDB init Job failed on an earlier run: deleting it so that it runs again"
        kn delete job mongodb-init --wait=true --timeout=120s
    fi
    if ! out="$(kc apply -f "$K8S/14-mongodb-init-job.yaml" 2>&1)"; then
        if grep -q 'field is immutable' <<<"$out"; then
            log "the MongoDB init Job changed: re-creating it"
            kn delete job mongodb-init --wait=true --timeout=120s
            kc apply -f "$K8S/14-mongodb-init-job.yaml"
        else
            printf '%s\n' "$out" >&2
            die "applying the MongoDB init Job failed"
        fi
    else
        printf '%s\n' "$out"
    fi
}

wait_for_job() {
    local name="$1" deadline=$((SECONDS + JOB_TIMEOUT_SECS)) conditions
    log "waiting for Job $name (at most ${JOB_TIMEOUT_SECS}s)"
    while ((SECONDS < deadline)); do
        # A failed read (an API hiccup) counts as "not yet": poll again.
        conditions=" $(kn get job "$name" -o go-template='{{range .status.conditions}}{{if eq .status "True"}}{{.type}} {{end}}{{end}}' 2>/dev/null || true) "
        case "$conditions" in
            *" Complete "*)
                log "Job $name completed"
                return 0
                ;;
            *" Failed "*)
                kn logs "job/$name" --tail=50 >&2 || true
                die "Job $name failed; its log is above (kubectl logs -n $NAMESPACE job/$name)"
                ;;
        esac
        sleep 5
    done
    kn logs "job/$name" --tail=50 >&2 || true
    die "Job $name did not complete within ${JOB_TIMEOUT_SECS}s"
}

# rollout RESOURCE [TIMEOUT]
rollout() {
    local timeout="${2:-$ROLLOUT_TIMEOUT}"
    log "waiting for $1 (at most $timeout)"
    kn rollout status "$1" --timeout="$timeout"
}

# ---------------------------------------------------------------------------
# An existing install that is not this one

# The original deployment uses the same namespace and object names, but
# StatefulSets with other immutable fields (podManagementPolicy, the
# volume claim template's name and size), a frontend Deployment, NodePort
# 30000 and a container port named "ws". Applying k8s/ over it fails
# halfway, on the first immutable field, with the cluster half converted.
# So look first, change nothing, and stop with the way over.
check_existing_install() {
    local problems=() out shape name want
    if ! out="$(kc get namespace "$NAMESPACE" -o name 2>&1)"; then
        grep -q NotFound <<<"$out" && return 0
        printf '%s\n' "$out" >&2
        die "cannot read namespace $NAMESPACE in context $CONTEXT (is the cluster running?)"
    fi
    local sts_template='{{.spec.podManagementPolicy}}|{{.spec.serviceName}}|{{range .spec.volumeClaimTemplates}}{{.metadata.name}}={{.spec.resources.requests.storage}},{{end}}'
    for name in mongodb websocket-server; do
        want="$MONGO_STS_SHAPE"
        [[ "$name" == websocket-server ]] && want="$SERVER_STS_SHAPE"
        shape="$(kn get statefulset "$name" --ignore-not-found -o go-template="$sts_template")" ||
            die "cannot read StatefulSet $name"
        if [[ -n "$shape" && "$shape" != "$want" ]]; then
            problems+=("StatefulSet $name has podManagementPolicy|serviceName|claims '$shape', these manifests '$want' (immutable fields)")
        fi
    done
    out="$(kn get statefulset websocket-server --ignore-not-found \
        -o go-template='{{range .spec.template.spec.containers}}{{range .ports}}{{.name}} {{end}}{{end}}')" ||
        die "cannot read StatefulSet websocket-server"
    if [[ " $out " == *" ws "* ]]; then
        problems+=("StatefulSet websocket-server has a container port named 'ws' (this one's is 'http')")
    fi
    out="$(kn get deployments -o go-template='{{range .items}}{{.metadata.name}} {{end}}')" || die "cannot list Deployments"
    for name in $out; do
        if [[ " $DEPLOYMENTS " != *" $name "* ]]; then
            problems+=("Deployment $name is not part of these manifests (the original's frontend?)")
        fi
    done
    # $svc is a Go template variable, not a shell one.
    # shellcheck disable=SC2016
    out="$(kn get services -o go-template='{{range .items}}{{$svc := .metadata.name}}{{range .spec.ports}}{{if .nodePort}}{{$svc}}:{{.nodePort}} {{end}}{{end}}{{end}}')" ||
        die "cannot list Services"
    for name in $out; do
        if [[ "${name#*:}" != "$NODE_PORT" ]]; then
            problems+=("Service ${name%:*} uses NodePort ${name#*:} (these manifests use $NODE_PORT only)")
        fi
    done
    ((${#problems[@]} == 0)) && return 0
    printf 'ERROR: namespace %s holds an install that is not this one (the original deployment?):\n' "$NAMESPACE" >&2
    printf '  - %s\n' "${problems[@]}" >&2
    cat >&2 <<EOF
Nothing was changed. Applying these manifests over it would fail halfway on
immutable fields and leave its messages in orphaned volume claims. Move over
as described in docs/kubernetes.md, "Moving over from the original
deployment": back up its messages, remove it (kubectl delete namespace
${NAMESPACE}, once the backup is safe), then run tools/deploy.sh again.
EOF
    exit 1
}

# ---------------------------------------------------------------------------
# The autoscaler

# Both HPAs are named websocket-hpa (two on one StatefulSet would fight).
# If the one in the cluster scales on connections (a Pods metric: someone
# applied k8s/optional/hpa-connections.yaml), re-apply that file rather
# than replacing it with the CPU one.
apply_hpa() {
    local types
    types="$(kn get hpa websocket-hpa --ignore-not-found -o go-template='{{range .spec.metrics}}{{.type}} {{end}}')" ||
        die "cannot read the HPA websocket-hpa"
    if [[ " $types " == *" Pods "* ]]; then
        log "websocket-hpa scales on connections: keeping it (re-applying k8s/optional/hpa-connections.yaml; revert with kubectl apply -f k8s/35-websocket-hpa.yaml)"
        apply "$K8S/optional/hpa-connections.yaml"
    else
        apply "$K8S/35-websocket-hpa.yaml"
    fi
}

# Applies the server's StatefulSet with two adjustments, in one apply:
#  - replicas: the manifest's `replicas: 2` is the initial size. Once the
#    HPA has scaled the StatefulSet, re-applying 2 would remove pods (and
#    disconnect their clients) until the HPA scales back up, so the current
#    count is kept;
#  - the image ID, as a pod template annotation: the tag stays "latest", so
#    without it a rebuilt image would not roll the pods. A changed image
#    rolls them (one at a time, each draining); an unchanged one leaves
#    them alone. With --no-build the ID already in the cluster is kept.
apply_server_statefulset() {
    local manifest="$K8S/33-websocket-statefulset.yaml" replicas image_id="$IMAGE_ID"
    replicas="$(kn get statefulset websocket-server -o go-template='{{.spec.replicas}}' 2>/dev/null || true)"
    [[ "$replicas" =~ ^[0-9]+$ ]] || replicas=""
    if [[ -z "$image_id" ]]; then
        image_id="$(kn get statefulset websocket-server \
            -o go-template='{{with .spec.template.metadata.annotations}}{{index . "websocket-chat/image-id"}}{{end}}' \
            2>/dev/null || true)"
        [[ "$image_id" =~ ^[a-z0-9]+:[0-9a-f]+$ ]] || image_id=""
    fi
    awk -v replicas="$replicas" -v image_id="$image_id" '
        replicas != "" && /^  replicas: [0-9]+$/ { print "  replicas: " replicas; next }
        { print }
        image_id != "" && /^      annotations:$/ { print "        websocket-chat/image-id: \"" image_id "\"" }
    ' "$manifest" | kc apply -f -
}

deploy() {
    local build="$1"
    if ((build)); then
        check_prerequisites minikube kubectl docker
    else
        check_prerequisites minikube kubectl
    fi
    ensure_minikube
    check_existing_install
    if ((build)); then
        build_image
    fi

    log "namespace and network isolation"
    apply "$K8S/00-namespace.yaml" "$K8S/01-networkpolicy-default-deny.yaml"
    create_secrets

    log "MongoDB replica set"
    apply "$K8S"/1[0-3]-*.yaml
    # A member is Ready only as PRIMARY or SECONDARY, which on a first start
    # takes the init Job: run it before waiting for the rollout (it waits
    # for the members itself).
    apply_init_job
    wait_for_job mongodb-init
    rollout statefulset/mongodb "$MONGO_ROLLOUT_TIMEOUT"

    log "Redis"
    apply "$K8S"/2[0-9]-*.yaml
    rollout deployment/redis

    log "WebSocket server"
    apply "$K8S/30-websocket-networkpolicy.yaml" "$K8S/31-websocket-service-headless.yaml" \
        "$K8S/32-websocket-service-external.yaml"
    apply_server_statefulset
    apply "$K8S/34-websocket-pdb.yaml"
    apply_hpa
    rollout statefulset/websocket-server

    local ip
    ip="$(minikube -p "$PROFILE" ip)"
    cat <<EOF

Deployed to namespace ${NAMESPACE} (context ${CONTEXT}).

  WebSocket:   ws://${ip}:${NODE_PORT}/ws
  Chat page:   http://${ip}:${NODE_PORT}/

  (If ${ip} is not reachable from this machine, e.g. with minikube's docker
  driver on macOS or Windows, run:
     minikube -p ${PROFILE} service websocket-external -n ${NAMESPACE} --url)

  Watch scaling:  kubectl get hpa -w -n ${NAMESPACE}
  Server logs:    kubectl logs -f statefulset/websocket-server -n ${NAMESPACE}
                  (every replica: kubectl logs -f -l app=websocket-server --prefix --max-log-requests=10 -n ${NAMESPACE})
  Pods:           kubectl get pods -o wide -n ${NAMESPACE}
  MongoDB, Redis: docs/kubernetes.md ("Reaching MongoDB and Redis")
  Remove it all:  tools/deploy.sh --delete
EOF
}

delete_all() {
    local assume_yes="$1" answer out
    check_prerequisites kubectl
    if ! out="$(kc get namespace "$NAMESPACE" -o name 2>&1)"; then
        if grep -q NotFound <<<"$out"; then
            log "namespace $NAMESPACE does not exist in context $CONTEXT: nothing to delete"
            return 0
        fi
        printf '%s\n' "$out" >&2
        die "cannot read namespace $NAMESPACE in context $CONTEXT (is the cluster running?)"
    fi
    if ((!assume_yes)); then
        [[ -t 0 ]] || die "not deleting without confirmation (standard input is not a terminal); pass --yes"
        printf 'This deletes namespace %s in context %s with everything in it,\n' "$NAMESPACE" "$CONTEXT"
        printf "including MongoDB's PersistentVolumeClaims: every stored message is lost.\n"
        read -r -p "Type the namespace name to confirm: " answer
        [[ "$answer" == "$NAMESPACE" ]] || die "not confirmed; nothing was deleted"
    fi
    log "deleting namespace $NAMESPACE (at most 300s)"
    kc delete namespace "$NAMESPACE" --wait=true --timeout=300s
    log "deleted. The image $IMAGE stays in minikube's Docker; 'minikube -p $PROFILE delete' removes the whole cluster."
}

main() {
    local mode=deploy assume_yes=0 build=1
    while (($# > 0)); do
        case "$1" in
            --delete) mode=delete ;;
            --yes | -y) assume_yes=1 ;;
            --no-build) build=0 ;;
            --help | -h)
                usage
                return 0
                ;;
            *)
                usage >&2
                die "unknown option: $1"
                ;;
        esac
        shift
    done
    if [[ "$mode" == delete ]]; then
        delete_all "$assume_yes"
    else
        ((assume_yes == 0)) || die "--yes only applies to --delete"
        deploy "$build"
    fi
}

main "$@"
