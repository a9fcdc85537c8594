"""What the reliability tests share: labs of their own, running the suite as a subprocess, identities from
deploy/rbac/ with TokenRequest tokens, and the apiserver's audit log read back by user and time window."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError

from lab import cluster, processes
from lab.kubeconfig import write_kubeconfig
from lab.state import LabPaths
from tests.conftest import Lab, start_lab

REPO = Path(__file__).resolve().parent.parent.parent
PYTEST = REPO / ".venv" / "bin" / "pytest"
RBAC_DIR = REPO / "deploy" / "rbac"
SUITE_NS = "gpu-conformance"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
FOUR_NODES = {"nodes": [
    {"name": "cp-1", "control_plane": True, "gpus": 0},
    {"name": "gpu-a", "gpus": 1},
    {"name": "gpu-b", "gpus": 2},
    {"name": "spark-1", "gpus": 1, "product": "NVIDIA GB10", "driver": "580.95.05", "compute_cap": "12.1",
     "memory_mib": None, "arch": "arm64", "docker": True,
     "files": {"/etc/docker/daemon.json": str(REPO / "lab" / "specs" / "spark-daemon.json")}},
]}


# ------------------------------------------------------------------------------------------------ labs
@dataclass
class OwnLab:
    """A lab started for one test module, in its own state folder; `down()` stops it and removes it."""

    lab: Lab
    folder: Path

    @property
    def paths(self) -> LabPaths:
        return self.lab.paths

    @property
    def status(self) -> dict:
        return self.lab.status

    def down(self) -> None:
        cluster.down(self.paths)


def own_lab(spec_doc: dict, folder: Path, attempts: int = 2) -> OwnLab:
    """Start a lab in `folder`. On a machine busy with other labs a control-plane process now and then dies
    while it starts (that lab is stopped again by start_lab); one more attempt, in a fresh folder."""
    from lab.controlplane import LabError

    folder.mkdir(parents=True, exist_ok=True)
    spec_file = folder / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec_doc))
    for attempt in range(attempts):
        try:
            return OwnLab(start_lab(spec_file, folder / f"state{attempt or ''}"), folder)
        except LabError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@dataclass
class Run:
    """One run of the suite in a subprocess: exit status, output, summary.json, the time window."""

    args: tuple[str, ...]
    rc: int
    output: str
    started: float
    finished: float
    report_dir: Path
    summary: dict = field(default_factory=dict)

    @property
    def results(self) -> list[dict]:
        return list(self.summary.get("results") or [])

    def outcomes(self, node: str | None = "*") -> dict[tuple[str | None, str], str]:
        """(node, scenario) -> outcome; node "*" = every node."""
        return {(r["node"], r["scenario"]): r["outcome"] for r in self.results if node == "*" or r["node"] == node}

    def of(self, node: str | None, scenario_part: str) -> dict:
        hits = [r for r in self.results if r["node"] == node and scenario_part in r["scenario"]]
        assert len(hits) == 1, f"{len(hits)} results for {node}/{scenario_part!r}: {[r['scenario'] for r in hits]}"
        return hits[0]

    def not_passed(self) -> list[tuple[str | None, str, str, str]]:
        return sorted((r["node"] or "", r["scenario"], r["outcome"], r["message"][:300]) for r in self.results
                       if r["outcome"] != "passed")

    def describe(self) -> str:
        return f"rc={self.rc} args={' '.join(self.args)}\n" + "\n".join(map(str, self.not_passed())) + \
            "\n--- output tail ---\n" + self.output[-4000:]


def suite_env(lab: Lab | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a suite run: no KUBECONFIG/HELM_* of the caller; LAB_STATE_DIR names `lab` (or a
    folder where no lab is, so that nothing can reach the developer's default lab by accident)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBECONFIG", "PYTEST_"))}
    env["LAB_STATE_DIR"] = str(lab.paths.root) if lab else str(Path(tempfile.gettempdir()) / "gnc-reliability-no-lab")
    env.update(extra or {})
    return env


def suite_argv(*args: str, report_dir: Path, lab: bool = True) -> list[str]:
    return [str(PYTEST), str(REPO / "features"), *(["--lab"] if lab else []), "-q", "-p", "no:randomly",
            "-p", "no:cacheprovider", "--report-dir", str(report_dir), *args]


def read_summary(report_dir: Path) -> dict:
    f = report_dir / "latest" / "summary.json"
    return json.loads(f.read_text()) if f.exists() else {}


def run_suite(lab: Lab | None, *args: str, report_dir: Path, timeout: float = 600, cwd: Path = REPO,
              env: dict[str, str] | None = None) -> Run:
    """`pytest features/ [--lab] -q <args>` (against `lab` through LAB_STATE_DIR; without --lab when `lab` is
    None), results read from report_dir/latest."""
    report_dir.mkdir(parents=True, exist_ok=True)
    latest = report_dir / "latest"
    if latest.is_symlink():
        latest.unlink()
    started = time.time()
    res = subprocess.run(suite_argv(*args, report_dir=report_dir, lab=lab is not None), cwd=cwd,
                         env=suite_env(lab, env), capture_output=True, text=True, timeout=timeout)
    finished = time.time()
    output = res.stdout + res.stderr
    (report_dir / "pytest-output.txt").write_text(output)  # scanned for secrets with the reports
    return Run(tuple(args), res.returncode, output, started, finished, report_dir, read_summary(report_dir))


def start_suite(lab: Lab, *args: str, report_dir: Path, log: Path) -> subprocess.Popen:
    """The suite in its own session and process group (so that a Ctrl-C can be sent to the group)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    out = log.open("w")
    return subprocess.Popen(suite_argv(*args, report_dir=report_dir), cwd=REPO, env=suite_env(lab),
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_default_sigint)


def _default_sigint() -> None:
    """Ctrl-C must reach the run as in a terminal, even when this test process was started in the
    background by a non-interactive shell (which leaves SIGINT ignored, and children inherit that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(proc: subprocess.Popen, timeout: float = 120) -> int:
    """Ctrl-C as a terminal sends it: SIGINT to the whole foreground process group (pytest and helm)."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        raise


# ------------------------------------------------------------------------------------------------ identities
def rbac_documents(*names: str) -> list[dict]:
    files = [RBAC_DIR / n for n in names] if names else sorted(RBAC_DIR.glob("*.yaml"))
    return [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]


def apply(api: client.ApiClient, docs: Iterable[dict]) -> list[str]:
    """Create or replace each object (as an administrator would with kubectl apply)."""
    dyn = DynamicClient(api)
    done = []
    for doc in docs:
        res = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        md = doc["metadata"]
        ns = md.get("namespace")
        try:
            current = res.get(name=md["name"], namespace=ns)
        except NotFoundError:
            res.create(body=doc, namespace=ns)
        else:
            body = {**doc, "metadata": {**md, "resourceVersion": current.metadata.resourceVersion}}
            res.replace(body=body, namespace=ns)
        done.append(f"{doc['kind']}/{md['name']}")
    return done


def sa_token(api: client.ApiClient, name: str, namespace: str = SUITE_NS, seconds: int = 3600) -> str:
    """A bound ServiceAccount token from the TokenRequest API (what `kubectl create token` does)."""
    req = client.CoreV1Api(api).create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": seconds}})
    return req.status.token


def sa_kubeconfig(lab: Lab, name: str, path: Path, namespace: str = SUITE_NS) -> tuple[Path, str]:
    token = sa_token(lab.api(), name, namespace)
    write_kubeconfig(path, lab.status["server"], lab.paths.pki / "ca.crt", token=token, user=name,
                     cluster="gpu-lab")
    return path, f"system:serviceaccount:{namespace}:{name}"


# ------------------------------------------------------------------------------------------------ audit log
def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def audit_events(lab: Lab, user: str, since: float, until: float) -> list[dict]:
    """Completed requests of `user` received within [since, until] (the apiserver's audit log, Metadata level)."""
    out = []
    for f in sorted(Path(lab.status["audit_log"]).parent.glob("audit*.log")):
        for line in f.read_text(errors="replace").splitlines():
            if not line or user not in line:
                continue
            ev = json.loads(line)
            if ev.get("stage") != "ResponseComplete" or ev.get("user", {}).get("username") != user:
                continue
            if since <= _ts(ev["requestReceivedTimestamp"]) <= until:
                out.append(ev)
    return out


def writes(events: Iterable[dict]) -> list[str]:
    """The write requests among events, as 'verb resource namespace/name (code)'."""
    return [describe(e) for e in events if e.get("verb") in WRITE_VERBS]


def describe(e: dict) -> str:
    ref = e.get("objectRef") or {}
    res = ref.get("resource", e.get("requestURI", "?")) + (f"/{ref['subresource']}" if ref.get("subresource") else "")
    where = "/".join(p for p in (ref.get("namespace"), ref.get("name")) if p)
    return f"{e['verb']} {res} {where} ({(e.get('responseStatus') or {}).get('code')})"


def refused(events: Iterable[dict]) -> list[str]:
    return [describe(e) for e in events if (e.get("responseStatus") or {}).get("code") == 403]


# ------------------------------------------------------------------------------------------------ misc
def restart_apiserver(lab: Lab) -> tuple[float, float]:
    """Stop the lab's kube-apiserver (SIGTERM, SIGKILL after 3 s) and start it again with the same argv;
    returns (when the old process was gone, when the new one was ready), as time.time()."""
    from lab import controlplane

    argv = (lab.paths.run / "kube-apiserver.cmd").read_text().split("\0")
    assert processes.stop(lab.paths, "kube-apiserver", timeout=3), "the lab's kube-apiserver was not running"
    stopped = time.time()
    processes.start(lab.paths, "kube-apiserver", argv)
    controlplane.wait_apiserver(lab.paths, json.loads(lab.paths.ports_file.read_text()))
    return stopped, time.time()


def wait_until(what: str, fn: Any, timeout: float = 60.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def lines(path: Path) -> Iterator[str]:
    yield from path.read_text(errors="replace").splitlines() if path.exists() else ()


def configmap_or_none(core: client.CoreV1Api, name: str, ns: str) -> Any:
    try:
        return core.read_namespaced_config_map(name, ns)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


__all__ = ["sys"]


def audit_stream(lab: Lab, user: str, since: float) -> list[dict]:
    """Every audit event of `user` since `since`, any stage (a watch shows up at ResponseStarted)."""
    out = []
    for f in sorted(Path(lab.status["audit_log"]).parent.glob("audit*.log")):
        text = f.read_text(errors="replace")
        # the apiserver is appending while this reads: a last line without its newline is not complete yet
        lines = text.splitlines() if text.endswith("\n") else text.splitlines()[:-1]
        for line in lines:
            if line and user in line:
                ev = json.loads(line)
                if ev.get("user", {}).get("username") == user and _ts(ev["requestReceivedTimestamp"]) >= since:
                    out.append(ev)
    return out
