"""Dynamic Resource Allocation (resource.k8s.io/v1) as the NVIDIA DRA driver publishes it: pure evaluators over
objects already read from the API (ResourceSlices, ResourceClaims, Pods, the two GPU Operator CRs), no I/O.

The slice layout is the DRA driver's (NVIDIA/k8s-dra-driver-gpu cmd/gpu-kubelet-plugin, docs/dra.md): one pool
per node named after the node, driver ``gpu.nvidia.com``, device ``gpu-<minor>`` with attributes ``type``
("gpu" or "mig"), ``uuid``, ``productName``, ``brand``, ``architecture``, ``cudaComputeCapability``,
``driverVersion``, ``cudaDriverVersion`` (versions as semver: 580.159.04 is published as 580.159.4),
``resource.kubernetes.io/pciBusID`` (and ``pcieRoot``), capacity ``memory``.
"""

from __future__ import annotations

from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

DRIVER = "gpu.nvidia.com"
GPU_CLASS = "gpu.nvidia.com"
MIG_CLASS = "mig.nvidia.com"
RESOURCE_API = "resource.k8s.io/v1"
GPU_CLUSTER = "gpu-cluster"
STACKS = ("clusterpolicy", "dra")
# GPU sharing in DRA mode: the GpuConfig sharing strategy of the claim, and the DRA driver's feature gate it needs
# (NVIDIA/k8s-dra-driver-gpu pkg/featuregates: both alpha, off by default; GpuConfig.Normalize / Validate)
SHARING_GATES = {"TimeSlicing": "TimeSlicingSettings", "MPS": "MPSSupport"}
# The chart's own words (values.yaml of gpu-operator v26.7.0, above gpuCluster:), quoted in the refusal.
CHART_WORDS = ("To enable the GPUCluster (DRA) enablement stack, set gpuCluster.deployCR=true and "
               "clusterPolicy.deployCR=false. It is an invalid configuration for both CRs to exist.")


@dataclass(frozen=True)
class SliceDevice:
    """One device of a node's pool, as the driver published it."""

    slice: str
    name: str
    type: str | None
    uuid: str | None
    product: str | None
    driver_version: str | None
    cuda_driver_version: str | None
    pci_bus_id: str | None
    memory: str | None
    parent_uuid: str | None = None   # MIG devices: the GPU they are a partition of
    profile: str | None = None       # MIG devices: the MIG profile (1g.18gb)


def _attr(attrs: dict, key: str) -> str | None:
    value = attrs.get(key) or {}
    for kind in ("string", "version", "int", "bool"):
        if kind in value:
            return str(value[kind])
    return None


def node_devices(slices: list[dict], node: str, driver: str = DRIVER) -> list[SliceDevice]:
    """The devices the driver published for `node`: slices of `driver` whose pool is the node (and that are bound
    to it). Only the newest pool generation counts: older slices of the pool are being replaced."""
    mine = [s for s in slices if (s.get("spec") or {}).get("driver") == driver
            and ((s.get("spec") or {}).get("pool") or {}).get("name") == node
            and (s.get("spec") or {}).get("nodeName") in (node, None)]
    if not mine:
        return []
    newest = max(int(s["spec"]["pool"].get("generation", 0)) for s in mine)
    out = []
    for s in sorted(mine, key=lambda x: x["metadata"]["name"]):
        if int(s["spec"]["pool"].get("generation", 0)) != newest:
            continue
        for d in s["spec"].get("devices") or []:
            attrs = d.get("attributes") or {}
            cap = ((d.get("capacity") or {}).get("memory") or {}).get("value")
            out.append(SliceDevice(s["metadata"]["name"], d["name"], _attr(attrs, "type"), _attr(attrs, "uuid"),
                                   _attr(attrs, "productName"), _attr(attrs, "driverVersion"),
                                   _attr(attrs, "cudaDriverVersion"), _attr(attrs, "resource.kubernetes.io/pciBusID"),
                                   None if cap is None else str(cap), _attr(attrs, "parentUUID"),
                                   _attr(attrs, "profile")))
    return out


def same_version(published: str | None, host: str) -> bool:
    """The driver publishes versions as semver (Masterminds: leading zeros dropped, 580.159.04 -> 580.159.4)."""
    if published is None:
        return False
    try:
        return Version(published) == Version(host)
    except InvalidVersion:
        return published == host


def compare_devices(devices: list[SliceDevice], uuids: list[str], host_driver: str | None,
                    mig_parents: dict[str, tuple[str, str]] | None = None) -> list[str]:
    """Problems of a node's published devices against its nvidia-smi: one device per GPU (full GPUs, or MIG devices
    when the GPUs are partitioned: the uuids given are the ones nvidia-smi lists), the same UUIDs, the host's
    driver version. `mig_parents`: MIG UUID -> (its GPU's UUID, its profile) as `nvidia-smi -L` lists them; such a
    device must be published with type "mig", that parentUUID and profile (static MIG: the driver publishes the
    MIG devices of a MIG-enabled GPU, not the GPU), every other one with type "gpu". Empty: conformant."""
    problems: list[str] = []
    if not devices:
        return [f"no ResourceSlice of driver {DRIVER} for this node's pool: the DRA kubelet plugin published "
                f"nothing (nvidia-smi lists {len(uuids)} GPU(s))"]
    published = [d.uuid for d in devices if d.uuid]
    missing = [u for u in uuids if u not in published]
    extra = [u for u in published if u not in uuids]
    dupes = sorted({u for u in published if published.count(u) > 1})
    if missing:
        problems.append(f"nvidia-smi's GPU(s) {missing} are not in the node's ResourceSlices "
                        f"(published: {[f'{d.name}={d.uuid}' for d in devices]})")
    mig_parents = mig_parents or {}
    for d in devices:
        if d.uuid in mig_parents:
            parent, profile = mig_parents[d.uuid]
            if (d.type, d.parent_uuid, d.profile) != ("mig", parent, profile):
                problems.append(f"{d.name} ({d.uuid}) is published with type {d.type!r}, parentUUID {d.parent_uuid!r}, "
                                f"profile {d.profile!r}; nvidia-smi -L lists it as a {profile} MIG device of {parent}")
        elif d.uuid in uuids and d.type != "gpu":
            problems.append(f"{d.name} ({d.uuid}) is published with type {d.type!r}; nvidia-smi lists it as a GPU "
                            "without MIG (type 'gpu')")
    if extra:
        problems.append(f"the node's ResourceSlices publish UUID(s) {extra} that nvidia-smi does not list")
    if dupes:
        problems.append(f"UUID(s) {dupes} are published more than once")
    no_uuid = [d.name for d in devices if not d.uuid]
    if no_uuid:
        problems.append(f"device(s) {no_uuid} have no uuid attribute")
    if host_driver:
        wrong = [f"{d.name}: {d.driver_version}" for d in devices if not same_version(d.driver_version, host_driver)]
        if wrong:
            problems.append(f"driverVersion differs from the host driver {host_driver}: {wrong}")
    return problems


@dataclass(frozen=True)
class Stack:
    """Which GPU stack a cluster runs: "clusterpolicy", "dra", or None (neither CR); error when it is invalid."""

    mode: str | None
    error: str | None = None


def detect_stack(cluster_policies: list[dict], gpu_clusters: list[dict]) -> Stack:
    cps = sorted(o["metadata"]["name"] for o in cluster_policies)
    gcs = sorted(o["metadata"]["name"] for o in gpu_clusters)
    if cps and gcs:
        return Stack(None, f"the cluster has both a ClusterPolicy ({', '.join(cps)}) and a GPUCluster "
                           f"({', '.join(gcs)}): the GPU Operator chart says \"{CHART_WORDS}\" Delete the one of the "
                           "stack you do not run (the operator has no migration path between them)")
    if gcs:
        return Stack("dra")
    if cps:
        return Stack("clusterpolicy")
    return Stack(None)


def switch_refusal(installed: str, wanted: str) -> str:
    return (f"the cluster runs the GPU Operator's {installed} stack and the desired state is {wanted}: the operator "
            "has no migration path between the ClusterPolicy (device plugin) and the GPUCluster (DRA) stacks, "
            "and switching drains every GPU workload of the cluster. Nothing was changed. Set stack = "
            f"\"{installed}\" to keep it, or pass --switch-stack to switch on purpose")


def sharing_values(strategy: str) -> dict:
    """Chart values that let the DRA driver honour a claim's GpuConfig sharing `strategy` (none: {})."""
    if strategy == "none":
        return {}
    return {"draDriver": {"featureGates": {SHARING_GATES[strategy]: True}}}


def stack_values(stack: str) -> dict:
    """The chart values that select a stack (gpu-operator v26.7.0 values.yaml: clusterPolicy.deployCR and
    gpuCluster.deployCR, which must not both be true)."""
    if stack not in STACKS:
        raise ValueError(f"stack {stack!r}: one of {STACKS}")
    dra = stack == "dra"
    return {"clusterPolicy": {"deployCR": not dra}, "gpuCluster": {"deployCR": dra}}


def stuck_claims(claims: list[dict], pods: list[dict]) -> list[tuple[str, tuple[str, ...]]]:
    """ResourceClaims of the driver that stay allocated although no existing pod uses them: reserved for pods that
    are gone (or replaced), or allocated and reserved for nobody and named by no pod. The resource claim controller
    deallocates a claim whose last consumer went away only when it carries its finalizer; a claim without it
    (or a plugin that could not unprepare) holds the GPU for good."""
    uids = {p["metadata"]["uid"] for p in pods}
    named: set[tuple[str, str]] = set()
    for p in pods:
        ns = p["metadata"]["namespace"]
        for rc in (p.get("spec") or {}).get("resourceClaims") or []:
            if rc.get("resourceClaimName"):
                named.add((ns, rc["resourceClaimName"]))
        for st in (p.get("status") or {}).get("resourceClaimStatuses") or []:
            if st.get("resourceClaimName"):
                named.add((ns, st["resourceClaimName"]))
    out = []
    for c in claims:
        alloc = (c.get("status") or {}).get("allocation")
        results = ((alloc or {}).get("devices") or {}).get("results") or []
        if not any(r.get("driver") == DRIVER for r in results):
            continue
        md = c["metadata"]
        mine = [r for r in results if r.get("driver") == DRIVER]
        where = ", ".join(f"{r.get('pool')}/{r.get('device')}" for r in mine)
        pools = tuple(sorted({str(r.get("pool")) for r in mine}))
        reserved = (c.get("status") or {}).get("reservedFor") or []
        gone = [r.get("name") for r in reserved if r.get("resource") == "pods" and r.get("uid") not in uids]
        if gone:
            out.append((f"{md['namespace']}/{md['name']} ({where}) is reserved for pod(s) {gone} that no longer exist",
                        pools))
        elif not reserved and (md["namespace"], md["name"]) not in named:
            out.append((f"{md['namespace']}/{md['name']} ({where}) is allocated but no pod uses it", pools))
    return out

