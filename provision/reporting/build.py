"""Build every report of one run: per-node Allure results, Allure 3 HTML per node and for the run, fleet.html.

``reports/<run-id>/`` in (written by the suite's conftest): ``summary.json``, ``allure-results/``.
Out (rebuilt on every call; the raw ``allure-results/`` is never modified):

* ``allure-results-by-node/<node>/``, ``allure-results-by-node/_cluster/``: results split per node, each with
  ``environment.properties`` and an Allure 2 ``categories.json``;
* ``allure-results-by-node/.run-meta/``: the whole run's ``environment.properties`` (added to ``_all``);
* ``html/<node>/``, ``html/_cluster/``, ``html/_all/``: Allure 3 reports, each with its ``history.jsonl``;
* ``fleet.html``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provision.reporting import ALL_KEY, CLUSTER_KEY
from provision.reporting.allure_html import DEFAULT_HISTORY_LIMIT, ReportSpec, generate_reports
from provision.reporting.allure_meta import write_categories_json, write_environment
from provision.reporting.allure_split import split_by_node, validate_node_name
from provision.reporting.fleet import write_fleet

SPLIT_DIR = "allure-results-by-node"
RUN_META_DIR = ".run-meta"


@dataclass(frozen=True)
class ReportPaths:
    fleet: Path
    """``reports/<run-id>/fleet.html``"""
    all_html: Path
    """``reports/<run-id>/html/_all/index.html``"""
    node_html: dict[str, Path]
    """``{node: reports/<run-id>/html/<node>/index.html}``, plus ``"_cluster"`` when there are cluster-wide results"""


def _summary_nodes(summary: dict[str, Any]) -> set[str]:
    nodes = {str(n) for n in ((summary.get("environment") or {}).get("driver_versions") or {})}
    nodes.update(str(r["node"]) for r in summary.get("results") or () if r.get("node") is not None)
    return nodes


def previous_run_dir(summary: dict[str, Any]) -> Path | None:
    """The previous run the suite compared this run with (``changes_since_previous``), if its folder is still there:
    its Allure history carries the trends on."""
    prev = (summary.get("changes_since_previous") or {}).get("previous") or {}
    folder = Path(prev["dir"]) if prev.get("dir") else None
    return folder if folder is not None and folder.is_dir() else None


def build_reports(
    run_dir: Path | str,
    previous: Path | str | None = None,
    *,
    jobs: int | None = None,
    allure_bin: Path | str | None = None,
    history_limit: int | None = DEFAULT_HISTORY_LIMIT,
    single_file: bool = True,
) -> ReportPaths:
    """Build all reports of ``run_dir``; ``previous``: the previous run's folder, to carry Allure history
    (default: the run the suite compared this one with, from summary.json's ``changes_since_previous``).

    ``single_file`` (default): every Allure report is one file that opens from disk (``file://``, as a CI
    artifact is); False: Allure's multi-file form, to be served (``python -m provision.reporting serve``).

    Prints nothing. Raises AllureSetupError when the Allure CLI is not installed (run the set-up), ValueError
    for a node name that is not a DNS-1123 subdomain.
    """
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    results_dir = run_dir / "allure-results"
    results_dir.mkdir(exist_ok=True)
    if previous is None:
        previous = previous_run_dir(summary)

    split_root = run_dir / SPLIT_DIR
    if split_root.exists():
        shutil.rmtree(split_root)
    folders = split_by_node(results_dir, split_root)
    # A node in the summary without any Allure result (trap: a fixture error writes none) still gets a report.
    for node in sorted(_summary_nodes(summary)):
        validate_node_name(node)
        if node not in folders:
            folders[node] = split_root / node
            folders[node].mkdir(parents=True)
    if CLUSTER_KEY not in folders and any(r.get("node") is None for r in summary.get("results") or ()):
        folders[CLUSTER_KEY] = split_root / CLUSTER_KEY
        folders[CLUSTER_KEY].mkdir(parents=True)

    for key, folder in folders.items():
        write_environment(folder, summary, None if key == CLUSTER_KEY else key)
        write_categories_json(folder)
    run_meta = split_root / RUN_META_DIR
    run_meta.mkdir(parents=True, exist_ok=True)
    write_environment(run_meta, summary, None)

    cluster = (summary.get("environment") or {}).get("cluster") or "cluster"
    run_id = summary.get("run_id") or run_dir.name
    specs = [ReportSpec(key=ALL_KEY, results_dirs=(results_dir, run_meta), name=f"{cluster} \u2014 run {run_id}", whole_run=True)]
    for key, folder in sorted(folders.items()):
        label = "cluster-wide" if key == CLUSTER_KEY else key
        specs.append(ReportSpec(key=key, results_dirs=(folder,), name=f"{label} \u2014 {cluster} \u2014 run {run_id}"))
    html = generate_reports(
        specs, run_dir / "html", previous=previous, jobs=jobs, allure_bin=allure_bin, history_limit=history_limit,
        single_file=single_file,
    )
    fleet = write_fleet(run_dir)
    return ReportPaths(
        fleet=fleet,
        all_html=html[ALL_KEY],
        node_html={k: v for k, v in html.items() if k != ALL_KEY},
    )
