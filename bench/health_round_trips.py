"""How many host round trips the GPU health checks add per node, and how long they take:
`python -m bench.health_round_trips [--nodes N]`.

Seeds N lab host views (default spec's gpu-b: two H200s; no Kubernetes), runs all six health checks of each
node through the suite's own code (RunContext with the lab host backend, provision.health.check), and counts
every host command (HostAccess.run / read_bytes / exists / glob) per node. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

from lab.spec import load
from lab.state import LabPaths
from lab.twin import seeding
from provision import checks, health
from provision.context import RunContext
from provision.hosts.access import HostAccess
from provision.settings import validate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=5)
    args = ap.parse_args()
    calls: Counter[str] = Counter()
    for name in ("run", "read_bytes", "exists", "glob"):
        original = getattr(HostAccess, name)

        def counted(self, *a, _o=original, _n=name, **kw):
            calls[f"{self.name} {_n}"] += 1
            return _o(self, *a, **kw)
        setattr(HostAccess, name, counted)
    base = next(n for n in load().nodes if n.name == "gpu-b")
    with tempfile.TemporaryDirectory() as tmp:
        paths = LabPaths(root=Path(tmp))
        roots = {f"gpu-{i:03d}": str(seeding.seed(paths, dataclasses.replace(base, name=f"gpu-{i:03d}")))
                 for i in range(args.nodes)}
        settings = validate({"host_backend": "lab", "host_roots": roots, "host_only": True, "mode": "audit"})
        ctx = RunContext(settings, None, Path(tmp), tuple(roots))  # type: ignore[arg-type]
        per_node: list[float] = []
        outcomes: Counter[str] = Counter()
        for node in roots:
            t0 = time.monotonic()
            ctx.host(node)  # the connection check every host scenario pays anyway (`true`), not counted below
            calls[f"{node} run"] -= 1
            for name in health.EVALUATORS:
                try:
                    outcomes["passed" if health.check(ctx, node, name).ok else "failed"] += 1
                except checks.NotApplicable:
                    outcomes["not applicable"] += 1
            per_node.append(time.monotonic() - t0)
        ctx.close()
    trips = {node: sum(v for k, v in calls.items() if k.startswith(node + " ")) for node in roots}
    result = {"nodes": args.nodes, "checks_per_node": len(health.EVALUATORS),
              "host_round_trips_per_node": sorted(set(trips.values())), "outcomes": dict(outcomes),
              "seconds_per_node_mean": round(sum(per_node) / len(per_node), 3), "seconds_per_node_max": round(max(per_node), 3)}
    print(f"{'nodes':>6} {'checks/node':>12} {'host round trips/node':>22} {'s/node (mean)':>14} {'s/node (max)':>13}")
    print(f"{args.nodes:>6} {len(health.EVALUATORS):>12} {result['host_round_trips_per_node']!s:>22} "
          f"{result['seconds_per_node_mean']:>14} {result['seconds_per_node_max']:>13}")
    print(json.dumps(result))



if __name__ == "__main__":
    main()
