"""DRA mode (stack = "dra", docs/dra.md): what the cluster serves and publishes, read once, and the checks over it.

Reads: the served API groups, DeviceClasses, ResourceSlices, ResourceClaims, the GPUCluster, the DRA driver's
pods (GET/LIST only). The judging is in provision/observe/dra.py (pure). The workload check (a pod with a claim
from a ResourceClaimTemplate) writes only in the suite's namespace: provision/dra_workload.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kubernetes.client.rest import ApiException

from provision.observe import dra

GROUP, VERSION = "resource.k8s.io", "v1"
GC_GROUP, GC_VERSION, GC_PLURAL = "nvidia.com", "v1alpha1", "gpuclusters"
PLUGIN_APP = "nvidia-dra-driver-kubelet-plugin"      # the operator's DaemonSet (manifests/state-dra-driver)
CONTROLLER_APP = "nvidia-dra-driver-controller"      # the operator's Deployment
DEVICE_PLUGIN_APP = "nvidia-device-plugin-daemonset"
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True)
class Finding:
    ok: bool
    message: str
    nodes: tuple[str, ...] = field(default_factory=tuple)  # nodes the problem is about (cluster-wide checks)


def _list(kube, plural: str, group: str = GROUP, version: str = VERSION) -> list[dict]:
    try:
        return kube.custom.list_cluster_custom_object(group, version, plural, _request_timeout=kube.timeout)["items"]
    except ApiException as exc:
        if exc.status == 404:
            return []
        raise


def list_gpu_clusters(kube) -> list[dict]:
    return _list(kube, GC_PLURAL, GC_GROUP, GC_VERSION)


def resource_api_served(kube) -> bool:
    try:
        groups = kube.custom.api_client.call_api("/apis/resource.k8s.io", "GET", auth_settings=["BearerToken"],
                                                 response_type="object", _return_http_data_only=True,
                                                 _request_timeout=kube.timeout)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return any(v.get("groupVersion") == dra.RESOURCE_API for v in (groups or {}).get("versions") or [])


@dataclass
class DraState:
    """One read of the cluster's DRA objects (LISTs), shared by the per-node checks of a run."""

    served: bool
    device_classes: list[str]
    slices: list[dict]
    claims: list[dict]
    gpu_clusters: list[dict]

    @classmethod
    def read(cls, kube) -> DraState:
        served = resource_api_served(kube)
        return cls(served,
                   sorted(o["metadata"]["name"] for o in _list(kube, "deviceclasses")) if served else [],
                   _list(kube, "resourceslices") if served else [],
                   _list(kube, "resourceclaims") if served else [],
                   list_gpu_clusters(kube))


def check_api(state: DraState) -> Finding:
    if state.served:
        return Finding(True, f"{dra.RESOURCE_API} is served")
    return Finding(False, f"expected: the apiserver serves {dra.RESOURCE_API} (DRA; on by default from Kubernetes "
                          "1.34). Found: it does not. Fix: enable the resource.k8s.io/v1 API and the DRA feature "
                          "gates of your Kubernetes version")


def check_device_classes(state: DraState, mig: bool) -> Finding:
    want = [dra.GPU_CLASS] + ([dra.MIG_CLASS] if mig else [])
    missing = [c for c in want if c not in state.device_classes]
    if not missing:
        return Finding(True, f"DeviceClasses {want} exist")
    return Finding(False, f"expected: DeviceClasses {want}. Found: {state.device_classes or 'none'}. Fix: the GPU "
                          "Operator's GPUCluster renders them (state-dra-driver): check GPUCluster gpu-cluster and "
                          "the operator's log")


def check_gpu_cluster(state: DraState) -> Finding:
    gc = next((o for o in state.gpu_clusters if o["metadata"]["name"] == dra.GPU_CLUSTER), None)
    if gc is None:
        return Finding(False, f"expected: GPUCluster {dra.GPU_CLUSTER}. Found: "
                              f"{[o['metadata']['name'] for o in state.gpu_clusters] or 'none'}. Fix: install the "
                              "chart with gpuCluster.deployCR=true and clusterPolicy.deployCR=false")
    status = gc.get("status") or {}
    if status.get("state") == "ready":
        return Finding(True, f"GPUCluster {dra.GPU_CLUSTER} is ready")
    conds = "; ".join(f"{c.get('type')}={c.get('status')} ({c.get('reason')}: {c.get('message') or '-'})"
                      for c in status.get("conditions") or [])
    return Finding(False, f"expected: GPUCluster {dra.GPU_CLUSTER} state ready. Found: {status.get('state')!r}; "
                          f"conditions: {conds or 'none'}. Fix: read the operator's log and the DRA operand pods")


def check_driver_pods(pods: list[dict], gpu_nodes: list[str]) -> Finding:
    """The DRA driver's controller (Deployment) and a ready kubelet-plugin pod on every GPU node."""
    from provision.kube import ready

    def app(p: dict) -> str | None:
        return (p["metadata"].get("labels") or {}).get("app")

    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    problems, bad_nodes = [], []
    if not any(app(p) == CONTROLLER_APP and ready(p) for p in live):
        problems.append(f"no ready {CONTROLLER_APP} pod")
    for node in gpu_nodes:
        mine = [p for p in live if app(p) == PLUGIN_APP and (p.get("spec") or {}).get("nodeName") == node]
        if not any(ready(p) for p in mine):
            bad_nodes.append(node)
            phases = [f"{p['metadata']['name']} {(p.get('status') or {}).get('phase')}" for p in mine]
            problems.append(f"{node}: no ready {PLUGIN_APP} pod ({', '.join(phases) or 'none'})")
    if not problems:
        return Finding(True, f"{CONTROLLER_APP} ready; {PLUGIN_APP} ready on {len(gpu_nodes)} GPU node(s)")
    return Finding(False, "expected: the DRA driver's controller and a ready kubelet-plugin pod on every GPU node. "
                          "Found: " + "; ".join(problems) + ". Fix: `kubectl -n <operator ns> describe pod` the pods "
                          "named", tuple(bad_nodes))


def check_claims(state: DraState, pods: list[dict]) -> Finding:
    stuck = dra.stuck_claims(state.claims, pods)
    if not stuck:
        return Finding(True, "no ResourceClaim of gpu.nvidia.com is held for a pod that no longer exists")
    nodes = sorted({n for _, pools in stuck for n in pools})
    return Finding(False, "expected: every allocated gpu.nvidia.com claim is used by an existing pod. Found: "
                          + "; ".join(m for m, _ in stuck) + ". Fix: delete the claim (`kubectl delete "
                          "resourceclaim -n NS NAME`) once you are sure no workload needs it; its GPU is unusable until then",
                   tuple(nodes))


def check_node_slices(state: DraState, node: str, uuids: list[str], host_driver: str | None) -> Finding:
    devices = dra.node_devices(state.slices, node)
    problems = dra.compare_devices(devices, uuids, host_driver)
    if not problems:
        return Finding(True, f"{node}: {len(devices)} device(s) published, UUIDs and driverVersion {host_driver} "
                             "match nvidia-smi")
    return Finding(False, f"expected: {node}'s ResourceSlices (driver {dra.DRIVER}, pool {node}) list one device per "
                          f"GPU with nvidia-smi's UUIDs and driverVersion {host_driver}. Found: " + "; ".join(problems)
                   + f". Fix: read the log of the {PLUGIN_APP} pod on {node} (container gpus)", (node,))


def check_no_double_advertisement(node_obj: dict, pods: list[dict], node: str) -> Finding:
    alloc = ((node_obj.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE)
    plugin = [p["metadata"]["name"] for p in pods if (p["metadata"].get("labels") or {}).get("app") == DEVICE_PLUGIN_APP
              and (p.get("spec") or {}).get("nodeName") == node]
    if (alloc in (None, "0")) and not plugin:
        return Finding(True, f"{node} does not advertise {GPU_RESOURCE} besides its ResourceSlices")
    return Finding(False, f"expected: {node}'s GPUs only through DRA. Found: allocatable {GPU_RESOURCE}={alloc}"
                          + (f", device plugin pod(s) {plugin}" if plugin else "") + ": the same GPUs are handed out "
                          "twice. Fix: run one stack only (ClusterPolicy's device plugin or the GPUCluster's DRA "
                          "driver)", (node,))
