"""The process-wide write guard."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from provision.hosts.guard import WRITE_GUARD, ReadOnlyViolation, WriteGuard


def test_read_only_by_default_and_check_names_the_action() -> None:
    guard = WriteGuard()
    assert not guard.allow_writes and guard.reason is None
    with pytest.raises(ReadOnlyViolation, match="refused to write /etc/x on gpu-1: this run is read-only") as info:
        guard.check("write /etc/x on gpu-1")
    assert info.value.action == "write /etc/x on gpu-1"
    assert isinstance(info.value, RuntimeError)
    assert str(pickle.loads(pickle.dumps(info.value))) == str(info.value)


def test_allow_is_scoped_and_nests() -> None:
    guard = WriteGuard()
    with guard.allow("--provision"):
        guard.check("anything")
        assert guard.reason == "--provision"
        with guard.forbid(), pytest.raises(ReadOnlyViolation):
            guard.check("planned change")
        with guard.allow("--rollback"):
            assert guard.reason == "--rollback"
        assert guard.reason == "--provision"
    assert not guard.allow_writes
    with pytest.raises(ReadOnlyViolation):
        guard.check("after the block")


def test_allow_restores_state_on_error() -> None:
    guard = WriteGuard()
    with pytest.raises(KeyError), guard.allow("--provision"):
        raise KeyError("boom")
    assert not guard.allow_writes


def test_setter_and_enable() -> None:
    guard = WriteGuard()
    guard.allow_writes = True
    assert guard.allow_writes
    guard.allow_writes = False
    assert not guard.allow_writes
    guard.enable("--provision")
    assert repr(guard) == "<WriteGuard allowed (--provision)>"
    guard.disable()
    with pytest.raises(ValueError, match="reason"):
        guard.enable("")


def test_module_guard_is_read_only() -> None:
    assert not WRITE_GUARD.allow_writes


def test_guard_imports_nothing_of_the_host_layer() -> None:
    code = (
        "import sys, provision.hosts.guard as g\n"
        "bad = [m for m in ('testinfra', 'paramiko', 'kubernetes', 'provision.hosts.access') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "from provision.hosts import WriteGuard\n"
        "assert WriteGuard is g.WriteGuard\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
