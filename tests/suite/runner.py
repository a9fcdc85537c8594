"""Run the suite (`pytest features/ ...`) as a user would, against a given lab, and read its summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass
class SuiteRun:
    rc: int
    output: str
    summary: dict
    run_dir: Path
    started: float
    finished: float

    def results(self, node: str | None = "*") -> list[dict]:
        return [r for r in self.summary.get("results", []) if node == "*" or r["node"] == node]

    def outcomes(self) -> dict[tuple[str | None, str], str]:
        return {(r["node"], r["scenario"]): r["outcome"] for r in self.summary.get("results", [])}


def run_suite(lab, report_dir: Path, *args: str, timeout: float = 600, env: dict | None = None) -> SuiteRun:
    cmd = [sys.executable, "-m", "pytest", "features/", "--lab", "-q", "-p", "no:cacheprovider",
           "--report-dir", str(report_dir), *args]
    full_env = {**os.environ, "LAB_STATE_DIR": str(lab.paths.root), **(env or {})}
    for k in ("HELM_CONFIG_HOME", "HELM_CACHE_HOME", "HELM_DATA_HOME"):
        full_env.pop(k, None)
    started = time.time()
    res = subprocess.run(cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout)
    finished = time.time()
    latest = report_dir / "latest"
    summary = json.loads((latest / "summary.json").read_text()) if (latest / "summary.json").exists() else {}
    return SuiteRun(res.returncode, res.stdout + res.stderr, summary, latest.resolve(), started, finished)


def suite_writes(lab, run: SuiteRun) -> list[dict]:
    """Write requests (create/update/patch/delete) the suite's user made during the run, from the audit log."""
    user = lab.status["suite_user"]
    out = []
    for e in lab.audit_events():
        if e.get("user", {}).get("username") != user or e.get("stage") != "ResponseComplete":
            continue
        ts = e.get("requestReceivedTimestamp", "")
        from datetime import datetime

        t = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp() if ts else 0
        # From the moment the run was started (same clock as the apiserver's): a run started right after another
        # must not be blamed for the other's last writes.
        if run.started <= t <= run.finished + 1 and e.get("verb") in ("create", "update", "patch", "delete",
                                                                             "deletecollection"):
            out.append(e)
    return out
