"""Distributions other than k8s-snap, with the real programs: one lab with a kubeadm GPU node (distribution
containerd at /etc/containerd, its `containerd config default` as the root config) and a k3s GPU node (k3s's
rendered config.toml under /var/lib/rancher/k3s, its socket and binary path; kubeletVersion +k3s1 and k3s's labels
on the node object). The audit judges each node with its own distribution's containerd; --provision refuses the
mix and k3s (naming what to change by hand) and provisions the kubeadm node, which the audit then passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.suite.runner import run_suite, suite_writes

pytestmark = [pytest.mark.lab, pytest.mark.slow]

RUNTIMES = "containerd's effective configuration has runc as default and nvidia"
K3S_ROOT = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml"


@pytest.fixture(scope="module")
def dist_lab(module_lab_factory):
    return module_lab_factory({"nodes": [
        {"name": "cp-1", "control_plane": True},
        {"name": "kube-a", "gpus": 1, "distribution": "kubeadm"},
        {"name": "k3s-a", "gpus": 1, "distribution": "k3s"},
    ]}, "distributions")


def _converger(run, name: str) -> dict:
    return next(c for c in run.summary["convergers"] if c["name"] == name)


def test_the_audit_judges_each_node_by_its_distribution(dist_lab, tmp_path):
    run = run_suite(dist_lab, tmp_path, "--no-workload")
    assert run.summary, run.output[-3000:]
    nodes = run.summary["nodes"]
    assert nodes["kube-a"]["distribution"] == "kubeadm", nodes
    assert nodes["k3s-a"]["distribution"] == "k3s", nodes
    assert "+k3s1" in nodes["k3s-a"]["distribution_evidence"], nodes   # from the node object, not the host
    for node in ("kube-a", "k3s-a"):
        (res,) = [r for r in run.results(node) if r["scenario"] == RUNTIMES]
        # no toolkit yet: runc only, and the answer comes from the node's own containerd at its distribution's path
        assert res["outcome"] == "failed", res
        assert "asked: the node's containerd" in res["message"] and "runc" in res["message"], res["message"]
    assert suite_writes(dist_lab, run) == []


def test_provision_refuses_a_mix_of_distributions(dist_lab, tmp_path):
    run = run_suite(dist_lab, tmp_path, "--provision", "--no-workload")
    assert run.rc != 0, run.output[-2000:]
    error = _converger(run, "distribution")["error"] or ""
    assert "k3s: k3s-a" in error and "kubeadm: kube-a" in error, error
    assert suite_writes(dist_lab, run) == []   # refused before any change


def test_provision_refuses_k3s_and_names_what_to_change_by_hand(dist_lab, tmp_path):
    run = run_suite(dist_lab, tmp_path, "--provision", "--no-workload", "--gpu-nodes", "k3s-a")
    assert run.rc != 0, run.output[-2000:]
    error = _converger(run, "distribution")["error"] or ""
    for part in ("k3s-a", "/var/lib/rancher/k3s/agent/etc/containerd/config.toml.tmpl", K3S_ROOT,
                 "CONTAINERD_SOCKET=/run/k3s/containerd/containerd.sock", '{{ template "base" . }}'):
        assert part in error, (part, error)
    assert suite_writes(dist_lab, run) == []


def test_provision_of_the_kubeadm_node_then_the_audit_passes(dist_lab, tmp_path):
    # The toolkit's settings are cluster-wide: with kubeadm's values the k3s node's toolkit writes where k3s does not
    # read and the ClusterPolicy never gets ready (seen in this lab before the gate refused it): refused, naming it
    refused = run_suite(dist_lab, tmp_path / "r", "--provision", "--no-workload", "--gpu-nodes", "kube-a")
    error = _converger(refused, "distribution")["error"] or ""
    assert refused.rc != 0 and "k3s-a (k3s)" in error and "nvidia.com/gpu.deploy.operands=false" in error, error
    assert suite_writes(dist_lab, refused) == []
    # an admin keeps the operator off that node:
    dist_lab.core.patch_node("k3s-a", {"metadata": {"labels": {"nvidia.com/gpu.deploy.operands": "false"}}})
    run = run_suite(dist_lab, tmp_path / "p", "--provision", "--no-workload", "--gpu-nodes", "kube-a")
    assert run.rc == 0, run.output[-4000:]
    root = Path(dist_lab.host_root("kube-a"))
    assert (root / "etc/containerd/conf.d/99-nvidia.toml").exists()
    assert "/etc/containerd/conf.d/*.toml" in (root / "etc/containerd/config.toml").read_text()
    audit = run_suite(dist_lab, tmp_path / "a", "--no-workload", "--gpu-nodes", "kube-a")
    bad = [(r["scenario"], r["outcome"], r["message"][:300]) for r in audit.results()
           if r["outcome"] not in ("passed", "skipped")]
    assert audit.rc == 0 and not bad, bad or audit.output[-3000:]
    assert audit.summary["nodes"]["kube-a"]["distribution"] == "kubeadm"
