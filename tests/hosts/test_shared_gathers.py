"""provision/hosts/shared.py: a node's gather is made once per run folder, whichever process asks first; the
others read its document, its unreachable error or its failure from the folder."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from provision.hosts.results import HostUnreachable
from provision.hosts.shared import SharedGathers


class Failed(RuntimeError):
    pass


def test_the_first_asker_gathers_the_others_read(tmp_path: Path) -> None:
    calls: list[str] = []

    def run() -> bytes:
        calls.append("gathered")
        return b"doc of gpu-1\0"

    a, b = SharedGathers(tmp_path / "g"), SharedGathers(tmp_path / "g")   # two workers, one run folder
    assert not a.known("gpu-1")
    assert a.obtain("gpu-1", run, Failed) == (b"doc of gpu-1\0", None)
    assert b.known("gpu-1")
    assert b.obtain("gpu-1", run, Failed) == (b"doc of gpu-1\0", None)
    assert calls == ["gathered"]


def test_concurrent_askers_gather_once(tmp_path: Path) -> None:
    calls: list[int] = []
    results: list[tuple] = []

    def run() -> bytes:
        calls.append(1)
        return b"x"

    threads = [threading.Thread(target=lambda: results.append(SharedGathers(tmp_path).obtain("n", run, Failed)))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and results == [(b"x", None)] * 6


def test_unreachable_and_failed_are_stored_with_their_words(tmp_path: Path) -> None:
    shared = SharedGathers(tmp_path)

    def down() -> bytes:
        raise HostUnreachable("gpu-2", "ssh: connect to host 10.0.0.2 port 22: No route to host")

    def odd() -> bytes:
        raise Failed("the host-facts gather on gpu-3 exited 2: sh: bad substitution")

    for _ in range(2):   # the second time from the folder, never calling run
        with pytest.raises(HostUnreachable, match="No route to host"):
            shared.obtain("gpu-2", down if _ == 0 else _never, Failed)
    assert shared.obtain("gpu-3", odd, Failed) == (None, "the host-facts gather on gpu-3 exited 2: sh: bad substitution")
    assert shared.obtain("gpu-3", _never, Failed)[1].endswith("bad substitution")


def test_a_name_that_is_not_a_file_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot name a file"):
        SharedGathers(tmp_path).obtain("../etc", _never, Failed)


def _never() -> bytes:
    raise AssertionError("the stored result should have been read")


OWNERS = {"gpu-a": "gw0", "gpu-b": "gw1"}


def _never_asked() -> bytes:
    raise AssertionError("a node another worker owns was gathered here while its owner was working")


def test_a_node_another_worker_owns_is_waited_for_not_gathered(tmp_path: Path) -> None:
    gw0 = SharedGathers(tmp_path, me="gw0", owners=OWNERS)
    gw1 = SharedGathers(tmp_path, me="gw1", owners=OWNERS, grace_s=5)
    gw0.started()
    owner = threading.Timer(0.3, lambda: gw0.obtain("gpu-a", lambda: b"gpu-a by gw0\0", Failed))
    owner.start()
    assert gw1.obtain("gpu-a", _never_asked, Failed) == (b"gpu-a by gw0\0", None)
    owner.join()


def test_an_owner_that_does_not_start_in_time_is_not_waited_for_again(tmp_path: Path) -> None:
    gw1 = SharedGathers(tmp_path, me="gw1", owners={**OWNERS, "gpu-c": "gw0"}, grace_s=0.2)
    assert gw1.obtain("gpu-a", lambda: b"gpu-a by gw1\0", Failed) == (b"gpu-a by gw1\0", None)
    assert "gw0" in gw1._gone
    assert gw1.obtain("gpu-c", lambda: b"gpu-c by gw1\0", Failed)[0] == b"gpu-c by gw1\0"


def test_an_owner_that_ended_or_died_without_the_node_leaves_it_to_the_asker(tmp_path: Path) -> None:
    import subprocess
    import sys

    gw0 = SharedGathers(tmp_path / "ended", me="gw0", owners=OWNERS)
    gw0.started()
    gw0.finished()
    asker = SharedGathers(tmp_path / "ended", me="gw1", owners=OWNERS, grace_s=60)
    assert asker.obtain("gpu-a", lambda: b"mine\0", Failed)[0] == b"mine\0"   # at once, not after 60 s

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "died").mkdir()
    (tmp_path / "died" / ".started-gw0").write_text(dead.stdout.strip())   # the owner's pid, no longer running
    asker = SharedGathers(tmp_path / "died", me="gw1", owners=OWNERS, grace_s=60)
    assert asker.obtain("gpu-a", lambda: b"mine\0", Failed)[0] == b"mine\0"


def test_own_nodes_and_nodes_without_an_owner_are_gathered_at_once(tmp_path: Path) -> None:
    gw1 = SharedGathers(tmp_path, me="gw1", owners=OWNERS, grace_s=60)
    assert gw1.obtain("gpu-b", lambda: b"b\0", Failed)[0] == b"b\0"
    assert gw1.obtain("gpu-z", lambda: b"z\0", Failed)[0] == b"z\0"
