"""MIG in the twin: what the MIG manager does to a node's GPUs and what the GPU operands then see.

The MIG manager (the real operator's nvidia-mig-manager DaemonSet, scheduled where the operator put
nvidia.com/gpu.deploy.mig-manager=true) reads the node's nvidia.com/mig.config label and the mig-parted config
mounted at /mig-parted-config (the operator's default-mig-parted-config ConfigMap), partitions the GPUs and
reports nvidia.com/mig.config.state pending -> success (or failed). The partitions live in
``<host root>/.twin/mig.json``; nvidia-smi (-L, mig.mode.current), the device plugin, GFD and the DCGM exporter
read them. The twin's own reading of the formats (independent of the suite's provision/observe/mig.py):

- mig-parted config: ``mig-configs: {name: [{devices: all | [i], device-filter: [0x...], mig-enabled,
  mig-devices: {profile: n}}]}``; a GPU takes the first entry whose devices and device-filter match it.
- nvidia-smi -L: MIG lines as ../shared/fixtures/real-world/nvidia-smi/h100-mig-all-1g10gb-L.txt prints them,
  largest profile first (h100-mig-mixed-L.txt).
- GFD (NVIDIA/k8s-device-plugin internal/lm/mig-strategy.go, resource.go): full-GPU labels of MIG-enabled GPUs
  carry no sharing (replicas 0); single: nvidia.com/gpu.* describe the one MIG profile (<model>-MIG-<profile>,
  INVALID when the GPUs mix profiles, have MIG off beside MIG on, or have no devices); mixed:
  nvidia.com/mig-<profile>.*. The per-profile attributes (memory, multiprocessors, slices, engines) are the real
  labels of ../shared/fixtures/real-world/k8s/h100-mig-mixed-node-labels.json and
  a100-mig-mixed-gfd-labels-driver450.json where they have the profile.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path

import yaml

from lab.spec import SHARED, NodeSpec

STATE_FILE = "mig.json"
CONFIG_LABEL = "nvidia.com/mig.config"
STATE_LABEL = "nvidia.com/mig.config.state"
CAPABLE_LABEL = "nvidia.com/mig.capable"
MIG_PARTED_MOUNT = "/mig-parted-config"
# PCI device IDs the mig-parted config's device-filter names: H100 80GB and A100 40GB from the comments of the
# operator's default-mig-parted-config, A100-SXM4-80GB from the -q -x fixture (pci_device_id 20B210DE), H200 from
# the H200 capture (233510DE).
DEVICE_IDS = {"NVIDIA H100 80GB HBM3": "0X233010DE", "NVIDIA A100-SXM4-40GB": "0X20B010DE",
              "A100-SXM4-40GB": "0X20B010DE", "NVIDIA A100-SXM4-80GB": "0X20B210DE", "NVIDIA H200": "0X233510DE"}
_GI_START = {1: 7, 2: 3, 3: 1, 4: 0, 7: 0}   # GPU instance IDs as the R450 fixture numbers 1g devices (7..13)
_LABEL_FIXTURES = ("k8s/h100-mig-mixed-node-labels.json", "k8s/a100-mig-mixed-gfd-labels-driver450.json")
_ATTRS = ("memory", "multiprocessors", "slices.gi", "slices.ci", "engines.copy", "engines.decoder",
          "engines.encoder", "engines.jpeg", "engines.ofa")


class MigError(ValueError):
    """What the MIG manager logs when it cannot apply a config (the state goes to failed)."""


def _path(root: Path) -> Path:
    return root / ".twin" / STATE_FILE


def read(root: Path) -> dict:
    """{"config", "state", "gpus": {index: [{profile, gi, ci, uuid}]}} ({} = MIG never configured)."""
    try:
        return json.loads(_path(root).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write(root: Path, state: dict) -> None:
    p = _path(root)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(p)


def enabled(state: dict) -> dict[int, list[dict]]:
    return {int(k): v for k, v in (state.get("gpus") or {}).items()}


# ------------------------------------------------------------------------------------------------ the MIG manager
def layout(config_text: str, name: str, node: NodeSpec) -> dict[int, dict[str, int] | None]:
    """GPU index -> {profile: count} (None: MIG off) that config `name` gives the node's GPUs."""
    try:
        doc = yaml.safe_load(config_text) or {}
    except yaml.YAMLError as exc:
        raise MigError(f"error parsing mig-parted config: {exc}") from exc
    configs = doc.get("mig-configs") if isinstance(doc, dict) else None
    if not isinstance(configs, dict):
        raise MigError("error parsing mig-parted config: no mig-configs")
    if name not in configs:
        raise MigError(f"error selecting MIG config: config {name!r} not found in mig-parted config")
    device_id = DEVICE_IDS.get(node.product)
    out: dict[int, dict[str, int] | None] = {}
    for index in range(node.gpus):
        for entry in configs[name] or []:
            devices = entry.get("devices", "all")
            filters = entry.get("device-filter") or []
            filters = [filters] if isinstance(filters, str) else filters
            if devices != "all" and index not in devices:
                continue
            if filters and (device_id is None or device_id not in {str(f).upper() for f in filters}):
                continue
            out[index] = {str(k): int(v) for k, v in (entry.get("mig-devices") or {}).items() if v} if entry.get(
                "mig-enabled") else None
            break
        else:
            raise MigError(f"error applying MIG config {name!r}: no entry matches GPU {index} ({node.product}, "
                           f"device ID {device_id})")
    return out


def _size(profile: str) -> int:
    m = re.match(r"([0-9]+)g\.", profile)
    return int(m.group(1)) if m else 1


MEMORY_SLICES = 8   # memory slices of an A100 / H100 / H200 (7 compute slices)


def memory_slices(profile: str, gpu_memory_mib: int | None) -> int:
    """Memory slices a profile spans (NVML's GPU instance placement size): its memory over an eighth of the GPU's
    (H200: 1g.18gb 1, 1g.35gb 2, 3g.71gb 4, 7g.141gb 8). The twin's approximation of NVML's placement table."""
    m = re.match(r"[0-9]+g\.([0-9]+)gb", profile)
    if not m or not gpu_memory_mib:
        return min(MEMORY_SLICES, _size(profile))
    return max(1, min(MEMORY_SLICES, round(int(m.group(1)) * MEMORY_SLICES / (gpu_memory_mib / 1024))))


def _starts(size: int) -> list[int]:
    """Placement starts of a `size`-slice instance: multiples of the size; a 1-slice instance cannot start at the 8th
    memory slice (there are 7 compute slices)."""
    return [s for s in range(0, MEMORY_SLICES - size + 1, size) if not (size == 1 and s == MEMORY_SLICES - 1)]


def placements(sizes: list[int]) -> list[int]:
    """A placement start for each instance (sizes in memory slices) without overlap, the lowest first (a search, as
    NVML finds room for H100 all-balanced: 3g at 4, 2g at 0, 1g at 2 and 3); sequential starts when none fits."""
    def fit(i: int, used: frozenset[int]) -> list[int] | None:
        if i == len(sizes):
            return []
        for start in _starts(sizes[i]):
            span = frozenset(range(start, start + sizes[i]))
            if not used & span and (rest := fit(i + 1, used | span)) is not None:
                return [start, *rest]
        return None
    found = fit(0, frozenset())
    if found is not None:
        return found
    out, at = [], 0
    for size in sizes:
        out.append(at)
        at += size
    return out


def partition(node: NodeSpec, gpu_uuids: list[str], per_gpu: dict[int, dict[str, int] | None], name: str) -> dict:
    """The state after the MIG manager applied `per_gpu`: MIG devices with GPU instance IDs, placements (start,
    size in memory slices) and MIG UUIDs."""
    gpus: dict[str, list[dict]] = {}
    for index, want in sorted(per_gpu.items()):
        if want is None:
            continue
        devices, next_gi = [], dict(_GI_START)
        for profile in sorted(want, key=lambda p: (-_size(p), p)):
            for _ in range(want[profile]):
                gi = next_gi.setdefault(_size(profile), 0)
                next_gi[_size(profile)] = gi + 1
                mig_uuid = uuid.uuid5(uuid.NAMESPACE_URL, f"{node.name}/{gpu_uuids[index]}/{gi}")
                devices.append({"profile": profile, "gi": gi, "ci": 0, "uuid": f"MIG-{mig_uuid}",
                                "size": memory_slices(profile, node.memory_mib)})
        for d, start in zip(devices, placements([d["size"] for d in devices]), strict=True):
            d["start"] = start
        gpus[str(index)] = devices
    return {"config": name, "state": "success", "gpus": gpus}


PRESET = "preset"   # the state's config name for GPUs partitioned before the lab started (spec mig.preset)


def preset_state(node: NodeSpec, gpu_uuids: list[str]) -> dict:
    """The MIG state of a node whose spec presets its partitions (mig.preset: {profile: count} or None per GPU)."""
    preset = (node.mig or {}).get("preset") or []
    per_gpu = {i: preset[i] if i < len(preset) else None for i in range(len(gpu_uuids))}
    return partition(node, gpu_uuids, per_gpu, PRESET)


def seed_preset(root: Path, node: NodeSpec) -> None:
    """Write the preset partitions of a node at the lab's start (once: a restarted lab keeps its state)."""
    from lab.twin.gpus import gpus_for

    if (node.mig or {}).get("preset") and not read(root):
        write(root, preset_state(node, [g.uuid for g in gpus_for(node)]))


# ------------------------------------------------------------------------------------------------ nvidia-smi
def list_lines(records: list, state: dict) -> str:
    """nvidia-smi -L with the MIG devices under their GPU (the real layout: two-space indent, profile padded to
    12, device index right-aligned to 2)."""
    on = enabled(state)
    out = []
    for r in records:
        out.append(f"GPU {r.index}: {r.name} (UUID: {r.uuid})\n")
        for i, d in enumerate(on.get(r.index, [])):
            out.append(f"  MIG {d['profile']:<12}Device {i:>2}: (UUID: {d['uuid']})\n")
    return "".join(out)


def with_mig_mode(records: list, state: dict) -> list:
    """The GPU records with mig.mode.current Enabled where the MIG manager turned MIG on."""
    on = enabled(state)
    if not state:
        return records
    return [replace(r, mig_mode="Enabled" if r.index in on else ("Disabled" if r.mig_mode else r.mig_mode))
            for r in records]


# ------------------------------------------------------------------------------------------------ device plugin
def advertised(gpus: int, state: dict, strategy: str, replicas: dict[str, int]) -> dict[str, int]:
    """Resource -> count the device plugin advertises. replicas: the config's time-slicing replicas per
    resource name (nvidia.com/gpu, nvidia.com/mig-<profile>)."""
    on = enabled(state)
    gpu_rep = replicas.get("nvidia.com/gpu", 1)
    if strategy not in ("single", "mixed") or not on:
        return {"nvidia.com/gpu": gpus * gpu_rep}
    profiles = Counter(d["profile"] for devs in on.values() for d in devs)
    if strategy == "single":
        valid = len(on) == gpus and all(on.values()) and len(profiles) == 1
        return {"nvidia.com/gpu": sum(profiles.values()) * gpu_rep if valid else 0}
    out = {"nvidia.com/gpu": (gpus - len(on)) * gpu_rep}
    for p, n in profiles.items():
        out[f"nvidia.com/mig-{p}"] = n * replicas.get(f"nvidia.com/mig-{p}", 1)
    return out


# ------------------------------------------------------------------------------------------------ GFD
def _attributes() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for rel in _LABEL_FIXTURES:
        try:
            labels = json.loads((SHARED / "fixtures" / "real-world" / rel).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        for key, value in labels.items():
            m = re.fullmatch(r"nvidia\.com/mig-(.+?)\.(" + "|".join(re.escape(a) for a in _ATTRS) + ")", key)
            if m:
                out.setdefault(m.group(1), {}).setdefault(m.group(2), value)
    return out


_ATTRIBUTES: dict[str, dict[str, str]] | None = None


def attributes(profile: str) -> dict[str, str]:
    """GFD's attribute labels of a MIG profile: the real ones where a fixture has the profile, else the slices
    the name says and the memory in MiB (e.g. 1g.18gb: gi 1, ci 1, memory 18432)."""
    global _ATTRIBUTES
    if _ATTRIBUTES is None:
        _ATTRIBUTES = _attributes()
    if profile in _ATTRIBUTES:
        return dict(_ATTRIBUTES[profile])
    m = re.match(r"([0-9]+)g\.([0-9]+)gb", profile)
    size, mem = (int(m.group(1)), int(m.group(2))) if m else (1, 0)
    return {"memory": str(mem * 1024), "slices.gi": str(size), "slices.ci": str(size)}


def gfd_labels(node: NodeSpec, state: dict, strategy: str, replicas: dict[str, int], base: dict[str, str],
               current: dict[str, str]) -> dict[str, str | None]:
    """GFD's MIG-related labels, as a patch over `base` (the full-GPU labels the twin computes without MIG);
    None removes a label GFD no longer writes."""
    on = enabled(state)
    model = node.product.replace(" ", "-")
    want: dict[str, str | None] = dict(base)
    if node.mig is not None:
        want[CAPABLE_LABEL] = "true" if node.mig.get("capable", True) else "false"
    if on and len(on) == node.gpus:   # every GPU MIG-enabled: their full-GPU labels carry no sharing
        want.update({"nvidia.com/gpu.count": str(len(on)), "nvidia.com/gpu.product": model,
                     "nvidia.com/gpu.replicas": "0", "nvidia.com/gpu.sharing-strategy": "none"})
    profiles = Counter(d["profile"] for devs in on.values() for d in devs)
    if strategy == "single" and on:
        valid = len(on) == node.gpus and all(on.values()) and len(profiles) == 1
        if not valid:
            want.update({"nvidia.com/gpu.product": f"{model}-MIG-INVALID", "nvidia.com/gpu.count": "0",
                         "nvidia.com/gpu.replicas": "0", "nvidia.com/gpu.memory": "0"})
        else:
            (profile, n), = profiles.items()
            rep = replicas.get("nvidia.com/gpu", 1)
            want.update({"nvidia.com/gpu.product": f"{model}-MIG-{profile}" + ("-SHARED" if rep > 1 else ""),
                         "nvidia.com/gpu.count": str(n), "nvidia.com/gpu.replicas": str(rep),
                         "nvidia.com/gpu.sharing-strategy": "time-slicing" if rep > 1 else "none"})
            want.update({f"nvidia.com/gpu.{k}": v for k, v in attributes(profile).items()})
    elif strategy == "mixed":
        for profile, n in profiles.items():
            rep = replicas.get(f"nvidia.com/mig-{profile}", 1)
            prefix = f"nvidia.com/mig-{profile}"
            want.update({f"{prefix}.count": str(n), f"{prefix}.replicas": str(rep),
                         f"{prefix}.product": f"{model}-MIG-{profile}" + ("-SHARED" if rep > 1 else ""),
                         f"{prefix}.sharing-strategy": "time-slicing" if rep > 1 else "none"})
            want.update({f"{prefix}.{k}": v for k, v in attributes(profile).items()})
    for key in current:   # labels of profiles (or of the single strategy) GFD no longer writes
        m = re.fullmatch(r"nvidia\.com/mig-(.+?)\.(count|replicas|product|sharing-strategy|" +
                         "|".join(re.escape(a) for a in _ATTRS) + ")", key)
        if m and (strategy != "mixed" or m.group(1) not in profiles):
            want[key] = None
        single_attr = key.removeprefix("nvidia.com/gpu.") in _ATTRS and key != "nvidia.com/gpu.memory"
        if single_attr and not (strategy == "single" and on):
            want[key] = None
    return want


# ------------------------------------------------------------------------------------------------ DCGM
MIG_METRICS = ("DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_PROF_GR_ENGINE_ACTIVE")


def dcgm_rows(metric: str, node: NodeSpec, gpus: list, state: dict) -> list[str]:
    """dcgm-exporter's per-instance samples of `metric`: the GPU's labels plus GPU_I_PROFILE and GPU_I_ID."""
    if metric not in MIG_METRICS:
        return []
    on = enabled(state)
    rows = []
    for g in gpus:
        for d in on.get(g.index, []):
            labels = (f'gpu="{g.index}",UUID="{g.uuid}",pci_bus_id="{g.pci_bus_id}",device="nvidia{g.index}",'
                      f'modelName="{g.name}",GPU_I_PROFILE="{d["profile"]}",GPU_I_ID="{d["gi"]}",'
                      f'Hostname="{node.name}",DCGM_FI_DRIVER_VERSION="{g.driver_version}"')
            value = attributes(d["profile"]).get("memory", "0") if metric == "DCGM_FI_DEV_FB_FREE" else "0"
            rows.append(f"{metric}{{{labels}}} {value}")
    return rows
