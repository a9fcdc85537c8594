"""Command line of the lab: python -m lab up [--spec FILE] | down | status [--json] | env | build."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lab import build, cluster
from lab.controlplane import LabError
from lab.spec import SpecError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description="The suite's local Kubernetes lab")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the lab (idempotent; quick when binaries are cached)")
    p_up.add_argument("--spec", type=Path, help="node spec YAML (default: lab/specs/default.yaml)")
    sub.add_parser("down", help="stop every lab process and remove the lab's state")
    p_status = sub.add_parser("status", help="describe the lab")
    p_status.add_argument("--json", action="store_true", help="machine-readable output")
    sub.add_parser("env", help="print shell exports for using the lab (eval \"$(python -m lab env)\")")
    sub.add_parser("build", help="build the lab's binaries into the cache (done by `up` when needed)")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            st = cluster.up(args.spec)
            print(f"lab is up: {len(st['nodes'])} nodes; eval \"$(python -m lab env)\" to use it")
        elif args.command == "down":
            stopped = cluster.down()
            print("lab is down" + (f" (stopped {', '.join(stopped)})" if stopped else " (nothing was running)"))
        elif args.command == "status":
            st = cluster.status()
            if args.json:
                print(json.dumps(st, indent=2))
            else:
                print(f"running: {st['running']}  server: {st['server']}  kubernetes {st['kubernetes_version']}")
                print(f"kubeconfig (suite): {st['kubeconfig']}\naudit log: {st['audit_log']}")
                for n in st["nodes"]:
                    kind = "control-plane" if n["control_plane"] else f"{n['gpus']}x {n['product']}"
                    print(f"  {n['name']:<12} {kind:<24} faults={n['faults'] or '-'}  host={n['host_root']}")
                for name, pid in st["processes"].items():
                    print(f"  process {name:<24} {'pid ' + str(pid) if pid else 'not running'}")
            return 0 if st["running"] else 3
        elif args.command == "env":
            st = cluster.status()
            print(f"export KUBECONFIG={st['kubeconfig']}")
        elif args.command == "build":
            print(build.ensure_all())
    except (LabError, SpecError, build.BuildError, FileNotFoundError) as exc:
        print(f"lab {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
