"""The MIG manager: applies the node's nvidia.com/mig.config when it differs from what the GPUs have (state
pending -> success / failed), then the GPU operands advertise and label again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab.spec import Fault, NodeSpec
from lab.twin import mig, plugin_config, podspec
from lab.twin.gpus import gpus_for
from lab.twin.operands import device_plugin, gfd, sent

if TYPE_CHECKING:
    from lab.twin.twin import Twin


def start(twin: Twin, pod: dict, node: NodeSpec) -> None:
    twin.set_running(pod, ready=True)
    twin.set_state(pod["metadata"]["uid"], "running")
    with twin.lock:
        twin.mig_pods[node.name] = pod
    twin.submit(lambda: manage(twin, node.name))


def manage(twin: Twin, node_name: str) -> None:
    """The MIG manager: apply the node's nvidia.com/mig.config when it differs from what the GPUs have."""
    node = twin.nodes[node_name]
    with twin.lock:
        pod = twin.mig_pods.get(node_name)
        if pod is None or node_name in twin.mig_busy:
            return
    if not twin.alive(pod):
        with twin.lock:
            twin.mig_pods.pop(node_name, None)
        return
    obj = twin.informers["nodes"].get(f"/{node_name}") or {"metadata": {}}
    labels = obj["metadata"].get("labels") or {}
    want = labels.get(mig.CONFIG_LABEL)
    root = twin.host_root(node_name)
    state = mig.read(root)
    if not want or (want == state.get("config") and labels.get(mig.STATE_LABEL) == state.get("state")):
        return
    with twin.lock:
        twin.mig_busy.add(node_name)
    sent(twin.core.patch_node(node_name, {"metadata": {"labels": {mig.STATE_LABEL: "pending"}}},
                              _preload_content=False))

    def apply() -> None:
        try:
            ctr = podspec.container(pod, "nvidia-mig-manager")
            cm_name = podspec.configmap_at(pod, ctr, mig.MIG_PARTED_MOUNT)
            cm = twin.informers["configmaps"].get(f"{pod['metadata']['namespace']}/{cm_name}") if cm_name else None
            text = ((cm or {}).get("data") or {}).get("config.yaml")
            try:
                if Fault.MIG_STATE_FAILED in node.faults:
                    raise mig.MigError("error applying MIG configuration: the GPUs are in use (fault "
                                       "mig-state-failed)")
                if not (node.mig or {}).get("capable", True):
                    raise mig.MigError(f"error applying MIG configuration: {node.product} does not support MIG")
                if text is None:
                    raise mig.MigError(f"error reading mig-parted config: ConfigMap {cm_name} has no config.yaml")
                per_gpu = mig.layout(text, want, node)
            except mig.MigError as exc:
                mig.write(root, {**state, "config": want, "state": "failed", "error": str(exc)})
                twin.write_logs(pod, f"{exc}\nChanging the 'nvidia.com/mig.config.state' label to 'failed'\n")
                sent(twin.core.patch_node(node_name, {"metadata": {"labels": {mig.STATE_LABEL: "failed"}}},
                                          _preload_content=False))
                return
            mig.write(root, mig.partition(node, [g.uuid for g in gpus_for(node)], per_gpu, want))
            operands_again(twin, node)
            twin.write_logs(pod, f"Applying the selected MIG config {want}\n"
                                 "Changing the 'nvidia.com/mig.config.state' label to 'success'\n")
            sent(twin.core.patch_node(node_name, {"metadata": {"labels": {mig.STATE_LABEL: "success"}}},
                                      _preload_content=False))
            twin.record("mig-applied", node=node_name, config=want)
        finally:
            with twin.lock:
                twin.mig_busy.discard(node_name)
            twin.timers.after(0.2, lambda: twin.submit(lambda: manage(twin, node_name)))
    twin.timers.after(twin.timing.mig_apply_s, lambda: twin.submit(apply))


def operands_again(twin: Twin, node: NodeSpec) -> None:
    """After a MIG change the MIG manager restarts the GPU operands: the device plugin advertises the new
    devices and GFD relabels (the DCGM exporter reads the partitions on each scrape)."""
    with twin.lock:
        pod = twin.plugin_pods.get(node.name)
    if pod is not None and twin.alive(pod):
        sharing = twin.plugin_sharing.get(node.name, plugin_config.Sharing())
        env = podspec.env(pod, podspec.container(pod, "nvidia-device-plugin"))
        gpus = 0 if Fault.GPU_MISSING in node.faults else node.gpus
        device_plugin.advertise_mig(twin, node, gpus, env.get("MIG_STRATEGY") or sharing.mig_strategy or "none", sharing)
    gfd.label(twin, node)
