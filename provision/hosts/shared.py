"""Gathers shared between the processes of one read-only run (xdist workers): each node's host is gathered once.

Under xdist every worker has its own RunContext. A node's scenarios all run on one worker
(gpu_conformance/xdist_nodes.py), but the convergers' plan is cluster-wide and runs in whichever worker needs it
first: operator-release's chart values come from every node's containerd paths and Docker, so that worker must
know every node's host facts. Without sharing, it gathers every node and the worker that runs a node's scenarios
gathers that node again (2 round trips). With a ``SharedGathers`` folder in the run folder, a gather's output
(the raw document, parsed again by the reader) or the transport's error is stored once per node under a file lock;
every other process reads it instead of asking the host: one round trip per node and run, whichever worker made it.

Only for runs that change nothing (audit, plan): a provisioning run's writes make a stored document stale.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from provision.atomic import write_atomic

from .results import HostUnreachable

__all__ = ["SharedGathers"]


class SharedGathers:
    """Per-node gather results in ``folder``: ``<node>.doc`` (the gather's stdout), ``<node>.err`` (the host could
    not be reached: the transport's words, JSON) or ``<node>.failed`` (the host answered without a document)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

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
        HostUnreachable (stored, or raised by ``run``) propagates, with the first process's words."""
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

