"""deploy/chart/: helm lint, helm template with the chart's values (and the values a user changes), the RBAC it
renders being deploy/rbac's own objects. Installed into a lab in tests/reporting/test_lab_run_reports.py."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab import versions
from provision.hosts.pod_backend import POD_RBAC_RULES

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "chart"
RBAC = REPO / "deploy" / "rbac"
NS = "gpu-conformance"
IMAGE = ["--set", "image.repository=registry.example/gpu-node-conformance"]


@pytest.fixture(scope="module")
def helm() -> Path:
    path = versions.bin_dir() / "helm"
    if not path.exists():
        pytest.skip(f"{path} is absent: `make lab-binaries` builds it")
    return path


def _helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), *args], capture_output=True, text=True, timeout=120, check=False)


def render(helm: Path, *args: str, namespace: str = NS) -> list[dict[str, Any]]:
    proc = _helm(helm, "template", "nightly", str(CHART), "-n", namespace, *args)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def refused(helm: Path, *args: str, namespace: str = NS) -> str:
    proc = _helm(helm, "template", "nightly", str(CHART), "-n", namespace, *args)
    assert proc.returncode != 0, proc.stdout[:2000]
    return proc.stderr


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def rbac_objects(*files: str) -> dict[str, dict[str, Any]]:
    return by_kind([d for f in files for d in yaml.safe_load_all((RBAC / f).read_text()) if d])


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    cron = by_kind(docs)["CronJob/nightly-nightly"]
    (c,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return c


def test_helm_lint(helm: Path) -> None:
    proc = _helm(helm, "lint", "--strict", str(CHART), *IMAGE)
    assert proc.returncode == 0 and "0 chart(s) failed" in proc.stdout, proc.stdout + proc.stderr


def test_default_values_render_a_read_only_nightly_audit(helm: Path) -> None:
    docs = render(helm, *IMAGE)
    objs = by_kind(docs)
    cron = objs["CronJob/nightly-nightly"]
    assert cron["spec"]["schedule"] == yaml.safe_load((CHART / "values.yaml").read_text())["schedule"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "gpu-conformance-audit-readonly" and pod["automountServiceAccountToken"]
    c = container(docs)
    assert c["command"] == ["python", "-m", "provision.reporting.nightly"]
    args = c["args"]
    assert args[:4] == ["--reports", "/reports", "--keep", "30"]
    suite = args[args.index("--") + 1:]
    assert "--no-workload" in suite and suite[suite.index("--host-backend") + 1] == "none"
    assert suite[suite.index("--fail-on") + 1] == "new" and "--pushgateway" not in suite
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["reports"] == "/reports"
    claim = next(v for v in pod["volumes"] if v["name"] == "reports")["persistentVolumeClaim"]["claimName"]
    assert f"PersistentVolumeClaim/{claim}" in objs
    # The RBAC is deploy/rbac's, object for object, and only the read-only audit's.
    want = rbac_objects("00-namespaces.yaml", "20-audit.yaml")
    rbac = {k: v for k, v in objs.items() if k.split("/")[0] in ("ServiceAccount", "ClusterRole", "Role",
                                                                  "ClusterRoleBinding", "RoleBinding")}
    assert set(rbac) == {"ServiceAccount/gpu-conformance-audit-readonly", "ClusterRole/gpu-conformance-audit",
                         "ClusterRoleBinding/gpu-conformance-audit", "Role/gpu-conformance-audit-release",
                         "RoleBinding/gpu-conformance-audit-release"}
    for key, obj in rbac.items():
        assert obj == want[key], key
    assert not [k for k in objs if k.startswith("Namespace/") or "provision" in k or "workload" in k]
    # DRA mode's reads (docs/dra.md) are among them: a nightly audit of a GPUCluster cluster needs them
    reads = {(g, r) for rule in rbac["ClusterRole/gpu-conformance-audit"]["rules"] if {"get", "list"} <= set(rule["verbs"])
             for g in rule["apiGroups"] for r in rule["resources"]}
    assert {("nvidia.com", "gpuclusters"), ("resource.k8s.io", "deviceclasses"), ("resource.k8s.io", "resourceslices"),
            ("resource.k8s.io", "resourceclaims")} <= reads, sorted(reads)


def test_pushgateway_and_extra_options(helm: Path) -> None:
    docs = render(helm, *IMAGE, "--set", "pushgateway.url=http://pgw.monitoring:9091", "--set", "failOn=any",
                  "--set-json", 'extraArgs=["--replicas","8"]', "--set", "keepRuns=7")
    args = container(docs)["args"]
    suite = args[args.index("--") + 1:]
    assert suite[suite.index("--pushgateway") + 1] == "http://pgw.monitoring:9091"
    assert suite[suite.index("--pushgateway-job") + 1] == "gpu-conformance"
    assert suite[suite.index("--fail-on") + 1] == "any" and suite[-2:] == ["--replicas", "8"]
    assert args[3] == "7"


def test_suite_options_of_the_cronjob_exist(helm: Path) -> None:
    from tests.reporting.test_nightly_templates import _suite_options

    args = container(render(helm, *IMAGE, "--set", "pushgateway.url=http://p:9091"))["args"]
    used = {a for a in args[args.index("--") + 1:] if a.startswith("--")}
    assert used <= _suite_options(), used - _suite_options()


def test_pod_host_backend_takes_the_hosts_identity(helm: Path) -> None:
    assert "hostBackend=pod needs identity=hosts" in refused(helm, *IMAGE, "--set", "hostBackend=pod")
    docs = render(helm, *IMAGE, "--set", "hostBackend=pod", "--set", "identity=hosts")
    objs = by_kind(docs)
    pod = objs["CronJob/nightly-nightly"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "gpu-conformance-audit-hosts"
    assert objs["Role/gpu-conformance-audit-hosts"]["rules"] == POD_RBAC_RULES  # one home: the pod backend's needs
    want = rbac_objects("20-audit.yaml", "25-audit-hosts.yaml")
    for key in ("ServiceAccount/gpu-conformance-audit-hosts", "RoleBinding/gpu-conformance-audit-hosts",
                "ClusterRoleBinding/gpu-conformance-audit-hosts", "RoleBinding/gpu-conformance-audit-hosts-release"):
        assert objs[key] == want[key], key
    assert "ServiceAccount/gpu-conformance-audit-readonly" not in objs


def test_bad_values_are_refused_with_the_fix(helm: Path) -> None:
    assert "image.repository is required" in refused(helm)
    assert "install into the namespace gpu-conformance" in refused(helm, *IMAGE, namespace="default")
    assert 'identity="admin"' in refused(helm, *IMAGE, "--set", "identity=admin")
    assert 'failOn="sometimes"' in refused(helm, *IMAGE, "--set", "failOn=sometimes")
    assert "keepRuns must be at least 1" in refused(helm, *IMAGE, "--set", "keepRuns=0")
    assert 'hostBackend="ssh"' in refused(helm, *IMAGE, "--set", "hostBackend=ssh")


def test_existing_claim_and_no_rbac(helm: Path) -> None:
    docs = render(helm, *IMAGE, "--set", "persistence.existingClaim=audit-runs", "--set", "rbac.create=false")
    kinds = {d["kind"] for d in docs}
    assert kinds == {"CronJob"}
    pod = docs[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert next(v for v in pod["volumes"] if v["name"] == "reports")["persistentVolumeClaim"]["claimName"] == "audit-runs"
