"""The suite's pytest plugin: options, one validated Settings, GPU node discovery once (on the xdist
controller), per-node parametrization, modes (audit / --provision / --plan / --rollback), and the run's
results in reports/<run-id>/ (summary.json, JUnit XML, Allure results per node).

It is active when the run collects features/ (`pytest features/`); `pytest tests/` (the project's own
tests) does not touch a cluster through it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

import pytest

from provision.heap import HeapSettler, release_item

REPO = Path(__file__).resolve().parent
FEATURES = REPO / "features"
SUITE_VERSION = "0.1.0"
PER_NODE, CLUSTER = "per_node", "cluster"


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("gpu-conformance", "GPU node conformance (settable under [tool.gpu-conformance])")
    mode = g.addmutuallyexclusivegroup() if hasattr(g, "addmutuallyexclusivegroup") else g
    mode.addoption("--provision", action="store_true", help="install and configure, then verify")
    g.addoption("--plan", action="store_true", help="print the exact changes --provision would make; change nothing")
    g.addoption("--rollback", action="store_true", help="restore exactly what earlier --provision runs changed")
    g.addoption("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    g.addoption("--context", dest="kube_context", help="kubeconfig context")
    g.addoption("--operator-namespace", help="namespace of the GPU Operator (default gpu-operator)")
    g.addoption("--gpu-nodes", help="comma-separated GPU node names (default: discovered by label)")
    g.addoption("--expected-gpus", help="node=count,... physical GPUs per node (default: nvidia-smi)")
    g.addoption("--replicas", help="time-slicing replicas per GPU, an integer >= 2 (default 4)")
    g.addoption("--replica-profile", action="append", default=[],
                help="'GPU product=replicas' profile chosen through nvidia.com/device-plugin.config (repeatable)")
    g.addoption("--chart-version", help="GPU Operator chart version (default v26.3.0)")
    g.addoption("--chart-repo", help="GPU Operator chart repository URL")
    g.addoption("--min-driver", help="minimum NVIDIA driver major version (default 470; the workload image's "
                "CUDA raises it when it needs more: 525 for the default CUDA 12.5 image)")
    g.addoption("--no-workload", action="store_true", help="skip workload pods: a strictly read-only audit")
    g.addoption("--host-backend", help="none | lab | local | ssh | paramiko | ansible | pod")
    g.addoption("--node-mapping", help="node -> host: name | internal-ip | map")
    g.addoption("--host-map", help="YAML/TOML file mapping node names to host addresses")
    g.addoption("--dcgm-access", help="proxy (through the apiserver, default) | direct (pod IP:9400)")
    g.addoption("--host-only", action="store_true",
                help="host-level checks only, no Kubernetes: run on a GPU machine with --host-backend local")
    g.addoption("--lab", action="store_true", help="target the local lab (started from --lab-spec if not running)")
    g.addoption("--lab-spec", help="lab node spec YAML for --lab")
    g.addoption("--report-dir", help="where runs are written (default reports/)")
    g.addoption("--timeouts", help="name=seconds,... (helm, toolkit_ready, node_ready, advertise, workload, api)")


def _active(config: pytest.Config) -> bool:
    if hasattr(config, "workerinput"):
        return bool(config.workerinput.get("gpu_conformance"))
    for arg in config.args:
        p = Path(arg.split("::")[0])
        p = p if p.is_absolute() else Path(config.invocation_params.dir) / p
        try:
            p.resolve().relative_to(FEATURES)
            return True
        except ValueError:
            continue
    return False


def _kv(text: str | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in filter(None, (text or "").split(",")):
        if "=" not in part:
            raise pytest.UsageError(f"{what}: expected name=value, got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _raw_settings(config: pytest.Config) -> dict:
    from provision.settings import load_pyproject

    o = config.option
    raw: dict = load_pyproject(Path(config.invocation_params.dir))
    modes = [m for m in ("provision", "plan", "rollback") if getattr(o, m)]
    if len(modes) > 1:
        raise pytest.UsageError(f"choose one of --provision, --plan, --rollback (got {', '.join(modes)})")
    raw["mode"] = modes[0] if modes else "audit"
    cli = {
        "kubeconfig": o.kubeconfig or (None if raw.get("kubeconfig") else os.environ.get("KUBECONFIG")),
        "context": o.kube_context, "namespace": o.operator_namespace,
        "gpu_nodes": tuple(n.strip() for n in o.gpu_nodes.split(",") if n.strip()) if o.gpu_nodes else None,
        "replicas": o.replicas, "chart_version": o.chart_version, "chart_repo": o.chart_repo,
        "min_driver": o.min_driver, "host_backend": o.host_backend, "node_mapping": o.node_mapping,
        "dcgm_access": o.dcgm_access, "report_dir": o.report_dir,
    }
    if o.expected_gpus:
        try:
            cli["expected_gpus"] = {k: int(v) for k, v in _kv(o.expected_gpus, "--expected-gpus").items()}
        except ValueError as exc:
            raise pytest.UsageError(f"--expected-gpus: counts must be integers ({exc})") from exc
    if o.replica_profile:
        cli["replica_profiles"] = dict(p.rsplit("=", 1) for p in o.replica_profile if "=" in p)
    if o.timeouts:
        try:
            cli["timeouts"] = {k: float(v) for k, v in _kv(o.timeouts, "--timeouts").items()}
        except ValueError as exc:
            raise pytest.UsageError(f"--timeouts: values are seconds ({exc})") from exc
    if o.no_workload:
        cli["workload"] = False
    if o.host_only:
        cli["host_only"] = True
        cli["host_backend"] = cli.get("host_backend") or "local"
    ansible_inventory = getattr(o, "ansible_inventory", None)
    if ansible_inventory:
        from provision.hosts.inventory import InventoryError, load_inventory

        cli["ansible_inventory"] = ansible_inventory
        cli["host_backend"] = cli.get("host_backend") or "ansible"  # (the key is there, None, when not given)
        try:
            inventory = load_inventory(ansible_inventory)
        except InventoryError as exc:
            raise pytest.UsageError(str(exc)) from exc
        # The original setup's host vars: gpu_count is the expected number of physical GPUs of that node.
        counts = {h.name: int(h.gpu_count) for h in inventory if h.gpu_count is not None}
        if counts and not cli.get("expected_gpus"):
            cli["expected_gpus"] = counts
    for ours, theirs in (("ssh_config", "ssh_config"), ("ssh_identity_file", "ssh_identity_file")):
        if getattr(o, theirs, None):
            cli[ours] = getattr(o, theirs)
    if getattr(o, "sudo", False):
        cli["sudo"] = True
    if o.host_map:
        from provision.hosts.spec import load_host_map

        cli["hosts"] = load_host_map(o.host_map)
        cli["node_mapping"] = cli.get("node_mapping") or "map"
    raw.update({k: v for k, v in cli.items() if v is not None})
    if isinstance(raw.get("gpu_nodes"), list):
        raw["gpu_nodes"] = tuple(raw["gpu_nodes"])
    if o.lab or raw.pop("lab", False):
        raw.update(_lab_settings(config, raw))
        # Options given on the command line still win over the lab's defaults (e.g. a ServiceAccount
        # token's kubeconfig for a least-privilege run against the lab).
        explicit = {"kubeconfig": o.kubeconfig, "chart_repo": o.chart_repo, "dcgm_access": o.dcgm_access}
        raw.update({k: v for k, v in explicit.items() if v is not None})
    return raw


def _lab_settings(config: pytest.Config, raw: dict) -> dict:
    """Settings that point the suite at the local lab (starting it from --lab-spec if it is not running)."""
    from lab import cluster, processes
    from lab.state import LabPaths

    paths = LabPaths()
    spec = config.option.lab_spec
    if processes.running(paths, "kube-apiserver") is None:
        print(f"[gpu-conformance] starting the local lab ({spec or 'default spec'})", file=sys.stderr)
        st = cluster.up(Path(spec) if spec else None, paths=paths, quiet=True)
    else:
        st = cluster.status(paths)
    out = {
        "kubeconfig": st["kubeconfig"], "host_roots": {n["name"]: n["host_root"] for n in st["nodes"]},
        "chart_repo": st["chart_repo"], "chart_repo_name": "lab", "helm": st["helm"], "dcgm_access": "direct",
        "lab_state": st["state_dir"],
    }
    if raw.get("host_backend") in (None, "lab"):
        out["host_backend"] = "lab"
    # helm's repository list and cache for the lab live in the lab's folder, not in the user's ~/.config/helm.
    home = Path(st["state_dir"]) / "helm-home"
    os.environ.setdefault("HELM_CONFIG_HOME", str(home / "config"))
    os.environ.setdefault("HELM_CACHE_HOME", str(home / "cache"))
    os.environ.setdefault("HELM_DATA_HOME", str(home / "data"))
    return out


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "per_node: scenario runs once per GPU node")
    config.addinivalue_line("markers", "cluster: scenario runs once for the cluster")
    config.addinivalue_line("markers", "workload: scenario creates a test pod (skipped with --no-workload)")
    config.addinivalue_line("markers", "host: host-level scenario, run by --host-only (no Kubernetes needed)")
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
            settings = validate(_raw_settings(config))
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
    config.stash[_STATE] = _Setup(settings, run_id, run_dir, started=time.time())
    if not worker:
        _discover(config)


class _Setup:
    def __init__(self, settings, run_id: str, run_dir: Path, started: float) -> None:
        self.settings = settings
        self.run_id = run_id
        self.run_dir = run_dir
        self.started = started
        self.nodes: tuple[str, ...] = ()
        self.discovery_error: str | None = None
        self.results: list[dict] = []
        self.environment: dict = {}
        self.rollback_changes = 0


_STATE = pytest.StashKey[_Setup]()


def _discover(config: pytest.Config) -> None:
    """Connect and find the GPU nodes once, on the controller; workers get the same sorted list."""
    from provision.context import discover_gpu_nodes
    from provision.kube import ClusterUnreachable, Kube, connect
    from provision.settings import SettingsError

    setup = config.stash[_STATE]
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
    import socket

    name = re.sub(r"[^a-z0-9.-]+", "-", socket.gethostname().lower()).strip("-.")
    return name or "localhost"


def _k8s_version(api) -> str:
    from kubernetes import client

    try:
        return client.VersionApi(api).get_code().git_version
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node) -> None:
    """xdist: hand the controller's settings, run folder and node list to each worker."""
    config = node.config
    if _STATE not in config.stash:
        return
    setup = config.stash[_STATE]
    node.workerinput["gpu_conformance"] = {
        "settings": setup.settings.to_json(), "run_id": setup.run_id, "run_dir": str(setup.run_dir),
        "nodes": list(setup.nodes), "discovery_error": setup.discovery_error,
    }


def _nodes(config: pytest.Config) -> tuple[tuple[str, ...], str | None]:
    if hasattr(config, "workerinput"):
        info = config.workerinput["gpu_conformance"]
        return tuple(info["nodes"]), info["discovery_error"]
    setup = config.stash[_STATE]
    return setup.nodes, setup.discovery_error


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "gpu_node" not in metafunc.fixturenames or _STATE not in metafunc.config.stash:
        return
    if metafunc.definition.get_closest_marker(PER_NODE):
        nodes, _ = _nodes(metafunc.config)
        from steps.support import NO_GPU_NODES

        params = list(nodes) or [NO_GPU_NODES]
        metafunc.parametrize("gpu_node", params, ids=params)
    else:
        metafunc.parametrize("gpu_node", [None], ids=["cluster"])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _STATE not in config.stash:
        return
    settings = config.stash[_STATE].settings
    keep, drop = [], []
    for item in items:
        is_host = item.get_closest_marker("host") is not None
        (keep if is_host == settings.host_only else drop).append(item)
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
    from provision.context import RunContext
    from provision.converge import all_convergers
    from provision.engine import Engine
    from provision.kube import Kube, connect
    from steps.support import RunState

    config = request.config
    if _STATE not in config.stash:
        pytest.skip("the GPU conformance plugin is not active (run `pytest features/`)")
    setup = config.stash[_STATE]
    nodes, error = _nodes(config)
    kube = None if setup.settings.host_only else Kube(connect(setup.settings), setup.settings)
    ctx = RunContext(setup.settings, kube, setup.run_dir, nodes)
    engine = Engine(ctx, all_convergers(), setup.run_dir / "converge")
    ctx.engine = engine
    state = RunState(ctx, engine, nodes, error)
    yield state
    ctx.close()


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


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if _STATE not in item.config.stash:
        return
    if report.when == "call" or (report.when == "setup" and (report.failed or report.skipped)):
        from provision.outcomes import classify

        exc = call.excinfo.value if call.excinfo else None
        skipped = report.skipped
        from pytest_bdd.scenario import scenario_wrapper_template_registry

        scenario = scenario_wrapper_template_registry.get(getattr(item, "obj", None))
        node = getattr(getattr(item, "callspec", None), "params", {}).get("gpu_node")
        message = ""
        if skipped and isinstance(report.longrepr, tuple):
            message = str(report.longrepr[2]).removeprefix("Skipped: ")
        elif exc is not None:
            message = str(exc).strip()
        report.user_properties.append(("gpu_conformance", json.dumps({
            "node": node, "feature": scenario.feature.name if scenario else item.module.__name__,
            "scenario": scenario.name if scenario else item.name,
            "outcome": classify(exc if not skipped else None, skipped), "message": message[:4000],
            "nodeid": item.nodeid, **_drift_fields(exc, report),
        })))


def _drift_fields(exc: BaseException | None, report: pytest.TestReport) -> dict:
    """summary.json per result: "drift" (the plan lines still pending for it) and "observation" ("ok": the real
    state is right and only drift fails it; "failed": what was observed is wrong; null: nothing observed)."""
    from steps.support import current_drift

    observation = getattr(exc, "observation", "ok" if report.passed else None)
    return {"drift": list(getattr(exc, "drift", None) or current_drift()), "observation": observation}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for key, value in report.user_properties:
        if key == "gpu_conformance":
            _RESULTS.append(json.loads(value))


_RESULTS: list[dict] = []
_HEAP = HeapSettler()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    try:
        return (yield)
    finally:
        release_item(item)
        _HEAP.item_done()


@pytest.hookimpl(tryfirst=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    _HEAP.finish()  # before pytest's own final collections and the interpreter's shutdown walk the heap


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if _STATE in config.stash:  # every process that writes Allure results, xdist workers included
        from provision.reporting.allure_writer import use_fast_writer

        use_fast_writer()
    if _STATE not in config.stash or hasattr(config, "workerinput"):
        return
    setup = config.stash[_STATE]
    if setup.settings.mode in ("plan", "rollback"):
        _run_controller_mode(config, setup)


def _run_controller_mode(config: pytest.Config, setup: _Setup) -> None:
    """--plan prints every converger's plan up front; --rollback replays the record. Both on the controller."""
    from provision.context import RunContext
    from provision.converge import all_convergers
    from provision.engine import Engine
    from provision.hosts.guard import WRITE_GUARD
    from provision.kube import Kube, connect
    from provision.rollback import rollback

    kube = Kube(connect(setup.settings), setup.settings)
    ctx = RunContext(setup.settings, kube, setup.run_dir, setup.nodes)
    tw = config.get_terminal_writer()
    if setup.settings.mode == "plan" and setup.discovery_error and setup.nodes:
        tw.line(f"\n--plan: nothing planned: {setup.discovery_error}", red=True)  # the scenarios fail with it
        ctx.close()
        return
    if setup.settings.mode == "plan":
        engine = Engine(ctx, all_convergers(), setup.run_dir / "converge")
        ctx.engine = engine
        text = []
        for conv in all_convergers():
            text.append(engine.ensure(conv.name).plan_text())
        plan = "\n".join(text)
        (setup.run_dir / "plan.txt").write_text(plan + "\n")
        tw.line("\n--plan: the changes --provision would make (nothing was changed)\n" + plan, bold=True)
    else:
        with WRITE_GUARD.allow("--rollback"):
            report = rollback(ctx)
        setup.rollback_changes = report.changes
        tw.line("\n--rollback:\n" + "\n".join("  " + d for d in report.done) or "  nothing to roll back", bold=True)
        for target, err in report.errors.items():
            tw.line(f"  could not roll back {target}: {err}", red=True)
        _RESULTS.append({"node": None, "feature": "Rollback", "scenario": "Restore what the suite changed",
                         "outcome": "broken" if report.errors else "passed",
                         "message": "; ".join(f"{k}: {v}" for k, v in report.errors.items()), "nodeid": "rollback"})
    ctx.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if _STATE not in config.stash or hasattr(config, "workerinput"):
        return
    setup = config.stash[_STATE]
    from provision.engine import Result

    changes = setup.rollback_changes
    converge_dir = setup.run_dir / "converge"
    convergers = []
    for f in sorted(converge_dir.glob("*.json")) if converge_dir.exists() else []:
        r = Result.from_json(json.loads(f.read_text()))
        changes += len(r.applied)
        convergers.append({"name": r.name, "planned": [c.line() for c in r.planned],
                           "applied": [c.line() for c in r.applied], "error": r.error, "seconds": r.seconds})
    results = sorted(_RESULTS, key=lambda r: (r["node"] or "", r["feature"], r["scenario"]))
    summary = {
        "run_id": setup.run_id, "mode": setup.settings.mode,
        "started": dt.datetime.fromtimestamp(setup.started, dt.UTC).isoformat(),
        "finished": dt.datetime.now(dt.UTC).isoformat(), "changes": changes,
        "environment": setup.environment, "gpu_nodes": list(setup.nodes), "convergers": convergers,
        "results": results,
    }
    (setup.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _split_allure(setup)
    if results:
        from provision.reporting.exit_codes import final_exit_code

        session.exitstatus = final_exit_code(int(exitstatus), summary)


def _split_allure(setup: _Setup) -> None:
    src = setup.run_dir / "allure-results"
    if not src.exists():
        return
    try:
        from provision.reporting.allure_split import split_by_node
        from provision.reporting.build import SPLIT_DIR

        split_by_node(src, setup.run_dir / SPLIT_DIR)
    except Exception as exc:  # noqa: BLE001 - reports must not hide the run's results
        print(f"[gpu-conformance] could not split Allure results per node: {exc}", file=sys.stderr)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if _STATE not in config.stash or hasattr(config, "workerinput"):
        return
    setup = config.stash[_STATE]
    counts: dict[str, int] = {}
    for r in _RESULTS:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    terminalreporter.write_sep("=", f"GPU conformance ({setup.settings.mode}): "
                               + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    terminalreporter.write_line(f"reports: {setup.run_dir} (summary.json, junit.xml, allure-results/)")
