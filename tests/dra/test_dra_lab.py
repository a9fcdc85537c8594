"""DRA mode against ONE lab with the real GPU Operator v26.7.0 in its GPUCluster stack (gpuCluster.deployCR=true,
clusterPolicy.deployCR=false): `pytest features/ --provision --stack dra` installs it, the real kube-scheduler
allocates the claims from the ResourceSlices the twin publishes as the DRA kubelet plugin does, and the audit
after it passes on the healthy nodes (one of them with a MIG-partitioned GPU, published as its MIG devices, and the
DRA flavour of the DCGM exporter on each); each DRA fault (one per node) fails exactly one (node, check), and the
one fault with consequences beyond its check (a plugin that never publishes) fails exactly the checks named in
CONSEQUENCES; the audit writes only its own claim templates, claims and pods in its namespace, and --no-workload
nothing; --rollback (last: it removes the stack) restores the cluster as it was before --provision."""

from __future__ import annotations

import pytest

from lab.spec import Fault
from tests.suite.runner import run_suite, suite_writes
from tests.suite.test_provision import api_snapshot, snapshot_diff

pytestmark = [pytest.mark.lab, pytest.mark.slow]

HEALTHY = ("gpu-a", "gpu-b", "gpu-m")
SPEC = {"nodes": [
    {"name": "cp-1", "control_plane": True, "gpus": 0},
    {"name": "gpu-a", "gpus": 1},
    {"name": "gpu-b", "gpus": 2},
    # an H200 whose GPU 0 was partitioned on the host (7x 1g.18gb) before the install, GPU 1 without MIG
    {"name": "gpu-m", "gpus": 2, "mig": {"preset": [{"1g.18gb": 7}, None]}},
    {"name": "gpu-c", "gpus": 1, "faults": [Fault.DRA_PLUGIN_NEVER_PUBLISHES]},
    {"name": "gpu-d", "gpus": 2, "faults": [Fault.DRA_SLICE_MISSING_GPU]},
    {"name": "gpu-e", "gpus": 1, "faults": [Fault.DRA_DRIVER_VERSION_DIFFERS]},
    {"name": "gpu-f", "gpus": 2, "faults": [Fault.DRA_CLAIM_LEFT_ALLOCATED]},
]}
ARGS = ("--stack", "dra", "--chart-version", "v26.7.0", "--timeouts", "workload=30,operands_settle=20")
SLICES = "The node's ResourceSlices list its GPUs as nvidia-smi does"
WORKLOAD = "A pod with a GPU claim runs CUDA on the node"
CLAIMS = "No GPU claim is held for a pod that no longer exists"
GPU_CLUSTER = "GPUCluster is ready"
DEVICE_CLASSES = "The NVIDIA DeviceClasses exist"
METRICS = "The DCGM exporter reports every GPU of the node"
SHARING = "Two pods share one GPU through one claim when sharing is asked for"
# fault -> the one (node, scenario) it fails, and a text of that failure's message
FAULTS = {
    "dra-plugin-never-publishes": (("gpu-c", SLICES), "published nothing"),
    "dra-slice-missing-gpu": (("gpu-d", SLICES), "are not in the node's ResourceSlices"),
    "dra-driver-version-differs": (("gpu-e", SLICES), "driverVersion differs from the host driver 580.159.04"),
    "dra-claim-left-allocated": ((None, CLAIMS), "default/left-behind-gpu-f (gpu-f/gpu-1)"),
}
# What a node that publishes nothing takes down besides its slices check, in the real system (docs/dra.md): every
# claim on the node is unallocatable, the suite's and the operator's admin-access claims alike, so its CUDA pod and
# its nvidia-dcgm-exporter-dra pod are never scheduled, and its nvidia-dra-validator pod neither: the real operator
# keeps GPUCluster notReady. (node, scenario) -> a text of that failure's message.
CONSEQUENCES = {
    ("gpu-c", WORKLOAD): "cannot allocate all claims",   # the real kube-scheduler's words
    ("gpu-c", METRICS): "expected a nvidia-dcgm-exporter-dra pod on gpu-c; found none",
    (None, GPU_CLUSTER): "notReady",
}
EXPECTED_FAILURES = {key: text for key, text in FAULTS.values()} | CONSEQUENCES


def test_each_fault_has_exactly_one_check_and_only_one_fault_has_consequences():
    assert len({key for key, _ in FAULTS.values()}) == len(FAULTS)   # no two faults share a (node, check)
    faulty = {n["name"]: n["faults"] for n in SPEC["nodes"] if n.get("faults")}
    assert all(len(f) == 1 for f in faulty.values()), faulty       # one fault per node
    assert {node for node, _ in CONSEQUENCES} <= {None, "gpu-c"}


@pytest.fixture(scope="module")
def dra_lab(module_lab_factory):
    return module_lab_factory(SPEC, "dra")


@pytest.fixture(scope="module")
def before(dra_lab):
    """The cluster before the suite's first --provision (what --rollback must restore), with the DRA objects."""
    return {**api_snapshot(dra_lab), **_dra_objects(dra_lab)}


def _dra_objects(lab) -> dict:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    custom = client.CustomObjectsApi(lab.api())

    def names(plural, group="resource.k8s.io", version="v1"):
        try:
            return sorted(o["metadata"]["name"] for o in custom.list_cluster_custom_object(group, version, plural)["items"])
        except ApiException as exc:
            if exc.status == 404:   # the CRD is not there: none
                return []
            raise
    return {"resourceslices": names("resourceslices"), "deviceclasses": names("deviceclasses"),
            "gpuclusters": names("gpuclusters", "nvidia.com", "v1alpha1")}


@pytest.fixture(scope="module")
def provisioned(dra_lab, before, tmp_path_factory):
    return run_suite(dra_lab, tmp_path_factory.mktemp("provision"), "--provision", *ARGS, timeout=900)


def _failures(run) -> dict:
    return {(r["node"], r["scenario"]): r["message"] for r in run.results() if r["outcome"] in ("failed", "broken")}


def test_provision_installs_the_dra_stack_and_the_healthy_nodes_pass(dra_lab, provisioned):
    run = provisioned
    assert run.summary.get("results"), run.output[-4000:]
    for node in HEALTHY:
        results = run.results(node)
        bad = [(r["scenario"], r["outcome"], r["message"][:300]) for r in results if r["outcome"] != "passed"
               and r["feature"].startswith("Every GPU node publishes") and r["scenario"] != SHARING]
        assert not bad, bad
        assert any(r["scenario"] == WORKLOAD and r["outcome"] == "passed" for r in results), run.output[-3000:]
    failures = _failures(run)
    assert set(failures) == set(EXPECTED_FAILURES), {k: v[:300] for k, v in failures.items()}
    # the MIG node (its slices check passed above): GPU 0 is published as its 7 MIG devices, GPU 1 as itself, each
    # written by the node's plugin ServiceAccount (the driver's ValidatingAdmissionPolicy let it: its own node)
    from kubernetes import client

    slices = [s for s in client.CustomObjectsApi(dra_lab.api()).list_cluster_custom_object(
        "resource.k8s.io", "v1", "resourceslices")["items"] if s["spec"]["pool"]["name"] == "gpu-m"]
    types = sorted(d["attributes"]["type"]["string"] for s in slices for d in s["spec"]["devices"])
    assert types == ["gpu"] + ["mig"] * 7, [d["name"] for s in slices for d in s["spec"]["devices"]]
    writers = {e["user"]["username"] for e in dra_lab.audit_events() if e.get("verb") == "create"
               and e.get("objectRef", {}).get("resource") == "resourceslices" and e.get("stage") == "ResponseComplete"
               and (e.get("responseStatus") or {}).get("code") == 201}
    assert writers == {"system:serviceaccount:gpu-operator:nvidia-dra-driver-kubeletplugin"}, writers
    classes = next(r for r in run.results() if r["scenario"] == DEVICE_CLASSES)
    assert classes["outcome"] == "passed", classes   # mig.nvidia.com is required: gpu-m has MIG enabled


def test_the_drivers_admission_policy_lets_a_plugin_write_only_its_own_nodes_slices(dra_lab, provisioned):
    """The real operator's ValidatingAdmissionPolicy resourceslices-policy-nvidia-dra-driver, enforced by the real
    apiserver, on the identity the twin writes slices with (lab/twin/dra_plugin.py as_plugin)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    from lab.twin import dra_plugin

    api = dra_lab.api()
    core = client.CoreV1Api(api)
    pod = next(p for p in core.list_pod_for_all_namespaces(label_selector=f"app={dra_plugin.PLUGIN_APP}").items
               if p.spec.node_name == "gpu-a")
    writer = dra_plugin.as_plugin(api, core, api.sanitize_for_serialization(pod))
    body = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"generateName": "not-mine-"},
            "spec": {"driver": dra_plugin.DRIVER, "nodeName": "gpu-b",
                     "pool": {"name": "gpu-b", "generation": 99, "resourceSliceCount": 1}, "devices": []}}
    with pytest.raises(ApiException) as refused:
        writer.create_cluster_custom_object("resource.k8s.io", "v1", "resourceslices", body)
    writer.api_client.close()
    assert refused.value.status in (403, 422) and "may not modify cluster or node resourceslices" in \
        refused.value.body, refused.value.body


@pytest.fixture(scope="module")
def audited(dra_lab, provisioned, tmp_path_factory):
    return run_suite(dra_lab, tmp_path_factory.mktemp("audit"), *ARGS, timeout=600)


def test_the_audit_after_it_gives_the_same_verdicts(audited):
    run = audited
    assert run.rc == 10, run.output[-3000:]  # the faulty nodes: non-conformant
    failures = _failures(run)
    assert set(failures) == set(EXPECTED_FAILURES), {k: v[:300] for k, v in failures.items()}
    for key, text in EXPECTED_FAILURES.items():
        assert text in failures[key], (key, failures[key][:500])
        assert "Fix" in failures[key] or "fix" in failures[key], failures[key]
    for node in HEALTHY:
        dra_results = [r for r in run.results(node) if r["feature"].startswith("Every GPU node publishes")]
        outcomes = {r["scenario"]: r["outcome"] for r in dra_results}
        assert outcomes.pop(SHARING) == "skipped", "no sharing asked for: the sharing scenario is not applicable"
        assert len(outcomes) == 5 and set(outcomes.values()) == {"passed"}, dra_results
        metrics = [r for r in run.results(node) if r["scenario"] == METRICS]   # the DRA exporter, every GPU
        assert [r["outcome"] for r in metrics] == ["passed"], metrics
    # the device plugin stack's scenarios are not part of a DRA run (deselected, not skipped or failed)
    assert not [r for r in run.results() if r["scenario"] in ("ClusterPolicy is ready", "CUDA vector addition passes "
                                                                                      "on the node")]


def test_the_audit_wrote_only_its_claim_templates_and_pods_in_its_namespace(dra_lab, audited):
    writes = suite_writes(dra_lab, audited)
    assert writes, "the DRA workload scenarios made no request: the proof below would prove nothing"
    where = {(e["verb"], e["objectRef"].get("resource"), e["objectRef"].get("namespace")) for e in writes}
    assert where <= {("create", "resourceclaimtemplates", "gpu-conformance"), ("create", "pods", "gpu-conformance"),
                     ("delete", "resourceclaimtemplates", "gpu-conformance"), ("delete", "pods", "gpu-conformance")}, \
        where
    # the claims themselves are made (and deleted with their pods) by the resource claim controller, not the suite
    claims = [e for e in dra_lab.audit_events() if e.get("objectRef", {}).get("resource") == "resourceclaims"
              and e.get("verb") == "create" and e.get("objectRef", {}).get("namespace") == "gpu-conformance"
              and audited.started <= _t(e) <= audited.finished + 1]
    assert claims and {e["user"]["username"] for e in claims} == {"system:serviceaccount:kube-system:resource-claim-controller"}


def _t(event: dict) -> float:
    from datetime import datetime

    return datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00")).timestamp()


def test_no_write_at_all_without_workload(dra_lab, audited, tmp_path):
    run = run_suite(dra_lab, tmp_path, *ARGS, "--no-workload")
    assert run.summary.get("results"), run.output[-3000:]
    assert suite_writes(dra_lab, run) == []
    workload = [r for r in run.results() if r["scenario"] == WORKLOAD]
    assert workload and all(r["outcome"] == "skipped" for r in workload)



# ----------------------------------------------------------------- sharing (these change the lab: they run last)
def test_sharing_the_driver_was_not_configured_for_fails_with_the_drivers_words(dra_lab, audited, tmp_path):
    run = run_suite(dra_lab, tmp_path, *ARGS, "--dra-sharing", "MPS", "--gpu-nodes", "gpu-a")
    result = next(r for r in run.results("gpu-a") if r["scenario"] == SHARING)
    assert result["outcome"] == "failed", result
    assert '"MPS" is selected as the GPU sharing strategy, but the "MPSSupport" feature gate is not enabled' in \
        result["message"] and "draDriver.featureGates" in result["message"], result["message"]


def test_provision_with_time_slicing_lets_two_pods_share_one_gpu(dra_lab, audited, tmp_path):
    run = run_suite(dra_lab, tmp_path, "--provision", *ARGS, "--dra-sharing", "TimeSlicing", timeout=900)
    for node in HEALTHY:
        result = next(r for r in run.results(node) if r["scenario"] == SHARING)
        assert result["outcome"] == "passed", result["message"][:1000]
    # gpu-c publishes nothing: its sharing pods have nothing to be allocated either
    want = {*EXPECTED_FAILURES, ("gpu-c", SHARING)}
    assert set(_failures(run)) == want, {k: v[:300] for k, v in _failures(run).items()}


def test_rollback_restores_the_cluster_as_it_was_before_provision(dra_lab, before, tmp_path):
    """Last (it removes the stack): both --provision runs of this module are undone, newest first."""
    back = run_suite(dra_lab, tmp_path, "--rollback", *ARGS, timeout=600)
    assert back.rc in (0, 11), back.output[-3000:]
    assert back.summary["changes"] > 0, back.output[-3000:]
    assert all(r["outcome"] != "broken" for r in back.results()), back.output[-3000:]
    after = {**api_snapshot(dra_lab), **_dra_objects(dra_lab)}
    diff = snapshot_diff(before, after)
    assert diff == [], (diff, back.output[-3000:])
