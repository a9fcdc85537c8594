"""MIG against a lab with the real GPU Operator (issue 16): one lab for the module, with a MIG-single H100
(profile all-1g.10gb), a MIG-mixed H100 (all-balanced), an H100 whose MIG manager fails (fault
mig-state-failed) and a default H200 node. `--provision` labels the MIG nodes from their desired state (the lab
spec's mig key, handed over by --lab as an inventory would), waits for the MIG manager, and the audit after it
passes on every healthy node, each judged in its mode; the fault fails exactly its node's MIG scenarios with a
message naming the mode; --rollback restores the labels."""

from __future__ import annotations

import pytest

from lab.spec import Fault
from tests.suite.runner import run_suite

pytestmark = [pytest.mark.lab, pytest.mark.slow]

H100 = {"gpus": 1, "product": "NVIDIA H100 80GB HBM3", "memory_mib": 81559, "compute_cap": "9.0"}
NODES = ("mig-single", "mig-mixed", "mig-failed", "plain")
MIG_FEATURE = "MIG partitions the GPUs of a node as its desired state asks"
FAILED_SCENARIOS = {"The MIG manager applied the node's MIG profile", "nvidia-smi lists the MIG devices of the profile"}


@pytest.fixture(scope="module")
def mig_lab(module_lab_factory):
    nodes = [
        {"name": "cp-1", "control_plane": True},
        {"name": "mig-single", **H100, "mig": {"strategy": "single", "profile": "all-1g.10gb"}},
        {"name": "mig-mixed", **H100, "mig": {"strategy": "mixed", "profile": "all-balanced"}},
        {"name": "mig-failed", **H100, "mig": {"strategy": "single", "profile": "all-1g.10gb"},
         "faults": [Fault.MIG_STATE_FAILED]},
        {"name": "plain", "gpus": 1},
    ]
    return module_lab_factory({"nodes": nodes}, "mig")


@pytest.fixture(scope="module")
def provisioned(mig_lab, tmp_path_factory):
    return run_suite(mig_lab, tmp_path_factory.mktemp("mig-provision"), "--provision", "--no-workload",
                     "--gpu-nodes", ",".join(NODES), timeout=1200)


def _bad(run, node):
    return {r["scenario"]: r["message"] for r in run.results(node) if r["outcome"] in ("failed", "broken")}


def test_provision_then_audit_judges_each_node_in_its_mode(mig_lab, provisioned, tmp_path):
    assert provisioned.rc == 10, provisioned.output[-4000:]
    audit = run_suite(mig_lab, tmp_path, "--gpu-nodes", ",".join(NODES))
    for run in (provisioned, audit):
        for node in ("mig-single", "mig-mixed", "plain"):
            assert _bad(run, node) == {}, (node, _bad(run, node))
        mig_results = {r["scenario"]: r["outcome"] for r in run.results("mig-single") if r["feature"] == MIG_FEATURE}
        assert set(mig_results.values()) == {"passed"} and len(mig_results) == 5, mig_results
        assert {r["outcome"] for r in run.results("plain") if r["feature"] == MIG_FEATURE} == {"skipped"}
    nodes = audit.summary["nodes"]
    assert nodes["mig-single"]["mig"] | {"source": None} == {"strategy": "single", "profile": "all-1g.10gb",
                                                           "state": "success", "source": None}
    assert nodes["mig-mixed"]["mig"]["strategy"] == "mixed" and nodes["mig-failed"]["mig"]["state"] == "failed"
    assert "mig" not in nodes.get("plain", {}), nodes.get("plain")   # judged without MIG (other fields: its runtime mode)
    # time-slicing (4 replicas) multiplies the MIG devices: 7x 1g.10gb under single, each profile under mixed
    single = mig_lab.core.read_node("mig-single").status.allocatable
    mixed = mig_lab.core.read_node("mig-mixed").status.allocatable
    assert single["nvidia.com/gpu"] == "28", single
    assert (mixed["nvidia.com/gpu"], mixed["nvidia.com/mig-1g.10gb"], mixed["nvidia.com/mig-3g.40gb"]) == (
        "0", "8", "4"), mixed


def test_the_failed_mig_manager_fails_exactly_its_node(provisioned):
    bad = _bad(provisioned, "mig-failed")
    assert set(bad) == FAILED_SCENARIOS, bad
    state = bad["The MIG manager applied the node's MIG profile"]
    assert "mig-failed judged in MIG mode (strategy single, profile all-1g.10gb)" in state
    assert "nvidia.com/mig.config.state=failed (want success)" in state and "Fix:" in state
    others = {n: _bad(provisioned, n) for n in NODES if n != "mig-failed"}
    assert others == {n: {} for n in others}, others


def test_plan_and_rollback_restore_the_mig_label(mig_lab, provisioned, tmp_path):
    core = mig_lab.core
    assert core.read_node("mig-single").metadata.labels["nvidia.com/mig.config"] == "all-1g.10gb"
    rollback = run_suite(mig_lab, tmp_path / "rb", "--rollback", "--gpu-nodes", ",".join(NODES))
    assert rollback.rc in (0, 5), rollback.output[-3000:]
    assert "nvidia.com/mig.config" not in (core.read_node("mig-single").metadata.labels or {}) or (
        core.read_node("mig-single").metadata.labels["nvidia.com/mig.config"] != "all-1g.10gb")
    plan = run_suite(mig_lab, tmp_path / "plan", "--plan", "--gpu-nodes", ",".join(NODES))
    assert "[mig-single] label node mig-single label nvidia.com/mig.config" in plan.output, plan.output[-3000:]
