"""One validated Settings object for a run, from command-line options, pyproject.toml and defaults.

A team pins its desired state in pyproject.toml under [tool.gpu-conformance]; options given on the command
line win. Every value is checked here by pydantic (the field types and validators of Settings), before anything
talks to a cluster or a host, and a bad value is an error that says which setting, what was wrong and how to fix
it (validate() renders pydantic's errors with the fix of each setting: FIXES).

Cost (measured on the shared 2-core machine at load 11): building the Settings schema at the first validate() takes
0.16 s; one validate() then takes 0.01 ms. Importing pydantic (0.20 s) costs a run nothing extra: the kubernetes
client (33+) already imports it.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, Required, get_args
from urllib.parse import urlsplit

from packaging.version import InvalidVersion, Version
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from pydantic import Strict as Strict
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from provision import names
from provision.observe.timeslicing import validate_replicas

CHART_VERSION = re.compile(r"^v\d+\.\d+\.\d+$")
Mode = Literal["audit", "provision", "plan", "rollback"]
HostBackend = Literal["none", "lab", "local", "ssh", "paramiko", "ansible", "pod"]
DcgmAccess = Literal["proxy", "direct"]
NodeMapping = Literal["name", "internal-ip", "map"]
FailOn = Literal["new", "any"]
MigStrategy = Literal["single", "mixed"]
MODES: tuple[str, ...] = get_args(Mode)
HOST_BACKENDS: tuple[str, ...] = get_args(HostBackend)
DCGM_ACCESS: tuple[str, ...] = get_args(DcgmAccess)
NODE_MAPPINGS: tuple[str, ...] = get_args(NodeMapping)
FAIL_ON: tuple[str, ...] = get_args(FailOn)
MIG_STRATEGIES: tuple[str, ...] = get_args(MigStrategy)
DEFAULT_CHART_REPO = "https://helm.ngc.nvidia.com/nvidia"
SHARING_PROFILE_KEYS = ("replicas", "rename", "mps", "config")


class SettingsError(ValueError):
    """A setting is invalid; the message names the setting, the bad value and the fix."""


def _err(name: str, value: object, fix: str) -> SettingsError:
    return SettingsError(f"invalid setting {name}={value!r}: {fix}")


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


# ------------------------------------------------------------------------------------------------ value types
def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # an int to pydantic's lax mode; the setting's own fix is shown (FIXES)
        raise PydanticCustomError("int_type", "an integer, not true/false")
    return value


def _compute_capability(value: Any) -> str:
    try:
        Version(str(value))
    except InvalidVersion as exc:
        raise ValueError("a compute capability like 7.0") from exc
    return str(value)


def _file(what: str) -> Any:
    def check(value: str | None) -> str | None:
        if value is not None and not Path(value).expanduser().is_file():
            raise ValueError(what)
        return value
    return check


def _kubeconfig(value: str | None) -> str | None:
    return _file("no such file; pass --kubeconfig PATH or set KUBECONFIG")(value)


def _inventory(value: str | None) -> str | None:
    if not value:
        return value
    _file("no such inventory file")(value)
    from provision.hosts.inventory import InventoryError, load_inventory

    try:  # an inventory that does not parse is refused before anything runs, not once per node later
        load_inventory(value)
    except InventoryError as exc:
        raise ValueError(f"{exc}; fix the file") from exc
    return value


def _previous_run(value: str | None) -> str | None:
    if value is not None and not (Path(value) / "summary.json").is_file():
        raise ValueError("a run folder written by `pytest features/` (reports/<run-id>, holding summary.json)")
    return value


def _metrics_file(value: str | None) -> str | None:
    if value is None:
        return value
    path = Path(value)
    if path.suffix != ".prom":
        raise ValueError("node-exporter's textfile collector reads only *.prom files: name it e.g. gpu-conformance.prom")
    if not path.parent.is_dir():
        raise ValueError(f"the folder {path.parent} does not exist (node-exporter's --collector.textfile.directory)")
    return value


def _pushgateway(value: str | None) -> str | None:
    if value is not None:
        url = urlsplit(value)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("the Pushgateway's URL, e.g. http://pushgateway:9091")
    return value


def _mig_profile(value: str) -> str:
    from provision.observe.mig import valid_profile_name

    if not valid_profile_name(value):
        raise ValueError("a mig-parted config name usable as a label value, such as all-1g.10gb, all-balanced or "
                         "all-disabled")
    return value


def _stack(value: str) -> str:
    from provision.observe.dra import STACKS

    if value not in STACKS:
        raise ValueError("clusterpolicy (ClusterPolicy, the device plugin: the default) or dra (GPUCluster and the "
                         "NVIDIA DRA driver, GPU Operator v26.7.0 or newer)")
    return value


def _dra_sharing(value: str) -> str:
    from provision.observe.dra import SHARING_GATES

    if value != "none" and value not in SHARING_GATES:
        raise ValueError(f"none or one of the DRA driver's sharing strategies {sorted(SHARING_GATES)}")
    return value


def _sharing_shorthand(value: Any) -> Any:
    return {"replicas": value} if isinstance(value, int | str) and not isinstance(value, bool) else value


def _sharing_profile(prof: dict[str, Any]) -> dict[str, Any]:
    out = {"replicas": prof["replicas"], "rename": prof.get("rename", False), "mps": prof.get("mps", False)}
    return out | ({"config": prof["config"]} if prof.get("config") else {})


# DNS-1123 from its one home (provision/names.py)
NodeName = Annotated[str, Strict(), StringConstraints(max_length=names.SUBDOMAIN_MAX, pattern=f"^{names.SUBDOMAIN.pattern}$")]
Namespace = Annotated[str, Strict(), StringConstraints(max_length=names.LABEL_MAX, pattern=f"^{names.LABEL.pattern}$")]
ConfigKey = Annotated[str, Strict(), StringConstraints(max_length=names.LABEL_MAX, pattern=f"^{names.LABEL.pattern}$")]
ChartVersion = Annotated[str, Strict(), StringConstraints(pattern=CHART_VERSION.pattern)]
Replicas = Annotated[int, BeforeValidator(validate_replicas)]  # an int, or a string of digits (the command line)
ProductOrNode = Annotated[str, Strict(), StringConstraints(pattern=r"\S")]  # a node name or a GPU product
MigProfile = Annotated[str, AfterValidator(_mig_profile)]
GpuCount = Annotated[int, Strict(), Field(ge=0)]
MinDriver = Annotated[int, BeforeValidator(_not_bool), Field(ge=100, le=10000)]  # "525" from the command line too
ComputeCapability = Annotated[str, BeforeValidator(_compute_capability)]
Seconds = Annotated[float, Strict(), Field(gt=0), AfterValidator(float)]
Number = Annotated[float, Strict(), AfterValidator(float)]
NonNegative = Annotated[float, Strict(), Field(ge=0), AfterValidator(float)]
WholeCount = Annotated[float, Strict(), Field(ge=0), AfterValidator(int)]   # 100 or 100.0 -> 100


TimeoutTable = TypedDict("TimeoutTable", dict.fromkeys(DEFAULT_TIMEOUTS, Seconds), total=False)  # type: ignore[misc]
TimeoutTable.__pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[attr-defined]


class HealthTable(TypedDict, total=False):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    xid_window_h: NonNegative
    critical_xids: Annotated[tuple[Annotated[int, Strict(), Field(gt=0)], ...], AfterValidator(lambda v: tuple(sorted(set(v))))]
    max_temperature_c: Number
    pcie_replays_warn: WholeCount
    pcie_replay_rate_warn_per_min: NonNegative
    retired_pages_limit: WholeCount
    persistence_mode: Annotated[Literal["Enabled", "Disabled"] | None,
                                BeforeValidator(lambda v: v if v is None else str(v).capitalize())]
    persistenced: StrictBool | None


class SharingTable(TypedDict, total=False):
    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]

    replicas: Required[Replicas]
    rename: StrictBool
    mps: StrictBool
    config: ConfigKey | None


# the tables come back as plain dicts, every default filled in
Timeouts = Annotated[TimeoutTable, AfterValidator(lambda t: {**DEFAULT_TIMEOUTS, **t})]
Health = Annotated[HealthTable, AfterValidator(lambda h: {**DEFAULT_HEALTH, **h})]
SharingProfile = Annotated[SharingTable, BeforeValidator(_sharing_shorthand), AfterValidator(_sharing_profile)]


@dataclass(frozen=True)
class Settings:
    """The run's desired state. validate() has pydantic check every value against the field types below (and the
    validators they name) and the rules between them (_consistent); building Settings(...) directly, as test fakes
    do, checks nothing."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    mode: Mode = "audit"
    kubeconfig: Annotated[str | None, AfterValidator(_kubeconfig)] = None
    context: str | None = None
    namespace: Namespace = "gpu-operator"
    suite_namespace: Namespace = "gpu-conformance"
    gpu_nodes: tuple[NodeName, ...] = ()
    node_selector: str = "nvidia.com/gpu.present=true"
    fallback_selector: str = "feature.node.kubernetes.io/pci-10de.present=true"
    expected_gpus: dict[NodeName, GpuCount] = field(default_factory=dict)
    replicas: Replicas = 4
    replica_profiles: dict[str, Replicas] = field(default_factory=dict)
    chart_version: ChartVersion = "v26.3.0"
    chart_repo: str = DEFAULT_CHART_REPO
    chart_repo_name: str = "nvidia"
    release: str = "gpu-operator"
    min_driver: MinDriver = 470
    min_compute_capability: ComputeCapability = "7.0"
    workload: bool = True
    workload_image: str = "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0-ubuntu22.04"
    host_backend: HostBackend = "none"
    hosts: dict[str, str] = field(default_factory=dict)  # node -> host address (explicit map)
    host_roots: dict[str, str] = field(default_factory=dict)  # node -> folder the host's / is seen at
    node_mapping: NodeMapping = "name"
    ansible_inventory: Annotated[str | None, AfterValidator(_inventory)] = None
    ssh_config: str | None = None
    ssh_identity_file: str | None = None
    ssh_user: str | None = None
    sudo: bool = False
    dcgm_access: DcgmAccess = "proxy"
    report_dir: str = "reports"
    helm: str = "helm"
    timeouts: Timeouts = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS))
    lab_state: str | None = None
    host_only: bool = False
    health: Health = field(default_factory=lambda: dict(DEFAULT_HEALTH))  # GPU health thresholds
    # run folder to compare with (default: the latest matching one in report_dir)
    previous_run: Annotated[str | None, AfterValidator(_previous_run)] = None
    fail_on: FailOn = "any"  # any: every problem fails the run; new: only regressions since the previous run
    # node-exporter textfile (*.prom) for the run's metrics
    metrics_file: Annotated[str | None, AfterValidator(_metrics_file)] = None
    pushgateway: Annotated[str | None, AfterValidator(_pushgateway)] = None  # Pushgateway URL the run's metrics are pushed to
    pushgateway_job: Annotated[str, Strict(), StringConstraints(min_length=1, pattern=r"^[^/]*$")] = "gpu-conformance"
    # MIG: node name or GPU product (as nvidia-smi names it) -> mig-parted config (nvidia.com/mig.config value)
    mig_profiles: dict[ProductOrNode, MigProfile] = field(default_factory=dict)
    # MIG: node name or GPU product -> single | mixed (the device plugin's MIG strategy there; default single)
    mig_strategies: dict[str, MigStrategy] = field(default_factory=dict)
    # hosts gathered at once (provision/hosts/gather.py: one round trip per node); a 2-core runner waits on the
    # network (ssh, pods/exec), not on its CPU, so several per core
    host_concurrency: Annotated[int, Strict(), Field(ge=1, le=256)] = 8
    host_gather: StrictBool = True  # false: every host fact is its own command, as before the gather
    # pod backend: access pods created per second (all nodes' start together)
    host_pod_creates_per_s: Annotated[float, Strict(), Field(gt=0, le=1000)] = 20.0
    # GPU product -> {"replicas": n, "rename": bool, "mps": bool, "config": key}: the config key (default:
    # profile_key of the product) the node label nvidia.com/device-plugin.config names; rename = renameByDefault
    # (nvidia.com/gpu.shared), mps = sharing.mps instead of time-slicing (issue 16)
    sharing_profiles: dict[str, SharingProfile] = field(default_factory=dict)
    # ClusterPolicy cdi.nriPluginEnabled (chart value, v26.3+): the toolkit's NRI plugin; no RuntimeClass, no
    # containerd drop-in (runtime mode nri, provision/observe/runtime_mode.py)
    cdi_nri_plugin: bool = False
    # the GPU stack: clusterpolicy (device plugin) | dra (GPUCluster + DRA driver)
    stack: Annotated[str, AfterValidator(_stack)] = "clusterpolicy"
    switch_stack: StrictBool = False  # --provision may move an installed release to the other stack (docs/dra.md)
    # stack dra: GPU sharing through the claim's GpuConfig: none | TimeSlicing | MPS
    dra_sharing: Annotated[str, AfterValidator(_dra_sharing)] = "none"

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


def _consistent(s: Settings) -> Settings:
    """Rules between settings; each names the setting to change."""
    if s.host_backend == "ansible" and not s.ansible_inventory:
        raise _err("host_backend", "ansible", "the ansible backend needs --ansible-inventory PATH")
    if s.host_only and s.mode != "audit":
        raise _err("mode", s.mode, "--host-only checks a host without Kubernetes: it cannot provision, plan or "
                   "roll back")
    if s.host_only and s.host_backend in ("none", "pod"):
        raise _err("host_backend", s.host_backend, "--host-only needs a host backend: local, ssh, paramiko or "
                   "ansible")
    if s.host_backend == "lab" and not s.host_roots:
        raise _err("host_backend", "lab", "the lab backend needs host roots (use --lab)")
    if s.stack == "dra" and Version(s.chart_version.lstrip("v")) < Version("26.7.0"):
        raise _err("chart_version", s.chart_version, "stack = \"dra\" needs GPU Operator v26.7.0 or newer (the "
                   "first chart with gpuCluster.deployCR); set chart_version = \"v26.7.0\"")
    return s


# ------------------------------------------------------------------------------------------------ errors
NODE_NAME_FIX = ("a node name must be a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', starting and "
                 "ending with a letter or digit (shell metacharacters are never accepted)")
HEALTH_NUMBER_FIX = "a number (hours, degrees C, a count or a rate per minute)"
# The fix of each setting, by its path ("*": a key the team chooses, or any entry of a table); validators that know
# better raise ValueError with their own fix.
FIXES: dict[str, str] = {
    "mode": f"one of {MODES}",
    "namespace": "a namespace is a DNS-1123 label (lowercase letters, digits, '-')",
    "suite_namespace": "a namespace is a DNS-1123 label (lowercase letters, digits, '-')",
    "gpu_nodes": "a list of node names",
    "gpu_nodes.*": NODE_NAME_FIX,
    "expected_gpus": "a table of node name -> physical GPU count",
    "expected_gpus.*.[key]": NODE_NAME_FIX,
    "expected_gpus.*": "an integer count of physical GPUs",
    "replica_profiles": "a table of GPU product -> replicas",
    "chart_version": "GPU Operator chart versions look like v26.3.0",
    "min_driver": "the minimum driver is a major version number such as 470",
    "host_backend": f"one of {HOST_BACKENDS}",
    "dcgm_access": f"one of {DCGM_ACCESS}",
    "node_mapping": f"one of {NODE_MAPPINGS}",
    "fail_on": "any (every problem fails the run) or new (only regressions since the previous run)",
    "pushgateway_job": "a job name without '/'",
    "mig_profiles": 'a table such as {"NVIDIA H100 80GB HBM3" = "all-1g.10gb", gpu-b = "all-balanced"} (node name or '
                    'GPU product -> mig-parted config)',
    "mig_profiles.*.[key]": "keys are node names or GPU products as nvidia-smi names them",
    "mig_strategies": f'a table of node name or GPU product -> one of {MIG_STRATEGIES}, such as {{gpu-b = "mixed"}}',
    "host_concurrency": "how many hosts are gathered at once: an integer 1..256",
    "host_pod_creates_per_s": "access pods created per second: 0 < n <= 1000",
    "host_gather": "true (one round trip per node) or false",
    "switch_stack": "true or false",
    "timeouts": f"a table of timeout name -> seconds; known timeouts: {sorted(DEFAULT_TIMEOUTS)}",
    "timeouts.*": "a positive number of seconds",
    "health": f"a table of GPU health settings: {sorted(DEFAULT_HEALTH)}",
    "health.*": HEALTH_NUMBER_FIX,
    "health.critical_xids": "a list of Xid numbers such as [48, 79, 94, 95]",
    "health.persistence_mode": '"Enabled" or "Disabled" (or leave it out: not checked)',
    "health.persistenced": "true (nvidia-persistenced must run) or false",
    "sharing_profiles": "a table of GPU product -> {replicas = 4, rename = true, mps = false}",
    "sharing_profiles.*": "a table {replicas = 4, rename = true, mps = false}",
    "sharing_profiles.*.replicas": "time-slicing replicas per GPU: an integer >= 2",
    "sharing_profiles.*.rename": "true or false",
    "sharing_profiles.*.mps": "true or false",
    "sharing_profiles.*.config": "a ConfigMap key that is also a label value (e.g. dgx-spark)",
}
# tables with fixed keys: an unknown key is answered with the known ones
KNOWN_KEYS: dict[str, tuple[str, tuple[str, ...]]] = {
    "timeouts": ("known timeouts", tuple(sorted(DEFAULT_TIMEOUTS))),
    "health": ("known health settings", tuple(sorted(DEFAULT_HEALTH))),
    "sharing_profiles.*": ("known keys", SHARING_PROFILE_KEYS),
}
USER_KEYED = {"gpu_nodes", "expected_gpus", "replica_profiles", "hosts", "host_roots", "mig_profiles", "mig_strategies",
              "sharing_profiles"}  # the entry below them is the team's (a node, a product), not a setting's name
BY_TYPE = {"string_type": "a string", "bool_type": "true or false", "int_type": "an integer", "dict_type": "a table",
           "list_type": "a list", "tuple_type": "a list"}


def _message(error: Any) -> str:
    """One pydantic error as 'invalid setting NAME=VALUE: FIX'."""
    ctx = error.get("ctx") or {}
    loc = [str(part) for part in error["loc"]]
    is_key = loc[-1:] == ["[key]"]
    shape, name = [], ""
    for i, part in enumerate(loc):
        if part == "[key]":
            continue
        user = i == 1 and loc[0] in USER_KEYED
        shape.append("*" if user else part)
        if is_key and i == len(loc) - 2:
            continue  # the bad key is the value shown
        if user and loc[0] == "gpu_nodes":
            continue  # the bad name is the value shown
        name += part if i == 0 else f"[{part!r}]" if user else f".{part}"
    path = ".".join(shape) + (".[key]" if is_key else "")
    if error["type"] == "extra_forbidden":
        what, keys = KNOWN_KEYS.get(".".join(shape[:-1]), ("known keys", ()))
        return f"invalid setting {name}: unknown key; {what}: {list(keys)}"
    if error["type"] == "missing":
        return f"invalid setting {name}: missing; {FIXES.get(path, 'required')}"
    if error["type"] == "value_error":
        fix = str(ctx.get("error"))
    else:
        parts = path.split(".")
        candidates = [".".join(parts[:n]) for n in range(len(parts), 0, -1)]
        candidates = [c for n, c in enumerate(candidates) for c in (c, ".".join([*parts[:len(parts) - n - 1], "*"]))]
        fix = next((FIXES[c] for c in candidates if c in FIXES), None) or BY_TYPE.get(error["type"], error["msg"])
    return f"invalid setting {name}={error.get('input')!r}: {fix}"


# ------------------------------------------------------------------------------------------------ loading
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


def validate(raw: dict[str, Any]) -> Settings:
    """Build Settings from a flat dict of values (already merged: defaults < pyproject < command line); a value of
    None is "not given" (the default applies). Every problem found is one line of the SettingsError."""
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SettingsError(f"unknown settings {unknown}; known settings: {sorted(known)}")
    try:
        s = _adapter().validate_python({k: v for k, v in raw.items() if v is not None})
    except ValidationError as exc:
        raise SettingsError("\n".join(dict.fromkeys(_message(e) for e in exc.errors()))) from None
    return _consistent(s)


@functools.cache
def _adapter() -> TypeAdapter[Settings]:
    return TypeAdapter(Settings)
