"""Node objects for the lab's simulated nodes (created by the lab helper identity, run by kwok)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from kubernetes import client
from kubernetes.client.rest import ApiException

from lab import versions
from lab.kwok import MANAGED_ANNOTATION
from lab.spec import NodeSpec
from lab.twin import nfd

LAB_NODE_LABEL = "lab.gpu-conformance.io/node"


def node_manifest(node: NodeSpec) -> dict:
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": node.arch,
        # What a kubelet registers too (the node lifecycle controller would otherwise add them later).
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": node.arch,
        LAB_NODE_LABEL: "true",
    }
    if node.control_plane:
        labels["node-role.kubernetes.io/control-plane"] = ""
    if node.nfd == "preinstalled":
        # NFD ran on this cluster before (standalone, or an earlier install): its labels are there from the
        # start. With nfd: chart only the chart's NFD worker pod puts them there (the twin plays it).
        labels.update(nfd.labels(node))
    labels.update(node.labels)
    if node.sharing.get("config"):
        labels["nvidia.com/device-plugin.config"] = node.sharing["config"]
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "500Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": labels, "annotations": {MANAGED_ANNOTATION: "fake"}},
        "spec": {},
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "nodeInfo": {
                "architecture": node.arch,
                "containerRuntimeVersion": f"containerd://{node.containerd_version}",
                "kubeletVersion": versions.K8S_VERSION,
                "kubeProxyVersion": versions.K8S_VERSION,
                "kernelVersion": node.kernel,
                "operatingSystem": "linux",
                "osImage": f"{node.os_id.capitalize()} {node.os_version} LTS",
                "bootID": "", "machineID": "", "systemUUID": "",
            },
        },
    }


def ensure_nodes(api: client.CoreV1Api, nodes: tuple[NodeSpec, ...], parallel: int = 8) -> list[str]:
    """Create the spec's nodes that do not exist yet; returns the names created (in spec order).

    Creates run `parallel` at a time: one by one, a 1000-node lab spends over a minute in round trips."""
    existing = {n.metadata.name for n in api.list_node().items}
    missing = [node for node in nodes if node.name not in existing]

    def create(node: NodeSpec) -> str | None:
        try:
            api.create_node(node_manifest(node))
            return node.name
        except ApiException as exc:
            if exc.status != 409:
                raise
            return None

    if len(missing) <= 1:
        return [name for name in map(create, missing) if name]
    with ThreadPoolExecutor(max_workers=min(parallel, len(missing)), thread_name_prefix="lab-nodes") as pool:
        return [name for name in pool.map(create, missing) if name]
