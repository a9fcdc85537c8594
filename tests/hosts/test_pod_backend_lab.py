"""The pod backend against the lab: the access pod is created on a lab node through the Kubernetes API,
played by the GPU twin like any other pod, used through ``pods/exec`` (apiserver -> kwok's kubelet API ->
the command runs on this machine, per the ClusterExec ``lab-exec``), and removed afterwards.

In the lab a node's host is a folder (``nodes[].host_root``), so the HostSpec is the pod backend with that
folder as ``root`` and exec_mode ``path`` instead of the production ``/host`` + ``chroot``. The last test runs
the suite's audit with ``--host-backend pod`` on a provisioned lab of its own and checks in the audit log that
the only objects the suite created were its access pods.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from provision.context import RunContext
from provision.hosts.access import HostAccess
from provision.hosts.guard import WriteGuard
from provision.hosts.pod_backend import COMPONENT, build_pod_manifest, split_exit_marker
from provision.hosts.spec import HostSpec
from provision.labels import MANAGED_BY, SUITE
from provision.settings import Settings
from tests.conftest import Lab
from tests.suite.runner import run_suite, suite_writes

MANAGED_BY_LABEL = f"{MANAGED_BY}={SUITE},app.kubernetes.io/component={COMPONENT}"


# -- without the lab -------------------------------------------------------------------------------------------


def test_exit_marker_is_split_off_stderr() -> None:
    marker = "gnc-exit-status-0123456789abcdef"
    assert split_exit_marker(f"oops\n{marker} 3\n".encode(), marker) == (3, b"oops\n")
    # stderr without a final newline keeps its bytes exactly
    assert split_exit_marker(f"no newline{marker} 0\n".encode(), marker) == (0, b"no newline")
    # the last marker counts; a line that only looks like one (another marker, no status) is left alone
    other = "gnc-exit-status-ffffffffffffffff 9\n"
    assert split_exit_marker(f"{other}{marker} 1\n".encode(), marker) == (1, other.encode())
    assert split_exit_marker(f"{marker} x\n".encode(), marker) == (None, f"{marker} x\n".encode())
    assert split_exit_marker(b"killed\n", marker) == (None, b"killed\n")


def test_pod_spec_with_a_host_folder() -> None:
    spec = HostSpec(backend="pod", address="gpu-a", root="/srv/lab/hosts/gpu-a/", exec_mode="path")
    assert (spec.root, spec.exec_mode) == ("/srv/lab/hosts/gpu-a", "path")
    with pytest.raises(ValueError, match="'chroot' or 'path'"):
        HostSpec(backend="pod", address="gpu-a", root="/srv/lab/hosts/gpu-a", exec_mode="direct")
    with pytest.raises(ValueError, match="not '/'"):
        HostSpec(backend="pod", address="gpu-a", root="/", exec_mode="path")
    manifest = build_pod_manifest("gpu-a", suffix="abc", host_mount="/srv/lab/hosts/gpu-a")
    assert manifest["spec"]["containers"][0]["volumeMounts"] == [
        {"name": "host-root", "mountPath": "/srv/lab/hosts/gpu-a"}
    ]
    assert manifest["spec"]["volumes"][0]["hostPath"]["path"] == "/"
    with pytest.raises(ValueError, match="host_mount"):
        build_pod_manifest("gpu-a", host_mount="/")


class _Snapshot:
    nodes: dict[str, dict[str, Any]] = {"gpu-a": {"status": {"addresses": [{"type": "InternalIP",
                                                                             "address": "127.0.0.1"}]}}}


class _Kube:
    def snapshot(self) -> _Snapshot:
        return _Snapshot()


def test_suite_maps_a_node_with_a_host_root_to_the_pod_backend_in_path_mode(tmp_path: Path) -> None:
    with_root = Settings(host_backend="pod", host_roots={"gpu-a": "/srv/lab/hosts/gpu-a"})
    spec = RunContext(with_root, _Kube(), tmp_path, ("gpu-a",)).host_spec("gpu-a")  # type: ignore[arg-type]
    assert (spec.backend, spec.address, spec.root, spec.exec_mode) == ("pod", "gpu-a", "/srv/lab/hosts/gpu-a",
                                                                       "path")
    assert spec.pod_namespace == with_root.suite_namespace
    plain = RunContext(Settings(host_backend="pod"), _Kube(), tmp_path, ("gpu-a",)).host_spec("gpu-a")  # type: ignore[arg-type]
    assert (plain.root, plain.exec_mode) == ("/host", "chroot")


# -- against the lab -------------------------------------------------------------------------------------------


def _audit_events(lab: Lab, needle: str) -> list[dict[str, Any]]:
    """Audit events whose line mentions ``needle`` (the shared lab's log is large: filter before parsing)."""
    text = Path(lab.status["audit_log"]).read_text()
    return [json.loads(line) for line in text.splitlines() if needle in line]


def _wait_gone(core: client.CoreV1Api, name: str, namespace: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            pod = core.read_namespaced_pod(name, namespace)
        except ApiException as exc:
            assert exc.status == 404, exc
            return
        assert time.monotonic() < deadline, f"pod {namespace}/{name} still there: {pod.metadata.deletion_timestamp}"
        time.sleep(0.1)


@pytest.mark.lab
@pytest.mark.slow
def test_pod_backend_against_a_lab_node(lab: Lab, test_namespace: str) -> None:
    node = next(n for n in lab.status["nodes"] if n["gpus"])
    name, root = node["name"], node["host_root"]
    core = client.CoreV1Api(lab.api("kubeconfig"))  # the suite's identity, as in a suite run
    spec = HostSpec(backend="pod", address=name, pod_namespace=test_namespace, root=root, exec_mode="path")
    guard = WriteGuard()
    folder = f"/var/lib/gnc-pod-backend-{uuid.uuid4().hex[:12]}"  # a folder of the test's own in the host view
    probe = f"{folder}/probe.txt"
    seeded = Path(root) / probe.lstrip("/")
    host = HostAccess(spec, name=name, core_v1=core, guard=guard)
    try:
        # a host command: the node's own nvidia-smi (the twin's, in the node's folder), by name
        smi = host.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], timeout=30)
        assert smi.ok, smi
        assert smi.stdout.strip().splitlines() == [node["product"]] * node["gpus"]

        # the pod exists on the node, is the backend's, and the twin runs it like any other pod
        (pod,) = core.list_namespaced_pod(test_namespace, label_selector=MANAGED_BY_LABEL).items
        pod_name = pod.metadata.name
        assert pod.spec.node_name == name and pod.spec.host_pid and pod.spec.containers[0].security_context.privileged
        assert pod.spec.containers[0].volume_mounts[0].mount_path == root
        assert pod.status.phase == "Running" and pod.status.pod_ip
        assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "True"
        (cs,) = pod.status.container_statuses
        assert cs.ready and cs.state.running is not None

        # exit status, stdout and stderr arrive as the command left them (kwok reports no exit codes itself)
        res = host.run(["sh", "-c", "printf out; printf 'err\\n' >&2; exit 7"])
        assert (res.rc, res.stdout, res.stderr) == (7, "out", "err\n")
        assert host.run(["sh", "-c", "sleep 5"], timeout=0.5).timed_out

        # files of the node's host view: written by this test, read through the pod, and the other way round
        seeded.parent.mkdir()
        seeded.write_text("seeded by the test\n")
        assert host.read_text(probe) == "seeded by the test\n"
        assert host.exists(probe) and host.glob(f"{folder}/*.txt") == [probe]
        with guard.allow("pod backend test"):
            written = host.write_text(probe, "written through the pod\n", backup=False)
            assert written.changed
            assert seeded.read_text() == "written through the pod\n"
            assert host.read_text(probe) == "written through the pod\n"
            assert host.remove(probe, backup=False).changed
        assert not seeded.exists() and host.read_text(probe) is None
    finally:
        host.close()
        shutil.rmtree(seeded.parent, ignore_errors=True)

    # removed: gone from the API, and no access pod left in the namespace
    _wait_gone(core, pod_name, test_namespace)
    assert core.list_namespaced_pod(test_namespace, label_selector=MANAGED_BY_LABEL).items == []

    # everything went over the apiserver's exec API, as the suite's user
    user = lab.status["suite_user"]
    deadline = time.monotonic() + 10
    while True:
        events = [e for e in _audit_events(lab, pod_name)
                  if e.get("stage") == "ResponseComplete" and e["user"]["username"] == user]
        execs = [e for e in events if e["objectRef"].get("subresource") == "exec"]
        if len(execs) >= 8 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert execs and all(e["responseStatus"]["code"] == 101 for e in execs), execs[:3]
    assert len(execs) >= 8, f"{len(execs)} exec requests for the commands above"
    verbs = {(e["verb"], e["objectRef"].get("subresource")) for e in events}
    assert {("create", None), ("delete", None)} <= verbs, verbs


# -- the suite's audit run with the pod backend -----------------------------------------------------------------

SPEC = {"nodes": [
    {"name": "cp-1", "control_plane": True, "gpus": 0},
    {"name": "gpu-a", "gpus": 1},
    {"name": "gpu-b", "gpus": 2},
]}


@pytest.mark.lab
@pytest.mark.slow
def test_audit_with_the_pod_backend_creates_only_its_access_pods(lab_factory, tmp_path: Path) -> None:
    lab: Lab = lab_factory(SPEC, "podaudit")
    provisioned = run_suite(lab, tmp_path / "provision", "--provision")  # host backend: lab (the default)
    assert provisioned.rc == 0, provisioned.output[-4000:]

    audit = run_suite(lab, tmp_path / "audit", "--host-backend", "pod", "--no-workload")
    assert audit.rc == 0, audit.output[-4000:]
    outcomes = {r["outcome"] for r in audit.results()}
    assert outcomes <= {"passed", "skipped"}, [r for r in audit.results() if r["outcome"] not in ("passed", "skipped")]

    suite_ns = Settings().suite_namespace
    writes = suite_writes(lab, audit)
    others = [f"{e['verb']} {e['objectRef']}" for e in writes
              if e["objectRef"].get("resource") != "pods" or e["objectRef"].get("subresource")
              or e["objectRef"].get("namespace") != suite_ns
              or not e["objectRef"].get("name", "").startswith("gnc-host-")]
    assert others == [], others
    created = {e["objectRef"]["name"] for e in writes if e["verb"] == "create" and e["responseStatus"]["code"] == 201}
    deleted = {e["objectRef"]["name"] for e in writes if e["verb"] == "delete" and e["responseStatus"]["code"] == 200}
    gpu_nodes = sorted(n["name"] for n in SPEC["nodes"] if n["gpus"])
    assert sorted(n.rsplit("-", 1)[0] for n in created) == [f"gnc-host-{n}" for n in gpu_nodes], created
    assert deleted == created

    # the host scenarios really ran through those pods (pods/exec), and none is left behind
    user = lab.status["suite_user"]
    execs = {e["objectRef"]["name"] for e in lab.audit_events()
             if e.get("user", {}).get("username") == user and e.get("objectRef", {}).get("subresource") == "exec"}
    assert created <= execs, (created, execs)
    assert lab.core.list_namespaced_pod(suite_ns, label_selector=MANAGED_BY_LABEL).items == []
