"""Issue 16 (renamed sharing, MPS, CDI mode) against one lab: per-product sharing profiles from the desired state
(renameByDefault -> nvidia.com/gpu.shared, MPS), a node that starts with a foreign per-node config label (the
playbooks' dgx-spark profile), a node on containerd 2.1 (CDI on in containerd), and the default node. The real
operator renders CDI mode (chart default cdi.enabled=true, the suite keeps it on containerd >= 1.7), so every node
is judged in mode "cdi": the device plugin's CDI spec must list each GPU UUID of nvidia-smi. --provision then an
audit pass on every healthy node; each fault fails exactly its node, with a message naming the mode."""

from __future__ import annotations

import pytest
from kubernetes import client

from lab.spec import Fault
from tests.suite.runner import run_suite

pytestmark = [pytest.mark.lab, pytest.mark.slow]

H100 = "NVIDIA H100 80GB HBM3"
L40S = "NVIDIA L40S"
HEALTHY = ("s-default", "s-renamed", "s-mps", "s-cdi21")
FAULTY = {"s-cdi-bad": "The node has what its runtime mode needs",
          "s-renamed-bad": "The node advertises physical GPUs times replicas"}
PROFILES = ("--sharing-profile", f"{H100}=2,rename", "--sharing-profile", f"{L40S}=3,mps")


@pytest.fixture(scope="module")
def modes_lab(module_lab_factory):
    nodes = [{"name": "cp-1", "control_plane": True},
             {"name": "s-default", "gpus": 1},
             {"name": "s-renamed", "gpus": 2, "product": H100, "sharing": {"config": "dgx-spark"}},
             {"name": "s-mps", "gpus": 1, "product": L40S, "compute_cap": "8.9", "memory_mib": 46068},
             {"name": "s-cdi21", "gpus": 2, "k8s_snap_track": "1.35"},
             {"name": "s-cdi-bad", "gpus": 2, "faults": [Fault.CDI_SPEC_MISSING_GPU]},
             {"name": "s-renamed-bad", "gpus": 2, "product": H100, "faults": [Fault.RENAMED_COUNT_WRONG]}]
    return module_lab_factory({"nodes": nodes}, "modes")


@pytest.fixture(scope="module")
def provisioned(modes_lab, tmp_path_factory):
    return run_suite(modes_lab, tmp_path_factory.mktemp("prov"), "--provision", "--no-workload", *PROFILES,
                     "--timeouts", "advertise=25")


def _bad(run, node):
    return [(r["scenario"], r["message"]) for r in run.results(node) if r["outcome"] in ("failed", "broken")]


def test_provision_then_audit_judges_each_node_in_its_mode(modes_lab, provisioned, tmp_path):
    for node in HEALTHY:
        assert _bad(provisioned, node) == [], (node, _bad(provisioned, node), provisioned.output[-2000:])
    audit = run_suite(modes_lab, tmp_path, "--no-workload", *PROFILES)
    for node in HEALTHY:
        assert _bad(audit, node) == [], (node, _bad(audit, node))
        needs = [r for r in audit.results(node) if r["scenario"] == FAULTY["s-cdi-bad"]]
        assert [r["outcome"] for r in needs] == ["passed"], needs
    nodes = audit.summary["nodes"]
    assert {nodes[n]["runtime_mode"] for n in HEALTHY} == {"cdi"}
    assert nodes["s-renamed"]["sharing"] | {"source": None} == {
        "config": "nvidia-h100-80gb-hbm3", "source": None, "strategy": "time-slicing", "replicas": 2,
        "resource": "nvidia.com/gpu.shared", "renamed": True}
    assert nodes["s-mps"]["sharing"]["strategy"] == "mps" and nodes["s-mps"]["sharing"]["replicas"] == 3
    assert nodes["s-default"]["sharing"]["resource"] == "nvidia.com/gpu"
    node = modes_lab.core.read_node("s-renamed")
    assert node.status.allocatable["nvidia.com/gpu.shared"] == "4" and node.status.allocatable["nvidia.com/gpu"] == "0"
    assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"      # renamed: no -SHARED
    mps = modes_lab.core.read_node("s-mps").metadata.labels
    assert mps["nvidia.com/gpu.sharing-strategy"] == "mps" and mps["nvidia.com/gpu.product"] == "NVIDIA-L40S-SHARED"
    # each fault fails exactly its node's scenario, naming the mode
    for run in (provisioned, audit):
        bad = _bad(run, "s-cdi-bad")
        assert [s for s, _ in bad] == [FAULTY["s-cdi-bad"]], bad
        assert "runtime mode cdi" in bad[0][1] and "is in no CDI spec" in bad[0][1], bad[0][1]
    # the renamed count: the allocatable check fails on what it observed; the node's other sharing scenario fails
    # only as drift (the plan would restart its device plugin), no other feature of the node fails
    bad = dict(_bad(audit, "s-renamed-bad"))
    alloc = bad.pop(FAULTY["s-renamed-bad"])
    assert "nvidia.com/gpu.shared = 2 physical x 2 replicas = 4" in alloc and "found 3" in alloc, alloc
    assert "sharing mode renamed time-slicing" in alloc, alloc
    assert all(m.startswith("Observed (as desired)") for m in bad.values()), bad
    assert set(bad) <= {"GPU feature discovery labels describe the shared GPUs"}, bad
    assert [r["outcome"] for r in audit.results("s-renamed-bad") if r["scenario"] == FAULTY["s-cdi-bad"]] == ["passed"]


def test_plan_shows_the_profiles_and_rollback_restores_the_node_label(modes_lab, provisioned, tmp_path):
    # someone points s-mps at the playbooks' dgx-spark key: --plan names the relabel to its product's profile key
    modes_lab.core.patch_node("s-mps", {"metadata": {"labels": {"nvidia.com/device-plugin.config": "dgx-spark"}}})
    plan = run_suite(modes_lab, tmp_path / "plan", "--plan", *PROFILES)
    text = (plan.run_dir / "plan.txt").read_text()
    assert "[s-mps] label node s-mps label nvidia.com/device-plugin.config: dgx-spark -> nvidia-l40s" in text, text
    back = run_suite(modes_lab, tmp_path / "back", "--rollback")
    assert back.rc in (0, 11), back.output[-3000:]
    labels = modes_lab.core.read_node("s-renamed").metadata.labels
    assert labels.get("nvidia.com/device-plugin.config") == "dgx-spark", labels     # as the lab started it
    assert "nvidia.com/device-plugin.config" not in modes_lab.core.read_node("s-mps").metadata.labels


# ------------------------------------------------------------------------------------------------- NRI mode
# ClusterPolicy is cluster-wide: the NRI plugin (cdi.nriPluginEnabled, the desired state's --cdi-nri-plugin) is
# a second, small lab. containerd 2.1 (track 1.35) has CDI and NRI on by default; 1.7.35 (track 1.34) is new enough
# (>= 1.7.30) but dumps enable_cdi = false and NRI disable = true.
NEEDS = "The node has what its runtime mode needs"
SKIPPED_IN_NRI = {"The runc and nvidia drop-ins are where containerd imports them",
                  "containerd's effective configuration has runc as default and nvidia",
                  "The nvidia RuntimeClass exists"}


@pytest.fixture(scope="module")
def nri_lab(module_lab_factory):
    return module_lab_factory({"nodes": [{"name": "cp-1", "control_plane": True},
                                         {"name": "n-nri", "gpus": 2, "k8s_snap_track": "1.35"},
                                         {"name": "n-nri-17", "gpus": 1}]}, "nri")


def test_nri_mode_judges_what_nri_needs_and_skips_the_runtimeclass_checks(nri_lab, tmp_path):
    prov = run_suite(nri_lab, tmp_path / "prov", "--provision", "--no-workload", "--cdi-nri-plugin",
                     "--timeouts", "advertise=25")
    assert _bad(prov, "n-nri") == [], (_bad(prov, "n-nri"), prov.output[-2000:])
    api = nri_lab.api()
    cp = client.CustomObjectsApi(api).get_cluster_custom_object("nvidia.com", "v1", "clusterpolicies", "cluster-policy")
    assert cp["spec"]["cdi"]["nriPluginEnabled"] is True
    assert [rc.metadata.name for rc in client.NodeV1Api(api).list_runtime_class().items] == []   # no RuntimeClass
    audit = run_suite(nri_lab, tmp_path / "audit", "--no-workload", "--cdi-nri-plugin")
    assert _bad(audit, "n-nri") == [], _bad(audit, "n-nri")
    assert audit.summary["nodes"]["n-nri"]["runtime_mode"] == "nri"
    skipped = {r["scenario"] for r in audit.results("n-nri") + audit.results(None) if r["outcome"] == "skipped"
               and "runtime mode nri" in r["message"]}
    assert skipped >= SKIPPED_IN_NRI, skipped
    needs = [r for r in audit.results("n-nri") if r["scenario"] == NEEDS]
    assert [r["outcome"] for r in needs] == ["passed"], needs
    bad = dict(_bad(audit, "n-nri-17"))
    assert set(bad) == {NEEDS}, bad
    assert "runtime mode nri" in bad[NEEDS] and "containerd's CDI is off" in bad[NEEDS] and "NRI is off" in bad[NEEDS]
    host = nri_lab.paths.host_root("n-nri")
    assert not list((host / "var/lib/k8s-containerd/k8s-containerd/etc/containerd/conf.d").glob("99-nvidia.toml"))
