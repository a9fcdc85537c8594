from __future__ import annotations

import json
from pathlib import Path

import pytest

from provision.reporting import ALL_KEY, CLUSTER_KEY
from provision.reporting.allure_html import HISTORY_FILE, AllureSetupError, allure_cli, report_data
from provision.reporting.build import build_reports

from .conftest import BROKEN_MESSAGE, FAILURE_MESSAGE, FAULTY_NODE, NODES, SampleRun, make_run_dir

pytestmark = pytest.mark.slow


def _files_containing(report: Path, text: str, prefix: str = "") -> list[str]:
    """Names of the report's data files (either form: report_data) holding ``text``, under ``prefix``."""
    needle = text.encode()
    return [name for name, data in report_data(report).items() if name.startswith(prefix) and needle in data]


def _json(report: Path, name: str) -> object:
    return json.loads(report_data(report)[name])


def _status_dynamics(report: Path) -> list[dict]:
    charts = _json(report, "widgets/charts.json")
    (chart,) = [c for c in charts["general"].values() if c["type"] == "statusDynamics"]
    return chart["data"]


def test_report_paths(sample_run: SampleRun) -> None:
    html = sample_run.run_dir / "html"
    paths = sample_run.paths
    assert paths.fleet == sample_run.run_dir / "fleet.html" and paths.fleet.is_file()
    assert paths.all_html == html / ALL_KEY / "index.html" and paths.all_html.is_file()
    assert set(paths.node_html) == {CLUSTER_KEY, *NODES}
    for key, index in paths.node_html.items():
        assert index == html / key / "index.html" and index.is_file()


def test_faulty_node_report_holds_its_failure_only(sample_run: SampleRun) -> None:
    html = sample_run.run_dir / "html"
    assert _files_containing(html / FAULTY_NODE, FAILURE_MESSAGE)
    assert _files_containing(html / ALL_KEY, FAILURE_MESSAGE)
    assert not _files_containing(html / "gpu-node-a", FAILURE_MESSAGE)
    assert _files_containing(html / "gpu-node-c", BROKEN_MESSAGE)
    # The attachment travelled with the result.
    assert _files_containing(html / FAULTY_NODE, "NVIDIA-SMI 550.54.15  node gpu-node-b", "data/attachments/")


def test_environment_in_reports(sample_run: SampleRun) -> None:
    html = sample_run.run_dir / "html"
    node_env = _json(html / FAULTY_NODE, "widgets/allure_environment.json")
    as_dict = {item["name"]: item["values"][0] for item in node_env}
    assert as_dict["cluster"] == "lab-gpu-cluster"
    assert as_dict["node"] == FAULTY_NODE and as_dict["driver"] == "550.54.15"
    all_env = {
        i["name"]: i["values"][0] for i in _json(html / ALL_KEY, "widgets/allure_environment.json")
    }
    assert all_env["drivers"] == "550.54.15 (3 nodes)"
    assert all_env["run"] == sample_run.summary["run_id"]


def test_categories_in_reports(sample_run: SampleRun) -> None:
    html = sample_run.run_dir / "html"
    names = json.dumps(_json(html / ALL_KEY, "widgets/categories.json"))
    assert "GPUs not advertised" in names and "DCGM unreachable" in names
    node_tests = [json.loads(d) for n, d in report_data(html / FAULTY_NODE).items() if n.startswith("data/test-results/")]
    (failed,) = [t for t in node_tests if t["status"] == "failed"]
    assert [c["name"] for c in failed["categories"]] == ["GPUs not advertised"]


def test_multi_file_assets_deduplicated(multi_file_run: Path) -> None:
    html = multi_file_run / "html"
    bundles = sorted(html.glob("*/app-*.js"))
    assert len(bundles) == len(NODES) + 2
    assert len({p.stat().st_ino for p in bundles}) == 1


def test_history_carries_over(
    sample_run: SampleRun, bdd_output: tuple[Path, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    first = sample_run.run_dir / "html" / FAULTY_NODE
    assert len((first / HISTORY_FILE).read_text().splitlines()) == 1
    assert len(_status_dynamics(first)) == 1

    run2 = make_run_dir(tmp_path, "20261130-080000-audit", *bdd_output)
    capfd.readouterr()
    paths = build_reports(run2, previous=sample_run.run_dir)
    assert capfd.readouterr() == ("", "")  # build_reports prints nothing
    second = paths.node_html[FAULTY_NODE].parent
    assert len((second / HISTORY_FILE).read_text().splitlines()) == 2
    assert len(_status_dynamics(second)) == 2
    assert len(_status_dynamics(paths.all_html.parent)) == 2
    # The previous run's report is left as it was.
    assert len((first / HISTORY_FILE).read_text().splitlines()) == 1
    # Rebuilding a run with itself as the previous one keeps (and extends) its history.
    build_reports(run2, previous=run2)
    assert len((second / HISTORY_FILE).read_text().splitlines()) == 3


def test_missing_node_modules_says_run_setup(tmp_path: Path) -> None:
    with pytest.raises(AllureSetupError, match="npm ci"):
        allure_cli(tmp_path)


def test_report_data_reads_both_forms_alike(sample_run: SampleRun, multi_file_run: Path) -> None:
    single = report_data(sample_run.run_dir / "html" / FAULTY_NODE)
    multi = report_data(multi_file_run / "html" / FAULTY_NODE)
    assert not (sample_run.run_dir / "html" / FAULTY_NODE / "data").exists()
    names = {n for n in multi if n.startswith("data/test-results/")}
    assert len(names) == 3 and names == {n for n in single if n.startswith("data/test-results/")}
    for name in names:
        assert json.loads(single[name])["status"] == json.loads(multi[name])["status"]
