"""lab/build_node.py's version choices and lab/spec.py's k8s_snap_track (no build runs here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import build_node
from lab.build import BuildError
from lab.spec import NodeSpec, SpecError, parse


def test_tracks_pick_their_containerd() -> None:
    assert NodeSpec(name="a").containerd_version == "1.7.35"
    assert NodeSpec(name="a", k8s_snap_track="1.35").containerd_version == "2.1.9"
    assert NodeSpec(name="a", k8s_snap_track="1.36").containerd_version == "2.3.7"
    spec = parse({"nodes": [{"name": "a", "k8s_snap_track": 1.36}]}, Path("/x.yaml"))
    assert spec.nodes[0].containerd_version == "2.3.7" and spec.nodes[0].k8s_snap_track == "1.36"
    with pytest.raises(SpecError, match=r"k8s_snap_track '1\.20' is not one the lab builds containerd for"):
        NodeSpec(name="a", k8s_snap_track="1.20")


def test_builds_for_versions_and_tags() -> None:
    assert build_node.containerd_build_for("1.7.28") == "v1.7.35"       # same minor, newest served
    assert build_node.containerd_build_for("v2.3.7") == "v2.3.7"
    with pytest.raises(BuildError, match=r"no lab build of containerd for '1\.6\.9'"):
        build_node.containerd_build_for("1.6.9")
    assert build_node.toolkit_version_for("v1.19.0") == "v1.19.0"
    assert build_node.toolkit_version_for("v1.20.0-ubuntu20.04") == "v1.20.0"
    assert build_node.toolkit_version_for(None) == "v1.19.0"
    with pytest.raises(BuildError, match="TOOLKIT_FOR_TAG"):
        build_node.toolkit_version_for("v1.17.8")
