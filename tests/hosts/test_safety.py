"""Node names, paths and command quoting: nothing from the cluster reaches a shell unquoted."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from provision.hosts.access import HostAccess
from provision.hosts.safety import (
    UnsafeHostAddress,
    UnsafeNodeName,
    UnsafePath,
    UnsafeUserName,
    build_command,
    validate_host_address,
    validate_host_path,
    validate_node_name,
    validate_user_name,
)
from provision.hosts.spec import HostSpec, map_node

argv_text = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)))
argvs = st.lists(argv_text, min_size=1, max_size=8)


@pytest.mark.parametrize(
    "name",
    ["gpu-1", "spark-1", "node.example.com", "a", "0", "n" * 63, ".".join(["a" * 63] * 3) + "." + "b" * 61,
     # A part longer than 63 is still a DNS-1123 subdomain: kube-apiserver v1.34.4 accepts such a node name.
     "a" * 64, "a" * 64 + ".example"],
)
def test_valid_node_names(name: str) -> None:
    assert validate_node_name(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("gpu-a;rm -rf /", "shell metacharacters ';'"),
        ("$(id)", "shell metacharacters '$' '(' ')'"),
        ("`id`", "shell metacharacters '`'"),
        ("gpu a", "whitespace"),
        ("gpu\nb", "whitespace"),
        ("GPU-1", "uppercase"),
        ("gpu|x", "shell metacharacters '|'"),
        ("gpu&", "shell metacharacters '&'"),
        ("-gpu", "start and end with an alphanumeric"),
        ("gpu-", "start and end with an alphanumeric"),
        ("gpu_1", "lowercase alphanumerics and '-'"),
        ("gpu..1", "empty label"),
        (".gpu", "empty label"),
        ("a." * 127 + "a", "at most 253"),
        ("", "empty"),
        ("gpü", "non-ASCII"),
    ],
)
def test_unsafe_node_names_are_refused_with_the_reason(name: str, why: str) -> None:
    with pytest.raises(UnsafeNodeName) as info:
        validate_node_name(name)
    message = str(info.value)
    assert repr(name) in message or repr(name)[:60] in message
    assert why in message
    assert isinstance(info.value, ValueError)


def test_unsafe_node_name_is_refused_before_any_command() -> None:
    """map_node and a pod spec refuse the name; nothing is run (no transport is even built)."""
    for name in ["gpu-a;rm -rf /", "$(id)", "gpu a", "Gpu-1"]:
        with pytest.raises(UnsafeNodeName):
            map_node(name, "10.0.0.1", "name", None)
        with pytest.raises(UnsafeNodeName):
            HostSpec(backend="pod", address=name)


def test_non_string_node_name() -> None:
    with pytest.raises(UnsafeNodeName, match="not a string"):
        validate_node_name(None)


@given(argvs)
@settings(max_examples=300, deadline=None)
def test_build_command_round_trips_through_shlex(argv: list[str]) -> None:
    assert shlex.split(build_command(argv, sudo=False)) == argv


@given(argvs)
@settings(max_examples=100, deadline=None)
def test_build_command_with_sudo_round_trips(argv: list[str]) -> None:
    assert shlex.split(build_command(argv, sudo=True)) == ["sudo", "-n", "--", *argv]
    assert shlex.split(build_command(argv, sudo=True, sudo_user="gpuadm")) == [
        "sudo", "-n", "-u", "gpuadm", "--", *argv,
    ]


@given(st.lists(st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=127)), min_size=1, max_size=5))
@settings(max_examples=60, deadline=None)
def test_build_command_arrives_literally_in_a_real_shell(argv: list[str]) -> None:
    host = HostAccess(HostSpec(backend="local"))
    result = host.run(["printf", "%s\\0", *argv], check=True)
    assert result.stdout.split("\0")[:-1] == argv


def test_build_command_refuses_strings_nul_and_empty() -> None:
    with pytest.raises(TypeError, match="argv list"):
        build_command("rm -rf /")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NUL"):
        build_command(["echo", "a\x00b"])
    with pytest.raises(ValueError, match="empty argv"):
        build_command([])
    with pytest.raises(TypeError, match="argv\\[1\\] is int"):
        build_command(["echo", 1])  # type: ignore[list-item]
    with pytest.raises(UnsafeUserName):
        build_command(["id"], sudo=True, sudo_user="root; id")
    with pytest.raises(ValueError, match="without sudo"):
        build_command(["id"], sudo=False, sudo_user="root")


def test_paths() -> None:
    assert validate_host_path("/etc/containerd/config.toml") == "/etc/containerd/config.toml"
    assert validate_host_path("/etc/weird name $(x).conf") == "/etc/weird name $(x).conf"
    for bad, why in [("etc/x", "not absolute"), ("/a\nb", "newline"), ("/a\x00", "NUL"), ("/a/../b", "'..'"),
                     ("/a\rb", "carriage return"), ("/" + "a" * 5000, "longer")]:
        with pytest.raises(UnsafePath, match=why):
            validate_host_path(bad)


def test_host_addresses_and_users() -> None:
    for ok in ["gpu-1", "10.0.0.1", "fd00::1", "node_1.lab", "Spark-1"]:
        assert validate_host_address(ok) == ok
    for bad in ["-oProxyCommand=id", "a b", "a;b", "$(id)", "", "a..b", "[fd00::1]", "user@host"]:
        with pytest.raises(UnsafeHostAddress):
            validate_host_address(bad)
    assert validate_user_name("ubuntu") == "ubuntu"
    for bad in ["-root", "a b", "1abc", "x" * 40, "r$oot"]:
        with pytest.raises(UnsafeUserName):
            validate_user_name(bad)
