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
