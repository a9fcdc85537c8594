"""Fixtures for the reporting tests: a real pytest-bdd run with allure-pytest-bdd, Chromium, a local HTTP server."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from provision.reporting.build import ReportPaths, build_reports

CHROMIUM = Path("/usr/bin/chromium")
NODES = ("gpu-node-a", "gpu-node-b", "gpu-node-c")
FAULTY_NODE = "gpu-node-b"
FAILURE_MESSAGE = "GPUs not advertised: node gpu-node-b reports nvidia.com/gpu=0 (expected 8)"
BROKEN_NODE = "gpu-node-c"
BROKEN_MESSAGE = "DCGM exporter unreachable on gpu-node-c:9400: connection refused"

FEATURE = """\
Feature: GPU node conformance

  Scenario: GPU operator is installed
    Given the cluster is reachable
    Then the GPU operator chart is deployed

  Scenario Outline: Node advertises GPUs
    Given the GPU node "<node>"
    Then the node advertises nvidia.com/gpu

    Examples:
      | node       |
      | gpu-node-a |
      | gpu-node-b |
      | gpu-node-c |

  Scenario Outline: DCGM exporter answers
    Given the GPU node "<node>"
    Then the DCGM exporter returns GPU metrics

    Examples:
      | node       |
      | gpu-node-a |
      | gpu-node-b |
      | gpu-node-c |

  Scenario Outline: Time-slicing is applied
    Given the GPU node "<node>"
    Then the node advertises the time-sliced replicas

    Examples:
      | node       |
      | gpu-node-a |
      | gpu-node-b |
      | gpu-node-c |
"""

STEPS = """\
import allure
import pytest
from pytest_bdd import given, parsers, scenarios, then

scenarios("gpu.feature")


@given("the cluster is reachable")
def cluster():
    pass


@then("the GPU operator chart is deployed")
def operator_chart():
    allure.attach("NAME: gpu-operator\\nSTATUS: deployed\\nCHART: gpu-operator-v25.3.0", name="helm status",
                  attachment_type=allure.attachment_type.TEXT)


@given(parsers.parse('the GPU node "{node}"'), target_fixture="node")
def gpu_node(node):
    allure.dynamic.label("node", node)
    return node


@then("the node advertises nvidia.com/gpu")
def advertises(node):
    gpus = 0 if node == "gpu-node-b" else 8
    allure.attach(f"+-----------------------------------------+\\n| NVIDIA-SMI 550.54.15  node {node} |\\n"
                  f"| GPUs: {gpus}                                  |", name="nvidia-smi",
                  attachment_type=allure.attachment_type.TEXT)
    assert gpus == 8, f"GPUs not advertised: node {node} reports nvidia.com/gpu={gpus} (expected 8)"


@then("the DCGM exporter returns GPU metrics")
def dcgm(node):
    if node == "gpu-node-c":
        raise ConnectionError(f"DCGM exporter unreachable on {node}:9400: connection refused")
    allure.attach(f'DCGM_FI_DEV_GPU_UTIL{{gpu="0",Hostname="{node}"}} 0', name="DCGM sample",
                  attachment_type=allure.attachment_type.TEXT)


@then("the node advertises the time-sliced replicas")
def time_slicing(node):
    if node == "gpu-node-a":
        pytest.skip("time-slicing is not configured for this node pool")
"""


def _slug(scenario: str) -> str:
    # pytest-bdd's test names: punctuation dropped, whitespace runs become "_".
    return "test_" + re.sub(r"\s+", "_", re.sub(r"[^\w\s]", "", scenario.lower()).strip())


def summary_from_allure(results_dir: Path, junit: Path, run_id: str) -> dict[str, Any]:
    """A summary.json like the suite's conftest writes, from the run's Allure results (and JUnit for nodeids)."""
    junit_text = junit.read_text(encoding="utf-8")
    results = []
    starts, stops = [], []
    for path in sorted(results_dir.glob("*-result.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        labels = {label["name"]: label["value"] for label in data.get("labels", [])}
        node = labels.get("node")
        func = _slug(data["name"])
        nodeid = f"test_gpu.py::{func}[{node}]" if node else f"test_gpu.py::{func}"
        assert f'name="{nodeid.split("::")[1]}"' in junit_text, nodeid
        message = (data.get("statusDetails") or {}).get("message") or ""
        results.append(
            {
                "node": node,
                "feature": labels.get("feature", ""),
                "scenario": data["name"],
                "outcome": data["status"],
                "message": message.strip(),
                "remediation": "check the device plugin logs" if data["status"] in ("failed", "broken") else "",
                "nodeid": nodeid,
            }
        )
        starts.append(data["start"])
        stops.append(data["stop"])
    results.sort(key=lambda r: (r["node"] or "", r["nodeid"]))
    return {
        "run_id": run_id,
        "mode": "audit",
        "started": "2026-11-29T08:00:00+00:00",
        "finished": "2026-11-29T08:03:27+00:00",
        "changes": 0,
        "environment": {
            "cluster": "lab-gpu-cluster",
            "kubernetes_version": "v1.32.2",
            "operator_chart_version": "v25.3.0",
            "driver_versions": {n: "550.54.15" for n in NODES},
            "suite_version": "0.1.0",
            "mode": "audit",
        },
        "results": results,
    }


def run_bdd_suite(workdir: Path) -> tuple[Path, Path]:
    """Run the small pytest-bdd suite for real; return (allure-results, junit.xml)."""
    (workdir / "features").mkdir(parents=True)
    (workdir / "features" / "gpu.feature").write_text(FEATURE, encoding="utf-8")
    (workdir / "test_gpu.py").write_text(STEPS, encoding="utf-8")
    (workdir / "pytest.ini").write_text("[pytest]\nbdd_features_base_dir = features/\n", encoding="utf-8")
    results = workdir / "allure-results"
    junit = workdir / "junit.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            f"--alluredir={results}",
            f"--junitxml={junit}",
            "test_gpu.py",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one failed, one broken (an error in a step)
    assert "1 skipped" in proc.stdout, proc.stdout
    return results, junit


@dataclass(frozen=True)
class SampleRun:
    run_dir: Path
    summary: dict[str, Any]
    paths: ReportPaths


def make_run_dir(root: Path, run_id: str, results: Path, junit: Path) -> Path:
    run_dir = root / run_id
    run_dir.mkdir(parents=True)
    shutil.copytree(results, run_dir / "allure-results")
    shutil.copyfile(junit, run_dir / "junit.xml")
    summary = summary_from_allure(run_dir / "allure-results", run_dir / "junit.xml", run_id)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return run_dir


@pytest.fixture(scope="session")
def bdd_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return run_bdd_suite(tmp_path_factory.mktemp("bdd-suite"))


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory: pytest.TempPathFactory, bdd_output: tuple[Path, Path]) -> SampleRun:
    """reports/<run-id>/ of a real run, with every report built."""
    reports = tmp_path_factory.mktemp("reports")
    run_dir = make_run_dir(reports, "20261129-080000-audit", *bdd_output)
    paths = build_reports(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    return SampleRun(run_dir, summary, paths)


@pytest.fixture(scope="session")
def multi_file_run(sample_run: SampleRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample run's reports built in Allure's multi-file form (``single_file=False``)."""
    run_dir = tmp_path_factory.mktemp("multi") / sample_run.run_dir.name
    shutil.copytree(sample_run.run_dir / "allure-results", run_dir / "allure-results")
    shutil.copyfile(sample_run.run_dir / "summary.json", run_dir / "summary.json")
    build_reports(run_dir, single_file=False)
    return run_dir


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def serve() -> Iterator[Callable[[Path], str]]:
    """serve(folder) -> base URL of an HTTP server on 127.0.0.1 for that folder (stopped after the session)."""
    servers: list[ThreadingHTTPServer] = []

    def start(folder: Path) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class Chromium:
    """Debian's headless Chromium, a fresh profile per call."""

    FLAGS = (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    )

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            proc = subprocess.run(
                [str(CHROMIUM), *self.FLAGS, f"--user-data-dir={profile}", *args],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    def dump_dom(self, url: str, *, budget_ms: int = 5000, wait_for: str | None = None, tries: int = 3) -> str:
        """The page's DOM after ``budget_ms`` of virtual time. ``wait_for``: a text the page shows once its app
        has rendered; on a busy machine an Allure report can need longer than the budget (its data decoded from
        the inline script), so the page is loaded again with twice the budget, up to ``tries`` times."""
        dom = ""
        for attempt in range(tries if wait_for else 1):
            dom = self._run(f"--virtual-time-budget={budget_ms * 2 ** attempt}", "--dump-dom", url).stdout
            if wait_for is None or wait_for in dom:
                break
        return dom

    def screenshot(self, url: str, path: Path, *, budget_ms: int = 3000) -> Path:
        self._run(
            "--window-size=1400,900",
            "--hide-scrollbars",
            f"--virtual-time-budget={budget_ms}",
            f"--screenshot={path}",
            url,
        )
        assert path.is_file() and path.stat().st_size > 0
        return path


@pytest.fixture(scope="session")
def chromium() -> Chromium:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (Debian package `chromium`): browser checks need it")
    return Chromium()


def synthetic_summary(n_nodes: int, n_checks: int, *, cluster_checks: int = 3) -> dict[str, Any]:
    """A summary of ``n_nodes`` nodes x ``n_checks`` checks (the first ``cluster_checks`` cluster-wide)."""
    outcomes = ("passed",) * 17 + ("failed", "broken", "skipped")
    nodes = [f"gpu-node-{i:04d}" for i in range(n_nodes)]
    results: list[dict[str, Any]] = []
    for c in range(cluster_checks):
        results.append(
            {
                "node": None,
                "feature": "Cluster",
                "scenario": f"Cluster check {c}",
                "outcome": "passed",
                "message": "",
                "remediation": "",
                "nodeid": f"features/cluster.feature::cluster_check_{c}",
            }
        )
    for i, node in enumerate(nodes):
        for c in range(n_checks - cluster_checks):
            outcome = outcomes[(i * 7 + c * 3) % len(outcomes)]
            results.append(
                {
                    "node": node,
                    "feature": f"Feature {c // 4}",
                    "scenario": f"Node check {c}",
                    "outcome": outcome,
                    "message": "" if outcome == "passed" else f"{outcome}: check {c} on {node} did not hold",
                    "remediation": "" if outcome == "passed" else "see the runbook",
                    "nodeid": f"features/node.feature::node_check_{c}[{node}]",
                }
            )
    return {
        "run_id": "bench",
        "mode": "audit",
        "started": "2026-11-29T08:00:00+00:00",
        "finished": "2026-11-29T09:00:00+00:00",
        "changes": 0,
        "environment": {
            "cluster": "big",
            "kubernetes_version": "v1.32.2",
            "operator_chart_version": None,
            "driver_versions": dict.fromkeys(nodes, "550.54.15"),
            "suite_version": "0.1.0",
            "mode": "audit",
        },
        "results": results,
    }


class FleetRows(HTMLParser):
    """Rows of fleet.html: ``{data-node: {"class": ..., "cells": [(td class, href, title)]}}``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, Any]] = {}
        self._row: dict[str, Any] | None = None
        self._cell: list[Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and a.get("data-node") is not None:
            self._row = {"class": a.get("class") or "", "hidden": "hidden" in a, "cells": []}
            self.rows[a["data-node"] or ""] = self._row
        elif tag == "td" and self._row is not None and a.get("class") != "sum":
            self._cell = [a.get("class"), None, None]
            self._row["cells"].append(self._cell)
        elif tag in ("a", "span") and self._cell is not None:
            self._cell[1] = a.get("href")
            self._cell[2] = a.get("title")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        elif tag == "tr":
            self._row = None


def parse_rows(html: str) -> dict[str, dict[str, Any]]:
    parser = FleetRows()
    parser.feed(html)
    return parser.rows
