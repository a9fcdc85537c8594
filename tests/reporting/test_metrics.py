"""The run's metrics: built from the recorded sample run, written as a node-exporter textfile, pushed to a real
Pushgateway on loopback (Debian's prometheus-pushgateway) and read back from its /metrics."""

from __future__ import annotations

import copy
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from provision.reporting.changes import compare
from provision.reporting.metrics import MetricsError, build_registry, push, write_textfile

from .conftest import BROKEN_NODE, FAULTY_NODE, NODES, SampleRun

PUSHGATEWAY = shutil.which("prometheus-pushgateway") or "/usr/bin/prometheus-pushgateway"
HEALTH = {"gpus": [{"index": 0, "temperature_c": 41, "remapped_rows_pending": 0, "ok": True, "name": "H200"},
                   {"index": 1, "temperature_c": 87.5, "remapped_rows_pending": 2, "ok": False}]}


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def find(got: dict[tuple[str, frozenset], float], name: str, **labels: str) -> dict[frozenset, float]:
    want = set(labels.items())
    return {lbls: v for (n, lbls), v in got.items() if n == name and want <= set(lbls)}


@pytest.fixture
def summary(sample_run: SampleRun) -> dict[str, Any]:
    s = copy.deepcopy(sample_run.summary)
    s["changes_since_previous"] = compare(None, s)
    return s


def test_metrics_of_a_run(summary: dict[str, Any], tmp_path: Path) -> None:
    path = write_textfile(tmp_path / "gpu-conformance.prom", build_registry(summary))
    got = samples(path.read_text(encoding="utf-8"))
    failed = find(got, "gpu_conformance_check_outcome", node=FAULTY_NODE, scenario="Node advertises GPUs")
    assert list(failed.values()) == [1.0] and ("outcome", "failed") in next(iter(failed))
    broken = find(got, "gpu_conformance_check_outcome", node=BROKEN_NODE, outcome="broken")
    assert len(broken) == 1 and ("scenario", "DCGM exporter answers") in next(iter(broken))
    assert find(got, "gpu_conformance_check_outcome", node="_cluster", outcome="passed")
    # One series per node and check.
    per_check = find(got, "gpu_conformance_check_outcome")
    assert len(per_check) == 1 + 3 * len(NODES)
    assert find(got, "gpu_conformance_run_results", outcome="failed") == {frozenset({("outcome", "failed")}): 1.0}
    assert got[("gpu_conformance_run_nodes", frozenset())] == 3
    assert got[("gpu_conformance_run_nodes_with_problems", frozenset())] == 2
    assert got[("gpu_conformance_run_duration_seconds", frozenset())] == 207.0  # 08:00:00 -> 08:03:27
    assert got[("gpu_conformance_run_exit_code", frozenset())] == 10
    assert list(find(got, "gpu_conformance_changes", kind="new_failures").values()) == [2.0]
    (info,) = find(got, "gpu_conformance_run_info")
    assert ("cluster", "lab-gpu-cluster") in info and ("run_id", summary["run_id"]) in info
    assert not find(got, "gpu_conformance_node_health")  # no health object: no health metrics, no error


def test_health_values_per_node(summary: dict[str, Any]) -> None:
    from prometheus_client import generate_latest

    summary["health"] = {"gpu-node-a": HEALTH, "gpu-node-b": {"gpus": []}}
    got = samples(generate_latest(build_registry(summary)).decode())
    health = {dict(k)["field"]: v for k, v in find(got, "gpu_conformance_node_health", node="gpu-node-a").items()}
    assert health == {"gpus.0.index": 0, "gpus.0.temperature_c": 41, "gpus.0.remapped_rows_pending": 0,
                      "gpus.0.ok": 1, "gpus.1.index": 1, "gpus.1.temperature_c": 87.5,
                      "gpus.1.remapped_rows_pending": 2, "gpus.1.ok": 0}
    # The other place a health object may be: per node under "nodes".
    del summary["health"]
    summary["nodes"] = {"gpu-node-c": {"health": {"temperature_c": 50}}}
    got = samples(generate_latest(build_registry(summary)).decode())
    assert list(find(got, "gpu_conformance_node_health", node="gpu-node-c").values()) == [50.0]


def test_fail_on_new_is_the_exit_code_metric(summary: dict[str, Any]) -> None:
    from prometheus_client import generate_latest

    summary["changes_since_previous"] = compare(summary, summary)  # nothing new
    got = samples(generate_latest(build_registry(summary, fail_on="new")).decode())
    assert got[("gpu_conformance_run_exit_code", frozenset())] == 0


def test_unwritable_metrics_file_is_a_clear_error(summary: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(MetricsError, match="cannot write the metrics file"):
        write_textfile(tmp_path / "absent" / "x.prom", build_registry(summary))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not Path(PUSHGATEWAY).exists():
        pytest.skip(f"{PUSHGATEWAY} is absent (Debian package prometheus-pushgateway, in the Makefile's APT_PACKAGES)")
    port = _free_port()
    log = (tmp_path_factory.mktemp("pushgateway") / "log").open("w")
    proc = subprocess.Popen([PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60  # returns as soon as /-/ready answers
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the Pushgateway did not start (exit {proc.poll()})") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _gateway_metrics(url: str) -> dict[tuple[str, frozenset], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        return samples(resp.read().decode("utf-8"))


def test_push_and_read_back_from_a_real_pushgateway(summary: dict[str, Any], pushgateway: str) -> None:
    summary["environment"]["cluster"] = "https://10.0.0.1:6443"  # a URL: the grouping key needs base64 in the path
    push(pushgateway, build_registry(summary), summary, job="nightly-audit")
    got = _gateway_metrics(pushgateway)
    group = {"job": "nightly-audit", "cluster": "https://10.0.0.1:6443"}
    failed = find(got, "gpu_conformance_check_outcome", node=FAULTY_NODE, outcome="failed", **group)
    assert list(failed.values()) == [1.0]
    assert list(find(got, "gpu_conformance_run_exit_code", **group).values()) == [10.0]
    assert find(got, "push_time_seconds", **group)  # the Pushgateway's own record of the push

    # The next night: a node is gone. The push replaces the job's and cluster's group: its series go too.
    later = copy.deepcopy(summary)
    later["results"] = [r for r in later["results"] if r["node"] != BROKEN_NODE]
    del later["environment"]["driver_versions"][BROKEN_NODE]
    later["changes_since_previous"] = compare(summary, later)
    push(pushgateway, build_registry(later), later, job="nightly-audit")
    got = _gateway_metrics(pushgateway)
    assert not find(got, "gpu_conformance_check_outcome", node=BROKEN_NODE, **group)
    assert find(got, "gpu_conformance_check_outcome", node=FAULTY_NODE, **group)
    assert list(find(got, "gpu_conformance_changes", kind="nodes_gone", **group).values()) == [1.0]


def test_push_to_nowhere_is_a_clear_error(summary: dict[str, Any]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(MetricsError, match=r"cannot push the metrics to the Pushgateway.*--pushgateway"):
        push(url, build_registry(summary), summary)
    with pytest.raises(urllib.error.URLError):  # nothing listens there: the error above is the real one
        urllib.request.urlopen(url, timeout=2)
