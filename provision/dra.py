"""DRA mode (stack = "dra", docs/dra.md): what the cluster serves and publishes, read once, and the checks over it.

Reads: the served API groups, DeviceClasses, ResourceSlices, ResourceClaims, the GPUCluster, the DRA driver's
pods (GET/LIST only). The judging is in provision/observe/dra.py (pure). The workload check (a pod with a claim
from a ResourceClaimTemplate) writes only in the suite's namespace: provision/dra_workload.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes.client.rest import ApiException

from provision.checks import Finding
from provision.observe import dra

GROUP, VERSION = "resource.k8s.io", "v1"
GC_GROUP, GC_VERSION, GC_PLURAL = "nvidia.com", "v1alpha1", "gpuclusters"
PLUGIN_APP = "nvidia-dra-driver-kubelet-plugin"      # the operator's DaemonSet (manifests/state-dra-driver)
CONTROLLER_APP = "nvidia-dra-driver-controller"      # the operator's Deployment
DEVICE_PLUGIN_APP = "nvidia-device-plugin-daemonset"
GPU_RESOURCE = "nvidia.com/gpu"


def _list(kube, plural: str, group: str = GROUP, version: str = VERSION) -> list[dict]:
    try:
        return kube.custom.list_cluster_custom_object(group, version, plural, _request_timeout=kube.timeout)["items"]
    except ApiException as exc:
        if exc.status == 404:
            return []
        raise


def list_gpu_clusters(kube) -> list[dict]:
    """GPUClusters; none when the CRD is not there (a chart before v26.7.0) or when an identity made from an older
    deploy/rbac/ may not read them (ClusterPolicy mode then works as before)."""
    try:
        return _list(kube, GC_PLURAL, GC_GROUP, GC_VERSION)
    except ApiException as exc:
        if exc.status == 403:
            return []
        raise


def resource_api_served(kube) -> bool:
    from kubernetes import client

    groups = client.ApisApi(kube.custom.api_client).get_api_versions(_request_timeout=kube.timeout).groups or []
    return any(v.group_version == dra.RESOURCE_API for g in groups if g.name == GROUP for v in g.versions or [])


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


def check_driver_pods(pods: list[dict], gpu_nodes: list[str], controller: bool = True) -> Finding:
    """The DRA driver's controller (Deployment; unless controller=False) and a ready kubelet-plugin pod on every
    node of `gpu_nodes`."""
    from provision.kube import ready

    def app(p: dict) -> str | None:
        return (p["metadata"].get("labels") or {}).get("app")

    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    problems: list[str] = []
    bad_nodes: list[str] = []
    if controller and not any(app(p) == CONTROLLER_APP and ready(p) for p in live):
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
                          "named")


def check_claims(state: DraState, pods: list[dict]) -> Finding:
    stuck = dra.stuck_claims(state.claims, pods)
    if not stuck:
        return Finding(True, "no ResourceClaim of gpu.nvidia.com is held for a pod that no longer exists")
    return Finding(False, "expected: every allocated gpu.nvidia.com claim is used by an existing pod. Found: "
                          + "; ".join(m for m, _ in stuck) + ". Fix: delete the claim (`kubectl delete "
                          "resourceclaim -n NS NAME`) once you are sure no workload needs it; its GPU is unusable until then")


def check_node_slices(state: DraState, node: str, uuids: list[str], host_driver: str | None,
                      mig_parents: dict[str, tuple[str, str]] | None = None) -> Finding:
    devices = dra.node_devices(state.slices, node)
    problems = dra.compare_devices(devices, uuids, host_driver, mig_parents)
    if not problems:
        migs = sum(1 for d in devices if d.uuid in (mig_parents or {}))
        return Finding(True, f"{node}: {len(devices)} device(s) published" + (f" ({migs} MIG)" if migs else "")
                       + f", UUIDs and driverVersion {host_driver} match nvidia-smi")
    return Finding(False, f"expected: {node}'s ResourceSlices (driver {dra.DRIVER}, pool {node}) list one device per "
                          f"GPU with nvidia-smi's UUIDs and driverVersion {host_driver}. Found: " + "; ".join(problems)
                   + f". Fix: read the log of the {PLUGIN_APP} pod on {node} (container gpus)")


def check_no_double_advertisement(node_obj: dict, pods: list[dict], node: str) -> Finding:
    alloc = ((node_obj.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE)
    plugin = [p["metadata"]["name"] for p in pods if (p["metadata"].get("labels") or {}).get("app") == DEVICE_PLUGIN_APP
              and (p.get("spec") or {}).get("nodeName") == node]
    if (alloc in (None, "0")) and not plugin:
        return Finding(True, f"{node} does not advertise {GPU_RESOURCE} besides its ResourceSlices")
    return Finding(False, f"expected: {node}'s GPUs only through DRA. Found: allocatable {GPU_RESOURCE}={alloc}"
                          + (f", device plugin pod(s) {plugin}" if plugin else "") + ": the same GPUs are handed out "
                          "twice. Fix: run one stack only (ClusterPolicy's device plugin or the GPUCluster's DRA "
                          "driver)")


# ----------------------------------------------------------------- a run's view (RunContext)
def state(ctx, refresh: bool = False) -> DraState:
    """The run's one read of the DRA objects (per process), like the Snapshot for the other kinds."""
    cached = getattr(ctx, "_dra_state", None)
    if cached is None or refresh:
        cached = DraState.read(ctx.kube)
        ctx._dra_state = cached
    return cached


def settle(ctx) -> str | None:
    """--provision in DRA mode, once before verifying: wait until GPUCluster gpu-cluster is ready and every GPU node
    published its slices (or the cluster_policy timeout; nothing moving for operands_settle seconds ends it
    early). None when settled, else what is still missing (the checks then say which node and why)."""
    import time

    s = ctx.settings
    deadline = time.monotonic() + s.timeout("cluster_policy")
    last, changed = None, time.monotonic()
    while True:
        st = state(ctx, refresh=True)
        missing = [] if check_gpu_cluster(st).ok else [f"GPUCluster {dra.GPU_CLUSTER} not ready"]
        missing += [f"{n}: no ResourceSlice" for n in ctx.gpu_nodes if not dra.node_devices(st.slices, n)]
        if not missing:
            return None
        if missing != last:
            last, changed = missing, time.monotonic()
        if time.monotonic() > deadline or time.monotonic() - changed > s.timeout("operands_settle"):
            return "DRA stack not settled: " + "; ".join(missing)
        time.sleep(1.0)


def _mig_on(ctx) -> bool:
    from provision import checks

    return any((checks._mig_enabled_gpus(ctx, n) or 0) > 0 for n in ctx.gpu_nodes)


def _smi(ctx, node: str) -> tuple[list[str], str | None, dict[str, tuple[str, str]]]:
    """(the UUIDs the node's slices must list, the host driver, MIG UUID -> (GPU UUID, profile)): a GPU with MIG
    enabled (nvidia-smi mig.mode.current) is published as its MIG devices (`nvidia-smi -L`), any other as itself."""
    from provision import expect
    from provision.mig import smi_list
    from provision.observe.nvidia_smi import NvidiaSmiParseError, parse_list, parse_mig_devices

    facts = expect.smi(ctx, node)
    if not facts.usable:
        raise HostUnusable(f"nvidia-smi on {node} does not work: {(facts.stderr or facts.stdout).strip()[:300]}")
    driver = next((g.driver_version for g in facts.gpus if g.driver_version), None)
    mig_on = {g.uuid for g in facts.gpus if (g.mig_mode or "").lower() == "enabled"}
    parents: dict[str, tuple[str, str]] = {}
    if mig_on:
        rc, text = smi_list(ctx, node)
        try:
            if rc != 0:
                raise NvidiaSmiParseError(f"exit {rc}: {text.strip()[:200]}")
            by_index = {g.index: g.uuid for g in parse_list(text)}
            parents = {m.uuid: (by_index[m.gpu_index], m.profile) for m in parse_mig_devices(text)}
        except (NvidiaSmiParseError, KeyError) as exc:
            raise HostUnusable(f"nvidia-smi -L on {node} (its GPUs have MIG enabled) gives no MIG devices to compare "
                               f"with: {exc}") from None
    uuids = [g.uuid for g in facts.gpus if g.uuid not in mig_on]
    uuids += [u for u, (gpu, _) in parents.items() if gpu in mig_on]
    return uuids, driver, parents


class HostUnusable(RuntimeError):
    """nvidia-smi on the node gives nothing to compare the slices with."""


def api_served(ctx) -> Finding:
    return check_api(state(ctx))


def device_classes(ctx) -> Finding:
    return check_device_classes(state(ctx), _mig_on(ctx))


def gpu_cluster_ready(ctx) -> Finding:
    return check_gpu_cluster(state(ctx))


def driver_controller(ctx) -> Finding:
    return check_driver_pods(ctx.kube.snapshot().pods, [], controller=True)


def kubelet_plugin(ctx, node: str) -> Finding:
    return check_driver_pods(ctx.kube.snapshot().pods, [node], controller=False)


def claims_released(ctx) -> Finding:
    """Stuck claims: pods are listed only in the namespaces that hold allocated gpu.nvidia.com claims."""
    st = state(ctx)
    namespaces = sorted({c["metadata"]["namespace"] for c in st.claims if (c.get("status") or {}).get("allocation")})
    pods: list[dict] = []
    for ns in namespaces:
        items = ctx.kube.core.list_namespaced_pod(ns, _request_timeout=ctx.kube.timeout).items
        pods += [ctx.kube.core.api_client.sanitize_for_serialization(p) for p in items]
    return check_claims(st, pods)


def node_slices(ctx, node: str) -> Finding:
    uuids, driver, parents = _smi(ctx, node)
    return check_node_slices(state(ctx), node, uuids, driver, parents)


def no_double_advertisement(ctx, node: str) -> Finding:
    snap = ctx.kube.snapshot()
    return check_no_double_advertisement(snap.nodes.get(node) or {}, snap.pods, node)
