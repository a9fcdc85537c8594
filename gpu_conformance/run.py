"""The run's wiring: its setup (settings, run folder, GPU nodes), the lab as a target, and `open_run`, the one
place that builds Kube, RunContext and Engine, for the scenarios as for --plan and --rollback."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # imported where used: the plugin is loaded by every pytest run of its environment
    from provision.context import RunContext
    from provision.engine import Engine
    from provision.settings import Settings

SUITE_VERSION = "0.1.0"


@dataclass
class Setup:
    """What the controller decided before collection (workers get a copy through xdist's workerinput)."""

    settings: Settings
    run_id: str
    run_dir: Path
    started: float
    nodes: tuple[str, ...] = ()
    discovery_error: str | None = None
    environment: dict = field(default_factory=dict)
    rollback_changes: int = 0
    changes: dict | None = None                            # changes_since_previous, for the console
    published: list[str] = field(default_factory=list)     # where the metrics went
    publish_errors: list[str] = field(default_factory=list)


STATE = pytest.StashKey[Setup]()


@dataclass
class OpenRun:
    ctx: RunContext
    engine: Engine


@contextmanager
def open_run(settings: Settings, run_dir: Path, nodes: tuple[str, ...]) -> Iterator[OpenRun]:
    """The cluster (none with --host-only), the run's context and its engine; the hosts are closed at the end."""
    from provision.context import RunContext
    from provision.converge import all_convergers
    from provision.engine import Engine
    from provision.kube import Kube, connect

    kube = None if settings.host_only else Kube(connect(settings), settings)
    ctx = RunContext(settings, kube, run_dir, nodes)
    engine = Engine(ctx, all_convergers(), run_dir / "converge")
    ctx.engine = engine
    try:
        yield OpenRun(ctx, engine)
    finally:
        ctx.close()


def lab_settings(spec: str | None, raw: dict) -> dict:
    """Settings that point the suite at the local lab (starting it from `spec` if it is not running)."""
    from lab import cluster, processes
    from lab.state import LabPaths

    paths = LabPaths()
    if processes.running(paths, "kube-apiserver") is None:
        print(f"[gpu-conformance] starting the local lab ({spec or 'default spec'})", file=sys.stderr)
        st = cluster.up(Path(spec) if spec else None, paths=paths, quiet=True)
    else:
        st = cluster.status(paths)
    out = {
        "kubeconfig": st["kubeconfig"], "host_roots": {n["name"]: n["host_root"] for n in st["nodes"]},
        "chart_repo": st["chart_repo"], "chart_repo_name": "lab", "helm": st["helm"],
        # the DCGM exporters through the apiserver's pod proxy (the default) where the lab's pod IPs are proxyable
        "dcgm_access": "proxy" if (st.get("pod_network") or {}).get("proxyable") else "direct",
        "lab_state": st["state_dir"],
    }
    if raw.get("host_backend") in (None, "lab"):
        out["host_backend"] = "lab"
    # the lab's inventory: a node spec's mig {profile, strategy} is that node's desired MIG state
    mig_nodes = [n for n in st["nodes"] if (n.get("mig") or {}).get("profile")]
    if mig_nodes and not raw.get("mig_profiles"):
        out["mig_profiles"] = {n["name"]: n["mig"]["profile"] for n in mig_nodes}
    if mig_nodes and not raw.get("mig_strategies"):
        out["mig_strategies"] = {n["name"]: n["mig"].get("strategy", "single") for n in mig_nodes}
    # helm's repository list and cache for the lab live in the lab's folder, not in the user's ~/.config/helm.
    home = Path(st["state_dir"]) / "helm-home"
    os.environ.setdefault("HELM_CONFIG_HOME", str(home / "config"))
    os.environ.setdefault("HELM_CACHE_HOME", str(home / "cache"))
    os.environ.setdefault("HELM_DATA_HOME", str(home / "data"))
    return out


def discover(setup: Setup) -> None:
    """Connect and find the GPU nodes once, on the controller; workers get the same sorted list."""
    from provision.context import discover_gpu_nodes
    from provision.kube import ClusterUnreachable, Kube, connect
    from provision.settings import SettingsError

    if setup.settings.host_only:
        setup.nodes = setup.settings.gpu_nodes or (_host_name(),)
        setup.environment = {"cluster": "none (--host-only)", "kubernetes_version": "none",
                             "operator_chart_version": None, "suite_version": SUITE_VERSION,
                             "mode": "host-only audit", "gpu_nodes": list(setup.nodes), "discovered_by": "this host"}
        return
    try:
        api = connect(setup.settings)
    except (SettingsError, ClusterUnreachable) as exc:
        raise pytest.UsageError(str(exc)) from exc
    kube = Kube(api, setup.settings)
    snap = kube.snapshot()
    found = discover_gpu_nodes(snap.nodes, setup.settings)
    setup.nodes, setup.discovery_error = found.nodes, found.error
    setup.environment = {
        "cluster": api.configuration.host, "kubernetes_version": _k8s_version(api),
        "operator_chart_version": setup.settings.chart_version, "suite_version": SUITE_VERSION,
        "mode": setup.settings.mode, "gpu_nodes": list(found.nodes), "discovered_by": found.how,
    }


def _host_name() -> str:
    """This machine's name as a node name (DNS-1123: lowercase, '-' for anything else)."""
    import re

    name = re.sub(r"[^a-z0-9.-]+", "-", socket.gethostname().lower()).strip("-.")
    return name or "localhost"


def _k8s_version(api) -> str:
    from kubernetes import client

    try:
        return client.VersionApi(api).get_code().git_version
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"


def rollback_text(done: list[str]) -> str:
    """What --rollback prints: every restored change, or that there was nothing to restore."""
    return "\n--rollback:\n" + ("\n".join("  " + d for d in done) or "  nothing to roll back")


def run_controller_mode(config: pytest.Config, setup: Setup) -> dict | None:
    """--plan prints every converger's plan up front; --rollback replays the record. Both on the controller.
    Returns the rollback's result row for summary.json (None for --plan)."""
    from provision.hosts.guard import WRITE_GUARD
    from provision.rollback import rollback

    tw = config.get_terminal_writer()
    with open_run(setup.settings, setup.run_dir, setup.nodes) as run:
        if setup.settings.mode == "plan":
            if setup.discovery_error and setup.nodes:
                tw.line(f"\n--plan: nothing planned: {setup.discovery_error}", red=True)  # the scenarios fail with it
                return None
            plan = "\n".join(run.engine.ensure(name).plan_text() for name in run.engine.by_name)
            (setup.run_dir / "plan.txt").write_text(plan + "\n")
            tw.line("\n--plan: the changes --provision would make (nothing was changed)\n" + plan, bold=True)
            return None
        with WRITE_GUARD.allow("--rollback"):
            report = rollback(run.ctx)
    setup.rollback_changes = report.changes
    tw.line(rollback_text(report.done), bold=True)
    for target, err in report.errors.items():
        tw.line(f"  could not roll back {target}: {err}", red=True)
    return {"node": None, "feature": "Rollback", "scenario": "Restore what the suite changed",
            "outcome": "broken" if report.errors else "passed",
            "message": "; ".join(f"{k}: {v}" for k, v in report.errors.items()), "nodeid": "rollback"}
