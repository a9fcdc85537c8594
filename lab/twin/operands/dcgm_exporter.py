"""The DCGM exporter: its metrics endpoint on the pod's IP, port 9400 (lab/twin/dcgm_server.py), from the node's
GPUs; none with dcgm-down or a broken driver."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab.spec import NodeSpec
from lab.twin import dcgm_server
from lab.twin.gpus import gpus_for

if TYPE_CHECKING:
    from lab.twin.twin import Twin


def start(twin: Twin, pod: dict, node: NodeSpec) -> None:
    uid = pod["metadata"]["uid"]
    twin.set_running(pod, ready=True)
    twin.set_state(uid, "running")
    if not dcgm_server.down(node):
        twin.dcgm.start(uid, twin.pod_ip(pod), node, gpus_for(node))


def stop(twin: Twin, pod: dict) -> None:
    twin.dcgm.stop(pod["metadata"]["uid"])
