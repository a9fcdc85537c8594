"""GPU feature discovery: its labels on the node, from the config the node's device plugin loaded and GFD's
own env (MIG_STRATEGY).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab.spec import Fault, NodeSpec
from lab.twin import mig, plugin_config, podspec
from lab.twin.gpus import gpus_for
from lab.twin.operands import sent

if TYPE_CHECKING:
    from lab.twin.twin import Twin


def start(twin: Twin, pod: dict, node: NodeSpec) -> None:
    twin.set_running(pod, ready=True)
    twin.set_state(pod["metadata"]["uid"], "running")
    twin.submit(lambda: label(twin, node, pod))


def gfd_pod(twin: Twin, node: str) -> dict | None:
    return next((p for p in twin.informers["pods"].items()
                 if p["spec"].get("nodeName") == node and (p["metadata"].get("labels") or {}).get("app")
                 == "gpu-feature-discovery" and (p.get("status") or {}).get("phase") == "Running"), None)


def arch_family(compute_cap: str) -> str:
    """GFD's `nvidia.com/gpu.family` from the compute capability (k8s-device-plugin internal/lm/resource.go
    getArchFamily: 7.0-7.4 volta, 7.5+ turing, 8.0-8.8 ampere, 8.9 ada-lovelace, 9 hopper, 10 and 12 blackwell)."""
    major_text, _, minor_text = compute_cap.partition(".")
    major, minor = int(major_text), int(minor_text or 0)
    by_major = {1: "tesla", 2: "fermi", 3: "kepler", 5: "maxwell", 6: "pascal", 9: "hopper", 10: "blackwell",
                12: "blackwell"}
    if major == 7:
        return "volta" if minor < 5 else "turing"
    if major == 8:
        return "ampere" if minor < 9 else "ada-lovelace"
    return by_major.get(major, "undefined")


def label(twin: Twin, node: NodeSpec, gfd: dict | None = None) -> None:
    """GPU feature discovery's labels, from the config the node's device plugin loaded and GFD's own env.
    Called by GFD's own start (its pod given: the informer may not show it Running yet) and whenever the
    device plugin (re)loads its config (then only if a GFD pod runs on the node)."""
    node_obj = twin.informers["nodes"].get(f"/{node.name}") or {"metadata": {}}
    labels = node_obj["metadata"].get("labels") or {}
    gfd = gfd if gfd is not None and twin.alive(gfd) else gfd_pod(twin, node.name)
    if gfd is None or Fault.DRIVER_BROKEN in node.faults:
        return
    gfd_env = podspec.env(gfd, podspec.container(gfd, "gpu-feature-discovery"))
    sharing = twin.plugin_sharing.get(node.name, plugin_config.Sharing())
    gpus = 0 if Fault.GPU_MISSING in node.faults else node.gpus
    records = gpus_for(node)
    want = {
        "nvidia.com/gpu.count": str(gpus),
        "nvidia.com/gpu.product": plugin_config.product_label(node.product, sharing),
        "nvidia.com/gpu.replicas": str(sharing.replicas),
        "nvidia.com/gpu.sharing-strategy": sharing.strategy,
        "nvidia.com/gpu.family": arch_family(node.compute_cap),
        "nvidia.com/cuda.driver-version.full": node.driver,
        "nvidia.com/cuda.driver-version.major": node.driver.split(".")[0],
        "nvidia.com/gpu.compute.major": node.compute_cap.split(".")[0],
        "nvidia.com/gpu.compute.minor": node.compute_cap.split(".")[1] if "." in node.compute_cap else "0",
        "nvidia.com/mig.strategy": gfd_env.get("MIG_STRATEGY") or "none",
    }
    if records and records[0].memory_total_mib is not None:
        want["nvidia.com/gpu.memory"] = str(records[0].memory_total_mib)
    if node.mig is not None:   # GFD's MIG labels (lab/twin/mig.py gfd_labels); the config's flag under no env
        strategy = gfd_env.get("MIG_STRATEGY") or sharing.mig_strategy or "none"
        want = mig.gfd_labels(node, mig.read(twin.host_root(node.name)), strategy, sharing.replicas_of(),
                              {**want, "nvidia.com/mig.strategy": strategy}, labels)
    patch = {k: v for k, v in want.items() if labels.get(k) != v}
    if patch:
        sent(twin.core.patch_node(node.name, {"metadata": {"labels": patch}}, _preload_content=False))
