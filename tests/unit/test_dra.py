"""The pure parts of DRA mode (provision/observe/dra.py, the stack setting, the stack refusal, the twin's slice
builder): slice parsing and comparison with nvidia-smi, mode detection, the chart values of each stack, stuck
claims."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import yaml

from lab.spec import Fault, NodeSpec
from lab.twin import dra_plugin
from provision.converge.operator import stack_refusal
from provision.helm import unknown_value_paths
from provision.observe import dra
from provision.settings import SettingsError, validate

CHARTS = Path(__file__).resolve().parents[3] / "shared" / "charts"
UUID0, UUID1 = "GPU-11111111-2222-3333-4444-555555555555", "GPU-66666666-7777-8888-9999-000000000000"


def _device(name: str, uuid: str, driver: str = "580.159.4") -> dict:
    return {"name": name, "attributes": {"type": {"string": "gpu"}, "uuid": {"string": uuid},
                                         "productName": {"string": "NVIDIA H200"},
                                         "driverVersion": {"version": driver},
                                         "resource.kubernetes.io/pciBusID": {"string": "0000:1b:00.0"}},
            "capacity": {"memory": {"value": "143771Mi"}}}


def _slice(name: str, node: str, devices: list[dict], generation: int = 1, driver: str = dra.DRIVER) -> dict:
    return {"metadata": {"name": name}, "spec": {"driver": driver, "nodeName": node, "devices": devices,
                                                 "pool": {"name": node, "generation": generation,
                                                          "resourceSliceCount": 1}}}


def test_node_devices_reads_the_nodes_pool_of_the_gpu_driver_only():
    slices = [_slice("a-1", "gpu-a", [_device("gpu-0", UUID0), _device("gpu-1", UUID1)]),
              _slice("b-1", "gpu-b", [_device("gpu-0", "GPU-other")]),
              _slice("a-cd", "gpu-a", [_device("channel-0", "x")], driver="compute-domain.nvidia.com")]
    devices = dra.node_devices(slices, "gpu-a")
    assert [(d.name, d.uuid, d.product, d.driver_version, d.memory) for d in devices] == [
        ("gpu-0", UUID0, "NVIDIA H200", "580.159.4", "143771Mi"), ("gpu-1", UUID1, "NVIDIA H200", "580.159.4", "143771Mi")]
    assert dra.node_devices(slices, "gpu-z") == []


def test_an_older_generation_of_the_pool_does_not_count():
    slices = [_slice("a-old", "gpu-a", [_device("gpu-0", "GPU-gone")], generation=1),
              _slice("a-new", "gpu-a", [_device("gpu-0", UUID0)], generation=2)]
    assert [d.uuid for d in dra.node_devices(slices, "gpu-a")] == [UUID0]


def test_compare_devices_matches_nvidia_smi_and_the_host_driver_through_semver():
    devices = dra.node_devices([_slice("a", "gpu-a", [_device("gpu-0", UUID0), _device("gpu-1", UUID1)])], "gpu-a")
    assert dra.compare_devices(devices, [UUID0, UUID1], "580.159.04") == []  # 04 is published as 4 (semver)


@pytest.mark.parametrize(("uuids", "driver", "text"), [
    ([UUID0, UUID1, "GPU-third"], "580.159.04", "['GPU-third'] are not in the node's ResourceSlices"),
    ([UUID0], "580.159.04", f"publish UUID(s) ['{UUID1}'] that nvidia-smi does not list"),
    ([UUID0, UUID1], "580.95.05", "driverVersion differs from the host driver 580.95.05"),
])
def test_compare_devices_names_each_disagreement(uuids, driver, text):
    devices = dra.node_devices([_slice("a", "gpu-a", [_device("gpu-0", UUID0), _device("gpu-1", UUID1)])], "gpu-a")
    problems = dra.compare_devices(devices, uuids, driver)
    assert any(text in p for p in problems), problems


def test_no_slice_at_all_is_a_problem_of_its_own():
    assert "published nothing" in dra.compare_devices([], [UUID0], "580.159.04")[0]


def test_detect_stack():
    cp, gc = {"metadata": {"name": "cluster-policy"}}, {"metadata": {"name": "gpu-cluster"}}
    assert dra.detect_stack([cp], []) == dra.Stack("clusterpolicy")
    assert dra.detect_stack([], [gc]) == dra.Stack("dra")
    assert dra.detect_stack([], []) == dra.Stack(None)
    both = dra.detect_stack([cp], [gc])
    assert both.mode is None and "cluster-policy" in both.error and "gpu-cluster" in both.error
    assert dra.CHART_WORDS in both.error


def _chart_values(version: str) -> dict:
    path = CHARTS / f"gpu-operator-{version}.tgz"
    if not path.exists():
        pytest.skip(f"{path} is not here")
    with tarfile.open(path) as tar:
        return yaml.safe_load(tar.extractfile("gpu-operator/values.yaml").read())  # type: ignore[union-attr]


def _chart_text(version: str) -> str:
    with tarfile.open(CHARTS / f"gpu-operator-{version}.tgz") as tar:
        return tar.extractfile("gpu-operator/values.yaml").read().decode()  # type: ignore[union-attr]


def test_the_refusal_quotes_the_charts_own_words():
    _chart_values("v26.7.0")
    text = " ".join(line.lstrip("# ").strip() for line in _chart_text("v26.7.0").splitlines() if line.startswith("#"))
    # values.yaml says it over two comment lines; the suite quotes them as one sentence each
    for sentence in dra.CHART_WORDS.split(". "):
        assert sentence.rstrip(".") in text, sentence


def test_stack_values_are_the_charts_values():
    values = _chart_values("v26.7.0")
    for stack in dra.STACKS:
        assert unknown_value_paths(dra.stack_values(stack), values) == []
    assert dra.stack_values("dra") == {"clusterPolicy": {"deployCR": False}, "gpuCluster": {"deployCR": True}}
    assert values["clusterPolicy"]["deployCR"] is True and values["gpuCluster"]["deployCR"] is False  # the defaults
    assert "gpuCluster" not in _chart_values("v26.3.0")  # why ClusterPolicy mode adds no stack value at all
    with pytest.raises(ValueError):
        dra.stack_values("device-plugin")


def _claim(name: str, reserved: list[dict] | None, pool: str = "gpu-a", ns: str = "team") -> dict:
    return {"metadata": {"name": name, "namespace": ns},
            "status": {"allocation": {"devices": {"results": [{"request": "gpu", "driver": dra.DRIVER, "pool": pool,
                                                                "device": "gpu-0"}]}},
                       **({"reservedFor": reserved} if reserved is not None else {})}}


def _pod(name: str, uid: str, ns: str = "team", claim: str | None = None) -> dict:
    return {"metadata": {"name": name, "uid": uid, "namespace": ns},
            "spec": {"resourceClaims": [{"name": "gpu", "resourceClaimName": claim}] if claim else []}}


def test_stuck_claims():
    pods = [_pod("live", "u-live"), _pod("named", "u-named", claim="waiting")]
    claims = [_claim("in-use", [{"resource": "pods", "name": "live", "uid": "u-live"}]),
              _claim("gone", [{"resource": "pods", "name": "old", "uid": "u-old"}], pool="gpu-b"),
              _claim("left", None, pool="gpu-c"),
              _claim("waiting", None),  # allocated for a pod that names it and is not running yet
              {"metadata": {"name": "pending", "namespace": "team"}, "status": {}}]
    stuck = dra.stuck_claims(claims, pods)
    assert stuck == [("team/gone (gpu-b/gpu-0) is reserved for pod(s) ['old'] that no longer exist", ("gpu-b",)),
                     ("team/left (gpu-c/gpu-0) is allocated but no pod uses it", ("gpu-c",))]


def test_stack_setting():
    assert validate({}).stack == "clusterpolicy"
    assert validate({"stack": "dra", "chart_version": "v26.7.0"}).stack == "dra"
    with pytest.raises(SettingsError, match=r"clusterpolicy .* or dra"):
        validate({"stack": "gpucluster"})
    with pytest.raises(SettingsError, match=r"needs GPU Operator v26\.7\.0 or newer"):
        validate({"stack": "dra", "chart_version": "v26.3.0"})


class _Kube:
    def __init__(self, cp: bool, gc: bool) -> None:
        self.cp, self.gc, self.timeout = cp, gc, 1
        self.custom = self

    def get_cluster_policy(self):
        return {"metadata": {"name": "cluster-policy"}} if self.cp else None

    def list_cluster_custom_object(self, group, version, plural, **_):
        assert (group, version, plural) == ("nvidia.com", "v1alpha1", "gpuclusters")
        return {"items": [{"metadata": {"name": "gpu-cluster"}}] if self.gc else []}


class _Ctx:
    def __init__(self, cp: bool, gc: bool, **settings) -> None:
        self.kube = _Kube(cp, gc)
        self.settings = validate({"chart_version": "v26.7.0", **settings})


def test_a_cluster_with_both_crs_is_refused_in_either_stack():
    for stack in dra.STACKS:
        refused = stack_refusal(_Ctx(True, True, stack=stack, switch_stack=True))
        assert refused and "both a ClusterPolicy" in refused and dra.CHART_WORDS in refused


def test_switching_stacks_is_refused_unless_asked():
    refused = stack_refusal(_Ctx(True, False, stack="dra"))
    assert refused and "no migration path" in refused and "--switch-stack" in refused
    assert stack_refusal(_Ctx(True, False, stack="dra", switch_stack=True)) is None
    assert stack_refusal(_Ctx(False, True, stack="dra")) is None
    assert stack_refusal(_Ctx(False, False, stack="dra")) is None  # a fresh cluster
    back = stack_refusal(_Ctx(False, True))  # the default stack against a GPUCluster cluster
    assert back and "runs the GPU Operator's dra stack and the desired state is clusterpolicy" in back


def test_the_twins_slice_follows_the_drivers_formats():
    assert dra_plugin.semver("580.159.04") == "580.159.4" and dra_plugin.semver("9.0") == "9.0.0"
    assert dra_plugin.pci_bus_id("00000000:1B:00.0") == "0000:1b:00.0"
    node = NodeSpec(name="gpu-b", gpus=2)
    body = dra_plugin.resource_slice(node, "uid-1")
    devices = dra.node_devices([{**body, "metadata": {"name": "s"}}], "gpu-b")
    assert [d.name for d in devices] == ["gpu-0", "gpu-1"] and len({d.uuid for d in devices}) == 2
    assert dra.compare_devices(devices, [d.uuid for d in devices], node.driver) == []
    missing = NodeSpec(name="gpu-b", gpus=2, faults=(Fault.DRA_SLICE_MISSING_GPU,))
    assert len(dra_plugin.devices(missing)) == 1


def test_sharing_values_are_the_charts_values_and_name_the_drivers_gate():
    values = _chart_values("v26.7.0")
    assert dra.sharing_values("none") == {}
    for strategy, gate in dra.SHARING_GATES.items():
        want = dra.sharing_values(strategy)
        assert want == {"draDriver": {"featureGates": {gate: True}}}
        assert unknown_value_paths(want, values) == []  # featureGates is a free-form map ({} in values.yaml)
    assert unknown_value_paths({"draDriver": {"nope": 1}}, values) == ["draDriver.nope"]
    assert dra.SHARING_GATES == dra_plugin.SHARING_GATES  # the suite and the twin read the driver alike
    assert validate({"stack": "dra", "chart_version": "v26.7.0", "dra_sharing": "MPS"}).dra_sharing == "MPS"
    with pytest.raises(SettingsError, match="dra_sharing"):
        validate({"dra_sharing": "timeslicing"})


def test_the_twins_plugin_refuses_a_sharing_strategy_without_its_gate():
    claim = {"spec": {"devices": {"config": [{"opaque": {"driver": "gpu.nvidia.com", "parameters": {
        "apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig", "sharing": {"strategy": "TimeSlicing"}}}}]}}}
    gates = dra_plugin.feature_gates({"FEATURE_GATES": "MPSSupport=true,TimeSlicingSettings=false"})
    assert gates == {"MPSSupport": True, "TimeSlicingSettings": False}
    assert dra_plugin.sharing_error(claim, gates) == ('"TimeSlicing" is selected as the GPU sharing strategy, but the '
                                                      '"TimeSlicingSettings" feature gate is not enabled')
    assert dra_plugin.sharing_error(claim, {"TimeSlicingSettings": True}) is None
    assert dra_plugin.sharing_error({"spec": {"devices": {}}}, {}) is None


def test_the_twins_containers_see_device_nodes_only_through_their_claims():
    claim = {"status": {"allocation": {"devices": {"results": [
        {"driver": "gpu.nvidia.com", "pool": "gpu-b", "device": "gpu-1", "request": "gpu"}]}}}}
    assert dra_plugin.claim_device_nodes(claim) == ["/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm"]
    assert dra_plugin.claim_device_nodes({"status": {}}) == []
    assert "/dev/nvidia1" in dra_plugin.ls_output(dra_plugin.claim_device_nodes(claim))
    assert dra_plugin.ls_output([]).startswith("ls: cannot access '/dev/nvidia*'")
    pod = {"spec": {"containers": [{"command": ["sh", "-c", "ls -1 /dev/nvidia* 2>&1; exit 0"]}]}}
    assert dra_plugin.lists_devices(pod) and not dra_plugin.lists_devices({"spec": {"containers": [{}]}})


def test_the_twins_mig_gpu_is_published_as_its_mig_devices_and_the_suite_matches_them_with_nvidia_smi():
    """Static MIG (the driver's nvlib.go / mig.go): a MIG-enabled GPU is published only as its MIG devices, named
    gpu-<minor>-mig-<profile>-<GI profile ID>-<placement start>, with the H200 capture's GPU instance profile."""
    from lab.spec import H200_CAPTURE, SpecError, _mig
    from lab.twin import mig
    from lab.twin.gpus import gpus_for
    from provision.observe.nvidia_smi import parse_list, parse_mig_devices

    spec_mig = _mig({"preset": [{"1g.18gb": 7}, None]}, "node gpu-m")
    node = NodeSpec(name="gpu-m", gpus=2, mig=spec_mig)
    records = gpus_for(node)
    state = mig.preset_state(node, [g.uuid for g in records])
    lgip = (H200_CAPTURE / "smi-topo-mig.txt").read_text()
    devices = dra_plugin.devices(node, state, lgip)
    names = [d["name"] for d in devices]
    assert names == [f"gpu-0-mig-1g18gb-19-{i}" for i in range(7)] + ["gpu-1"]
    first = devices[0]
    assert first["attributes"]["type"] == {"string": "mig"} and first["attributes"]["profile"] == {"string": "1g.18gb"}
    assert first["attributes"]["parentUUID"] == {"string": records[0].uuid}
    assert first["capacity"]["memory"] == {"value": str(16 * 1024 ** 3)}       # lgip: 16.00 GiB
    assert first["capacity"]["multiprocessors"] == {"value": "16"} and "memorySlice0" in first["capacity"]
    # the suite's side: nvidia-smi -L as the twin prints it, parsed by the suite, matches the slice
    listing = mig.list_lines(mig.with_mig_mode(records, state), state)
    by_index = {g.index: g.uuid for g in parse_list(listing)}
    parents = {m.uuid: (by_index[m.gpu_index], m.profile) for m in parse_mig_devices(listing)}
    published = dra.node_devices([{"metadata": {"name": "s"}, "spec": {
        "driver": dra.DRIVER, "nodeName": "gpu-m", "pool": {"name": "gpu-m", "generation": 1}, "devices": devices}}],
        "gpu-m")
    want = [records[1].uuid, *parents]
    assert dra.compare_devices(published, want, node.driver, parents) == []
    # a driver that published the MIG GPU itself (and not its MIG devices) fails, naming both
    whole = dra.node_devices([_slice("w", "gpu-m", [_device("gpu-0", records[0].uuid),
                                                    _device("gpu-1", records[1].uuid)])], "gpu-m")
    problems = " ".join(dra.compare_devices(whole, want, "580.159.04", parents))
    assert "are not in the node's ResourceSlices" in problems and records[0].uuid in problems
    # a MIG device published with the wrong parent
    wrong = [dict(d, attributes={**d["attributes"], "parentUUID": {"string": records[1].uuid}}) for d in devices]
    published = dra.node_devices([{"metadata": {"name": "s"}, "spec": {
        "driver": dra.DRIVER, "nodeName": "gpu-m", "pool": {"name": "gpu-m", "generation": 1}, "devices": wrong}}],
        "gpu-m")
    assert "lists it as a 1g.18gb MIG device of" in " ".join(dra.compare_devices(published, want, node.driver, parents))
    with pytest.raises(SpecError, match=r"mig\.preset"):
        _mig({"preset": [{"1g.18gb": 0}]}, "node x")


def test_mig_device_names_follow_the_drivers_canonical_form():
    assert dra_plugin.mig_device_name(2, "1g.24gb", 19, 0) == "gpu-2-mig-1g24gb-19-0"   # partitions.go's example
    assert dra_plugin.mig_device_name(1, "2g.47gb", 14, 0) == "gpu-1-mig-2g47gb-14-0"   # device_state.go's example
    claim = {"status": {"allocation": {"devices": {"results": [
        {"driver": "gpu.nvidia.com", "pool": "gpu-m", "device": "gpu-0-mig-1g18gb-19-3", "request": "gpu"}]}}}}
    assert dra_plugin.claim_device_nodes(claim)[0] == "/dev/nvidia0"
