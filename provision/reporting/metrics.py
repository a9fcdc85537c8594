"""A run's results as Prometheus metrics (prometheus_client): a node-exporter textfile and a Pushgateway push.

Metrics (all gauges; one registry per run, built from summary.json):

* ``gpu_conformance_check_outcome{node,feature,scenario,outcome}`` 1: one series per node and check, its outcome
  in the ``outcome`` label (passed | failed | broken | skipped; outline examples: the worst); cluster-wide checks
  have ``node="_cluster"``. Alert on ``gpu_conformance_check_outcome{outcome=~"failed|broken"}``.
* ``gpu_conformance_run_info{run_id,mode,cluster,suite_version}`` 1
* ``gpu_conformance_run_duration_seconds``, ``gpu_conformance_run_finished_timestamp_seconds``,
  ``gpu_conformance_run_exit_code``, ``gpu_conformance_run_nodes``, ``gpu_conformance_run_nodes_with_problems``
* ``gpu_conformance_run_results{outcome}``: results per outcome
* ``gpu_conformance_changes{kind}``: counts of ``changes_since_previous`` (new_failures, fixed, ...)
* ``gpu_conformance_node_health{node,field}``: every number in the node's ``health`` object of summary.json
  (GPU health, when the run measured it), ``field`` its dotted path (``gpus.0.temperature_c``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, write_to_textfile

from provision.reporting.changes import KINDS, check_outcomes, run_exit_code, summary_nodes

PREFIX = "gpu_conformance"
OUTCOMES = ("passed", "failed", "broken", "skipped")
DEFAULT_JOB = "gpu-conformance"
PUSH_TIMEOUT_S = 30.0


class MetricsError(RuntimeError):
    """The metrics could not be written or pushed; the message says where and why."""


def _seconds(summary: Mapping[str, Any]) -> float | None:
    try:
        started = datetime.fromisoformat(str(summary["started"]))
        finished = datetime.fromisoformat(str(summary["finished"]))
    except (KeyError, TypeError, ValueError):
        return None
    return max(0.0, (finished - started).total_seconds())


def _numbers(value: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """Every number (bools as 0 / 1) under ``value`` with its dotted path; strings and nulls are skipped."""
    if isinstance(value, int | float):  # bool is an int
        yield path, float(value)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _numbers(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{path}.{i}" if path else str(i))


def node_health(summary: Mapping[str, Any]) -> dict[str, Any]:
    """``{node: health object}``: a top-level ``health`` map of summary.json, or a ``health`` object per node
    under ``nodes``; empty when the run has none (runs without the health feature)."""
    health = summary.get("health")
    if isinstance(health, Mapping):
        return {str(k): v for k, v in health.items()}
    nodes = summary.get("nodes")
    if isinstance(nodes, Mapping):
        return {str(k): v["health"] for k, v in nodes.items() if isinstance(v, Mapping) and "health" in v}
    return {}


def build_registry(summary: Mapping[str, Any], *, fail_on: str = "any") -> CollectorRegistry:
    """A fresh registry holding the run's metrics (see the module's docstring)."""
    reg = CollectorRegistry(auto_describe=True)
    env = summary.get("environment") or {}

    info = Gauge(f"{PREFIX}_run_info", "The run: id, mode, cluster, suite version",
                 ["run_id", "mode", "cluster", "suite_version"], registry=reg)
    info.labels(str(summary.get("run_id") or ""), str(summary.get("mode") or ""), str(env.get("cluster") or ""),
                str(env.get("suite_version") or "")).set(1)

    outcome = Gauge(f"{PREFIX}_check_outcome", "1 per node and check; its outcome in the outcome label",
                    ["node", "feature", "scenario", "outcome"], registry=reg)
    problem_nodes: set[str] = set()
    for (node, feature, scenario), (result, _msg) in check_outcomes(summary).items():
        outcome.labels(node, feature, scenario, result).set(1)
        if result in ("failed", "broken") and not node.startswith("_"):
            problem_nodes.add(node)

    results = Gauge(f"{PREFIX}_run_results", "Results of the run per outcome", ["outcome"], registry=reg)
    counts = dict.fromkeys(OUTCOMES, 0)
    for r in summary.get("results") or ():
        counts[r.get("outcome") if r.get("outcome") in counts else "broken"] += 1
    for name, n in counts.items():
        results.labels(name).set(n)

    Gauge(f"{PREFIX}_run_nodes", "GPU nodes the run covered", registry=reg).set(len(summary_nodes(summary)))
    Gauge(f"{PREFIX}_run_nodes_with_problems", "GPU nodes with a failed or broken check",
          registry=reg).set(len(problem_nodes))
    Gauge(f"{PREFIX}_run_exit_code", "The run's exit code (0 conformant, 10 non-conformant, 11 could not check)",
          registry=reg).set(run_exit_code(summary, fail_on) if summary.get("results") else 11)
    seconds = _seconds(summary)
    if seconds is not None:
        Gauge(f"{PREFIX}_run_duration_seconds", "Wall time of the run", registry=reg).set(seconds)
    try:
        finished = datetime.fromisoformat(str(summary.get("finished"))).timestamp()
        Gauge(f"{PREFIX}_run_finished_timestamp_seconds", "When the run finished (Unix time)",
              registry=reg).set(finished)
    except (TypeError, ValueError):
        pass

    changes = summary.get("changes_since_previous")
    if isinstance(changes, Mapping):
        g = Gauge(f"{PREFIX}_changes", "Changes since the previous run, per kind", ["kind"], registry=reg)
        for kind in KINDS:
            g.labels(kind).set(len(changes.get(kind) or ()))

    health = node_health(summary)
    if health:
        h = Gauge(f"{PREFIX}_node_health", "GPU health values measured on the node (field: path in summary.json)",
                  ["node", "field"], registry=reg)
        for node, obj in sorted(health.items()):
            for field, value in _numbers(obj):
                h.labels(node, field).set(value)
    return reg


def write_textfile(path: Path | str, registry: CollectorRegistry) -> Path:
    """Write ``registry`` for node-exporter's textfile collector (atomically: a temp file renamed into place)."""
    path = Path(path)
    try:
        write_to_textfile(str(path), registry)
    except OSError as exc:
        raise MetricsError(f"cannot write the metrics file {path}: {exc}") from exc
    return path


def grouping_key(summary: Mapping[str, Any]) -> dict[str, str]:
    """The Pushgateway grouping key besides the job: the cluster (its API server URL)."""
    return {"cluster": str((summary.get("environment") or {}).get("cluster") or "unknown")}


def push(url: str, registry: CollectorRegistry, summary: Mapping[str, Any], *, job: str = DEFAULT_JOB) -> None:
    """PUT the run's metrics to the Pushgateway at ``url`` (replacing the group of the job and cluster, so a check
    or node that is gone does not linger)."""
    try:
        push_to_gateway(url, job=job, registry=registry, grouping_key=grouping_key(summary), timeout=PUSH_TIMEOUT_S)
    except OSError as exc:
        raise MetricsError(f"cannot push the metrics to the Pushgateway at {url}: {exc}; check --pushgateway "
                           "(its URL, e.g. http://pushgateway:9091) and that it is reachable") from exc
