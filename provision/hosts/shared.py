"""Gathers shared between the processes of one read-only run (xdist workers): each node's host is gathered once.

Under xdist every worker has its own RunContext. A node's scenarios all run on one worker
(gpu_conformance/xdist_nodes.py), but the convergers' plan is cluster-wide and runs in whichever worker needs it
first: operator-release's chart values come from every node's containerd paths and Docker, so that worker must
know every node's host facts. Without sharing, it gathers every node and the worker that runs a node's scenarios
gathers that node again (2 round trips). With a ``SharedGathers`` folder in the run folder, a gather's output
(the raw document, parsed again by the reader) or the transport's error is stored once per node under a file lock;
every other process reads it instead of asking the host: one round trip per node and run, whichever worker made it.

Each worker gathers only its own nodes (the ones gpu_conformance/xdist_nodes.py deals it): a process asking about
a node another worker owns waits for that worker's document instead of gathering it (``owners``). The owner says
it has started its gathers (``.started-<worker>``, with its pid) and when all of them have ended
(``.finished-<worker>``); a process asks the host itself only when the owner has not started within
``grace_s``, has ended without storing that node, or is gone. Waiting costs nothing: a cluster-wide plan needs
every node before it goes on, and the owner's pool works through its nodes meanwhile.

Only for runs that change nothing (audit, plan): a provisioning run's writes make a stored document stale.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from filelock import FileLock

from provision.atomic import write_atomic

from .results import HostUnreachable

__all__ = ["SharedGathers"]


class SharedGathers:
    """Per-node gather results in ``folder``: ``<node>.doc`` (the gather's stdout), ``<node>.err`` (the host could
    not be reached: the transport's words, JSON) or ``<node>.failed`` (the host answered without a document)."""

    START_GRACE_S = 30.0   # how long an owner may take to start its gathers (a busy 2-core runner starts slowly)
    POLL_S = 0.05

    def __init__(self, folder: Path, me: str | None = None, owners: Mapping[str, str] | None = None,
                 grace_s: float = START_GRACE_S) -> None:
        """``me``: this process's worker id (gw0); ``owners``: node -> the worker that gathers it."""
        self.folder = folder
        self.me = me
        self.owners = dict(owners or {})
        self.grace_s = grace_s
        self._gone: set[str] = set()   # owners that did not start in time, or ended or died: not waited for again
        folder.mkdir(parents=True, exist_ok=True)

    def _marker(self, kind: str, worker: str) -> Path:
        return self.folder / f".{kind}-{worker}"

    def started(self) -> None:
        """This worker has started gathering its nodes: the others wait for its documents."""
        if self.me:
            write_atomic(self._marker("started", self.me), str(os.getpid()).encode())

    def finished(self) -> None:
        """Every gather this worker started has ended: a node of its own it stored nothing for is anyone's."""
        if self.me:
            write_atomic(self._marker("finished", self.me), b"")

    def _owner_working(self, owner: str, deadline: float) -> bool:
        """Whether to go on waiting for ``owner``: started (or still within the grace), not finished, alive."""
        started = self._marker("started", owner)
        if self._marker("finished", owner).exists():
            return False
        if not started.exists():
            return time.monotonic() < deadline
        try:
            os.kill(int(started.read_text() or "0"), 0)
        except (ValueError, ProcessLookupError):
            return False
        except PermissionError:
            pass   # alive, another user's
        return True

    def _await_owner(self, node: str) -> None:
        owner = self.owners.get(node)
        if owner is None or owner == self.me or owner in self._gone:
            return
        deadline = time.monotonic() + self.grace_s
        while not self.known(node):
            if not self._owner_working(owner, deadline):
                if not self.known(node):
                    self._gone.add(owner)
                return
            time.sleep(self.POLL_S)

    def _path(self, node: str, kind: str) -> Path:
        if not node or "/" in node or node.startswith("."):
            raise ValueError(f"node name {node!r} cannot name a file")
        return self.folder / f"{node}.{kind}"

    def known(self, node: str) -> bool:
        """Whether some process already gathered the node (or found it unreachable)."""
        return any(self._path(node, k).exists() for k in ("doc", "err", "failed"))

    def obtain(self, node: str, run: Callable[[], bytes], failed: type[Exception]) -> tuple[bytes | None, str | None]:
        """(document bytes, None), or (None, why) when the gather did not give a document (``failed`` raised by
        ``run``). ``run`` gathers the host; it runs only when no process has stored this node's result yet.
        HostUnreachable (stored, or raised by ``run``) propagates, with the first process's words. A node another
        worker owns is waited for first (see the module's text)."""
        self._await_owner(node)
        with FileLock(str(self._path(node, "lock"))):
            doc, err, bad = (self._path(node, k) for k in ("doc", "err", "failed"))
            if doc.exists():
                return doc.read_bytes(), None
            if err.exists():
                raise HostUnreachable(node, json.loads(err.read_text())["detail"])
            if bad.exists():
                return None, bad.read_text()
            try:
                out = run()
            except HostUnreachable as exc:
                write_atomic(err, json.dumps({"detail": getattr(exc, "detail", str(exc))}).encode())
                raise
            except failed as exc:
                write_atomic(bad, str(exc).encode())
                return None, str(exc)
            write_atomic(doc, out)
            return out, None

