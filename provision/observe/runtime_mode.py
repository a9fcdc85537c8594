"""How GPUs reach containers on a node: the runtime mode it is judged in, and what that mode needs. No I/O.

Modes, from the real GPU Operator v26.3 source (controllers/object_controls.go, state_manager.go):

- ``runtimeclass``: ClusterPolicy ``cdi.enabled: false``. The toolkit configures containerd with the nvidia
  runtime (a drop-in) and the operator creates RuntimeClass nvidia; workloads use it.
- ``cdi``: ``cdi.enabled`` true or absent (the CRD default, ``IsEnabled()`` is true when unset) and no NRI
  plugin. The operator still creates RuntimeClass nvidia (and nvidia-cdi, nvidia-legacy), still runs its own
  operands with runtimeClassName nvidia, and the toolkit still writes its containerd drop-in (with
  NVIDIA_RUNTIME_SET_AS_DEFAULT=false, NVIDIA_CONTAINER_RUNTIME_MODE=cdi); the device plugin gets CDI_ENABLED=true
  and DEVICE_LIST_STRATEGY=cdi-annotations,cdi-cri and writes a CDI spec (kind k8s.device-plugin.nvidia.com/gpu,
  one device per GPU UUID) to /var/run/cdi. The toolkit itself writes only the management spec
  (management.nvidia.com/gpu, one device ``all``).
- ``nri``: ``cdi.nriPluginEnabled: true`` (with CDI on). The "pre-requisites" state (the RuntimeClasses) is off,
  no operand gets a runtimeClassName, and the toolkit's installer configures no runtime at all
  (runtime.NewConfigurer returns the no-op configurer when ENABLE_NRI_PLUGIN is set): no drop-in. The toolkit
  runs an NRI plugin on containerd's NRI socket (/var/run/nri/nri.sock); GPU pods get their devices through
  containerd's own CDI support (enable_cdi) from the device plugin's cdi-cri list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from packaging.version import InvalidVersion, Version

__all__ = ["CDI", "MODES", "NRI", "RUNTIMECLASS", "CdiSpecs", "containerd_cdi", "containerd_nri", "mode_from_policy", "mode_of",
           "nri_version_problem", "parse_cdi_specs", "spec_uuid_problems"]

RUNTIMECLASS, CDI, NRI = "runtimeclass", "cdi", "nri"
MODES = (RUNTIMECLASS, CDI, NRI)
CDI_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")          # containerd's cdi_spec_dirs default (config dump)
NRI_SOCKET = "/var/run/nri/nri.sock"                  # containerd's and the operator's default
GPU_CLASS = "gpu"
MANAGEMENT_VENDOR = "management.nvidia.com"           # the toolkit's management spec: device "all" only
NRI_MIN_17 = Version("1.7.30")
NRI_MIN_2 = Version("2.1")


def _truthy(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() == "true"


def mode_from_policy(cluster_policy: dict | None) -> str:
    """The runtime mode a ClusterPolicy asks for (None/empty: the CRD defaults, i.e. CDI on, NRI off)."""
    cdi = ((cluster_policy or {}).get("spec") or {}).get("cdi") or {}
    enabled = _truthy(cdi.get("enabled"))
    if enabled is False:
        return RUNTIMECLASS
    return NRI if _truthy(cdi.get("nriPluginEnabled")) else CDI


TOOLKIT_DS = "nvidia-container-toolkit-daemonset"
TOOLKIT_CONTAINER = "nvidia-container-toolkit-ctr"


def mode_of(toolkit_ds: dict | None, cluster_policy: dict | None) -> tuple[str, str]:
    """(mode, where it was read): the toolkit DaemonSet the operator rendered (its container's CDI_ENABLED /
    ENABLE_NRI_PLUGIN, set by transformToolkitCtrForCDI) is what each node's toolkit pod runs with; before it
    exists, the ClusterPolicy's cdi fields (CRD defaults when unset)."""
    tmpl = (((toolkit_ds or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    ctr = next((c for c in tmpl.get("containers") or [] if c.get("name") == TOOLKIT_CONTAINER), None)
    if ctr is not None:
        env = {e.get("name"): str(e.get("value", "")).lower() for e in ctr.get("env") or []}
        mode = (NRI if env.get("ENABLE_NRI_PLUGIN") == "true" else
                CDI if env.get("CDI_ENABLED") == "true" else RUNTIMECLASS)
        return mode, (f"DaemonSet {TOOLKIT_DS} env CDI_ENABLED={env.get('CDI_ENABLED', 'unset')}, "
                      f"ENABLE_NRI_PLUGIN={env.get('ENABLE_NRI_PLUGIN', 'unset')}")
    cdi = ((cluster_policy or {}).get("spec") or {}).get("cdi") or {}
    return mode_from_policy(cluster_policy), f"ClusterPolicy spec.cdi {cdi or '(unset: CRD defaults)'}"


@dataclass(frozen=True)
class CdiSpecs:
    """CDI spec files read from a host: kind -> device names, and what could not be read."""

    devices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)      # path -> kind
    errors: tuple[str, ...] = ()

    def gpu_device_names(self) -> set[str]:
        """Names of GPU devices in every NVIDIA GPU-class spec but the toolkit's management spec."""
        out: set[str] = set()
        for kind, names in self.devices.items():
            vendor, _, cls = kind.partition("/")
            if cls == GPU_CLASS and vendor != MANAGEMENT_VENDOR and "nvidia.com" in vendor:
                out.update(names)
        return out


def parse_cdi_specs(files: dict[str, str]) -> CdiSpecs:
    """Parse CDI spec files (YAML or JSON: JSON is YAML) given as path -> text."""
    devices: dict[str, list[str]] = {}
    kinds: dict[str, str] = {}
    errors: list[str] = []
    for path, text in sorted(files.items()):
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            errors.append(f"{path}: not valid YAML/JSON ({str(exc).splitlines()[0]})")
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("kind"), str) or "/" not in doc["kind"]:
            errors.append(f"{path}: not a CDI spec (no kind vendor/class)")
            continue
        kind = doc["kind"]
        names = [str(d.get("name")) for d in doc.get("devices") or [] if isinstance(d, dict) and d.get("name")]
        if not names:
            errors.append(f"{path}: kind {kind} lists no devices")
        devices.setdefault(kind, []).extend(names)
        kinds[path] = kind
    return CdiSpecs({k: tuple(v) for k, v in devices.items()}, kinds, tuple(errors))


def spec_uuid_problems(specs: CdiSpecs, uuids: list[str]) -> list[str]:
    """What is wrong with the CDI specs for GPUs with these UUIDs (nvidia-smi's): every UUID must be a device."""
    names = specs.gpu_device_names()
    if not specs.files:
        return [f"no CDI spec file in {' or '.join(CDI_SPEC_DIRS)}"]
    if not names:
        listed = ", ".join(f"{p} ({k})" for p, k in sorted(specs.files.items()))
        return [f"no CDI spec lists GPU devices (found {listed}; the toolkit's {MANAGEMENT_VENDOR}/gpu spec has only "
                "the device 'all': the per-GPU spec is the device plugin's)"]
    missing = [u for u in uuids if u not in names]
    return [f"GPU {u} of nvidia-smi is in no CDI spec" for u in missing]


def _cri(data: dict) -> tuple[str | None, dict]:
    plugins = data.get("plugins") if isinstance(data.get("plugins"), dict) else {}
    for pid in ("io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri", "cri"):
        if isinstance(plugins.get(pid), dict):
            return pid, plugins[pid]
    return None, {}


def containerd_cdi(data: dict) -> tuple[bool | None, tuple[str, ...], str]:
    """(enable_cdi, cdi_spec_dirs, the TOML table that holds them) of a ``containerd config dump`` (parsed)."""
    pid, table = _cri(data)
    if pid is None:
        return None, (), "no CRI plugin table"
    dirs = tuple(str(d) for d in table.get("cdi_spec_dirs") or ())
    return _truthy(table.get("enable_cdi")), dirs, f'plugins."{pid}"'


def containerd_nri(data: dict) -> tuple[bool, str]:
    """(NRI enabled, its socket path) of a ``containerd config dump`` (parsed). containerd 1.7 dumps
    ``disable = true`` (off by default), 2.x ``disable = false``; no table at all means no NRI support."""
    plugins = data.get("plugins") if isinstance(data.get("plugins"), dict) else {}
    table = plugins.get("io.containerd.nri.v1.nri")
    if not isinstance(table, dict):
        return False, NRI_SOCKET
    return not bool(table.get("disable", False)), str(table.get("socket_path") or NRI_SOCKET)


def nri_version_problem(version: str | None) -> str | None:
    """Why this containerd version cannot serve the toolkit's NRI plugin (None when it can): >= 1.7.30 on 1.7,
    2.1 or newer on 2.x (issue 16; 2.0 is out)."""
    if not version:
        return "containerd version unknown (node.status.nodeInfo.containerRuntimeVersion is empty)"
    text = version.split("://", 1)[-1].lstrip("v")
    try:
        v = Version(text.split("-")[0].split("+")[0])
    except InvalidVersion:
        return f"containerd version {version!r} is not a version"
    if (v.major == 1 and v >= NRI_MIN_17) or v >= NRI_MIN_2:
        return None
    return f"containerd {v} is too old for the NRI plugin (needs >= {NRI_MIN_17} or >= {NRI_MIN_2})"
