"""The distribution of each node, from its Node object and (where that says nothing) its host's files; the
containerd layout the node is judged with. The pure part is provision/observe/distribution.py."""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

from provision.hosts.access import HostAccess
from provision.observe import distribution as dist


def _containerd_major(node_obj: dict | None) -> int:
    raw = dist.node_info(node_obj or {})["containerRuntimeVersion"].split("://", 1)[-1].split("-")[0].lstrip("v")
    try:
        return Version(raw).major
    except InvalidVersion:
        return 1


def detect(node_obj: dict | None, host: HostAccess | None) -> dist.Detected:
    """The node object first; the host's files when it names none (and a host is reachable)."""
    found = dist.detect_node(node_obj or {}) if node_obj else dist.Detected(None, "no node object")
    if found.name is None and host is not None:
        from_host = dist.detect_host(host.exists)
        if from_host.name is not None:
            return from_host
    return found


def layout_for(host: HostAccess, node_obj: dict | None = None) -> dist.Layout | None:
    """The containerd layout of the host's distribution (None: no distribution the suite knows)."""
    found = detect(node_obj, host)
    if found.name is None:
        return None
    base = (host.read_text(dist.K8S_SNAP_LOCK) or "").strip() if found.name == dist.K8S_SNAP else None
    return dist.layout(found.name, base, _containerd_major(node_obj))


def node_layout(ctx, node: str) -> dist.Layout | None:
    """The layout a node's host is judged with (the node object from the run's snapshot)."""
    return layout_for(ctx.host(node), ctx.kube.snapshot().nodes.get(node) if getattr(ctx, "kube", None) else None)


def node_distribution(ctx, node: str) -> dist.Detected:
    """The node's distribution for reports and the provisioning refusal; the host is asked only when the node
    object names none and host access is configured."""
    obj = ctx.kube.snapshot().nodes.get(node) if getattr(ctx, "kube", None) else None
    host = None
    if obj is None or dist.detect_node(obj).name is None:
        try:
            host = ctx.host(node)
        except Exception:  # noqa: BLE001 - no host access (backend none) or unreachable: the node object decides
            host = None
    return detect(obj, host)
