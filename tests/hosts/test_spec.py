"""HostSpec validation, testinfra URLs, and the node -> host mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import testinfra.backend
from testinfra.backend.base import BaseBackend

from provision.hosts.safety import UnsafeHostAddress, UnsafeNodeName, UnsafePath, UnsafeUserName
from provision.hosts.spec import HostMappingError, HostSpec, load_host_map, map_node


def _parsed(url: str) -> tuple[Any, dict[str, Any]]:
    host, kw = testinfra.backend.parse_hostspec(url)
    return BaseBackend.parse_hostspec(host) if host else None, kw


def test_defaults_per_backend(tmp_path: Path) -> None:
    assert (HostSpec(backend="local").root, HostSpec(backend="local").exec_mode) == ("/", "direct")
    pod = HostSpec(backend="pod", address="gpu-1")
    assert (pod.root, pod.exec_mode) == ("/host", "chroot")
    lab = HostSpec(backend="lab", address="gpu-1", root=f"{tmp_path}/gpu-1/")
    assert (lab.root, lab.exec_mode) == (f"{tmp_path}/gpu-1", "path")


def test_local_and_lab_urls(tmp_path: Path) -> None:
    assert HostSpec(backend="local").testinfra_url() == "local://"
    assert HostSpec(backend="local", sudo=True, sudo_user="gpu").testinfra_url() == "local://?sudo=true&sudo_user=gpu"
    assert HostSpec(backend="local", sudo=True).testinfra_url(include_sudo=False) == "local://"
    assert HostSpec(backend="lab", root=str(tmp_path)).testinfra_url() == "local://"


def test_ssh_url_round_trips_through_testinfra() -> None:
    spec = HostSpec(
        backend="ssh",
        address="gpu-1.lab",
        user="ubuntu",
        port=2222,
        ssh_config="/tmp/my dir/ssh config&x=1",
        ssh_identity_file="/keys/id+ed25519#1",
        sudo=True,
    )
    url = spec.testinfra_url()
    assert url.startswith("ssh://ubuntu@gpu-1.lab:2222?")
    host, kw = _parsed(url)
    assert (host.name, host.user, host.port) == ("gpu-1.lab", "ubuntu", "2222")
    assert kw["ssh_config"] == "/tmp/my dir/ssh config&x=1"
    assert kw["ssh_identity_file"] == "/keys/id+ed25519#1"
    assert kw["sudo"] is True and kw["timeout"] == "10" and kw["connection"] == "ssh"


def test_paramiko_ipv6_url() -> None:
    url = HostSpec(backend="paramiko", address="fd00::12", port=22, user="root").testinfra_url()
    assert url == "paramiko://root@[fd00::12]:22?timeout=10"
    host, _ = _parsed(url)
    assert (host.name, host.port, host.user) == ("fd00::12", "22", "root")


def test_ansible_url() -> None:
    spec = HostSpec(backend="ansible", address="gpu-1", ansible_inventory="/inv/hosts file.ini")
    assert spec.testinfra_url() == "ansible://gpu-1?ansible_inventory=/inv/hosts%20file.ini"
    _, kw = _parsed(spec.testinfra_url())
    assert kw == {"connection": "ansible", "ansible_inventory": "/inv/hosts file.ini"}


def test_pod_has_no_testinfra_url() -> None:
    with pytest.raises(ValueError, match="no testinfra URL"):
        HostSpec(backend="pod", address="gpu-1").testinfra_url()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"backend": "telnet"}, ValueError, "not one of"),
        ({"backend": "ssh"}, ValueError, "needs an address"),
        ({"backend": "ssh", "address": "-oProxyCommand=x"}, UnsafeHostAddress, "option"),
        ({"backend": "ssh", "address": "h;id"}, UnsafeHostAddress, "metacharacters"),
        ({"backend": "ssh", "address": "h", "user": "ro ot"}, UnsafeUserName, "ssh user"),
        ({"backend": "ssh", "address": "h", "user": "a@b"}, UnsafeUserName, "ssh user"),
        ({"backend": "ssh", "address": "h", "port": 0}, ValueError, "1..65535"),
        ({"backend": "ssh", "address": "h", "port": "22"}, ValueError, "1..65535"),
        ({"backend": "ssh", "address": "h", "ssh_config": "/a\nb"}, ValueError, "newline"),
        ({"backend": "ssh", "address": "h", "sudo_user": "root"}, ValueError, "sudo is not"),
        ({"backend": "ssh", "address": "h", "ansible_inventory": "/i"}, ValueError, "only used by the ansible"),
        ({"backend": "local", "user": "root"}, ValueError, "only used by the ssh"),
        ({"backend": "local", "root": "relative"}, UnsafePath, "not absolute"),
        ({"backend": "local", "root": "/a/../b"}, UnsafePath, "'..'"),
        ({"backend": "local", "exec_mode": "chroot"}, ValueError, "root other than"),
        ({"backend": "local", "exec_mode": "magic"}, ValueError, "not one of"),
        ({"backend": "lab"}, ValueError, "root="),
        ({"backend": "lab", "root": "/x:y"}, ValueError, "without ':'"),
        ({"backend": "pod", "address": "Gpu-1"}, UnsafeNodeName, "uppercase"),
        ({"backend": "pod", "address": "gpu-1", "exec_mode": "direct"}, ValueError, "chroot"),
        ({"backend": "pod", "address": "gpu-1", "pod_namespace": "a.b"}, ValueError, "DNS-1123 label"),
        ({"backend": "pod", "address": "gpu-1", "pod_image": "busybox latest"}, ValueError, "whitespace"),
        ({"backend": "local", "connect_timeout": 0}, ValueError, "1..600"),
    ],
)
def test_invalid_specs(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        HostSpec(**kwargs)


def test_map_node_modes() -> None:
    assert map_node("gpu-1", "10.0.0.5", "name", None) == "gpu-1"
    assert map_node("gpu-1", "10.0.0.5", "internal-ip", None) == "10.0.0.5"
    assert map_node("gpu-1", "fd00::5", "internal-ip", None) == "fd00::5"
    assert map_node("gpu-1", None, "map", {"gpu-1": "spark-1.lab"}) == "spark-1.lab"
    with pytest.raises(HostMappingError, match=r"'gpu-2' is not in the host map \(known nodes: gpu-1\)"):
        map_node("gpu-2", None, "map", {"gpu-1": "spark-1.lab"})
    with pytest.raises(HostMappingError, match="no InternalIP"):
        map_node("gpu-1", None, "internal-ip", None)
    with pytest.raises(HostMappingError, match="not an IP"):
        map_node("gpu-1", "10.0.0.5; id", "internal-ip", None)
    with pytest.raises(UnsafeHostAddress):
        map_node("gpu-1", None, "map", {"gpu-1": "spark-1 ; id"})
    with pytest.raises(HostMappingError, match="mode 'dns'"):
        map_node("gpu-1", None, "dns", None)
    with pytest.raises(UnsafeNodeName):
        map_node("gpu-a;rm -rf /", "10.0.0.5", "internal-ip", None)


def test_load_host_map(tmp_path: Path) -> None:
    y = tmp_path / "hosts.yaml"
    y.write_text("gpu-1: 10.0.0.5\nspark-1: spark-1.lab\n")
    assert load_host_map(y) == {"gpu-1": "10.0.0.5", "spark-1": "spark-1.lab"}
    t = tmp_path / "hosts.toml"
    t.write_text('[hosts]\n"gpu-1" = "10.0.0.5"\n')
    assert load_host_map(t) == {"gpu-1": "10.0.0.5"}
    bad = tmp_path / "bad.toml"
    bad.write_text("[hosts\n")
    with pytest.raises(HostMappingError, match=r"bad\.toml does not parse"):
        load_host_map(bad)
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("'gpu-1;id': 10.0.0.5\n")
    with pytest.raises(HostMappingError, match="metacharacters"):
        load_host_map(unsafe)
