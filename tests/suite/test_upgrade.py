"""Upgrading the GPU Operator with the suite, against the real operators of both chart versions: v26.3.0 is
provisioned, `--provision --chart-version v26.7.0` upgrades through helm (the chart's pre-upgrade hook runs
the real manage-crds of v26.7.0, the v26.3.0 operator binary is replaced by v26.7.0's, the operands roll),
and the audit right after passes. A downgrade is refused with the reason. A pre-Volta GPU node is left alone
by the operator once the suite has set its gpu.deploy.*=false labels, and is reported unsupported."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from lab import cluster
from tests.suite.runner import run_suite

pytestmark = [pytest.mark.lab, pytest.mark.slow]

NS = "gpu-operator"
SPEC = {"nodes": [
    {"name": "cp-1", "control_plane": True, "gpus": 0},
    {"name": "gpu-a", "gpus": 1},
    {"name": "old-1", "gpus": 1, "product": "Tesla P100-PCIE-16GB", "compute_cap": "6.0", "driver": "535.183.01",
     "memory_mib": 16384},
]}


@pytest.fixture(scope="module")
def upgrade_lab(module_lab_factory):
    return module_lab_factory(SPEC, "upgrade")


def _toolkit_images(lab) -> set[str]:
    ds = client.AppsV1Api(lab.api()).read_namespaced_daemon_set("nvidia-container-toolkit-daemonset", NS)
    return {c.image for c in ds.spec.template.spec.containers}


def test_upgrade_with_the_real_operators_then_audit_then_refused_downgrade(upgrade_lab, tmp_path):
    lab = upgrade_lab
    first = run_suite(lab, tmp_path / "r1", "--provision")
    assert first.rc == 0, first.output[-4000:]
    assert cluster.status(lab.paths)["operator"]["version"] == "v26.3.0"
    assert any(i.endswith(":v1.19.0") for i in _toolkit_images(lab)), _toolkit_images(lab)

    # The pre-Volta node: labelled off by the suite, left alone by the operator, reported unsupported.
    old = lab.core.read_node("old-1").metadata.labels
    deploy = {k: v for k, v in old.items() if k.startswith("nvidia.com/gpu.deploy.")}
    assert deploy and set(deploy.values()) == {"false"}, deploy
    on_old = [p.metadata.name for p in lab.core.list_namespaced_pod(NS).items if p.spec.node_name == "old-1"
              and (p.metadata.labels or {}).get("app", "").startswith(("nvidia-", "gpu-feature"))]
    assert on_old == [], f"operands on the pre-Volta node: {on_old}"
    old_results = first.results("old-1")
    assert old_results and all(r["outcome"] == "skipped" for r in old_results), old_results
    assert all("unsupported" in (r.get("message") or "") for r in old_results), old_results

    up = run_suite(lab, tmp_path / "r2", "--provision", "--chart-version", "v26.7.0")
    assert up.rc == 0, up.output[-4000:]
    assert cluster.status(lab.paths)["operator"]["version"] == "v26.7.0", "the v26.7.0 binary replaced v26.3.0"
    assert any(i.endswith(":v1.20.0") for i in _toolkit_images(lab)), "operands rolled to the new toolkit"
    ext = client.ApiextensionsV1Api(lab.api())
    crd = json.loads(ext.read_custom_resource_definition("clusterpolicies.nvidia.com", _preload_content=False).data)
    host_paths = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "hostPaths"]
    assert "kubeletRootDir" in host_paths["properties"], "CRD upgraded by the chart's hook (manage-crds v26.7.0)"
    assert ext.read_custom_resource_definition("gpuclusters.nvidia.com"), "v26.7.0's new CRD applied by the hook"
    hook = [e for e in lab.audit_events() if (e.get("objectRef") or {}).get("resource") == "customresourcedefinitions"
            and e.get("verb") in ("patch", "update", "create") and "upgrade-crd-hook-sa" in e["user"]["username"]]
    assert hook, "the CRDs were written by the hook's own ServiceAccount"

    audit = run_suite(lab, tmp_path / "r3", "--chart-version", "v26.7.0")
    assert audit.rc == 0, audit.output[-4000:]

    down = run_suite(lab, tmp_path / "r4", "--provision", "--chart-version", "v26.3.0")
    assert down.rc != 0
    assert "v26.3.0 is older" in down.output and "no downgrade path" in down.output, down.output[-3000:]
    assert cluster.status(lab.paths)["operator"]["version"] == "v26.7.0", "nothing was changed"
