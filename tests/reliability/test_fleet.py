"""Faults and bad input on one provisioned fleet (cp-1, gpu-a, gpu-b with its DCGM exporter down, spark-1
with Docker): every test breaks one thing, runs the suite, checks that exactly that is reported and that
the rest of the fleet is still checked, then puts the lab back. Messages are listed in docs/reliability.md."""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client

from lab.spec import Fault
from provision.context import RunContext
from provision.converge.cluster import DISCOVERY_CM, DISCOVERY_LABELS, Discovery, update_configmap_keys
from provision.hosts.guard import WRITE_GUARD
from provision.kube import Kube, connect
from provision.record import RECORD_CONFIGMAP
from provision.settings import validate
from tests.conftest import Lab
from tests.reliability.support import REPO, SUITE_NS, Run, audit_events, run_suite, writes

pytestmark = [pytest.mark.lab, pytest.mark.slow]
OPERATOR_NS = "gpu-operator"
FLEET = {"nodes": [
    {"name": "cp-1", "control_plane": True, "gpus": 0},
    {"name": "gpu-a", "gpus": 1},
    {"name": "gpu-b", "gpus": 2, "faults": [Fault.DCGM_DOWN]},
    {"name": "spark-1", "gpus": 1, "product": "NVIDIA GB10", "driver": "580.95.05", "compute_cap": "12.1",
     "memory_mib": None, "arch": "arm64", "docker": True,
     "files": {"/etc/docker/daemon.json": str(REPO / "lab" / "specs" / "spark-daemon.json")}},
]}
DCGM = "The DCGM exporter reports every GPU of the node"
NOT_APPLICABLE = "not applicable"  # the suite's skip reason for a check that does not apply (no Docker, not asked for)


@dataclass
class Fleet:
    lab: Lab
    provisioned: Run
    folder: Path

    def run(self, *args: str, name: str) -> Run:
        return run_suite(self.lab, *args, report_dir=self.folder / name)

    def host_file(self, node: str, path: str) -> Path:
        return self.lab.host_root(node) / path.lstrip("/")


@pytest.fixture(scope="module")
def fleet(module_lab, tmp_path_factory) -> Fleet:
    lab = module_lab(FLEET, "fleet").lab
    folder = tmp_path_factory.mktemp("fleet-runs")
    return Fleet(lab, run_suite(lab, "--provision", report_dir=folder / "provision"), folder)


def _unexpected(r: Run, allowed: dict[tuple[str | None, str], str] | None = None) -> list[str]:
    """Results that are neither passed, nor a not-applicable skip, nor in `allowed` ((node, scenario) -> outcome)."""
    allowed = {("gpu-b", DCGM): "failed", **(allowed or {})}
    out = []
    for x in r.results:
        if x["outcome"] == "passed" or (x["outcome"] == "skipped" and NOT_APPLICABLE in x["message"]):
            continue
        if allowed.get((x["node"], x["scenario"])) == x["outcome"]:
            continue
        out.append(f"{x['node']} / {x['scenario']}: {x['outcome']} {x['message'][:300]}")
    return out


def _node_results(r: Run, node: str | None) -> dict[str, tuple[str, str]]:
    return {x["scenario"]: (x["outcome"], x["message"]) for x in r.results if x["node"] == node}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------------------------- faults
def test_dcgm_endpoint_down_on_one_node_fails_that_check_only(fleet: Fleet) -> None:
    r = fleet.provisioned
    assert _unexpected(r) == [], r.describe()
    outcome, msg = _node_results(r, "gpu-b")[DCGM]
    assert outcome == "failed"
    assert msg.startswith("expected the DCGM exporter on gpu-b answering on :9400/metrics; found no answer (")
    # direct: the refused connection; through the apiserver's pod proxy (the lab's default now): its 503
    assert "connection refused" in msg.lower() or ("(503)" in msg and "Service Unavailable" in msg), msg
    assert "Fix: kubectl -n gpu-operator logs nvidia-dcgm-exporter-" in msg
    for node in ("gpu-a", "spark-1"):
        assert _node_results(r, node)[DCGM][0] == "passed"


def test_a_host_that_cannot_be_reached_breaks_that_node_only(fleet: Fleet) -> None:
    """gpu-a's host disappears (its host folder is moved away, as an ssh host that stops answering): gpu-a's
    host checks are broken with the transport's reason; the other nodes are checked and pass. (--no-workload:
    in the lab the host folder is also the twin's node, so a pod could not start there either.)"""
    root = fleet.lab.host_root("gpu-a")
    away = root.with_name("gpu-a.unreachable")
    root.rename(away)
    try:
        r = fleet.run("--no-workload", name="host-unreachable")
    finally:
        away.rename(root)
    workload_off = {(n, "CUDA vector addition passes on the node"): "skipped" for n in ("gpu-a", "gpu-b", "spark-1")}
    broken = {(x["node"], x["scenario"]): "broken" for x in r.results if x["node"] == "gpu-a" and x["outcome"] == "broken"}
    assert _unexpected(r, {**workload_off, **broken}) == [], r.describe()
    want = f"host 'gpu-a' is unreachable: the host folder {root} does not exist"
    a = _node_results(r, "gpu-a")
    for scenario in ("The NVIDIA driver works and is at least the minimum version",
                     "containerd's effective configuration has runc as default and nvidia"):
        assert a[scenario] == ("broken", want), a[scenario]
    assert len(broken) >= 6, broken
    for node in ("gpu-b", "spark-1"):
        assert all(o != "broken" for o, _ in _node_results(r, node).values())


@contextlib.contextmanager
def _quota_without_jobs(api: client.ApiClient) -> Iterator[None]:
    """An admission rule refusing every Job in the operator namespace (as a policy engine or quota might):
    the chart's pre-upgrade hook cannot run, so `helm upgrade` fails half way, after it recorded the new
    revision."""
    core = client.CoreV1Api(api)
    core.create_namespaced_resource_quota(OPERATOR_NS, {"metadata": {"name": "no-jobs"},
                                                        "spec": {"hard": {"count/jobs.batch": "0"}}})
    try:
        deadline = time.monotonic() + 120  # the quota controller has to count before admission enforces it
        while time.monotonic() < deadline and not (core.read_namespaced_resource_quota("no-jobs", OPERATOR_NS)
                                                   .status.hard or {}):
            time.sleep(0.2)
        yield
    finally:
        core.delete_namespaced_resource_quota("no-jobs", OPERATOR_NS)


def test_helm_upgrade_that_fails_restores_the_previous_release_and_says_so(fleet: Fleet) -> None:
    lab = fleet.lab
    before = json.loads(lab.helm("history", "gpu-operator", "-n", OPERATOR_NS, "-o", "json").stdout)
    with _quota_without_jobs(lab.api()):
        r = fleet.run("--provision", "--chart-version", "v26.7.0", "--no-workload", name="helm-upgrade-fails")
    assert r.rc != 0
    err = next(c for c in r.summary["convergers"] if c["name"] == "operator-release")["error"]
    for part in ("helm upgrade --install failed:", "UPGRADE FAILED: pre-upgrade hooks failed",
                 'jobs.batch "gpu-operator-upgrade-crd" is forbidden: exceeded quota: no-jobs',
                 f"restored revision {before[-1]['revision']} (gpu-operator-v26.3.0)"):
        assert part in err, (part, err)
    history = json.loads(lab.helm("history", "gpu-operator", "-n", OPERATOR_NS, "-o", "json").stdout)
    assert [(h["status"], h["chart"]) for h in history[len(before):]] == [
        ("failed", "gpu-operator-v26.7.0"), ("deployed", "gpu-operator-v26.3.0")], history
    assert history[-1]["description"] == f"Rollback to {before[-1]['revision']}"
    release = _node_results(r, None)["The gpu-operator release is deployed at the expected chart version"]
    assert release[0] == "broken" and "restored revision" in release[1]
    # The nodes' own checks still ran: host, driver and GPUs are reported, not hidden by the cluster failure.
    for node in ("gpu-a", "gpu-b", "spark-1"):
        n = _node_results(r, node)
        assert n["The NVIDIA driver works and is at least the minimum version"][0] == "passed", n
    # And the fleet is as before: an audit at the restored version passes.
    audit = fleet.run("--no-workload", name="after-failed-upgrade")
    workload_off = {(n, "CUDA vector addition passes on the node"): "skipped" for n in ("gpu-a", "gpu-b", "spark-1")}
    assert _unexpected(audit, workload_off) == [], audit.describe()


@contextlib.contextmanager
def _release_left_pending(core: client.CoreV1Api) -> Iterator[int]:
    """The release's latest revision marked pending-upgrade in helm's own storage (its Secret: label and the
    gzipped release record), as a helm killed outright during an upgrade leaves it; put back afterwards."""
    secrets = core.list_namespaced_secret(OPERATOR_NS, label_selector="owner=helm,name=gpu-operator").items
    latest = max(secrets, key=lambda x: int(x.metadata.labels["version"]))
    original = core.api_client.sanitize_for_serialization(latest)
    record = json.loads(gzip.decompress(base64.b64decode(base64.b64decode(latest.data["release"]))))
    record["info"]["status"] = "pending-upgrade"
    body = json.loads(json.dumps(original))
    body["data"]["release"] = base64.b64encode(base64.b64encode(gzip.compress(json.dumps(record).encode()))).decode()
    body["metadata"]["labels"]["status"] = "pending-upgrade"
    core.replace_namespaced_secret(latest.metadata.name, OPERATOR_NS, body)
    try:
        yield int(latest.metadata.labels["version"])
    finally:
        original["metadata"]["resourceVersion"] = core.read_namespaced_secret(
            latest.metadata.name, OPERATOR_NS).metadata.resource_version
        core.replace_namespaced_secret(latest.metadata.name, OPERATOR_NS, original)


def test_a_release_left_pending_by_a_killed_helm_is_reported_and_not_touched(fleet: Fleet) -> None:
    lab = fleet.lab
    with _release_left_pending(lab.core) as revision:
        r = fleet.run("--provision", "--no-workload", name="release-pending")
        history = json.loads(lab.helm("history", "gpu-operator", "-n", OPERATOR_NS, "-o", "json").stdout)
    assert r.rc != 0
    err = next(c for c in r.summary["convergers"] if c["name"] == "operator-release")["error"]
    assert err == (f"helm release gpu-operator/gpu-operator is pending-upgrade at revision {revision} "
                   "(gpu-operator-v26.3.0): another helm operation is running or was killed before it finished; "
                   "nothing was changed. If no helm operation is running, run helm rollback gpu-operator -n "
                   "gpu-operator, then --provision again")
    assert history[-1]["revision"] == revision, "helm was run against a pending release"
    assert writes(audit_events(lab, lab.status["suite_user"], r.started, r.finished)) == []


class _ConcurrentWriter:
    """A CoreV1Api whose ConfigMap reads let 'someone else' change the ConfigMap right after the suite read
    it, once per ConfigMap, so that the suite's write carries a stale resourceVersion (a real 409)."""

    def __init__(self, real: client.CoreV1Api, other: client.CoreV1Api, names: set[str]) -> None:
        self._real, self._other, self._pending = real, other, set(names)
        self.interfered: list[str] = []

    def __getattr__(self, name: str):
        return getattr(self._real, name)

    def read_namespaced_config_map(self, name: str, namespace: str, **kw):
        result = self._real.read_namespaced_config_map(name, namespace, **kw)
        if name in self._pending and kw.get("_preload_content") is False:
            self._pending.discard(name)
            cm = self._other.read_namespaced_config_map(name, namespace)
            key = "other-party-entries" if name == RECORD_CONFIGMAP else "other-party.yaml"
            cm.data = {**(cm.data or {}), key: "owned by someone else"}
            self._other.replace_namespaced_config_map(name, namespace, cm)
            self.interfered.append(name)
        return result


def test_a_configmap_changed_by_someone_else_meanwhile_is_retried_and_their_keys_kept(fleet: Fleet) -> None:
    """The discovery ConfigMap is changed by another party between the suite's read and its write, and so is
    the suite's change record: each write gets 409 Conflict, is retried on the fresh object, and both
    parties' keys are there afterwards."""
    lab = fleet.lab
    helper = lab.core
    cm = helper.read_namespaced_config_map(DISCOVERY_CM, OPERATOR_NS)
    cm.data["service.yaml"] = "service: {name: drifted}\n"  # so that the suite has something to write
    helper.replace_namespaced_config_map(DISCOVERY_CM, OPERATOR_NS, cm)
    settings = validate({"mode": "provision", "kubeconfig": lab.status["kubeconfig"], "host_backend": "none"})
    kube = Kube(connect(settings), settings)
    writer = _ConcurrentWriter(kube.core, helper, {DISCOVERY_CM, RECORD_CONFIGMAP})
    kube.core = writer  # type: ignore[assignment]
    ctx = RunContext(settings, kube, fleet.folder, ())
    t0 = time.time()
    with WRITE_GUARD.allow("--provision"):
        assert update_configmap_keys(ctx, OPERATOR_NS, DISCOVERY_CM, Discovery().desired(ctx), DISCOVERY_LABELS)
    assert sorted(writer.interfered) == sorted({DISCOVERY_CM, RECORD_CONFIGMAP})
    after = helper.read_namespaced_config_map(DISCOVERY_CM, OPERATOR_NS).data
    assert after["other-party.yaml"] == "owned by someone else"
    assert after["service.yaml"] == Discovery().desired(ctx)["service.yaml"]
    record = helper.read_namespaced_config_map(RECORD_CONFIGMAP, SUITE_NS).data
    assert record["other-party-entries"] == "owned by someone else"
    entries = json.loads(record["entries"])  # the suite's own entries are all still there, and this change too
    assert ("configmap-keys", f"{OPERATOR_NS}/{DISCOVERY_CM}") in {(e["kind"], e["target"]) for e in entries}
    assert ("helm-release", f"{OPERATOR_NS}/gpu-operator") in {(e["kind"], e["target"]) for e in entries}
    conflicts = [e for e in audit_events(lab, lab.status["suite_user"], t0, time.time())
                 if e["verb"] == "update" and (e.get("responseStatus") or {}).get("code") == 409]
    assert {e["objectRef"]["name"] for e in conflicts} == {DISCOVERY_CM, RECORD_CONFIGMAP}, conflicts
    # The suite's own audit agrees, and it would not touch the other party's key either.
    audit = fleet.run("--no-workload", name="after-concurrent-change")
    workload_off = {(n, "CUDA vector addition passes on the node"): "skipped" for n in ("gpu-a", "gpu-b", "spark-1")}
    assert _unexpected(audit, workload_off) == [], audit.describe()


# ----------------------------------------------------------------------------------------------- bad input
def test_a_daemon_json_that_is_not_json_is_reported_and_never_overwritten(fleet: Fleet) -> None:
    path = fleet.host_file("spark-1", "/etc/docker/daemon.json")
    original = path.read_bytes()
    broken = b'{"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}},\n "log-driver": "json-file" "oops"\n'
    path.write_bytes(broken)
    files_before = sorted(p.name for p in path.parent.iterdir())
    try:
        r = fleet.run("--provision", "--no-workload", name="daemon-json")
        assert path.read_bytes() == broken, "the suite rewrote a daemon.json it cannot parse"
        assert sorted(p.name for p in path.parent.iterdir()) == files_before, "the suite made a backup/temp file"
    finally:
        path.write_bytes(original)
    want = ("/etc/docker/daemon.json: invalid JSON at line 2 column 28: Expecting ',' delimiter; fix the JSON by hand "
            "(the suite never overwrites a file it cannot parse), then run again")
    spark = _node_results(r, "spark-1")
    outcome, message = spark["Docker knows the nvidia runtime"]
    assert outcome == "failed" and message.startswith("Observed: " + want), message  # the observation leads
    # spark-1 is left alone by the later convergers (containerd restart, time-slicing), whose scenarios say why.
    same = {("spark-1", s): o for s, (o, m) in spark.items() if want in m}
    workload_off = {(n, "CUDA vector addition passes on the node"): "skipped" for n in ("gpu-a", "gpu-b", "spark-1")}
    assert _unexpected(r, {**workload_off, **same}) == [], r.describe()


def test_a_containerd_toml_that_does_not_parse_is_reported_for_that_node(fleet: Fleet) -> None:
    # a drop-in of the admin's (the suite no longer writes 00-k8s-runc.toml: docs/containerd.md)
    dropin = "/var/lib/k8s-containerd/k8s-containerd/etc/containerd/conf.d/50-site.toml"
    path = fleet.host_file("gpu-b", dropin)
    path.write_bytes(b"version = 2\n[plugins.'io.containerd.grpc.v1.cri'.containerd.runtimes.runc\nbroken =\n")
    garbage = path.read_bytes()
    try:
        r = fleet.run("--provision", "--no-workload", name="containerd-toml")
        assert path.read_bytes() == garbage, "the suite rewrote a containerd file it cannot parse"
    finally:
        path.unlink()
    b = _node_results(r, "gpu-b")
    outcome, msg = b["containerd's effective configuration has runc as default and nvidia"]
    assert outcome == "broken" and msg.startswith(f"{dropin}: invalid TOML: "), msg
    assert "(at line " in msg, msg
    allowed = {("gpu-b", s): o for s, (o, m) in b.items() if o == "broken" and m == msg}
    workload_off = {(n, "CUDA vector addition passes on the node"): "skipped" for n in ("gpu-a", "gpu-b", "spark-1")}
    assert _unexpected(r, {**workload_off, **allowed}) == [], r.describe()
    for node in ("gpu-a", "spark-1"):
        assert _node_results(r, node)["containerd's effective configuration has runc as default and nvidia"][0] == "passed"


def test_an_unknown_chart_version_fails_before_any_change(fleet: Fleet) -> None:
    lab = fleet.lab
    r = fleet.run("--provision", "--chart-version", "v99.0.0", "--no-workload", name="unknown-chart")
    assert r.rc != 0 and r.summary["changes"] == 0
    err = next(c for c in r.summary["convergers"] if c["name"] == "operator-release")["error"]
    assert err == (f"unknown GPU Operator chart version v99.0.0 in {lab.status['chart_repo']}; available: v26.7.0, "
                   "v26.3.0; fix --chart-version")
    assert writes(audit_events(lab, lab.status["suite_user"], r.started, r.finished)) == []


def test_a_gpu_node_that_does_not_exist_fails_every_scenario_and_changes_nothing(fleet: Fleet) -> None:
    lab = fleet.lab
    r = fleet.run("--provision", "--gpu-nodes", "gpu-a,gpu-z", name="no-such-node")
    want = ("named GPU node(s) ['gpu-z'] do not exist in the cluster (nodes: cp-1, gpu-a, gpu-b, spark-1); "
            "fix --gpu-nodes")
    assert r.rc != 0 and r.results and r.summary["changes"] == 0
    assert {(x["outcome"], x["message"]) for x in r.results} == {("failed", want)}
    assert writes(audit_events(lab, lab.status["suite_user"], r.started, r.finished)) == []


def test_a_selector_that_matches_nothing_fails_and_never_passes(fleet: Fleet, tmp_path: Path) -> None:
    """The node selectors are settings a team pins in pyproject.toml; here both match no node."""
    (tmp_path / "pyproject.toml").write_text(
        '[tool.gpu-conformance]\nnode_selector = "example.com/accelerator=none"\n'
        'fallback_selector = "example.com/accelerator-legacy=none"\n')
    r = run_suite(fleet.lab, report_dir=tmp_path / "reports", cwd=tmp_path)
    want = ("no GPU nodes found: no node has example.com/accelerator=none nor example.com/accelerator-legacy=none "
            "(4 node(s) in the cluster); install the GPU Operator with --provision, label the nodes, or name them "
            "with --gpu-nodes")
    assert r.rc != 0 and r.summary["gpu_nodes"] == []
    assert _node_results(r, None)["GPU nodes are found in the cluster"] == ("failed", want)
    per_node = [x for x in r.results if x["node"] is not None]
    assert per_node and {(x["outcome"], x["message"]) for x in per_node} == {("failed", want)}


def test_fleet_is_left_as_provisioned(fleet: Fleet) -> None:
    """After all of the above, the fleet still passes an audit (each test put back what it broke)."""
    r = fleet.run(name="final-audit")
    assert _unexpected(r) == [], r.describe()

