"""Host views of kubeadm, k3s, RKE2 and MicroK8s nodes with the real programs (no Kubernetes): containerd (the
judge) starts on each distribution's own root config, the suite asks that distribution's containerd binary, and the
real toolkit's containerd setup with each distribution's values (docs/distributions.md)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lab.spec import NodeSpec
from lab.twin import containerd, hostcmd, seeding, toolkit
from provision import checks
from provision.distribution import layout_for
from provision.hostfacts import containerd_dump, containerd_facts
from provision.hosts.access import HostAccess
from provision.hosts.guard import WriteGuard
from provision.hosts.spec import HostSpec
from provision.observe import distribution as dist

ROOTS = {"kubeadm": "/etc/containerd/config.toml",
         "k3s": "/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
         "rke2": "/var/lib/rancher/rke2/agent/etc/containerd/config.toml",
         "microk8s": "/var/snap/microk8s/current/args/containerd.toml"}


def _seed(paths, distribution: str):
    root = seeding.seed(paths, NodeSpec(name=f"n-{distribution}", gpus=1, distribution=distribution))
    return root, HostAccess(HostSpec(backend="lab", root=str(root)), name=f"n-{distribution}", guard=WriteGuard())


@pytest.mark.parametrize("distribution", sorted(ROOTS))
def test_containerd_starts_on_the_distributions_own_config_and_the_suite_asks_it(paths, distribution):
    root, host = _seed(paths, distribution)
    st = containerd.state(root)
    assert st["running"] and st["config"] == ROOTS[distribution], st
    assert "runc" in st["runtimes"]
    lay = layout_for(host)
    assert lay is not None and lay.distribution == distribution
    facts = containerd_facts(host, lay)
    assert facts.error is None and facts.root_path == ROOTS[distribution]
    dump = containerd_dump(host, facts)
    assert dump.ran and dump.argv[-5:] == (lay.binary, "--config", ROOTS[distribution], "config", "dump"), dump.argv
    finding = checks.containerd_runtimes(SimpleNamespace(host=lambda node: host), host.name)
    assert not finding.ok and "asked: the node's containerd" in finding.message   # no nvidia runtime yet


def test_microk8s_declares_nvidia_container_runtime_not_nvidia(paths):
    root, _ = _seed(paths, "microk8s")
    # the snap's template declares `nvidia-container-runtime` (and kata); the GPU Operator's handler is `nvidia`
    assert {"kata", "nvidia-container-runtime", "runc"} <= set(containerd.state(root)["runtimes"])


def test_kubeadm_with_the_suites_values_gets_runc_and_nvidia(paths):
    root, host = _seed(paths, "kubeadm")
    env = {e["name"]: e["value"] for e in dist.toolkit_env(dist.layout("kubeadm"))}
    written = toolkit.toolkit_install(root, env, True)
    assert set(written) == {"/etc/containerd/conf.d/99-nvidia.toml", "/etc/containerd/config.toml"}
    # containerd 1.7's default config imports nothing: the real toolkit adds the import to the root config
    assert '"/etc/containerd/conf.d/*.toml"' in (root / "etc/containerd/config.toml").read_text()
    rc, _, err = hostcmd.systemctl_run(root, ["restart", "containerd"])
    assert rc == 0, err
    assert {"runc", "nvidia"} <= set(containerd.state(root)["runtimes"])
    finding = checks.containerd_runtimes(SimpleNamespace(host=lambda node: host), host.name)
    assert finding.ok, finding.message


def test_k3s_template_written_by_the_toolkit_drops_k3s_s_own_config(paths):
    """Why --provision stops on k3s: the toolkit writes a plain TOML template (no `{{ template "base" . }}`), from
    which k3s would render containerd's whole config."""
    root, _ = _seed(paths, "k3s")
    lay = dist.layout("k3s")
    env = {e["name"]: e["value"] for e in dist.toolkit_env(lay)}
    written = toolkit.toolkit_install(root, env, True)
    assert lay.template in written
    text = (root / lay.template.lstrip("/")).read_text()
    assert f'imports = ["{lay.conf_d}/*.toml"]' in text
    assert "{{" not in text and "io.containerd.grpc.v1.cri" not in text and "io.containerd.internal.v1.opt" not in text
