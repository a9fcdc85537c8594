"""What each GPU node should look like: physical GPUs, product, replicas. Shared by convergers and checks."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from provision import labels as labels_mod
from provision.context import NoHostAccess, RunContext
from provision.hostfacts import SmiFacts, nvidia_smi_facts
from provision.hosts.results import HostUnreachable
from provision.observe import gfd
from provision.observe.nvidia_smi import compute_capability_below, lowest_compute_capability
from provision.observe.timeslicing import GPU_RESOURCE, TimeSlicingConfig, TimeSlicingError, parse_config


def smi(ctx: RunContext, node: str) -> SmiFacts:
    """The node's nvidia-smi query, run once per node per run (raises NoHostAccess / HostUnreachable)."""
    return ctx.host_fact(node, "nvidia-smi", lambda: nvidia_smi_facts(ctx.host(node)))


def unsupported_capability(ctx: RunContext, facts: SmiFacts) -> str | None:
    """The node's lowest compute capability when it is below min_compute_capability (the GPU Operator's floor:
    its operands are disabled there), else None."""
    if compute_capability_below(facts.gpus, ctx.settings.min_compute_capability):
        return lowest_compute_capability(facts.gpus)
    return None


def physical_gpus(ctx: RunContext, node: str) -> tuple[int | None, str]:
    """(count, where it came from): a setting/inventory value, else the node's nvidia-smi, else GFD's label."""
    if node in ctx.settings.expected_gpus:
        return ctx.settings.expected_gpus[node], "setting expected_gpus"
    try:
        facts = smi(ctx, node)
        if facts.usable:
            return len(facts.gpus), "nvidia-smi on the node"
    except (NoHostAccess, HostUnreachable):
        pass
    if ctx.kube is None:
        return None, "unknown (nvidia-smi did not answer, no setting, no cluster)"
    labels = (ctx.kube.snapshot().nodes.get(node, {}).get("metadata") or {}).get("labels") or {}
    parsed = gfd.parse_labels(labels)
    if parsed.count is not None:
        return parsed.count, "GFD label nvidia.com/gpu.count"
    return None, "unknown (no host access, no setting, no GFD label)"


def product(ctx: RunContext, node: str) -> str | None:
    try:
        facts = smi(ctx, node)
        if facts.usable and facts.gpus:
            return facts.gpus[0].name
    except (NoHostAccess, HostUnreachable):
        pass
    if ctx.kube is None:
        return None
    labels = (ctx.kube.snapshot().nodes.get(node, {}).get("metadata") or {}).get("labels") or {}
    p = labels.get(labels_mod.GPU_PRODUCT)
    # GFD: <model>[-MIG-<profile>][-SHARED] (sanitised: spaces as "-")
    return p.removesuffix("-SHARED").split("-MIG-")[0].replace("-", " ") if p else None


def profile_key(product_name: str) -> str:
    return gfd.sanitise(product_name).lower()


def replicas(ctx: RunContext, node: str) -> int:
    return ctx.settings.replicas_for(product(ctx, node))


# ----------------------------------------------------------------------------------- the node's sharing config
DEVICE_PLUGIN_CONFIG_LABEL = labels_mod.DEVICE_PLUGIN_CONFIG


@dataclass(frozen=True)
class NodeSharing:
    """How the device plugin on a node shares and names its GPUs, from the config that node really uses: the
    ConfigMap named by ClusterPolicy spec.devicePlugin.config, key from the node's nvidia.com/device-plugin.config
    label (else the ClusterPolicy default). ``config`` is None when there is none (or it does not parse);
    ``mig_strategy`` is the config's flags.migStrategy, else ClusterPolicy spec.mig.strategy, else GFD's
    nvidia.com/mig.strategy label, else "none"."""

    config: TimeSlicingConfig | None
    source: str
    mig_strategy: str

    def resource(self, name: str = GPU_RESOURCE) -> str:
        return self.config.advertised_name(name) if self.config else name

    def renamed(self, name: str = GPU_RESOURCE) -> bool:
        return self.resource(name) != name


def node_sharing(ctx: RunContext, node: str) -> NodeSharing:
    from provision.converge.cluster import TIME_SLICING_CM  # converge.cluster imports this module

    snap = ctx.kube.snapshot()
    labels = (snap.nodes.get(node, {}).get("metadata") or {}).get("labels") or {}
    return sharing_from(labels, snap.cluster_policy, snap.configmaps, TIME_SLICING_CM)


@functools.lru_cache(maxsize=64)
def _parsed_config(text: str, source: str) -> TimeSlicingConfig:
    """parse_config once per ConfigMap text: every GPU node of a fleet names the same config (a YAML parse per
    node and scenario was 2.5 % of an API-only audit's run loop at N = 100). An error is not cached (raised anew)."""
    return parse_config(text, source)


def sharing_from(labels: dict, cluster_policy: dict | None, configmaps: dict[str, dict],
                 default_cm: str) -> NodeSharing:
    """node_sharing over given objects (node labels, ClusterPolicy, ConfigMaps of the operator namespace). Pure."""
    spec = (cluster_policy or {}).get("spec") or {}
    cp_cfg = (spec.get("devicePlugin") or {}).get("config") or {}
    cm_name = cp_cfg.get("name") or default_cm
    data = ((configmaps.get(cm_name) or {}).get("data")) or {}
    key = labels.get(DEVICE_PLUGIN_CONFIG_LABEL) or cp_cfg.get("default") or (next(iter(data)) if len(data) == 1
                                                                                 else None)
    config, source = None, f"no device-plugin config (ConfigMap {cm_name})"
    if key and key in data:
        source = f"ConfigMap {cm_name} key {key}"
        try:
            config = _parsed_config(data[key], source)
        except TimeSlicingError as exc:
            source = f"{source} (unreadable: {exc})"
    strategy = ((config.mig_strategy if config else None) or (spec.get("mig") or {}).get("strategy")
                or labels.get("nvidia.com/mig.strategy") or "none")
    return NodeSharing(config, source, strategy)


def health(ctx: RunContext, node: str):
    """The node's health inputs (provision/health.py): one host read (hostfacts.health_read) and, with a cluster,
    one DCGM scrape, once per node per run (raises NoHostAccess / HostUnreachable like smi())."""
    from provision import health as h
    from provision.hostfacts import health_read

    def read():
        try:
            inputs = h.inputs_from(health_read(ctx.host(node), float(ctx.settings.health["xid_window_h"]) * 3600))
            return h.with_dcgm(inputs, *h.scrape_dcgm(ctx, node))
        except NoHostAccess as exc:
            # host checks off (an API-only audit): the Xid check still reads the DCGM exporter; the others skip
            return h.with_dcgm(h.HealthInputs(host_off=str(exc)), *h.scrape_dcgm(ctx, node))

    return ctx.host_fact(node, "health", read, remember=(HostUnreachable,))


# ----------------------------------------------------------------------------------- issue 16: sharing, runtime mode
def sharing_key(settings, product: str) -> str:
    """The ConfigMap key of a product's profile: its sharing profile's ``config`` (e.g. the playbooks' dgx-spark),
    else the product's name sanitised (profile_key)."""
    prof = settings.sharing_profiles.get(product) or {}
    return prof.get("config") or profile_key(product)


def desired_key_replicas(settings) -> dict[str, int]:
    """Replicas of every config key the desired state writes (provision/converge/cluster.desired_timeslicing)."""
    from provision.converge.cluster import SINGLE_KEY

    out = {SINGLE_KEY: settings.replicas}
    out.update({profile_key(p): r for p, r in settings.replica_profiles.items()})
    out.update({sharing_key(settings, p): int(prof["replicas"]) for p, prof in settings.sharing_profiles.items()})
    return out


def node_replicas(ctx: RunContext, node: str) -> int:
    """Replicas the node is judged by: in an audit, those of the desired-state key its nvidia.com/device-plugin.config
    label really names (a node on another product's profile key is judged by that key); a label naming a key the
    desired state does not write, or none, or a --provision (which relabels): the desired state for its product."""
    if ctx.kube is not None and not ctx.settings.provisioning:
        labels = (ctx.kube.snapshot().nodes.get(node, {}).get("metadata") or {}).get("labels") or {}
        key = labels.get(DEVICE_PLUGIN_CONFIG_LABEL)
        desired = desired_key_replicas(ctx.settings)
        if key in desired:
            return desired[key]
    return replicas(ctx, node)


def runtime_mode(ctx: RunContext, node: str | None = None) -> tuple[str, str]:
    """(mode, where it was read) the node is judged in: runtimeclass | cdi | nri (provision/observe/runtime_mode).
    The toolkit DaemonSet the operator rendered (its container's CDI_ENABLED / ENABLE_NRI_PLUGIN) is what the
    node's toolkit pod runs with; before it exists, the ClusterPolicy's cdi fields (CRD defaults when unset)."""
    from provision.observe import runtime_mode as rm

    if getattr(ctx, "kube", None) is None:   # host-only run: nothing says otherwise; only nri changes which checks apply
        return rm.RUNTIMECLASS, "no cluster (host-only run)"
    snap = ctx.kube.snapshot()
    return rm.mode_of((getattr(snap, "daemonsets", None) or {}).get(rm.TOOLKIT_DS),
                      getattr(snap, "cluster_policy", None))
