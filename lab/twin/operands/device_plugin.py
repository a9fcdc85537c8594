"""The NVIDIA device plugin: physical GPUs x replicas from the ConfigMap mounted at /available-configs and the
config manager's DEFAULT_CONFIG (read when the plugin pod starts), MIG resources, the per-GPU CDI spec.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from lab.spec import Fault, NodeSpec
from lab.twin import mig, outputs, plugin_config, podspec
from lab.twin.gpus import gpus_for
from lab.twin.operands import WORKLOAD_RESOURCE, gfd, sent

if TYPE_CHECKING:
    from lab.twin.twin import Twin


CDI_SPEC_NAME = "k8s.device-plugin.nvidia.com-gpu.json"  # the device plugin's CDI spec in /var/run/cdi (cdi-cri)


def start(twin: Twin, pod: dict, node: NodeSpec) -> None:
    start_plugin(twin, pod, node, pod["metadata"]["namespace"])


def stop(twin: Twin, pod: dict) -> None:
    """kubelet drops a device plugin's resources when the plugin goes away."""
    node, uid = (pod.get("spec") or {}).get("nodeName"), pod["metadata"]["uid"]
    if node in twin.nodes:
        twin.submit(lambda: advertise(twin, node, 0))
        twin.submit(lambda: remove_cdi_spec(twin, node, uid))


def start_plugin(twin: Twin, pod: dict, node: NodeSpec, ns: str) -> None:
    uid = pod["metadata"]["uid"]
    if Fault.DEVICE_PLUGIN_CRASH in node.faults or Fault.DRIVER_BROKEN in node.faults:
        twin.crashloop(pod, "failed to initialize NVML: ERROR_LIBRARY_NOT_FOUND"
                       if Fault.DRIVER_BROKEN in node.faults else "panic: runtime error: invalid memory address")
        return
    twin.set_running(pod, ready=False)
    cm_name, default_key = plugin_config_source(pod)
    node_obj = twin.informers["nodes"].get(f"/{node.name}") or {"metadata": {}}
    labels = node_obj["metadata"].get("labels") or {}
    cm = twin.informers["configmaps"].get(f"{ns}/{cm_name}") if cm_name else None
    sharing = plugin_config.choose(labels, cm_name, default_key, cm)
    twin.plugin_sharing[node.name] = sharing
    gpus = 0 if Fault.GPU_MISSING in node.faults else node.gpus
    plugin_env = podspec.env(pod, podspec.container(pod, "nvidia-device-plugin"))
    strategy = plugin_env.get("MIG_STRATEGY") or sharing.mig_strategy or "none"  # env over the config file
    log_text = outputs.DEVICE_PLUGIN_START + (f"E {sharing.error}\n" if sharing.error else "") + (
        f"Running with time-slicing: {sharing.replicas} replicas per GPU\n" if sharing.shared else
        "No sharing configured\n") + ("No devices found. Waiting indefinitely.\n" if not gpus else "")
    delay = twin.timing.plugin_ready_s + (twin.timing.slow_advertise_s if Fault.SLOW_ADVERTISE in node.faults else 0)

    def ready() -> None:
        if not twin.alive(pod):  # deleted (restarted) while it started: a plugin that is gone advertises nothing
            return
        twin.write_logs(pod, log_text)
        write_cdi_spec(twin, pod, node)   # before it registers: a pod it serves finds its devices
        gfd.label(twin, node)
        if node.mig is not None:
            with twin.lock:
                twin.plugin_pods[node.name] = pod
            counts = advertise_mig(twin, node, gpus, strategy, sharing)
        else:
            count = gpus * sharing.replicas
            if Fault.RENAMED_COUNT_WRONG in node.faults and sharing.resource != WORKLOAD_RESOURCE and count:
                count -= 1     # the fault: the renamed resource is advertised one short
            counts = {WORKLOAD_RESOURCE: count}
            advertise(twin, node.name, count, sharing.resource)
        twin.set_running(pod, ready=True)
        twin.set_state(uid, "running")
        twin.record("gpus-advertised", node=node.name, count=counts[WORKLOAD_RESOURCE])
    twin.timers.after(delay, ready)


def advertise(twin: Twin, node: str, count: int, resource: str = WORKLOAD_RESOURCE) -> None:
    """The plugin advertises ``count`` under ``resource``; with a rename (nvidia.com/gpu.shared) nvidia.com/gpu
    drops to 0, as the kubelet shows a resource whose plugin no longer lists devices."""
    values = {resource: str(count)}
    if resource != WORKLOAD_RESOURCE:
        values[WORKLOAD_RESOURCE] = "0"
    else:
        obj = twin.informers["nodes"].get(f"/{node}") or {}
        if "nvidia.com/gpu.shared" in ((obj.get("status") or {}).get("allocatable") or {}):
            values["nvidia.com/gpu.shared"] = "0"
    sent(twin.core.patch_node_status(node, {"status": {"capacity": dict(values), "allocatable": values}},
                                     _preload_content=False))


def advertise_mig(twin: Twin, node: NodeSpec, gpus: int, strategy: str, sharing: plugin_config.Sharing
                   ) -> dict[str, int]:
    """A MIG node's resources (lab/twin/mig.py advertised); MIG resources it no longer has go to 0, as kubelet
    keeps a resource name a device plugin stopped advertising."""
    counts = mig.advertised(gpus, mig.read(twin.host_root(node.name)), strategy, sharing.replicas_of())
    obj = twin.informers["nodes"].get(f"/{node.name}") or {}
    have = (obj.get("status") or {}).get("capacity") or {}
    res = {k: "0" for k in have if k.startswith("nvidia.com/mig-")} | {k: str(v) for k, v in counts.items()}
    sent(twin.core.patch_node_status(node.name, {"status": {"capacity": res, "allocatable": res}},
                                     _preload_content=False))
    return counts


def remove_cdi_spec(twin: Twin, node: str, gone_uid: str) -> None:
    """The plugin's CDI spec goes with the plugin (played: the lab keeps a host as it was once the operator is
    gone; /var/run is a tmpfs on a real host) - unless another plugin pod already runs on the node."""
    if any(p["spec"].get("nodeName") == node and p["metadata"]["uid"] != gone_uid
           and not p["metadata"].get("deletionTimestamp")
           and (p["metadata"].get("labels") or {}).get("app") == "nvidia-device-plugin-daemonset"
           for p in twin.informers["pods"].items()):
        return
    (twin.host_root(node) / "var/run/cdi" / CDI_SPEC_NAME).unlink(missing_ok=True)


def write_cdi_spec(twin: Twin, pod: dict, node: NodeSpec) -> None:
    """In CDI mode (the operator gives the plugin CDI_ENABLED=true and DEVICE_LIST_STRATEGY with cdi-cri) the
    real device plugin writes /var/run/cdi/k8s.device-plugin.nvidia.com-gpu.json, one device per GPU UUID
    (device-id-strategy uuid). Fault cdi-spec-missing-gpu: the last GPU is left out."""
    env = podspec.env(pod, podspec.container(pod, "nvidia-device-plugin"))
    path = twin.host_root(node.name) / "var/run/cdi" / CDI_SPEC_NAME
    if env.get("CDI_ENABLED", "").lower() != "true" or "cdi-cri" not in env.get("DEVICE_LIST_STRATEGY", ""):
        path.unlink(missing_ok=True)
        return
    uuids = [g.uuid for g in gpus_for(node)] if Fault.GPU_MISSING not in node.faults else []
    if Fault.CDI_SPEC_MISSING_GPU in node.faults:
        uuids = uuids[:-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cdiVersion": "0.5.0", "kind": "k8s.device-plugin.nvidia.com/gpu",
                                "devices": [{"name": u, "containerEdits": {"deviceNodes": [
                                    {"path": f"/dev/nvidia{i}"}]}} for i, u in enumerate(uuids)],
                                "containerEdits": {"deviceNodes": [{"path": "/dev/nvidiactl"}]}}))


def plugin_config_source(pod: dict) -> tuple[str, str]:
    """(ConfigMap name, default key) of the device plugin's sharing config, as its config-manager sees them:
    the ConfigMap mounted at /available-configs and DEFAULT_CONFIG; ("", "") without a config manager."""
    for init in (True, False):
        for name in ("config-manager-init", "config-manager"):
            ctr = podspec.container(pod, name, init=init)
            if ctr:
                env = podspec.env(pod, ctr)
                cm = podspec.configmap_at(pod, ctr, env.get("CONFIG_FILE_SRCDIR") or "/available-configs")
                return cm or "", env.get("DEFAULT_CONFIG", "")
    return "", ""
