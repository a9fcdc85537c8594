"""The lab's node spec (YAML): which simulated nodes exist and what their GPU hosts look like.

See lab/README.md for the format. Relative paths resolve from the spec file's folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import yaml


class Fault(StrEnum):
    """The faults a lab node can play (its `faults:` list): one name each, used by the twin and the tests."""

    GPU_MISSING = "gpu-missing"  # nvidia-smi sees no GPU: "No devices were found"; nothing is advertised
    DRIVER_BROKEN = "driver-broken"  # nvidia-smi exits 9 with the real message
    DEVICE_PLUGIN_CRASH = "device-plugin-crash"  # device-plugin pod on the node crash-loops; nothing advertised
    DCGM_DOWN = "dcgm-down"  # the node's DCGM exporter endpoint refuses connections
    VECTORADD_FAILS = "vectoradd-fails"  # CUDA workloads fail: exit 1, real failure message
    SLOW_ADVERTISE = "slow-advertise"  # the device plugin waits timing.slow_advertise_s before re-advertising
    CONTAINERD_BREAKS = "containerd-breaks"  # the toolkit writes a drop-in without runc (canonical/k8s-snap#1991)
    DROPIN_VERSION_TOO_HIGH = "dropin-version-too-high"  # the toolkit writes a drop-in with version 4 (NVIDIA/aicr#1688)
    # GPU health (features/gpu_health.feature); each fails exactly that node's scenario of the check
    XID_79 = "xid-79"  # GPU 0 logged Xid 79: a kernel-log line (journalctl/dmesg) and DCGM_FI_DEV_XID_ERRORS 79
    ROW_REMAP_PENDING = "row-remap-pending"  # GPU 0: nvidia-smi -q -x remapped_row_pending Yes, 1 row remapped (uncorrectable)
    ECC_DBE = "ecc-dbe"  # GPU 0: 2 volatile (and aggregate) DRAM uncorrectable ECC errors in -q -x
    PCIE_X8 = "pcie-x8"  # GPU 0: current_link_width 8x of 16x in -q -x
    HW_SLOWDOWN = "hw-slowdown"  # GPU 0: clocks_event_reason_hw_slowdown Active in -q -x
    GPU_OFF_BUS = "gpu-off-bus"  # lspci shows one NVIDIA GPU more than nvidia-smi lists (it fell off the bus)
    # MIG (features/mig.feature)
    MIG_STATE_FAILED = "mig-state-failed"  # the MIG manager cannot apply nvidia.com/mig.config: state failed, no devices
    # issue 16: renamed sharing, CDI (each fails exactly that node's check, the message names the mode)
    CDI_SPEC_MISSING_GPU = "cdi-spec-missing-gpu"  # the device plugin's CDI spec (CDI mode) leaves out the node's last GPU
    RENAMED_COUNT_WRONG = "renamed-count-wrong"  # the renamed resource (nvidia.com/gpu.shared) is advertised one short
    # DRA mode (stack dra, docs/dra.md): what the DRA kubelet plugin publishes (lab/twin/dra_plugin.py)
    DRA_PLUGIN_NEVER_PUBLISHES = "dra-plugin-never-publishes"  # the kubelet-plugin pod runs ready but publishes no ResourceSlice
    DRA_SLICE_MISSING_GPU = "dra-slice-missing-gpu"  # the node's ResourceSlice lacks its last GPU
    DRA_DRIVER_VERSION_DIFFERS = "dra-driver-version-differs"  # the slice's driverVersion is another driver than the host's
    DRA_CLAIM_LEFT_ALLOCATED = "dra-claim-left-allocated"  # a ResourceClaim of a gone pod keeps the node's last GPU allocated


FAULTS = tuple(Fault)  # every fault, in the order above
yaml.SafeDumper.add_representer(Fault, lambda dumper, f: dumper.represent_str(str(f)))  # spec documents in tests
MIG_STRATEGIES = ("single", "mixed")
MIG_PROFILE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
SHARING_KEYS = ("config",)  # sharing: {config: KEY}: the node's nvidia.com/device-plugin.config label at start
NFD_MODES = ("preinstalled", "chart")
# the Kubernetes distribution a node runs: its containerd paths and config files, its kubelet version string and
# labels (lab/twin/hostview.py, lab/nodes.py; sources in lab/README.md "Distributions")
DISTRIBUTIONS = ("k8s-snap", "kubeadm", "k3s", "rke2", "microk8s")
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DEFAULT_SPEC = Path(__file__).resolve().parent / "specs" / "default.yaml"
SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
H200_CAPTURE = SHARED / "fixtures" / "nvidia-smi" / "h200"


class SpecError(ValueError):
    pass


def parse_faults(raw: object, where: str) -> tuple[Fault, ...]:
    """A node's `faults:` list as Fault members; an unknown name is refused naming every known one."""
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple) or not all(isinstance(f, str) for f in raw):
        raise SpecError(f"{where}: faults must be a list of fault names such as [gpu-missing], got {raw!r}; "
                        f"known faults: {', '.join(FAULTS)}")
    bad = [f for f in raw if f not in FAULTS]
    if bad:
        raise SpecError(f"{where}: unknown faults {bad}; known faults: {', '.join(FAULTS)} (lab/spec.py Fault "
                        "says what each plays)")
    return tuple(Fault(f) for f in raw)


@dataclass(frozen=True)
class Timing:
    """How long simulated components take (seconds); small defaults keep tests fast."""

    toolkit_ready_s: float = 0.5
    plugin_ready_s: float = 0.5
    pod_start_s: float = 0.2
    workload_s: float = 0.3
    slow_advertise_s: float = 3.0
    mig_apply_s: float = 1.0   # the MIG manager: nvidia.com/mig.config.state pending -> success


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
    faults: tuple[Fault, ...] = ()
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
    distribution: str = "k8s-snap"   # k8s-snap | kubeadm | k3s | rke2 | microk8s (DISTRIBUTIONS)
    # MIG: {"strategy": single|mixed, "profile": <mig-parted config>, "capable": bool}, None = no MIG key. profile and
    # strategy are the node's desired state (--lab hands them to the suite as mig_profiles / mig_strategies, as an
    # inventory would); capable is the hardware (GFD's nvidia.com/mig.capable). The GPUs start with MIG disabled,
    # unless preset: [{profile: count} | null per GPU index] says they are partitioned from the start (an admin ran
    # mig-parted on the host: what DRA mode needs, it has no MIG manager; lab/twin/mig.py preset_state).
    mig: dict | None = None
    # issue 16: {config: KEY} labels the node nvidia.com/device-plugin.config=KEY from the start (a per-node
    # profile an earlier installer set, e.g. the playbooks' dgx-spark / consumer); what the key holds is the
    # ConfigMap's (the suite's desired state, sharing_profiles), as on a real cluster
    sharing: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "faults", parse_faults(self.faults, f"node {self.name}"))  # Fault members, known ones
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
    faults = parse_faults(raw.get("faults"), f"{where} ({name})")
    if raw.get("distribution", "k8s-snap") not in DISTRIBUTIONS:
        raise SpecError(f"{where} ({name}): distribution must be one of {list(DISTRIBUTIONS)}, got "
                        f"{raw.get('distribution')!r}")
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
    sharing = raw.get("sharing") or {}
    if not isinstance(sharing, dict) or set(sharing) - set(SHARING_KEYS) or not all(
            isinstance(v, str) and DNS1123.match(v) for v in sharing.values()):
        raise SpecError(f"{where} ({name}): sharing must be a mapping with keys {list(SHARING_KEYS)} whose values "
                        f"are config keys (DNS-1123, e.g. dgx-spark), got {sharing!r}")
    smi = raw.get("nvidia_smi")
    smi_path = (base / str(smi)).resolve() if smi else None
    if smi_path is not None and not smi_path.is_dir():
        raise SpecError(f"{where} ({name}): nvidia_smi folder {smi_path} does not exist")
    if raw.get("mig") is not None:
        raw = {**raw, "mig": _mig(raw["mig"], f"{where} ({name})")}
    if Fault.MIG_STATE_FAILED in faults and not raw.get("mig"):
        raise SpecError(f"{where} ({name}): fault mig-state-failed needs a MIG node: add mig: {{profile: ...}}")
    kwargs = {k: v for k, v in raw.items() if k not in ("files", "faults", "nvidia_smi", "sharing")}
    kwargs["sharing"] = dict(sharing)
    if "driver" in kwargs:
        kwargs["driver"] = str(kwargs["driver"])
    if "k8s_snap_track" in kwargs:
        kwargs["k8s_snap_track"] = str(kwargs["k8s_snap_track"])
    if "compute_cap" in kwargs:
        kwargs["compute_cap"] = str(kwargs["compute_cap"])
    return NodeSpec(**kwargs, files=files, faults=faults, nvidia_smi=smi_path)


def _mig(raw: object, where: str) -> dict:
    """The node's `mig` key: {strategy: single|mixed (default single), profile: a mig-parted config name,
    capable: bool (default true)}."""
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: mig must be a mapping {{strategy, profile, capable}}, got {raw!r}")
    unknown = set(raw) - {"strategy", "profile", "capable", "preset"}
    if unknown:
        raise SpecError(f"{where}: unknown mig keys {sorted(unknown)}; allowed: capable, preset, profile, strategy")
    strategy = raw.get("strategy", "single")
    if strategy not in MIG_STRATEGIES:
        raise SpecError(f"{where}: mig.strategy must be one of {list(MIG_STRATEGIES)}, got {strategy!r}")
    profile = raw.get("profile")
    if profile is not None and (not isinstance(profile, str) or not MIG_PROFILE.fullmatch(profile)):
        raise SpecError(f"{where}: mig.profile must be a mig-parted config name such as all-1g.10gb or all-balanced "
                        f"(a label value), got {profile!r}")
    capable = raw.get("capable", True)
    if not isinstance(capable, bool):
        raise SpecError(f"{where}: mig.capable must be true or false, got {capable!r}")
    out = {"strategy": strategy, "profile": profile, "capable": capable}
    if raw.get("preset") is not None:
        out["preset"] = _mig_preset(raw["preset"], where)
    return out


def _mig_preset(raw: object, where: str) -> list[dict[str, int] | None]:
    """mig.preset: one entry per GPU index, {MIG profile: count} (MIG on, e.g. {"1g.18gb": 7}) or null (MIG off)."""
    ok = isinstance(raw, list) and all(
        v is None or (isinstance(v, dict) and v and all(
            isinstance(k, str) and re.fullmatch(r"[0-9]+g\.[0-9]+gb(\+me)?", k) and isinstance(n, int) and n > 0
            for k, n in v.items()))
        for v in raw)
    if not ok:
        raise SpecError(f"{where}: mig.preset must be a list with one entry per GPU index, each {{profile: count}} "
                        f"(such as {{1g.18gb: 7}}) or null for MIG off, got {raw!r}")
    return [None if v is None else {str(k): int(n) for k, n in v.items()} for v in raw]


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
