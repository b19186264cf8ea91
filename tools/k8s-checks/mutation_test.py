#!/usr/bin/env python3
"""Mutation test of the contract test: proves that each of its checks can
fail, and fails on the mistake it is meant to catch.

Copies what the contract test reads (k8s/, docker/, .dockerignore,
tools/deploy.sh, docs/kubernetes.md, README.md) into a temporary directory, first
checks that the untouched copy passes every static check, then applies
each breakage below to a fresh copy, one at a time, runs the static checks
of tools/k8s-checks/contract_test.py on it and asserts that the check
named for that breakage fails. The Cargo workspace and the server's
sources are read from the repository itself (they are not mutated).

    mutation_test.py [--server-bin PATH] [--only NAME] [-v]

A breakage whose text is no longer in its file is reported as stale (and
fails the run), so this list keeps up with the manifests. Exit status 0
when every breakage was caught; the last line is "N passed, N failed".
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass

sys.dont_write_bytecode = True  # no __pycache__ left in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import contract_test  # noqa: E402

COPIED = ("k8s", "docker", ".dockerignore", "tools/deploy.sh", "docs/kubernetes.md", "README.md")

SERVER_STS = "k8s/33-websocket-statefulset.yaml"
EXTERNAL_SVC = "k8s/32-websocket-service-external.yaml"
HEADLESS_SVC = "k8s/31-websocket-service-headless.yaml"
HPA = "k8s/35-websocket-hpa.yaml"
OPTIONAL_HPA = "k8s/optional/hpa-connections.yaml"
MONGO_STS = "k8s/12-mongodb-statefulset.yaml"
REDIS = "k8s/22-redis-deployment.yaml"
SERVER_NETPOL = "k8s/30-websocket-networkpolicy.yaml"
INIT_JOB = "k8s/14-mongodb-init-job.yaml"
DOCKERFILE = "docker/Dockerfile"
DEPLOY = "tools/deploy.sh"


@dataclass
class Mutation:
    name: str
    check: str  # the contract check that must fail
    path: str  # file to change (relative to the copy's root)
    old: str | None  # exact text, present exactly once; None: create the file
    new: str


M = Mutation
MUTATIONS = [
    # Probes and ports: what the server serves and listens on.
    M("wrong readiness path", "server-probes", SERVER_STS, "path: /ready\n", "path: /readyz\n"),
    M("wrong liveness path", "server-probes", SERVER_STS, "path: /health\n", "path: /healthz\n"),
    M("probe on an undeclared port", "server-probes", SERVER_STS,
      "path: /ready\n              port: admin\n", "path: /ready\n              port: metrics\n"),
    M("liveness on the public port", "server-probes", SERVER_STS,
      "path: /health\n              port: admin\n", "path: /health\n              port: http\n"),
    M("wrong containerPort", "server-ports-consistent", SERVER_STS, "containerPort: 8080", "containerPort: 8081"),
    M("PORT env differs from the containerPort", "server-ports-consistent", SERVER_STS,
      '- name: PORT\n              value: "8080"', '- name: PORT\n              value: "9090"'),
    M("Dockerfile EXPOSE differs", "server-ports-consistent", DOCKERFILE, "EXPOSE 8080", "EXPOSE 8081"),
    M("Prometheus port annotation differs", "server-ports-consistent", SERVER_STS,
      'prometheus.io/port: "9090"', 'prometheus.io/port: "8080"'),
    # The admin port: private.
    M("ADMIN_PORT differs from the admin containerPort", "admin-port-private", SERVER_STS,
      '- name: ADMIN_PORT\n              value: "9090"', '- name: ADMIN_PORT\n              value: "9091"'),
    M("admin port in the external Service", "admin-port-private", EXTERNAL_SVC,
      "      nodePort: 30080\n", "      nodePort: 30080\n    - name: admin\n      port: 9090\n      targetPort: admin\n"),
    M("admin port open to any source", "admin-port-private", SERVER_NETPOL,
      "    - from:\n        - namespaceSelector:\n            matchLabels:\n"
      "              kubernetes.io/metadata.name: monitoring\n      ports:", "    - ports:"),
    M("admin port open to an address block", "admin-port-private", SERVER_NETPOL,
      "        - namespaceSelector:\n            matchLabels:\n              kubernetes.io/metadata.name: monitoring\n",
      "        - ipBlock:\n            cidr: 0.0.0.0/0\n"),
    M("admin port open to the namespace's pods", "networkpolicies-reachability", SERVER_NETPOL,
      "        - namespaceSelector:\n            matchLabels:\n              kubernetes.io/metadata.name: monitoring\n",
      "        - podSelector: {}\n"),
    M("public rule covers every port", "admin-port-private", SERVER_NETPOL,
      "    - ports:\n        - protocol: TCP\n          port: 8080\n", "    - {}\n"),
    # Environment variables.
    M("unknown env var", "server-env-vars-known", SERVER_STS,
      "- name: DRAIN_WINDOW_SECS\n", "- name: DRAIN_WINDOW_SECS\n              value: \"8\"\n"
      "            - name: DRAIN_WINDOW_SECONDS\n"),
    M("POD_NAME not from the downward API", "server-env-required", SERVER_STS,
      "fieldPath: metadata.name", "fieldPath: metadata.namespace"),
    M("MONGO_URI as a literal", "server-env-required", SERVER_STS,
      "- name: MONGO_URI\n              valueFrom:\n                secretKeyRef:\n"
      "                  name: mongodb-secret\n                  key: uri\n",
      "- name: MONGO_URI\n              value: mongodb://mongodb-service/chat\n"),
    M("WORKERS above the CPU limit", "server-workers-match-cpu-limit", SERVER_STS,
      '- name: WORKERS\n              value: "2"', '- name: WORKERS\n              value: "4"'),
    # Secrets: names and keys the workloads refer to and the script creates.
    M("Secret key typo in the server env", "secret-refs-match-deploy-script", SERVER_STS,
      "key: url", "key: ulr"),
    M("Secret name typo in the server env", "secret-refs-match-deploy-script", SERVER_STS,
      "name: redis-secret", "name: redis-secrets"),
    M("Secret key typo in MongoDB", "secret-refs-match-deploy-script", MONGO_STS,
      "key: root-password", "key: root-pasword"),
    M("Secret key typo in the init Job", "secret-refs-match-deploy-script", INIT_JOB,
      "key: app-password", "key: app-passwd"),
    M("deploy.sh creates a different key", "secret-refs-match-deploy-script", DEPLOY,
      "--from-file=app-password=", "--from-file=app_password="),
    M("example Secret out of step with deploy.sh", "secret-refs-match-deploy-script",
      "k8s/examples/secrets.example.yaml", "  app-username: chat\n", "  app-user: chat\n"),
    M("example Secret with a real password", "no-secrets-in-default-path",
      "k8s/examples/secrets.example.yaml", '  root-password: ""', '  root-password: "hunter2"'),
    M("a Secret applied by kubectl apply -f k8s/", "no-secrets-in-default-path", "k8s/02-secrets.yaml", None,
      "apiVersion: v1\nkind: Secret\nmetadata:\n  name: redis-secret\n  namespace: websocket-system\n"
      "stringData:\n  password: x\n"),
    # Selectors and labels.
    M("server selector does not match its pods", "workload-selectors-match-templates", SERVER_STS,
      "  selector:\n    matchLabels:\n      app: websocket-server\n",
      "  selector:\n    matchLabels:\n      app: websocket\n"),
    M("init Job pods carry the MongoDB members' labels", "workload-selectors-match-templates", INIT_JOB,
      "        app: mongodb-init\n", "        app: mongodb\n"),
    M("external Service selects nothing", "services-select-pods-and-ports", EXTERNAL_SVC,
      "  selector:\n    app: websocket-server\n", "  selector:\n    app: websocket-srv\n"),
    M("Service targets an undeclared port name", "services-select-pods-and-ports", HEADLESS_SVC,
      "targetPort: http", "targetPort: htpp"),
    M("serviceName is not a Service", "statefulset-service-names", SERVER_STS,
      "serviceName: websocket-service", "serviceName: websocket-svc"),
    M("governing Service not headless", "statefulset-service-names", HEADLESS_SVC, "  clusterIP: None\n", ""),
    M("namespace typo", "files-numbered-and-namespaced", "k8s/21-redis-service.yaml",
      "namespace: websocket-system", "namespace: websocket-sytem"),
    M("manifest not numbered", "files-numbered-and-namespaced", "k8s/extra.yaml", None,
      "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n  namespace: websocket-system\n"),
    # The external Service.
    M("sessionAffinity removed", "external-service-affinity", EXTERNAL_SVC, "  sessionAffinity: ClientIP\n", ""),
    M("affinity timeout changed", "external-service-affinity", EXTERNAL_SVC,
      "timeoutSeconds: 10800", "timeoutSeconds: 3600"),
    M("externalTrafficPolicy Cluster", "external-service-affinity", EXTERNAL_SVC,
      "  externalTrafficPolicy: Local\n", "  externalTrafficPolicy: Cluster\n"),
    M("nodePort differs from deploy.sh", "external-service-affinity", EXTERNAL_SVC,
      "nodePort: 30080", "nodePort: 30081"),
    # Scaling and disruption.
    M("HPA CPU target changed", "hpa-targets", HPA, "averageUtilization: 70", "averageUtilization: 90"),
    M("HPA targets another workload", "hpa-targets", HPA,
      "kind: StatefulSet\n    name: websocket-server", "kind: StatefulSet\n    name: websocket"),
    M("optional HPA under a second name", "hpa-targets", OPTIONAL_HPA,
      "name: websocket-hpa", "name: websocket-connections-hpa"),
    M("server starts with one replica", "server-statefulset-shape", SERVER_STS, "  replicas: 2\n", "  replicas: 1\n"),
    M("ordered pod management", "server-statefulset-shape", SERVER_STS,
      "podManagementPolicy: Parallel\n  updateStrategy", "podManagementPolicy: OrderedReady\n  updateStrategy"),
    M("deploy.sh no longer finds the annotations line", "server-statefulset-shape", DEPLOY,
      "/^      annotations:$/", "/^    annotations:$/"),
    M("server PDB selects nothing", "pdbs-select-pods", "k8s/34-websocket-pdb.yaml",
      "  selector:\n    matchLabels:\n      app: websocket-server", "  selector:\n    matchLabels:\n      app: web"),
    M("MongoDB PDB allows losing the majority", "pdbs-select-pods", "k8s/13-mongodb-pdb.yaml",
      "minAvailable: 2", "minAvailable: 1"),
    # Network policies.
    M("default deny removed", "networkpolicies-select-pods", "k8s/01-networkpolicy-default-deny.yaml",
      "  policyTypes:\n    - Ingress\n", "  policyTypes:\n    - Egress\n"),
    M("Redis policy opens the wrong port", "networkpolicies-select-pods", "k8s/20-redis-networkpolicy.yaml",
      "port: 6379", "port: 6380"),
    M("Redis reachable by every pod", "networkpolicies-reachability", "k8s/20-redis-networkpolicy.yaml",
      "    - from:\n        - podSelector:\n            matchLabels:\n              app: websocket-server\n      ports:",
      "    - ports:"),
    M("init Job cannot reach MongoDB", "networkpolicies-reachability", "k8s/10-mongodb-networkpolicy.yaml",
      "              app: mongodb-init\n", "              app: mongodb-setup\n"),
    # Shutdown budget.
    M("grace period without a margin", "shutdown-budget", SERVER_STS,
      "terminationGracePeriodSeconds: 40", "terminationGracePeriodSeconds: 30"),
    M("grace period far beyond the drain", "shutdown-budget", SERVER_STS,
      "terminationGracePeriodSeconds: 40", "terminationGracePeriodSeconds: 120"),
    # Spreading.
    M("no zone spread", "server-spread", SERVER_STS,
      "          topologyKey: topology.kubernetes.io/zone\n", "          topologyKey: example.com/rack\n"),
    M("zone spread blocks unlabelled nodes", "server-spread", SERVER_STS,
      "          topologyKey: topology.kubernetes.io/zone\n          whenUnsatisfiable: ScheduleAnyway\n",
      "          topologyKey: topology.kubernetes.io/zone\n          whenUnsatisfiable: DoNotSchedule\n"),
    M("node spread counts tainted nodes", "server-spread", SERVER_STS,
      "          nodeTaintsPolicy: Honor\n", ""),
    M("drain window too long for the grace period", "shutdown-budget", SERVER_STS,
      '- name: DRAIN_WINDOW_SECS\n              value: "8"', '- name: DRAIN_WINDOW_SECS\n              value: "15"'),
    M("no preStop sleep", "shutdown-budget", SERVER_STS, "sleep:\n                seconds: 5", "sleep:\n                seconds: 0"),
    # Connection strings and the replica set.
    M("Redis host:port is not the Service", "connection-strings-match-services", DEPLOY,
      'REDIS_HOSTPORT="redis-service:6379"', 'REDIS_HOSTPORT="redis:6379"'),
    M("MongoDB seed list misses a member", "connection-strings-match-services", DEPLOY,
      ",mongodb-2.mongodb-service:27017\"\n", "\"\n"),
    M("MongoDB scaled down, init Job not", "connection-strings-match-services", MONGO_STS,
      "  replicas: 3\n", "  replicas: 2\n"),
    M("init Job initiates another replica set", "connection-strings-match-services", INIT_JOB,
      "- name: RS_NAME\n              value: rs0", "- name: RS_NAME\n              value: rs1"),
    M("init Job uses another mongo image", "connection-strings-match-services", INIT_JOB,
      "image: mongo:7.0.43@sha256:9854f7139445d766a9523571d6f047530c45547460ffcf8259eb2bf4264632ca",
      "image: mongo:7.0.42@sha256:9854f7139445d766a9523571d6f047530c45547460ffcf8259eb2bf4264632ca"),
    # Image pins.
    M("Redis pinned by tag only", "images-pinned", REDIS,
      "redis:7.2.16-alpine@sha256:29e8589c3f9ba699b5f7aa4b3c7733c58852a3626439e619aa0ee78de08c6ca0", "redis:7.2.16-alpine"),
    M("Redis below the release with the fix", "images-pinned", REDIS,
      "image: redis:7.2.16-alpine@", "image: redis:7.2.5-alpine@"),
    M("MongoDB on a floating tag", "images-pinned", MONGO_STS,
      "        - name: install-keyfile\n          # The members' image (see below).\n"
      "          image: mongo:7.0.43@sha256:9854f7139445d766a9523571d6f047530c45547460ffcf8259eb2bf4264632ca",
      "        - name: install-keyfile\n          # The members' image (see below).\n          image: mongo:7.0"),
    M("MongoDB on the 8.0 line", "images-pinned", MONGO_STS,
      "          image: mongo:7.0.43@sha256:9854f7139445d766a9523571d6f047530c45547460ffcf8259eb2bf4264632ca\n"
      "          imagePullPolicy: IfNotPresent\n          args:",
      "          image: mongo:8.0.43@sha256:9854f7139445d766a9523571d6f047530c45547460ffcf8259eb2bf4264632ca\n"
      "          imagePullPolicy: IfNotPresent\n          args:"),
    # MongoDB probes.
    M("MongoDB readiness only pings", "mongodb-readiness-primary-or-secondary", MONGO_STS,
      '"const h = db.hello(); quit(h.isWritablePrimary === true || h.secondary === true ? 0 : 1)"',
      '"quit(db.adminCommand({ ping: 1 }).ok === 1 ? 0 : 1)"'),
    M("MongoDB readiness accepts any replica-set member", "mongodb-readiness-primary-or-secondary", MONGO_STS,
      '"const h = db.hello(); quit(h.isWritablePrimary === true || h.secondary === true ? 0 : 1)"',
      '"const h = db.hello(); quit(h.setName ? 0 : 1)"'),
    M("MongoDB liveness requires PRIMARY or SECONDARY", "mongodb-readiness-primary-or-secondary", MONGO_STS,
      '"quit(db.adminCommand({ ping: 1 }).ok === 1 ? 0 : 1)"\n            periodSeconds: 20',
      '"const h = db.hello(); quit(h.isWritablePrimary || h.secondary ? 0 : 1)"\n            periodSeconds: 20'),
    M("init script changed, its hash not", "init-job-tracks-its-script", INIT_JOB,
      'WAIT_SECONDS="${WAIT_SECONDS:-300}"', 'WAIT_SECONDS="${WAIT_SECONDS:-600}"'),
    # tools/deploy.sh against the manifests and the docs.
    M("deploy.sh's MongoDB shape out of step", "deploy-detects-foreign-install", DEPLOY,
      'MONGO_STS_SHAPE="Parallel|mongodb-service|data=5Gi,"', 'MONGO_STS_SHAPE="Parallel|mongodb-service|data=10Gi,"'),
    M("MongoDB claims resized, deploy.sh not", "deploy-detects-foreign-install", MONGO_STS,
      "            storage: 5Gi", "            storage: 10Gi"),
    M("deploy.sh does not look before applying", "deploy-detects-foreign-install", DEPLOY,
      "    ensure_minikube\n    check_existing_install\n", "    ensure_minikube\n"),
    M("deploy.sh waits 300 s for MongoDB", "deploy-waits-match-docs", DEPLOY,
      'MONGO_ROLLOUT_TIMEOUT="${MONGO_ROLLOUT_TIMEOUT:-600s}"', 'MONGO_ROLLOUT_TIMEOUT="${MONGO_ROLLOUT_TIMEOUT:-300s}"'),
    M("deploy.sh replaces the connections HPA", "deploy-waits-match-docs", DEPLOY,
      'apply "$K8S/optional/hpa-connections.yaml"', 'apply "$K8S/35-websocket-hpa.yaml"'),
    # Security and resources.
    M("server may run as root", "security-contexts", SERVER_STS, "runAsNonRoot: true", "runAsNonRoot: false"),
    M("server root filesystem writable", "security-contexts", SERVER_STS,
      "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"),
    M("server without a memory limit", "resources-everywhere", SERVER_STS,
      '            limits:\n              cpu: "2"\n              memory: 1Gi\n', '            limits:\n              cpu: "2"\n'),
    # The image.
    M("Dockerfile USER differs from runAsUser", "dockerfile-contract", DOCKERFILE, "USER 10001:10001", "USER 10002:10002"),
    M("Dockerfile USER by name", "dockerfile-contract", DOCKERFILE, "USER 10001:10001", "USER nonroot"),
    M("Dockerfile HEALTHCHECK", "dockerfile-contract", DOCKERFILE,
      "ENTRYPOINT [", 'HEALTHCHECK CMD ["/usr/local/bin/websocket-server", "--help"]\nENTRYPOINT ['),
    M("runtime image copies the sources", "dockerfile-contract", DOCKERFILE,
      "COPY --from=build", "COPY server /src/server\nCOPY --from=build"),
    M("build stage leaves out a workspace member's sources", "dockerfile-contract", DOCKERFILE,
      "COPY tools/connflood tools/connflood\n", ""),
    M("image version label differs from the crate", "dockerfile-contract", DOCKERFILE,
      'image.version="0.1.0"', 'image.version="0.0.9"'),
    M("Rust toolchain older than a dependency needs", "dockerfile-toolchain-new-enough", DOCKERFILE,
      "ARG RUST_VERSION=1.95", "ARG RUST_VERSION=1.84"),
    M(".dockerignore drops the embedded chat page", "dockerignore-keeps-build-inputs", ".dockerignore",
      "server/fuzz\n", "server/fuzz\nserver/static\n"),
    M(".dockerignore drops the MongoDB crate", "dockerignore-keeps-build-inputs", ".dockerignore",
      "server/fuzz\n", "server/fuzz\nserver/mongo\n"),
    M(".dockerignore drops the lockfile", "dockerignore-keeps-build-inputs", ".dockerignore",
      "!Cargo.lock\n", ""),
    M(".dockerignore lets everything in", "dockerignore-keeps-build-inputs", ".dockerignore", "\n*\n", "\n"),
    # Documentation.
    M("README's Secrets recipe misses the URI placeholder", "docs-secret-recipe-works", "README.md",
      '-e "s|REPLACE_WITH_APP_PASSWORD|$app_pw|"', '-e "s|REPLACE_APP_PASSWORD|$app_pw|"'),
    M("docs' Secrets recipe leaves the keyfile empty", "docs-secret-recipe-works", "docs/kubernetes.md",
      '-e "s|^  keyfile: \\"\\"|  keyfile: \\"$keyfile\\"|" \\\n', ''),
    M("optional HPA metric not in the docs", "connections-hpa-metric-documented", OPTIONAL_HPA,
      "name: websocket_connections_active", "name: websocket_connections_open"),
]


# The optional Redis Cluster (k8s/optional/redis-cluster/), kept apart from
# the list above so the two change independently.
RC = "k8s/optional/redis-cluster/"
RC_STS = RC + "13-redis-cluster-statefulset.yaml"
RC_SCRIPTS = RC + "12-redis-cluster-scripts.yaml"
RC_POLICY = RC + "10-redis-cluster-networkpolicy.yaml"
RC_TO_CLUSTER = RC + "patches/server-to-cluster.yaml"
MUTATIONS += [
    M("Redis Cluster nodes not in cluster mode", "redis-cluster-shape", RC_SCRIPTS,
      "--cluster-enabled yes", "--cluster-enabled no"),
    M("Redis Cluster of five nodes", "redis-cluster-shape", RC_STS, "  replicas: 6\n", "  replicas: 5\n"),
    M("Redis Cluster on another Redis image", "redis-cluster-shape", RC_STS, "image: redis:7.2.16-alpine@", "image: redis:7.2.15-alpine@"),
    M("cluster bus on another port than declared", "redis-cluster-shape", RC_SCRIPTS,
      "--cluster-port 16379", "--cluster-port 16380"),
    M("nodes.conf off the volume", "redis-cluster-shape", RC_SCRIPTS,
      "conf=/data/nodes.conf", "conf=/tmp/nodes.conf"),
    M("Redis Cluster headless Service hides unready nodes", "redis-cluster-shape", RC + "11-redis-cluster-service.yaml",
      "  publishNotReadyAddresses: true\n", ""),
    M("Redis Cluster password as a literal", "redis-cluster-password-from-secret", RC_STS,
      "            - name: REDIS_PASSWORD\n              valueFrom:\n                secretKeyRef:\n"
      "                  name: redis-secret\n                  key: password\n",
      "            - name: REDIS_PASSWORD\n              value: changeme\n"),
    M("Redis Cluster replicas do not authenticate to masters", "redis-cluster-password-from-secret", RC_SCRIPTS,
      '      --masterauth "${REDIS_PASSWORD}" \\\n', ""),
    M("cluster bus closed between the nodes", "redis-cluster-networkpolicy", RC_POLICY, "port: 16379", "port: 16380"),
    M("cluster bus open to the server pods", "redis-cluster-networkpolicy", RC_POLICY,
      "    - from:\n        - podSelector:\n            matchLabels:\n              app: redis-cluster\n      ports:\n"
      "        - protocol: TCP\n          port: 16379\n",
      "    - ports:\n        - protocol: TCP\n          port: 16379\n"),
    M("server pods cannot reach the Redis Cluster", "redis-cluster-networkpolicy", RC_POLICY,
      "              app: websocket-server\n", "              app: websocket\n"),
    M("Redis Cluster PDB allows two nodes down", "redis-cluster-pdb", RC + "14-redis-cluster-pdb.yaml",
      "maxUnavailable: 1", "maxUnavailable: 2"),
    M("Redis Cluster evicts room keys", "redis-cluster-maxmemory-policy", RC_SCRIPTS,
      "--maxmemory-policy volatile-lru", "--maxmemory-policy allkeys-lru"),
    M("Redis Cluster without maxmemory", "redis-cluster-maxmemory-policy", RC_SCRIPTS, "      --maxmemory 160mb \\\n", ""),
    M("Redis Cluster init Job misses a node", "redis-cluster-init-job", RC + "15-redis-cluster-init-job.yaml",
      " redis-cluster-5.redis-cluster\n", "\n"),
    M("Redis Cluster init Job recreates a formed cluster", "redis-cluster-init-job", RC_SCRIPTS,
      '    if [ "$formed" -gt 0 ]; then', '    if [ "$formed" -gt 99 ]; then'),
    M("switch patch keeps REDIS_URL", "redis-cluster-server-switch", RC_TO_CLUSTER,
      "            - name: REDIS_URL\n              $patch: delete\n", ""),
    M("switch patch misses a seed", "redis-cluster-server-switch", RC_TO_CLUSTER,
      ",redis://redis-cluster-5.redis-cluster:6379", ""),
    M("switching back leaves the cluster password", "redis-cluster-server-switch", RC + "patches/server-to-single.yaml",
      "            - name: REDIS_PASSWORD\n              $patch: delete\n", ""),
]

def make_copy(repo: str, dst: str) -> None:
    for rel in COPIED:
        src = os.path.join(repo, rel)
        target = os.path.join(dst, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.isdir(src):
            shutil.copytree(src, target)
        elif os.path.exists(src):
            shutil.copy2(src, target)


def apply(root: str, m: Mutation) -> None:
    path = os.path.join(root, m.path)
    if m.old is None:
        if os.path.exists(path):
            raise ValueError(f"{m.path} already exists; the mutation would not add a file")
        with open(path, "w", encoding="utf-8") as f:
            f.write(m.new)
        return
    with open(path, encoding="utf-8") as f:
        text = f.read()
    n = text.count(m.old)
    if n != 1:
        raise ValueError(f"stale: {m.old!r} occurs {n} times in {m.path}, expected exactly once")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text.replace(m.old, m.new))


def static_results(root: str, repo: str, server_bin: str) -> dict[str, str | None]:
    ctx = contract_test.Context(root, server_bin, cargo_root=repo)
    return contract_test.run_checks(ctx, {"static"}, quiet=True)


def main(argv: list[str]) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.abspath(os.path.join(here, "..", ".."))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--server-bin", default=os.path.join(repo, "target/debug/websocket-server"),
                    help="websocket-server binary, for --list-env (default: target/debug/websocket-server)")
    ap.add_argument("--only", action="append", help="run only the named mutation (repeatable)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the failure message of each caught mutation")
    args = ap.parse_args(argv)
    server_bin = os.path.abspath(args.server_bin)

    all_checks = {name for name, group, _ in contract_test.CHECKS if group == "static"}
    unknown = sorted({m.check for m in MUTATIONS} - all_checks)
    if unknown:
        print(f"mutations name checks that do not exist: {unknown}")
        return 1

    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="k8s-mutation-") as tmp:
        base = os.path.join(tmp, "base")
        make_copy(repo, base)
        baseline = static_results(base, repo, server_bin)
        broken = {k: v for k, v in baseline.items() if v is not None}
        if broken:
            for name, msg in broken.items():
                print(f"  FAIL  baseline: {name} fails on the unmodified files: {msg.splitlines()[0]}")
            print(f"0 passed, {len(broken)} failed")
            return 1
        print(f"mutation test: the unmodified files pass all {len(baseline)} static checks")

        selected = [m for m in MUTATIONS if not args.only or m.name in args.only]
        for i, m in enumerate(selected):
            root = os.path.join(tmp, f"m{i}")
            shutil.copytree(base, root)
            try:
                apply(root, m)
            except ValueError as e:
                print(f"  FAIL  {m.name}: {e}")
                failed += 1
                continue
            results = static_results(root, repo, server_bin)
            msg = results.get(m.check)
            if msg is None:
                others = sorted(k for k, v in results.items() if v is not None)
                print(f"  FAIL  {m.name}: {m.check} still passes (failing instead: {others or 'nothing'})")
                failed += 1
            else:
                print(f"  ok    {m.name}: caught by {m.check}")
                if args.verbose:
                    print(f"          {msg.splitlines()[0]}")
                passed += 1
            shutil.rmtree(root, ignore_errors=True)

        covered = {m.check for m in selected}
        if not args.only:
            uncovered = sorted(all_checks - covered)
            if uncovered:
                print(f"  FAIL  static checks no mutation exercises: {uncovered}")
                failed += 1
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
