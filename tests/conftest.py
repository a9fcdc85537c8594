"""Test fixtures shared by every test folder: the local lab (real control plane + kwok + GPU twin)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from lab import cluster
from lab.state import LabPaths

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
TEST_LABEL = "test.gpu-conformance.io/owned"


class Lab:
    """A running lab as tests see it: its status document, API clients and helpers."""

    def __init__(self, status: dict, paths: LabPaths) -> None:
        self.status = status
        self.paths = paths

    def api(self, which: str = "helper_kubeconfig") -> client.ApiClient:
        return config.new_client_from_config(config_file=self.status[which])

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api())

    def host_root(self, node: str) -> Path:
        return self.paths.host_root(node)

    def helm(self, *args: str, check: bool = True, kubeconfig: str | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess:
        home = self.paths.root / "helm-home"
        env = {**os.environ, "KUBECONFIG": kubeconfig or self.status["helper_kubeconfig"],
               "HELM_CONFIG_HOME": str(home / "config"), "HELM_CACHE_HOME": str(home / "cache"),
               "HELM_DATA_HOME": str(home / "data")}
        res = subprocess.run([self.status["helm"], *args], env=env, capture_output=True, text=True, timeout=timeout)
        if check and res.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return res

    def audit_events(self) -> list[dict]:
        import json

        return [json.loads(line) for line in Path(self.status["audit_log"]).read_text().splitlines() if line]

    def install_operator(self, version: str = "v26.3.0", *extra: str) -> None:
        self.helm("repo", "add", "lab", self.status["chart_repo"], "--force-update")
        self.helm("upgrade", "--install", "gpu-operator", "lab/gpu-operator", "--version", version,
                  "-n", "gpu-operator", "--create-namespace", "--set", "driver.enabled=false",
                  "--wait", "--timeout", "3m", *extra)


def start_lab(spec: Path | None, root: Path) -> Lab:
    paths = LabPaths(root=root)
    try:
        status = cluster.up(spec, paths=paths, quiet=True)
    except BaseException:
        cluster.down(paths)  # a lab that did not come up leaves no process behind (the fixture never saw it)
        raise
    return Lab(status, paths)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The default lab, started for the test session (or reused if one is running: then left running)."""
    from lab import processes

    paths = LabPaths()
    was_running = processes.running(paths, "kube-apiserver") is not None
    status = cluster.up(None, paths=paths, quiet=True)
    handle = Lab(status, paths)
    yield handle
    core = handle.core
    for ns in core.list_namespace(label_selector=TEST_LABEL).items:
        core.delete_namespace(ns.metadata.name)
    if not was_running:
        cluster.down(paths)


def _lab_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """make(spec_doc, name) starts a lab from a spec document in its own state folder (own ports); every lab
    made is torn down when the generator is closed."""
    started: list[LabPaths] = []

    def make(spec_doc: dict, name: str = "lab") -> Lab:
        folder = tmp_path_factory.mktemp(name)
        spec_file = folder / "spec.yaml"
        spec_file.write_text(yaml.safe_dump(spec_doc))
        handle = start_lab(spec_file, folder / "state")
        started.append(handle.paths)
        return handle

    yield make
    for p in started:
        cluster.down(p)


@pytest.fixture
def lab_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Extra labs for one test, torn down after it."""
    yield from _lab_factory(tmp_path_factory)


@pytest.fixture(scope="module")
def module_lab_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Extra labs shared by the tests of one module."""
    yield from _lab_factory(tmp_path_factory)


@pytest.fixture
def test_namespace(lab: Lab) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    lab.core.create_namespace({"metadata": {"name": name, "labels": {TEST_LABEL: "true"}}})
    yield name
    lab.core.delete_namespace(name)


