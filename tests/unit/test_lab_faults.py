"""Fault names come from one enum (lab/spec.py Fault); a spec naming another fault is refused naming the known ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lab.spec import FAULTS, Fault, NodeSpec, SpecError, parse


def _doc(faults: object) -> dict:
    return {"nodes": [{"name": "gpu-a", "gpus": 1, "faults": faults}]}


def test_spec_faults_become_fault_members(tmp_path: Path) -> None:
    spec = parse(_doc(["gpu-missing", "xid-79"]), tmp_path / "s.yaml")
    assert spec.nodes[0].faults == (Fault.GPU_MISSING, Fault.XID_79)
    assert all(type(f) is Fault for f in spec.nodes[0].faults)


def test_unknown_fault_is_refused_naming_every_known_one(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as err:
        parse(_doc(["gpu-missing", "gpu-on-fire"]), tmp_path / "s.yaml")
    message = str(err.value)
    assert "nodes[0] (gpu-a): unknown faults ['gpu-on-fire']" in message
    assert all(f.value in message for f in Fault)


def test_faults_must_be_a_list(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"faults must be a list of fault names such as \[gpu-missing\], got 'gpu-missing'"):
        parse(_doc("gpu-missing"), tmp_path / "s.yaml")


def test_node_spec_built_in_code_checks_its_faults_too() -> None:
    assert NodeSpec(name="gpu-a", gpus=1, faults=("dcgm-down",)).faults == (Fault.DCGM_DOWN,)
    with pytest.raises(SpecError, match="node gpu-b: unknown faults \\['dcgm-gone'\\]; known faults: gpu-missing, "):
        NodeSpec(name="gpu-b", gpus=1, faults=("dcgm-gone",))


def test_fault_members_dump_as_plain_yaml_strings(tmp_path: Path) -> None:
    text = yaml.safe_dump(_doc([Fault.DRIVER_BROKEN]))
    assert "- driver-broken" in text
    assert parse(yaml.safe_load(text), tmp_path / "s.yaml").nodes[0].faults == (Fault.DRIVER_BROKEN,)
    assert tuple(Fault) == FAULTS
