"""DRA mode's workload check: a CUDA vectoradd pod whose GPU comes from a ResourceClaim (made from a
ResourceClaimTemplate asking for one device of class gpu.nvidia.com), pinned to the node by a node selector so that
the scheduler allocates the claim; it must print "Test PASSED", and the claim must be gone once the pod is.

The audit's only writes here: the template, the pod (and the claim the resource claim controller makes from the
template), all in the suite's namespace, all deleted afterwards; --no-workload refuses them (Kube.workload_write).
"""

from __future__ import annotations

import contextlib
import time
import uuid

from kubernetes.client.rest import ApiException

from provision.checks import Finding
from provision.labels import MANAGED_BY, SUITE
from provision.observe.dra import GPU_CLASS

GROUP, VERSION = "resource.k8s.io", "v1"


def template_body(name: str, sharing: dict | None = None) -> dict:
    """One gpu.nvidia.com device; `sharing` (the DRA driver's GpuConfig sharing, e.g. {"strategy": "TimeSlicing"})
    goes into the claim's opaque config when the desired state asks for sharing."""
    spec: dict = {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": GPU_CLASS}}]}}
    if sharing:
        spec["devices"]["config"] = [{"requests": ["gpu"], "opaque": {"driver": GPU_CLASS, "parameters": {
            "apiVersion": "resource.nvidia.com/v1beta1", "kind": "GpuConfig", "sharing": sharing}}}]
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ResourceClaimTemplate",
            "metadata": {"name": name, "labels": {MANAGED_BY: SUITE}}, "spec": {"spec": spec}}


def pod_body(name: str, node: str, template: str, image: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {MANAGED_BY: SUITE, "app": "gpu-conformance-dra-vectoradd"}},
            "spec": {"restartPolicy": "Never",
                     "nodeSelector": {"kubernetes.io/hostname": node},
                     "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                     "resourceClaims": [{"name": "gpu", "resourceClaimTemplateName": template}],
                     "containers": [{"name": "vectoradd", "image": image, "resources": {"claims": [{"name": "gpu"}]}}]}}


def claim_vectoradd(kube, settings, node: str, sharing: dict | None = None) -> Finding:
    ns = settings.suite_namespace
    short = f"{node[:36]}-{uuid.uuid4().hex[:6]}".replace(".", "-")
    tname, pname = f"dra-gpu-{short}", f"dra-vectoradd-{short}"
    custom = kube.custom
    try:
        kube.workload_write(f"create ResourceClaimTemplate {ns}/{tname}", custom.create_namespaced_custom_object,
                            GROUP, VERSION, ns, "resourceclaimtemplates", template_body(tname, sharing))
        kube.workload_write(f"create Pod {ns}/{pname}", kube.core.create_namespaced_pod, ns,
                            pod_body(pname, node, tname, settings.workload_image))
    except ApiException as exc:
        _cleanup(kube, ns, tname, pname)
        return Finding(False, f"could not create the DRA test pod in {ns}: {exc.status} {exc.reason}")
    claim_name = None
    try:
        deadline = time.monotonic() + settings.timeout("workload")
        pod: dict = {}
        while time.monotonic() < deadline:
            pod = kube.core.api_client.sanitize_for_serialization(
                kube.core.read_namespaced_pod(pname, ns, _request_timeout=kube.timeout))
            st = pod.get("status") or {}
            claim_name = next((c.get("resourceClaimName") for c in st.get("resourceClaimStatuses") or []), claim_name)
            if st.get("phase") in ("Succeeded", "Failed"):
                break
            time.sleep(0.5)
        st = pod.get("status") or {}
        if st.get("phase") not in ("Succeeded", "Failed"):
            why = [c.get("message") for c in st.get("conditions") or [] if c.get("type") == "PodScheduled"
                   and c.get("status") == "False"]
            return Finding(False, f"expected: the DRA test pod on {node} runs to completion. Found: phase "
                                  f"{st.get('phase')}{'; ' + why[0] if why and why[0] else ''}. Fix: the scheduler "
                                  f"allocates a gpu.nvidia.com device only from {node}'s ResourceSlices: check them "
                                  "and the kubelet plugin on the node")
        if pod["spec"].get("nodeName") != node:
            return Finding(False, f"the DRA test pod ran on {pod['spec'].get('nodeName')}, not {node}")
        log = kube.pod_log(pname, ns)
        if st.get("phase") != "Succeeded" or "Test PASSED" not in log:
            return Finding(False, f"expected: phase Succeeded and 'Test PASSED'. Found: phase {st.get('phase')}, "
                                  f"log {log.strip()[-300:]!r}. Fix: check nvidia-smi and dmesg on the host")
    finally:
        _cleanup(kube, ns, tname, pname)
    if claim_name and not _claim_gone(kube, ns, claim_name, settings.timeout("workload")):
        return Finding(False, f"the DRA test pod passed on {node} but its ResourceClaim {ns}/{claim_name} was not "
                              "released after the pod was deleted. Fix: check kube-controller-manager's "
                              "resource claim controller")
    return Finding(True, f"a pod with a gpu.nvidia.com claim ran on {node}: Test PASSED; claim {claim_name} released")


def _claim_gone(kube, ns: str, name: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kube.custom.get_namespaced_custom_object(GROUP, VERSION, ns, "resourceclaims", name,
                                                     _request_timeout=kube.timeout)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        time.sleep(0.5)
    return False


def _cleanup(kube, ns: str, template: str, pod: str) -> None:
    with contextlib.suppress(ApiException):
        kube.workload_write(f"delete Pod {ns}/{pod}", kube.core.delete_namespaced_pod, pod, ns, grace_period_seconds=0)
    with contextlib.suppress(ApiException):
        kube.workload_write(f"delete ResourceClaimTemplate {ns}/{template}", kube.custom.delete_namespaced_custom_object,
                            GROUP, VERSION, ns, "resourceclaimtemplates", template)
