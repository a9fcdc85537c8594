"""The ssh and paramiko backends against real sshd servers on loopback (see conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from provision.hosts.access import HostAccess
from provision.hosts.guard import WriteGuard
from provision.hosts.results import HostUnreachable
from provision.hosts.spec import HostSpec

from .conftest import Sshd, SshLab

NASTY = [
    "two words",
    "single ' quote",
    'double " quote',
    "$(touch /tmp/gnc-pwned)",
    "`touch /tmp/gnc-pwned`",
    "a; touch /tmp/gnc-pwned",
    "x && touch /tmp/gnc-pwned",
    "| cat",
    "> /tmp/gnc-pwned",
    "$HOME",
    "back\\slash",
    "new\nline",
    "*",
    "-n",
    "",
    "tab\there",
    "ünïcødé €",
]


@pytest.fixture(params=["ssh", "paramiko"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _spec(backend: str, lab: SshLab, alias: str) -> HostSpec:
    return HostSpec(backend=backend, address=alias, ssh_config=str(lab.ssh_config), connect_timeout=5)  # type: ignore[arg-type]


@pytest.fixture
def access(backend: str, ssh_lab: SshLab) -> Iterator[HostAccess]:
    with HostAccess(_spec(backend, ssh_lab, "node-a"), name="node-a", guard=WriteGuard()) as host:
        yield host


def test_run_a_command(access: HostAccess) -> None:
    result = access.run(["sh", "-c", "echo hello; echo oops >&2; exit 3"])
    assert (result.rc, result.stdout, result.stderr) == (3, "hello\n", "oops\n")
    assert access.run(["id", "-u"], check=True).stdout.strip() == "0"


def test_nasty_arguments_arrive_literally(access: HostAccess) -> None:
    if os.path.exists("/tmp/gnc-pwned"):
        os.unlink("/tmp/gnc-pwned")
    result = access.run(["printf", "[%s]\\n", *NASTY], check=True)
    assert result.stdout == "".join(f"[{a}]\n" for a in NASTY)
    assert not os.path.exists("/tmp/gnc-pwned")


def test_read_and_write_files(access: HostAccess, tmp_path: Path) -> None:
    target = tmp_path / "etc" / "daemon.json"
    target.parent.mkdir()
    target.write_text('{"old": true}\n')
    path = str(target)
    assert access.read_text(path) == '{"old": true}\n'
    assert access.read_text(path + ".missing") is None
    assert access.exists(path) and not access.exists(path + ".missing")
    with access.guard.allow("test"):
        result = access.write_text(path, '{"runtimes": {"nvidia": {}}}\n')
        assert result.changed and result.backup_path and result.backup_path.startswith(path + ".bak.")
        assert target.read_text() == '{"runtimes": {"nvidia": {}}}\n'
        assert Path(result.backup_path).read_text() == '{"old": true}\n'
        inode = target.stat().st_ino
        unchanged = access.write_text(path, '{"runtimes": {"nvidia": {}}}\n')
        assert (unchanged.changed, unchanged.backup_path) == (False, None)
        assert target.stat().st_ino == inode
        assert sorted(p.name for p in target.parent.iterdir()) == sorted(["daemon.json", Path(result.backup_path).name])
        weird = tmp_path / "etc" / "we ird $(id) 'name'.conf"
        assert access.write_text(str(weird), "x = 1\n").changed
        assert weird.read_text() == "x = 1\n"
    assert access.glob(str(tmp_path / "etc" / "*.conf")) == [str(weird)]


def test_wrong_host_key_is_refused(backend: str, ssh_lab: SshLab) -> None:
    with (
        HostAccess(_spec(backend, ssh_lab, "node-a-badkey"), name="node-a") as host,
        pytest.raises(HostUnreachable) as info,
    ):
        host.run(["true"])
    error = info.value
    assert error.host == "node-a"
    if backend == "ssh":
        assert "Host key verification failed" in error.detail
    else:
        assert "BadHostKeyException" in error.detail and "does not match" in error.detail


def test_unknown_host_key_is_refused(backend: str, ssh_lab: SshLab, tmp_path: Path) -> None:
    server = ssh_lab.servers["node-a"]
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host stranger\n  HostName 127.0.0.1\n  Port {server.port}\n  User root\n  IdentityFile {ssh_lab.client_key}\n"
        f"  UserKnownHostsFile {tmp_path / 'empty_known_hosts'}\n  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n  BatchMode yes\n"
    )
    spec = HostSpec(backend=backend, address="stranger", ssh_config=str(config), connect_timeout=5)  # type: ignore[arg-type]
    with HostAccess(spec) as host, pytest.raises(HostUnreachable) as info:
        host.run(["true"])
    assert "verification failed" in info.value.detail or "not found in known_hosts" in info.value.detail


def test_stopped_sshd_breaks_only_that_host(
    backend: str, ssh_lab: SshLab, extra_sshd: Callable[[str], Sshd]
) -> None:
    server = extra_sshd(f"node-c-{backend}")
    with (
        HostAccess(_spec(backend, ssh_lab, server.name), name=server.name) as doomed,
        HostAccess(_spec(backend, ssh_lab, "node-b"), name="node-b") as other,
    ):
        assert doomed.run(["echo", "up"]).stdout == "up\n"
        server.stop()
        with pytest.raises(HostUnreachable) as info:
            doomed.run(["echo", "up"])
        assert info.value.host == server.name
        assert "refused" in info.value.detail.lower() or "unable to connect" in info.value.detail.lower()
        assert other.run(["echo", "still here"]).stdout == "still here\n"


def test_explicit_user_port_and_identity(backend: str, ssh_lab: SshLab) -> None:
    """The same server through the URL's own user/port/identity (with the ssh_config giving known hosts)."""
    server = ssh_lab.servers["node-b"]
    spec = HostSpec(
        backend=backend,  # type: ignore[arg-type]
        address="node-b",
        user="root",
        port=server.port,
        ssh_identity_file=str(ssh_lab.client_key),
        ssh_config=str(ssh_lab.ssh_config),
    )
    with HostAccess(spec) as host:
        assert host.run(["hostname"]).rc == 0
