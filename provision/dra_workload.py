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
from provision.observe.dra import GPU_CLASS, SHARING_GATES

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


def claim_body(name: str, sharing: dict) -> dict:
    """One ResourceClaim (not a template): pods that name it share its device, with the GpuConfig sharing."""
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ResourceClaim",
            "metadata": {"name": name, "labels": {MANAGED_BY: SUITE}},
            "spec": template_body(name, sharing)["spec"]["spec"]}


def shared_pod_body(name: str, node: str, claim: str, image: str) -> dict:
    body = pod_body(name, node, "", image)
    body["spec"]["resourceClaims"] = [{"name": "gpu", "resourceClaimName": claim}]
    return body


def shared_claim_vectoradd(kube, settings, node: str, strategy: str) -> Finding:
    """DRA sharing: two pods on the node name one claim whose GpuConfig asks for `strategy` (TimeSlicing or MPS);
    the claim is allocated one device, reserved for both pods, and both print "Test PASSED"."""
    ns = settings.suite_namespace
    short = f"{node[:34]}-{uuid.uuid4().hex[:6]}".replace(".", "-")
    cname, pods = f"dra-shared-{short}", [f"dra-share-a-{short}", f"dra-share-b-{short}"]
    custom = kube.custom
    made: list[str] = []
    try:
        kube.workload_write(f"create ResourceClaim {ns}/{cname}", custom.create_namespaced_custom_object,
                            GROUP, VERSION, ns, "resourceclaims", claim_body(cname, {"strategy": strategy}))
        for p in pods:
            kube.workload_write(f"create Pod {ns}/{p}", kube.core.create_namespaced_pod, ns,
                                shared_pod_body(p, node, cname, settings.workload_image))
            made.append(p)
        deadline = time.monotonic() + settings.timeout("workload")
        reserved, devices, phases, ran_on = 0, [], {}, {}
        while time.monotonic() < deadline:
            claim = custom.get_namespaced_custom_object(GROUP, VERSION, ns, "resourceclaims", cname,
                                                        _request_timeout=kube.timeout)
            st = claim.get("status") or {}
            reserved = max(reserved, len(st.get("reservedFor") or []))
            devices = [f"{r.get('pool')}/{r.get('device')}" for r in
                       ((st.get("allocation") or {}).get("devices") or {}).get("results") or []] or devices
            read = {p: kube.core.read_namespaced_pod(p, ns, _request_timeout=kube.timeout) for p in pods}
            phases = {p: o.status.phase for p, o in read.items()}
            ran_on = {p: o.spec.node_name for p, o in read.items()}
            if all(ph in ("Succeeded", "Failed") for ph in phases.values()):
                break
            time.sleep(0.5)
        if not all(ph in ("Succeeded", "Failed") for ph in phases.values()):
            events = [e for p in pods for e in kube.events_for(p, ns)[-2:]]
            return Finding(False, f"expected: two pods sharing claim {cname} ({strategy}) on {node} run to completion. "
                                  f"Found: phases {phases}, claim allocated {devices or 'nothing'}, reserved for "
                                  f"{reserved} pod(s); events: {' | '.join(events) or 'none'}. Fix: the DRA driver "
                                  f"honours GpuConfig sharing {strategy} only with its feature gate "
                                  f"{SHARING_GATES[strategy]} (chart value draDriver.featureGates)")
        logs = {p: kube.pod_log(p, ns) for p in pods}
        bad = {p: (phases[p], logs[p].strip()[-200:]) for p in pods if phases[p] != "Succeeded" or "Test PASSED" not in logs[p]}
        # Both pods ran on the node through the one claim: kubelet runs a pod only once the claim is reserved for it,
        # so two pods that ran are two consumers of the claim's device. At once or one after the other depends on how
        # fast the first ends (reservedFor is sampled; a 1-second vectoradd can be gone before the second is bound).
        elsewhere = {p: n for p, n in ran_on.items() if n != node}
        if bad or elsewhere or len(devices) != 1 or not devices[0].startswith(f"{node}/"):
            return Finding(False, f"expected: one device of {node} for both pods, both 'Test PASSED'. Found: claim "
                                  f"allocated {devices}, reserved for up to {reserved} pod(s) at once, failing pods "
                                  f"{bad or 'none'}" + (f", pods on other nodes {elsewhere}" if elsewhere else "")
                                  + f". Fix: check the kubelet plugin's log on {node}")
        return Finding(True, f"two pods shared {devices[0]} through claim {cname} ({strategy}): both Test PASSED")
    except ApiException as exc:
        return Finding(False, f"could not run the DRA sharing pods in {ns}: {exc.status} {exc.reason}")
    finally:
        for p in made:
            with contextlib.suppress(ApiException):
                kube.workload_write(f"delete Pod {ns}/{p}", kube.core.delete_namespaced_pod, p, ns, grace_period_seconds=0)
        with contextlib.suppress(ApiException):
            kube.workload_write(f"delete ResourceClaim {ns}/{cname}", custom.delete_namespaced_custom_object,
                                GROUP, VERSION, ns, "resourceclaims", cname)


def unclaimed_pod_sees_no_gpu(kube, settings, node: str) -> Finding:
    """CNCF secure accelerator access: a pod on the node without a claim (and without nvidia.com/gpu) is given no
    GPU: its container lists no /dev/nvidia* device node."""
    ns = settings.suite_namespace
    name = f"dra-isolation-{node[:36]}-{uuid.uuid4().hex[:6]}".replace(".", "-")
    body = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {MANAGED_BY: SUITE, "app": "gpu-conformance-dra-isolation"}},
            "spec": {"restartPolicy": "Never", "nodeSelector": {"kubernetes.io/hostname": node},
                     "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                     "containers": [{"name": "list", "image": settings.workload_image,
                                     "command": ["sh", "-c", "ls -1 /dev/nvidia* 2>&1; exit 0"]}]}}
    try:
        kube.workload_write(f"create Pod {ns}/{name}", kube.core.create_namespaced_pod, ns, body)
        deadline = time.monotonic() + settings.timeout("workload")
        phase = None
        while time.monotonic() < deadline:
            phase = kube.core.read_namespaced_pod(name, ns, _request_timeout=kube.timeout).status.phase
            if phase in ("Succeeded", "Failed"):
                break
            time.sleep(0.5)
        if phase != "Succeeded":
            return Finding(False, f"expected: a pod without a GPU claim on {node} lists /dev/nvidia* and ends. Found: "
                                  f"phase {phase}. Fix: check the node's container runtime")
        log = kube.pod_log(name, ns)
        seen = [line.strip() for line in log.splitlines() if line.strip().startswith("/dev/nvidia")]
        if seen:
            return Finding(False, f"expected: a pod without a GPU claim on {node} sees no NVIDIA device. Found: its "
                                  f"container sees {seen}. Fix: do not make nvidia the default runtime or set "
                                  "NVIDIA_VISIBLE_DEVICES=all for every container; in DRA mode GPUs come only through "
                                  "claims (CNCF AI conformance: secure accelerator access)")
        return Finding(True, f"a pod without a claim on {node} sees no /dev/nvidia* device")
    except ApiException as exc:
        return Finding(False, f"could not run the isolation pod in {ns}: {exc.status} {exc.reason}")
    finally:
        with contextlib.suppress(ApiException):
            kube.workload_write(f"delete Pod {ns}/{name}", kube.core.delete_namespaced_pod, name, ns,
                                grace_period_seconds=0)
