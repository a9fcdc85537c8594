"""Rules the twin takes from the real operands' source (GFD's family, the validator's plugin step)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lab.twin.operands import gfd, validator


@pytest.mark.parametrize(("cc", "family"), [("7.0", "volta"), ("7.5", "turing"), ("8.0", "ampere"), ("8.6", "ampere"),
                                            ("8.9", "ada-lovelace"), ("9.0", "hopper"), ("10.0", "blackwell"),
                                            ("12.1", "blackwell"), ("11.0", "undefined")])
def test_gfd_family_is_from_the_compute_capability(cc: str, family: str) -> None:
    assert gfd.arch_family(cc) == family


def _twin(capacity: dict[str, str]) -> SimpleNamespace:
    nodes = {"/n1": {"metadata": {"name": "n1"}, "status": {"capacity": capacity, "allocatable": {}}}}
    return SimpleNamespace(informers={"nodes": nodes})


@pytest.mark.parametrize(("capacity", "found"), [
    ({"nvidia.com/gpu": "8"}, True),
    ({"nvidia.com/gpu": "0", "nvidia.com/gpu.shared": "32"}, True),   # renamed sharing passes, as in the real one
    ({"nvidia.com/mig-1g.10gb": "7"}, True),
    ({"nvidia.com/gpu": "0"}, False),
    ({"cpu": "64"}, False),
])
def test_validator_plugin_step_reads_capacity_by_prefix(capacity: dict[str, str], found: bool) -> None:
    assert validator.gpu_resource_discovered(_twin(capacity), "n1") is found   # type: ignore[arg-type]
