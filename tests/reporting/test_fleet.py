from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from provision.reporting.fleet import render_fleet

from .conftest import FAULTY_NODE, NODES, SampleRun, parse_rows, synthetic_summary


def _summary(results: list[dict[str, Any]], **env: Any) -> dict[str, Any]:
    return {
        "run_id": "r<1>",
        "mode": "provision",
        "started": "2026-11-29T08:00:00+00:00",
        "finished": "2026-11-29T08:00:42+00:00",
        "changes": 3,
        "environment": {"cluster": "c&1", "kubernetes_version": "v1", "driver_versions": {}, **env},
        "results": results,
    }


def _r(node: str | None, scenario: str, outcome: str, message: str = "", feature: str = "F") -> dict[str, Any]:
    return {
        "node": node,
        "feature": feature,
        "scenario": scenario,
        "outcome": outcome,
        "message": message,
        "remediation": "",
        "nodeid": f"t::{scenario}[{node}]",
    }


def test_cells_classes_links_and_titles() -> None:
    summary = _summary(
        [
            _r(None, "operator", "passed"),
            _r("n1", "gpus", "passed"),
            _r("n2", "gpus", "failed", "GPUs not advertised"),
            _r("n3", "gpus", "broken", "DCGM unreachable"),
            _r("n4", "gpus", "skipped", "not configured"),
            _r("n2", "dcgm", "passed"),
        ],
        driver_versions={"n5": "550"},
    )
    links = {"n1": "html/n1/index.html", "n2": "html/n2/index.html", "_cluster": "html/_cluster/index.html"}
    html = render_fleet(summary, links, cell_links={("n2", "t::gpus[n2]"): "html/n2/index.html#abc"})
    rows = parse_rows(html)
    assert list(rows) == ["cluster-wide", "n1", "n2", "n3", "n4", "n5"]
    # columns: cluster-wide "operator" first, then "gpus", "dcgm"
    assert [c[0] for c in rows["cluster-wide"]["cells"]] == ["p", "na", "na"]
    assert rows["n2"]["cells"][1] == ["f", "html/n2/index.html#abc", "failed: GPUs not advertised"]
    assert rows["n3"]["cells"][1][:1] == ["b"] and rows["n3"]["cells"][1][1] is None
    assert rows["n4"]["cells"][1][0] == "s"
    assert rows["n1"]["cells"][1] == ["p", "html/n1/index.html", "passed"]
    assert [c[0] for c in rows["n5"]["cells"]] == ["na", "na", "na"]  # known node, no result
    assert rows["n2"]["class"] == "bad" and rows["n3"]["class"] == "bad" and rows["n1"]["class"] == ""
    # broken is its own colour, failed red
    assert re.search(r"td\.f\{background:var\(--f\)\}", html) and re.search(r"td\.b\{background:var\(--b\)\}", html)
    assert "--f:#cf222e" in html and "--b:#e36209" in html
    assert "<b>1</b> failed" in html and "<b>1</b> broken" in html and "<b>3</b> passed" in html
    assert "<b>1</b> skipped" in html and "<b>5</b> nodes" in html
    assert "mode <b>provision</b>" in html and "changes 3" in html and "(0m 42s)" in html
    assert "Non-conformant (exit code 10)" in html


def test_worst_outcome_wins_and_all_messages_in_title() -> None:
    summary = _summary([_r("n1", "gpus", "passed", "gpu0 ok"), _r("n1", "gpus", "broken", "gpu1 gone")])
    rows = parse_rows(render_fleet(summary, {}))
    cls, href, title = rows["n1"]["cells"][0]
    assert cls == "b" and href is None
    assert title.splitlines() == ["2 results", "broken: gpu1 gone", "passed: gpu0 ok"]


def test_everything_escaped() -> None:
    evil = '<script>alert("x")</script>&'
    summary = _summary(
        [_r("n1", evil, "failed", evil, feature=evil), _r(None, "s", "passed", evil)],
        cluster=evil,
    )
    summary["run_id"] = evil
    html = render_fleet(summary, {"n1": 'x"><script>alert(1)</script>'})
    assert "<script>alert" not in html
    assert html.count("<script>") == 1  # the page's own filter code
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;" in html   # Jinja2's autoescape (markupsafe)
    assert 'x&#34;&gt;&lt;script&gt;' in html                               # in an href attribute too


def test_thousand_nodes_fifteen_checks() -> None:
    summary = synthetic_summary(1000, 15)
    nodes = summary["environment"]["driver_versions"]
    links = {n: f"html/{n}/index.html" for n in nodes} | {"_cluster": "html/_cluster/index.html"}
    cell_links = {
        (r["node"] or "_cluster", r["nodeid"]): f"{links[r['node'] or '_cluster']}#{i:032x}"
        for i, r in enumerate(summary["results"])
    }
    html = render_fleet(summary, links, cell_links=cell_links)
    rows = parse_rows(html)
    node_rows = [k for k in rows if k != "cluster-wide"]
    assert len(node_rows) == 1000
    assert all(len(r["cells"]) == 15 for r in rows.values())
    assert len(html.encode()) < 4_000_000
    assert "style=" not in html  # classes, not inline styles
    assert "<img" not in html


def test_write_fleet_links_exist(sample_run: SampleRun) -> None:
    html = sample_run.paths.fleet.read_text(encoding="utf-8")
    rows = parse_rows(html)
    assert set(rows) == {"cluster-wide", *NODES}
    for row in rows.values():
        for cls, href, _title in row["cells"]:
            if cls != "na":
                assert href is not None
                assert (sample_run.run_dir / href.split("#")[0]).is_file()
    faulty = [c for c in rows[FAULTY_NODE]["cells"] if c[0] == "f"]
    assert len(faulty) == 1 and "#" in faulty[0][1]
    assert Path(faulty[0][1]).parts[:2] == ("html", FAULTY_NODE)


def test_drift_only_cells_are_shown_apart_from_broken_nodes() -> None:
    """summary.json's observation/drift (issue 21): a failure whose observation was right and only drift remains
    is an unconverged node (class d), one whose observation failed stays failed (class f)."""
    drift = {**_r("n1", "ready", "failed", "Observed (as desired): ... Drift only ..."), "observation": "ok",
             "drift": ["[n1] create /etc/u.service on n1"]}
    broken = {**_r("n2", "ready", "failed", "Observed: node n2 is NotReady ..."), "observation": "failed",
              "drift": ["[n2] create /etc/u.service on n2"]}
    html = render_fleet(_summary([drift, broken]), {})
    rows = parse_rows(html)
    assert rows["n1"]["cells"][0][0] == "d" and rows["n2"]["cells"][0][0] == "f"
    assert rows["n1"]["class"] == "bad"   # still a problem: not in the desired state
    assert "drift only" in html


def test_health_column_shows_the_worst_health_outcome_with_measured_values() -> None:
    from provision.reporting.fleet import HEALTH_FEATURE

    summary = _summary([_r("n1", "mem", "passed", feature=HEALTH_FEATURE), _r("n1", "xid", "passed", feature=HEALTH_FEATURE),
                        _r("n2", "mem", "passed", feature=HEALTH_FEATURE),
                        _r("n2", "xid", "failed", "GPU 0: Xid 79", feature=HEALTH_FEATURE), _r("n3", "gpus", "passed")])
    summary["health"] = {"n2": {"gpus": [{"temperature_c": 41.0}, {"temperature_c": 37.5}], "gpus_on_bus": 2,
                                "xids": [{"xid": 79}]}}
    html = render_fleet(summary, {})
    rows = parse_rows(html)
    assert ">health</th>" in html
    health = {node: rows[node]["cells"][0] for node in ("n1", "n2", "n3")}
    assert health["n1"][0] == "p" and health["n3"][0] == "na"
    assert health["n2"][0] == "f" and html.count('data-col="health"') == 3
    assert "2 GPU(s), 2 on the bus, max 41 C" in health["n2"][2] and "Xid 79" in health["n2"][2]
    assert "xid: GPU 0: Xid 79" in health["n2"][2]
    assert ">health</th>" not in render_fleet(_summary([_r("n1", "gpus", "passed")]), {})  # no health run: no column


def test_each_node_row_shows_its_distribution() -> None:
    summary = _summary([_r("kube-a", "gpus", "passed"), _r("k3s-a", "gpus", "failed"), _r("n3", "gpus", "passed")])
    summary["nodes"] = {"kube-a": {"distribution": "kubeadm"}, "k3s-a": {"distribution": "k3s"},
                        "n3": {"distribution": None}}
    html = render_fleet(summary, {})
    rows = {m.group(1): m.group(2) for m in re.finditer(r'<tr[^>]*data-node="([^"]+)"[^>]*><th>(.*?)</th>', html)}
    assert '<small class="dist" title="distribution">kubeadm</small>' in rows["kube-a"]
    assert '<small class="dist" title="distribution">k3s</small>' in rows["k3s-a"]
    assert "dist" not in rows["n3"]   # not detected: no tag
