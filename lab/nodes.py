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
# How each distribution's node reports itself (sources: lab/README.md "Distributions"). k8s-snap and kubeadm nodes
# carry nothing of their own here: the default lab's nodes stay as they were (k8s-snap's k8sd.io/role label is
# not set), and a v1.34 kubeadm node has no kubeadm-only label; the suite tells them apart by their host files.
KUBELET_SUFFIX = {"k3s": "+k3s1", "rke2": "+rke2r1"}
RUNTIME_SUFFIX = {"k3s": "-k3s1", "rke2": "-k3s1"}
DISTRIBUTION_LABELS = {
    "k3s": {"node.kubernetes.io/instance-type": "k3s"},
    "rke2": {"node.kubernetes.io/instance-type": "rke2"},
    "microk8s": {"microk8s.io/cluster": "true", "node.kubernetes.io/microk8s-worker": "microk8s-worker"},
}
DISTRIBUTION_ANNOTATIONS = {
    "k3s": {"k3s.io/hostname": "{name}", "k3s.io/node-args": '["agent"]'},
    "rke2": {"rke2.io/hostname": "{name}", "rke2.io/node-args": '["agent"]'},
}


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
    labels.update(DISTRIBUTION_LABELS.get(node.distribution, {}))
    labels.update(node.labels)
    kubelet = versions.K8S_VERSION + KUBELET_SUFFIX.get(node.distribution, "")
    runtime = f"containerd://{node.containerd_version}" + RUNTIME_SUFFIX.get(node.distribution, "")
    annotations = {MANAGED_ANNOTATION: "fake"}
    annotations.update({k.format(name=node.name): v.format(name=node.name)
                        for k, v in DISTRIBUTION_ANNOTATIONS.get(node.distribution, {}).items()})
    if node.sharing.get("config"):
        labels["nvidia.com/device-plugin.config"] = node.sharing["config"]
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "500Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": labels, "annotations": annotations},
        "spec": {},
        "status": {
            "capacity": dict(resources),
            "allocatable": dict(resources),
            "nodeInfo": {
                "architecture": node.arch,
                "containerRuntimeVersion": runtime,
                "kubeletVersion": kubelet,
                "kubeProxyVersion": kubelet,
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
