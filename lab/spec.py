"""The lab's node spec (YAML): which simulated nodes exist and what their GPU hosts look like.

See lab/README.md for the format. Relative paths resolve from the spec file's folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

FAULTS = (
    "gpu-missing",            # nvidia-smi sees no GPU: "No devices were found"; nothing is advertised
    "driver-broken",          # nvidia-smi exits 9 with the real message
    "device-plugin-crash",    # device-plugin pod on the node crash-loops; nothing advertised
    "dcgm-down",              # the node's DCGM exporter endpoint refuses connections
    "vectoradd-fails",        # CUDA workloads fail: exit 1, real failure message
    "slow-advertise",         # the device plugin waits timing.slow_advertise_s before re-advertising
    "containerd-breaks",      # the toolkit writes a drop-in without runc (canonical/k8s-snap#1991)
    "dropin-version-too-high",  # the toolkit writes a drop-in with version 4 (NVIDIA/aicr#1688)
    # GPU health (features/gpu_health.feature); each fails exactly that node's scenario of the check
    "xid-79",                 # GPU 0 logged Xid 79: a kernel-log line (journalctl/dmesg) and DCGM_FI_DEV_XID_ERRORS 79
    "row-remap-pending",      # GPU 0: nvidia-smi -q -x remapped_row_pending Yes, 1 row remapped (uncorrectable)
    "ecc-dbe",                # GPU 0: 2 volatile (and aggregate) DRAM uncorrectable ECC errors in -q -x
    "pcie-x8",                # GPU 0: current_link_width 8x of 16x in -q -x
    "hw-slowdown",            # GPU 0: clocks_event_reason_hw_slowdown Active in -q -x
    "gpu-off-bus",            # lspci shows one NVIDIA GPU more than nvidia-smi lists (it fell off the bus)
    # DRA mode (stack dra, docs/dra.md): what the DRA kubelet plugin publishes (lab/twin/dra_plugin.py)
    "dra-plugin-never-publishes",  # the kubelet-plugin pod runs ready but publishes no ResourceSlice
    "dra-slice-missing-gpu",       # the node's ResourceSlice lacks its last GPU
    "dra-driver-version-differs",  # the slice's driverVersion is another driver than the host's
    "dra-claim-left-allocated",    # a ResourceClaim of a gone pod keeps the node's last GPU allocated
)
NFD_MODES = ("preinstalled", "chart")
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DEFAULT_SPEC = Path(__file__).resolve().parent / "specs" / "default.yaml"
SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
H200_CAPTURE = SHARED / "fixtures" / "nvidia-smi" / "h200"


class SpecError(ValueError):
    pass


@dataclass(frozen=True)
class Timing:
    """How long simulated components take (seconds); small defaults keep tests fast."""

    toolkit_ready_s: float = 0.5
    plugin_ready_s: float = 0.5
    pod_start_s: float = 0.2
    workload_s: float = 0.3
    slow_advertise_s: float = 3.0


@dataclass(frozen=True)
class NodeSpec:
    name: str
    gpus: int = 0
    product: str = "NVIDIA H200"
    driver: str = "580.159.04"
    compute_cap: str = "9.0"
    memory_mib: int | None = 143771   # None: unified memory (GB10), nvidia-smi prints [N/A]
    nvidia_smi: Path | None = None    # recorded outputs; default: the real H200 capture
    docker: bool = False
    control_plane: bool = False
    containerd_base_dir: str = "/var/lib/k8s-containerd"
    containerd_version: str = ""     # "" = the k8s_snap_track's (lab/build_node.py CONTAINERD_FOR_TRACK)
    arch: str = "amd64"
    files: dict[str, Path] = field(default_factory=dict)
    faults: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    # The host as NFD's worker reports it (feature.node.kubernetes.io/system-os_release.*, kernel-version.*):
    # the real operator refuses to reconcile GPU nodes without them.
    os_id: str = "ubuntu"
    os_version: str = "24.04"
    kernel: str = "6.8.0-60-generic"
    # Who put NFD's labels on the node: "preinstalled" (they are there from the start, as on a cluster whose
    # NFD ran before: a standalone NFD, or an earlier install), or "chart" (only the chart's NFD worker
    # DaemonSet labels it, as on a fresh cluster; the suite then needs --gpu-nodes to find GPU nodes).
    nfd: str = "preinstalled"
    k8s_snap_track: str = "1.34"     # picks containerd and the root config k8sd writes (docs/containerd.md)

    def __post_init__(self) -> None:
        if not self.containerd_version:
            from lab.build_node import CONTAINERD_FOR_TRACK

            track = CONTAINERD_FOR_TRACK.get(self.k8s_snap_track)
            if track is None:
                raise SpecError(f"node {self.name}: k8s_snap_track {self.k8s_snap_track!r} is not one the lab "
                                f"builds containerd for; known: {sorted(CONTAINERD_FOR_TRACK)}")
            object.__setattr__(self, "containerd_version", track.lstrip("v"))

    @property
    def is_gpu(self) -> bool:
        return self.gpus > 0


@dataclass(frozen=True)
class LabSpec:
    nodes: tuple[NodeSpec, ...]
    timing: Timing = Timing()
    source: Path | None = None

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


def _node(raw: dict, base: Path, where: str) -> NodeSpec:
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: each node must be a mapping, got {type(raw).__name__}")
    known = set(NodeSpec.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise SpecError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
    name = raw.get("name")
    if not isinstance(name, str) or not DNS1123.match(name) or len(name) > 253:
        raise SpecError(f"{where}: name {name!r} is not a valid Kubernetes node name (DNS-1123, lowercase)")
    gpus = raw.get("gpus", 0)
    if not isinstance(gpus, int) or isinstance(gpus, bool) or not 0 <= gpus <= 16:
        raise SpecError(f"{where} ({name}): gpus must be an integer 0..16, got {gpus!r}")
    faults = tuple(raw.get("faults") or ())
    bad = [f for f in faults if f not in FAULTS]
    if bad:
        raise SpecError(f"{where} ({name}): unknown faults {bad}; known: {list(FAULTS)}")
    if raw.get("nfd", "preinstalled") not in NFD_MODES:
        raise SpecError(f"{where} ({name}): nfd must be one of {list(NFD_MODES)}, got {raw.get('nfd')!r}")
    files: dict[str, Path] = {}
    for host_path, local in (raw.get("files") or {}).items():
        if not str(host_path).startswith("/"):
            raise SpecError(f"{where} ({name}): files key {host_path!r} must be an absolute host path")
        local_path = (base / str(local)).resolve()
        if not local_path.is_file():
            raise SpecError(f"{where} ({name}): files[{host_path!r}] -> {local_path} does not exist")
        files[str(host_path)] = local_path
    smi = raw.get("nvidia_smi")
    smi_path = (base / str(smi)).resolve() if smi else None
    if smi_path is not None and not smi_path.is_dir():
        raise SpecError(f"{where} ({name}): nvidia_smi folder {smi_path} does not exist")
    kwargs = {k: v for k, v in raw.items() if k not in ("files", "faults", "nvidia_smi")}
    if "driver" in kwargs:
        kwargs["driver"] = str(kwargs["driver"])
    if "k8s_snap_track" in kwargs:
        kwargs["k8s_snap_track"] = str(kwargs["k8s_snap_track"])
    if "compute_cap" in kwargs:
        kwargs["compute_cap"] = str(kwargs["compute_cap"])
    return NodeSpec(**kwargs, files=files, faults=faults, nvidia_smi=smi_path)


def load(path: Path | None = None) -> LabSpec:
    path = (path or DEFAULT_SPEC).resolve()
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise SpecError(f"lab spec {path} does not exist") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"lab spec {path} is not valid YAML: {exc}") from exc
    return parse(doc, path)


def parse(doc: object, path: Path) -> LabSpec:
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list) or not doc["nodes"]:
        raise SpecError(f"{path}: expected a mapping with a non-empty 'nodes' list")
    nodes = tuple(_node(raw, path.parent, f"{path}: nodes[{i}]") for i, raw in enumerate(doc["nodes"]))
    names = [n.name for n in nodes]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(f"{path}: duplicate node names {dupes}")
    timing_raw = doc.get("timing") or {}
    unknown = set(timing_raw) - set(Timing.__dataclass_fields__)
    if unknown:
        raise SpecError(f"{path}: unknown timing keys {sorted(unknown)}")
    return LabSpec(nodes=nodes, timing=Timing(**{k: float(v) for k, v in timing_raw.items()}), source=path)


def generated(gpu_nodes: int, faults: dict[str, list[str]] | None = None) -> dict:
    """A spec document with one control-plane node and N H200-like GPU nodes (benchmarks, scale tests)."""
    width = max(4, len(str(gpu_nodes)))
    nodes: list[dict] = [{"name": "cp-1", "control_plane": True, "gpus": 0}]
    for i in range(gpu_nodes):
        name = f"gpu-{i:0{width}d}"
        nodes.append({"name": name, "gpus": 1, "faults": (faults or {}).get(name, [])})
    return {"nodes": nodes}
