"""Changes since the previous run, on pairs of runs: the recorded sample run (a real pytest-bdd run's results)
and a previous night derived from it."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from provision.reporting.changes import (
    PreviousRunError,
    changes_for_run,
    compare,
    console_lines,
    find_previous,
    run_exit_code,
)
from provision.reporting.fleet import render_fleet

from .conftest import BROKEN_NODE, FAULTY_NODE, SampleRun, parse_rows

ADVERTISES = "Node advertises GPUs"
DCGM = "DCGM exporter answers"
SLICING = "Time-slicing is applied"


def _set(summary: dict[str, Any], node: str | None, scenario: str, outcome: str) -> None:
    hits = [r for r in summary["results"] if r["node"] == node and r["scenario"] == scenario]
    assert hits, (node, scenario)
    for r in hits:
        r["outcome"] = outcome


def _drop_node(summary: dict[str, Any], node: str) -> None:
    summary["results"] = [r for r in summary["results"] if r["node"] != node]
    summary["environment"]["driver_versions"].pop(node, None)


def _add_node(summary: dict[str, Any], node: str, outcome: str = "passed") -> None:
    for r in [r for r in summary["results"] if r["node"] == "gpu-node-a"]:
        summary["results"].append({**r, "node": node, "outcome": outcome, "nodeid": r["nodeid"].replace("gpu-node-a", node)})
    summary["environment"]["driver_versions"][node] = "550.54.15"


@pytest.fixture
def current(sample_run: SampleRun) -> dict[str, Any]:
    # The recorded run: gpu-node-b fails "Node advertises GPUs", gpu-node-c is broken on DCGM, a skipped check.
    return copy.deepcopy(sample_run.summary)


@pytest.fixture
def previous(current: dict[str, Any]) -> dict[str, Any]:
    prev = copy.deepcopy(current)
    prev["run_id"], prev["started"] = "night-1", "2026-11-28T08:00:00+00:00"
    _set(prev, FAULTY_NODE, ADVERTISES, "passed")   # -> new failure tonight
    _set(prev, "gpu-node-a", DCGM, "failed")        # -> fixed tonight
    _set(prev, "gpu-node-a", SLICING, "failed")     # -> skipped tonight: not checked, not fixed
    _add_node(prev, "gpu-node-z", "failed")          # -> gone tonight
    return prev


def _keys(entries: list[dict[str, Any]]) -> set[tuple[str | None, str]]:
    return {(e["node"], e["scenario"]) for e in entries}


def test_first_run_every_problem_is_new(current: dict[str, Any]) -> None:
    changes = compare(None, current)
    assert changes["previous"] is None
    assert _keys(changes["new_failures"]) == {(FAULTY_NODE, ADVERTISES), (BROKEN_NODE, DCGM)}
    assert changes["nodes_gone"] == changes["new_nodes"] == changes["fixed"] == []


def test_each_kind_of_change_between_two_nights(previous: dict[str, Any], current: dict[str, Any]) -> None:
    changes = compare(previous, current, previous_dir="/r/night-1")
    assert changes["previous"] == {"run_id": "night-1", "started": previous["started"], "dir": "/r/night-1"}
    assert _keys(changes["new_failures"]) == {(FAULTY_NODE, ADVERTISES)}
    (new,) = changes["new_failures"]
    assert (new["outcome"], new["previous_outcome"]) == ("failed", "passed")
    assert "nvidia.com/gpu=0" in new["message"]
    assert _keys(changes["fixed"]) == {("gpu-node-a", DCGM)}
    assert _keys(changes["unchecked"]) == {("gpu-node-a", SLICING)}
    assert _keys(changes["still_failing"]) == {(BROKEN_NODE, DCGM)}
    assert changes["nodes_gone"] == ["gpu-node-z"]  # a finding, and its checks are not listed one by one
    assert changes["new_nodes"] == []
    assert changes["counts"] == {"new_failures": 1, "fixed": 1, "still_failing": 1, "unchecked": 1,
                                 "new_nodes": 0, "nodes_gone": 1}


def test_a_node_that_appears_brings_its_problems_as_new(previous: dict[str, Any], current: dict[str, Any]) -> None:
    _drop_node(previous, BROKEN_NODE)
    changes = compare(previous, current)
    assert changes["new_nodes"] == [BROKEN_NODE]
    assert (BROKEN_NODE, DCGM) in _keys(changes["new_failures"])
    assert BROKEN_NODE not in {e["node"] for e in changes["still_failing"]}


def test_fail_on_new_pages_only_on_regressions(previous: dict[str, Any], current: dict[str, Any]) -> None:
    current["changes_since_previous"] = compare(previous, current)
    assert run_exit_code(current, "any") == 10
    assert run_exit_code(current, "new") == 10  # a new failure and a node gone
    # Same problems as last night, nothing gone: recorded, but the job stays green with --fail-on new.
    current["changes_since_previous"] = compare(current, current)
    assert current["changes_since_previous"]["counts"]["still_failing"] == 2
    assert run_exit_code(current, "new") == 0
    assert run_exit_code(current, "any") == 10
    # Only a node gone: still a finding.
    shrunk = copy.deepcopy(current)
    _drop_node(shrunk, "gpu-node-a")
    shrunk["changes_since_previous"] = compare(current, shrunk)
    assert run_exit_code(shrunk, "new") == 10
    # Only a new broken check: could not check.
    later = copy.deepcopy(current)
    _set(later, "gpu-node-a", DCGM, "broken")
    later["changes_since_previous"] = compare(current, later)
    assert run_exit_code(later, "new") == 11
    with pytest.raises(ValueError, match="fail_on"):
        run_exit_code(current, "some")


def _write_run(root: Path, name: str, summary: dict[str, Any]) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    return folder


def test_previous_run_is_the_latest_earlier_one_of_the_same_mode_and_cluster(
    tmp_path: Path, previous: dict[str, Any], current: dict[str, Any]
) -> None:
    current["started"] = "2026-11-29T08:00:00+00:00"
    want = _write_run(tmp_path, "20261128T080000Z-audit-1", previous)
    older = {**previous, "run_id": "older", "started": "2026-11-27T08:00:00+00:00"}
    _write_run(tmp_path, "20261127T080000Z-audit-1", older)
    other_cluster = copy.deepcopy(previous)
    other_cluster["environment"]["cluster"] = "https://other:6443"
    other_cluster["started"] = "2026-11-28T20:00:00+00:00"
    _write_run(tmp_path, "20261128T200000Z-audit-2", other_cluster)
    _write_run(tmp_path, "20261128T210000Z-provision-3", {**previous, "mode": "provision",
                                                           "started": "2026-11-28T21:00:00+00:00"})
    _write_run(tmp_path, "20261130T080000Z-audit-4", {**previous, "started": "2026-11-30T08:00:00+00:00"})
    (tmp_path / "20261128T230000Z-audit-5").mkdir()  # a run that died before its summary
    (tmp_path / "20261128T230000Z-audit-5" / "summary.json").write_text("{not json")
    this = _write_run(tmp_path, "20261129T080000Z-audit-9", current)
    (tmp_path / "latest").symlink_to(this.name)
    assert find_previous(tmp_path, current, exclude=this) == want
    changes = changes_for_run(this, current)
    assert changes["previous"]["run_id"] == "night-1" and changes["previous"]["dir"] == str(want)
    assert "warning" not in changes
    # Given explicitly, another cluster's run is used, with a warning that says so.
    chosen = changes_for_run(this, current, previous=tmp_path / "20261128T200000Z-audit-2")
    assert "cluster 'https://other:6443'" in chosen["warning"]
    with pytest.raises(PreviousRunError, match=r"has no summary\.json"):
        changes_for_run(this, current, previous=tmp_path / "nope")
    assert find_previous(tmp_path / "absent", current) is None


def test_console_lines_name_what_changed(previous: dict[str, Any], current: dict[str, Any]) -> None:
    lines = console_lines(compare(previous, current))
    text = "\n".join(lines)
    assert lines[0].startswith("changes since run night-1") and "1 new failures" in lines[0] and "1 nodes gone" in lines[0]
    assert "NODE GONE  gpu-node-z" in text
    assert f"NEW        {FAULTY_NODE}: GPU node conformance > {ADVERTISES}: failed (was passed)" in text
    assert "fixed      gpu-node-a" in text
    many = compare(None, {**current, "results": [
        {**current["results"][0], "scenario": f"s{i}", "outcome": "failed"} for i in range(30)]})
    cut = console_lines(many, limit=5)
    assert sum(line.startswith("  NEW") for line in cut) == 6 and "and 25 more" in cut[-1]


def test_fleet_page_opens_with_the_changes(previous: dict[str, Any], current: dict[str, Any]) -> None:
    current["changes_since_previous"] = compare(previous, current)
    links = {FAULTY_NODE: f"html/{FAULTY_NODE}/index.html", "gpu-node-a": "html/gpu-node-a/index.html"}
    page = render_fleet(current, links)
    assert page.index('<section id="changes">') < page.index('class="counts"') < page.index('<table id="fleet"')
    section = page[page.index('<section id="changes">'):page.index("</section>")]
    assert "Since run night-1" in section
    assert 'id="nodes_gone"' in section and "gpu-node-z" in section
    new = section[section.index('id="new_failures"'):section.index('id="fixed"')]
    assert f'href="#node-{FAULTY_NODE}"' in new and f'href="html/{FAULTY_NODE}/index.html"' in new
    assert "(passed \u2192 failed)" in new
    assert parse_rows(page).keys() == {"cluster-wide", *current["environment"]["driver_versions"]}
    first = render_fleet({**current, "changes_since_previous": compare(None, current)}, links)
    assert "No previous run of this mode against this cluster" in first
    assert '<section id="changes">' not in render_fleet({k: v for k, v in current.items()
                                                         if k != "changes_since_previous"}, links)


def test_nightly_settings_are_checked_before_the_run(tmp_path: Path, current: dict[str, Any]) -> None:
    from provision.settings import SettingsError, validate

    with pytest.raises(SettingsError, match=r"fail_on='sometimes'.*any.*new"):
        validate({"fail_on": "sometimes"})
    with pytest.raises(SettingsError, match=r"previous_run=.*holding summary\.json"):
        validate({"previous_run": str(tmp_path)})
    with pytest.raises(SettingsError, match=r"only \*\.prom files"):
        validate({"metrics_file": str(tmp_path / "metrics.txt")})
    with pytest.raises(SettingsError, match="does not exist"):
        validate({"metrics_file": str(tmp_path / "absent" / "gpu.prom")})
    with pytest.raises(SettingsError, match="Pushgateway's URL"):
        validate({"pushgateway": "pushgateway:9091"})
    run = _write_run(tmp_path, "r1", current)
    s = validate({"fail_on": "new", "previous_run": str(run), "metrics_file": str(tmp_path / "gpu.prom"),
                  "pushgateway": "http://127.0.0.1:9091"})
    assert (s.fail_on, s.previous_run, s.pushgateway_job) == ("new", str(run), "gpu-conformance")
