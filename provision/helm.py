"""The helm command-line client, as the suite uses it (JSON output, timeouts, clear errors).

Reads (list, get values, show values, search) are allowed in every mode; install/upgrade/rollback/
uninstall and `repo add` go through the write guard.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from provision.hosts.guard import WRITE_GUARD
from provision.settings import Settings


class HelmError(RuntimeError):
    pass


def helm_command(setting: str) -> str:
    """The helm to run: the setting (a path, or a name looked up on PATH); a bare `helm` not on PATH is also
    looked for next to the running Python (`make setup` links the lab's helm into .venv/bin, so a
    `.venv/bin/pytest` that was not activated finds it too)."""
    if os.sep in setting or shutil.which(setting):
        return setting
    beside = Path(sys.executable).parent / setting
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else setting


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    revision: int
    status: str
    chart: str            # e.g. gpu-operator-v26.3.0
    app_version: str

    @property
    def chart_version(self) -> str:
        return self.chart.rsplit("-", 1)[-1] if "-" in self.chart else ""


class Helm:
    def __init__(self, settings: Settings, kubeconfig: str | None) -> None:
        self.settings = settings
        self.env = dict(os.environ)
        if kubeconfig:
            self.env["KUBECONFIG"] = kubeconfig
        self.base = [helm_command(settings.helm)]
        if settings.context:
            self.base += ["--kube-context", settings.context]

    def _run(self, args: list[str], timeout: float = 120, write: str | None = None) -> str:
        if write:
            WRITE_GUARD.check(write)
        try:
            proc = subprocess.Popen([*self.base, *args], env=self.env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        except FileNotFoundError as exc:
            raise HelmError(f"helm is not installed or not on PATH ({self.settings.helm}); install helm 3.19+ "
                            "or set the helm setting to its path") from exc
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            _stop(proc)
            raise HelmError(f"helm {' '.join(args[:3])} did not finish within {timeout:.0f}s") from exc
        except KeyboardInterrupt:
            _stop(proc)
            raise
        if proc.returncode != 0:
            raise HelmError(f"helm {' '.join(args[:4])} failed: {stderr.strip() or stdout.strip()}")
        return stdout

    def repo_ref(self) -> str:
        return f"{self.settings.chart_repo_name}/gpu-operator"

    def repo_add(self) -> None:
        self._run(["repo", "add", self.settings.chart_repo_name, self.settings.chart_repo, "--force-update"],
                  write=f"helm repo add {self.settings.chart_repo_name} {self.settings.chart_repo}")

    def chart_versions(self) -> list[str]:
        out = self._run(["search", "repo", self.repo_ref(), "--versions", "-o", "json"])
        return [c["version"] for c in json.loads(out or "[]") if c.get("name") == self.repo_ref()]

    def chart_values(self, version: str) -> dict[str, Any]:
        return yaml.safe_load(self._run(["show", "values", self.repo_ref(), "--version", version])) or {}

    def release(self) -> Release | None:
        out = self._run(["list", "-n", self.settings.namespace, "-a", "-o", "json",
                         "--filter", f"^{self.settings.release}$"])
        for r in json.loads(out or "[]"):
            if r["name"] == self.settings.release:
                return Release(r["name"], r["namespace"], int(r["revision"]), r["status"], r["chart"],
                               r.get("app_version", ""))
        return None

    def values(self, all_values: bool = False) -> dict[str, Any]:
        """The release's own values (what its installer set), or with `all_values` the chart's defaults too."""
        out = self._run(["get", "values", self.settings.release, "-n", self.settings.namespace, "-o", "json",
                         *(["--all"] if all_values else [])])
        return json.loads(out or "{}") or {}

    def upgrade_install(self, version: str, values_file: str, timeout: float) -> None:
        self._run(["upgrade", "--install", self.settings.release, self.repo_ref(), "--version", version,
                   "-n", self.settings.namespace, "--create-namespace", "-f", values_file,
                   "--wait", "--timeout", f"{int(timeout)}s"],
                  timeout=timeout + 60,
                  write=f"helm upgrade --install {self.settings.release} {version}")

    def rollback(self, revision: int, timeout: float) -> None:
        self._run(["rollback", self.settings.release, str(revision), "-n", self.settings.namespace, "--wait",
                   "--timeout", f"{int(timeout)}s"], timeout=timeout + 60,
                  write=f"helm rollback {self.settings.release} {revision}")

    def uninstall(self, timeout: float) -> None:
        self._run(["uninstall", self.settings.release, "-n", self.settings.namespace, "--wait",
                   "--timeout", f"{int(timeout)}s"], timeout=timeout + 60,
                  write=f"helm uninstall {self.settings.release}")


HELM_CANCEL_S = 60.0


def _stop(proc: subprocess.Popen) -> None:
    """Stop helm the way Ctrl-C does (SIGINT; a terminal's Ctrl-C has already sent it to helm too) and give
    it time to finish: helm then marks an install/upgrade in progress as failed. Killed at once, it leaves
    the release pending-install/pending-upgrade and every later `helm upgrade` fails with "another
    operation (install/upgrade/rollback) is in progress" until someone repairs it by hand."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        proc.communicate(timeout=HELM_CANCEL_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def unknown_value_paths(values: Any, chart_values: Any, prefix: str = "") -> list[str]:
    """Dotted paths of `values` that the chart's own values.yaml does not have (the chart would ignore
    them). Lists are leaves: their items are not checked against the chart's defaults; so are maps the chart
    leaves empty (free-form maps such as draDriver.featureGates: {}, whose keys it documents in comments)."""
    out: list[str] = []
    if not isinstance(values, dict):
        return out
    for key, val in values.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if not isinstance(chart_values, dict) or key not in chart_values:
            out.append(path)
        elif isinstance(val, dict) and chart_values[key] != {}:
            out += unknown_value_paths(val, chart_values[key], path)
    return out
