"""MIG: the pure parsers (provision/observe/mig.py) and judges (provision/mig.py) on every real MIG fixture of
../shared/fixtures/real-world (nvidia-smi -L in both layouts, GFD label maps in single and mixed, node objects,
nvidia-smi tables) and on an excerpt of the operator's own mig-parted config (tests/unit/data/mig/SOURCES)."""

from __future__ import annotations

import json

import pytest
import yaml

from provision import mig
from provision.observe import mig as obs
from provision.observe.nvidia_smi import parse_list, parse_mig_devices
from provision.settings import SettingsError, validate
from tests.unit.observe_fixtures import DATA, fixture_text

SMI = "real-world/nvidia-smi"
K8S = "real-world/k8s"
CONFIGS = obs.parse_mig_parted_config((DATA / "mig" / "default-mig-parted-config-excerpt.yaml").read_text())
H100 = "0x233010DE"   # H100 80GB HBM3 (device-filter of the operator's config)
A100_40 = "0x20B010DE"


def labels_of(name: str) -> dict[str, str]:
    text = fixture_text(f"{K8S}/{name}").strip()
    if not text.startswith("{"):
        text = "{" + text.removesuffix("}").rstrip().rstrip(",") + "}"   # the docs' fragments: no opening brace
    return json.loads(text)


def node_object(name: str) -> dict:
    return yaml.safe_load(fixture_text(f"{K8S}/{name}"))


def layout(name: str) -> dict[int, dict[str, int]]:
    text = fixture_text(f"{SMI}/{name}")
    return obs.observed_layout(parse_mig_devices(text), [g.index for g in parse_list(text)])


# ------------------------------------------------------------------------------------------ nvidia-smi -L
def test_h100_all_1g10gb_is_seven_devices_and_matches_its_config() -> None:
    assert layout("h100-mig-all-1g10gb-L.txt") == {0: {"1g.10gb": 7}}
    assert obs.layout_problems(layout("h100-mig-all-1g10gb-L.txt"), CONFIGS, "all-1g.10gb", {0: H100}) == []
    # the A100-40GB entry of the same config gives 4: with the H100's device ID that layout is wrong
    assert obs.candidate_layouts(CONFIGS, "all-1g.10gb", 0, A100_40) == [{"1g.10gb": 4}]
    wrong = obs.layout_problems({0: {"1g.10gb": 4}}, CONFIGS, "all-1g.10gb", {0: H100})
    assert wrong == ["GPU 0: 4x 1g.10gb (config all-1g.10gb gives 7x 1g.10gb)"]


def test_h100_all_balanced_is_the_mixed_layout() -> None:
    assert layout("h100-mig-mixed-L.txt") == {0: {"3g.40gb": 1, "2g.20gb": 1, "1g.10gb": 2}}
    assert obs.layout_problems(layout("h100-mig-mixed-L.txt"), CONFIGS, "all-balanced", {0: H100}) == []
    # without the device ID either entry may apply; the H100's layout is one of them, 7x 1g.10gb is none
    assert obs.layout_problems(layout("h100-mig-mixed-L.txt"), CONFIGS, "all-balanced") == []
    assert obs.layout_problems(layout("h100-mig-all-1g10gb-L.txt"), CONFIGS, "all-balanced") != []


def test_dgx_a100_custom_config_per_gpu() -> None:
    got = layout("8xa100-mig-mixed-L.txt")
    assert [got[i] for i in range(4)] == [{}, {}, {}, {}]          # GPUs 0-3: MIG off
    assert got[4] == {"1g.5gb": 7} and got[5] == {"2g.10gb": 3} and got[6] == {"3g.20gb": 2}
    assert got[7] == {"3g.20gb": 1, "2g.10gb": 1, "1g.5gb": 2}
    custom = obs.parse_mig_parted_config(yaml.safe_dump({"version": "v1", "mig-configs": {"custom-config": [
        {"devices": [0, 1, 2, 3], "mig-enabled": False},
        {"devices": [4], "mig-enabled": True, "mig-devices": {"1g.5gb": 7}},
        {"devices": [5], "mig-enabled": True, "mig-devices": {"2g.10gb": 3}},
        {"devices": [6], "mig-enabled": True, "mig-devices": {"3g.20gb": 2}},
        {"devices": [7], "mig-enabled": True, "mig-devices": {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}},
    ]}}))
    assert obs.layout_problems(got, custom, "custom-config") == []
    swapped = {**got, 5: {"3g.20gb": 2}}
    assert obs.layout_problems(swapped, custom, "custom-config") == [
        "GPU 5: 2x 3g.20gb (config custom-config gives 3x 2g.10gb)"]


def test_r450_layout_and_uuids() -> None:
    text = fixture_text(f"{SMI}/a100-mig-7x1g5gb-L-driver450.txt")
    devices = parse_mig_devices(text)
    assert devices[0].uuid == "MIG-GPU-4200ccc0-2667-d4cb-9137-f932c716232a/7/0"
    assert layout("a100-mig-7x1g5gb-L-driver450.txt") == {0: {"1g.5gb": 7}}
    assert obs.layout_problems(layout("a100-mig-7x1g5gb-L-driver450.txt"), CONFIGS, "all-1g.5gb") == []
    assert all(obs.device_profile(d.profile) for d in devices)


def test_mig_enabled_without_devices_is_seen_in_the_table() -> None:
    assert obs.smi_table_no_mig_devices(fixture_text(f"{SMI}/a100-mig-enabled-no-devices-smi.txt"))
    assert not obs.smi_table_no_mig_devices(fixture_text(f"{SMI}/8xh100-mig-smi-openshift-docs.txt"))
    # MIG on and no devices: every MIG config with devices fails the node
    assert obs.layout_problems({0: {}}, CONFIGS, "all-1g.5gb") == [
        "GPU 0: no MIG devices (config all-1g.5gb gives 7x 1g.5gb)"]
    assert obs.layout_problems({0: {}}, CONFIGS, "all-enabled") == []


def test_mig_parted_config_errors_say_what_is_wrong() -> None:
    with pytest.raises(obs.MigConfigError, match="mig-configs"):
        obs.parse_mig_parted_config("version: v1\n")
    with pytest.raises(obs.MigConfigError, match=r"all-x\[0\]: devices must be"):
        obs.parse_mig_parted_config("mig-configs:\n  all-x:\n    - devices: some\n      mig-enabled: true\n")
    with pytest.raises(obs.MigConfigError, match=r"'all-3g\.99gb' is not a config"):
        obs.candidate_layouts(CONFIGS, "all-3g.99gb", 0)
    assert not obs.profile_enables_mig(CONFIGS, "all-disabled") and obs.profile_enables_mig(CONFIGS, "all-1g.10gb")
    assert obs.profile_enables_mig(None, "custom") and not obs.profile_enables_mig(None, None)


# ------------------------------------------------------------------------------------------ labels
def test_h100_single_labels_pending_then_success() -> None:
    pending = obs.parse_labels(labels_of("h100-mig-single-1g10gb-labels-pending-fragment.txt"))
    assert (pending.config, pending.state, pending.capable, pending.single_profile) == (
        "all-1g.10gb", "pending", True, None)
    done = obs.parse_labels(labels_of("h100-mig-single-1g10gb-labels-success-fragment.txt"))
    assert (done.state, done.single_profile, done.single_count, done.slices) == ("success", "1g.10gb", 7, (1, 1))
    mode = mig.MigMode("all-1g.10gb", "setting", "single")
    assert mig.judge_state(labels_of("h100-mig-single-1g10gb-labels-success-fragment.txt"), mode) == []
    assert mig.judge_state(labels_of("h100-mig-single-1g10gb-labels-pending-fragment.txt"), mode) == [
        "nvidia.com/mig.config.state=pending (want success)"]


def test_h100_single_allocatable_and_gfd() -> None:
    labels = labels_of("h100-mig-single-1g10gb-labels-success-fragment.txt")
    mode = mig.MigMode("all-1g.10gb", "setting", "single")
    assert mig.judge_allocatable({"nvidia.com/gpu": "7"}, labels, mode, {"1g.10gb": 7}, 0, 1) == []
    # time-slicing multiplies the MIG devices
    assert mig.judge_allocatable({"nvidia.com/gpu": "28"}, labels, mode, {"1g.10gb": 7}, 0, 4) == []
    assert mig.judge_allocatable({"nvidia.com/gpu": "1"}, labels, mode, {"1g.10gb": 7}, 0, 4) == [
        "allocatable nvidia.com/gpu=1 (want 7 MIG devices x 4 replicas = 28)"]
    # the node before MIG was applied (the all-disabled label map): GFD still labels the whole GPU
    before = labels_of("h100-mig-single-node-labels.json")
    problems = mig.judge_allocatable({"nvidia.com/gpu": "1"}, before, mode, {"1g.10gb": 7}, 0, 1)
    assert any("gpu.count=1 (want 7 MIG devices)" in p for p in problems)
    assert any("gpu.product=NVIDIA-H100-80GB-HBM3 (want <model>-MIG-1g.10gb)" in p for p in problems)
    assert obs.parse_labels(before).config == "all-disabled"


def test_a100_single_gfd_driver450() -> None:
    labels = labels_of("a100-mig-single-gfd-labels-driver450.json")
    got = obs.parse_labels(labels)
    assert (got.single_profile, got.single_count, got.strategy) == ("1g.5gb", 7, "single")
    mode = mig.MigMode("all-1g.5gb", "setting", "single")
    assert mig.judge_allocatable({"nvidia.com/gpu": "7"}, labels, mode, {"1g.5gb": 7}, 0, 1) == []


def test_h100_mixed_labels() -> None:
    labels = labels_of("h100-mig-mixed-node-labels.json")
    got = obs.parse_labels(labels)
    assert got.mixed == {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1} and got.config == "all-balanced"
    assert got.mixed_replicas == {"1g.10gb": 1, "2g.20gb": 1, "3g.40gb": 1}
    mode = mig.MigMode("all-balanced", "node label", "mixed")
    alloc = {"nvidia.com/gpu": "0", "nvidia.com/mig-1g.10gb": "2", "nvidia.com/mig-2g.20gb": "1",
             "nvidia.com/mig-3g.40gb": "1"}
    devices = {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}
    assert mig.judge_allocatable(alloc, labels, mode, devices, 0, 4) == []
    assert mig.judge_allocatable({**alloc, "nvidia.com/mig-2g.20gb": "0"}, labels, mode, devices, 0, 4) == [
        "allocatable nvidia.com/mig-2g.20gb=0 (want 1 x 1 replicas = 1)"]
    # the single strategy on a mixed layout is refused with the reason
    single = mig.MigMode("all-balanced", "node label", "single")
    assert any("use strategy mixed" in p for p in mig.judge_allocatable(alloc, labels, single, devices, 0, 1))


def test_a100_mixed_gfd_driver450() -> None:
    got = obs.parse_labels(labels_of("a100-mig-mixed-gfd-labels-driver450.json"))
    assert got.strategy == "mixed"
    assert got.mixed == {"1g.5gb": 1, "2g.10gb": 1, "3g.21gb": 1}   # "3g.21gb" as printed in the docs


@pytest.mark.parametrize(("name", "profile", "resource", "count"), [
    ("dgxa100-node-mig-all-1g5gb-openshift.yaml", "all-1g.5gb", "nvidia.com/mig-1g.5gb", 56),
    ("dgxa100-node-mig-7g40gb-mixed-openshift.yaml", "all-7g.40gb", "nvidia.com/mig-7g.40gb", 8),
])
def test_dgx_a100_node_objects_mixed(name: str, profile: str, resource: str, count: int) -> None:
    node = node_object(name)
    labels, alloc = node["metadata"]["labels"], node["status"]["allocatable"]
    got = obs.parse_labels(labels)
    assert (got.config, got.state, got.strategy) == (profile, "success", "mixed")
    assert int(alloc[resource]) == count and got.mixed[resource.removeprefix("nvidia.com/mig-")] == count
    mode = mig.MigMode(profile, "node label", "mixed")
    per_gpu = obs.candidate_layouts(CONFIGS, profile, 0)
    devices = {p: n * 8 for p, n in per_gpu[0].items()}   # 8 GPUs, the same layout each
    assert mig.judge_state(labels, mode) == []
    assert mig.judge_allocatable(alloc, labels, mode, devices, 0, 1) == []


def test_dgx_a100_node_mig_disabled_is_not_mig_mode() -> None:
    labels = node_object("dgxa100-node-mig-disabled-openshift.yaml")["metadata"]["labels"]
    assert obs.parse_labels(labels).config == "all-disabled"
    assert not obs.profile_enables_mig(CONFIGS, labels["nvidia.com/mig.config"])


def test_incapable_gpu_is_named() -> None:
    mode = mig.MigMode("all-1g.10gb", "setting mig_profiles[gpu-a]", "single")
    problems = mig.judge_state({"nvidia.com/mig.capable": "false"}, mode)
    assert problems[0].startswith("nvidia.com/mig.capable=false: the GPUs cannot be partitioned")


# ------------------------------------------------------------------------------------------ DCGM, settings
def test_dcgm_reports_each_mig_instance() -> None:
    # Hand-built input (no real MIG scrape is in the shared fixtures): dcgm-exporter's MIG labels GPU_I_PROFILE
    # and GPU_I_ID on the real H100 fixture's series.
    base = fixture_text("real-world/dcgm/8xh100-eks-sampled.txt").splitlines()[0]
    head, value = base.rsplit("} ", 1)
    text = "\n".join(f'{head},GPU_I_PROFILE="1g.10gb",GPU_I_ID="{i}"}} {value}' for i in (7, 8, 9)) + "\n"
    assert mig.judge_dcgm(text, 3) == []
    assert mig.judge_dcgm(text, 7)[0].startswith("DCGM reports 3 MIG instances (GPU_I_ID/GPU_I_PROFILE), "
                                                 "nvidia-smi lists 7")
    assert mig.judge_dcgm(fixture_text("real-world/dcgm/8xh100-eks-sampled.txt"), 1)[0].startswith("DCGM reports 0")


def test_desired_profile_by_node_then_product_and_validation() -> None:
    profiles = {"gpu-x": "all-balanced", "NVIDIA H100 80GB HBM3": "all-1g.10gb"}
    assert mig.desired_profile(profiles, "gpu-x", "NVIDIA H100 80GB HBM3") == ("all-balanced",
                                                                              "setting mig_profiles[gpu-x]")
    assert mig.desired_profile(profiles, "gpu-y", "NVIDIA H100 80GB HBM3")[0] == "all-1g.10gb"
    assert mig.desired_profile(profiles, "gpu-y", "NVIDIA H200") is None
    assert validate({"mig_profiles": profiles}).mig_profiles == profiles
    with pytest.raises(SettingsError, match=r"mig_profiles\['gpu-x'\]='all 1g'.*mig-parted config name"):
        validate({"mig_profiles": {"gpu-x": "all 1g"}})
