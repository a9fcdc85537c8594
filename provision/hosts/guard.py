"""The process-wide write guard: read-only unless a provisioning or rollback run says otherwise.

Every layer that changes something (host files and commands here, Kubernetes objects in the cluster layer)
asks the same object before it acts, so that a plain audit run cannot write by accident: the refusal is a
property of the code, not a promise of the caller.

    from provision.hosts.guard import WRITE_GUARD

    WRITE_GUARD.check("write /etc/docker/daemon.json on gpu-1")   # raises ReadOnlyViolation in an audit run
    with WRITE_GUARD.allow("--provision"):
        ...                                                        # writes allowed inside the block

This module has no dependency on the host or Kubernetes layers (nothing but the standard library), so any
layer can import it without pulling testinfra or the Kubernetes client in.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["WRITE_GUARD", "ReadOnlyViolation", "WriteGuard"]


class ReadOnlyViolation(RuntimeError):
    """A write was attempted while the guard does not allow writes (an audit or --plan run)."""

    def __init__(self, action: str) -> None:
        super().__init__(action)
        self.action = action

    def __str__(self) -> str:
        return (
            f"refused to {self.action}: this run is read-only "
            "(writes are allowed only in --provision or --rollback runs)"
        )


class WriteGuard:
    """Whether this process may change hosts or the cluster.

    Writes are refused by default. ``allow(reason)`` opens a block in which they are allowed (nesting is
    fine; the previous state comes back when the block ends); ``enable(reason)`` / ``disable()`` (or the
    ``allow_writes`` property) set the state for the rest of the process, for a run that provisions from
    start to end.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._allowed = False
        self._reason: str | None = None

    @property
    def allow_writes(self) -> bool:
        return self._allowed

    @allow_writes.setter
    def allow_writes(self, value: bool) -> None:
        if value:
            self.enable("allow_writes set")
        else:
            self.disable()

    @property
    def reason(self) -> str | None:
        """Why writes are allowed now (None when they are not)."""
        return self._reason

    def enable(self, reason: str) -> None:
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError("WriteGuard.enable needs a reason (e.g. '--provision')")
        with self._lock:
            self._allowed = True
            self._reason = reason

    def disable(self) -> None:
        with self._lock:
            self._allowed = False
            self._reason = None

    @contextmanager
    def allow(self, reason: str) -> Iterator[WriteGuard]:
        """Allow writes inside the block; the previous state is restored afterwards."""
        with self._lock:
            previous = (self._allowed, self._reason)
            self.enable(reason)
        try:
            yield self
        finally:
            with self._lock:
                self._allowed, self._reason = previous

    @contextmanager
    def forbid(self) -> Iterator[WriteGuard]:
        """Refuse writes inside the block (e.g. a --plan step inside a provisioning run)."""
        with self._lock:
            previous = (self._allowed, self._reason)
            self.disable()
        try:
            yield self
        finally:
            with self._lock:
                self._allowed, self._reason = previous

    def check(self, action: str) -> None:
        """Raise ReadOnlyViolation naming ``action`` unless writes are allowed."""
        if not self._allowed:
            raise ReadOnlyViolation(action)

    def __repr__(self) -> str:
        state = f"allowed ({self._reason})" if self._allowed else "read-only"
        return f"<WriteGuard {state}>"


#: The one guard of this process, shared by the host and the Kubernetes layers.
WRITE_GUARD = WriteGuard()
