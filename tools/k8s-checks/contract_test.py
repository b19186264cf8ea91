#!/usr/bin/env python3
"""Contract test between the Kubernetes manifests, the Dockerfile, the
deploy script and the server binary.

Each check parses the files (YAML, Dockerfile instructions, the shell
assignments of tools/deploy.sh) and compares what one file promises with
what another one uses: names, ports, labels and selectors, Secret names and
keys, environment variables, probe paths, the shutdown budget. The HTTP
checks start the real server binary with the manifest's own environment and
ask it for the probe paths and /metrics.

    contract_test.py [--root DIR] [--server-bin PATH] [--skip-http]

Exit status 0 when every check passes, 1 otherwise. The last line is
"N passed, N failed". tools/k8s-checks/mutation_test.py breaks copies of
the files on purpose and makes sure the matching check fails.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml

SERVER_WORKLOAD = ("StatefulSet", "websocket-server")
SERVER_CONTAINER = "websocket-server"
# What the server does after its drain window, each bounded by a constant
# in its sources: (file, constant, what it bounds). Their sum is the tail
# of the shutdown budget; shutdown_tail() reads them, so a change to the
# server's bounds is seen here instead of silently breaking the budget.
SHUTDOWN_TAIL = (
    ("server/src/server.rs", "CLOSE_GRACE", "close handshakes after the window"),
    ("server/src/replica/publisher.rs", "HOLD", "Redis publisher hold"),
    ("server/src/server.rs", "MONGO_FLUSH", "MongoDB flush"),
)


# Seconds the grace period must leave beyond the worst-case drain (SIGTERM
# delivery, the process's own exit, a busy node), and at most.
GRACE_MARGIN = 5
GRACE_MARGIN_MAX = 30
# Image lines and the oldest patch release each may pin: the first with the
# fix of a known vulnerability (MongoDB 7.0.28: unauthenticated memory
# disclosure in the wire protocol's zlib decompression, CVE-2025-14847;
# Redis 7.2.11: use-after-free in the Lua parser, CVE-2025-49844).
IMAGE_LINES = {"mongo": ((7, 0), 28), "redis": ((7, 2), 11)}


class CheckFailed(AssertionError):
    pass


def ensure(cond: Any, msg: str) -> None:
    if not cond:
        raise CheckFailed(msg)


# ---------------------------------------------------------------------------
# Loading


@dataclass
class Obj:
    path: str  # relative to the root
    doc: dict

    @property
    def kind(self) -> str:
        return self.doc.get("kind", "")

    @property
    def name(self) -> str:
        return self.doc.get("metadata", {}).get("name", "")

    @property
    def default_set(self) -> bool:
        """Applied by `kubectl apply -f k8s/` (not recursive)."""
        return os.path.dirname(self.path) == "k8s"


@dataclass
class Workload:
    obj: Obj

    @property
    def kind(self) -> str:
        return self.obj.kind

    @property
    def name(self) -> str:
        return self.obj.name

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.name)

    @property
    def template(self) -> dict:
        return self.obj.doc["spec"]["template"]

    @property
    def pod_labels(self) -> dict:
        return self.template.get("metadata", {}).get("labels", {}) or {}

    @property
    def pod_spec(self) -> dict:
        return self.template["spec"]

    @property
    def containers(self) -> list[dict]:
        return list(self.pod_spec.get("containers", []))

    @property
    def all_containers(self) -> list[dict]:
        return list(self.pod_spec.get("initContainers", []) or []) + self.containers

    @property
    def replicas(self) -> int:
        return int(self.obj.doc["spec"].get("replicas", 1))

    def container_ports(self) -> list[dict]:
        return [p for c in self.containers for p in c.get("ports", []) or []]

    def container(self, name: str) -> dict:
        for c in self.containers:
            if c["name"] == name:
                return c
        raise CheckFailed(f"{self.kind}/{self.name} has no container {name!r}")


@dataclass
class Dockerfile:
    stages: list[dict] = field(default_factory=list)  # {"from":..., "as":..., "instructions": [(INSTR, args)]}
    args: dict = field(default_factory=dict)  # global ARG defaults

    @classmethod
    def parse(cls, text: str) -> "Dockerfile":
        df = cls()
        logical, buf = [], ""
        for raw in text.splitlines():
            line = raw.rstrip()
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if buf and line.lstrip().startswith("#"):
                continue
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            logical.append(buf + line)
            buf = ""
        if buf:
            logical.append(buf)
        for line in logical:
            instr, _, rest = line.strip().partition(" ")
            instr = instr.upper()
            rest = rest.strip()
            if instr == "FROM":
                parts = rest.split()
                image = df.expand(parts[0])
                alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
                df.stages.append({"from": image, "as": alias, "instructions": []})
            elif not df.stages:
                if instr == "ARG":
                    k, _, v = rest.partition("=")
                    df.args[k] = df.expand(v)
            else:
                df.stages[-1]["instructions"].append((instr, rest))
        return df

    def expand(self, text: str) -> str:
        """text with the global ARGs declared so far substituted (their
        defaults: what a build without --build-arg uses)."""
        for k, v in self.args.items():
            text = text.replace("${%s}" % k, v).replace("$" + k, v)
        return text

    @property
    def final(self) -> dict:
        return self.stages[-1]

    def final_instr(self, instr: str) -> list[str]:
        return [a for i, a in self.final["instructions"] if i == instr]

    def all_instr(self, instr: str) -> list[str]:
        return [a for s in self.stages for i, a in s["instructions"] if i == instr]


class Context:
    def __init__(self, root: str, server_bin: str | None, cargo_root: str | None = None):
        self.root = os.path.abspath(root)
        self.cargo_root = os.path.abspath(cargo_root or root)
        self.server_bin = server_bin
        self.objs: list[Obj] = []
        for pattern in ("k8s/*.yaml", "k8s/*.yml", "k8s/optional/*.yaml", "k8s/examples/*.yaml"):
            for path in sorted(glob.glob(os.path.join(self.root, pattern))):
                rel = os.path.relpath(path, self.root)
                with open(path, encoding="utf-8") as f:
                    for doc in yaml.safe_load_all(f):
                        if doc:
                            self.objs.append(Obj(rel, doc))
        with open(os.path.join(self.root, "tools/deploy.sh"), encoding="utf-8") as f:
            self.deploy_sh = f.read()
        with open(os.path.join(self.root, "docker/Dockerfile"), encoding="utf-8") as f:
            self.dockerfile = Dockerfile.parse(f.read())
        self._list_env: list[str] | None = None

    # -- lookups --------------------------------------------------------------
    def default(self, kind: str | None = None) -> list[Obj]:
        return [o for o in self.objs if o.default_set and (kind is None or o.kind == kind)]

    def get(self, kind: str, name: str, default_only: bool = True) -> Obj:
        found = [o for o in self.objs if o.kind == kind and o.name == name and (o.default_set or not default_only)]
        ensure(len(found) == 1, f"expected exactly one {kind}/{name} in k8s/, found {len(found)}")
        return found[0]

    def workloads(self) -> list[Workload]:
        return [Workload(o) for o in self.default() if o.kind in ("StatefulSet", "Deployment", "Job", "DaemonSet")]

    def workload(self, kind: str, name: str) -> Workload:
        return Workload(self.get(kind, name))

    @property
    def server(self) -> Workload:
        return self.workload(*SERVER_WORKLOAD)

    @property
    def server_container(self) -> dict:
        return self.server.container(SERVER_CONTAINER)

    def selected(self, selector: dict | None) -> list[Workload]:
        return [w for w in self.workloads() if selector_matches(selector, w.pod_labels)]

    # -- tools/deploy.sh --------------------------------------------------------
    def deploy_var(self, name: str) -> str:
        m = re.search(r'^%s="([^"$]*)"\s*$' % re.escape(name), self.deploy_sh, re.M)
        ensure(m, f"tools/deploy.sh does not assign {name}=\"...\" (a literal the contract test reads)")
        return m.group(1)

    def deploy_secrets(self) -> dict[str, set[str]]:
        """{secret name: {keys}} from the `create secret generic` commands."""
        joined = re.sub(r"\\\n", " ", self.deploy_sh)
        secrets: dict[str, set[str]] = {}
        for line in joined.splitlines():
            m = re.search(r"\bcreate secret generic\s+([a-z0-9][-a-z0-9.]*)", line)
            if not m:
                continue
            keys = set(re.findall(r"--from-(?:literal|file)=([-._a-zA-Z0-9]+)=", line))
            ensure(keys, f"tools/deploy.sh: secret {m.group(1)} is created without --from-literal/--from-file KEY=")
            ensure("--dry-run=client" in line and re.search(r"\|\s*\S*\s*apply -f -", line),
                   f"tools/deploy.sh: secret {m.group(1)} is not created with --dry-run=client -o yaml | kubectl apply -f -")
            secrets.setdefault(m.group(1), set()).update(keys)
        ensure(secrets, "tools/deploy.sh creates no Secret (no `create secret generic NAME` line)")
        return secrets

    # -- the server binary --------------------------------------------------------
    def list_env(self) -> list[str]:
        if self._list_env is None:
            ensure(self.server_bin and os.access(self.server_bin, os.X_OK),
                   f"server binary not found or not executable: {self.server_bin}")
            out = subprocess.run([self.server_bin, "--list-env"], capture_output=True, text=True, timeout=30)
            ensure(out.returncode == 0, f"{self.server_bin} --list-env exited {out.returncode}: {out.stderr.strip()}")
            names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
            ensure(names and all(re.fullmatch(r"[A-Z][A-Z0-9_]*", n) for n in names),
                   f"--list-env printed something that is not a list of variable names: {out.stdout[:200]!r}")
            self._list_env = names
        return self._list_env


# ---------------------------------------------------------------------------
# Helpers


def selector_matches(selector: dict | None, labels: dict) -> bool:
    """Label selector semantics (matchLabels + matchExpressions).

    A Service-style selector (a plain map) is treated as matchLabels. An empty
    selector selects everything; None selects nothing.
    """
    if selector is None:
        return False
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def env_map(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", []) or []}


def literal_env(container: dict) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container.get("env", []) or [] if "value" in e}


def cpu_cores(q: str | int | float) -> float:
    s = str(q)
    return float(s[:-1]) / 1000 if s.endswith("m") else float(s)


def mem_bytes(q: str | int) -> float:
    s = str(q)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    for u, mult in units.items():
        if s.endswith(u):
            return float(s[: -len(u)]) * mult
    return float(s)


def resolve_port(workload: Workload, port: int | str) -> int:
    if isinstance(port, int):
        return port
    for p in workload.container_ports():
        if p.get("name") == port:
            return int(p["containerPort"])
    raise CheckFailed(f"{workload.kind}/{workload.name} has no container port named {port!r}")


def prestop_seconds(container: dict) -> int:
    pre = (container.get("lifecycle") or {}).get("preStop") or {}
    if "sleep" in pre:
        return int(pre["sleep"]["seconds"])
    if "exec" in pre:
        cmd = pre["exec"].get("command", [])
        if len(cmd) == 2 and cmd[0].endswith("sleep"):
            return int(cmd[1])
        raise CheckFailed(f"preStop exec {cmd} is not a plain `sleep N`; the budget check cannot read it")
    return 0


# ---------------------------------------------------------------------------
# Checks

CHECKS: list[tuple[str, str, Callable[[Context], None]]] = []


def check(name: str, group: str = "static"):
    def deco(fn):
        CHECKS.append((name, group, fn))
        return fn

    return deco


@check("files-numbered-and-namespaced")
def _(ctx: Context) -> None:
    top = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ctx.root, "k8s/*.y*ml")))
    ensure(top, "no manifests in k8s/")
    for f in top:
        ensure(re.match(r"^\d\d-[a-z0-9-]+\.yaml$", f), f"k8s/{f}: expected NN-name.yaml so `kubectl apply -f k8s/` applies in order")
    namespaces = ctx.default("Namespace")
    ensure(len(namespaces) == 1, f"expected one Namespace in k8s/, found {len(namespaces)}")
    ns = namespaces[0]
    ensure(os.path.basename(ns.path) == top[0], f"the Namespace must be in the first file applied ({top[0]}), not {ns.path}")
    ensure(ctx.deploy_var("NAMESPACE") == ns.name, f"tools/deploy.sh NAMESPACE={ctx.deploy_var('NAMESPACE')} but k8s/ creates {ns.name}")
    for o in ctx.objs:
        if o.kind != "Namespace":
            got = o.doc.get("metadata", {}).get("namespace")
            ensure(got == ns.name, f"{o.path}: {o.kind}/{o.name} is in namespace {got!r}, not {ns.name!r}")
    # A ConfigMap or Secret a workload mounts must be applied before it (same file is fine).
    order = {o.path: i for i, o in enumerate(ctx.default())}
    for w in ctx.workloads():
        for vol in w.pod_spec.get("volumes", []) or []:
            if "configMap" in vol:
                cm = ctx.get("ConfigMap", vol["configMap"]["name"])
                ensure(order[cm.path] <= order[w.obj.path], f"{cm.path} must sort before {w.obj.path}")


@check("no-secrets-in-default-path")
def _(ctx: Context) -> None:
    for o in ctx.default("Secret"):
        raise CheckFailed(f"{o.path}: Secret/{o.name} would be applied by `kubectl apply -f k8s/`; Secrets are created by tools/deploy.sh")
    for o in ctx.objs:
        if o.kind == "Secret":
            ensure(o.path.startswith("k8s/examples/"), f"{o.path}: Secret outside k8s/examples/")
            for k, v in (o.doc.get("stringData") or {}).items():
                if re.search(r"password|keyfile", k):
                    ensure(v in ("", None), f"{o.path}: example Secret {o.name} has a non-empty {k}; keep example values empty")


@check("workload-selectors-match-templates")
def _(ctx: Context) -> None:
    ws = ctx.workloads()
    ensure(ws, "no workloads found")
    for w in ws:
        if w.kind == "Job":
            continue
        sel = w.obj.doc["spec"].get("selector")
        ensure(sel, f"{w.kind}/{w.name} has no selector")
        ensure(selector_matches(sel, w.pod_labels), f"{w.kind}/{w.name}: selector {sel} does not match its pod labels {w.pod_labels}")
        # Any other workload's pods, a Job's included: a controller would
        # adopt them, and the Services, PDBs and NetworkPolicies that select
        # this workload by the same labels would take them in too.
        others = [f"{o.kind}/{o.name}" for o in ws if o.key != w.key and selector_matches(sel, o.pod_labels)]
        ensure(not others, f"{w.kind}/{w.name}: selector also matches the pods of {others}")


@check("statefulset-service-names")
def _(ctx: Context) -> None:
    for w in ctx.workloads():
        if w.kind != "StatefulSet":
            continue
        svc_name = w.obj.doc["spec"].get("serviceName")
        ensure(svc_name, f"StatefulSet/{w.name} has no serviceName")
        svc = ctx.get("Service", svc_name)
        ensure(svc.doc["spec"].get("clusterIP") == "None", f"Service/{svc_name} (serviceName of StatefulSet/{w.name}) is not headless")
        sel = svc.doc["spec"].get("selector")
        ensure(selector_matches(sel, w.pod_labels), f"Service/{svc_name} does not select the pods of StatefulSet/{w.name}")
    ensure(ctx.server.obj.doc["spec"]["serviceName"] == "websocket-service", "the server's serviceName must be websocket-service")


@check("services-select-pods-and-ports")
def _(ctx: Context) -> None:
    for svc in ctx.default("Service"):
        sel = svc.doc["spec"].get("selector")
        ensure(sel, f"Service/{svc.name} has no selector")
        targets = ctx.selected(sel)
        targets = [w for w in targets if w.kind != "Job"]
        ensure(targets, f"Service/{svc.name}: selector {sel} matches no pods")
        for port in svc.doc["spec"]["ports"]:
            tp = port.get("targetPort", port["port"])
            for w in targets:
                resolve_port(w, tp)  # raises if the named port is missing
                if isinstance(tp, int):
                    ensure(tp in [int(p["containerPort"]) for p in w.container_ports()],
                           f"Service/{svc.name} targets port {tp}, which {w.kind}/{w.name} does not declare")


@check("external-service-affinity")
def _(ctx: Context) -> None:
    svc = ctx.get("Service", "websocket-external").doc["spec"]
    ensure(svc.get("type") == "NodePort", "websocket-external must be a NodePort Service")
    ensure(svc.get("sessionAffinity") == "ClientIP", "websocket-external needs sessionAffinity: ClientIP")
    ensure(((svc.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get("timeoutSeconds") == 10800,
           "websocket-external: sessionAffinityConfig.clientIP.timeoutSeconds must be 10800")
    ensure(svc.get("externalTrafficPolicy") == "Local",
           "websocket-external: externalTrafficPolicy must be Local (otherwise SNAT hides client IPs and ClientIP affinity pins everyone to one pod)")
    port = svc["ports"][0]
    ensure(port.get("targetPort") == "http", "websocket-external must target the named port http")
    ensure(str(port.get("nodePort")) == ctx.deploy_var("NODE_PORT"),
           f"websocket-external nodePort {port.get('nodePort')} != tools/deploy.sh NODE_PORT {ctx.deploy_var('NODE_PORT')}")


@check("hpa-targets")
def _(ctx: Context) -> None:
    hpas = [o for o in ctx.objs if o.kind == "HorizontalPodAutoscaler"]
    defaults = [h for h in hpas if h.default_set]
    ensure(len(defaults) == 1, f"expected one HPA in k8s/, found {len(defaults)}")
    base = defaults[0]
    for h in hpas:
        spec = h.doc["spec"]
        ref = spec["scaleTargetRef"]
        ensure(ref.get("apiVersion") == "apps/v1", f"{h.path}: scaleTargetRef.apiVersion must be apps/v1")
        target = ctx.workload(ref["kind"], ref["name"])
        ensure(target.key == SERVER_WORKLOAD, f"{h.path}: HPA targets {target.key}, expected {SERVER_WORKLOAD}")
        ensure(2 <= spec["minReplicas"] <= spec["maxReplicas"], f"{h.path}: need 2 <= minReplicas <= maxReplicas")
        ensure(spec["minReplicas"] <= target.replicas <= spec["maxReplicas"],
               f"{h.path}: StatefulSet replicas {target.replicas} outside the HPA's range")
        if not h.default_set:
            ensure(h.name == base.name,
                   f"{h.path}: the optional HPA must replace {base.name} (same name); two HPAs on one StatefulSet fight")
    spec = base.doc["spec"]
    metrics = {m["resource"]["name"]: m["resource"]["target"] for m in spec["metrics"] if m["type"] == "Resource"}
    ensure(metrics.get("cpu", {}).get("averageUtilization") == 70, "HPA: CPU target must be 70 %")
    ensure(metrics.get("memory", {}).get("averageUtilization") == 80, "HPA: memory target must be 80 %")
    for res in ("cpu", "memory"):
        c = ctx.server_container
        ensure(res in (c.get("resources") or {}).get("requests", {}),
               f"HPA scales on {res} utilisation, which needs a {res} request on the server container")


@check("pdbs-select-pods")
def _(ctx: Context) -> None:
    pdbs = ctx.default("PodDisruptionBudget")
    covered = set()
    for p in pdbs:
        spec = p.doc["spec"]
        targets = [w for w in ctx.selected(spec.get("selector")) if w.kind != "Job"]
        ensure(len(targets) == 1, f"PDB/{p.name} selects {[w.name for w in targets]}, expected exactly one workload")
        w = targets[0]
        covered.add(w.key)
        if "minAvailable" in spec:
            ensure(isinstance(spec["minAvailable"], int) and spec["minAvailable"] < w.replicas,
                   f"PDB/{p.name}: minAvailable {spec['minAvailable']} leaves no room for a disruption of {w.name} ({w.replicas} replicas)")
        if "maxUnavailable" in spec:
            ensure(isinstance(spec["maxUnavailable"], int) and 1 <= spec["maxUnavailable"] < w.replicas,
                   f"PDB/{p.name}: maxUnavailable must be at least 1 and below {w.name}'s {w.replicas} replicas")
    ensure(SERVER_WORKLOAD in covered, "no PodDisruptionBudget covers the server")
    mongo = ctx.workload("StatefulSet", "mongodb")
    ensure(mongo.key in covered, "no PodDisruptionBudget covers MongoDB")
    mpdb = [p for p in pdbs if selector_matches(p.doc["spec"]["selector"], mongo.pod_labels)][0]
    majority = mongo.replicas // 2 + 1
    ensure(mpdb.doc["spec"].get("minAvailable", 0) >= majority,
           f"PDB/{mpdb.name} must keep a majority ({majority}) of the {mongo.replicas} members available")
    hpa = ctx.default("HorizontalPodAutoscaler")[0].doc["spec"]
    spdb = [p for p in pdbs if selector_matches(p.doc["spec"]["selector"], ctx.server.pod_labels)][0]
    ensure(spdb.doc["spec"].get("maxUnavailable", 0) < hpa["minReplicas"],
           "the server PDB's maxUnavailable must be below the HPA's minReplicas")


def _policy_allows(ctx: Context, src: Workload | None, dst: Workload, port: int) -> bool:
    """Whether the NetworkPolicies in k8s/ let src (None: outside the
    namespace) open a TCP connection to dst:port."""
    policies = [p for p in ctx.default("NetworkPolicy")
                if "Ingress" in (p.doc["spec"].get("policyTypes") or ["Ingress"])
                and selector_matches(p.doc["spec"].get("podSelector", {}), dst.pod_labels)]
    if not policies:
        return True
    for p in policies:
        for rule in p.doc["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(resolve_port(dst, pp.get("port")) == port and pp.get("protocol", "TCP") == "TCP"
                                 for pp in ports if "port" in pp):
                continue
            peers = rule.get("from")
            if not peers:
                return True
            for peer in peers:
                if "ipBlock" in peer:
                    return True  # an ipBlock admits outside clients, and may cover pod addresses too
                if "namespaceSelector" in peer and src is None:
                    return True
                if "podSelector" in peer and src is not None and "namespaceSelector" not in peer:
                    if selector_matches(peer["podSelector"], src.pod_labels):
                        return True
    return False


@check("networkpolicies-select-pods")
def _(ctx: Context) -> None:
    pols = ctx.default("NetworkPolicy")
    deny = [p for p in pols if p.doc["spec"].get("podSelector") == {} and not p.doc["spec"].get("ingress")
            and "Ingress" in p.doc["spec"].get("policyTypes", [])]
    ensure(deny, "no default-deny ingress NetworkPolicy (podSelector: {}, policyTypes: [Ingress], no rules)")
    for p in pols:
        spec = p.doc["spec"]
        if spec.get("podSelector") != {}:
            targets = ctx.selected(spec.get("podSelector"))
            ensure(targets, f"NetworkPolicy/{p.name}: podSelector {spec.get('podSelector')} matches no pods")
            for rule in spec.get("ingress") or []:
                for pp in rule.get("ports") or []:
                    for w in targets:
                        resolve_port(w, pp["port"])
                        if isinstance(pp["port"], int):
                            ensure(pp["port"] in [int(x["containerPort"]) for x in w.container_ports()],
                                   f"NetworkPolicy/{p.name} opens port {pp['port']}, which {w.name} does not listen on")
        for rule in spec.get("ingress") or []:
            for peer in rule.get("from") or []:
                if "podSelector" in peer:
                    ensure(ctx.selected(peer["podSelector"]),
                           f"NetworkPolicy/{p.name}: from.podSelector {peer['podSelector']} matches no pods")


@check("networkpolicies-reachability")
def _(ctx: Context) -> None:
    ws = {w.name: w for w in ctx.workloads()}
    redis, mongo, server = ws.get("redis"), ws.get("mongodb"), ctx.server
    ensure(redis and mongo, "expected workloads redis and mongodb")
    redis_port = resolve_port(redis, "redis")
    mongo_port = resolve_port(mongo, "mongodb")
    ensure(redis_port == 6379 and mongo_port == 27017, "Redis must listen on 6379 and MongoDB on 27017")

    def who(dst: Workload, port: int) -> set[str]:
        names = {w.name for w in ctx.workloads() if _policy_allows(ctx, w, dst, port)}
        if _policy_allows(ctx, None, dst, port):
            names.add("<outside>")
        return names

    got = who(redis, redis_port)
    ensure(got == {"websocket-server"}, f"Redis:{redis_port} is reachable by {sorted(got)}; expected only websocket-server")
    got = who(mongo, mongo_port)
    ensure(got == {"websocket-server", "mongodb", "mongodb-init"},
           f"MongoDB:{mongo_port} is reachable by {sorted(got)}; expected websocket-server, mongodb (members) and mongodb-init (the Job)")
    http = resolve_port(server, "http")
    got = who(server, http)
    ensure("<outside>" in got and "websocket-server" in got, f"the server's port {http} must accept clients from anywhere; allowed: {sorted(got)}")
    admin = admin_port(ctx)
    got = who(server, admin)
    ensure(not (got - {"<outside>"}), f"the server's admin port {admin} is reachable by pods {sorted(got - {'<outside>'})} of this namespace")
    # Any other port on those pods stays closed.
    for dst in (redis, mongo, server):
        ensure(not who(dst, 22), f"{dst.name}: port 22 should be closed by the default deny")


@check("server-env-vars-known")
def _(ctx: Context) -> None:
    known = set(ctx.list_env())
    for name in env_map(ctx.server_container):
        ensure(name in known, f"the server container sets {name}, which the server does not read (not in --list-env)")
    for e in ctx.server_container.get("envFrom", []) or []:
        raise CheckFailed(f"envFrom {e} on the server container: every variable must be listed explicitly")


@check("server-env-required")
def _(ctx: Context) -> None:
    env = env_map(ctx.server_container)
    lit = literal_env(ctx.server_container)
    ensure(lit.get("PORT") == "8080", "the server container must set PORT=8080 explicitly")
    ensure(lit.get("LOG_LEVEL") == "info", "the server container must set LOG_LEVEL=info")
    for n in ("DRAIN_DELAY_SECS", "DRAIN_WINDOW_SECS", "WORKERS"):
        ensure(n in lit and lit[n].isdigit(), f"the server container must set {n} to a literal number")
    ensure(env.get("POD_NAME", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
           "POD_NAME must come from the downward API (fieldRef metadata.name)")
    for n in ("REDIS_URL", "MONGO_URI"):
        ensure("secretKeyRef" in env.get(n, {}).get("valueFrom", {}), f"{n} must come from a Secret (secretKeyRef)")


@check("secret-refs-match-deploy-script")
def _(ctx: Context) -> None:
    created = ctx.deploy_secrets()
    refs: list[tuple[str, str, str]] = []
    # Optional references (secretKeyRef.optional: true, e.g. the JWT secret
    # that turns authentication on) name Secrets the operator may create;
    # each must have an example under k8s/examples/ instead.
    optional: list[tuple[str, str, str]] = []
    for w in ctx.workloads():
        for c in w.all_containers:
            for e in c.get("env", []) or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref.get("optional") is True:
                    optional.append((f"{w.name}/{c['name']} env {e['name']}", ref["name"], ref["key"]))
                elif ref:
                    refs.append((f"{w.name}/{c['name']} env {e['name']}", ref["name"], ref["key"]))
            for e in c.get("envFrom", []) or []:
                if "secretRef" in e:
                    raise CheckFailed(f"{w.name}/{c['name']}: envFrom secretRef; reference keys one by one")
        for vol in w.pod_spec.get("volumes", []) or []:
            sec = vol.get("secret")
            if sec:
                items = sec.get("items")
                ensure(items, f"{w.name} volume {vol['name']}: mount only the keys it needs (items)")
                for it in items:
                    refs.append((f"{w.name} volume {vol['name']}", sec["secretName"], it["key"]))
    ensure(refs, "no secretKeyRef found in the workloads")
    for where, name, key in refs:
        ensure(name in created, f"{where} refers to Secret {name}, which tools/deploy.sh does not create (it creates {sorted(created)})")
        ensure(key in created[name], f"{where} refers to key {key!r} of Secret {name}; tools/deploy.sh creates {sorted(created[name])}")
    # The example Secrets must describe exactly what the script creates.
    examples = {o.name: set((o.doc.get("stringData") or {}) | (o.doc.get("data") or {}))
                for o in ctx.objs if o.kind == "Secret"}
    for where, name, key in optional:
        ensure(name not in created, f"{where}: Secret {name} is created by tools/deploy.sh; reference it without optional")
        ensure(key in examples.get(name, set()), f"{where} refers optionally to {name}/{key}, which no k8s/examples Secret shows")
    optional_names = {name for _, name, _ in optional}
    examples = {k: v for k, v in examples.items() if k not in optional_names}
    if examples:
        ensure(examples == created, f"k8s/examples Secrets {examples} differ from those tools/deploy.sh creates {created}")


@check("connection-strings-match-services")
def _(ctx: Context) -> None:
    # Redis: host:port of the URL built by tools/deploy.sh is the Redis Service.
    hostport = ctx.deploy_var("REDIS_HOSTPORT")
    host, _, port = hostport.partition(":")
    svc = ctx.get("Service", host).doc["spec"]
    ensure(int(port) in [p["port"] for p in svc["ports"]], f"REDIS_HOSTPORT {hostport}: Service/{host} has no port {port}")
    ensure(selector_matches(svc["selector"], ctx.workload("Deployment", "redis").pod_labels), f"Service/{host} does not select Redis")
    ensure(re.search(r'redis://:\$\(urlencode "\$redis_password"\)@\$\{REDIS_HOSTPORT\}/0', ctx.deploy_sh),
           "tools/deploy.sh must build the Redis URL as redis://:<password>@${REDIS_HOSTPORT}/0")
    # MongoDB: the seed list is <statefulset>-<i>.<headless service>:<port> for every member.
    mongo = ctx.workload("StatefulSet", "mongodb")
    msvc = ctx.get("Service", mongo.obj.doc["spec"]["serviceName"])
    mport = resolve_port(mongo, "mongodb")
    ensure(any(p["port"] == mport for p in msvc.doc["spec"]["ports"]), f"Service/{msvc.name} does not expose {mport}")
    expected = ",".join(f"{mongo.name}-{i}.{msvc.name}:{mport}" for i in range(mongo.replicas))
    ensure(ctx.deploy_var("MONGO_HOSTS") == expected, f"tools/deploy.sh MONGO_HOSTS={ctx.deploy_var('MONGO_HOSTS')}; the StatefulSet gives {expected}")
    args = mongo.container("mongodb").get("args", [])
    ensure("--replSet" in args, "mongod is started without --replSet")
    rs = args[args.index("--replSet") + 1]
    ensure(ctx.deploy_var("MONGO_REPLICA_SET") == rs, f"MONGO_REPLICA_SET {ctx.deploy_var('MONGO_REPLICA_SET')} != mongod --replSet {rs}")
    ensure("--keyFile" in args, "mongod is started without --keyFile (internal authentication)")
    keyfile = args[args.index("--keyFile") + 1]
    mounts = [m["mountPath"] for m in mongo.container("mongodb").get("volumeMounts", [])]
    ensure(any(keyfile.startswith(m.rstrip("/") + "/") for m in mounts), f"the keyFile {keyfile} is not on a mounted volume")
    job = ctx.workload("Job", "mongodb-init")
    jenv = literal_env(job.containers[0])
    ensure(jenv.get("RS_NAME") == rs, f"init Job RS_NAME={jenv.get('RS_NAME')} != --replSet {rs}")
    ensure(jenv.get("RS_MEMBERS") == expected, f"init Job RS_MEMBERS={jenv.get('RS_MEMBERS')} != {expected}")
    ensure(jenv.get("APP_DATABASE") == ctx.deploy_var("MONGO_DATABASE"),
           f"init Job APP_DATABASE={jenv.get('APP_DATABASE')} != tools/deploy.sh MONGO_DATABASE={ctx.deploy_var('MONGO_DATABASE')}")
    ensure(re.search(r"@\$\{MONGO_HOSTS\}/\$\{MONGO_DATABASE\}\?replicaSet=\$\{MONGO_REPLICA_SET\}&authSource=admin", ctx.deploy_sh),
           "tools/deploy.sh must build MONGO_URI as ...@${MONGO_HOSTS}/${MONGO_DATABASE}?replicaSet=${MONGO_REPLICA_SET}&authSource=admin")
    ensure(mongo.container("mongodb").get("image") == job.containers[0].get("image"),
           "the init Job must use the members' mongo image (same mongosh)")


@check("server-ports-consistent")
def _(ctx: Context) -> None:
    c = ctx.server_container
    ports = {p.get("name"): int(p["containerPort"]) for p in c.get("ports", [])}
    ensure(ports.get("http") == 8080, f"the server container must declare port 8080 named http, has {ports}")
    ensure(literal_env(c).get("PORT") == str(ports["http"]), f"PORT env {literal_env(c).get('PORT')} != containerPort {ports['http']}")
    exposed = [p.split("/")[0] for a in ctx.dockerfile.final_instr("EXPOSE") for p in a.split()]
    ensure(exposed == [str(ports["http"])], f"docker/Dockerfile EXPOSE {exposed} != containerPort {ports['http']}")
    ann = ctx.server.template.get("metadata", {}).get("annotations", {}) or {}
    ensure(ann.get("prometheus.io/scrape") == "true", "the server pods need prometheus.io/scrape: \"true\"")
    ensure(ann.get("prometheus.io/port") == str(admin_port(ctx)),
           f"prometheus.io/port {ann.get('prometheus.io/port')} != the admin port {admin_port(ctx)} (/metrics is not on the public port)")
    ensure(ann.get("prometheus.io/path") == "/metrics", "prometheus.io/path must be /metrics")
    for svc_name in ("websocket-service", "websocket-external"):
        svc = ctx.get("Service", svc_name).doc["spec"]
        ensure(any(p["port"] == 8080 for p in svc["ports"]), f"Service/{svc_name} must expose port 8080")


@check("server-probes")
def _(ctx: Context) -> None:
    c = ctx.server_container
    names = {p.get("name") for p in c.get("ports", [])}
    for probe, path in (("livenessProbe", "/health"), ("readinessProbe", "/ready")):
        http = (c.get(probe) or {}).get("httpGet")
        ensure(http, f"the server container has no {probe}.httpGet")
        ensure(http.get("port") in names, f"{probe} uses port {http.get('port')!r}, not a named container port {sorted(names)}")
        ensure(http.get("path") == path, f"{probe} path {http.get('path')!r}, expected {path}")
        ensure(resolve_port(ctx.server, http["port"]) == admin_port(ctx),
               f"{probe} uses port {http['port']!r}, not the admin port {admin_port(ctx)} (ADMIN_PORT)")


@check("server-workers-match-cpu-limit")
def _(ctx: Context) -> None:
    c = ctx.server_container
    limit = (c.get("resources") or {}).get("limits", {}).get("cpu")
    ensure(limit is not None, "the server container has no CPU limit")
    workers = int(literal_env(c)["WORKERS"])
    ensure(workers == max(1, math.ceil(cpu_cores(limit))), f"WORKERS={workers} but the CPU limit is {limit}")


@check("server-statefulset-shape")
def _(ctx: Context) -> None:
    spec = ctx.server.obj.doc["spec"]
    ensure(spec.get("replicas") == 2, "the server StatefulSet starts with replicas: 2")
    ensure(spec.get("podManagementPolicy") == "Parallel", "the server StatefulSet needs podManagementPolicy: Parallel")
    ensure(ctx.server.pod_labels.get("app") == "websocket-server", "server pods must be labelled app: websocket-server")
    c = ctx.server_container
    ensure(c.get("image") == ctx.deploy_var("IMAGE"), f"server image {c.get('image')} != tools/deploy.sh IMAGE {ctx.deploy_var('IMAGE')}")
    ensure(c.get("imagePullPolicy") == "IfNotPresent", "the locally built image needs imagePullPolicy: IfNotPresent")
    aff = (ctx.server.pod_spec.get("affinity") or {}).get("podAntiAffinity") or {}
    ensure(not aff.get("requiredDuringSchedulingIgnoredDuringExecution"),
           "required anti-affinity would stop the HPA at one pod per node; spread with topologySpreadConstraints")
    # tools/deploy.sh applies this file through awk: the line "  replicas: N"
    # becomes the current count (the HPA's choice is kept) and the image ID
    # goes under the line "      annotations:" (a rebuilt image rolls the
    # pods). Do the same here and check that exactly those two fields change.
    ensure("/^  replicas: [0-9]+$/" in ctx.deploy_sh and "/^      annotations:$/" in ctx.deploy_sh,
           "tools/deploy.sh no longer rewrites '  replicas: N' and '      annotations:' (see apply_server_statefulset)")
    with open(os.path.join(ctx.root, ctx.server.obj.path), encoding="utf-8") as f:
        text = f.read()
    out = []
    for ln in text.splitlines():
        if re.fullmatch(r"  replicas: [0-9]+", ln):
            out.append("  replicas: 7")
            continue
        out.append(ln)
        if ln == "      annotations:":
            out.append('        websocket-chat/image-id: "sha256:0"')
    got = yaml.safe_load("\n".join(out))
    ensure(got["spec"].get("replicas") == 7,
           f"{ctx.server.obj.path}: tools/deploy.sh's rewrite of '  replicas: N' does not reach spec.replicas")
    ann = got["spec"]["template"].get("metadata", {}).get("annotations") or {}
    ensure(ann.get("websocket-chat/image-id") == "sha256:0",
           f"{ctx.server.obj.path}: tools/deploy.sh's image-ID line does not land in the pod template's annotations")
    got["spec"]["replicas"] = spec["replicas"]
    del ann["websocket-chat/image-id"]
    ensure(got == ctx.server.obj.doc, f"{ctx.server.obj.path}: tools/deploy.sh's rewrite changes more than replicas and the image ID")


def shutdown_tail(ctx: Context) -> tuple[int, str]:
    """Seconds the server may take after its drain window (the sum of the
    SHUTDOWN_TAIL constants) and a readable breakdown."""
    total, parts = 0.0, []
    for rel, const, what in SHUTDOWN_TAIL:
        path = os.path.join(ctx.cargo_root, rel)
        with open(path, encoding="utf-8") as f:
            src = f.read()
        m = re.search(r"\bconst %s: Duration = Duration::from_(secs|millis)\((\d+)\)" % const, src)
        ensure(m, f"{rel}: no `const {const}: Duration = Duration::from_secs(N)` ({what}); "
                  "the shutdown budget check reads it: update SHUTDOWN_TAIL in this file")
        secs = int(m.group(2)) / (1000 if m.group(1) == "millis" else 1)
        total += secs
        parts.append(f"{what} {secs:g}")
    return math.ceil(total), " + ".join(parts)


def drain_env(ctx: Context) -> tuple[int, int]:
    env = literal_env(ctx.server_container)
    for n in ("DRAIN_DELAY_SECS", "DRAIN_WINDOW_SECS"):
        ensure(env.get(n, "").isdigit(), f"the server container must set {n} to a literal number of seconds")
    return int(env["DRAIN_DELAY_SECS"]), int(env["DRAIN_WINDOW_SECS"])


@check("shutdown-budget")
def _(ctx: Context) -> None:
    c = ctx.server_container
    grace = int(ctx.server.pod_spec.get("terminationGracePeriodSeconds", 30))
    pre = prestop_seconds(c)
    ensure(pre > 0, "the server needs a preStop sleep so endpoint removal propagates before draining")
    delay, window = drain_env(ctx)
    tail, how = shutdown_tail(ctx)
    need = pre + delay + window + tail
    ensure(need + GRACE_MARGIN <= grace,
           f"preStop {pre} + DRAIN_DELAY_SECS {delay} + DRAIN_WINDOW_SECS {window} + tail {tail} ({how}) = {need} s, "
           f"plus a margin of {GRACE_MARGIN} s, > terminationGracePeriodSeconds {grace} s: the kubelet would SIGKILL a "
           "worst-case drain")
    ensure(grace <= need + GRACE_MARGIN_MAX,
           f"terminationGracePeriodSeconds {grace} s is more than {GRACE_MARGIN_MAX} s above the worst-case drain ({need} s): "
           "a hung pod would hold node drains and rollouts that long")


@check("resources-everywhere")
def _(ctx: Context) -> None:
    for w in ctx.workloads():
        for c in w.all_containers:
            r = c.get("resources") or {}
            for res in ("cpu", "memory"):
                req = (r.get("requests") or {}).get(res)
                lim = (r.get("limits") or {}).get(res)
                ensure(req is not None and lim is not None, f"{w.name}/{c['name']}: needs {res} request and limit")
                conv = cpu_cores if res == "cpu" else mem_bytes
                ensure(conv(req) <= conv(lim), f"{w.name}/{c['name']}: {res} request {req} > limit {lim}")


@check("security-contexts")
def _(ctx: Context) -> None:
    for w in ctx.workloads():
        ps = w.pod_spec
        psc = ps.get("securityContext") or {}
        ensure(ps.get("automountServiceAccountToken") is False, f"{w.name}: automountServiceAccountToken: false (no pod talks to the API)")
        ensure(psc.get("runAsNonRoot") is True, f"{w.name}: runAsNonRoot: true")
        ensure(isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] > 0, f"{w.name}: numeric non-zero runAsUser")
        ensure((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{w.name}: seccompProfile RuntimeDefault")
        for c in w.all_containers:
            sc = c.get("securityContext") or {}
            where = f"{w.name}/{c['name']}"
            ensure(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation: false")
            ensure(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem: true")
            ensure((sc.get("capabilities") or {}).get("drop") == ["ALL"], f"{where}: capabilities.drop: [ALL]")
            ensure(not (sc.get("capabilities") or {}).get("add"), f"{where}: adds capabilities")
            ensure(not sc.get("privileged"), f"{where}: privileged")
    psc = ctx.server.pod_spec["securityContext"]
    ensure(psc.get("runAsUser") == 10001, "the server runs as uid 10001")


@check("dockerfile-contract")
def _(ctx: Context) -> None:
    df = ctx.dockerfile
    ensure(len(df.stages) >= 2, "docker/Dockerfile must be multi-stage")
    users = df.final_instr("USER")
    ensure(users, "the runtime stage sets no USER")
    user = users[-1]
    uid, _, gid = user.partition(":")
    ensure(uid.isdigit(), f"USER {user!r} must be numeric so the kubelet can verify runAsNonRoot")
    psc = ctx.server.pod_spec["securityContext"]
    ensure(int(uid) == psc.get("runAsUser"), f"Dockerfile USER {uid} != runAsUser {psc.get('runAsUser')}")
    if gid:
        ensure(gid.isdigit() and int(gid) == psc.get("runAsGroup"), f"Dockerfile group {gid} != runAsGroup {psc.get('runAsGroup')}")
    ensure(not df.all_instr("HEALTHCHECK"), "no HEALTHCHECK: Kubernetes probes do that")
    ep = df.final_instr("ENTRYPOINT")
    ensure(ep, "no ENTRYPOINT in the runtime stage")
    ep_list = json.loads(ep[-1])
    ensure(ep_list == ["/usr/local/bin/websocket-server"], f"ENTRYPOINT {ep_list}")
    copies = df.final_instr("COPY")
    ensure(len(copies) == 1 and copies[0].startswith("--from="), f"the runtime stage must copy only the built binary, copies {copies}")
    ensure(copies[0].split()[-1] == ep_list[0], "the binary is not copied to the ENTRYPOINT path")
    build = " ".join(df.all_instr("RUN"))
    ensure(re.search(r"cargo build (--release|--profile image) --locked -p websocket-server", build),
           "build with cargo build --profile image (or --release) --locked -p websocket-server")
    ensure("bookworm" in df.stages[0]["from"], f"build stage {df.stages[0]['from']} must be Debian 12 (bookworm) to match the runtime glibc")
    # Every workspace member's manifest is copied for the dependency layer.
    import tomllib
    with open(os.path.join(ctx.cargo_root, "Cargo.toml"), "rb") as f:
        workspace = tomllib.load(f)["workspace"]
    members = workspace["members"]
    # The OCI labels a registry shows: the crate's version and licence.
    labels = {}
    for args in df.final_instr("LABEL"):
        for k, v in re.findall(r'([\w.-]+)=("(?:[^"\\]|\\.)*"|\S+)', args):
            labels[k] = v[1:-1] if v.startswith('"') else v
    with open(os.path.join(ctx.cargo_root, "server/Cargo.toml"), "rb") as f:
        version = tomllib.load(f)["package"]["version"]
    oci = "org.opencontainers.image."
    ensure(labels.get(oci + "version") == version, f"label {oci}version {labels.get(oci + 'version')!r} != the crate's {version}")
    license = workspace["package"]["license"]
    ensure(labels.get(oci + "licenses") == license, f"label {oci}licenses {labels.get(oci + 'licenses')!r} != {license}")
    for key in ("title", "source", "revision"):
        ensure(labels.get(oci + key), f"the runtime stage sets no {oci}{key} label")
    copied = " ".join(df.all_instr("COPY"))
    # `COPY . …` copies the whole build context, every manifest included
    # (dockerignore-keeps-build-inputs checks that .dockerignore sends them).
    whole_context = "." in context_copy_sources(df)
    # A member's sources are copied by a COPY of its directory or of a
    # directory holding it (`COPY server server` brings server/mongo).
    sources = [s for s in context_copy_sources(df) if s != "."]
    for m in members:
        ensure(whole_context or f"{m}/Cargo.toml" in copied,
               f"docker/Dockerfile does not copy {m}/Cargo.toml (workspace member)")
        ensure(any(m == s or m.startswith(s + "/") for s in sources), f"docker/Dockerfile does not copy the sources of {m}")


def dockerignore_rules(root: str) -> list[tuple[bool, re.Pattern]]:
    """The .dockerignore patterns as (is_exception, regex), in order."""
    rules = []
    path = os.path.join(root, ".dockerignore")
    if not os.path.exists(path):
        return rules
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            neg = line.startswith("!")
            pat = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            rx, i = "", 0
            while i < len(pat):
                if pat.startswith("**/", i):
                    rx, i = rx + "(?:.*/)?", i + 3
                elif pat.startswith("**", i):
                    rx, i = rx + ".*", i + 2
                elif pat[i] == "*":
                    rx, i = rx + "[^/]*", i + 1
                elif pat[i] == "?":
                    rx, i = rx + "[^/]", i + 1
                else:
                    rx, i = rx + re.escape(pat[i]), i + 1
            rules.append((neg, re.compile(rx)))
    return rules


def docker_context_has(rules: list[tuple[bool, re.Pattern]], rel: str) -> bool:
    """Whether `docker build .` sends the file rel: the last pattern that
    matches it or one of its parent directories decides."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for neg, rx in rules:
        if any(rx.fullmatch(p) for p in prefixes):
            excluded = not neg
    return not excluded


def context_copy_sources(df: Dockerfile) -> list[str]:
    """The build-context paths the Dockerfile's COPY and ADD instructions
    copy (not those --from another stage), normalised ("." is the whole
    context)."""
    sources = []
    for stage in df.stages:
        for instr, args in stage["instructions"]:
            if instr in ("COPY", "ADD") and "--from=" not in args:
                sources += [os.path.normpath(a) for a in args.split()[:-1] if not a.startswith("--")]
    return sources


@check("dockerignore-keeps-build-inputs")
def _(ctx: Context) -> None:
    rules = dockerignore_rules(ctx.root)
    ensure(rules, ".dockerignore is missing or empty: the whole repository (target/, .git, venvs) would be the build context")
    sources = context_copy_sources(ctx.dockerfile)
    ensure(sources, "docker/Dockerfile copies nothing from the build context")
    for src in sources:
        if src == ".":
            # The whole context: whatever .dockerignore sends, which must
            # hold the workspace's manifests and lockfile.
            import tomllib
            with open(os.path.join(ctx.cargo_root, "Cargo.toml"), "rb") as f:
                members = tomllib.load(f)["workspace"]["members"]
            for rel in ["Cargo.toml", "Cargo.lock"] + [f"{m}/Cargo.toml" for m in members]:
                ensure(docker_context_has(rules, rel), f".dockerignore leaves out {rel}, which the build needs")
            continue
        ensure(docker_context_has(rules, src), f".dockerignore leaves out {src}, which docker/Dockerfile copies")
        top = os.path.join(ctx.cargo_root, src)
        if os.path.isdir(top):
            # The crate's sources and what they embed (include_bytes! of
            # static/): every file under src/ and static/ must be sent.
            for sub in ("src", "static"):
                for dirpath, _, files in os.walk(os.path.join(top, sub)):
                    for name in files:
                        rel = os.path.relpath(os.path.join(dirpath, name), ctx.cargo_root)
                        ensure(docker_context_has(rules, rel), f".dockerignore leaves out {rel}, which the build needs")
    for junk in ("target/release/websocket-server", ".git/HEAD", ".venv-k8s/bin/python", "bench-results/x.json",
                 "tools/browser/node_modules/x.js", "server/fuzz/target/x", ".localcluster/x.log"):
        ensure(not docker_context_has(rules, junk), f".dockerignore lets {junk} into the build context")


_RUST_VERSION_CACHE: dict[str, tuple[tuple[int, int], str | None]] = {}


def newest_rust_version(cargo_root: str) -> tuple[tuple[int, int], str | None]:
    """The highest rust-version of any package in the lockfile's graph, and
    which package asks for it (cargo metadata; cached per workspace, as the
    mutation test runs this check many times)."""
    if cargo_root in _RUST_VERSION_CACHE:
        return _RUST_VERSION_CACHE[cargo_root]
    out = None
    for extra in (["--offline"], []):
        try:
            out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--locked", *extra],
                                 cwd=cargo_root, capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            raise CheckFailed("cargo not found (needed to read the dependencies' rust-version)")
        if out.returncode == 0:
            break
    ensure(out is not None and out.returncode == 0, f"cargo metadata failed: {out.stderr[-300:] if out else ''}")
    need, who = (0, 0), None
    for p in json.loads(out.stdout)["packages"]:
        rv = p.get("rust_version")
        if rv:
            v = tuple(int(x) for x in rv.split(".")[:2])
            if v > need:
                need, who = v, f"{p['name']} {p['version']}"
    _RUST_VERSION_CACHE[cargo_root] = (need, who)
    return need, who


@check("dockerfile-toolchain-new-enough")
def _(ctx: Context) -> None:
    m = re.search(r"rust:(\d+)\.(\d+)", ctx.dockerfile.stages[0]["from"])
    ensure(m, f"the build stage {ctx.dockerfile.stages[0]['from']} does not pin a rust:MAJOR.MINOR toolchain")
    have = (int(m.group(1)), int(m.group(2)))
    need, who = newest_rust_version(ctx.cargo_root)
    ensure(have >= need, f"the build stage has Rust {have[0]}.{have[1]} but {who} needs {need[0]}.{need[1]}")


@check("connections-hpa-metric-documented")
def _(ctx: Context) -> None:
    metric = connections_metric(ctx)
    path = os.path.join(ctx.root, "docs/kubernetes.md")
    ensure(os.path.exists(path), "docs/kubernetes.md is missing (it documents the optional HPA's adapter rule)")
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    ensure(re.search(r"seriesQuery:.*\b%s\b" % re.escape(metric), doc),
           f"docs/kubernetes.md must show the prometheus-adapter rule (seriesQuery) for {metric}")
    ensure(re.search(r"(?m)^\s*as:\s*[\"']?%s[\"']?\s*$" % re.escape(metric), doc),
           f"docs/kubernetes.md: the adapter rule must expose the metric under the name the HPA asks for ({metric})")


@check("docs-secret-recipe-works")
def _(ctx: Context) -> None:
    """The README's and docs/kubernetes.md's commands that fill the example
    Secrets with generated passwords, run as written (minus kubectl)."""
    created = ctx.deploy_secrets()
    for doc in ("README.md", "docs/kubernetes.md"):
        with open(os.path.join(ctx.root, doc), encoding="utf-8") as f:
            lines = f.read().splitlines()
        start = [i for i, ln in enumerate(lines) if ln.strip().startswith("redis_pw=$(")]
        ensure(len(start) == 1, f"{doc}: expected one recipe for the Secrets (a line starting redis_pw=$(...), found {len(start)}")
        end = start[0]
        while end < len(lines) and 'secrets.example.yaml >"$secrets"' not in lines[end]:
            end += 1
        ensure(end < len(lines), f"{doc}: the Secrets recipe does not end with ... k8s/examples/secrets.example.yaml >\"$secrets\"")
        script = "\n".join(lines[start[0]:end + 1])
        out = subprocess.run(["bash", "-c", "set -euo pipefail\n" + script + '\ncat "$secrets"; rm -f "$secrets"'],
                             cwd=ctx.root, capture_output=True, text=True, timeout=60)
        ensure(out.returncode == 0, f"{doc}: the Secrets recipe failed: {out.stderr.strip()[:300]}")
        docs = [d for d in yaml.safe_load_all(out.stdout) if d]
        got = {d["metadata"]["name"]: d.get("stringData") or {} for d in docs}
        ensure({k: set(v) for k, v in got.items()} == created,
               f"{doc}: the recipe makes Secrets {sorted(got)} with other keys than tools/deploy.sh creates")
        for name, data in got.items():
            for key, value in data.items():
                ensure(value and "REPLACE" not in str(value), f"{doc}: the recipe leaves {name}/{key} empty or unfilled")
        redis, mongo = got["redis-secret"], got["mongodb-secret"]
        ensure(f":{redis['password']}@" in redis["url"], f"{doc}: the recipe's Redis URL does not carry the Redis password")
        ensure(f"{mongo['app-username']}:{mongo['app-password']}@" in mongo["uri"],
               f"{doc}: the recipe's MongoDB URI does not carry the application user's password")
        ensure(re.fullmatch(r"[A-Za-z0-9+/=]{6,1024}", mongo["keyfile"]), f"{doc}: the recipe's keyfile is not 6-1024 base64 characters")


def connections_metric(ctx: Context) -> str:
    opt = [o for o in ctx.objs if o.kind == "HorizontalPodAutoscaler" and not o.default_set]
    ensure(len(opt) == 1, f"expected one optional HPA under k8s/optional, found {len(opt)}")
    pods = [m for m in opt[0].doc["spec"]["metrics"] if m["type"] == "Pods"]
    ensure(len(pods) == 1, "the optional HPA must have one Pods metric")
    ensure(pods[0]["pods"]["target"]["type"] == "AverageValue", "the Pods metric target must be an AverageValue")
    return pods[0]["pods"]["metric"]["name"]


def admin_port(ctx: Context) -> int:
    """The server's ADMIN_PORT: a literal, a declared container port named
    admin, and not the public port."""
    c = ctx.server_container
    lit = literal_env(c).get("ADMIN_PORT", "")
    ensure(lit.isdigit(), "the server container must set ADMIN_PORT to a literal port (the kubelet and Prometheus use it)")
    ports = {p.get("name"): int(p["containerPort"]) for p in c.get("ports", [])}
    ensure(ports.get("admin") == int(lit), f"ADMIN_PORT {lit} must be the container port named admin, have {ports}")
    ensure(int(lit) != ports.get("http"), "ADMIN_PORT must differ from the public port")
    return int(lit)


@check("admin-port-private")
def _(ctx: Context) -> None:
    port = admin_port(ctx)
    svc = ctx.get("Service", "websocket-external").doc["spec"]
    for p in svc["ports"]:
        tp = p.get("targetPort", p["port"])
        ensure(tp != "admin" and resolve_port(ctx.server, tp) != port and p["port"] != port,
               f"websocket-external exposes the admin port ({p}): /metrics would be public again")
    # Every rule that opens the admin port names the namespaces it admits;
    # none admits any source (no "from"), an address block, or every namespace.
    opened = False
    for pol in ctx.default("NetworkPolicy"):
        spec = pol.doc["spec"]
        if not selector_matches(spec.get("podSelector", {}), ctx.server.pod_labels):
            continue
        for rule in spec.get("ingress") or []:
            ports = rule.get("ports")
            covers = not ports or any(resolve_port(ctx.server, pp["port"]) == port for pp in ports if "port" in pp)
            if not covers:
                continue
            opened = True
            peers = rule.get("from") or []
            ensure(peers, f"NetworkPolicy/{pol.name} opens the admin port {port} to any source")
            for peer in peers:
                ensure("ipBlock" not in peer, f"NetworkPolicy/{pol.name} opens the admin port {port} to an address block")
                ns = (peer.get("namespaceSelector") or {}).get("matchLabels")
                ensure(ns, f"NetworkPolicy/{pol.name} opens the admin port {port} to {peer}: name the monitoring namespace")
    ensure(opened, f"no NetworkPolicy opens the admin port {port}: Prometheus could not scrape /metrics")


@check("server-spread")
def _(ctx: Context) -> None:
    tsc = ctx.server.pod_spec.get("topologySpreadConstraints") or []
    by_key = {t["topologyKey"]: t for t in tsc}
    for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone"):
        t = by_key.get(key)
        ensure(t, f"the server pods need a topologySpreadConstraint on {key}")
        ensure(selector_matches(t.get("labelSelector"), ctx.server.pod_labels),
               f"the {key} spread constraint's selector does not match the server pods")
        ensure(t.get("maxSkew") == 1, f"the {key} spread constraint needs maxSkew 1")
    zone = by_key["topology.kubernetes.io/zone"]
    ensure(zone.get("whenUnsatisfiable") == "ScheduleAnyway",
           "the zone spread must be ScheduleAnyway: nodes without a zone label (minikube) would take no server pod")
    host = by_key["kubernetes.io/hostname"]
    if host.get("whenUnsatisfiable") == "DoNotSchedule":
        ensure(host.get("nodeTaintsPolicy") == "Honor",
               "a DoNotSchedule node spread must honour taints, or an empty control-plane node holds the others back")


def parse_image(ref: str) -> tuple[str, str, str | None]:
    """(repository, tag, digest or None) of an image reference."""
    name, _, digest = ref.partition("@")
    repo, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "")
    return repo, tag, digest or None


@check("images-pinned")
def _(ctx: Context) -> None:
    """Every image pulled from a registry names its patch release and its
    digest, of a line with no known vulnerability; the mongo image is the
    same everywhere (members, init container, init Job)."""
    seen: dict[str, set[str]] = {}
    for w in ctx.workloads():
        for c in w.all_containers:
            ref = c["image"]
            if w.key == SERVER_WORKLOAD and c["name"] == SERVER_CONTAINER:
                continue  # built by tools/deploy.sh, never pulled
            repo, tag, digest = parse_image(ref)
            where = f"{w.name}/{c['name']}"
            ensure(digest and re.fullmatch(r"sha256:[0-9a-f]{64}", digest),
                   f"{where}: image {ref} is not pinned by digest (tag@sha256:...)")
            m = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)(-[a-z0-9.]+)?", tag)
            ensure(m, f"{where}: image {ref} does not name a patch release (MAJOR.MINOR.PATCH)")
            base = repo.rsplit("/", 1)[-1]
            ensure(base in IMAGE_LINES, f"{where}: image {ref} is not one the contract knows (IMAGE_LINES)")
            line, min_patch = IMAGE_LINES[base]
            ensure((int(m.group(1)), int(m.group(2))) == line,
                   f"{where}: {ref} is not on the {line[0]}.{line[1]} line the deployment is tested with")
            ensure(int(m.group(3)) >= min_patch,
                   f"{where}: {ref} is older than {line[0]}.{line[1]}.{min_patch}, which fixes a known vulnerability")
            seen.setdefault(base, set()).add(ref)
    ensure(set(seen) == set(IMAGE_LINES), f"expected mongo and redis images, found {sorted(seen)}")
    ensure(len(seen["mongo"]) == 1, f"the mongo containers use different images: {sorted(seen['mongo'])}")
    path = os.path.join(ctx.root, "docs/kubernetes.md")
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    for refs in seen.values():
        tag = parse_image(next(iter(refs)))[1]
        ensure(re.search(r":%s\b" % re.escape(tag), doc), f"docs/kubernetes.md does not name the pinned tag {tag}")
    ensure("imagetools inspect" in doc, "docs/kubernetes.md must say how to find a newer tag's digest (imagetools inspect)")


# The states a member's `hello` reports, and whether it holds a usable copy.
MEMBER_STATES = {
    "PRIMARY": ({"isWritablePrimary": True, "secondary": False, "setName": "rs0"}, True),
    "SECONDARY": ({"isWritablePrimary": False, "secondary": True, "setName": "rs0"}, True),
    "STARTUP2 (initial sync)": ({"isWritablePrimary": False, "secondary": False, "setName": "rs0"}, False),
    "not yet in a replica set": ({"isWritablePrimary": False, "secondary": False}, False),
}


def run_probe_js(js: str, hello: dict) -> int:
    """Runs a probe's mongosh --eval JavaScript with node against a member
    whose hello() and ping answer as given; returns its exit status."""
    stub = (
        "const hello = %s;\n"
        "const db = { hello: () => hello, adminCommand: (c) => (c.ping ? { ok: 1 } : { ok: 0 }),"
        " isMaster: () => hello };\n"
        "const rs = { status: () => { throw new Error('rs.status needs authentication'); } };\n"
        "function quit(code) { process.exit(code === undefined ? 0 : code); }\n"
    ) % json.dumps(hello)
    try:
        out = subprocess.run(["node", "-e", stub + js + "\n;process.exit(0);"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise CheckFailed("node is needed to run the MongoDB probes' JavaScript (Debian: apt-get install nodejs)")
    return out.returncode


def mongosh_js(probe: dict, what: str) -> str:
    cmd = ((probe or {}).get("exec") or {}).get("command") or []
    ensure(cmd[:1] == ["mongosh"] and "--eval" in cmd, f"the MongoDB {what} is not `mongosh ... --eval JS`: {cmd}")
    return cmd[cmd.index("--eval") + 1]


@check("mongodb-readiness-primary-or-secondary")
def _(ctx: Context) -> None:
    """Readiness is PRIMARY or SECONDARY (the PDB and rolling updates count
    ready members); liveness and startup only ask whether mongod answers
    (a member in its initial sync must not be restarted)."""
    c = ctx.workload("StatefulSet", "mongodb").container("mongodb")
    ready_js = mongosh_js(c.get("readinessProbe"), "readinessProbe")
    for state, (hello, usable) in MEMBER_STATES.items():
        code = run_probe_js(ready_js, hello)
        ensure((code == 0) == usable, f"the MongoDB readiness probe exits {code} for a member in state {state}")
    for probe in ("livenessProbe", "startupProbe"):
        js = mongosh_js(c.get(probe), probe)
        code = run_probe_js(js, MEMBER_STATES["STARTUP2 (initial sync)"][0])
        ensure(code == 0, f"the MongoDB {probe} fails ({code}) for a member in its initial sync: it would be restarted")


@check("init-job-tracks-its-script")
def _(ctx: Context) -> None:
    """The init Job's pod template carries the sha256 of its script, so a
    changed script changes the Job and tools/deploy.sh runs it again."""
    job = ctx.workload("Job", "mongodb-init")
    cms = {v["configMap"]["name"] for v in job.pod_spec.get("volumes", []) if "configMap" in v}
    ensure(len(cms) == 1, f"the init Job mounts {sorted(cms)}, expected its one script ConfigMap")
    data = ctx.get("ConfigMap", next(iter(cms))).doc.get("data") or {}
    scripts = {k: v for k, v in data.items() if k.endswith(".sh")}
    ensure(len(scripts) == 1, f"expected one script in ConfigMap {next(iter(cms))}, found {sorted(scripts)}")
    want = hashlib.sha256(next(iter(scripts.values())).encode()).hexdigest()
    got = (job.template.get("metadata", {}).get("annotations") or {}).get("websocket-chat/init-script-sha256")
    ensure(got == want, f"the init Job's annotation websocket-chat/init-script-sha256 is {got!r}; the script's sha256 is "
                        f"{want}: put that there, so that the changed script runs again")
    ensure("field is immutable" in ctx.deploy_sh, "tools/deploy.sh no longer re-creates a changed init Job")


def sts_shape(w: Workload) -> str:
    spec = w.obj.doc["spec"]
    claims = "".join(f"{t['metadata']['name']}={t['spec']['resources']['requests']['storage']},"
                     for t in spec.get("volumeClaimTemplates") or [])
    return f"{spec.get('podManagementPolicy', 'OrderedReady')}|{spec.get('serviceName', '')}|{claims}"


@check("deploy-detects-foreign-install")
def _(ctx: Context) -> None:
    """tools/deploy.sh compares the live StatefulSets' immutable fields and
    Deployments with these literals before changing anything."""
    for var, name in (("MONGO_STS_SHAPE", "mongodb"), ("SERVER_STS_SHAPE", "websocket-server")):
        want = sts_shape(ctx.workload("StatefulSet", name))
        ensure(ctx.deploy_var(var) == want, f"tools/deploy.sh {var}={ctx.deploy_var(var)!r}, but k8s/ gives {want!r}")
    deployments = sorted(w.name for w in ctx.workloads() if w.kind == "Deployment")
    ensure(sorted(ctx.deploy_var("DEPLOYMENTS").split()) == deployments,
           f"tools/deploy.sh DEPLOYMENTS={ctx.deploy_var('DEPLOYMENTS')!r}, k8s/ has {deployments}")
    ensure(re.search(r"^\s*check_existing_install\s*$", ctx.deploy_sh, re.M), "tools/deploy.sh never calls check_existing_install")
    ensure(ctx.deploy_sh.index("check_existing_install\n") < ctx.deploy_sh.index('apply "$K8S/00-namespace.yaml"'),
           "tools/deploy.sh must check for a foreign install before it applies anything")


def timeout_secs(text: str) -> int:
    m = re.fullmatch(r"(\d+)(s|m)?", text)
    ensure(m, f"not a timeout: {text!r}")
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


@check("deploy-waits-match-docs")
def _(ctx: Context) -> None:
    """The waits docs/kubernetes.md gives for MongoDB and its init Job are
    those tools/deploy.sh uses, and the connections HPA survives a re-run."""
    with open(os.path.join(ctx.root, "docs/kubernetes.md"), encoding="utf-8") as f:
        doc = f.read()
    m = re.search(r'^MONGO_ROLLOUT_TIMEOUT="\$\{MONGO_ROLLOUT_TIMEOUT:-(\w+)\}"', ctx.deploy_sh, re.M)
    ensure(m, "tools/deploy.sh has no MONGO_ROLLOUT_TIMEOUT default")
    ensure(re.search(r'rollout statefulset/mongodb "\$MONGO_ROLLOUT_TIMEOUT"', ctx.deploy_sh),
           "tools/deploy.sh does not wait for MongoDB with MONGO_ROLLOUT_TIMEOUT")
    d = re.search(r"rollout status statefulset/mongodb .*--timeout=(\w+)", doc)
    ensure(d, "docs/kubernetes.md has no `kubectl rollout status statefulset/mongodb --timeout=...`")
    ensure(timeout_secs(d.group(1)) == timeout_secs(m.group(1)),
           f"docs/kubernetes.md waits {d.group(1)} for MongoDB, tools/deploy.sh {m.group(1)}")
    j = re.search(r'^JOB_TIMEOUT_SECS="\$\{JOB_TIMEOUT_SECS:-(\d+)\}"', ctx.deploy_sh, re.M)
    dj = re.search(r"wait --for=condition=complete job/mongodb-init .*--timeout=(\w+)", doc)
    ensure(j and dj and timeout_secs(dj.group(1)) == int(j.group(1)),
           "docs/kubernetes.md and tools/deploy.sh (JOB_TIMEOUT_SECS) wait differently for the init Job")
    # The optional HPA has the base one's name; a re-run keeps whichever is there.
    opt = [o for o in ctx.objs if o.kind == "HorizontalPodAutoscaler" and not o.default_set][0]
    ensure(f'"$K8S/{opt.path[len("k8s/"):]}"' in ctx.deploy_sh and re.search(r'\*" Pods "\*', ctx.deploy_sh),
           f"tools/deploy.sh must re-apply {opt.path} when the live HPA scales on a Pods metric, not replace it")


# ---------------------------------------------------------------------------
# HTTP checks against the real binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 3.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


class RunningServer:
    """The server binary started with the manifest's literal environment."""

    def __init__(self, ctx: Context):
        c = ctx.server_container
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        env.update(literal_env(c))
        for name in ("REDIS_URL", "MONGO_URI"):
            env.pop(name, None)
        env["POD_NAME"] = "contract-test-0"
        self.port = free_port()
        env["PORT"] = str(self.port)
        # The manifest's port numbers, as names: the admin one on a free port too.
        self.admin_port = free_port() if "ADMIN_PORT" in literal_env(c) else self.port
        env["ADMIN_PORT"] = str(self.admin_port) if "ADMIN_PORT" in literal_env(c) else ""
        self.ports = {p.get("name"): self.port for p in c.get("ports", [])}
        for p in c.get("ports", []):
            if str(p["containerPort"]) == literal_env(c).get("ADMIN_PORT"):
                self.ports[p.get("name")] = self.admin_port
        env["BIND_ADDR"] = "127.0.0.1"
        self.manifest_env = literal_env(c)
        ensure(ctx.server_bin and os.access(ctx.server_bin, os.X_OK), f"server binary not executable: {ctx.server_bin}")
        self.log_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"contract-server-{os.getpid()}-{self.port}.log")
        self.log = open(self.log_path, "w+b")
        self.proc = subprocess.Popen([ctx.server_bin], env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")[-1500:]

    def on(self, port: int | str) -> int:
        """The local port standing for the manifest's port (a name or number)."""
        if isinstance(port, str):
            ensure(port in self.ports, f"no container port named {port!r}")
            return self.ports[port]
        return self.admin_port if str(port) == self.manifest_env.get("ADMIN_PORT") else self.port

    def wait_up(self, path: str, seconds: float = 15.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CheckFailed(f"the server exited with {self.proc.returncode} instead of serving; its output:\n{self.output()}")
            try:
                http_get(self.port, path, timeout=1.0)
                return
            except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
                time.sleep(0.2)
        raise CheckFailed(f"the server did not answer on 127.0.0.1:{self.port} within {seconds}s; output:\n{self.output()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


@check("server-serves-probe-paths-and-metrics", group="http")
def _(ctx: Context) -> None:
    """Each probe answers on the port it names, /metrics on the annotated
    port, and not on the public port the external Service exposes."""
    c = ctx.server_container
    ann = ctx.server.template["metadata"]["annotations"]
    metrics_path = ann["prometheus.io/path"]
    metric = connections_metric(ctx)
    srv = RunningServer(ctx)
    try:
        srv.wait_up(c["livenessProbe"]["httpGet"]["path"])
        for probe in ("livenessProbe", "readinessProbe"):
            get = c[probe]["httpGet"]
            status, body = http_get(srv.on(get["port"]), get["path"])
            ensure(status == 200, f"{probe}: GET {get['path']} on port {get['port']} answered {status}: {body[:200]!r}")
        status, body = http_get(srv.on(int(ann["prometheus.io/port"])), metrics_path)
        ensure(status == 200, f"GET {metrics_path} on prometheus.io/port answered {status}")
        ensure(re.search(r"^%s(\{[^}]*\})?\s+\S+" % re.escape(metric), body, re.M),
               f"GET {metrics_path} has no sample of {metric} (the optional HPA's metric)")
        for p in ctx.get("Service", "websocket-external").doc["spec"]["ports"]:
            public = srv.on(p.get("targetPort", p["port"]))
            status, body = http_get(public, metrics_path)
            ensure(status == 404, f"GET {metrics_path} on the external Service's port answered {status}: metrics are public")
    finally:
        srv.stop()


@check("server-drains-within-budget", group="http")
def _(ctx: Context) -> None:
    c = ctx.server_container
    live = c["livenessProbe"]["httpGet"]["path"]
    ready = c["readinessProbe"]["httpGet"]["path"]
    delay, window = drain_env(ctx)
    tail, _ = shutdown_tail(ctx)
    srv = RunningServer(ctx)
    ready_port = srv.on(c["readinessProbe"]["httpGet"]["port"])
    try:
        srv.wait_up(live)
        status, _ = http_get(ready_port, ready)
        ensure(status == 200, f"GET {ready} answered {status} before SIGTERM")
        srv.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        saw_503 = False
        while time.monotonic() - t0 < max(1.0, delay - 0.5):
            try:
                status, _ = http_get(ready_port, ready, timeout=1.0)
            except (urllib.error.URLError, ConnectionError, OSError):
                break
            if status == 503:
                saw_503 = True
                break
            time.sleep(0.1)
        ensure(saw_503, f"GET {ready} did not turn 503 after SIGTERM (DRAIN_DELAY_SECS={delay})")
        budget = delay + window + tail
        try:
            code = srv.proc.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"the server did not exit within DRAIN_DELAY_SECS + DRAIN_WINDOW_SECS + tail = {budget}s of SIGTERM")
        ensure(code == 0, f"the server exited with {code} after SIGTERM, expected 0; output:\n{srv.output()}")
    finally:
        srv.stop()


# ---------------------------------------------------------------------------
# The optional Redis Cluster (k8s/optional/redis-cluster/) and the patches
# that switch the server to it. Its own loader and checks, so they stay out
# of the default set's (ctx.default()) and of the checks above.

RC_DIR = "k8s/optional/redis-cluster"
RC_NAME = "redis-cluster"  # the StatefulSet, its headless Service and the pods' app label
RC_BUS = 16379
RC_PORT = 6379


@dataclass
class RedisCluster:
    objs: list[Obj]
    patches: dict[str, dict]  # file name -> strategic merge patch

    def one(self, kind: str, name: str | None = None) -> Obj:
        found = [o for o in self.objs if o.kind == kind and (name is None or o.name == name)]
        ensure(len(found) == 1, f"expected one {kind}{'/' + name if name else ''} in {RC_DIR}, found {len(found)}")
        return found[0]

    @property
    def sts(self) -> Workload:
        return Workload(self.one("StatefulSet", RC_NAME))

    @property
    def job(self) -> Workload:
        return Workload(self.one("Job"))

    def script(self, key: str) -> str:
        cms = [o for o in self.objs if o.kind == "ConfigMap" and key in (o.doc.get("data") or {})]
        ensure(len(cms) == 1, f"expected one ConfigMap in {RC_DIR} with {key}, found {len(cms)}")
        return cms[0].doc["data"][key]

    def seeds(self) -> list[str]:
        """<statefulset>-<i>.<headless service> for every node."""
        sts = self.sts
        return [f"{sts.name}-{i}.{sts.obj.doc['spec']['serviceName']}" for i in range(sts.replicas)]


_RC_CACHE: dict[str, RedisCluster] = {}


def redis_cluster(ctx: Context) -> RedisCluster:
    if ctx.root not in _RC_CACHE:
        objs, patches = [], {}
        for path in sorted(glob.glob(os.path.join(ctx.root, RC_DIR, "*.yaml"))):
            with open(path, encoding="utf-8") as f:
                objs += [Obj(os.path.relpath(path, ctx.root), d) for d in yaml.safe_load_all(f) if d]
        for path in sorted(glob.glob(os.path.join(ctx.root, RC_DIR, "patches", "*.yaml"))):
            with open(path, encoding="utf-8") as f:
                patches[os.path.basename(path)] = yaml.safe_load(f)
        ensure(objs, f"no manifests in {RC_DIR}")
        _RC_CACHE[ctx.root] = RedisCluster(objs, patches)
    return _RC_CACHE[ctx.root]


def start_flags(script: str) -> dict[str, str]:
    """The `--name value` pairs of the redis-server command in start.sh."""
    m = re.search(r"exec redis-server(.*?)(?:\n\s*\n|\Z)", script, re.S)
    ensure(m, "start.sh does not `exec redis-server`")
    words = shlex.split(m.group(1).replace("\\\n", " "))
    # The script's own plain assignments (conf=/data/nodes.conf), expanded.
    assigned = dict(re.findall(r"^\s*([a-z_][a-z0-9_]*)=([^\s$\"'`;]+)\s*$", script, re.M))
    flags = {}
    for i, w in enumerate(words):
        if w.startswith("--"):
            v = words[i + 1] if i + 1 < len(words) and not words[i + 1].startswith("--") else ""
            flags[w[2:]] = re.sub(r"\$\{?([a-z_][a-z0-9_]*)\}?", lambda x: assigned.get(x.group(1), x.group(0)), v)
    return flags


def secret_ref(container: dict, name: str) -> tuple[str, str] | None:
    ref = ((env_map(container).get(name) or {}).get("valueFrom") or {}).get("secretKeyRef")
    return (ref["name"], ref["key"]) if ref else None


def apply_env_patch(env: list[dict], patch: dict, container: str) -> list[dict]:
    """Strategic merge of a patch's env list into `env` (merge key: name;
    `$patch: delete` removes an entry), as `kubectl patch` does for a
    container's env."""
    cs = (((patch.get("spec") or {}).get("template") or {}).get("spec") or {}).get("containers") or []
    ours = [c for c in cs if c.get("name") == container]
    ensure(len(ours) == 1, f"the patch does not name the container {container}")
    out = [dict(e) for e in env]
    for item in ours[0].get("env") or []:
        out = [e for e in out if e["name"] != item["name"]]
        if item.get("$patch") != "delete":
            out.append({k: v for k, v in item.items() if k != "$patch"})
    return out


@check("redis-cluster-shape")
def _(ctx: Context) -> None:
    rc = redis_cluster(ctx)
    sts = rc.sts
    ns = ctx.default("Namespace")[0].name
    for o in rc.objs:
        ensure(o.doc.get("metadata", {}).get("namespace") == ns, f"{o.path}: {o.kind}/{o.name} is not in namespace {ns}")
    ensure(sts.replicas >= 6 and sts.replicas % 2 == 0,
           f"StatefulSet/{sts.name}: {sts.replicas} nodes; a cluster of masters with one replica each needs an even number >= 6")
    spec = sts.obj.doc["spec"]
    ensure(spec.get("podManagementPolicy") == "Parallel",
           f"StatefulSet/{sts.name} needs podManagementPolicy: Parallel (its pods are Ready only once the cluster is formed)")
    ensure(selector_matches(spec["selector"], sts.pod_labels), f"StatefulSet/{sts.name}: selector does not match its pods")
    others = [w.name for w in ctx.workloads() + [rc.job] if selector_matches(spec["selector"], w.pod_labels)]
    ensure(not others, f"StatefulSet/{sts.name}: selector also matches the pods of {others}")
    svc = rc.one("Service", spec["serviceName"]).doc["spec"]
    ensure(svc.get("clusterIP") == "None", f"Service/{spec['serviceName']} must be headless")
    ensure(svc.get("publishNotReadyAddresses") is True,
           f"Service/{spec['serviceName']} must publish not-ready addresses: the nodes and the init Job meet before any is Ready")
    ensure(selector_matches(svc.get("selector"), sts.pod_labels), f"Service/{spec['serviceName']} does not select the nodes")
    ports = {p.get("name"): int(p["containerPort"]) for c in sts.containers for p in c.get("ports", [])}
    ensure(ports.get("redis") == RC_PORT and ports.get("bus") == RC_BUS,
           f"the nodes must declare ports redis {RC_PORT} and bus {RC_BUS}, have {ports}")
    for p in svc["ports"]:
        resolve_port(sts, p.get("targetPort", p["port"]))
    flags = start_flags(rc.script("start.sh"))
    ensure(flags.get("cluster-enabled") == "yes", "start.sh does not start redis-server with --cluster-enabled yes")
    ensure(flags.get("port") == str(RC_PORT), f"start.sh: --port {flags.get('port')} != containerPort {RC_PORT}")
    ensure(flags.get("cluster-port") == str(RC_BUS), f"start.sh: --cluster-port {flags.get('cluster-port')} != bus port {RC_BUS}")
    conf, mounts = flags.get("cluster-config-file", ""), [m["mountPath"] for c in sts.containers for m in c.get("volumeMounts", [])]
    ensure(any(conf.startswith(m.rstrip("/") + "/") for m in mounts), f"the cluster config file {conf!r} is not on a mounted volume")
    claims = [t["metadata"]["name"] for t in spec.get("volumeClaimTemplates") or []]
    ensure(any(m["name"] in claims and conf.startswith(m["mountPath"].rstrip("/") + "/")
               for c in sts.containers for m in c.get("volumeMounts", [])),
           f"the cluster config file {conf!r} must be on a volumeClaimTemplate, so a restarted node keeps its identity")
    c = sts.containers[0]
    single = ctx.workload("Deployment", "redis").containers[0].get("image")
    ensure(c.get("image") == single,
           f"the Redis Cluster nodes run {c.get('image')}, the single Redis {single}: one pinned Redis image for both")
    for probe in ("readinessProbe", "livenessProbe"):
        cmd = " ".join(((c.get(probe) or {}).get("exec") or {}).get("command") or [])
        ensure("redis-cli ping" in cmd and "PONG" in cmd, f"the nodes' {probe} must compare an authenticated PING to PONG")
    ready = " ".join(c["readinessProbe"]["exec"]["command"])
    ensure("cluster_state:ok" in ready, "the nodes' readinessProbe must require cluster_state:ok")


@check("redis-cluster-password-from-secret")
def _(ctx: Context) -> None:
    rc = redis_cluster(ctx)
    created = ctx.deploy_secrets()
    c = rc.sts.containers[0]
    ref = secret_ref(c, "REDIS_PASSWORD")
    ensure(ref, "the nodes' REDIS_PASSWORD must come from a Secret (secretKeyRef)")
    ensure(ref[0] in created and ref[1] in created[ref[0]],
           f"the nodes' password {ref} is not a Secret key tools/deploy.sh creates ({created})")
    ensure(secret_ref(c, "REDISCLI_AUTH") == ref, "the nodes' REDISCLI_AUTH (probes) must be the same Secret key")
    ensure(secret_ref(rc.job.containers[0], "REDISCLI_AUTH") == ref, "the init Job's REDISCLI_AUTH must be the nodes' Secret key")
    script = rc.script("start.sh")
    flags = start_flags(script)
    ensure(flags.get("requirepass") == "${REDIS_PASSWORD}", "start.sh must pass --requirepass \"${REDIS_PASSWORD}\"")
    ensure(flags.get("masterauth") == "${REDIS_PASSWORD}",
           "start.sh must pass --masterauth \"${REDIS_PASSWORD}\" (replicas authenticate to their masters)")
    ensure(re.search(r'if \[ -z "\$\{REDIS_PASSWORD:-\}" \]; then\n[^\n]*\n\s*exit 1\n\s*fi', script),
           "start.sh must refuse to start with an empty REDIS_PASSWORD")
    to_cluster = rc.patches.get("server-to-cluster.yaml")
    ensure(to_cluster, f"{RC_DIR}/patches/server-to-cluster.yaml is missing")
    env = apply_env_patch(ctx.server_container.get("env", []), to_cluster, SERVER_CONTAINER)
    got = secret_ref({"env": env}, "REDIS_PASSWORD")
    ensure(got == ref, f"server-to-cluster.yaml: the server's REDIS_PASSWORD {got} is not the nodes' {ref}")


@check("redis-cluster-networkpolicy")
def _(ctx: Context) -> None:
    rc = redis_cluster(ctx)
    sts, job = rc.sts, rc.job
    pols = [o for o in rc.objs if o.kind == "NetworkPolicy"]
    ensure(pols, f"no NetworkPolicy in {RC_DIR}")

    def allows(src: Workload | None, port: int) -> bool:
        for p in pols:
            spec = p.doc["spec"]
            if "Ingress" not in (spec.get("policyTypes") or ["Ingress"]) or not selector_matches(spec.get("podSelector", {}), sts.pod_labels):
                continue
            for rule in spec.get("ingress") or []:
                ports = rule.get("ports")
                if ports and not any(resolve_port(sts, pp.get("port")) == port and pp.get("protocol", "TCP") == "TCP"
                                     for pp in ports if "port" in pp):
                    continue
                for peer in rule.get("from") or [{}]:
                    if not peer or "ipBlock" in peer or ("namespaceSelector" in peer and src is None):
                        return True
                    if "podSelector" in peer and "namespaceSelector" not in peer and src is not None \
                            and selector_matches(peer["podSelector"], src.pod_labels):
                        return True
        return False

    def who(port: int) -> set[str]:
        names = {w.name for w in ctx.workloads() + [sts, job] if allows(w, port)}
        return names | ({"<outside>"} if allows(None, port) else set())

    got = who(RC_BUS)
    ensure(got == {sts.name}, f"the cluster bus {RC_BUS} is reachable by {sorted(got)}; expected only the nodes ({sts.name})")
    got = who(RC_PORT)
    want = {SERVER_WORKLOAD[1], sts.name, job.name}
    ensure(got == want, f"Redis Cluster port {RC_PORT} is reachable by {sorted(got)}; expected {sorted(want)}")
    ensure(not who(22), "port 22 of the nodes should stay closed")


@check("redis-cluster-pdb")
def _(ctx: Context) -> None:
    rc = redis_cluster(ctx)
    sts = rc.sts
    pdbs = [o for o in rc.objs if o.kind == "PodDisruptionBudget"]
    mine = [p for p in pdbs if selector_matches(p.doc["spec"].get("selector"), sts.pod_labels)]
    ensure(len(mine) == 1, f"expected one PodDisruptionBudget selecting the Redis Cluster nodes, found {len(mine)}")
    spec = mine[0].doc["spec"]
    others = [w.name for w in ctx.workloads() + [rc.job] if selector_matches(spec["selector"], w.pod_labels)]
    ensure(not others, f"PDB/{mine[0].name} also selects {others}")
    # One node at a time: two down at once may be a master and its replica.
    ensure(spec.get("maxUnavailable") == 1 or spec.get("minAvailable") == sts.replicas - 1,
           f"PDB/{mine[0].name} must allow exactly one node down at a time (maxUnavailable: 1)")


@check("redis-cluster-maxmemory-policy")
def _(ctx: Context) -> None:
    rc = redis_cluster(ctx)
    flags = start_flags(rc.script("start.sh"))
    policy = flags.get("maxmemory-policy", "noeviction")
    # The room keys chat:{room}:seq and :history have no TTL; only the
    # idempotency markers do. volatile-* evicts only keys with a TTL;
    # allkeys-* would evict a seq counter and reuse seqs.
    ensure(policy == "noeviction" or policy.startswith("volatile-"),
           f"maxmemory-policy {policy} may evict room keys; use noeviction or a volatile-* policy")
    ensure("maxmemory" in flags, "start.sh sets no --maxmemory: Redis would grow until the container is OOM-killed")
    limit = (rc.sts.containers[0].get("resources") or {}).get("limits", {}).get("memory")
    ensure(limit, "the nodes have no memory limit")
    ensure(mem_bytes(flags["maxmemory"].replace("mb", "Mi").replace("gb", "Gi")) <= 0.75 * mem_bytes(limit),
           f"maxmemory {flags['maxmemory']} leaves too little of the {limit} limit for output buffers")
    ensure(flags.get("save") == "" and flags.get("appendonly") == "no",
           "the nodes persist nothing (--save \"\" --appendonly no), like the single Redis; docs/kubernetes.md says why")


@check("redis-cluster-init-job")
def _(ctx: Context) -> None:
    rc = redis_cluster(ctx)
    sts, job = rc.sts, rc.job
    ensure(job.pod_spec.get("restartPolicy") in ("Never", "OnFailure"), "the init Job needs restartPolicy Never or OnFailure")
    c = job.containers[0]
    ensure(c.get("image") == sts.containers[0].get("image"), "the init Job must use the nodes' image (the same redis-cli)")
    nodes = literal_env(c).get("CLUSTER_NODES", "").split()
    ensure(nodes == rc.seeds(), f"init Job CLUSTER_NODES {nodes} != the StatefulSet's pods {rc.seeds()}")
    script = rc.script("init.sh")
    ensure(re.search(r"--cluster create\b.*--cluster-replicas 1", script), "init.sh must create the cluster with one replica per master")
    ensure("cluster_slots_assigned" in script and re.search(r"\[ \"\$formed\" -gt 0 \]", script),
           "init.sh must leave a formed cluster alone (check cluster_slots_assigned before creating)")
    ensure(re.search(r"cluster_state\)\" = ok", script), "init.sh must wait for cluster_state:ok")
    # Its pods must not look like nodes (the Service, PDB and policies
    # select the nodes by label) nor like any other workload's.
    adopted = [w.name for w in [sts] + ctx.workloads()
               if w.kind != "Job" and selector_matches(w.obj.doc["spec"].get("selector"), job.pod_labels)]
    ensure(not adopted, f"the init Job's pods carry the labels that select {adopted}")


@check("redis-cluster-server-switch")
def _(ctx: Context) -> None:
    rc = redis_cluster(ctx)
    base = ctx.server_container.get("env", [])
    ensure(any(e["name"] == "REDIS_URL" for e in base) and not any(e["name"] == "REDIS_CLUSTER_NODES" for e in base),
           "k8s/33-websocket-statefulset.yaml must keep the single Redis (REDIS_URL) as the default")
    to_cluster, to_single = rc.patches.get("server-to-cluster.yaml"), rc.patches.get("server-to-single.yaml")
    ensure(to_cluster and to_single, f"{RC_DIR}/patches/ needs server-to-cluster.yaml and server-to-single.yaml")
    env = apply_env_patch(base, to_cluster, SERVER_CONTAINER)
    names = [e["name"] for e in env]
    ensure("REDIS_URL" not in names, "server-to-cluster.yaml leaves REDIS_URL set")
    ensure(len(names) == len(set(names)), f"server-to-cluster.yaml leaves duplicate variables: {names}")
    seeds = (literal_env({"env": env}).get("REDIS_CLUSTER_NODES") or "").split(",")
    want = [f"redis://{h}:{RC_PORT}" for h in rc.seeds()]
    ensure(seeds == want, f"server-to-cluster.yaml: REDIS_CLUSTER_NODES {seeds} != every node {want}")
    ensure(not any("@" in s for s in seeds), "REDIS_CLUSTER_NODES carries a password; it comes from REDIS_PASSWORD")
    back = apply_env_patch(env, to_single, SERVER_CONTAINER)
    key = lambda es: sorted((e["name"], json.dumps(e, sort_keys=True)) for e in es)  # noqa: E731
    ensure(key(back) == key(base), "server-to-single.yaml does not restore the server's default Redis environment")
    with open(os.path.join(ctx.root, "docs/kubernetes.md"), encoding="utf-8") as f:
        doc = f.read()
    for name in ("server-to-cluster.yaml", "server-to-single.yaml"):
        ensure(f"--patch-file {RC_DIR}/patches/{name}" in doc, f"docs/kubernetes.md does not show how to apply patches/{name}")


@check("redis-cluster-switch-env-known", group="http")
def _(ctx: Context) -> None:
    """The server reads every variable the switch sets (needs the binary)."""
    rc = redis_cluster(ctx)
    known = set(ctx.list_env())
    env = apply_env_patch(ctx.server_container.get("env", []), rc.patches["server-to-cluster.yaml"], SERVER_CONTAINER)
    for e in env:
        ensure(e["name"] in known, f"server-to-cluster.yaml sets {e['name']}, which the server does not read (not in --list-env)")


# ---------------------------------------------------------------------------


def run_checks(ctx: Context, groups: set[str], only: set[str] | None = None, quiet: bool = False) -> dict[str, str | None]:
    """Runs the checks; returns {name: None if passed else the failure message}."""
    results: dict[str, str | None] = {}
    for name, group, fn in CHECKS:
        if group not in groups or (only and name not in only):
            continue
        try:
            fn(ctx)
            results[name] = None
        except CheckFailed as e:
            results[name] = str(e)
        except Exception as e:  # a crash in a check is a failure too, with its cause
            results[name] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
        if not quiet:
            if results[name] is None:
                print(f"  ok    {name}")
            else:
                print(f"  FAIL  {name}: {results[name]}")
    return results


def main(argv: list[str]) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    default_root = os.path.abspath(os.path.join(here, "..", ".."))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=default_root, help="repository root (default: this file's repository)")
    ap.add_argument("--server-bin", default=None, help="websocket-server binary (default: <root>/target/debug/websocket-server)")
    ap.add_argument("--skip-http", action="store_true", help="skip the checks that start the server")
    ap.add_argument("--only", action="append", help="run only the named check (repeatable)")
    args = ap.parse_args(argv)
    server_bin = args.server_bin or os.path.join(args.root, "target/debug/websocket-server")
    ctx = Context(args.root, os.path.abspath(server_bin))
    groups = {"static"} if args.skip_http else {"static", "http"}
    print(f"contract test: {args.root} (server binary {server_bin})")
    results = run_checks(ctx, groups, set(args.only) if args.only else None)
    failed = sum(1 for v in results.values() if v is not None)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
