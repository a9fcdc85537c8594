"""The twin's MIG pieces (lab/twin/mig.py) against the real recorded outputs they play: the MIG manager's
reading of the operator's mig-parted config, nvidia-smi -L in the real layout, GFD's MIG labels in single and
mixed, the device plugin's resources, DCGM's per-instance series; and the lab spec's `mig` key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lab import spec as lab_spec
from lab.spec import Fault
from lab.twin import mig
from lab.twin.dcgm_server import render
from lab.twin.gpus import gpus_for
from provision import mig as suite_mig
from provision.observe import dcgm
from provision.observe import mig as obs
from provision.observe.nvidia_smi import parse_mig_devices
from tests.unit.observe_fixtures import DATA, fixture_text

CONFIG = (DATA / "mig" / "default-mig-parted-config-excerpt.yaml").read_text()
UUID = re.compile(r"\(UUID: [^)]+\)")


def h100(name: str = "h100-a", **mig_key) -> lab_spec.NodeSpec:
    return lab_spec.NodeSpec(name=name, gpus=1, product="NVIDIA H100 80GB HBM3", memory_mib=81559,
                             mig={"strategy": "single", "profile": "all-1g.10gb", "capable": True, **mig_key})


def state_for(node: lab_spec.NodeSpec, profile: str) -> dict:
    return mig.partition(node, [g.uuid for g in gpus_for(node)], mig.layout(CONFIG, profile, node), profile)


def masked(text: str) -> list[str]:
    return [UUID.sub("(UUID: *)", line.rstrip("\r")) for line in text.splitlines()]


def test_all_1g10gb_lists_like_the_real_h100() -> None:
    node = h100()
    state = state_for(node, "all-1g.10gb")
    out = mig.list_lines(mig.with_mig_mode(gpus_for(node), state), state)
    real = fixture_text("real-world/nvidia-smi/h100-mig-all-1g10gb-L.txt")
    assert masked(out)[1:] == masked(real)[1:]   # the MIG lines byte for byte, but for the UUIDs
    assert masked(out)[0] == "GPU 0: NVIDIA H100 80GB HBM3 (UUID: *)"
    assert [d.profile for d in parse_mig_devices(out)] == ["1g.10gb"] * 7
    assert mig.with_mig_mode(gpus_for(node), state)[0].mig_mode == "Enabled"


def test_all_balanced_lists_like_the_real_h100_mixed() -> None:
    node = h100(strategy="mixed", profile="all-balanced")
    state = state_for(node, "all-balanced")
    out = mig.list_lines(gpus_for(node), state)
    assert masked(out)[1:] == masked(fixture_text("real-world/nvidia-smi/h100-mig-mixed-L.txt"))[1:]
    # the suite's judge agrees with the twin's MIG manager on the operator's config
    configs = obs.parse_mig_parted_config(CONFIG)
    assert suite_mig.judge_devices(out, configs, suite_mig.MigMode("all-balanced", "t", "mixed"))[0] == []


def test_a100_40gb_takes_its_own_entry_and_unknown_configs_fail() -> None:
    node = lab_spec.NodeSpec(name="a100", gpus=2, product="NVIDIA A100-SXM4-40GB", memory_mib=40960, mig={})
    assert mig.layout(CONFIG, "all-1g.10gb", node) == {0: {"1g.10gb": 4}, 1: {"1g.10gb": 4}}
    assert mig.layout(CONFIG, "all-disabled", node) == {0: None, 1: None}
    with pytest.raises(mig.MigError, match=r"config 'all-9g\.1gb' not found"):
        mig.layout(CONFIG, "all-9g.1gb", node)


def test_gfd_single_labels_are_the_real_success_labels() -> None:
    node = h100()
    state = state_for(node, "all-1g.10gb")
    labels = mig.gfd_labels(node, state, "single", {"nvidia.com/gpu": 1}, {"nvidia.com/mig.strategy": "single"}, {})
    real = json.loads("{" + fixture_text("real-world/k8s/h100-mig-single-1g10gb-labels-success-fragment.txt")
                      .strip() + "}")
    for key in ("nvidia.com/gpu.count", "nvidia.com/gpu.product", "nvidia.com/gpu.slices.ci",
                "nvidia.com/gpu.slices.gi", "nvidia.com/mig.capable", "nvidia.com/mig.strategy"):
        assert labels[key] == real[key], key
    shared = mig.gfd_labels(node, state, "single", {"nvidia.com/gpu": 4}, {}, {})
    assert shared["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3-MIG-1g.10gb-SHARED"
    assert shared["nvidia.com/gpu.replicas"] == "4"
    mixed_state = state_for(node, "all-balanced")
    invalid = mig.gfd_labels(node, mixed_state, "single", {"nvidia.com/gpu": 1}, {}, {})
    assert invalid["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3-MIG-INVALID"


def test_gfd_mixed_labels_are_the_real_mixed_labels() -> None:
    node = h100(strategy="mixed", profile="all-balanced")
    real = json.loads(fixture_text("real-world/k8s/h100-mig-mixed-node-labels.json"))
    labels = mig.gfd_labels(node, state_for(node, "all-balanced"), "mixed", {"nvidia.com/gpu": 1},
                            {"nvidia.com/mig.strategy": "mixed"}, {})
    wanted = {k: v for k, v in real.items() if k.startswith("nvidia.com/mig-") or k in (
        "nvidia.com/gpu.count", "nvidia.com/gpu.replicas", "nvidia.com/gpu.product", "nvidia.com/mig.capable",
        "nvidia.com/gpu.sharing-strategy", "nvidia.com/mig.strategy")}
    assert {k: labels.get(k) for k in wanted} == wanted
    # back to all-disabled: the mixed labels go
    back = mig.gfd_labels(node, {"config": "all-disabled", "gpus": {}}, "mixed", {}, {}, real)
    assert back["nvidia.com/mig-1g.10gb.count"] is None and back["nvidia.com/mig-3g.40gb.product"] is None


def test_device_plugin_resources_per_strategy() -> None:
    node = h100()
    single = state_for(node, "all-1g.10gb")
    assert mig.advertised(1, single, "single", {"nvidia.com/gpu": 4}) == {"nvidia.com/gpu": 28}
    assert mig.advertised(1, {}, "single", {"nvidia.com/gpu": 4}) == {"nvidia.com/gpu": 4}
    balanced = state_for(node, "all-balanced")
    assert mig.advertised(1, balanced, "single", {"nvidia.com/gpu": 1}) == {"nvidia.com/gpu": 0}
    assert mig.advertised(1, balanced, "mixed", {"nvidia.com/gpu": 4, "nvidia.com/mig-1g.10gb": 4}) == {
        "nvidia.com/gpu": 0, "nvidia.com/mig-1g.10gb": 8, "nvidia.com/mig-2g.20gb": 1, "nvidia.com/mig-3g.40gb": 1}


def test_dcgm_series_per_instance_parse_and_satisfy_the_suite() -> None:
    node = h100()
    state = state_for(node, "all-1g.10gb")
    text = render(node, gpus_for(node), state)
    scrape = dcgm.parse_metrics(text)
    assert len(next(iter(scrape.gpus.values())).mig_instances) == 7
    assert suite_mig.judge_dcgm(text, 7) == []
    assert "GPU_I_ID" not in render(node, gpus_for(node))


def test_spec_mig_key_is_validated(tmp_path: Path) -> None:
    def node(**extra) -> dict:
        return {"nodes": [{"name": "m", "gpus": 1, **extra}]}

    ok = lab_spec.parse(node(mig={"profile": "all-1g.10gb"}), tmp_path / "s.yaml")
    assert ok.nodes[0].mig == {"strategy": "single", "profile": "all-1g.10gb", "capable": True}
    for bad, message in (({"strategy": "both"}, "mig.strategy must be one of"),
                         ({"profile": "all 1g"}, "mig.profile must be a mig-parted config name"),
                         ({"capable": "yes"}, "mig.capable must be true or false"),
                         ({"gpus": 7}, r"unknown mig keys \['gpus'\]")):
        with pytest.raises(lab_spec.SpecError, match=message):
            lab_spec.parse(node(mig=bad), tmp_path / "s.yaml")
    with pytest.raises(lab_spec.SpecError, match="fault mig-state-failed needs a MIG node"):
        lab_spec.parse(node(faults=[Fault.MIG_STATE_FAILED]), tmp_path / "s.yaml")
