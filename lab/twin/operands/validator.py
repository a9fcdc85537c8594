"""The operator validator: its init containers in order driver -> toolkit -> cuda -> plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab.spec import Fault, NodeSpec
from lab.twin.operands import WORKLOAD_RESOURCE, toolkit

if TYPE_CHECKING:
    from lab.twin.twin import Twin


def start(twin: Twin, pod: dict, node: NodeSpec) -> None:
    validate(twin, pod, node)


def validate(twin: Twin, pod: dict, node: NodeSpec) -> None:
    """The validator's init containers in order driver -> toolkit -> cuda -> plugin. With a pre-installed
    driver, driver validation is `chroot /host nvidia-smi` (validateHostDriver in the v26.x validator):
    it passes when the host's nvidia-smi works."""
    uid = pod["metadata"]["uid"]
    with twin.lock:
        if twin.pod_state.get(uid) == "deleting":
            return
    root = twin.host_root(node.name)
    waiting = None
    if Fault.DRIVER_BROKEN in node.faults or Fault.GPU_MISSING in node.faults:
        waiting = "driver-validation"
    elif not twin.has_runtime(node.name, "nvidia") and not toolkit.nri_ready(twin, node.name):
        waiting = "toolkit-validation"
    elif Fault.VECTORADD_FAILS in node.faults:
        waiting = "cuda-validation"
    elif not gpu_resource_discovered(twin, node.name):
        waiting = "plugin-validation"
    if waiting:
        twin.set_running(pod, ready=False, init_waiting=waiting)
        twin.set_state(uid, "validating")
        twin.timers.after(0.5, lambda: validate(twin, pod, node))
        return
    vdir = root / "run/nvidia/validations"
    vdir.mkdir(parents=True, exist_ok=True)
    for step in ("driver-ready", "toolkit-ready", "cuda-ready", "plugin-ready"):
        (vdir / step).touch()
    twin.set_running(pod, ready=True)
    twin.set_state(uid, "running")


def gpu_resource_discovered(twin: Twin, node: str) -> bool:
    """The validator's plugin validation (validateGPUResource, v26.3.0 cmd/nvidia-validator/main.go): the node's
    *capacity* has a resource whose name starts with `nvidia.com/mig-` or `nvidia.com/gpu` (so a renamed
    `nvidia.com/gpu.shared` passes) with a quantity of at least 1. (The real validator then runs a workload pod on
    that resource, WITH_WORKLOAD; the twin does not play that pod.)"""
    obj = twin.informers["nodes"].get(f"/{node}") or {}
    capacity = (obj.get("status") or {}).get("capacity") or {}
    return any(int(v or 0) >= 1 for k, v in capacity.items()
               if k.startswith(WORKLOAD_RESOURCE) or k.startswith("nvidia.com/mig-"))
