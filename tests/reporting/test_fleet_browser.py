"""The reports as a person sees them: headless Chromium, opening them from disk (file://), as a CI artifact is
opened. (Over HTTP is how the multi-file form is checked: test_reports_served.py.)"""

from __future__ import annotations

import re
from urllib.parse import urljoin

import pytest

from provision.reporting import CLUSTER_KEY

from .conftest import BROKEN_NODE, FAILURE_MESSAGE, FAULTY_NODE, NODES, Chromium, SampleRun, parse_rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base_url(sample_run: SampleRun) -> str:
    return sample_run.run_dir.as_uri() + "/"


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    h = hex_colour.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def test_fleet_page_in_chromium(sample_run: SampleRun, base_url: str, chromium: Chromium) -> None:
    fleet_url = urljoin(base_url, "fleet.html")
    dom = chromium.dump_dom(fleet_url)
    rows = parse_rows(dom)
    assert sorted(rows) == sorted(["cluster-wide", *NODES])  # one row per node, plus the cluster-wide row
    assert "4 of 4 rows shown" in dom  # the filter script ran

    # The faulty node's cell is red, and links to a page that shows the failure message.
    red = [c for c in rows[FAULTY_NODE]["cells"] if c[0] == "f"]
    assert len(red) == 1
    _cls, href, title = red[0]
    assert FAILURE_MESSAGE in title
    colours = dict(re.findall(r"--(\w+):(#[0-9a-f]{6})", dom))
    assert re.search(r"td\.f\{background:var\(--f\)\}", dom)
    r, g, b = _rgb(colours["f"])
    assert r > 150 and g < 80 and b < 80, colours["f"]
    r, g, b = _rgb(colours["b"])  # broken: orange, not red
    assert r > 200 and 80 < g < 160 and b < 60, colours["b"]
    assert [c[0] for c in rows[BROKEN_NODE]["cells"]].count("b") == 1

    report_dom = chromium.dump_dom(urljoin(fleet_url, href), wait_for=FAILURE_MESSAGE)
    assert FAILURE_MESSAGE in report_dom
    assert "GPUs not advertised" in report_dom  # its category

    shot = chromium.screenshot(fleet_url, sample_run.run_dir / "fleet.png")
    assert shot.stat().st_size > 10_000


def test_fleet_filters(base_url: str, chromium: Chromium) -> None:
    rows = parse_rows(chromium.dump_dom(urljoin(base_url, "fleet.html?problems=1")))
    shown = {k for k, r in rows.items() if not r["hidden"]}
    assert shown == {FAULTY_NODE, BROKEN_NODE}
    dom = chromium.dump_dom(urljoin(base_url, "fleet.html?q=NODE-A"))
    rows = parse_rows(dom)
    assert {k for k, r in rows.items() if not r["hidden"]} == {"gpu-node-a"}
    assert "1 of 4 rows shown" in dom


def test_node_report_shows_environment_and_categories(sample_run: SampleRun, base_url: str, chromium: Chromium) -> None:
    dom = chromium.dump_dom(urljoin(base_url, f"html/{FAULTY_NODE}/index.html"), wait_for="550.54.15")
    assert "Metadata" in dom and "lab-gpu-cluster" in dom and "550.54.15" in dom and FAULTY_NODE in dom
    dom = chromium.dump_dom(urljoin(base_url, f"html/{FAULTY_NODE}/index.html#categories"),
                            wait_for="GPUs not advertised")
    assert "GPUs not advertised" in dom
    dom = chromium.dump_dom(urljoin(base_url, "html/_all/index.html#categories"), wait_for="DCGM unreachable")
    assert "GPUs not advertised" in dom and "DCGM unreachable" in dom
    dom = chromium.dump_dom(urljoin(base_url, f"html/{CLUSTER_KEY}/index.html"), wait_for="550.54.15 (3 nodes)")
    assert "Metadata" in dom and "550.54.15 (3 nodes)" in dom
    rows = parse_rows(sample_run.paths.fleet.read_text(encoding="utf-8"))
    (cell,) = [c for c in rows["cluster-wide"]["cells"] if c[0] == "p"]
    assert cell[1].startswith(f"html/{CLUSTER_KEY}/index.html#")
    dom = chromium.dump_dom(urljoin(base_url, cell[1]), wait_for="Then the GPU operator chart is deployed")
    assert "GPU operator is installed" in dom and "Then the GPU operator chart is deployed" in dom
