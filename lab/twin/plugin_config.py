"""How the real NVIDIA device plugin picks and reads its sharing config (the twin's own reading).

Choice: node label nvidia.com/device-plugin.config, else ClusterPolicy spec.devicePlugin.config.default,
else no config (no sharing). The ConfigMap must be in the operator namespace. replicas < 2 is an error
the plugin logs, and then it shares nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml


@dataclass(frozen=True)
class Sharing:
    replicas: int = 1               # per physical GPU; 1 = no sharing
    rename_by_default: bool = False
    error: str | None = None        # what the plugin logs when the config is unusable
    config_key: str | None = None
    mig_strategy: str | None = None   # the config's flags.migStrategy (MIG_STRATEGY in the env overrides it)
    resources: tuple[tuple[str, int], ...] = ()   # time-sliced resource -> replicas (nvidia.com/mig-* too)

    def replicas_of(self) -> dict[str, int]:
        return {"nvidia.com/gpu": self.replicas, **dict(self.resources)}
    mps: bool = False               # sharing.mps (the MPS control daemon) instead of sharing.timeSlicing

    @property
    def strategy(self) -> str:
        """GFD's nvidia.com/gpu.sharing-strategy."""
        return ("mps" if self.mps else "time-slicing") if self.shared else "none"

    @property
    def resource(self) -> str:
        """The resource the plugin advertises: nvidia.com/gpu.shared with renameByDefault."""
        return "nvidia.com/gpu.shared" if self.shared and self.rename_by_default else "nvidia.com/gpu"

    @property
    def shared(self) -> bool:
        return self.replicas > 1


def choose(node_labels: dict[str, str], cm_name: str, default_key: str, configmap: dict | None) -> Sharing:
    key = node_labels.get("nvidia.com/device-plugin.config") or default_key
    if not cm_name or not key:
        return Sharing()
    if configmap is None:
        return Sharing(error=f'unable to load config: ConfigMap "{cm_name}" not found in the operator namespace',
                       config_key=key)
    data = configmap.get("data") or {}
    if key not in data:
        return Sharing(error=f'unable to load config: no config named "{key}" in ConfigMap "{cm_name}"',
                       config_key=key)
    try:
        doc = yaml.safe_load(data[key]) or {}
    except yaml.YAMLError as exc:
        return Sharing(error=f"unable to parse config file: {exc}", config_key=key)
    if not isinstance(doc, dict) or doc.get("version") != "v1":
        return Sharing(error="unable to parse config file: unknown version (want v1)", config_key=key)
    sharing = doc.get("sharing") or {}
    mps = bool(sharing.get("mps")) and not sharing.get("timeSlicing")
    ts = (sharing.get("mps") if mps else sharing.get("timeSlicing")) or {}
    flags = doc.get("flags") if isinstance(doc.get("flags"), dict) else {}
    mig = {"mig_strategy": flags.get("migStrategy"), "resources": tuple(
        (r["name"], r["replicas"]) for r in ts.get("resources") or []
        if isinstance(r, dict) and str(r.get("name", "")).startswith("nvidia.com/mig-")
        and isinstance(r.get("replicas"), int) and r["replicas"] >= 2)}
    for res in ts.get("resources") or []:
        if res.get("name") == "nvidia.com/gpu":
            replicas = res.get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 2:
                return Sharing(error=f"invalid time-slicing config: number of replicas must be >= 2, got {replicas!r}",
                               config_key=key)
            return Sharing(replicas=replicas, rename_by_default=bool(ts.get("renameByDefault", False)),
                           config_key=key, mps=mps, **mig)
    return Sharing(config_key=key, **mig)


def product_label(product: str, sharing: Sharing) -> str:
    label = product.replace(" ", "-")
    if sharing.shared and not sharing.rename_by_default:
        label += "-SHARED"
    return label
