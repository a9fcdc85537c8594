"""The DRA stack's operands (GPUCluster, docs/dra.md): the DRA driver's kubelet plugin publishes the node's
ResourceSlice (lab/twin/dra_plugin.py), the DRA validator validates the driver, the others just run.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from kubernetes import client
from kubernetes.client.rest import ApiException

from lab.spec import Fault, NodeSpec
from lab.twin import dcgm_server, dra_plugin, podspec
from lab.twin.gpus import gpus_for

if TYPE_CHECKING:
    from lab.twin.twin import Twin


def stop_plugin(twin: Twin, pod: dict) -> None:
    """The kubeletplugin helper removes the node's slices when the plugin stops."""
    node = (pod.get("spec") or {}).get("nodeName")
    if node in twin.nodes:
        twin.submit(lambda: unpublish_slices(twin, node))


def start_validator(twin: Twin, pod: dict, node: NodeSpec) -> None:
    """The GPUCluster's DRA validator: it carries the ClusterPolicy validator's app label (the upgrade controller
    selects on it) but validates the driver and its GPU claim, not toolkit and device plugin."""
    uid = pod["metadata"]["uid"]
    if Fault.DRIVER_BROKEN in node.faults or Fault.GPU_MISSING in node.faults:
        twin.set_running(pod, ready=False, init_waiting="driver-validation")
        twin.set_state(uid, "validating")
    else:
        twin.set_running(pod, ready=True)
        twin.set_state(uid, "running")


def start_operand(twin: Twin, pod: dict, node: NodeSpec) -> None:
    """The DRA driver's controller and the DRA DCGM exporter: running and ready; the exporter serves the node's GPUs
    (lab/twin/dcgm_server.py) unless its node's DCGM is down."""
    uid = pod["metadata"]["uid"]
    twin.set_running(pod, ready=True)
    twin.set_state(uid, "running")
    if (pod["metadata"].get("labels") or {}).get("app") == dcgm_server.DRA_APP and not dcgm_server.down(node):
        twin.dcgm.start(uid, twin.pod_ip(pod), node, gpus_for(node))


def stop_operand(twin: Twin, pod: dict) -> None:
    if (pod["metadata"].get("labels") or {}).get("app") == dcgm_server.DRA_APP:
        twin.dcgm.stop(pod["metadata"]["uid"])


def start_plugin(twin: Twin, pod: dict, node: NodeSpec) -> None:
    """The DRA driver's kubelet plugin: publishes the node's ResourceSlice (lab/twin/dra_plugin.py), then is
    ready. With dra-claim-left-allocated it also leaves a claim of a gone pod allocated on the node."""
    uid = pod["metadata"]["uid"]
    twin.set_running(pod, ready=False)

    def publish() -> None:
        if not twin.alive(pod):
            return
        if Fault.DRA_PLUGIN_NEVER_PUBLISHES not in node.faults and node.gpus and Fault.GPU_MISSING not in node.faults:
            writer = dra_plugin.as_plugin(twin.custom.api_client, twin.core, pod)   # its ServiceAccount
            try:
                unpublish_slices(twin, node.name, writer)
                node_obj = twin.informers["nodes"].get(f"/{node.name}") or {"metadata": {}}
                writer.create_cluster_custom_object("resource.k8s.io", "v1", "resourceslices", dra_plugin.node_slice(
                    node, node_obj["metadata"].get("uid", ""), twin.host_root(node.name)))
            finally:
                writer.api_client.close()
            twin.record("slices-published", node=node.name)
        if Fault.DRA_CLAIM_LEFT_ALLOCATED in node.faults:
            leave_claim(twin, node)
        twin.write_logs(pod, f"Published ResourceSlice for pool {node.name}\n")
        twin.set_running(pod, ready=True)
        twin.set_state(uid, "running")
    twin.timers.after(twin.timing.plugin_ready_s, lambda: twin.submit(publish))


def prepare_error(twin: Twin, pod: dict, node: NodeSpec) -> str | None:
    """What the DRA kubelet plugin's prepare says about the pod's claims: a GpuConfig sharing strategy whose
    feature gate the node's plugin does not have (its FEATURE_GATES env, rendered from draDriver.featureGates)."""
    ns = pod["metadata"]["namespace"]
    names = [c.get("resourceClaimName") for c in pod["spec"].get("resourceClaims") or []]
    names += [c.get("resourceClaimName") for c in (pod.get("status") or {}).get("resourceClaimStatuses") or []]
    plugin = next((p for p in twin.informers["pods"].items() if p["spec"].get("nodeName") == node.name
                   and not p["metadata"].get("deletionTimestamp")
                   and (p["metadata"].get("labels") or {}).get("app") == dra_plugin.PLUGIN_APP), None)
    gates = dra_plugin.feature_gates(podspec.env(plugin, podspec.container(plugin, "gpus")) if plugin else {})
    for name in {n for n in names if n}:
        try:
            claim = twin.custom.get_namespaced_custom_object("resource.k8s.io", "v1", ns, "resourceclaims", name)
        except ApiException:
            continue
        error = dra_plugin.sharing_error(claim, gates)
        if error:
            return error
    return None


def unpublish_slices(twin: Twin, node: str, api: client.CustomObjectsApi | None = None) -> None:
    api = api or twin.custom   # the plugin's own identity, or (the plugin gone) kubelet's clean-up
    slices = api.list_cluster_custom_object("resource.k8s.io", "v1", "resourceslices",
                                            field_selector=f"spec.nodeName={node}")["items"]
    for sl in slices:
        if sl["spec"].get("driver") == dra_plugin.DRIVER:
            with contextlib.suppress(ApiException):
                api.delete_cluster_custom_object("resource.k8s.io", "v1", "resourceslices", sl["metadata"]["name"])


def leave_claim(twin: Twin, node: NodeSpec) -> None:
    body = dra_plugin.left_claim(node)
    ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
    try:
        twin.custom.create_namespaced_custom_object("resource.k8s.io", "v1", ns, "resourceclaims", body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        return
    twin.custom.patch_namespaced_custom_object_status("resource.k8s.io", "v1", ns, "resourceclaims", name,
                                                      {"status": dra_plugin.left_claim_status(node)})
