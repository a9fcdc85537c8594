"""The local backend with a root prefix: a simulated node's host view is a folder with its own executables."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from provision.hosts.access import HostAccess
from provision.hosts.guard import WRITE_GUARD, ReadOnlyViolation, WriteGuard
from provision.hosts.results import CommandFailed, HostCommandError, HostUnreachable
from provision.hosts.safety import UnsafePath
from provision.hosts.spec import HostSpec


def _fake_host(root: Path) -> Path:
    bin_dir = root / "usr" / "bin"
    bin_dir.mkdir(parents=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text('#!/bin/sh\necho "fake nvidia-smi from $0 args: $*"\n')
    smi.chmod(0o755)
    (root / "etc" / "containerd" / "conf.d").mkdir(parents=True)
    (root / "etc" / "containerd" / "config.toml").write_text(
        'version = 2\nimports = ["/etc/containerd/conf.d/*.toml"]\n'
    )
    (root / "etc" / "containerd" / "conf.d" / "10-nvidia.toml").write_text("# nvidia\n")
    (root / "etc" / "containerd" / "conf.d" / "20-runc.toml").write_text("# runc\n")
    return root


@pytest.fixture
def host_root(tmp_path: Path) -> Path:
    return _fake_host(tmp_path / "node-1")


@pytest.fixture(params=["local", "lab"])
def host(request: pytest.FixtureRequest, host_root: Path) -> HostAccess:
    spec = HostSpec(backend=request.param, root=str(host_root), exec_mode="path")
    return HostAccess(spec, name="node-1", guard=WriteGuard())


def test_run_finds_the_executables_under_root_first(host: HostAccess, host_root: Path) -> None:
    result = host.run(["nvidia-smi", "-L"], check=True)
    assert result.stdout == f"fake nvidia-smi from {host_root}/usr/bin/nvidia-smi args: -L\n"
    assert result.rc == 0 and result.argv == ("nvidia-smi", "-L") and result.host == "node-1"
    # commands not under the root still come from the machine's PATH
    assert host.run(["uname", "-s"], check=True).stdout.strip() == "Linux"


def test_direct_mode_does_not_use_the_root_executables(host_root: Path) -> None:
    host = HostAccess(HostSpec(backend="local", root=str(host_root), exec_mode="direct"))
    result = host.run(["sh", "-c", "command -v nvidia-smi || echo none"])
    assert f"{host_root}" not in result.stdout


def test_run_reports_exit_status_and_check(host: HostAccess) -> None:
    result = host.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (result.rc, result.stdout, result.stderr, result.ok) == (7, "out\n", "err\n", False)
    with pytest.raises(CommandFailed, match="exit status 7"):
        host.run(["sh", "-c", "exit 7"], check=True)


def test_run_refuses_a_command_string(host: HostAccess) -> None:
    with pytest.raises(TypeError, match="argv list"):
        host.run("echo hi")  # type: ignore[arg-type]


def test_timeout_stops_the_command(host: HostAccess) -> None:
    result = host.run(["sleep", "10"], timeout=0.3)
    assert result.timed_out and result.rc == 124
    assert not host.run(["true"], timeout=5).timed_out


def test_read_exists_glob_map_under_root(host: HostAccess) -> None:
    assert host.read_text("/etc/containerd/config.toml").startswith("version = 2")
    assert host.read_text("/etc/containerd/missing.toml") is None
    assert host.exists("/etc/containerd/config.toml")
    assert not host.exists("/etc/containerd/missing.toml")
    assert host.glob("/etc/containerd/conf.d/*.toml") == [
        "/etc/containerd/conf.d/10-nvidia.toml",
        "/etc/containerd/conf.d/20-runc.toml",
    ]
    assert host.glob("/etc/*/conf.d/2*.toml") == ["/etc/containerd/conf.d/20-runc.toml"]
    assert host.glob("/etc/containerd/conf.d/*.json") == []
    # the machine's own /etc is not what the host sees
    assert not host.exists("/etc/passwd")


def test_read_of_unreadable_file_is_an_error_not_absent(host: HostAccess, host_root: Path) -> None:
    (host_root / "etc" / "adir").mkdir()
    with pytest.raises(HostCommandError, match="reading /etc/adir"):
        host.read_text("/etc/adir")


def test_write_is_atomic_with_backup_and_skips_identical_content(host: HostAccess, host_root: Path) -> None:
    target = host_root / "etc" / "containerd" / "config.toml"
    old = target.read_text()
    with host.guard.allow("test"):
        result = host.write_text("/etc/containerd/config.toml", "version = 3\n", mode=0o600)
        assert result.changed and result.backup_path is not None
        assert result.backup_path.startswith("/etc/containerd/config.toml.bak.")
        assert target.read_text() == "version = 3\n"
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert host.read_text(result.backup_path) == old
        assert (host_root / result.backup_path.lstrip("/")).read_text() == old
        # identical content: nothing written, no new backup
        before = sorted(os.listdir(target.parent))
        inode = target.stat().st_ino
        again = host.write_text("/etc/containerd/config.toml", "version = 3\n")
        assert (again.changed, again.backup_path) == (False, None)
        assert sorted(os.listdir(target.parent)) == before and target.stat().st_ino == inode
        # no temporary files left behind
        assert not [n for n in os.listdir(target.parent) if "gnc-tmp" in n]


def test_write_new_file_has_no_backup_and_creates_parents(host: HostAccess, host_root: Path) -> None:
    with host.guard.allow("test"):
        with pytest.raises(HostCommandError, match=r"writing /etc/docker/daemon\.json"):
            host.write_text("/etc/docker/daemon.json", "{}\n", parents=False)
        assert not (host_root / "etc/docker").exists()
        result = host.write_text("/etc/docker/daemon.json", '{"runtimes": {}}\n')
    assert (result.changed, result.backup_path) == (True, None)
    assert (host_root / "etc/docker/daemon.json").read_text() == '{"runtimes": {}}\n'
    assert stat.S_IMODE((host_root / "etc/docker/daemon.json").stat().st_mode) == 0o644


def test_write_large_and_unusual_content(host: HostAccess, host_root: Path) -> None:
    text = "".join(f"line {i} 'quotes' \"dq\" $(id) `x` ; ü €\n" for i in range(6000))  # > several chunks
    assert len(text.encode()) > 3 * 64 * 1024
    with host.guard.allow("test"):
        assert host.write_text("/etc/big.conf", text).changed
        assert host.write_text("/etc/empty.conf", "").changed
    assert (host_root / "etc/big.conf").read_text() == text
    assert host.read_text("/etc/big.conf") == text
    assert host.read_text("/etc/empty.conf") == ""


def test_write_without_allow_is_refused_and_nothing_changes(host_root: Path) -> None:
    host = HostAccess(HostSpec(backend="lab", root=str(host_root)), name="node-1")  # the process-wide guard
    assert host.guard is WRITE_GUARD and not WRITE_GUARD.allow_writes
    target = host_root / "etc/containerd/config.toml"
    before = {p: p.read_bytes() for p in (host_root / "etc").rglob("*") if p.is_file()}
    with pytest.raises(ReadOnlyViolation, match=r"write /etc/containerd/config.toml on node-1.*read-only"):
        host.write_text("/etc/containerd/config.toml", "changed\n")
    with pytest.raises(ReadOnlyViolation, match=r"remove /etc/containerd/config\.toml"):
        host.remove("/etc/containerd/config.toml")
    with pytest.raises(ReadOnlyViolation, match="run systemctl restart containerd on node-1"):
        host.run(["systemctl", "restart", "containerd"], mutates=True)
    after = {p: p.read_bytes() for p in (host_root / "etc").rglob("*") if p.is_file()}
    assert after == before and target.exists()


def test_remove_with_and_without_backup(host: HostAccess, host_root: Path) -> None:
    with host.guard.allow("test"):
        gone = host.remove("/etc/containerd/conf.d/20-runc.toml")
        assert gone.changed and gone.backup_path is not None
        assert not (host_root / "etc/containerd/conf.d/20-runc.toml").exists()
        assert host.read_text(gone.backup_path) == "# runc\n"
        plain = host.remove("/etc/containerd/conf.d/10-nvidia.toml", backup=False)
        assert (plain.changed, plain.backup_path) == (True, None)
        assert host.remove("/etc/containerd/conf.d/10-nvidia.toml").changed is False


@pytest.mark.parametrize("path", ["etc/x", "/etc/../../x", "/etc/x\n", "/etc/\x00x", ""])
def test_bad_paths_are_refused(host: HostAccess, path: str) -> None:
    with pytest.raises(UnsafePath):
        host.read_text(path)
    with host.guard.allow("test"), pytest.raises(UnsafePath):
        host.write_text(path, "x")


def test_missing_host_folder_is_unreachable(tmp_path: Path) -> None:
    host = HostAccess(HostSpec(backend="lab", root=str(tmp_path / "gone")), name="node-9")
    with pytest.raises(HostUnreachable, match=r"node-9.*does not exist"):
        host.run(["true"])


def test_plain_local_host() -> None:
    host = HostAccess(HostSpec(backend="local"))
    assert host.run(["printf", "%s|", "a b", "$(id)", "'"]).stdout == "a b|$(id)|'|"
    assert host.exists("/etc/passwd")


def test_write_keeps_the_old_mode_on_request_and_refuses_symlinks(host: HostAccess, host_root: Path) -> None:
    secret = host_root / "etc" / "secret.conf"
    secret.write_text("token=1\n")
    secret.chmod(0o600)
    link = host_root / "etc" / "link.conf"
    link.symlink_to(secret)
    with host.guard.allow("test"):
        assert host.write_text("/etc/secret.conf", "token=2\n", mode=None).changed
        assert host.write_text("/etc/fresh.conf", "x\n", mode=None).changed
        with pytest.raises(HostCommandError, match="refusing to replace the symlink"):
            host.write_text("/etc/link.conf", "token=3\n")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and secret.read_text() == "token=2\n"
    assert stat.S_IMODE((host_root / "etc" / "fresh.conf").stat().st_mode) == 0o644
    assert link.is_symlink()
    assert not [n for n in os.listdir(host_root / "etc") if "gnc-tmp" in n]
