"""Generate Allure 3 HTML reports with the repo's own Allure command-line tool (``node_modules/.bin/allure``).

What Allure 3 (npm ``allure`` 3.18) does, found by running it:

* ``allure generate --config <allurerc.json> --output <dir> <results dirs...>`` writes the default "awesome"
  report; it does not empty ``<dir>`` first: it writes into ``<dir>/awesome/`` and moves that up to ``<dir>``
  only when it is the only folder there. So every report is generated into a fresh, empty folder.
* History is one JSON-lines file (config ``historyPath``): generate reads the earlier runs from it for the
  trend charts and the per-test History tab, then appends this run. Each report here keeps its history
  file inside its own folder (``html/<key>/history.jsonl``); given a previous run, that run's file is copied
  in before generating, so the trends carry on from run to run (``historyLimit`` bounds it).
* Every report carries its own copy of the 2.7 MB app bundle: identical files across the reports of one run
  are hard-linked to one copy (:func:`dedupe_assets`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provision.reporting import ALL_KEY, CLUSTER_KEY
from provision.reporting.allure_meta import allure_config, write_allure_config
from provision.reporting.allure_split import validate_node_name

REPO_ROOT = Path(__file__).resolve().parents[2]
HISTORY_FILE = "history.jsonl"
DEFAULT_HISTORY_LIMIT = 30
GENERATE_TIMEOUT_S = 900
_INLINED = re.compile(r'\bd\("([\w./-]+)","([A-Za-z0-9+/=]*)"\)')
_PER_REPORT_FILES = frozenset({"index.html", "summary.json", "test-results.json", HISTORY_FILE})


class AllureSetupError(RuntimeError):
    """The Allure command-line tool (or node) is not installed where the project's set-up puts it."""


class AllureReportError(RuntimeError):
    """``allure generate`` failed or did not produce a report."""


def allure_cli(repo_root: Path | str | None = None) -> Path:
    """Path of the repo's Allure 3 CLI, ``<repo>/node_modules/.bin/allure``; never a global one."""
    root = Path(repo_root) if repo_root is not None else REPO_ROOT
    cli = root / "node_modules" / ".bin" / "allure"
    if not cli.exists():
        raise AllureSetupError(
            f"the Allure 3 command-line tool is not installed: {cli} is missing. Run the project's set-up "
            f"(`npm ci` in {root}, which installs the npm package `allure` pinned in package-lock.json) "
            "and try again."
        )
    if shutil.which("node") is None:
        raise AllureSetupError(
            "`node` is not on PATH: the Allure 3 command-line tool needs Node.js (Debian package `nodejs`); "
            "run the project's set-up."
        )
    return cli


def validate_report_key(key: str) -> str:
    if key in (ALL_KEY, CLUSTER_KEY):
        return key
    return validate_node_name(key)


def previous_html_root(previous: Path | str | None) -> Path | None:
    """The ``html`` folder of a previous run, given that run's folder (``reports/<run-id>``) or its ``html``."""
    if previous is None:
        return None
    prev = Path(previous)
    if not prev.is_dir():
        raise FileNotFoundError(f"previous run folder {prev} does not exist")
    if (prev / "html").is_dir():
        return prev / "html"
    return prev


@dataclass(frozen=True)
class ReportSpec:
    """One report to generate: ``html_root/<key>/`` from ``results_dirs``."""

    key: str
    results_dirs: tuple[Path, ...]
    name: str
    whole_run: bool = False
    extra_config: Mapping[str, Any] = field(default_factory=dict)


def _run_generate(cli: Path, spec: ReportSpec, out_dir: Path, config_path: Path, cwd: Path) -> Path:
    cmd = [str(cli), "generate", "--config", str(config_path), "--output", str(out_dir)]
    cmd += [str(d) for d in spec.results_dirs]
    env = {**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"}
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=GENERATE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AllureReportError(f"allure generate for {spec.key} timed out after {exc.timeout}s") from exc
    index = out_dir / "index.html"
    if proc.returncode != 0 or not index.is_file():
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise AllureReportError(
            f"allure generate for {spec.key} failed (exit {proc.returncode}, index.html "
            f"{'present' if index.is_file() else 'missing'}): {' '.join(cmd)}\n{tail}"
        )
    return index


def generate_reports(
    specs: Sequence[ReportSpec],
    html_root: Path | str,
    *,
    previous: Path | str | None = None,
    jobs: int | None = None,
    allure_bin: Path | str | None = None,
    history_limit: int | None = DEFAULT_HISTORY_LIMIT,
    single_file: bool = True,
) -> dict[str, Path]:
    """Generate every report of ``specs`` into ``html_root/<key>/``; return ``{key: .../index.html}``.

    ``single_file`` (default): each report is one ``index.html`` that opens from disk; False: Allure's
    multi-file form (app bundle shared by hard links, data fetched at run time: needs an HTTP server,
    ``python -m provision.reporting serve RUN``).

    ``html_root`` is rebuilt: whatever was there goes. ``previous``: a previous run's folder (or its ``html``
    folder) whose per-report history files seed this run's, so Allure's trends continue. Reports are
    generated ``jobs`` at a time (default: the number of CPUs).
    """
    cli = Path(allure_bin) if allure_bin is not None else allure_cli()
    html_root = Path(html_root)
    keys = [validate_report_key(s.key) for s in specs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate report keys")
    prev_root = previous_html_root(previous)

    with tempfile.TemporaryDirectory(prefix="allure-gen-") as tmp_name:
        tmp = Path(tmp_name)
        # Save the previous histories first: the previous run may be this very run (a rebuild).
        seeds: dict[str, Path] = {}
        if prev_root is not None:
            for key in keys:
                src = prev_root / key / HISTORY_FILE
                if src.is_file():
                    seeds[key] = tmp / f"{key}.history.jsonl"
                    shutil.copyfile(src, seeds[key])
        if html_root.exists():
            shutil.rmtree(html_root)
        html_root.mkdir(parents=True)

        def one(spec: ReportSpec) -> tuple[str, Path]:
            out = html_root / spec.key
            out.mkdir()
            history = out / HISTORY_FILE
            if spec.key in seeds:
                shutil.copyfile(seeds[spec.key], history)
            config = allure_config(name=spec.name, history_path=history, history_limit=history_limit,
                                   whole_run=spec.whole_run, single_file=single_file)
            config.update(spec.extra_config)
            config_path = write_allure_config(tmp / f"{spec.key}.allurerc.json", config)
            return spec.key, _run_generate(cli, spec, out, config_path, tmp)

        workers = max(1, jobs or os.cpu_count() or 1)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            done = dict(pool.map(one, specs))
    dedupe_assets(html_root)
    return {key: done[key] for key in keys}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dedupe_assets(html_root: Path | str) -> int:
    """Hard-link identical top-level static files (the app bundle) of the reports under ``html_root``.

    Returns the number of files replaced by a link. Silently keeps the copies where linking fails.
    """
    html_root = Path(html_root)
    canon: dict[tuple[str, int], tuple[Path, str]] = {}
    linked = 0
    for report in sorted(p for p in html_root.iterdir() if p.is_dir()):
        for path in sorted(report.iterdir()):
            if path.name in _PER_REPORT_FILES or not path.is_file() or path.is_symlink():
                continue
            key = (path.name, path.stat().st_size)
            if key not in canon:
                canon[key] = (path, _sha256(path))
                continue
            first, digest = canon[key]
            if os.path.samefile(first, path) or _sha256(path) != digest:
                continue
            tmp = path.with_name(f".{path.name}.link")
            try:
                os.link(first, tmp)
                os.replace(tmp, path)
                linked += 1
            except OSError:
                tmp.unlink(missing_ok=True)
    return linked


def inlined_data(index_html: Path | str) -> dict[str, bytes]:
    """The data files inlined in a single-file report's ``index.html`` by name, decoded; {} for any other file."""
    path = Path(index_html)
    if not path.is_file():
        return {}
    out: dict[str, bytes] = {}
    for name, encoded in _INLINED.findall(path.read_text("utf-8", errors="replace")):
        try:
            out[name] = base64.b64decode(encoded, validate=True)
        except ValueError:
            continue
    return out


def report_data(report_dir: Path | str) -> dict[str, bytes]:
    """The data files of a generated report by name (``widgets/charts.json``, ``data/test-results/<id>.json``,
    ``data/attachments/...``), in either form: files under the report's folder (multi-file) or the calls
    ``d("<name>","<base64>")`` of the single-file ``index.html``'s inline script."""
    root = Path(report_dir)
    out = inlined_data(root / "index.html")
    for top in ("data", "widgets"):
        for path in sorted((root / top).rglob("*")) if (root / top).is_dir() else ():
            if path.is_file():
                out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


class ReportIndex:
    """The test results of one generated Allure 3 report, to deep-link into it (``index.html#<id>``)."""

    def __init__(self, report_dir: Path | str) -> None:
        self.report_dir = Path(report_dir)
        self._tests: list[dict[str, Any]] | None = None
        self._features: dict[str, str | None] = {}
        self._inlined: dict[str, bytes] | None = None

    @property
    def tests(self) -> list[dict[str, Any]]:
        if self._tests is None:
            self._tests = self._load()
        return self._tests

    def _load(self) -> list[dict[str, Any]]:
        index = self.report_dir / "test-results.json"
        try:
            by_id = json.loads(index.read_text(encoding="utf-8")).get("byId", {})
            return [t for t in by_id.values() if isinstance(t, dict) and isinstance(t.get("id"), str)]
        except (OSError, ValueError, AttributeError):
            pass
        tests = []
        for path in sorted((self.report_dir / "data" / "test-results").glob("*.json")):
            try:
                t = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(t, dict) and isinstance(t.get("id"), str):
                tests.append(t)
        return tests

    def _feature(self, test_id: str) -> str | None:
        if test_id not in self._features:
            feature = None
            try:
                data = self._test_data(test_id)
                for label in data.get("labels") or ():
                    if label.get("name") == "feature":
                        feature = label.get("value")
            except (OSError, ValueError, AttributeError):
                pass
            self._features[test_id] = feature
        return self._features[test_id]

    def _test_data(self, test_id: str) -> dict[str, Any]:
        """One test's data file: ``data/test-results/<id>.json``, or inlined in a single-file ``index.html``."""
        path = self.report_dir / "data" / "test-results" / f"{test_id}.json"
        if path.is_file():
            return json.loads(path.read_text("utf-8"))
        # Single-file form: the data is inlined in index.html.
        if self._inlined is None:
            self._inlined = report_data(self.report_dir)
        data = self._inlined.get(f"data/test-results/{test_id}.json")
        if data is None:
            raise ValueError(f"no data for test {test_id} in {self.report_dir}")
        return json.loads(data)

    def test_id(self, scenario: str, outcome: str, feature: str | None = None) -> str | None:
        """The id of the one test named ``scenario`` with status ``outcome`` (and ``feature``), else None."""
        found = [t["id"] for t in self.tests if t.get("name") == scenario and t.get("status") == outcome]
        if len(found) > 1 and feature is not None:
            found = [i for i in found if self._feature(i) == feature]
        return found[0] if len(found) == 1 else None
