"""xdist: every scenario of one GPU node on one worker, decided before the run, so that each worker gathers (and
scrapes) only its own nodes, all at once at its first question.

A run gathers each node's host facts once (provision/hosts/gather.py) and scrapes each node's DCGM exporter once.
Under xdist's default ``load`` scheduling the scenarios of one node land on every worker, and each worker would
read that node again. ``NodeScheduling`` is xdist's scope scheduling with one scope per GPU node (the ``[<node>]``
of a per-node item's id) and a fixed assignment: the GPU nodes are dealt to the workers in turn (``partition``),
and each worker is sent all of its items at the start, in collection order. The same ``partition`` tells each
worker its nodes (workerinput ``own_nodes``, gpu_conformance/plugin.py), so it can gather them all at once before
the first one is needed, where load scheduling would tell it one node at a time. Items that are not per node (the
cluster scenarios) are dealt in turn too. A worker that dies has its unfinished items taken over by the worker
xdist starts in its place (xdist's own rescheduling; that one has no nodes of its own and reads each node when it
reaches it). Node ids are not changed.

The price is xdist's load balancing: a worker whose nodes are slow finishes last. GPU nodes of one fleet cost
about the same per scenario, and the gathers of one worker's nodes run in its pool of ``host_concurrency``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from xdist.scheduler import LoadScopeScheduling

NODE_SCOPE = "gpu-node"


def partition(nodes: Sequence[str], workers: int) -> list[tuple[str, ...]]:
    """The GPU nodes of each of ``workers`` workers (gw0, gw1, ...): dealt in turn, in sorted order."""
    ordered = sorted(nodes)
    return [tuple(ordered[i::workers]) for i in range(max(workers, 1))]


def owners(nodes: Sequence[str], workers: int) -> dict[str, str]:
    """node -> the id of the worker that runs its scenarios (gw0, gw1, ...)."""
    return {n: f"gw{i}" for i, mine in enumerate(partition(nodes, workers)) for n in mine}


def own_nodes(nodes: Sequence[str], gateway_id: str, workers: int) -> tuple[str, ...] | None:
    """The GPU nodes the worker ``gateway_id`` of ``workers`` runs; None for a worker started later."""
    index = worker_index(gateway_id)
    return partition(nodes, workers)[index] if index is not None and index < workers else None


def worker_index(gateway_id: str) -> int | None:
    """gw3 -> 3; None for an id xdist did not give at the start (a worker restarted after a crash)."""
    match = re.fullmatch(r"gw(\d+)", gateway_id)
    return int(match.group(1)) if match else None


class NodeScheduling(LoadScopeScheduling):
    def __init__(self, config, log=None, nodes: tuple[str, ...] = ()) -> None:
        super().__init__(config, log)
        self._suffixes = tuple(sorted((f"[{n}]" for n in nodes), key=len, reverse=True))
        self._gpu_nodes = tuple(nodes)
        self._position: dict[str, int] = {}   # node id -> its place in the collection (set by the first schedule)

    def _split_scope(self, nodeid: str) -> str:
        for suffix in self._suffixes:
            if nodeid.endswith(suffix):
                return f"{NODE_SCOPE}{suffix}"
        return nodeid

    def schedule(self) -> None:
        """The first call deals every scope to its worker and sends each worker all of its items; later calls (a
        worker added or lost) are xdist's: the work units left in the queue go to whoever has room."""
        if self.collection is not None or not self.collection_is_completed:
            return super().schedule()
        if not self._check_nodes_have_same_collection():
            self.log("**Different tests collected, aborting run**")
            return
        self.collection = list(next(iter(self.registered_collections.values())))
        if not self.collection:
            return
        units: dict[str, dict[str, bool]] = {}
        for nodeid in self.collection:
            units.setdefault(self._split_scope(nodeid), {})[nodeid] = False
        workers = sorted(self.nodes, key=lambda w: (worker_index(w.gateway.id) is None,
                                                    worker_index(w.gateway.id) or 0, w.gateway.id))
        by_index = {worker_index(w.gateway.id): w for w in workers}
        # as the workers were told (workercount: the workers asked for, even if one did not start)
        owner = {f"{NODE_SCOPE}[{n}]": worker_index(gw) or 0 for n, gw in owners(self._gpu_nodes, self.numnodes).items()}
        dealt = 0
        for scope, unit in units.items():
            if scope in owner:
                worker = by_index.get(owner[scope]) or workers[owner[scope] % len(workers)]
            else:  # a cluster scenario: in turn
                worker, dealt = workers[dealt % len(workers)], dealt + 1
            self.assigned_work.setdefault(worker, {})[scope] = unit
        self._position = position = {nodeid: i for i, nodeid in enumerate(self.collection)}
        for worker in workers:
            mine = self.assigned_work[worker]
            if not mine:
                self.log(f"Shutting down unused node {worker}")
                worker.shutdown()
                continue
            # the collections are the same everywhere (checked above): an index in ours is one in the worker's
            worker.send_runtest_some(sorted(position[nodeid] for unit in mine.values() for nodeid in unit))
            # everything is sent: the worker stops when its queue is empty (a worker restarted after a crash is
            # not shut down here: xdist's rescheduling gives it the dead one's unfinished units)
            worker.shutdown()

    def remove_node(self, node):
        """A worker went down. The item it crashed in is the first one it had not finished in collection order (the
        order it runs them; xdist's scope scheduling guesses the first of its first scope, right only with one
        scope at a time); xdist reports it as crashed and, as under ``load``, it is not run again. The worker's
        other unfinished items go back to the queue, for the worker started in its place: only those (a unit put
        back with nothing left to run would be sent as an empty batch, and its worker would wait forever)."""
        workload = self.assigned_work.pop(node)
        pending = [nodeid for unit in workload.values() for nodeid, done in unit.items() if not done]
        if not pending:
            return None
        crashed = min(pending, key=lambda nodeid: self._position.get(nodeid, 0))
        for scope, unit in workload.items():
            left = {nodeid: False for nodeid, done in unit.items() if not done and nodeid != crashed}
            if left:
                self.workqueue[scope] = left
        for other in self.assigned_work:
            self._reschedule(other)
        return crashed
