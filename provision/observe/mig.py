"""MIG (Multi-Instance GPU) facts, read from what the MIG manager, GFD, nvidia-smi and mig-parted write (no I/O).

Node labels (NVIDIA GPU Operator docs, gpu-operator-mig.rst; real outputs in
../shared/fixtures/real-world/k8s/):
- ``nvidia.com/mig.config``: the mig-parted config the node should have (``all-1g.10gb``, ``all-balanced``,
  ``all-disabled``); set by an admin (or the suite), read by the MIG manager.
- ``nvidia.com/mig.config.state``: the MIG manager's progress: pending, rebooting, success, failed.
- ``nvidia.com/mig.capable``: GFD: the GPUs support MIG.
- ``nvidia.com/mig.strategy``: GFD: the strategy it labels for (none, single, mixed).
- single strategy: ``nvidia.com/gpu.count`` counts MIG devices, ``nvidia.com/gpu.product`` is
  ``<model>-MIG-<profile>``, ``nvidia.com/gpu.slices.gi`` / ``.ci`` the slices of one device.
- mixed strategy: per profile ``nvidia.com/mig-<profile>.count`` / ``.replicas`` / ``.product`` / ``.slices.*``.

The mig-parted config (``mig-configs: {name: [{devices, device-filter, mig-enabled, mig-devices}]}``) is the
ConfigMap the MIG manager mounts (the operator's ``default-mig-parted-config`` unless ClusterPolicy
``migManager.config.name`` names another); a named config lists entries per PCI device ID, so the layout a
GPU should have is the entry whose device-filter matches it (any entry when the ID is not known).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import yaml

from provision.labels import GPU_PRODUCT
from provision.observe.nvidia_smi import MigDevice

__all__ = [
    "CAPABLE_LABEL",
    "CONFIG_LABEL",
    "DISABLED",
    "STATES",
    "STATE_LABEL",
    "MigConfigError",
    "MigEntry",
    "MigLabels",
    "candidate_layouts",
    "dcgm_mig_instances",
    "layout_problems",
    "observed_layout",
    "parse_labels",
    "parse_mig_parted_config",
    "profile_enables_mig",
    "smi_table_no_mig_devices",
    "valid_profile_name",
]

CONFIG_LABEL = "nvidia.com/mig.config"
STATE_LABEL = "nvidia.com/mig.config.state"
CAPABLE_LABEL = "nvidia.com/mig.capable"
STRATEGY_LABEL = "nvidia.com/mig.strategy"
DISABLED = "all-disabled"
STATES = ("pending", "rebooting", "success", "failed")
_MIXED_COUNT = re.compile(r"nvidia\.com/mig-(.+)\.count")
_PROFILE_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._+-]{0,61}[A-Za-z0-9])?")  # a label value
_DEVICE_PROFILE = re.compile(r"[1-8]g\.[0-9]+gb(\+?[a-z.+-]*)?")


class MigConfigError(ValueError):
    """A mig-parted config or a label value that is not what mig-parted / GFD write."""


@dataclass(frozen=True)
class MigLabels:
    """The MIG labels of one node; None where the label is absent."""

    config: str | None = None
    state: str | None = None
    capable: bool | None = None
    strategy: str | None = None
    single_profile: str | None = None          # from gpu.product <model>-MIG-<profile>[-SHARED]
    single_count: int | None = None            # nvidia.com/gpu.count under single
    slices: tuple[int | None, int | None] = (None, None)  # gpu.slices.gi, gpu.slices.ci
    mixed: dict[str, int] = field(default_factory=dict)   # profile -> nvidia.com/mig-<profile>.count
    mixed_replicas: dict[str, int] = field(default_factory=dict)


def _int(labels: Mapping[str, str], key: str) -> int | None:
    value = labels.get(key)
    if value is None:
        return None
    if not str(value).isdigit():
        raise MigConfigError(f"label {key}={value!r} is not a count")
    return int(value)


def parse_labels(labels: Mapping[str, str]) -> MigLabels:
    """The MIG labels of a node's label map (the node's metadata.labels)."""
    capable = labels.get(CAPABLE_LABEL)
    state = labels.get(STATE_LABEL)
    product = labels.get(GPU_PRODUCT) or ""
    single = product.removesuffix("-SHARED").split("-MIG-", 1)[1] if "-MIG-" in product else None
    mixed: dict[str, int] = {}
    replicas: dict[str, int] = {}
    for key in labels:
        m = _MIXED_COUNT.fullmatch(key)
        if m:
            mixed[m.group(1)] = _int(labels, key) or 0
            r = _int(labels, f"nvidia.com/mig-{m.group(1)}.replicas")
            if r is not None:
                replicas[m.group(1)] = r
    return MigLabels(
        config=labels.get(CONFIG_LABEL), state=state,
        capable=None if capable is None else capable.lower() == "true",
        strategy=labels.get(STRATEGY_LABEL), single_profile=single,
        single_count=_int(labels, "nvidia.com/gpu.count") if single else None,
        slices=(_int(labels, "nvidia.com/gpu.slices.gi"), _int(labels, "nvidia.com/gpu.slices.ci")),
        mixed=mixed, mixed_replicas=replicas)


def valid_profile_name(name: object) -> bool:
    """A mig-parted config name fits a label value (63 characters of [A-Za-z0-9._-], alphanumeric ends)."""
    return isinstance(name, str) and bool(_PROFILE_NAME.fullmatch(name)) and "+" not in name


# ---------------------------------------------------------------------------------------- mig-parted config
@dataclass(frozen=True)
class MigEntry:
    """One entry of a mig-parted config: which GPUs (device-filter: PCI device IDs like 0x233010DE; empty =
    any) and what they get (MIG on/off, devices per GPU)."""

    device_filter: tuple[str, ...]
    devices: str | tuple[int, ...]
    mig_enabled: bool
    mig_devices: dict[str, int]

    def matches(self, device_id: str | None) -> bool:
        return not self.device_filter or device_id is None or _norm_id(device_id) in self.device_filter


def _norm_id(device_id: str) -> str:
    """0x233010DE / 233010DE / 0x233010de -> 0X233010DE (nvidia-smi -q -x prints it without 0x)."""
    d = device_id.strip().upper()
    return d if d.startswith("0X") else f"0X{d}"


def parse_mig_parted_config(text: str, source: str = "mig-parted config") -> dict[str, list[MigEntry]]:
    """``mig-configs`` of a mig-parted config file (YAML, version v1)."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MigConfigError(f"{source} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("mig-configs"), dict):
        raise MigConfigError(f"{source}: expected a mapping with 'mig-configs' (mig-parted config, version v1)")
    out: dict[str, list[MigEntry]] = {}
    for name, entries in doc["mig-configs"].items():
        if not isinstance(entries, list) or not entries:
            raise MigConfigError(f"{source}: mig-configs.{name} must be a non-empty list of entries")
        parsed = []
        for i, e in enumerate(entries):
            where = f"{source}: mig-configs.{name}[{i}]"
            if not isinstance(e, dict) or "mig-enabled" not in e:
                raise MigConfigError(f"{where}: each entry needs 'devices' and 'mig-enabled'")
            devices = e.get("devices", "all")
            if devices != "all" and not (isinstance(devices, list) and all(isinstance(d, int) for d in devices)):
                raise MigConfigError(f"{where}: devices must be 'all' or a list of GPU indexes, got {devices!r}")
            flt = e.get("device-filter") or []
            flt = [flt] if isinstance(flt, str) else flt
            mig = e.get("mig-devices") or {}
            if not isinstance(mig, dict) or not all(isinstance(v, int) and v >= 0 for v in mig.values()):
                raise MigConfigError(f"{where}: mig-devices must map profiles to counts, got {mig!r}")
            parsed.append(MigEntry(tuple(_norm_id(str(f)) for f in flt),
                                   "all" if devices == "all" else tuple(devices), bool(e["mig-enabled"]),
                                   {str(k): int(v) for k, v in mig.items()}))
        out[str(name)] = parsed
    return out


def profile_enables_mig(configs: Mapping[str, list[MigEntry]] | None, profile: str | None) -> bool:
    """Whether a mig.config value puts GPUs in MIG mode. Without the config: every name but all-disabled."""
    if not profile or profile == DISABLED:
        return False
    if configs is None or profile not in configs:
        return True
    return any(e.mig_enabled for e in configs[profile])


def candidate_layouts(configs: Mapping[str, list[MigEntry]], profile: str, gpu_index: int,
                      device_id: str | None = None) -> list[dict[str, int]]:
    """The MIG device layouts (profile -> count) GPU ``gpu_index`` may have under config ``profile``: the
    entries that apply to it (devices all or its index; device-filter matching its PCI device ID, or every
    filter when the ID is unknown). {} = MIG off or no devices. Raises MigConfigError for an unknown name."""
    if profile not in configs:
        raise MigConfigError(f"mig.config {profile!r} is not a config of the MIG manager's mig-parted config "
                             f"(known: {', '.join(sorted(configs)[:12])}{' ...' if len(configs) > 12 else ''})")
    out: list[dict[str, int]] = []
    for e in configs[profile]:
        if (e.devices == "all" or gpu_index in e.devices) and e.matches(device_id):
            layout = {k: v for k, v in e.mig_devices.items() if v} if e.mig_enabled else {}
            if layout not in out:
                out.append(layout)
    return out


# ----------------------------------------------------------------------------------------- nvidia-smi side
def observed_layout(devices: Iterable[MigDevice], gpu_indexes: Iterable[int]) -> dict[int, dict[str, int]]:
    """GPU index -> MIG profile -> count of the devices ``nvidia-smi -L`` listed (GPUs without MIG: {})."""
    out: dict[int, Counter] = {i: Counter() for i in gpu_indexes}
    for d in devices:
        out.setdefault(d.gpu_index, Counter())[d.profile] += 1
    return {i: dict(c) for i, c in sorted(out.items())}


def layout_problems(observed: Mapping[int, Mapping[str, int]], configs: Mapping[str, list[MigEntry]],
                    profile: str, device_ids: Mapping[int, str] | None = None) -> list[str]:
    """What differs between the MIG devices of each GPU and what config ``profile`` gives that GPU."""
    problems = []
    for gpu, have in sorted(observed.items()):
        want = candidate_layouts(configs, profile, gpu, (device_ids or {}).get(gpu))
        if not want:
            continue  # the config leaves this GPU alone (devices lists other GPUs, or no filter matches)
        if dict(have) not in want:
            shown = " or ".join(_layout_text(w) for w in want)
            problems.append(f"GPU {gpu}: {_layout_text(have)} (config {profile} gives {shown})")
    return problems


def _layout_text(layout: Mapping[str, int]) -> str:
    return ", ".join(f"{n}x {p}" for p, n in sorted(layout.items())) or "no MIG devices"


def smi_table_no_mig_devices(text: str) -> bool:
    """True when nvidia-smi's default table has a "MIG devices:" section saying "No MIG devices found" (MIG mode
    on, no GPU instances created: nothing to advertise)."""
    section = text.split("MIG devices:", 1)
    return len(section) == 2 and "No MIG devices found" in section[1].split("Processes:", 1)[0]


def device_profile(name: str) -> bool:
    """A MIG device profile name as nvidia-smi -L prints it (1g.10gb, 1g.5gb+me, 7g.80gb)."""
    return bool(_DEVICE_PROFILE.fullmatch(name))


def dcgm_mig_instances(text: str) -> dict[str, set[tuple[str, str]]]:
    """GPU UUID -> {(GPU_I_ID, GPU_I_PROFILE)} of the MIG instance series in a dcgm-exporter scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, set[tuple[str, str]]] = {}
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                gi = s.labels.get("GPU_I_ID")
                if gi is not None and gi != "":
                    out.setdefault(s.labels.get("UUID", "?"), set()).add((gi, s.labels.get("GPU_I_PROFILE", "")))
    except ValueError as exc:
        raise MigConfigError(f"DCGM metrics are not Prometheus text: {exc}") from exc
    return out
