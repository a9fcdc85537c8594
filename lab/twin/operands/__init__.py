"""The pods whose containers the twin plays, recognised by the labels the real charts and the real operator
put on them. The operator itself (labels, DaemonSets, RuntimeClasses, the DCGM Service, ClusterPolicy
status) is the real controller (lab/twin/operator_process.py); nothing here renders or decides any of it.

One module per operand the twin plays (lab/twin/operands/<operand>.py, each with start(twin, pod, node) and, where
the pod's end has an effect, stop(twin, pod)); lab/twin/operands/registry.py tells which plays a pod. This module
holds only what they share, and imports none of them."""

from __future__ import annotations

from dataclasses import dataclass

GROUP, VERSION, PLURAL = "nvidia.com", "v1", "clusterpolicies"
CLUSTER_POLICY = "cluster-policy"


@dataclass(frozen=True)
class Operand:
    app: str           # the pod's `app` label (the real DaemonSet's selector)
    component: str     # what the twin plays for it
    container: str     # the main container, whose env and mounts the twin reads


OPERANDS = (
    Operand("nvidia-container-toolkit-daemonset", "toolkit", "nvidia-container-toolkit-ctr"),
    Operand("nvidia-device-plugin-daemonset", "devicePlugin", "nvidia-device-plugin"),
    Operand("nvidia-dcgm-exporter", "dcgmExporter", "nvidia-dcgm-exporter"),
    Operand("gpu-feature-discovery", "gfd", "gpu-feature-discovery"),
    Operand("nvidia-operator-validator", "validator", "nvidia-operator-validator"),
    Operand("nvidia-driver-daemonset", "driver", "nvidia-driver-ctr"),
    Operand("nvidia-mig-manager", "migManager", "nvidia-mig-manager"),
)
BY_APP = {o.app: o for o in OPERANDS}
BY_COMPONENT = {o.component: o for o in OPERANDS}
DRIVER = BY_APP["nvidia-driver-daemonset"]
OPERATOR_APP = "gpu-operator"                 # the chart's operator Deployment (run for real, out of cluster)
NFD_NAME_LABEL = "app.kubernetes.io/name"     # the chart's NFD subchart: node-feature-discovery, role worker
NFD_NAME = "node-feature-discovery"


def is_nfd_worker(labels: dict[str, str]) -> bool:
    return labels.get(NFD_NAME_LABEL) == NFD_NAME and labels.get("role") == "worker"


def is_operator(labels: dict[str, str]) -> bool:
    return labels.get("app") == OPERATOR_APP and labels.get("app.kubernetes.io/component") == OPERATOR_APP
WORKLOAD_RESOURCE = "nvidia.com/gpu"


def sent(resp: object) -> None:
    """Writes go out with _preload_content=False: the twin never reads what a write returns, and turning a
    Node or Pod into client models costs more than the request itself (190 ms a node label patch at 1000
    nodes). Reading the raw body hands the connection back to the pool; API errors still raise."""
    getattr(resp, "data", None)
