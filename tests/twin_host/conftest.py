"""Host views of the default lab spec's nodes, seeded in a temporary folder (no Kubernetes needed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from lab.spec import NodeSpec, load
from lab.state import LabPaths
from lab.twin import hostview, seeding

B = "/var/lib/k8s-containerd/k8s-containerd"
SNAP_CONFIG = f"{B}/etc/containerd/config.toml"
SNAP_DROP_IN = f"{B}/etc/containerd/conf.d/99-nvidia.toml"
SNAP_SOCKET = f"{B}/run/containerd/containerd.sock"
# what the suite sets on k8s-snap: the snap's config, the drop-in beside it, the config read from that file
K8S_SNAP_ENV = {"CONTAINERD_CONFIG": SNAP_CONFIG, "RUNTIME_DROP_IN_CONFIG": SNAP_DROP_IN,
                "RUNTIME_CONFIG_SOURCE": "file", "CONTAINERD_SOCKET": SNAP_SOCKET}


@pytest.fixture
def spec_nodes() -> dict[str, NodeSpec]:
    return {n.name: n for n in load().nodes}


@pytest.fixture
def paths(tmp_path: Path) -> LabPaths:
    return LabPaths(root=tmp_path / "lab")


@pytest.fixture
def hosts(paths: LabPaths, spec_nodes: dict[str, NodeSpec]) -> dict[str, Path]:
    return {name: seeding.seed(paths, node) for name, node in spec_nodes.items()}


@pytest.fixture
def make_host(paths: LabPaths, spec_nodes: dict[str, NodeSpec]):
    """Seed a host view from the default spec's node ``base`` with some fields changed."""
    def make(name: str, base: str = "gpu-a", **changes: object) -> Path:
        if "k8s_snap_track" in changes:
            changes.setdefault("containerd_version", "")     # the track's containerd
        node = dataclasses.replace(spec_nodes[base], name=name, **changes)
        return seeding.seed(paths, node)
    return make


def hp(root: Path, path: str) -> Path:
    return hostview.host_path(root, path)
