#!/usr/bin/env python3
"""Writes the shell scripts embedded in the manifests to files, so that
tools/check-k8s.sh can run shellcheck on them like on any other script.

    embedded_scripts.py OUTDIR MANIFEST...

Two places hold scripts: ConfigMap keys ending in `.sh` (kept as they are,
shebang included), and container commands of the form `sh -c SCRIPT` or
`bash -ec SCRIPT`: containers, init containers, exec probes and lifecycle
hooks (written with a `#!/bin/sh` or `#!/bin/bash` line for the shell that
runs them). Prints one path per line.
"""

from __future__ import annotations

import os
import re
import sys

import yaml

SHELLS = {"sh": "/bin/sh", "bash": "/bin/bash"}


def shell_script(argv: list) -> tuple[str, str] | None:
    """(shell, script) if argv runs an inline script, else None."""
    if len(argv) < 3 or not isinstance(argv[0], str):
        return None
    shell = SHELLS.get(os.path.basename(argv[0]))
    if not shell:
        return None
    for i, arg in enumerate(argv[1:-1], start=1):
        if re.fullmatch(r"-[a-z]*c[a-z]*", str(arg)):
            return shell, str(argv[i + 1])
    return None


def container_commands(container: dict):
    """(where, argv) for every command a container runs."""
    name = container.get("name", "?")
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    if argv:
        yield name, argv
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        cmd = ((container.get(probe) or {}).get("exec") or {}).get("command")
        if cmd:
            yield f"{name}-{probe}", cmd
    for hook in ("postStart", "preStop"):
        cmd = ((((container.get("lifecycle") or {}).get(hook) or {}).get("exec")) or {}).get("command")
        if cmd:
            yield f"{name}-{hook}", cmd


def pod_spec(doc: dict) -> dict | None:
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Pod":
        return spec
    if doc.get("kind") == "CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return (spec.get("template") or {}).get("spec")


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    out, manifests = argv[0], argv[1:]
    os.makedirs(out, exist_ok=True)
    written = []

    def write(stem: str, text: str) -> None:
        path = os.path.join(out, re.sub(r"[^A-Za-z0-9_.-]", "_", stem))
        with open(path, "w", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")
        written.append(path)

    for manifest in manifests:
        base = os.path.splitext(os.path.basename(manifest))[0]
        with open(manifest, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            obj = doc.get("metadata", {}).get("name", "?")
            if doc.get("kind") == "ConfigMap":
                for key, value in (doc.get("data") or {}).items():
                    if key.endswith(".sh"):
                        write(f"{base}--{obj}--{key}", str(value))
            spec = pod_spec(doc)
            if not spec:
                continue
            for c in list(spec.get("initContainers") or []) + list(spec.get("containers") or []):
                for n, (where, cmd) in enumerate(container_commands(c)):
                    found = shell_script(cmd)
                    if found:
                        shell, script = found
                        write(f"{base}--{obj}--{where}-{n}.sh", f"#!{shell}\n{script}")
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
