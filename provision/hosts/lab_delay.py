"""Simulated network latency for the lab backend: a fixed delay per host round trip.

On a real fleet every host command is a round trip (SSH to a remote rack, pods/exec through the apiserver); the
lab's hosts are folders on this machine and answer at once. With ``GPU_CONFORMANCE_LAB_HOST_DELAY_MS`` set (for
example 50), every command line the lab transport runs waits that long first, as a round trip to a far host would,
so that a bench can show what the gathers' concurrency (setting ``host_concurrency``) buys. Only the ``lab``
backend is wrapped (provision/hosts/access.py): the real backends never read this variable.
"""

from __future__ import annotations

import os
import time

from .results import RawResult

__all__ = ["LAB_HOST_DELAY_ENV", "DelayedTransport", "lab_host_delay_s"]

LAB_HOST_DELAY_ENV = "GPU_CONFORMANCE_LAB_HOST_DELAY_MS"
_MAX_MS = 60_000


def lab_host_delay_s(environ: dict[str, str] | None = None) -> float:
    """The delay per lab host round trip, in seconds (0 when the variable is unset or empty)."""
    raw = (os.environ if environ is None else environ).get(LAB_HOST_DELAY_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        ms = float(raw)
    except ValueError:
        ms = -1.0
    if not 0 <= ms <= _MAX_MS:
        raise ValueError(f"{LAB_HOST_DELAY_ENV}={raw!r} is not a delay: give milliseconds per host round trip, "
                         f"0 to {_MAX_MS} (for example 50), or unset it")
    return ms / 1000.0


class DelayedTransport:
    """A transport whose every command line first waits ``delay_s`` (the simulated round trip)."""

    def __init__(self, inner, delay_s: float, sleep=time.sleep) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self._sleep = sleep

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def execute(self, command: str, timeout: float | None = None) -> RawResult:
        self._sleep(self.delay_s)
        return self.inner.execute(command, timeout)

    def close(self) -> None:
        self.inner.close()
