"""xdist: every scenario of one GPU node on one worker, so that each worker gathers only its own nodes' hosts.

A run with host checks gathers each node's host facts once (provision/hosts/gather.py). Under xdist's default
``load`` scheduling the scenarios of one node land on every worker, and each worker would gather that node
again. ``NodeScheduling`` is xdist's own scope scheduling with one scope per GPU node (the ``[<node>]`` of a
per-node item's id); every other item is a scope of its own, as under ``load``. Node ids are not changed.
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling


class NodeScheduling(LoadScopeScheduling):
    def __init__(self, config, log=None, nodes: tuple[str, ...] = ()) -> None:
        super().__init__(config, log)
        self._suffixes = tuple(sorted((f"[{n}]" for n in nodes), key=len, reverse=True))

    def _split_scope(self, nodeid: str) -> str:
        for suffix in self._suffixes:
            if nodeid.endswith(suffix):
                return f"gpu-node{suffix}"
        return nodeid
