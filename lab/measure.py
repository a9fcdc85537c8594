"""Figures for lab/README.md: `python -m lab.measure [--cold]`.

- cold build: builds every binary into an empty cache (a temporary XDG_CACHE_HOME and GOCACHE; the Go
  module cache is kept, so downloads are not counted) — only with --cold, it takes many minutes;
- warm up: `lab up` from nothing with cached binaries, until every node of the default spec is Ready;
- peak memory of the control plane (etcd, kube-apiserver, controller-manager, scheduler) and of the whole
  lab, sampled while the lab is up and after a Deployment of 20 pods was scheduled and run.
Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from lab import cluster, processes
from lab.state import LabPaths

CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def cold_build_seconds() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "XDG_CACHE_HOME": tmp, "GOCACHE": str(Path(tmp) / "go-build")}
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "lab", "build"], env=env, check=True)
        return time.monotonic() - t0


def sample_rss(paths: LabPaths, stop: threading.Event, peaks: dict[str, float]) -> None:
    while not stop.is_set():
        for name in cluster.ALL_PROCESSES:
            proc = processes.running(paths, name)
            if proc is None:
                continue
            try:
                rss = proc.memory_info().rss / 2**20
            except psutil.Error:
                continue
            peaks[name] = max(peaks.get(name, 0.0), rss)
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.measure")
    parser.add_argument("--cold", action="store_true", help="also time a cold build (many minutes)")
    args = parser.parse_args()
    figures: dict[str, float | None] = {"cold_build_s": cold_build_seconds() if args.cold else None}
    with tempfile.TemporaryDirectory() as tmp:
        paths = LabPaths(root=Path(tmp) / "state")
        peaks: dict[str, float] = {}
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(paths, stop, peaks), daemon=True)
        sampler.start()
        t0 = time.monotonic()
        status = cluster.up(None, paths=paths, quiet=True)
        figures["warm_up_s"] = round(time.monotonic() - t0, 2)
        from kubernetes import client, config, watch

        api = config.new_client_from_config(config_file=status["helper_kubeconfig"])
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        core.create_namespace({"metadata": {"name": "measure"}})
        apps.create_namespaced_deployment("measure", {"metadata": {"name": "m"}, "spec": {
            "replicas": 20, "selector": {"matchLabels": {"app": "m"}},
            "template": {"metadata": {"labels": {"app": "m"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
        t1 = time.monotonic()
        running: set[str] = set()
        for ev in watch.Watch().stream(core.list_namespaced_pod, "measure", timeout_seconds=60):
            if ev["object"].status.phase == "Running":
                running.add(ev["object"].metadata.name)
            if len(running) >= 20:
                break
        figures["twenty_pods_running_s"] = round(time.monotonic() - t1, 2)
        time.sleep(1)
        stop.set()
        sampler.join()
        cluster.down(paths)
    figures["peak_rss_control_plane_mb"] = round(sum(peaks.get(n, 0) for n in CONTROL_PLANE), 1)
    figures["peak_rss_lab_mb"] = round(sum(peaks.values()), 1)
    figures.update({f"peak_rss_{k.replace('-', '_')}_mb": round(v, 1) for k, v in sorted(peaks.items())})
    for k, v in figures.items():
        print(f"{k:<40} {v}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
