"""The lab's simulated round-trip latency (provision/hosts/lab_delay.py): every command line of the lab backend
waits GPU_CONFORMANCE_LAB_HOST_DELAY_MS first; other backends never wait; a bad value is a clear error."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from provision.hosts.access import HostAccess
from provision.hosts.lab_delay import LAB_HOST_DELAY_ENV, DelayedTransport, lab_host_delay_s
from provision.hosts.spec import HostSpec


def test_the_lab_backend_waits_once_per_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LAB_HOST_DELAY_ENV, "150")
    host = HostAccess(HostSpec(backend="lab", root=str(tmp_path), exec_mode="path"), name="node-1")
    assert isinstance(host._transport, DelayedTransport) and host._transport.delay_s == pytest.approx(0.15)
    t0 = time.monotonic()
    assert host.run(["true"]).ok
    assert host.read_text("/absent") is None
    took = time.monotonic() - t0
    assert host.round_trips == 2
    assert took >= 2 * 0.15, f"two round trips with a 150 ms delay each took {took:.3f} s"


def test_the_delay_counts_commands_not_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []

    class Inner:
        def execute(self, command, timeout=None):
            return ("ran", command)

        def close(self):
            slept.append(-1.0)

    t = DelayedTransport(Inner(), 0.05, sleep=slept.append)
    assert t.execute("a") == ("ran", "a") and t.execute("b") == ("ran", "b")
    t.close()
    assert slept == [0.05, 0.05, -1.0]


def test_other_backends_never_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LAB_HOST_DELAY_ENV, "5000")
    host = HostAccess(HostSpec(backend="local", root=str(tmp_path), exec_mode="direct"), name="node-1")
    assert not isinstance(host._transport, DelayedTransport)
    t0 = time.monotonic()
    assert host.run(["true"]).ok
    assert time.monotonic() - t0 < 5


def test_unset_empty_and_bad_values() -> None:
    assert lab_host_delay_s({}) == 0.0
    assert lab_host_delay_s({LAB_HOST_DELAY_ENV: " "}) == 0.0
    assert lab_host_delay_s({LAB_HOST_DELAY_ENV: "50"}) == pytest.approx(0.05)
    for bad in ("fast", "-1", "1e9"):
        with pytest.raises(ValueError, match=f"{LAB_HOST_DELAY_ENV}=.*milliseconds per host round trip"):
            lab_host_delay_s({LAB_HOST_DELAY_ENV: bad})
