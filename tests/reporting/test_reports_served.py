"""Allure's multi-file form: a spinner from disk (why reports are single files by default), its full report
through `python -m provision.reporting serve` on 127.0.0.1."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from provision.reporting.serve import make_server, url_of

from .conftest import FAILURE_MESSAGE, FAULTY_NODE, Chromium, SampleRun, parse_rows

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _failed_cell_href(run_dir: Path) -> str:
    rows = parse_rows((run_dir / "fleet.html").read_text(encoding="utf-8"))
    (cell,) = [c for c in rows[FAULTY_NODE]["cells"] if c[0] == "f"]
    return cell[1]


def test_single_file_reports_are_one_file(sample_run: SampleRun) -> None:
    report = sample_run.run_dir / "html" / FAULTY_NODE
    assert not (report / "data").exists()  # no data files fetched at run time
    assert "data:text/javascript;base64," in (report / "index.html").read_text(encoding="utf-8")


def test_multi_file_report_is_a_spinner_from_disk_and_whole_when_served(multi_file_run: Path, chromium: Chromium):
    href = _failed_cell_href(multi_file_run)
    assert (multi_file_run / "html" / FAULTY_NODE / "data" / "test-results").is_dir()
    # A generous budget: the spinner is not a matter of time.
    from_disk = chromium.dump_dom((multi_file_run / "fleet.html").as_uri().rsplit("/", 1)[0] + "/" + href,
                                  budget_ms=20000)
    assert FAILURE_MESSAGE not in from_disk  # Allure's fetch() of its data fails on file://

    server = make_server(multi_file_run)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert server.server_address[0] == "127.0.0.1"
        served = chromium.dump_dom(url_of(server, href), wait_for=FAILURE_MESSAGE)
        assert FAILURE_MESSAGE in served
    finally:
        server.shutdown()
        server.server_close()


def test_serve_command_listens_on_localhost_only(multi_file_run: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "provision.reporting", "serve", str(multi_file_run), "--port", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:(\d+)/fleet\.html", line)
        assert match, line
        with urllib.request.urlopen(match.group(0), timeout=10) as resp:
            assert FAULTY_NODE in resp.read().decode("utf-8")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_command_refuses_a_missing_folder(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "provision.reporting", "serve", str(tmp_path / "nope")],
        cwd=REPO, capture_output=True, text=True, timeout=30, check=False,
    )
    assert proc.returncode == 2
    assert "is not a folder" in proc.stderr
