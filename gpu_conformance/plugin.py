"""The suite's pytest plugin: options, one validated Settings, GPU node discovery once (on the xdist
controller), per-node parametrization, modes (audit / --provision / --plan / --rollback), and the run's
results in reports/<run-id>/ (summary.json, JUnit XML, Allure results per node).

It is active when the run collects a folder of feature files (`pytest features/`, the repository's or a
user's copy); `pytest tests/` (the project's own tests) does not touch a cluster through it. Installed, it is
registered through the `pytest11` entry point; in the repository, pyproject.toml's addopts load it by name.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pytest

from gpu_conformance import reporting, step_lookup
from gpu_conformance.options import add_options, raw_settings
from gpu_conformance.run import STATE, Setup, discover, open_run, run_controller_mode
from provision.heap import HeapSettler, release_item, release_report

pytest_plugins = ["gpu_conformance.reporting"]  # the reporting hooks, registered with this plugin
PER_NODE, CLUSTER = "per_node", "cluster"


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def _active(config: pytest.Config) -> bool:
    """The run collects feature files: an argument is (in) a folder that holds *.feature files."""
    if hasattr(config, "workerinput"):
        return bool(config.workerinput.get("gpu_conformance"))
    for arg in config.args:
        p = Path(arg.split("::")[0])
        p = p if p.is_absolute() else Path(config.invocation_params.dir) / p
        folder = p if p.is_dir() else p.parent
        if any(folder.glob("*.feature")):
            return True
    return False


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "per_node: scenario runs once per GPU node")
    config.addinivalue_line("markers", "cluster: scenario runs once for the cluster")
    config.addinivalue_line("markers", "workload: scenario creates a test pod (skipped with --no-workload)")
    config.addinivalue_line("markers", "host: host-level scenario, run by --host-only (no Kubernetes needed)")
    config.addinivalue_line("markers", "clusterpolicy: scenario of the ClusterPolicy stack (stack = clusterpolicy)")
    config.addinivalue_line("markers", "dra: scenario of the GPUCluster / DRA stack (stack = dra, docs/dra.md)")
    if not _active(config):
        return
    from provision.settings import SettingsError, validate

    worker = hasattr(config, "workerinput")
    if worker:
        info = config.workerinput["gpu_conformance"]
        settings = validate(info["settings"])
        run_id, run_dir = info["run_id"], Path(info["run_dir"])
    else:
        try:
            settings = validate(raw_settings(config))
        except SettingsError as exc:
            raise pytest.UsageError(str(exc)) from exc
        run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ") + f"-{settings.mode}-{os.getpid()}"
        run_dir = (Path(config.invocation_params.dir) / settings.report_dir / run_id).resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        latest = run_dir.parent / "latest"
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(run_dir.name)
        if not config.option.xmlpath:
            config.option.xmlpath = str(run_dir / "junit.xml")
    if not getattr(config.option, "allure_report_dir", None):
        config.option.allure_report_dir = str(run_dir / "allure-results")
    config.stash[STATE] = Setup(settings, run_id, run_dir, started=time.time())
    step_lookup.install()  # pytest-bdd's step lookup once per step text, not per step of every item
    config.pluginmanager.register(ReportReleaser(config), "gpu-conformance-report-release")
    if not worker:
        discover(config.stash[STATE])


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist: hand the controller's settings, run folder and node list to each worker."""
    config = node.config
    if STATE not in config.stash:
        return
    setup = config.stash[STATE]
    own = None
    if _node_scheduling(config):
        from gpu_conformance.xdist_nodes import own_nodes

        own = own_nodes(setup.nodes, node.workerinput["workerid"], node.workerinput["workercount"])
    node.workerinput["gpu_conformance"] = {
        "settings": setup.settings.to_json(), "run_id": setup.run_id, "run_dir": str(setup.run_dir),
        "nodes": list(setup.nodes), "discovery_error": setup.discovery_error,
        "own_nodes": None if own is None else list(own),   # the GPU nodes NodeScheduling gives this worker
    }


def _node_scheduling(config: pytest.Config) -> bool:
    """xdist's default scheduling of a run with GPU nodes: the suite's NodeScheduling instead (xdist_nodes.py)."""
    return STATE in config.stash and config.getvalue("dist") == "load" and bool(config.stash[STATE].nodes)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Under xdist's default scheduling: each GPU node's scenarios on one worker, fixed before the run, so that
    each worker gathers and scrapes only its own nodes (xdist_nodes.py)."""
    if not _node_scheduling(config):
        return None
    from gpu_conformance.xdist_nodes import NodeScheduling

    return NodeScheduling(config, log, config.stash[STATE].nodes)


def _nodes(config: pytest.Config) -> tuple[tuple[str, ...], str | None]:
    if hasattr(config, "workerinput"):
        info = config.workerinput["gpu_conformance"]
        return tuple(info["nodes"]), info["discovery_error"]
    setup = config.stash[STATE]
    return setup.nodes, setup.discovery_error


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "gpu_node" not in metafunc.fixturenames or STATE not in metafunc.config.stash:
        return
    if metafunc.definition.get_closest_marker(PER_NODE):
        nodes, _ = _nodes(metafunc.config)
        from steps.support import NO_GPU_NODES

        params = list(nodes) or [NO_GPU_NODES]
        metafunc.parametrize("gpu_node", params, ids=params)
    else:
        metafunc.parametrize("gpu_node", [None], ids=["cluster"])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if STATE not in config.stash:
        return
    settings = config.stash[STATE].settings
    keep, drop = [], []
    for item in items:
        is_host = item.get_closest_marker("host") is not None
        anywhere = item.get_closest_marker("anywhere") is not None  # @anywhere: cluster and --host-only runs
        other_stack = item.get_closest_marker("dra" if settings.stack == "clusterpolicy" else "clusterpolicy")
        (keep if (anywhere or is_host == settings.host_only) and other_stack is None else drop).append(item)
    if drop:
        # Host-level features run in --host-only runs; cluster runs check the same things through their nodes.
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    if settings.mode == "rollback":
        for item in items:
            item.add_marker(pytest.mark.skip(reason="--rollback run: the record was replayed, nothing is verified"))
    elif not settings.workload:
        skip = pytest.mark.skip(reason="workload tests are off (--no-workload): a strictly read-only audit")
        for item in items:
            if item.get_closest_marker("workload"):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def run(request: pytest.FixtureRequest):
    """The run's state (settings, cluster, hosts, engine), one per pytest process."""
    from steps.support import RunState

    config = request.config
    if STATE not in config.stash:
        pytest.skip("the GPU conformance plugin is not active (run `pytest features/`)")
    setup = config.stash[STATE]
    nodes, error = _nodes(config)
    with open_run(setup.settings, setup.run_dir, nodes) as opened:
        if hasattr(config, "workerinput"):
            own = config.workerinput["gpu_conformance"].get("own_nodes")
            # Under NodeScheduling a worker runs exactly `own`: it gathers and scrapes those all at once at its first
            # question. Otherwise (another --dist, a worker that replaced a crashed one) it reads each node when it
            # first runs one of its scenarios.
            opened.ctx.prefetch_fact_nodes = () if own is None else tuple(own)
            opened.ctx.prefetch_nodes = None if own is None else tuple(own)
            if setup.settings.mode != "provision":
                # read-only: a node some other worker's scenario also asks about (a cluster scenario, a crashed
                # worker's items) is gathered once, by whichever asks first, and read from the run folder by the
                # others (provision/hosts/shared.py): one round trip per node
                from gpu_conformance.xdist_nodes import owners
                from provision.hosts.shared import SharedGathers

                opened.ctx.shared_gathers = SharedGathers(
                    setup.run_dir / "host-gathers", me=config.workerinput["workerid"],
                    owners=owners(nodes, config.workerinput["workercount"]) if own is not None else None)
        yield RunState(opened.ctx, opened.engine, nodes, error)


@pytest.fixture
def gpu_node(request: pytest.FixtureRequest) -> str | None:
    return getattr(request, "param", None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """A check that needs the host, in a run whose host checks were turned off (--host-backend none), is
    skipped with that reason: not applicable by the user's choice, not a could-not-check (which would give
    every API-only audit exit code 11)."""
    from provision.outcomes import SKIP_TYPES

    try:
        return (yield)
    except SKIP_TYPES as exc:
        reason = str(exc)
    pytest.skip(reason)  # outside the except: the skip does not carry (and keep alive) the original's frames


_HEAP = HeapSettler()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    try:
        return (yield)
    finally:
        release_item(item)
        _HEAP.item_done()


class ReportReleaser:
    """Registered for an active run: after every plugin has logged a report, what is kept of it only for them is
    released (provision/heap.py release_report)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        release_report(report, self.config)


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    step_lookup.uninstall()
    _HEAP.finish()  # before pytest's own final collections and the interpreter's shutdown walk the heap


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if STATE in config.stash:  # every process that writes Allure results, xdist workers included
        from provision.reporting.allure_trace import use_cached_traceback
        from provision.reporting.allure_writer import use_fast_writer

        use_fast_writer()
        use_cached_traceback()
    if STATE not in config.stash or hasattr(config, "workerinput"):
        return
    setup = config.stash[STATE]
    if setup.settings.mode in ("plan", "rollback"):
        row = run_controller_mode(config, setup)
        if row:
            reporting.RESULTS.append(row)
