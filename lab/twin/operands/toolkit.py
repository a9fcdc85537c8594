"""The container toolkit container: the real installer's containerd setup of the image's toolkit version
(lab/twin/toolkit.py) with the pod's env and mounts, its cleanup when the pod goes; with the NRI plugin, no
containerd config at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab.spec import NodeSpec
from lab.twin import podspec
from lab.twin import toolkit as installer
from lab.twin.operands import BY_COMPONENT

if TYPE_CHECKING:
    from lab.twin.twin import Twin


def start(twin: Twin, pod: dict, node: NodeSpec) -> None:
    uid = pod["metadata"]["uid"]
    twin.set_running(pod, ready=False)

    def install() -> None:
        if not twin.alive(pod):  # deleted while it started: a container that is gone writes nothing
            return
        ctr = podspec.container(pod, BY_COMPONENT["toolkit"].container)
        env = podspec.env(pod, ctr)
        if env.get("ENABLE_NRI_PLUGIN", "").lower() == "true":
            # the real installer: runtime.NewConfigurer(..., nriEnabled=true) is the no-op configurer (no
            # containerd config, no drop-in); it serves its NRI plugin on the NRI socket instead
            twin.write_logs(pod, "Starting NRI plugin server\n")
            twin.set_running(pod, ready=True)
            twin.set_state(uid, "running")
            twin.record("toolkit-ready", node=node.name, nri=True)
            return
        try:
            written = installer.toolkit_install(twin.host_root(node.name), env,
                                                env.get("CDI_ENABLED", "").lower() == "true", node.faults,
                                                mounts=podspec.host_mounts(pod, ctr), image=ctr.get("image"))
        except installer.ToolkitError as exc:
            twin.crashloop(pod, f"level=error msg=\"{exc}\"")
            return
        twin.write_logs(pod, "".join(f"Wrote {p}\n" for p in written))
        twin.set_running(pod, ready=True)
        twin.set_state(uid, "running")
        twin.record("toolkit-ready", node=node.name)
    twin.timers.after(twin.timing.toolkit_ready_s, install)


def stop(twin: Twin, pod: dict) -> None:
    """The real toolkit removes its drop-in when its container stops (the import line stays)."""
    node = (pod.get("spec") or {}).get("nodeName")
    if node in twin.nodes:
        twin.submit(lambda: installer.toolkit_uninstall(twin.host_root(node)))


def nri_ready(twin: Twin, node: str) -> bool:
    """With the NRI plugin the toolkit's validation needs no nvidia runtime: a ready toolkit pod on the node
    whose env has ENABLE_NRI_PLUGIN=true (management containers get their devices through NRI)."""
    for p in twin.informers["pods"].items():
        if p["spec"].get("nodeName") != node or (p["metadata"].get("labels") or {}).get("app") != \
                "nvidia-container-toolkit-daemonset":
            continue
        env = podspec.env(p, podspec.container(p, "nvidia-container-toolkit-ctr"))
        conds = {c.get("type"): c.get("status") for c in (p.get("status") or {}).get("conditions") or []}
        if env.get("ENABLE_NRI_PLUGIN", "").lower() == "true" and conds.get("Ready") == "True":
            return True
    return False
