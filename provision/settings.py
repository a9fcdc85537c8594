"""One validated Settings object for a run, from command-line options, pyproject.toml and defaults.

A team pins its desired state in pyproject.toml under [tool.gpu-conformance]; options given on the command
line win. Every value is checked here, before anything talks to a cluster or a host, and a bad value is
an error that says what was wrong and how to fix it.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from provision.observe.timeslicing import validate_replicas

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
CHART_VERSION = re.compile(r"^v\d+\.\d+\.\d+$")
MODES = ("audit", "provision", "plan", "rollback")
HOST_BACKENDS = ("none", "lab", "local", "ssh", "paramiko", "ansible", "pod")
DCGM_ACCESS = ("proxy", "direct")
NODE_MAPPINGS = ("name", "internal-ip", "map")
FAIL_ON = ("new", "any")
DEFAULT_CHART_REPO = "https://helm.ngc.nvidia.com/nvidia"


class SettingsError(ValueError):
    """A setting is invalid; the message names the setting, the bad value and the fix."""


@dataclass(frozen=True)
class Settings:
    mode: str = "audit"
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str = "gpu-operator"
    suite_namespace: str = "gpu-conformance"
    gpu_nodes: tuple[str, ...] = ()
    node_selector: str = "nvidia.com/gpu.present=true"
    fallback_selector: str = "feature.node.kubernetes.io/pci-10de.present=true"
    expected_gpus: dict[str, int] = field(default_factory=dict)
    replicas: int = 4
    replica_profiles: dict[str, int] = field(default_factory=dict)
    chart_version: str = "v26.3.0"
    chart_repo: str = DEFAULT_CHART_REPO
    chart_repo_name: str = "nvidia"
    release: str = "gpu-operator"
    min_driver: int = 470
    min_compute_capability: str = "7.0"
    workload: bool = True
    workload_image: str = "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0-ubuntu22.04"
    host_backend: str = "none"
    hosts: dict[str, str] = field(default_factory=dict)  # node -> host address (explicit map)
    host_roots: dict[str, str] = field(default_factory=dict)  # node -> folder the host's / is seen at
    node_mapping: str = "name"
    ansible_inventory: str | None = None
    ssh_config: str | None = None
    ssh_identity_file: str | None = None
    ssh_user: str | None = None
    sudo: bool = False
    dcgm_access: str = "proxy"
    report_dir: str = "reports"
    helm: str = "helm"
    timeouts: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS))
    lab_state: str | None = None
    host_only: bool = False
    health: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_HEALTH))  # GPU health thresholds
    previous_run: str | None = None  # run folder to compare with (default: the latest matching one in report_dir)
    fail_on: str = "any"  # any: every problem fails the run; new: only regressions since the previous run
    metrics_file: str | None = None  # node-exporter textfile (*.prom) for the run's metrics
    pushgateway: str | None = None  # Pushgateway URL the run's metrics are pushed to
    pushgateway_job: str = "gpu-conformance"
    # MIG: node name or GPU product (as nvidia-smi names it) -> mig-parted config (nvidia.com/mig.config value)
    mig_profiles: dict[str, str] = field(default_factory=dict)
    # MIG: node name or GPU product -> single | mixed (the device plugin's MIG strategy there; default single)
    mig_strategies: dict[str, str] = field(default_factory=dict)
    # hosts gathered at once (provision/hosts/gather.py: one round trip per node); a 2-core runner waits on the
    # network (ssh, pods/exec), not on its CPU, so several per core
    host_concurrency: int = 8
    host_gather: bool = True  # false: every host fact is its own command, as before the gather
    host_pod_creates_per_s: float = 20.0  # pod backend: access pods created per second (all nodes' start together)
    # GPU product -> {"replicas": n, "rename": bool, "mps": bool, "config": key}: the config key (default:
    # profile_key of the product) the node label nvidia.com/device-plugin.config names; rename = renameByDefault
    # (nvidia.com/gpu.shared), mps = sharing.mps instead of time-slicing (issue 16)
    sharing_profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    # ClusterPolicy cdi.nriPluginEnabled (chart value, v26.3+): the toolkit's NRI plugin; no RuntimeClass, no
    # containerd drop-in (runtime mode nri, provision/observe/runtime_mode.py)
    cdi_nri_plugin: bool = False
    stack: str = "clusterpolicy"  # the GPU stack: clusterpolicy (device plugin) | dra (GPUCluster + DRA driver)
    switch_stack: bool = False  # --provision may move an installed release to the other stack (docs/dra.md)
    dra_sharing: str = "none"  # stack dra: GPU sharing through the claim's GpuConfig: none | TimeSlicing | MPS

    @property
    def provisioning(self) -> bool:
        return self.mode == "provision"

    @property
    def writes_allowed(self) -> bool:
        return self.mode in ("provision", "rollback")

    def timeout(self, name: str) -> float:
        return float(self.timeouts.get(name, DEFAULT_TIMEOUTS.get(name, 300)))

    def replicas_for(self, product: str | None) -> int:
        if product and product in self.sharing_profiles:
            return int(self.sharing_profiles[product]["replicas"])
        if product and product in self.replica_profiles:
            return self.replica_profiles[product]
        return self.replicas

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["gpu_nodes"] = list(self.gpu_nodes)
        return out


DEFAULT_TIMEOUTS = {
    "helm": 900.0,            # helm upgrade --install --wait
    "toolkit_ready": 300.0,   # toolkit pods ready and drop-in written, per node
    "node_ready": 180.0,      # a node Ready again after its containerd restart
    "runtime_settle": 20.0,   # after a containerd restart, how long a node that posts no new status must stay Ready
    "advertise": 300.0,       # every GPU node advertising physical x replicas
    "workload": 300.0,        # vectoradd pod finished
    "cluster_policy": 600.0,  # --provision: operand pods started on every GPU node, ClusterPolicy ready
    "operands_settle": 45.0,  # --provision: how long a started operand pod may take to become Ready
    "api": 10.0,              # one API request (connect + read)
    "mig": 900.0,             # --provision: the MIG manager applying a node's nvidia.com/mig.config (may reboot)
}


# GPU health (features/gpu_health.feature; pin them under [tool.gpu-conformance.health] in pyproject.toml)
DEFAULT_HEALTH: dict[str, Any] = {
    "xid_window_h": 24.0,          # kernel-log Xids older than this are not counted
    # Xids that fail the node (others are warnings): NVIDIA's Xid catalogue, memory / bus / NVLink / GSP errors
    "critical_xids": (48, 63, 64, 74, 79, 92, 94, 95, 119, 120),
    "max_temperature_c": 90.0,     # a GPU hotter than this fails the throttling scenario
    "pcie_replays_warn": 100,      # without the host's uptime: PCIe replays since the driver loaded above this warn
    "pcie_replay_rate_warn_per_min": 8.0,  # replays per minute since boot above this warn (DCGM's PCIe replay limit)
    "retired_pages_limit": 60,     # GPUs that retire pages (before Ampere): this many retired pages fail
    "persistence_mode": None,      # "Enabled" / "Disabled": asked for; None: not checked
    "persistenced": None,          # True: nvidia-persistenced must run; False: must not; None: not checked
}


def _health(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _err("health", raw, f"a table of GPU health settings: {sorted(DEFAULT_HEALTH)}")
    out = dict(DEFAULT_HEALTH)
    for k, v in raw.items():
        if k not in DEFAULT_HEALTH:
            raise _err(f"health.{k}", v, f"known health settings: {sorted(DEFAULT_HEALTH)}")
        if k in ("xid_window_h", "max_temperature_c", "pcie_replays_warn", "retired_pages_limit",
                 "pcie_replay_rate_warn_per_min"):
            if not isinstance(v, int | float) or isinstance(v, bool) or (k != "max_temperature_c" and v < 0):
                raise _err(f"health.{k}", v, "a number (hours, degrees C, a count or a rate per minute)")
            out[k] = int(v) if k in ("pcie_replays_warn", "retired_pages_limit") else float(v)
        elif k == "critical_xids":
            if not isinstance(v, list | tuple) or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0
                                                        for x in v):
                raise _err("health.critical_xids", v, "a list of Xid numbers such as [48, 79, 94, 95]")
            out[k] = tuple(sorted(set(v)))
        elif k == "persistence_mode":
            if v is not None and str(v).lower() not in ("enabled", "disabled"):
                raise _err("health.persistence_mode", v, '"Enabled" or "Disabled" (or leave it out: not checked)')
            out[k] = None if v is None else str(v).capitalize()
        else:  # persistenced
            if v is not None and not isinstance(v, bool):
                raise _err("health.persistenced", v, "true (nvidia-persistenced must run) or false")
            out[k] = v
    return out


def _err(name: str, value: object, fix: str) -> SettingsError:
    return SettingsError(f"invalid setting {name}={value!r}: {fix}")


def load_pyproject(start: Path) -> dict[str, Any]:
    """[tool.gpu-conformance] from the nearest pyproject.toml at or above `start`."""
    for folder in [start, *start.parents]:
        candidate = folder / "pyproject.toml"
        if candidate.exists():
            try:
                doc = tomllib.loads(candidate.read_text())
            except tomllib.TOMLDecodeError as exc:
                raise SettingsError(f"{candidate} is not valid TOML: {exc}") from exc
            return dict(doc.get("tool", {}).get("gpu-conformance", {}))
    return {}


def _node_name(name: str, setting: str) -> str:
    if not isinstance(name, str) or len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        raise _err(setting, name, "a node name must be a DNS-1123 subdomain: lowercase letters, digits, '-' and "
                   "'.', starting and ending with a letter or digit (shell metacharacters are never accepted)")
    return name


def validate(raw: dict[str, Any]) -> Settings:
    """Build Settings from a flat dict of values (already merged: defaults < pyproject < command line)."""
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SettingsError(f"unknown settings {unknown}; known settings: {sorted(known)}")
    s = Settings(**{k: v for k, v in raw.items() if v is not None})
    if s.mode not in MODES:
        raise _err("mode", s.mode, f"one of {MODES}")
    try:
        replicas = validate_replicas(s.replicas)
    except ValueError as exc:
        raise SettingsError(f"invalid setting replicas={s.replicas!r}: {exc}") from exc
    profiles = {}
    for product, value in (s.replica_profiles or {}).items():
        try:
            profiles[str(product)] = validate_replicas(value)
        except ValueError as exc:
            raise SettingsError(f"invalid setting replica_profiles[{product!r}]={value!r}: {exc}") from exc
    for name in ("namespace", "suite_namespace"):
        value = getattr(s, name)
        if not isinstance(value, str) or not DNS1123_LABEL.match(value) or len(value) > 63:
            raise _err(name, value, "a namespace is a DNS-1123 label (lowercase letters, digits, '-')")
    if not isinstance(s.chart_version, str) or not CHART_VERSION.match(s.chart_version):
        raise _err("chart_version", s.chart_version, "GPU Operator chart versions look like v26.3.0")
    try:
        min_driver = int(s.min_driver)
    except (TypeError, ValueError) as exc:
        raise _err("min_driver", s.min_driver, "the minimum driver is a major version number such as 470") from exc
    if isinstance(s.min_driver, bool) or not 100 <= min_driver <= 10000:
        raise _err("min_driver", s.min_driver, "the minimum driver is a major version number such as 470")
    try:
        Version(str(s.min_compute_capability))
    except InvalidVersion as exc:
        raise _err("min_compute_capability", s.min_compute_capability, "a compute capability like 7.0") from exc
    nodes = tuple(_node_name(n, "gpu_nodes") for n in s.gpu_nodes)
    for node, count in (s.expected_gpus or {}).items():
        _node_name(node, "expected_gpus")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise _err(f"expected_gpus[{node}]", count, "an integer count of physical GPUs")
    if s.host_backend not in HOST_BACKENDS:
        raise _err("host_backend", s.host_backend, f"one of {HOST_BACKENDS}")
    if s.dcgm_access not in DCGM_ACCESS:
        raise _err("dcgm_access", s.dcgm_access, f"one of {DCGM_ACCESS}")
    if s.node_mapping not in NODE_MAPPINGS:
        raise _err("node_mapping", s.node_mapping, f"one of {NODE_MAPPINGS}")
    if s.kubeconfig and not Path(s.kubeconfig).expanduser().is_file():
        raise _err("kubeconfig", s.kubeconfig, "no such file; pass --kubeconfig PATH or set KUBECONFIG")
    if s.ansible_inventory and not Path(s.ansible_inventory).is_file():
        raise _err("ansible_inventory", s.ansible_inventory, "no such inventory file")
    if s.ansible_inventory:
        from provision.hosts.inventory import InventoryError, load_inventory

        try:  # an inventory that does not parse is refused before anything runs, not once per node later
            load_inventory(s.ansible_inventory)
        except InventoryError as exc:
            raise _err("ansible_inventory", s.ansible_inventory, f"{exc}; fix the file") from exc
    if s.host_backend == "ansible" and not s.ansible_inventory:
        raise _err("host_backend", "ansible", "the ansible backend needs --ansible-inventory PATH")
    if s.host_only and s.mode != "audit":
        raise _err("mode", s.mode, "--host-only checks a host without Kubernetes: it cannot provision, plan or roll back")
    if s.host_only and s.host_backend in ("none", "pod"):
        raise _err("host_backend", s.host_backend, "--host-only needs a host backend: local, ssh, paramiko or ansible")
    if s.host_backend == "lab" and not s.host_roots:
        raise _err("host_backend", "lab", "the lab backend needs host roots (use --lab)")
    _validate_reporting(s)
    _validate_mig_profiles(s.mig_profiles)
    _validate_mig_strategies(s.mig_strategies)
    if isinstance(s.host_concurrency, bool) or not isinstance(s.host_concurrency, int) or not 1 <= s.host_concurrency <= 256:
        raise _err("host_concurrency", s.host_concurrency, "how many hosts are gathered at once: an integer 1..256")
    if isinstance(s.host_pod_creates_per_s, bool) or not isinstance(s.host_pod_creates_per_s, int | float) \
            or not 0 < s.host_pod_creates_per_s <= 1000:
        raise _err("host_pod_creates_per_s", s.host_pod_creates_per_s, "access pods created per second: 0 < n <= 1000")
    if not isinstance(s.host_gather, bool):
        raise _err("host_gather", s.host_gather, "true (one round trip per node) or false")
    _validate_stack(s)
    timeouts = dict(DEFAULT_TIMEOUTS)
    for k, v in (s.timeouts or {}).items():
        if k not in DEFAULT_TIMEOUTS:
            raise _err(f"timeouts.{k}", v, f"known timeouts: {sorted(DEFAULT_TIMEOUTS)}")
        if not isinstance(v, int | float) or isinstance(v, bool) or v <= 0:
            raise _err(f"timeouts.{k}", v, "a positive number of seconds")
        timeouts[k] = float(v)
    return replace(s, replicas=replicas, replica_profiles=profiles, gpu_nodes=nodes, min_driver=min_driver,
                   timeouts=timeouts, health=_health(s.health), sharing_profiles=_sharing_profiles(s.sharing_profiles))


SHARING_PROFILE_KEYS = ("replicas", "rename", "mps", "config")


def _sharing_profiles(raw: Any) -> dict[str, dict[str, Any]]:
    """sharing_profiles validated: {product: {"replicas": 2..1024, "rename": bool, "mps": bool, "config": key}};
    ``config`` names the ConfigMap key (default: the product's name, sanitised), e.g. the playbooks' dgx-spark."""
    if not isinstance(raw, dict):
        raise _err("sharing_profiles", raw, 'a table of GPU product -> {replicas = 4, rename = true, mps = false}')
    out: dict[str, dict[str, Any]] = {}
    for product, prof in raw.items():
        where = f"sharing_profiles[{product!r}]"
        if isinstance(prof, int | str) and not isinstance(prof, bool):
            prof = {"replicas": prof}
        if not isinstance(prof, dict):
            raise _err(where, prof, "a table {replicas = 4, rename = true, mps = false}")
        unknown = sorted(set(prof) - set(SHARING_PROFILE_KEYS))
        if unknown:
            raise _err(where, prof, f"known keys: {list(SHARING_PROFILE_KEYS)} (unknown: {unknown})")
        try:
            replicas = validate_replicas(prof.get("replicas"))
        except ValueError as exc:
            raise SettingsError(f"invalid setting {where}.replicas={prof.get('replicas')!r}: {exc}") from exc
        flags = {}
        for key in ("rename", "mps"):
            value = prof.get(key, False)
            if not isinstance(value, bool):
                raise _err(f"{where}.{key}", value, "true or false")
            flags[key] = value
        key = prof.get("config")
        if key is not None and (not isinstance(key, str) or not DNS1123_LABEL.match(key) or len(key) > 63):
            raise _err(f"{where}.config", key, "a ConfigMap key that is also a label value (e.g. dgx-spark)")
        out[str(product)] = {"replicas": replicas, **flags, **({"config": key} if key else {})}
    return out


def _validate_reporting(s: Settings) -> None:
    """The nightly-audit settings: --previous, --fail-on, --metrics-file, --pushgateway."""
    from urllib.parse import urlsplit

    if s.fail_on not in FAIL_ON:
        raise _err("fail_on", s.fail_on, "any (every problem fails the run) or new (only regressions since the "
                   "previous run)")
    if s.previous_run is not None and not (Path(s.previous_run) / "summary.json").is_file():
        raise _err("previous_run", s.previous_run, "a run folder written by `pytest features/` "
                   "(reports/<run-id>, holding summary.json)")
    if s.metrics_file is not None:
        path = Path(s.metrics_file)
        if path.suffix != ".prom":
            raise _err("metrics_file", s.metrics_file, "node-exporter's textfile collector reads only *.prom "
                       "files: name it e.g. gpu-conformance.prom")
        if not path.parent.is_dir():
            raise _err("metrics_file", s.metrics_file, f"the folder {path.parent} does not exist (node-exporter's "
                       "--collector.textfile.directory)")
    if s.pushgateway is not None:
        url = urlsplit(str(s.pushgateway))
        if url.scheme not in ("http", "https") or not url.hostname:
            raise _err("pushgateway", s.pushgateway, "the Pushgateway's URL, e.g. http://pushgateway:9091")
    if not isinstance(s.pushgateway_job, str) or not s.pushgateway_job or "/" in s.pushgateway_job:
        raise _err("pushgateway_job", s.pushgateway_job, "a job name without '/'")


def _validate_mig_profiles(raw: Any) -> None:
    """mig_profiles = {"<node or GPU product>" = "<mig-parted config>"} (the nvidia.com/mig.config value)."""
    from provision.observe.mig import valid_profile_name

    if not isinstance(raw, dict):
        raise _err("mig_profiles", raw, 'a table such as {"NVIDIA H100 80GB HBM3" = "all-1g.10gb", gpu-b = '
                   '"all-balanced"} (node name or GPU product -> mig-parted config)')
    for key, value in raw.items():
        if not isinstance(key, str) or not key.strip():
            raise _err("mig_profiles", key, "keys are node names or GPU products as nvidia-smi names them")
        if not valid_profile_name(value):
            raise _err(f"mig_profiles[{key!r}]", value, "a mig-parted config name usable as a label value, such as "
                       "all-1g.10gb, all-balanced or all-disabled")


MIG_STRATEGIES = ("single", "mixed")


def _validate_mig_strategies(raw: Any) -> None:
    if not isinstance(raw, dict) or not all(isinstance(k, str) and v in MIG_STRATEGIES for k, v in raw.items()):
        raise _err("mig_strategies", raw, f'a table of node name or GPU product -> one of {MIG_STRATEGIES}, such as '
                   '{gpu-b = "mixed"}')


def _validate_stack(s: Settings) -> None:
    """stack: the GPU Operator's stack to judge (and install) the cluster by (docs/dra.md)."""
    from provision.observe.dra import STACKS

    if s.stack not in STACKS:
        raise _err("stack", s.stack, "clusterpolicy (ClusterPolicy, the device plugin: the default) or dra "
                   "(GPUCluster and the NVIDIA DRA driver, GPU Operator v26.7.0 or newer)")
    if s.stack == "dra" and s.chart_version and CHART_VERSION.match(s.chart_version) and \
            Version(s.chart_version.lstrip("v")) < Version("26.7.0"):
        raise _err("chart_version", s.chart_version, "stack = \"dra\" needs GPU Operator v26.7.0 or newer (the first "
                   "chart with gpuCluster.deployCR); set chart_version = \"v26.7.0\"")
    from provision.observe.dra import SHARING_GATES

    if s.dra_sharing != "none" and s.dra_sharing not in SHARING_GATES:
        raise _err("dra_sharing", s.dra_sharing, f"none or one of the DRA driver's sharing strategies {sorted(SHARING_GATES)}")
    if not isinstance(s.switch_stack, bool):
        raise _err("switch_stack", s.switch_stack, "true or false")
