"""Render time of the fleet page for 1000 nodes x 15 checks: `.venv/bin/python -m tests.reporting.bench_fleet`."""

from __future__ import annotations

import time

from provision.reporting.fleet import render_fleet
from tests.reporting.conftest import synthetic_summary


def main() -> None:
    summary = synthetic_summary(1000, 15)
    nodes = summary["environment"]["driver_versions"]
    links = {n: f"html/{n}/index.html" for n in nodes} | {"_cluster": "html/_cluster/index.html"}
    cell_links = {
        (r["node"] or "_cluster", r["nodeid"]): f"{links[r['node'] or '_cluster']}#{i:032x}"
        for i, r in enumerate(summary["results"])
    }
    for _ in range(3):
        start = time.perf_counter()
        html = render_fleet(summary, links, cell_links=cell_links)
        elapsed = time.perf_counter() - start
        print(f"render_fleet 1000 nodes x 15 checks: {elapsed * 1000:.0f} ms, {len(html.encode()) / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
