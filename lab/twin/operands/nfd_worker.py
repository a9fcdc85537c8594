"""The chart's NFD worker: the host's features as node labels (lab/twin/nfd.py), as NFD's master writes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab.spec import NodeSpec
from lab.twin import nfd
from lab.twin.operands import sent

if TYPE_CHECKING:
    from lab.twin.twin import Twin


def start(twin: Twin, pod: dict, node: NodeSpec) -> None:
    """The chart's NFD worker reports the host's features; NFD's master labels the node with them."""
    uid = pod["metadata"]["uid"]
    twin.set_running(pod, ready=True)
    twin.set_state(uid, "running")
    obj = twin.informers["nodes"].get(f"/{node.name}") or {"metadata": {}}
    have = obj["metadata"].get("labels") or {}
    patch = {k: v for k, v in nfd.labels(node).items() if have.get(k) != v}
    if patch:
        sent(twin.core.patch_node(node.name, {"metadata": {"labels": patch}}, _preload_content=False))
