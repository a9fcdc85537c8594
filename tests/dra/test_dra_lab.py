"""DRA mode against ONE lab with the real GPU Operator v26.7.0 in its GPUCluster stack (gpuCluster.deployCR=true,
clusterPolicy.deployCR=false): `pytest features/ --provision --stack dra` installs it, the real kube-scheduler
allocates the claims from the ResourceSlices the twin publishes as the DRA kubelet plugin does, and the audit
after it passes on the healthy nodes; each DRA fault (one per node) fails exactly its node's check (and the
cluster-wide checks the real operator and controller make it fail, named below); the audit writes only its own
claim templates, claims and pods in its namespace, and --no-workload nothing."""

from __future__ import annotations

import pytest

from tests.suite.runner import run_suite, suite_writes

pytestmark = [pytest.mark.lab, pytest.mark.slow]

HEALTHY = ("gpu-a", "gpu-b")
SPEC = {"nodes": [
    {"name": "cp-1", "control_plane": True, "gpus": 0},
    {"name": "gpu-a", "gpus": 1},
    {"name": "gpu-b", "gpus": 2},
    {"name": "gpu-c", "gpus": 1, "faults": ["dra-plugin-never-publishes"]},
    {"name": "gpu-d", "gpus": 2, "faults": ["dra-slice-missing-gpu", "dra-claim-left-allocated"]},
    {"name": "gpu-e", "gpus": 1, "faults": ["dra-driver-version-differs"]},
]}
ARGS = ("--stack", "dra", "--chart-version", "v26.7.0", "--timeouts", "workload=30,operands_settle=20")
SLICES = "The node's ResourceSlices list its GPUs as nvidia-smi does"
WORKLOAD = "A pod with a GPU claim runs CUDA on the node"
CLAIMS = "No GPU claim is held for a pod that no longer exists"
GPU_CLUSTER = "GPUCluster is ready"
# (node, scenario) -> a text its message must contain: every failure of the run, no other
EXPECTED_FAILURES = {
    ("gpu-c", SLICES): "published nothing",
    ("gpu-c", WORKLOAD): "gpu-c",               # nothing to allocate on a node without slices
    (None, GPU_CLUSTER): "notReady",            # the real operator: gpu-c's DRA validator pod cannot be scheduled
    ("gpu-d", SLICES): "are not in the node's ResourceSlices",
    (None, CLAIMS): "default/left-behind-gpu-d (gpu-d/gpu-1)",
    ("gpu-e", SLICES): "driverVersion differs from the host driver 580.159.04",
}


@pytest.fixture(scope="module")
def dra_lab(module_lab_factory):
    return module_lab_factory(SPEC, "dra")


@pytest.fixture(scope="module")
def provisioned(dra_lab, tmp_path_factory):
    return run_suite(dra_lab, tmp_path_factory.mktemp("provision"), "--provision", *ARGS, timeout=900)


def _failures(run) -> dict:
    return {(r["node"], r["scenario"]): r["message"] for r in run.results() if r["outcome"] in ("failed", "broken")}


def test_provision_installs_the_dra_stack_and_the_healthy_nodes_pass(dra_lab, provisioned):
    run = provisioned
    assert run.summary.get("results"), run.output[-4000:]
    for node in HEALTHY:
        results = run.results(node)
        bad = [(r["scenario"], r["outcome"], r["message"][:300]) for r in results if r["outcome"] != "passed"
               and r["feature"].startswith("Every GPU node publishes")]
        assert not bad, bad
        assert any(r["scenario"] == WORKLOAD and r["outcome"] == "passed" for r in results), run.output[-3000:]
    failures = _failures(run)
    assert set(failures) == set(EXPECTED_FAILURES), {k: v[:300] for k, v in failures.items()}
