"""The run's results: one row per scenario (and node) from pytest's reports, summary.json at the end with the
convergers' results, the Allure results split per node, the exit code, and the terminal's summary line."""

from __future__ import annotations

import datetime as dt
import json
import sys

import pytest

from gpu_conformance.run import STATE, Setup

RESULTS: list[dict] = []   # this process's result rows (the controller's, with xdist: every worker's)
PROPERTY = "gpu_conformance"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if STATE not in item.config.stash:
        return
    if report.when == "call" or (report.when == "setup" and (report.failed or report.skipped)):
        from pytest_bdd.scenario import scenario_wrapper_template_registry

        from provision.outcomes import classify

        exc = call.excinfo.value if call.excinfo else None
        skipped = report.skipped
        scenario = scenario_wrapper_template_registry.get(getattr(item, "obj", None))
        node = getattr(getattr(item, "callspec", None), "params", {}).get("gpu_node")
        message = ""
        if skipped and isinstance(report.longrepr, tuple):
            message = str(report.longrepr[2]).removeprefix("Skipped: ")
        elif exc is not None:
            message = str(exc).strip()
        report.user_properties.append((PROPERTY, json.dumps({
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


HEALTH: dict[str, dict] = {}  # node -> measured GPU health values (summary.json `health`)
HEALTH_PROPERTY = "gpu_conformance_health"
NODES: dict[str, dict] = {}  # node -> fields about how it was judged (summary.json `nodes`: e.g. {"mig": {...}})
NODE_PROPERTY = "gpu_conformance_node"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for key, value in report.user_properties:
        if key == PROPERTY:
            RESULTS.append(json.loads(value))
        elif key == HEALTH_PROPERTY and report.when == "call":
            entry = json.loads(value)
            HEALTH.setdefault(entry["node"] or "", {}).update(entry["measured"])
        elif key == NODE_PROPERTY:
            entry = json.loads(value)
            NODES.setdefault(entry["node"] or "", {}).update(entry["fields"])


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if STATE not in config.stash or hasattr(config, "workerinput"):
        return
    setup = config.stash[STATE]
    from provision.engine import Engine

    changes = setup.rollback_changes
    convergers = []
    for r in Engine(None, [], setup.run_dir / "converge").all_results():  # what every process stored
        changes += len(r.applied)
        convergers.append({"name": r.name, "planned": [c.line() for c in r.planned],
                           "applied": [c.line() for c in r.applied], "error": r.error, "seconds": r.seconds})
    results = sorted(RESULTS, key=lambda r: (r["node"] or "", r["feature"], r["scenario"]))
    if "driver_versions" not in setup.environment and not setup.settings.host_only:
        setup.environment["driver_versions"] = _driver_versions(setup)
    summary = {
        "run_id": setup.run_id, "mode": setup.settings.mode,
        "started": dt.datetime.fromtimestamp(setup.started, dt.UTC).isoformat(),
        "finished": dt.datetime.now(dt.UTC).isoformat(), "changes": changes,
        "environment": setup.environment, "gpu_nodes": list(setup.nodes), "convergers": convergers,
        "results": results,
    }
    if HEALTH:
        summary["health"] = {node: HEALTH[node] for node in sorted(HEALTH)}
    nodes = {node: dict(fields) for node, fields in NODES.items()}
    for node, d in _distributions(setup).items():
        nodes.setdefault(node, {}).update(d)
    if nodes:
        summary["nodes"] = {node: {**(summary.get("nodes") or {}).get(node, {}), **nodes[node]} for node in sorted(nodes)}
    _node_modes(setup, summary)
    summary["changes_since_previous"] = _changes_since_previous(setup, summary)
    (setup.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    _split_allure(setup)
    if results:
        from provision.reporting.changes import run_exit_code
        from provision.reporting.exit_codes import PYTEST_PASSTHROUGH, final_exit_code

        code = final_exit_code(int(exitstatus), summary)
        session.exitstatus = code if code in PYTEST_PASSTHROUGH else run_exit_code(summary, setup.settings.fail_on)
    _publish_metrics(setup, summary)


def _node_modes(setup: Setup, summary: dict) -> None:
    """summary["nodes"][node]: the runtime mode and sharing each GPU node was judged in (issue 16)."""
    if not setup.nodes or setup.settings.host_only:
        return
    from provision.reporting.node_modes import read

    try:
        modes = read(setup.settings, list(setup.nodes))
    except Exception as exc:  # noqa: BLE001 - informational only; the run's results matter more
        print(f"[gpu-conformance] could not read the nodes' runtime modes: {exc}", file=sys.stderr)
        return
    for node, fields in modes.items():
        summary.setdefault("nodes", {}).setdefault(node, {}).update(fields)


def _changes_since_previous(setup: Setup, summary: dict) -> dict:
    """Per node and check, what changed since the previous run (--previous, or the latest matching run)."""
    from provision.reporting.changes import PreviousRunError, changes_for_run

    try:
        changes = changes_for_run(setup.run_dir, summary, previous=setup.settings.previous_run)
    except PreviousRunError as exc:
        changes = {"previous": None, "error": str(exc)}
    setup.changes = changes
    return changes


def _publish_metrics(setup: Setup, summary: dict) -> None:
    """--metrics-file and --pushgateway: the run's metrics (a failure to publish is reported, never hides results)."""
    s = setup.settings
    if not (s.metrics_file or s.pushgateway):
        return
    from provision.reporting.metrics import MetricsError, build_registry, push, write_textfile

    registry = build_registry(summary, fail_on=s.fail_on)
    for target, publish in ((s.metrics_file, lambda: write_textfile(s.metrics_file, registry)),
                            (s.pushgateway, lambda: push(s.pushgateway, registry, summary, job=s.pushgateway_job))):
        if not target:
            continue
        try:
            publish()
            setup.published.append(target)
        except MetricsError as exc:
            setup.publish_errors.append(str(exc))


def _driver_versions(setup: Setup) -> dict[str, str]:
    """The GPU nodes' driver versions from their GFD labels, read at the end of the run (a --provision may have
    just started GFD); a node without the labels is left out (its report says unknown)."""
    if not setup.nodes:
        return {}
    from provision.kube import Kube, connect
    from provision.observe.gfd import driver_versions

    try:
        nodes = Kube(connect(setup.settings), setup.settings).list_nodes()
    except Exception as exc:  # noqa: BLE001 - informational only; the run's results matter more
        print(f"[gpu-conformance] could not read the nodes' driver labels: {exc}", file=sys.stderr)
        return {}
    return driver_versions(nodes, setup.nodes)


def _distributions(setup: Setup) -> dict[str, dict]:
    """Each GPU node's distribution: as the run's distribution gate found it (node object, else host files), else
    from the node objects alone (provision/observe/distribution.py)."""
    from provision.converge.distribution import read_distributions

    found = read_distributions(setup.run_dir)
    missing = [n for n in setup.nodes if n not in found]
    if missing and not setup.settings.host_only:
        from provision.kube import Kube, connect
        from provision.observe.distribution import detect_node

        try:
            objs = Kube(connect(setup.settings), setup.settings).list_nodes()
        except Exception:  # noqa: BLE001 - informational only
            objs = {}
        for n in missing:
            if n in objs:
                d = detect_node(objs[n])
                found[n] = {"distribution": d.name, "evidence": d.evidence}
    return {n: {"distribution": d.get("distribution"), "distribution_evidence": d.get("evidence")}
            for n, d in found.items() if n in setup.nodes}


def _split_allure(setup: Setup) -> None:
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
    if STATE not in config.stash or hasattr(config, "workerinput"):
        return
    setup = config.stash[STATE]
    counts: dict[str, int] = {}
    for r in RESULTS:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    terminalreporter.write_sep("=", f"GPU conformance ({setup.settings.mode}): "
                               + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    terminalreporter.write_line(f"reports: {setup.run_dir} (summary.json, junit.xml, allure-results/)")
    if setup.changes is not None:
        from provision.reporting.changes import console_lines

        if setup.changes.get("error"):
            terminalreporter.write_line(f"changes since the previous run: {setup.changes['error']}", red=True)
        else:
            counts = setup.changes.get("counts") or {}
            bad = counts.get("new_failures") or counts.get("nodes_gone")
            for i, line in enumerate(console_lines(setup.changes)):
                terminalreporter.write_line(line, red=bool(bad) and i == 0)
    for target in setup.published:
        terminalreporter.write_line(f"metrics: {target}")
    for err in setup.publish_errors:
        terminalreporter.write_line(f"metrics: {err}", red=True)
