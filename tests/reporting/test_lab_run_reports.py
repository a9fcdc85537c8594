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
