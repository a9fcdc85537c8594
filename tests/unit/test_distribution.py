"""Distribution detection from node objects (real ones from ../shared/fixtures/real-world/k8s and the shapes each
distribution's agent writes) and host files, and the containerd layout and toolkit values per distribution."""

from __future__ import annotations

import json

import pytest
import yaml

from provision.observe import distribution as dist
from tests.unit.observe_fixtures import FIXTURES

REAL_K8S = FIXTURES / "real-world" / "k8s"


def _node(kubelet: str = "v1.34.4", runtime: str = "containerd://1.7.35", labels=None, annotations=None) -> dict:
    return {"metadata": {"name": "n", "labels": labels or {}, "annotations": annotations or {}},
            "status": {"nodeInfo": {"kubeletVersion": kubelet, "containerRuntimeVersion": runtime}}}


@pytest.mark.parametrize(("node", "want"), [
    (_node("v1.31.4+k3s1", "containerd://1.7.23-k3s2"), "k3s"),
    (_node("v1.31.4+rke2r1", "containerd://1.7.23-k3s2"), "rke2"),
    (_node(labels={"node.kubernetes.io/instance-type": "k3s"}), "k3s"),
    (_node(annotations={"rke2.io/hostname": "n"}), "rke2"),
    (_node(annotations={"k3s.io/node-args": "[]"}), "k3s"),
    (_node(labels={"microk8s.io/cluster": "true"}), "microk8s"),
    (_node(labels={"k8sd.io/role": "worker"}), "k8s-snap"),
    (_node(annotations={"kubeadm.alpha.kubernetes.io/cri-socket": "unix:///run/containerd/containerd.sock"}),
     "kubeadm"),
    (_node(), None),
])
def test_detect_node(node, want):
    assert dist.detect_node(node).name == want


@pytest.mark.parametrize("name", sorted(p.name for p in REAL_K8S.glob("*.yaml")))
def test_real_openshift_nodes_are_no_distribution_the_suite_knows(name):
    # the real DGX A100 node objects (Python client to_dict(): snake_case) run CRI-O on OpenShift
    node = yaml.safe_load((REAL_K8S / name).read_text())
    found = dist.detect_node(node)
    assert found.name is None
    assert "cri-o://1.22.0" in found.evidence


@pytest.mark.parametrize("name", sorted(p.name for p in REAL_K8S.glob("*-node-labels.json")))
def test_real_label_sets_name_no_distribution(name):
    # real H100 node labels (NFD, GFD, node-role) alone do not say which distribution: the host's files decide
    labels = json.loads((REAL_K8S / name).read_text())
    assert dist.detect_node({"metadata": {"labels": labels}}).name is None


def test_detect_host_prefers_k8s_snap_over_dockers_containerd():
    files = {dist.K8S_SNAP_LOCK, "/etc/containerd/config.toml", "/usr/bin/containerd"}
    assert dist.detect_host(files.__contains__).name == "k8s-snap"
    assert dist.detect_host({"/etc/containerd/config.toml"}.__contains__).name == "kubeadm"
    assert dist.detect_host({"/var/lib/rancher/rke2/agent/etc/containerd"}.__contains__).name == "rke2"
    assert dist.detect_host(set().__contains__).name is None


def test_layouts():
    k3s = dist.layout("k3s")
    assert k3s.root_config == "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"
    assert k3s.template == "/var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl"
    assert dist.layout("k3s", containerd_major=2).template.endswith("/config-v3.toml.tmpl")
    assert k3s.socket == dist.layout("rke2").socket == "/run/k3s/containerd/containerd.sock"
    mk = dist.layout("microk8s")
    assert mk.template == "/var/snap/microk8s/current/args/containerd-template.toml"
    assert mk.socket == "/var/snap/microk8s/common/run/containerd.sock"
    snap = dist.layout("k8s-snap", "/data")
    assert snap.root_config == "/data/k8s-containerd/etc/containerd/config.toml"
    with pytest.raises(ValueError, match="unknown distribution"):
        dist.layout("k0s")


def test_toolkit_values_per_distribution():
    def env(name: str) -> dict[str, str]:
        return {e["name"]: e["value"] for e in dist.toolkit_env(dist.layout(name))}

    assert env("kubeadm") == {"CONTAINERD_CONFIG": "/etc/containerd/config.toml",
                              "CONTAINERD_SOCKET": "/run/containerd/containerd.sock",
                              "RUNTIME_DROP_IN_CONFIG": "/etc/containerd/conf.d/99-nvidia.toml",
                              "RUNTIME_CONFIG_SOURCE": "file", "RUNTIME_RESTART_MODE": "none"}
    snap = env("k8s-snap")
    assert snap["CONTAINERD_CONFIG"] == "/var/lib/k8s-containerd/k8s-containerd/etc/containerd/config.toml"
    rke2 = env("rke2")
    assert rke2["CONTAINERD_CONFIG"] == "/var/lib/rancher/rke2/agent/etc/containerd/config.toml.tmpl"
    assert rke2["CONTAINERD_SOCKET"] == "/run/k3s/containerd/containerd.sock"
    assert env("microk8s")["CONTAINERD_CONFIG"].endswith("/args/containerd-template.toml")


def test_manual_steps_and_mixed_message():
    text = dist.manual_steps(dist.layout("rke2"), ["b", "a"])
    assert "rke2 nodes (a, b)" in text and "config.toml.tmpl" in text and "systemctl restart rke2-server" in text
    assert dist.mixed_message({"a": "k3s", "b": "k3s"}) is None
    msg = dist.mixed_message({"a": "k3s", "b": "kubeadm", "c": "kubeadm"})
    assert msg is not None and "k3s: a; kubeadm: b, c" in msg


def test_lab_spec_distribution_is_validated(tmp_path):
    from lab.spec import SpecError, parse

    spec = parse({"nodes": [{"name": "a", "gpus": 1, "distribution": "k3s"}, {"name": "b"}]}, tmp_path / "s.yaml")
    assert [n.distribution for n in spec.nodes] == ["k3s", "k8s-snap"]
    with pytest.raises(SpecError, match="distribution must be one of"):
        parse({"nodes": [{"name": "a", "distribution": "k0s"}]}, tmp_path / "s.yaml")
