"""Least privilege, proven in a lab: the identities of deploy/rbac/ (ServiceAccount tokens from the
TokenRequest API) run the suite; the apiserver's audit log shows what each run asked for.

One lab for the module (4 nodes, one with Docker): --plan and --provision with the provision identity on the
fresh lab, then audits with each identity. A last test scans every report, log and attachment of these runs
for the lab's credentials."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from provision.reporting.secrets_scan import needles_from_kubeconfig, needles_from_pem, scan
from tests.conftest import Lab
from tests.reliability.support import (
    FOUR_NODES,
    SUITE_NS,
    Run,
    apply,
    audit_events,
    rbac_documents,
    refused,
    run_suite,
    sa_kubeconfig,
    writes,
)

pytestmark = [pytest.mark.lab, pytest.mark.slow]
log = logging.getLogger(__name__)

AUDIT, READONLY, PROVISION = "gpu-conformance-audit", "gpu-conformance-audit-readonly", "gpu-conformance-provision"
GPU_NODES = ("gpu-a", "gpu-b", "spark-1")
NOT_APPLICABLE = "not applicable"  # the suite's skip reason for a check that does not apply (no Docker, not asked for)


@dataclass
class Identity:
    kubeconfig: Path
    user: str


@dataclass
class RbacLab:
    lab: Lab
    ids: dict[str, Identity]
    folder: Path
    runs: list[Run] = field(default_factory=list)

    def run(self, who: str | None, *args: str, name: str, log_file: bool = False) -> Run:
        extra = ["--kubeconfig", str(self.ids[who].kubeconfig)] if who else []
        if log_file:  # every host command and its output (testinfra logs them at DEBUG), kube client debug too
            extra += ["--log-file", str(self.folder / name / "debug.log"), "--log-file-level", "DEBUG"]
        r = run_suite(self.lab, *args, *extra, report_dir=self.folder / name)
        self.runs.append(r)
        return r

    def events(self, who: str, r: Run) -> list[dict]:
        return audit_events(self.lab, self.ids[who].user, r.started, r.finished)


@pytest.fixture(scope="module")
def rbac(module_lab, tmp_path_factory) -> RbacLab:
    lab = module_lab(FOUR_NODES, "rbac").lab
    apply(lab.api(), rbac_documents())  # as the cluster's administrator would: kubectl apply -f deploy/rbac/
    folder = tmp_path_factory.mktemp("rbac-runs")
    ids = {}
    for name in (AUDIT, READONLY, PROVISION):
        path, user = sa_kubeconfig(lab, name, folder / f"{name}.kubeconfig")
        ids[name] = Identity(path, user)
    return RbacLab(lab, ids, folder)


def _host_files(lab: Lab) -> dict[str, str]:
    """Every host file of the lab's nodes (the twin's own bookkeeping under .twin/ left out) -> sha256."""
    out = {}
    for node in lab.status["nodes"]:
        root = Path(node["host_root"])
        for f in sorted(root.rglob("*")):
            rel = f.relative_to(root)
            if f.is_file() and not f.is_symlink() and rel.parts[0] != ".twin" and not f.is_socket():
                out[f"{node['name']}:/{rel}"] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def planned(rbac: RbacLab) -> tuple[Run, dict[str, str], dict[str, str]]:
    before = _host_files(rbac.lab)
    r = rbac.run(PROVISION, "--plan", name="plan")
    return r, before, _host_files(rbac.lab)


@pytest.fixture(scope="module")
def provisioned(rbac: RbacLab, planned) -> Run:
    return rbac.run(PROVISION, "--provision", name="provision", log_file=True)


def _only_passed_or_not_applicable(r: Run) -> None:
    bad = [x for x in r.results if x["outcome"] != "passed"
           and not (x["outcome"] == "skipped" and NOT_APPLICABLE in x["message"])]
    assert r.rc == 0 and r.results and not bad, r.describe()


# ----------------------------------------------------------------------------------------------- --plan
def test_plan_makes_no_write_request_even_with_an_identity_that_may_write(rbac: RbacLab, planned) -> None:
    r, hosts_before, hosts_after = planned
    assert r.rc == 0, r.describe()
    assert r.summary["mode"] == "plan" and r.summary["changes"] == 0
    plan = next(r.report_dir.glob("*-plan-*/plan.txt")).read_text()
    assert "install helm release gpu-operator/gpu-operator" in plan, plan
    events = rbac.events(PROVISION, r)
    assert events, "the plan made no request at all: is the audit log read from the right lab?"
    assert writes(events) == [], "a --plan run made write requests"
    assert refused(events) == []
    assert hosts_after == hosts_before, "a --plan run changed files on the hosts"


# ----------------------------------------------------------------------------------------------- --provision
def test_provisioning_with_the_provision_role_passes_and_nothing_is_refused(rbac: RbacLab, provisioned: Run) -> None:
    _only_passed_or_not_applicable(provisioned)
    assert provisioned.summary["changes"] > 0
    events = rbac.events(PROVISION, provisioned)
    assert refused(events) == [], "deploy/rbac/30-provision.yaml lacks rights provisioning uses"
    verbs = {(e["verb"], (e.get("objectRef") or {}).get("resource")) for e in events}
    assert ("create", "clusterroles") in verbs and ("create", "secrets") in verbs  # helm did install as this identity


# ----------------------------------------------------------------------------------------------- audits
def test_audit_with_the_audit_token_passes_and_writes_only_its_test_pods(rbac: RbacLab, provisioned: Run) -> None:
    r = rbac.run(AUDIT, name="audit")
    _only_passed_or_not_applicable(r)
    events = rbac.events(AUDIT, r)
    assert refused(events) == []
    w = [e for e in events if e["verb"] in ("create", "update", "patch", "delete", "deletecollection")]
    assert w, "the audit ran no test pod"
    for e in w:
        ref = e["objectRef"]
        assert (e["verb"] in ("create", "delete") and ref["resource"] == "pods" and "subresource" not in ref
                and ref["namespace"] == SUITE_NS and ref["name"].startswith("vectoradd-")), writes([e])
    created = sorted(e["objectRef"]["name"] for e in w if e["verb"] == "create")
    deleted = sorted(e["objectRef"]["name"] for e in w if e["verb"] == "delete")
    assert created == deleted and len(created) == len(GPU_NODES), (created, deleted)


def test_readonly_token_audit_without_workload_makes_no_write_at_all(rbac: RbacLab, provisioned: Run) -> None:
    r = rbac.run(READONLY, "--no-workload", name="audit-readonly")
    bad = [x for x in r.results if x["outcome"] != "passed" and not (
        x["outcome"] == "skipped" and (NOT_APPLICABLE in x["message"] or "--no-workload" in x["message"]))]
    assert r.rc == 0 and not bad, r.describe()
    assert sum("--no-workload" in x["message"] for x in r.results) == len(GPU_NODES)
    events = rbac.events(READONLY, r)
    assert events and writes(events) == [] and refused(events) == []


def test_an_audit_writes_only_its_test_pods_even_when_its_identity_may_write(rbac: RbacLab, provisioned: Run) -> None:
    """The write guard, not RBAC: the provision identity may change almost anything, the audit still does not."""
    r = rbac.run(PROVISION, name="audit-as-provision")
    _only_passed_or_not_applicable(r)
    w = [e for e in rbac.events(PROVISION, r) if e["verb"] in ("create", "update", "patch", "delete")]
    assert w and all(e["objectRef"]["resource"] == "pods" and e["objectRef"]["namespace"] == SUITE_NS
                     and e["objectRef"]["name"].startswith("vectoradd-") for e in w), writes(w)


# ----------------------------------------------------------------------------------------------- refusals
def _status(fn, *args, **kw) -> int:
    try:
        fn(*args, **kw)
    except ApiException as exc:
        return exc.status
    return 200


DRY = {"dry_run": "All"}  # were a right granted by mistake, nothing would change
POD = {"metadata": {"name": "probe"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


def _clients(rbac: RbacLab, who: str) -> tuple[client.CoreV1Api, client.AppsV1Api, client.CustomObjectsApi]:
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(rbac.ids[who].kubeconfig))
    return client.CoreV1Api(api), client.AppsV1Api(api), client.CustomObjectsApi(api)


def _write_attempts(core: client.CoreV1Api, apps: client.AppsV1Api, custom: client.CustomObjectsApi,
                    operand_pod: str) -> dict[str, Callable[[], object]]:
    return {
        "create ConfigMap in gpu-operator": lambda: core.create_namespaced_config_map(
            "gpu-operator", {"metadata": {"name": "probe"}}, **DRY),
        "replace the time-slicing ConfigMap": lambda: core.replace_namespaced_config_map(
            "time-slicing-config", "gpu-operator", {"metadata": {"name": "time-slicing-config"}}, **DRY),
        "label a node": lambda: core.patch_node("gpu-a", {"metadata": {"labels": {"probe": "x"}}}, **DRY),
        "delete a DaemonSet": lambda: apps.delete_namespaced_daemon_set(
            "nvidia-device-plugin-daemonset", "gpu-operator", **DRY),
        "delete an operand pod": lambda: core.delete_namespaced_pod(operand_pod, "gpu-operator", **DRY),
        "patch ClusterPolicy": lambda: custom.patch_cluster_custom_object(
            "nvidia.com", "v1", "clusterpolicies", "cluster-policy", {"spec": {"devicePlugin": {}}}, **DRY),
        "create a pod elsewhere": lambda: core.create_namespaced_pod("default", POD, **DRY),
        "create a Secret in its namespace": lambda: core.create_namespaced_secret(
            SUITE_NS, {"metadata": {"name": "probe"}}, **DRY),
        "create a Namespace": lambda: core.create_namespace({"metadata": {"name": "probe"}}, **DRY),
        "read Secrets outside the operator namespace": lambda: core.list_namespaced_secret("default"),
        "exec into a pod": lambda: core.connect_post_namespaced_pod_exec(operand_pod, "gpu-operator", command=["true"]),
    }


def test_audit_tokens_are_refused_every_write(rbac: RbacLab, provisioned: Run) -> None:
    operand_pod = next(p.metadata.name for p in rbac.lab.core.list_namespaced_pod(
        "gpu-operator", label_selector="app=nvidia-device-plugin-daemonset").items)
    for who in (AUDIT, READONLY):
        core, apps, custom = _clients(rbac, who)
        attempts = _write_attempts(core, apps, custom, operand_pod)
        if who == READONLY:
            attempts["create its test pod"] = lambda core=core: core.create_namespaced_pod(SUITE_NS, POD, **DRY)
        got = {what: _status(fn) for what, fn in attempts.items()}
        assert got == dict.fromkeys(attempts, 403), f"{who}: {got}"
    core, _, _ = _clients(rbac, AUDIT)
    assert _status(core.create_namespaced_pod, SUITE_NS, POD, **DRY) == 200  # its one write, in its namespace
    # The DCGM proxy path is authorized and answers (lab/podnet.py: proxyable pod IPs; without root the lab's
    # loopback pod IPs are refused by the proxy itself: 400).
    dcgm = next(p.metadata.name for p in rbac.lab.core.list_namespaced_pod(
        "gpu-operator", label_selector="app=nvidia-dcgm-exporter").items)
    want = 200 if (rbac.lab.status.get("pod_network") or {}).get("proxyable") else 400
    for who in (AUDIT, READONLY):
        core, _, _ = _clients(rbac, who)
        assert _status(core.connect_get_namespaced_pod_proxy_with_path, f"{dcgm}:9400", "gpu-operator",
                       "metrics") == want, who


# ----------------------------------------------------------------------------------------------- secrets
def _needles(rbac: RbacLab) -> list[bytes]:
    lab = rbac.lab
    needles: list[bytes] = []
    for ident in rbac.ids.values():                     # ServiceAccount tokens (and their signatures)
        needles += needles_from_kubeconfig(ident.kubeconfig)
    for stem in ("suite", "admin", "helper", "twin"):    # the lab's client certificates and keys
        needles += needles_from_kubeconfig(lab.paths.kubeconfig(stem))
    for pem in sorted(lab.paths.pki.glob("*.key")):      # every private key of the lab (CA, apiserver, SA signer)
        needles += needles_from_pem(pem.read_bytes(), pem.name)
    assert len({bytes(n) for n in needles}) > 50
    return needles


def test_no_credential_in_any_report_log_or_attachment(rbac: RbacLab, provisioned: Run) -> None:
    """Reports (summary.json, JUnit, Allure results and attachments, plan, converger results), the run's
    console output and its DEBUG log of every host command never hold a token, key or certificate."""
    cert_run = rbac.run(None, "--no-workload", name="audit-with-certificates", log_file=True)
    assert cert_run.rc == 0, cert_run.describe()
    folders = sorted({r.report_dir for r in rbac.runs})
    assert len(folders) >= 3 and all((f / "pytest-output.txt").exists() for f in folders)
    assert any((f / "debug.log").stat().st_size > 10_000 for f in folders if (f / "debug.log").exists())
    assert any(f.name == "allure-results" for folder in folders for f in folder.rglob("*")), "no Allure results"
    needles = _needles(rbac)
    hits = [(str(path.relative_to(rbac.folder)), name) for folder in folders for path, name in scan(folder, needles)]
    assert hits == [], hits
    # The scan itself finds what it looks for (a copy of a token's kubeconfig is a hit).
    control = rbac.folder / "control"
    control.mkdir(exist_ok=True)
    (control / "leak.txt").write_bytes(b"x" + rbac.ids[AUDIT].kubeconfig.read_bytes())
    assert {n for _, n in scan(control, needles)} >= {f"{AUDIT}:token", f"{AUDIT}:token:signature"}


def test_host_commands_never_carry_or_echo_credentials(rbac: RbacLab, provisioned: Run) -> None:
    """Every host command of a provisioning run (testinfra's 'RUN CommandResult(command=..., stdout=...,
    stderr=...)' at DEBUG) is free of credentials; helm gets its kubeconfig as a file path, never inline."""
    debug = provisioned.report_dir / "debug.log"
    text = debug.read_text()
    commands = [ln for ln in text.splitlines() if "RUN CommandResult(" in ln]
    assert len(commands) > 50, "the DEBUG log holds no host commands"
    assert any("k8s.containerd" in c for c in commands), "the provisioning run restarted no containerd"
    needles = _needles(rbac)
    leaked = sorted({n.name for n in needles if any(bytes(n) in c.encode() for c in commands)})  # type: ignore[attr-defined]
    assert leaked == [], leaked
    for word in ("token:", "client-key-data", "BEGIN PRIVATE KEY", "Authorization: Bearer"):
        assert word not in text, word
