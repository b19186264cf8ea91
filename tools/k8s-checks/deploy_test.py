#!/usr/bin/env python3
"""tools/deploy.sh against a fake cluster: the decisions it makes.

There is no cluster here, so this runs the real script with `kubectl` and
`minikube` replaced by this file (`--fake NAME`), which answers from a
scenario's state and records every call. Each scenario then checks what the
script did, not only its exit status:

- a fresh cluster: everything applied in order; the MongoDB init Job runs
  before the wait for the members (Ready = PRIMARY or SECONDARY needs it),
  and that wait is MONGO_ROLLOUT_TIMEOUT (10 minutes); the CPU HPA;
- an install of the original deployment in the namespace (StatefulSets with
  other immutable fields, a port named ws, a frontend Deployment, NodePort
  30000): the script stops with the way over and changes nothing;
- a re-run where the connections HPA is in place: it is kept (the optional
  file re-applied), not replaced by the CPU one;
- a re-run where the init Job's template changed (its script's hash): the
  Job is deleted and created again, so the new script runs.

    deploy_test.py        (exit status 0 when every scenario passes)
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OURS = {
    "mongodb": {"shape": "Parallel|mongodb-service|data=5Gi,", "ports": "mongodb "},
    "websocket-server": {"shape": "Parallel|websocket-service|", "ports": "http admin "},
}


# ---------------------------------------------------------------------------
# The fake kubectl and minikube


def fake(name: str, argv: list[str]) -> int:
    state_path = os.environ["FAKE_STATE"]
    with open(state_path, encoding="utf-8") as f:
        state = json.load(f)
    stdin = sys.stdin.read() if "-" in argv and "apply" in argv else ""
    with open(os.environ["FAKE_LOG"], "a", encoding="utf-8") as f:
        f.write(json.dumps([name] + argv) + "\n")

    def save() -> None:
        with open(state_path, "w", encoding="utf-8") as f:
            json.dump(state, f)

    if name == "minikube":
        if "status" in argv:
            print("Running/Running/Running")
        elif "addons" in argv:
            print("| metrics-server              | minikube | enabled ✅   | Kubernetes              |")
        elif "ip" in argv:
            print("192.168.49.2")
        return 0

    # kubectl: drop --context/-n/--namespace and their values.
    args, i = [], 0
    while i < len(argv):
        if argv[i] in ("--context", "-n", "--namespace"):
            i += 2
            continue
        if argv[i].startswith(("--context=", "--namespace=")):
            i += 1
            continue
        args.append(argv[i])
        i += 1
    template = ""
    for j, a in enumerate(args):
        if a == "-o" and j + 1 < len(args) and args[j + 1].startswith("go-template="):
            template = args[j + 1].split("=", 1)[1]
    verb = args[0] if args else ""

    if verb == "get":
        kind = args[1]
        obj = args[2] if len(args) > 2 and not args[2].startswith("-") else None
        if kind == "--raw":
            return 0
        if kind == "namespace":
            if state["namespace"]:
                print(f"namespace/{obj}")
                return 0
            print(f'Error from server (NotFound): namespaces "{obj}" not found', file=sys.stderr)
            return 1
        if kind == "statefulset":
            sts = state["statefulsets"].get(obj)
            if sts is None:
                return 0 if "--ignore-not-found" in args else 1
            if "podManagementPolicy" in template:
                sys.stdout.write(sts["shape"])
            elif ".ports" in template:
                sys.stdout.write(sts["ports"])
            elif ".spec.replicas" in template:
                sys.stdout.write(str(sts.get("replicas", 2)))
            return 0
        if kind == "deployments":
            sys.stdout.write("".join(f"{d} " for d in state["deployments"]))
            return 0
        if kind == "services":
            sys.stdout.write("".join(f"{s} " for s in state["nodeports"]))
            return 0
        if kind == "hpa":
            sys.stdout.write(state.get("hpa_types", ""))
            return 0
        if kind == "job":
            job = state.get("job")
            if "Failed" in template:  # apply_init_job: did it fail?
                sys.stdout.write("yes" if job == "failed" else "")
                return 0
            sys.stdout.write("Complete ")  # wait_for_job
            return 0
        if kind == "secret":
            return 0
        return 0
    if verb == "create":
        print("apiVersion: v1\nkind: Secret")
        return 0
    if verb == "apply":
        path = args[args.index("-f") + 1]
        if path.endswith("14-mongodb-init-job.yaml") and state.get("job_template_changed"):
            print('The Job "mongodb-init" is invalid: spec.template: Invalid value: core.PodTemplateSpec{...}: '
                  "field is immutable", file=sys.stderr)
            return 1
        if path == "-" and "kind: Secret" not in stdin and "kind: StatefulSet" not in stdin:
            print("unexpected stdin for apply -f -", file=sys.stderr)
            return 1
        return 0
    if verb == "delete":
        if args[1:3] == ["job", "mongodb-init"]:
            state["job_template_changed"] = False
            save()
        return 0
    return 0  # rollout status, logs


# ---------------------------------------------------------------------------
# Scenarios


def run_deploy(state: dict) -> tuple[int, str, list[list[str]]]:
    with tempfile.TemporaryDirectory(prefix="deploy-test-") as tmp:
        bindir = os.path.join(tmp, "bin")
        os.makedirs(bindir)
        for name in ("kubectl", "minikube"):
            path = os.path.join(bindir, name)
            with open(path, "w", encoding="utf-8") as f:
                f.write(f'#!/bin/sh\nexec "{sys.executable}" "{os.path.abspath(__file__)}" --fake {name} "$@"\n')
            os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
        state_path, log_path = os.path.join(tmp, "state.json"), os.path.join(tmp, "calls.jsonl")
        with open(state_path, "w", encoding="utf-8") as f:
            json.dump(state, f)
        open(log_path, "w").close()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBE", "MINIKUBE", "MONGO_", "REDIS_"))}
        env.update(PATH=bindir + os.pathsep + os.environ["PATH"], FAKE_STATE=state_path, FAKE_LOG=log_path)
        out = subprocess.run(["bash", os.path.join(ROOT, "tools/deploy.sh"), "--no-build"], env=env,
                             capture_output=True, text=True, timeout=120)
        with open(log_path, encoding="utf-8") as f:
            calls = [json.loads(line) for line in f if line.strip()]
    return out.returncode, out.stdout + out.stderr, calls


def index(calls: list[list[str]], *needle: str) -> int:
    """Position of the first call containing every string of needle (-1: none)."""
    for i, c in enumerate(calls):
        joined = " ".join(c)
        if all(n in joined for n in needle):
            return i
    return -1


def applied(calls: list[list[str]]) -> list[str]:
    return [c[c.index("-f") + 1] for c in calls if "apply" in c and "-f" in c]


def fresh() -> dict:
    return {"namespace": False, "statefulsets": {}, "deployments": [], "nodeports": [], "hpa_types": "", "job": None}


def existing(**changes) -> dict:
    state = {"namespace": True, "statefulsets": json.loads(json.dumps(OURS)), "deployments": ["redis"],
             "nodeports": ["websocket-external:30080"], "hpa_types": "Resource Resource ", "job": "complete"}
    state.update(changes)
    return state


def scenario_fresh_cluster() -> None:
    code, out, calls = run_deploy(fresh())
    assert code == 0, f"deploy.sh failed on a fresh cluster:\n{out}"
    files = [os.path.basename(f) for f in applied(calls)]
    for f in ("00-namespace.yaml", "12-mongodb-statefulset.yaml", "14-mongodb-init-job.yaml", "22-redis-deployment.yaml",
              "32-websocket-service-external.yaml", "35-websocket-hpa.yaml"):
        assert f in files, f"{f} not applied: {files}"
    assert "hpa-connections.yaml" not in files, "the optional HPA applied on a fresh cluster"
    job = index(calls, "apply", "14-mongodb-init-job.yaml")
    wait = index(calls, "rollout", "statefulset/mongodb")
    assert 0 <= job < wait, "the MongoDB rollout is awaited before the init Job exists: members are never Ready"
    assert "--timeout=600s" in calls[wait], f"the MongoDB wait is not 10 minutes: {calls[wait]}"
    assert index(calls, "delete") < 0, "deleted something on a fresh cluster"


def scenario_original_install() -> None:
    state = existing(
        statefulsets={
            "mongodb": {"shape": "OrderedReady|mongodb|mongo-data=1Gi,", "ports": "mongodb "},
            "websocket-server": {"shape": "OrderedReady|websocket-service|", "ports": "ws "},
        },
        deployments=["frontend", "redis"],
        nodeports=["frontend-service:30000", "websocket-service:30001"],
    )
    code, out, calls = run_deploy(state)
    assert code != 0, f"deploy.sh went ahead over the original install:\n{out}"
    for needle in ("StatefulSet mongodb", "StatefulSet websocket-server", "'ws'", "Deployment frontend",
                   "NodePort 30000", "Moving over from the original", "Nothing was changed"):
        assert needle in out, f"the message does not mention {needle!r}:\n{out}"
    changing = [c for c in calls if c[0] == "kubectl" and any(v in c for v in ("apply", "create", "delete", "patch"))]
    assert not changing, f"deploy.sh changed the cluster before stopping: {changing}"


def scenario_ours_is_not_foreign() -> None:
    code, out, calls = run_deploy(existing())
    assert code == 0, f"deploy.sh refused its own install:\n{out}"
    assert index(calls, "delete") < 0, "a completed, unchanged init Job was deleted"


def scenario_connections_hpa_kept() -> None:
    code, out, calls = run_deploy(existing(hpa_types="Pods Resource Resource "))
    assert code == 0, out
    files = [os.path.basename(f) for f in applied(calls)]
    assert "hpa-connections.yaml" in files, f"the connections HPA was not re-applied: {files}"
    assert "35-websocket-hpa.yaml" not in files, "the connections HPA was replaced by the CPU one"


def scenario_changed_init_job_runs_again() -> None:
    code, out, calls = run_deploy(existing(job_template_changed=True))
    assert code == 0, out
    delete = index(calls, "delete", "job", "mongodb-init")
    assert delete >= 0, f"the changed init Job was not re-created:\n{out}"
    again = [i for i, c in enumerate(calls) if "apply" in c and any(a.endswith("14-mongodb-init-job.yaml") for a in c)]
    assert again and again[-1] > delete, "the init Job was deleted but not applied again"
    assert index(calls, "rollout", "statefulset/mongodb") > again[-1], "the members are awaited before the new Job ran"


SCENARIOS = [scenario_fresh_cluster, scenario_original_install, scenario_ours_is_not_foreign,
             scenario_connections_hpa_kept, scenario_changed_init_job_runs_again]


def main(argv: list[str]) -> int:
    if argv[:1] == ["--fake"]:
        return fake(argv[1], argv[2:])
    if not shutil.which("bash"):
        print("bash is needed")
        return 1
    failed = 0
    for s in SCENARIOS:
        try:
            s()
            print(f"  ok    {s.__name__}")
        except AssertionError as e:
            failed += 1
            print(f"  FAIL  {s.__name__}: {e}")
    print(f"{len(SCENARIOS) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
