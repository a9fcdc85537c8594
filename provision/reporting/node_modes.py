"""Which mode each GPU node was judged in (issue 16): summary.json ``nodes.<node>.runtime_mode`` and
``nodes.<node>.sharing``, shown on the fleet page. Pure over the cluster's objects; ``read`` asks the cluster once."""

from __future__ import annotations

from typing import Any

from provision.expect import DEVICE_PLUGIN_CONFIG_LABEL, sharing_from
from provision.observe import runtime_mode as rm
from provision.observe.timeslicing import GPU_RESOURCE

TIME_SLICING_CM = "time-slicing-config"  # provision.converge.cluster.TIME_SLICING_CM (no import: that pulls kube)


def node_modes(nodes: dict[str, dict], gpu_nodes: list[str], cluster_policy: dict | None, toolkit_ds: dict | None,
               configmaps: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """node -> {"runtime_mode", "runtime_mode_source", "sharing": {config, strategy, replicas, resource, renamed}}."""
    mode, source = rm.mode_of(toolkit_ds, cluster_policy)
    out: dict[str, dict[str, Any]] = {}
    for node in gpu_nodes:
        labels = ((nodes.get(node) or {}).get("metadata") or {}).get("labels") or {}
        sharing = sharing_from(labels, cluster_policy, configmaps, TIME_SLICING_CM)
        cfg = sharing.config
        out[node] = {"runtime_mode": mode, "runtime_mode_source": source, "sharing": {
            "config": labels.get(DEVICE_PLUGIN_CONFIG_LABEL) or None, "source": sharing.source,
            "strategy": cfg.strategy if cfg else "none", "replicas": (cfg.replicas if cfg else None) or 1,
            "resource": sharing.resource(GPU_RESOURCE), "renamed": sharing.renamed(GPU_RESOURCE)}}
    return out


def read(settings, gpu_nodes: list[str]) -> dict[str, dict[str, Any]]:
    """node_modes of the cluster now (one snapshot)."""
    from provision.kube import Kube, connect

    snap = Kube(connect(settings), settings).snapshot()
    return node_modes(snap.nodes, gpu_nodes, snap.cluster_policy, snap.daemonsets.get(rm.TOOLKIT_DS),
                      snap.configmaps)
