"""The reports of a real lab run with one faulty node, as a person sees them (headless Chromium), and
without a trace of the lab's credentials. Opened from disk (file://), as a CI artifact is."""

from __future__ import annotations

import json
from urllib.parse import urljoin

import pytest

from lab.spec import NodeSpec
from provision.reporting.build import build_reports
from provision.reporting.secrets_scan import needles_from_pem, scan
from tests.suite.runner import run_suite

from .conftest import Chromium, parse_rows

pytestmark = [pytest.mark.lab, pytest.mark.slow]
LAB_DRIVER = NodeSpec.driver  # the lab's default driver version (lab/spec.py)


@pytest.fixture(scope="module")
def lab_run(module_lab_factory, tmp_path_factory):
    lab = module_lab_factory({"nodes": [
        {"name": "cp-1", "control_plane": True}, {"name": "gpu-a", "gpus": 1},
        {"name": "gpu-b", "gpus": 1, "faults": ["dcgm-down"]},
    ]}, "reports")
    reports = tmp_path_factory.mktemp("runs")
    provision = run_suite(lab, reports, "--provision")
    audit = run_suite(lab, reports)
    assert audit.rc == 10, audit.output[-2000:]
    paths = build_reports(audit.run_dir)
    return lab, provision, audit, paths


def test_fleet_page_of_a_lab_run_in_chromium_from_disk(lab_run, chromium: Chromium):
    _, _, audit, paths = lab_run
    fleet_url = paths.fleet.as_uri()
    rows = parse_rows(chromium.dump_dom(fleet_url))
    assert sorted(rows) == ["cluster-wide", "gpu-a", "gpu-b"]
    assert all(c[0] in ("p", "s", "na") for c in rows["gpu-a"]["cells"]), rows["gpu-a"]
    assert any(c[0] == "p" for c in rows["gpu-a"]["cells"])
    red = [c for c in rows["gpu-b"]["cells"] if c[0] == "f"]
    assert len(red) == 1, rows["gpu-b"]
    _cls, href, title = red[0]
    assert "DCGM exporter on gpu-b" in title
    page = chromium.dump_dom(urljoin(fleet_url, href))
    assert "DCGM exporter on gpu-b" in page and "gpu-b" in page
    shot = chromium.screenshot(fleet_url, audit.run_dir / "fleet.png")
    assert shot.stat().st_size > 10_000
    assert paths.fleet == audit.run_dir / "fleet.html"


def test_node_report_names_the_nodes_driver_from_disk(lab_run, chromium: Chromium):
    _, provision, audit, paths = lab_run
    for run in (provision, audit):  # --provision: read after GFD labelled the nodes, not at discovery
        summary = json.loads((run.run_dir / "summary.json").read_text(encoding="utf-8"))
        assert summary["environment"]["driver_versions"] == {"gpu-a": LAB_DRIVER, "gpu-b": LAB_DRIVER}
    props = (audit.run_dir / "allure-results-by-node" / "gpu-b" / "environment.properties").read_text()
    assert f"driver={LAB_DRIVER}" in props and "unknown" not in props
    dom = chromium.dump_dom(paths.node_html["gpu-b"].as_uri())
    assert "Metadata" in dom and LAB_DRIVER in dom


def test_reports_hold_no_credentials(lab_run):
    lab, provision, audit, _ = lab_run
    needles = []
    for pem in sorted((lab.paths.root / "pki").glob("*")):
        if pem.suffix in (".key", ".crt") and pem.name != "ca.crt":
            needles += needles_from_pem(pem.read_bytes(), pem.name)
    assert len(needles) > 10  # the scan has something to look for
    for run in (provision, audit):
        hits = scan(run.run_dir, needles)
        assert hits == [], hits
    # The scan does find material where it is: a planted copy is caught.
    planted = audit.run_dir / "planted.txt"
    planted.write_bytes((lab.paths.root / "pki" / "suite.key").read_bytes())
    try:
        assert scan(audit.run_dir, needles)
    finally:
        planted.unlink()


@pytest.fixture(scope="module")
def nights(lab_run, tmp_path_factory):
    """Four read-only audits of the lab in one reports folder, as nightly runs: gpu-b appears (with its DCGM
    fault), gpu-a disappears, then a night with nothing new compared with an explicit --previous."""
    lab = lab_run[0]
    reports = tmp_path_factory.mktemp("nights")
    quick = ("--no-workload",)
    first = run_suite(lab, reports, *quick, "--gpu-nodes", "gpu-a")
    second = run_suite(lab, reports, *quick, "--fail-on", "new", "--metrics-file", str(reports / "gpu.prom"))
    third = run_suite(lab, reports, *quick, "--fail-on", "new", "--gpu-nodes", "gpu-b")
    fourth = run_suite(lab, reports, *quick, "--fail-on", "new", "--previous", str(second.run_dir))
    return first, second, third, fourth, reports


def test_each_night_is_compared_with_the_one_before(nights):
    first, second, third, fourth, reports = nights
    assert first.rc == 0, first.output[-3000:]
    assert first.summary["changes_since_previous"]["previous"] is None

    changes = second.summary["changes_since_previous"]
    assert changes["previous"]["run_id"] == first.summary["run_id"]
    assert changes["new_nodes"] == ["gpu-b"] and changes["nodes_gone"] == []
    assert {(e["node"], e["outcome"]) for e in changes["new_failures"]} == {("gpu-b", "failed")}
    assert second.rc == 10, second.output[-3000:]  # --fail-on new: a new failure pages
    assert "changes since run " + first.summary["run_id"] in second.output
    assert "new node   gpu-b" in second.output and "NEW        gpu-b:" in second.output
    prom = (reports / "gpu.prom").read_text()
    assert 'gpu_conformance_check_outcome{feature=' in prom and 'node="gpu-b"' in prom
    assert f"metrics: {reports / 'gpu.prom'}" in second.output

    changes = third.summary["changes_since_previous"]
    assert changes["previous"]["run_id"] == second.summary["run_id"]
    assert changes["nodes_gone"] == ["gpu-a"]  # a node gone is a finding, not silence
    assert changes["new_failures"] == [] and {e["node"] for e in changes["still_failing"]} == {"gpu-b"}
    assert third.rc == 10, third.output[-3000:]
    assert "NODE GONE  gpu-a" in third.output

    changes = fourth.summary["changes_since_previous"]
    assert changes["previous"]["dir"] == str(second.run_dir)
    assert changes["counts"]["new_failures"] == changes["counts"]["nodes_gone"] == 0
    assert changes["counts"]["still_failing"] >= 1
    assert fourth.rc == 0, fourth.output[-3000:]  # still failing, recorded, but no regression: the job stays green


def test_reports_of_a_night_carry_the_allure_history_and_the_changes(nights, chromium: Chromium):
    _, second, third, _, _ = nights
    build_reports(second.run_dir)
    paths = build_reports(third.run_dir)  # its previous run (second) from summary.json: Allure trends continue
    history = (third.run_dir / "html" / "gpu-b" / "history.jsonl").read_text().splitlines()
    assert len(history) == 2
    dom = chromium.dump_dom(paths.fleet.as_uri())
    assert dom.index('id="changes"') < dom.index('id="fleet"')
    assert "Nodes gone" in dom and "gpu-a" in dom[dom.index('id="nodes_gone"'):]
