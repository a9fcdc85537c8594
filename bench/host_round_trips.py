"""Host round trips per node for every read-only host check, with the one-round-trip gather and without:
`python -m bench.host_round_trips [--nodes N] [--concurrency C] [--no-gather] [--python-shims] [--delays-ms 0,50,200]`.

Seeds N lab host views (the default spec's gpu-b: two H200s; no Kubernetes), asks each node's host everything an
audit asks it (driver, GPU count, the containerd drop-ins, runtimes and versions, Docker, the six GPU health checks)
through the suite's own code (RunContext with the lab host backend, the gathers run by its pool), and counts every
command that reached the host (``HostAccess._execute``: one per round trip on ssh or pods/exec) per node, and the
host side's CPU (the gathers' processes; the shims answered by lab/twin/shim_server.py unless --python-shims). Prints a
table and one JSON line with the findings' digest (identical with and without the gather, at any concurrency).

``--delays-ms 0,50,200``: the same audit once per simulated round-trip delay (GPU_CONFORMANCE_LAB_HOST_DELAY_MS,
provision/hosts/lab_delay.py), one row and one JSON line each: the curve of wall time against the delay. With the
gather and a pool of C, N nodes cost about N / C round trips of delay, whatever the number of commands.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import resource
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from lab.spec import load
from lab.state import LabPaths
from lab.twin import seeding, shim_server
from provision import checks, health
from provision.context import RunContext
from provision.hosts.access import HostAccess
from provision.hosts.lab_delay import LAB_HOST_DELAY_ENV, lab_host_delay_s
from provision.settings import validate

HOST_CHECKS = ("driver", "physical_count", "containerd_dropins", "containerd_runtimes", "containerd_versions",
               "docker_runtime")


class _NoCluster:
    """The few cluster facts the host checks read (the toolkit's env from the ClusterPolicy; node readiness)."""

    core = None

    def snapshot(self) -> SimpleNamespace:
        return SimpleNamespace(cluster_policy=None, nodes={}, pod_on=lambda app, node: None)


def count_round_trips() -> Counter[str]:
    """Count HostAccess._execute per host name (patched for the process)."""
    calls: Counter[str] = Counter()
    lock = threading.Lock()
    original = HostAccess._execute

    def counted(self, argv, timeout=None, _o=original):
        with lock:
            calls[self.name] += 1
        return _o(self, argv, timeout)

    HostAccess._execute = counted  # type: ignore[method-assign]
    return calls


def audit_hosts(ctx: RunContext, nodes: list[str]) -> list[str]:
    """Every host check of every node, in order: one line per check (its outcome and message)."""
    lines = []
    for node in nodes:
        for name in HOST_CHECKS:
            try:
                f = getattr(checks, name)(ctx, node, 470) if name == "driver" else getattr(checks, name)(ctx, node)
                lines.append(f"{node} {name} {f.ok} {f.message}")
            except checks.NotApplicable as exc:
                lines.append(f"{node} {name} n/a {exc}")
        for name in health.EVALUATORS:
            try:
                f = health.check(ctx, node, name)
                lines.append(f"{node} health:{name} {f.ok} {f.message}")
            except checks.NotApplicable as exc:
                lines.append(f"{node} health:{name} n/a {exc}")
    return lines


def seed_views(tmp: Path, n: int) -> dict[str, str]:
    base = next(x for x in load().nodes if x.name == "gpu-b")
    paths = LabPaths(root=tmp)
    return {f"gpu-{i:04d}": str(seeding.seed(paths, dataclasses.replace(base, name=f"gpu-{i:04d}")))
            for i in range(n)}


def measure(args: argparse.Namespace, calls: Counter[str], delay_ms: float | None) -> dict:
    """One audit of fresh host views (delay_ms: the simulated delay per round trip, None: the environment's)."""
    if delay_ms is not None:
        os.environ[LAB_HOST_DELAY_ENV] = f"{delay_ms:g}"
    calls.clear()
    with tempfile.TemporaryDirectory() as tmp:
        roots = seed_views(Path(tmp), args.nodes)
        server = None if args.python_shims else shim_server.start(shim_server.socket_path(Path(tmp)))
        settings = validate({"host_backend": "lab", "host_roots": roots, "mode": "audit",
                             "host_concurrency": args.concurrency, "host_gather": not args.no_gather})
        ctx = RunContext(settings, _NoCluster(), Path(tmp), tuple(roots))  # type: ignore[arg-type]
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        lines = audit_hosts(ctx, list(roots))
        wall = time.monotonic() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        ctx.close()
        if server is not None:
            server.shutdown()
    trips = Counter(calls[n] for n in roots)
    child_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return {"nodes": args.nodes, "gather": not args.no_gather, "concurrency": args.concurrency,
            "shims": "python" if args.python_shims else "server",
            "delay_ms": round(lab_host_delay_s() * 1000, 3),
            "checks_per_node": len(HOST_CHECKS) + len(health.EVALUATORS),
            "host_round_trips_per_node": dict(sorted(trips.items())), "wall_s": round(wall, 2),
            "host_cpu_s_per_node": round(child_cpu / args.nodes, 3), "load_avg": [round(x, 2) for x in os.getloadavg()],
            "findings_sha256": hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16],
            "outcomes": dict(Counter(line.split(" ")[2] for line in lines))}


def _delays(text: str) -> list[float]:
    try:
        out = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        out = []
    if not out or any(d < 0 for d in out):
        raise argparse.ArgumentTypeError(f"{text!r}: give delays in ms separated by commas, e.g. 0,50,200")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--no-gather", action="store_true", help="every host fact its own command (as before)")
    ap.add_argument("--python-shims", action="store_true", help="no shim server: a Python process per shim call")
    ap.add_argument("--delays-ms", type=_delays, help="simulated delay per host round trip, one audit each "
                    "(comma-separated ms, e.g. 0,50,200; default: GPU_CONFORMANCE_LAB_HOST_DELAY_MS or none)")
    args = ap.parse_args()
    calls = count_round_trips()
    results = [measure(args, calls, d) for d in (args.delays_ms or [None])]
    print(f"{'nodes':>6} {'gather':>6} {'pool':>4} {'delay ms':>8} {'round trips/node':>17} {'wall s':>7} "
          f"{'host CPU s/node':>16} {'findings':>16}")
    for r in results:
        print(f"{r['nodes']:>6} {'yes' if r['gather'] else 'no':>6} {r['concurrency']:>4} {r['delay_ms']:>8g} "
              f"{','.join(map(str, sorted(r['host_round_trips_per_node']))):>17} {r['wall_s']:>7} "
              f"{r['host_cpu_s_per_node']:>16} {r['findings_sha256']:>16}")
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
