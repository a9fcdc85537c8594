"""MIG mode of a GPU node: which nodes are judged in MIG mode, and the checks of features/mig.feature.

A node is in MIG mode when its desired MIG profile (setting ``mig_profiles``, by node name or GPU product)
or, without one, its ``nvidia.com/mig.config`` label puts its GPUs in MIG mode (anything but all-disabled).
Its strategy is the device plugin's (provision/expect.py node_sharing: ClusterPolicy ``mig.strategy``).
The judges (``judge_*``) are pure: labels, allocatable, nvidia-smi -L, the mig-parted config and DCGM text in,
a list of problems out; the ctx functions gather those inputs once and return a checks.Finding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from provision.context import NoHostAccess, RunContext
from provision.hosts.results import HostUnreachable
from provision.observe import mig as obs
from provision.observe.nvidia_smi import NvidiaSmiParseError, parse_list, parse_mig_devices

GPU = "nvidia.com/gpu"
DEFAULT_MIG_PARTED_CM = "default-mig-parted-config"


@dataclass(frozen=True)
class MigMode:
    """How a node is judged in MIG mode: the profile it should have, where that came from, the strategy."""

    profile: str
    source: str
    strategy: str

    def words(self) -> str:
        return f"MIG mode (strategy {self.strategy}, profile {self.profile})"

    def to_json(self, state: str | None = None) -> dict:
        return {"strategy": self.strategy, "profile": self.profile, "state": state, "source": self.source}


def desired_profile(settings_profiles: Mapping[str, str], node: str, product: str | None) -> tuple[str, str] | None:
    """(profile, source) from the setting mig_profiles: the node's own name first, then its GPU product."""
    if node in settings_profiles:
        return settings_profiles[node], f"setting mig_profiles[{node}]"
    if product and product in settings_profiles:
        return settings_profiles[product], f"setting mig_profiles[{product!r}]"
    return None


def _labels(ctx: RunContext, node: str) -> dict[str, str]:
    return (ctx.kube.snapshot().nodes.get(node, {}).get("metadata") or {}).get("labels") or {}


def mig_parted_configs(ctx: RunContext) -> tuple[dict[str, list[obs.MigEntry]] | None, str]:
    """The mig-parted config the MIG manager uses: ClusterPolicy spec.migManager.config.name (else the
    operator's default-mig-parted-config) in the operator namespace; (None, why) when it is not there."""
    snap = ctx.kube.snapshot()
    spec = (snap.cluster_policy or {}).get("spec") or {}
    name = ((spec.get("migManager") or {}).get("config") or {}).get("name") or DEFAULT_MIG_PARTED_CM
    data = (snap.configmaps.get(name) or {}).get("data") or {}
    if not data:
        return None, f"ConfigMap {ctx.settings.namespace}/{name} (the MIG manager's mig-parted config) not found"
    key = "config.yaml" if "config.yaml" in data else next(iter(data))
    return obs.parse_mig_parted_config(data[key], f"ConfigMap {name} key {key}"), f"ConfigMap {name}"


def node_mode(ctx: RunContext, node: str) -> MigMode | None:
    """The node's MIG mode, or None for a node judged as before (no MIG)."""
    from provision import expect

    want = desired_profile(ctx.settings.mig_profiles, node, expect.product(ctx, node))
    if want is None:
        label = _labels(ctx, node).get(obs.CONFIG_LABEL)
        want = (label, f"node label {obs.CONFIG_LABEL}") if label else None
    if want is None:
        return None
    try:
        configs, _ = mig_parted_configs(ctx)
    except obs.MigConfigError:
        configs = None
    if not obs.profile_enables_mig(configs, want[0]):
        return None
    return MigMode(want[0], want[1], expect.node_sharing(ctx, node).mig_strategy)


# ------------------------------------------------------------------------------------------ pure judges
def judge_state(labels: Mapping[str, str], mode: MigMode) -> list[str]:
    got = obs.parse_labels(labels)
    problems = []
    if got.capable is False:
        problems.append(f"{obs.CAPABLE_LABEL}=false: the GPUs cannot be partitioned (profile {mode.profile} "
                        "cannot be applied)")
    if got.config != mode.profile:
        problems.append(f"{obs.CONFIG_LABEL}={got.config} (want {mode.profile}, {mode.source})")
    if got.state != "success":
        problems.append(f"{obs.STATE_LABEL}={got.state} (want success)")
    return problems


def judge_devices(smi_list: str, configs: Mapping[str, list[obs.MigEntry]], mode: MigMode) -> tuple[list[str], int]:
    """(problems, MIG devices listed) of `nvidia-smi -L` against the mig-parted config of the profile."""
    try:
        gpus = parse_list(smi_list)
        devices = parse_mig_devices(smi_list)
    except NvidiaSmiParseError as exc:
        return [f"nvidia-smi -L did not parse: {exc}"], 0
    if not gpus:
        return ["nvidia-smi -L lists no GPU"], 0
    layout = obs.observed_layout(devices, [g.index for g in gpus])
    try:
        return obs.layout_problems(layout, configs, mode.profile), len(devices)
    except obs.MigConfigError as exc:
        return [str(exc)], len(devices)


def judge_allocatable(alloc: Mapping[str, str], labels: Mapping[str, str], mode: MigMode, devices: dict[str, int],
                      physical_without_mig: int, replicas: int) -> list[str]:
    """Allocatable and GFD's MIG labels for the devices nvidia-smi lists (profile -> count).

    single: nvidia.com/gpu = MIG devices x time-slicing replicas, GFD gpu.count = MIG devices, gpu.product
    <model>-MIG-<profile>, gpu.slices.gi/ci present. mixed: nvidia.com/mig-<profile> = the GFD
    nvidia.com/mig-<profile>.count label = the devices nvidia-smi lists (x that profile's GFD replicas), and
    nvidia.com/gpu = the GPUs without MIG x replicas."""
    got = obs.parse_labels(labels)
    problems = []
    total = sum(devices.values())
    if got.strategy not in (None, mode.strategy):
        problems.append(f"GFD nvidia.com/mig.strategy={got.strategy} (the device plugin uses {mode.strategy})")
    if mode.strategy == "single":
        if len(devices) > 1:
            problems.append(f"strategy single needs one MIG profile on the node, nvidia-smi lists {sorted(devices)} "
                            "(use strategy mixed for mixed profiles)")
        have = int(alloc.get(GPU, "0") or 0)
        want = total * replicas
        if have != want:
            problems.append(f"allocatable {GPU}={have} (want {total} MIG devices x {replicas} replicas = {want})")
        if got.single_count != total:
            problems.append(f"GFD nvidia.com/gpu.count={labels.get('nvidia.com/gpu.count')} (want {total} MIG devices)")
        profile = next(iter(devices), None)
        if profile and got.single_profile != profile:
            problems.append(f"GFD nvidia.com/gpu.product={labels.get('nvidia.com/gpu.product')} (want "
                            f"<model>-MIG-{profile})")
        if None in got.slices:
            problems.append("GFD labels nvidia.com/gpu.slices.gi / .ci missing")
        return problems
    if mode.strategy != "mixed":
        return [f"the device plugin's MIG strategy is {mode.strategy}: MIG devices are not advertised (set "
                "ClusterPolicy spec.mig.strategy to single or mixed)"]
    for profile in sorted(set(devices) | set(got.mixed)):
        n = devices.get(profile, 0)
        rep = got.mixed_replicas.get(profile, 1) or 1
        have = int(alloc.get(f"nvidia.com/mig-{profile}", "0") or 0)
        label = got.mixed.get(profile)
        if label != n:
            problems.append(f"GFD nvidia.com/mig-{profile}.count={label} (nvidia-smi lists {n})")
        if have != n * rep:
            problems.append(f"allocatable nvidia.com/mig-{profile}={have} (want {n} x {rep} replicas = {n * rep})")
    have_gpu = int(alloc.get(GPU, "0") or 0)
    if have_gpu != physical_without_mig * replicas:
        problems.append(f"allocatable {GPU}={have_gpu} (want {physical_without_mig} GPUs without MIG x {replicas})")
    return problems


def judge_dcgm(text: str, devices: int) -> list[str]:
    """Every MIG instance is a DCGM series with GPU_I_PROFILE and GPU_I_ID labels."""
    try:
        inst = obs.dcgm_mig_instances(text)
    except obs.MigConfigError as exc:
        return [str(exc)]
    found = sum(len(v) for v in inst.values())
    if found != devices:
        shown = ", ".join(f"{u}: {sorted(v)}" for u, v in sorted(inst.items())) or "none"
        return [f"DCGM reports {found} MIG instances (GPU_I_ID/GPU_I_PROFILE), nvidia-smi lists {devices} ({shown})"]
    return []


# ------------------------------------------------------------------------------------------ with a cluster
def smi_list(ctx: RunContext, node: str) -> tuple[int, str]:
    """(exit code, output) of `nvidia-smi -L` on the node, once per run (raises NoHostAccess / HostUnreachable)."""
    def read() -> tuple[int, str]:
        res = ctx.host(node).run(["nvidia-smi", "-L"], timeout=60)
        return res.rc, res.stdout if res.rc == 0 else (res.stderr or res.stdout)
    return ctx.host_fact(node, "nvidia-smi -L", read)


def host_available(ctx: RunContext, node: str) -> bool:
    try:
        ctx.host(node)
        return True
    except (NoHostAccess, HostUnreachable):
        return False
