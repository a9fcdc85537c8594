"""Ansible inventories: loading them, and the ansible backend against the loopback sshd."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from provision.hosts.access import HostAccess
from provision.hosts.inventory import InventoryError, InventoryHost, load_inventory
from provision.hosts.results import HostUnreachable
from provision.hosts.spec import HostMappingError, HostSpec

from .conftest import SshLab


def _connection_vars(lab: SshLab, server_name: str, known_hosts: Path | None = None) -> dict[str, Any]:
    server = lab.servers[server_name]
    known = known_hosts or lab.known_hosts(server)
    return {
        "ansible_host": "127.0.0.1",
        "ansible_port": server.port,
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(lab.client_key),
        "ansible_ssh_common_args": (
            f"-o UserKnownHostsFile={known} -o GlobalKnownHostsFile=/dev/null "
            "-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o BatchMode=yes"
        ),
    }


@pytest.fixture
def inventory(ssh_lab: SshLab, tmp_path: Path) -> Path:
    data = {
        "all": {
            "vars": {"cluster": "lab"},
            "children": {
                "baremetal_gpus": {
                    "vars": {"arch": "amd64"},
                    "hosts": {
                        "gpu-a": {**_connection_vars(ssh_lab, "node-a"), "gpu_count": 8, "gpu_model": "NVIDIA H200"},
                        "gpu-b": {
                            **_connection_vars(ssh_lab, "node-b"),
                            "gpu_count": 4,
                            "gpu_model": "NVIDIA GH200",
                            "arch": "arm64",
                        },
                        "gpu-badkey": {
                            **_connection_vars(ssh_lab, "node-a", ssh_lab.wrong_known_hosts(ssh_lab.servers["node-a"])),
                            "gpu_count": 1,
                        },
                    },
                },
                "k8s_control_plane": {"hosts": {"cp-1": _connection_vars(ssh_lab, "node-b")}},
                "k8s_workers": {"hosts": {"gpu-a": None, "gpu-b": None}},
            },
        }
    }
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_ansible_backend_runs_a_command(inventory: Path) -> None:
    spec = HostSpec(backend="ansible", address="gpu-a", ansible_inventory=str(inventory))
    assert spec.testinfra_url() == f"ansible://gpu-a?ansible_inventory={inventory}"
    with HostAccess(spec, name="gpu-a") as host:
        result = host.run(["printf", "%s|", "a b", "$(id)", ";"], check=True)
        assert result.stdout == "a b|$(id)|;|"
        assert host.read_text("/etc/hostname") is not None


def test_ansible_backend_unreachable_and_unknown_host(inventory: Path) -> None:
    with (
        HostAccess(HostSpec(backend="ansible", address="gpu-badkey", ansible_inventory=str(inventory))) as host,
        pytest.raises(HostUnreachable, match="Host key verification failed"),
    ):
        host.run(["true"])
    with pytest.raises(HostMappingError, match="'gpu-zzz' is not in the ansible inventory"):
        HostAccess(HostSpec(backend="ansible", address="gpu-zzz", ansible_inventory=str(inventory)))


@pytest.mark.parametrize("use_ansible", [None, False], ids=["ansible", "pyyaml"])
def test_load_yaml_inventory(inventory: Path, use_ansible: bool | None) -> None:
    hosts = {h.name: h for h in load_inventory(inventory, use_ansible=use_ansible)}
    assert sorted(hosts) == ["cp-1", "gpu-a", "gpu-b", "gpu-badkey"]
    a = hosts["gpu-a"]
    assert isinstance(a, InventoryHost)
    assert a.groups == ("baremetal_gpus", "k8s_workers")
    assert (a.gpu_count, a.gpu_model, a.arch, a.ansible_host) == (8, "NVIDIA H200", "amd64", "127.0.0.1")
    assert a.vars["cluster"] == "lab" and type(a.vars["ansible_port"]) is int
    assert type(a.gpu_model) is str
    b = hosts["gpu-b"]
    assert (b.gpu_count, b.arch) == (4, "arm64")  # host var wins over group var
    cp = hosts["cp-1"]
    assert cp.groups == ("k8s_control_plane",) and cp.gpu_count is None and cp.arch is None


def test_load_ini_inventory(tmp_path: Path) -> None:
    path = tmp_path / "hosts.ini"
    path.write_text(
        "[baremetal_gpus]\n"
        'spark-1 ansible_host=10.0.0.5 gpu_count=1 gpu_model="NVIDIA GB10" arch=arm64\n'
        "gpu-2 ansible_host=10.0.0.6 gpu_count=8\n"
        "[baremetal_gpus:vars]\narch=amd64\n"
        "[k8s_control_plane]\ncp-1 ansible_host=10.0.0.1\n"
        "[k8s_workers]\nspark-1\ngpu-2\n"
    )
    hosts = {h.name: h for h in load_inventory(path)}
    assert hosts["spark-1"] == InventoryHost(
        name="spark-1",
        groups=("baremetal_gpus", "k8s_workers"),
        gpu_count=1,
        gpu_model="NVIDIA GB10",
        arch="arm64",
        ansible_host="10.0.0.5",
        vars=hosts["spark-1"].vars,
    )
    assert hosts["gpu-2"].arch == "amd64"
    assert hosts["cp-1"].groups == ("k8s_control_plane",)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("broken.yml", "all:\n  hosts: [\n   bad: {x\n", "YAML parsing failed"),
        ("broken.ini", "[baremetal_gpus\ngpu-a ansible_host=1.2.3.4\n", "ini"),
    ],
)
def test_unparsable_inventory_names_file_and_parser_message(
    tmp_path: Path, name: str, text: str, message: str, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert str(path) in str(info.value) and message in str(info.value)
    assert "does not parse" in str(info.value)


def test_unparsable_yaml_without_ansible(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("all:\n  hosts: [\n   bad: {x\n")
    with pytest.raises(InventoryError, match=r"broken.yaml does not parse: yaml: .*line"):
        load_inventory(path, use_ansible=False)
    ini = tmp_path / "hosts.ini"
    ini.write_text("[a]\nb\n")
    with pytest.raises(InventoryError, match="INI inventories need ansible-core"):
        load_inventory(ini, use_ansible=False)


def test_missing_inventory_and_bad_gpu_count(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match=r"nope\.yml cannot be read"):
        load_inventory(tmp_path / "nope.yml")
    path = tmp_path / "inv.yml"
    path.write_text(yaml.safe_dump({"all": {"hosts": {"gpu-a": {"gpu_count": "many"}}}}))
    with pytest.raises(InventoryError, match=r"gpu-a.*gpu_count 'many'"):
        load_inventory(path)
