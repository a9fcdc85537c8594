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
    elif allocatable(twin, node.name) == 0:
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


def allocatable(twin: Twin, node: str) -> int:
    """GPUs the node advertises: nvidia.com/gpu plus the MIG resources of strategy mixed (the validator's
    plugin validation accepts either)."""
    obj = twin.informers["nodes"].get(f"/{node}") or {}
    alloc = (obj.get("status") or {}).get("allocatable") or {}
    return sum(int(v or 0) for k, v in alloc.items() if k == WORKLOAD_RESOURCE or k.startswith("nvidia.com/mig-"))
