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
from functools import lru_cache
from typing import NamedTuple

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
    return _parsed(data[key], f"ConfigMap {name} key {key}"), f"ConfigMap {name}"


@lru_cache(maxsize=8)
def _parsed(text: str, source: str) -> dict[str, list[obs.MigEntry]]:
    """One parse per config text (every node's checks read the same ConfigMap)."""
    return obs.parse_mig_parted_config(text, source)


def desired_strategy(settings_strategies: Mapping[str, str], node: str, product: str | None) -> str | None:
    """single | mixed from the setting mig_strategies (node name, then GPU product); None when not set."""
    if node in settings_strategies:
        return settings_strategies[node]
    if product and product in settings_strategies:
        return settings_strategies[product]
    return None


def effective_strategy(ctx: RunContext, node: str) -> str:
    """The MIG strategy the node's device plugin and GFD run with: MIG_STRATEGY, which the operator sets from
    ClusterPolicy spec.mig.strategy, overrides the config file's flags.migStrategy (the plugin's precedence:
    flag, then environment, then config file); without it the node's config key decides."""
    from provision import expect

    spec = (ctx.kube.snapshot().cluster_policy or {}).get("spec") or {}
    return (spec.get("mig") or {}).get("strategy") or expect.node_sharing(ctx, node).mig_strategy


def node_mode(ctx: RunContext, node: str) -> MigMode | None:
    """The node's MIG mode, or None for a node judged as before (no MIG)."""
    from provision import expect

    label = _labels(ctx, node).get(obs.CONFIG_LABEL)
    if not ctx.settings.mig_profiles and (not label or label == obs.DISABLED):
        return None   # the common case, decided without nvidia-smi or the mig-parted config
    product = expect.product(ctx, node)
    want = desired_profile(ctx.settings.mig_profiles, node, product)
    from_setting = want is not None   # else from the node's label
    if want is None:
        want = (label, f"node label {obs.CONFIG_LABEL}") if label else None
    if want is None:
        return None
    try:
        configs, _ = mig_parted_configs(ctx)
    except obs.MigConfigError:
        configs = None
    if not obs.profile_enables_mig(configs, want[0]):
        return None
    strategy = desired_strategy(ctx.settings.mig_strategies, node, product)
    if strategy is None:
        strategy = "single" if from_setting else effective_strategy(ctx, node)
    return MigMode(want[0], want[1], strategy)


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
    """Allocatable and GFD's MIG labels for the devices nvidia-smi lists (profile -> count)."""
    return (judge_advertised(alloc, labels, mode, devices, physical_without_mig, replicas)
            + judge_gfd(labels, mode, devices))


def judge_advertised(alloc: Mapping[str, str], labels: Mapping[str, str], mode: MigMode, devices: dict[str, int],
                     physical_without_mig: int, replicas: int) -> list[str]:
    """single: nvidia.com/gpu = MIG devices x time-slicing replicas. mixed: nvidia.com/mig-<profile> = the
    devices nvidia-smi lists x that profile's GFD replicas, and nvidia.com/gpu = the GPUs without MIG x replicas."""
    got = obs.parse_labels(labels)
    total = sum(devices.values())
    if mode.strategy == "single":
        problems = []
        if len(devices) > 1:
            problems.append(f"strategy single needs one MIG profile on the node, nvidia-smi lists {sorted(devices)} "
                            "(use strategy mixed for mixed profiles)")
        have = int(alloc.get(GPU, "0") or 0)
        want = total * replicas
        if have != want:
            problems.append(f"allocatable {GPU}={have} (want {total} MIG devices x {replicas} replicas = {want})")
        return problems
    if mode.strategy != "mixed":
        return [f"the device plugin's MIG strategy is {mode.strategy}: MIG devices are not advertised (set "
                "ClusterPolicy spec.mig.strategy to single or mixed)"]
    problems = []
    for profile in sorted(set(devices) | set(got.mixed)):
        n = devices.get(profile, 0)
        rep = got.mixed_replicas.get(profile, 1) or 1
        have = int(alloc.get(f"nvidia.com/mig-{profile}", "0") or 0)
        if have != n * rep:
            problems.append(f"allocatable nvidia.com/mig-{profile}={have} (want {n} x {rep} replicas = {n * rep})")
    have_gpu = int(alloc.get(GPU, "0") or 0)
    if have_gpu != physical_without_mig * replicas:
        problems.append(f"allocatable {GPU}={have_gpu} (want {physical_without_mig} GPUs without MIG x {replicas})")
    return problems


def judge_gfd(labels: Mapping[str, str], mode: MigMode, devices: dict[str, int] | None) -> list[str]:
    """single: GFD gpu.count = MIG devices, gpu.product <model>-MIG-<profile>, gpu.slices.gi/ci present.
    mixed: nvidia.com/mig-<profile>.count = the devices nvidia-smi lists, for every profile. devices None (no
    nvidia-smi): only that GFD labels MIG devices at all under the strategy."""
    got = obs.parse_labels(labels)
    problems = []
    if devices is None:
        if mode.strategy == "single" and not (got.single_profile and got.single_count):
            problems.append(f"GFD nvidia.com/gpu.product={labels.get('nvidia.com/gpu.product')}, gpu.count="
                            f"{labels.get('nvidia.com/gpu.count')} (want <model>-MIG-<profile> and the MIG devices)")
        elif mode.strategy == "mixed" and not any(got.mixed.values()):
            problems.append("no GFD nvidia.com/mig-<profile>.count label counts a MIG device")
        if got.strategy not in (None, mode.strategy):
            problems.append(f"GFD nvidia.com/mig.strategy={got.strategy} (the device plugin uses {mode.strategy})")
        return problems
    if got.strategy not in (None, mode.strategy):
        problems.append(f"GFD nvidia.com/mig.strategy={got.strategy} (the device plugin uses {mode.strategy})")
    if mode.strategy == "single":
        total = sum(devices.values())
        if got.single_count != total:
            problems.append(f"GFD nvidia.com/gpu.count={labels.get('nvidia.com/gpu.count')} (want {total} MIG devices)")
        profile = next(iter(devices), None)
        if profile and got.single_profile != profile:
            problems.append(f"GFD nvidia.com/gpu.product={labels.get('nvidia.com/gpu.product')} (want "
                            f"<model>-MIG-{profile})")
        if None in got.slices:
            problems.append("GFD labels nvidia.com/gpu.slices.gi / .ci missing")
    elif mode.strategy == "mixed":
        for profile in sorted(set(devices) | set(got.mixed)):
            if got.mixed.get(profile) != devices.get(profile, 0):
                problems.append(f"GFD nvidia.com/mig-{profile}.count={got.mixed.get(profile)} (nvidia-smi lists "
                                f"{devices.get(profile, 0)})")
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


# ------------------------------------------------------------------------------------------ the checks
def _finding(ok: bool, mode: MigMode, node: str, expected: str, problems: list[str], fix: str):
    from provision.checks import Finding, _fix

    found = "; ".join(problems) or "as expected"
    return Finding(ok, f"{node} judged in {mode.words()}: " + _fix(expected, found, fix),
                   observed=f"{node} in {mode.words()}: {found}")


def require_mode(ctx: RunContext, node: str) -> MigMode:
    from provision.checks import NotApplicable

    mode = node_mode(ctx, node)
    if mode is None:
        raise NotApplicable(f"{node} is not in MIG mode (no mig_profiles setting for it or its GPU, no "
                            f"{obs.CONFIG_LABEL} label asking for MIG): judged without MIG (not applicable)")
    return mode


def _node_obj(ctx: RunContext, node: str) -> tuple[dict, dict]:
    obj = ctx.kube.snapshot().nodes.get(node) or {}
    return ((obj.get("status") or {}).get("allocatable") or {}), ((obj.get("metadata") or {}).get("labels") or {})


def check_state(ctx: RunContext, node: str):
    mode = require_mode(ctx, node)
    _, labels = _node_obj(ctx, node)
    problems = judge_state(labels, mode)
    return _finding(not problems, mode, node, f"{obs.CONFIG_LABEL}={mode.profile} and {obs.STATE_LABEL}=success",
                    problems, f"label the node {obs.CONFIG_LABEL}={mode.profile} (pytest features/ --provision) and "
                    "read the nvidia-mig-manager pod's log on the node; state failed: the GPUs may be in use or "
                    "need a reboot")


class Listed(NamedTuple):
    problems: list[str]          # nvidia-smi -L against the profile
    devices: dict[str, int]      # profile -> devices nvidia-smi lists
    without: int                 # GPUs without MIG mode (nvidia-smi mig.mode.current)
    text: str                    # nvidia-smi -L
    total: int = 0               # GPUs nvidia-smi lists

    @property
    def mig_off(self) -> bool:
        """No GPU has MIG mode on (the MIG manager did not apply, or failed): the plugin and GFD then see
        full GPUs, whatever the strategy (GFD: single without MIG-enabled devices is the none strategy)."""
        return self.total > 0 and self.without == self.total


def _devices(ctx: RunContext, node: str, mode: MigMode) -> Listed:
    """What nvidia-smi on the node lists, judged against the node's profile."""
    from provision import expect

    rc, text = smi_list(ctx, node)
    if rc != 0:
        return Listed([f"nvidia-smi -L exited {rc}: {text.strip()[:200]}"], {}, 0, text)
    configs, where = mig_parted_configs(ctx)
    if configs is None:
        from provision.outcomes import Broken

        raise Broken(f"cannot tell which MIG devices profile {mode.profile} gives: {where}")
    problems, _ = judge_devices(text, configs, mode)
    try:
        gpus, listed = parse_list(text), parse_mig_devices(text)
    except NvidiaSmiParseError:
        return Listed(problems, {}, 0, text)
    devices: dict[str, int] = {}
    for d in listed:
        devices[d.profile] = devices.get(d.profile, 0) + 1
    # MIG-enabled: a GPU with MIG devices in -L (read after any MIG change of this run), or one nvidia-smi's query
    # says is Enabled (MIG on without devices); the query may have been read before the MIG manager ran.
    facts = expect.smi(ctx, node)
    on = {d.gpu_index for d in listed} | (
        {g.index for g in facts.gpus if (g.mig_mode or "").lower() == "enabled"} if facts.usable else set())
    return Listed(problems, devices, sum(1 for g in gpus if g.index not in on), text, len(gpus))


def check_devices(ctx: RunContext, node: str):
    from provision.checks import NotApplicable

    mode = require_mode(ctx, node)
    try:
        problems, devices, _, text, _ = _devices(ctx, node, mode)
    except NoHostAccess as exc:
        raise NotApplicable(f"host checks are off: nvidia-smi -L cannot be read on {node} ({exc}; not applicable)") from exc
    f = _finding(not problems and bool(devices), mode, node,
                 f"the MIG devices the mig-parted config {mode.profile} gives each GPU, in nvidia-smi -L",
                 problems or ([] if devices else ["no MIG devices listed"]),
                 f"check the nvidia-mig-manager pod's log on {node}; relabel {obs.CONFIG_LABEL} to re-apply")
    f.attachments["nvidia-smi -L"] = text
    return f


def check_advertised(ctx: RunContext, node: str):
    from provision import expect

    mode = require_mode(ctx, node)
    alloc, labels = _node_obj(ctx, node)
    replicas = expect.replicas(ctx, node)
    try:
        listed = _devices(ctx, node, mode)
        devices, without = listed.devices, listed.without
        if listed.mig_off:   # the MIG scenarios report why; the plugin advertises the full GPUs
            devices, without = {}, listed.total
    except (NoHostAccess, HostUnreachable):   # no host: GFD's counts stand for nvidia-smi
        got = obs.parse_labels(labels)
        devices = dict(got.mixed) if mode.strategy == "mixed" else (
            {got.single_profile: got.single_count or 0} if got.single_profile else {})
        without = 0
    if mode.strategy == "single" and not devices and without:
        problems = [] if int(alloc.get(GPU, "0") or 0) == without * replicas else [
            f"allocatable {GPU}={alloc.get(GPU, '0')} (MIG off: want {without} GPUs x {replicas} replicas)"]
    else:
        problems = judge_advertised(alloc, labels, mode, devices, without, replicas)
    running = effective_strategy(ctx, node)
    if running != mode.strategy:
        problems.insert(0, f"the device plugin runs with MIG strategy {running} (ClusterPolicy spec.mig.strategy, "
                        f"else its config's flags.migStrategy), the node wants {mode.strategy}")
    resource = GPU if mode.strategy == "single" else "nvidia.com/mig-<profile>"
    shown = ", ".join(f"{k}={v}" for k, v in sorted(alloc.items()) if k.startswith("nvidia.com/")) or "none"
    return _finding(not problems, mode, node, f"allocatable {resource} = the MIG devices x {replicas} time-slicing "
                    f"replicas ({', '.join(f'{n}x {p}' for p, n in sorted(devices.items())) or 'no devices'})",
                    problems + ([] if not problems else [f"allocatable {shown}"]),
                    "check the device-plugin pod on the node: it must run with the MIG strategy of ClusterPolicy "
                    "spec.mig.strategy and restart after a MIG change")


def check_gfd(ctx: RunContext, node: str):
    mode = require_mode(ctx, node)
    _, labels = _node_obj(ctx, node)
    try:
        listed = _devices(ctx, node, mode)
        devices = listed.devices
        if listed.mig_off:   # GFD labels full GPUs (the MIG scenarios report why MIG is off)
            from provision.observe import gfd

            count = gfd.parse_labels(labels).count
            problems = [] if count == listed.total else [f"GFD nvidia.com/gpu.count={count} (MIG off: want "
                                                          f"{listed.total} GPUs)"]
            return _finding(not problems, mode, node, "GFD labels for the node's GPUs (MIG off)", problems,
                            "GFD relabels when it restarts; check the gpu-feature-discovery pod on the node")
    except (NoHostAccess, HostUnreachable):
        devices = None   # no nvidia-smi: GFD's labels are judged on their own
    problems = judge_gfd(labels, mode, devices)
    return _finding(not problems, mode, node, f"GFD labels for MIG strategy {mode.strategy}", problems,
                    "GFD relabels when it restarts; check the gpu-feature-discovery pod on the node")


def check_dcgm(ctx: RunContext, node: str):
    from provision.health import scrape_dcgm

    mode = require_mode(ctx, node)
    text, why = scrape_dcgm(ctx, node)
    if text is None:
        return _finding(False, mode, node, "the DCGM exporter answering", [why or "no answer"],
                        "check the nvidia-dcgm-exporter pod on the node")
    try:
        count = sum(_devices(ctx, node, mode).devices.values())
    except (NoHostAccess, HostUnreachable):
        _, labels = _node_obj(ctx, node)
        got = obs.parse_labels(labels)
        count = sum(got.mixed.values()) if mode.strategy == "mixed" else (got.single_count or 0)
    problems = judge_dcgm(text, count)
    return _finding(not problems, mode, node, f"a DCGM series per MIG instance ({count}, labels GPU_I_PROFILE and "
                    "GPU_I_ID)", problems, "restart the nvidia-dcgm-exporter pod on the node after a MIG change")


# ------------------------------------------------------------------------------------------ provisioning
def desired_modes(ctx: RunContext, nodes: list[str]) -> dict[str, MigMode]:
    """The nodes the desired state (setting mig_profiles) puts in MIG mode, with their strategy."""
    from provision import expect

    if not ctx.settings.mig_profiles:
        return {}
    try:
        configs, _ = mig_parted_configs(ctx)
    except obs.MigConfigError:
        configs = None
    out = {}
    for node in nodes:
        product = expect.product(ctx, node)
        want = desired_profile(ctx.settings.mig_profiles, node, product)
        if want is not None and obs.profile_enables_mig(configs, want[0]):
            strategy = desired_strategy(ctx.settings.mig_strategies, node, product) or "single"
            out[node] = MigMode(want[0], want[1], strategy)
    return out


def chart_values(ctx: RunContext) -> tuple[dict, list[str]]:
    """ClusterPolicy spec.mig.strategy through the chart value mig.strategy: the one strategy of the MIG nodes,
    or "" (unset: each node's device-plugin config key carries its flags.migStrategy) when they differ. {} (the
    chart's default) without MIG nodes."""
    strategies = sorted({m.strategy for m in desired_modes(ctx, list(ctx.gpu_nodes)).values()})
    if not strategies:
        return {}, []
    if len(strategies) == 1:
        return {"mig": {"strategy": strategies[0]}}, []
    return {"mig": {"strategy": ""}}, [f"mig.strategy unset: MIG nodes use {strategies}; each node's device-plugin "
                                      "config key carries its flags.migStrategy (MIG_STRATEGY would override it)"]


def _profiles_of(configs: Mapping[str, list[obs.MigEntry]] | None, profile: str) -> list[str]:
    if not configs or profile not in configs:
        return []
    return sorted({p for e in configs[profile] if e.mig_enabled for p, n in e.mig_devices.items() if n})


def timeslicing_keys(ctx: RunContext, nodes: list[str], data: dict[str, str], labels: dict[str, str]) -> None:
    """Device-plugin config keys for MIG nodes (flags.migStrategy of the node's strategy; under mixed the MIG
    resources nvidia.com/mig-<profile> are time-sliced too), added to the time-slicing ConfigMap's data, and the
    node -> key labels. Nodes without MIG keep what time-slicing gave them."""
    from provision import expect
    from provision.observe.timeslicing import render_config

    modes = desired_modes(ctx, nodes)
    if not modes:
        return
    try:
        configs, _ = mig_parted_configs(ctx)
    except obs.MigConfigError:
        configs = None
    for node, mode in sorted(modes.items()):
        product = expect.product(ctx, node)
        base = labels.get(node)
        key = f"{base}-mig-{mode.strategy}" if base else f"mig-{mode.strategy}"
        profiles = _profiles_of(configs, mode.profile) if mode.strategy == "mixed" else []
        rendered = render_config(ctx.settings.replicas_for(product), mig_strategy=mode.strategy,
                                 mig_resources=[f"nvidia.com/mig-{p}" for p in profiles])
        if key in data and data[key] != rendered:   # two mixed nodes with other profiles: one key holds both
            rendered = render_config(ctx.settings.replicas_for(product), mig_strategy=mode.strategy,
                                     mig_resources=sorted(set(_resources_in(data[key])) |
                                                          {f"nvidia.com/mig-{p}" for p in profiles}))
        data[key] = rendered
        labels[node] = key


def _resources_in(config_text: str) -> list[str]:
    import yaml

    doc = yaml.safe_load(config_text) or {}
    return [r["name"] for r in ((doc.get("sharing") or {}).get("timeSlicing") or {}).get("resources") or []
            if str(r.get("name", "")).startswith("nvidia.com/mig-")]


def expected_devices(ctx: RunContext, node: str, mode: MigMode) -> int | None:
    """How many MIG devices the node will have under its profile: the mig-parted config's layout when every
    entry that may apply gives the same count, else nvidia-smi -L's when it matches one; None when unknown."""
    try:
        configs, _ = mig_parted_configs(ctx)
    except obs.MigConfigError:
        return None
    if configs is None or mode.profile not in configs:
        return None
    try:
        rc, text = smi_list(ctx, node)
        gpus = [g.index for g in parse_list(text)] if rc == 0 else []
    except (NoHostAccess, HostUnreachable, NvidiaSmiParseError):
        rc, text, gpus = 1, "", []
    if not gpus:
        from provision import expect

        count, _ = expect.physical_gpus(ctx, node)
        gpus = list(range(count or 0))
    totals = {sum(sum(layout.values()) for layout in per_gpu)
              for per_gpu in _combinations([obs.candidate_layouts(configs, mode.profile, g) or [{}] for g in gpus])}
    if len(totals) == 1:
        return totals.pop()
    if rc == 0 and not judge_devices(text, configs, mode)[0]:
        return len(parse_mig_devices(text))
    return None


def _combinations(options: list[list[dict[str, int]]]) -> list[list[dict[str, int]]]:
    out: list[list[dict[str, int]]] = [[]]
    for opts in options:
        out = [[*prev, o] for prev in out for o in opts][:64]
    return out


def expected_gpu_allocatable(ctx: RunContext, node: str, replicas: int) -> tuple[bool, int | None]:
    """(the node is a MIG node of the desired state, nvidia.com/gpu it should advertise): single = MIG devices x
    replicas, mixed = GPUs without MIG x replicas (0: the MIG manager puts every GPU of the node in MIG mode)."""
    mode = desired_modes(ctx, [node]).get(node)
    if mode is None:
        return False, None
    try:   # what the plugin advertises for the partitions the GPUs have now (the MIG scenarios judge those)
        listed = _devices(ctx, node, mode)
        if listed.total:
            if listed.mig_off:
                return True, listed.total * replicas
            return True, (listed.without if mode.strategy == "mixed" else sum(listed.devices.values())) * replicas
    except (NoHostAccess, HostUnreachable):
        pass
    except Exception:  # noqa: BLE001 - no mig-parted config yet (Broken): fall back to the config's layout
        pass
    if mode.strategy == "mixed":
        return True, 0
    n = expected_devices(ctx, node, mode)
    return True, None if n is None else n * replicas


def expected_replicas_label(ctx: RunContext, node: str, replicas: int) -> int:
    """GFD's nvidia.com/gpu.replicas: under mixed the full-GPU labels of MIG-enabled GPUs carry no sharing (0)."""
    mode = desired_modes(ctx, [node]).get(node)
    if mode is None or mode.strategy != "mixed":
        return replicas
    try:
        listed = _devices(ctx, node, mode)
        if listed.total and listed.without:   # full GPUs left: GFD labels their sharing
            return replicas
    except Exception:  # noqa: BLE001 - no host access or no mig-parted config: assume the MIG manager's layout
        pass
    return 0


def workload_resource(ctx: RunContext, node: str) -> str | None:
    """The resource a workload pod asks for on a MIG node of strategy mixed (one of its nvidia.com/mig-<profile>
    with devices, the smallest first); None elsewhere (nvidia.com/gpu, or its renamed resource)."""
    mode = node_mode(ctx, node)
    if mode is None or mode.strategy != "mixed":
        return None
    alloc, _ = _node_obj(ctx, node)
    have = sorted((k for k, v in alloc.items() if k.startswith("nvidia.com/mig-") and int(v or 0) > 0),
                  key=lambda k: (int(k.removeprefix("nvidia.com/mig-").split("g", 1)[0] or 0)
                                 if k.removeprefix("nvidia.com/mig-")[:1].isdigit() else 99, k))
    return have[0] if have else None
