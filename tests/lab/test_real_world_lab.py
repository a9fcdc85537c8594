"""Issue 14 on a lab node's real host view: a drop-in the container toolkit wrote where containerd does not
look (nvidia-ctk 1.18.0's /etc/containerd/config.d/, NVIDIA/nvidia-container-toolkit#1404) is named by the
drop-ins check, with the folder containerd really imports (read from the node's own config.toml)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from provision import checks
from provision.hosts.access import HostAccess
from provision.hosts.spec import HostSpec
from tests.conftest import Lab
from tests.unit.observe_fixtures import fixture_text

pytestmark = [pytest.mark.lab]


def test_a_dropin_in_config_d_is_named_with_the_imported_folder(lab: Lab) -> None:
    node = "gpu-a"
    stray = lab.host_root(node) / "etc/containerd/config.d/99-nvidia.toml"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_text(fixture_text("real-world/containerd/99-nvidia-v2-toolkit-test-expected.toml"))
    try:
        host = HostAccess(HostSpec(backend="lab", root=str(lab.host_root(node))), name=node)
        ctx = SimpleNamespace(host=lambda name: host,
                              kube=SimpleNamespace(snapshot=lambda: SimpleNamespace(cluster_policy=None)))
        finding = checks.containerd_dropins(ctx, node)
    finally:
        stray.unlink()
    conf_d = "/var/lib/k8s-containerd/k8s-containerd/etc/containerd/conf.d"
    assert not finding.ok, finding.message
    assert (f"99-nvidia.toml is at /etc/containerd/config.d/99-nvidia.toml, not in an imported directory "
            f"(containerd imports {conf_d}/*.toml)") in finding.message
    assert f"Fix: move the file(s) named into {conf_d}/" in finding.message
