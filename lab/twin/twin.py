"""The GPU node twin's Kubernetes side: on each lab node, the kubelet's part for the pods that land there
(the real controller-manager creates them, the real scheduler places them, kwok keeps the nodes alive),
and the supervisor that runs the real GPU Operator binary for the chart's `gpu-operator` Deployment.
The operator's own work (node labels, operand DaemonSets, RuntimeClasses, the DCGM Service, ClusterPolicy
status) is done by that real controller; the twin plays only what each operand container does on its node,
read from the pod spec the operator rendered (lab/twin/podspec.py).

What each pod does is decided here from the node's host view (lab/twin/hostview.py and friends) and the
node's faults: operand pods need the nvidia runtime in the node's running containerd, the toolkit pod
writes its drop-in, the device plugin advertises GPUs x replicas, GFD labels, the DCGM exporter serves
metrics on the pod's loopback IP, CUDA workloads succeed or fail with the real output.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import heapq
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from lab import podnet
from lab.kwok import RUNTIME_DOWN_ANNOTATION
from lab.spec import LabSpec, NodeSpec
from lab.state import LabPaths
from lab.twin import containerd, dcgm_server, dra_plugin, hook_jobs, mig, nfd, operands, outputs, plugin_config, podspec
from lab.twin.gpus import gpus_for
from lab.twin.informer import Informer
from lab.twin.operator_process import OperatorSupervisor, State

log = logging.getLogger("twin")
POD_IP_BLOCK = podnet.BLOCK_BITS  # each lab hands out at most 4094 pod IPs from its own block (lab/podnet.py)


def pod_ip_base(paths: LabPaths) -> ipaddress.IPv4Address:
    """The first pod IP of this lab: its block of 198.18.0.0/15 (proxyable), or of 127.0.0.0/8 without root
    (lab/podnet.py). Several labs run side by side on one machine: their pods never share an IP."""
    doc = podnet.load(paths) or podnet.claim(paths)
    return ipaddress.ip_address(doc["base"])


WORKLOAD_RESOURCE = "nvidia.com/gpu"
CDI_SPEC_NAME = "k8s.device-plugin.nvidia.com-gpu.json"  # the device plugin's CDI spec in /var/run/cdi (cdi-cri)
TASK_RETRIES = 120  # one a second: a task outlives an apiserver restart


def _sent(resp: object) -> None:
    """Writes go out with _preload_content=False: the twin never reads what a write returns, and turning a
    Node or Pod into client models costs more than the request itself (190 ms a node label patch at 1000
    nodes). Reading the raw body hands the connection back to the pool; API errors still raise."""
    getattr(resp, "data", None)


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Timers:
    """Delayed callbacks on one thread (the twin's notion of 'this takes a while')."""

    def __init__(self, run: Callable[[Callable[[], None]], None]) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cv = threading.Condition()
        self._seq = 0
        self._run = run
        threading.Thread(target=self._loop, name="twin-timers", daemon=True).start()

    def after(self, delay: float, fn: Callable[[], None]) -> None:
        with self._cv:
            self._seq += 1
            heapq.heappush(self._heap, (time.monotonic() + delay, self._seq, fn))
            self._cv.notify()

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cv.wait(timeout=(self._heap[0][0] - time.monotonic()) if self._heap else None)
                _, _, fn = heapq.heappop(self._heap)
            self._run(fn)


class Twin:
    def __init__(self, paths: LabPaths, spec: LabSpec, api: client.ApiClient) -> None:
        self.paths = paths
        self.spec = spec
        self.nodes: dict[str, NodeSpec] = {n.name: n for n in spec.nodes}
        self.timing = spec.timing
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.node_api = client.NodeV1Api(api)
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="twin-work")
        self.label_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="twin-labels")
        self.timers = Timers(self._submit)
        self.lock = threading.RLock()
        self.pod_state: dict[str, str] = {}       # pod uid -> what the twin has done with it
        self.pod_ips: dict[str, str] = {}
        self.next_ip = 0
        self.ip_base = pod_ip_base(paths)
        self.runtime_seen: dict[str, float] = {}   # node -> mtime of .twin/containerd.json last acted on
        self.plugin_sharing: dict[str, plugin_config.Sharing] = {}  # node -> config the running plugin loaded
        self.dcgm = dcgm_server.Servers(paths)
        self.node_ready: dict[str, str] = {}       # node -> status of its Ready condition last seen
        self.events_file = paths.root / "twin-events.jsonl"
        self.informers: dict[str, Informer] = {}
        self.operator_pods: dict[str, dict] = {}   # uid -> the chart's operator pod (its status follows the process)
        self.operator = OperatorSupervisor(paths, api, self._operator_changed)
        self.mig_pods: dict[str, dict] = {}        # node -> its running nvidia-mig-manager pod
        self.mig_busy: set[str] = set()            # nodes whose MIG manager is applying a config
        self.plugin_pods: dict[str, dict] = {}     # node -> the device-plugin pod that advertised last

    # ----------------------------------------------------------------- plumbing
    def _submit(self, fn: Callable[[], None], attempt: int = 0) -> None:
        def again(why: object) -> None:
            # The apiserver is away (restarted) or not ready yet: what the task does did not happen, and no
            # event will bring it back (a pod would stay Pending, a plugin would never advertise). Retry.
            if attempt < TASK_RETRIES:
                log.warning("%s: %s; retrying", getattr(fn, "__name__", fn), why)
                self.timers.after(1.0, lambda: self._submit(fn, attempt + 1))
            else:
                log.error("%s: %s; giving up after %d attempts", getattr(fn, "__name__", fn), why, attempt + 1)

        def guarded() -> None:
            try:
                fn()
            except ApiException as exc:
                if exc.status == 0 or exc.status >= 500:
                    again(f"{exc.status} {exc.reason}")
                elif exc.status not in (404, 409):
                    log.warning("api error in %s: %s %s", getattr(fn, "__name__", fn), exc.status, exc.reason)
            except (HTTPError, ConnectionError) as exc:
                again(exc)
            except Exception:
                log.exception("twin task failed")
        self.pool.submit(guarded)

    def record(self, kind: str, **fields: object) -> None:
        """Moments the twin reached a state (the benchmark measures the suite's reaction to them)."""
        with self.lock, self.events_file.open("a") as f:
            f.write(json.dumps({"t": time.time(), "kind": kind, **fields}) + "\n")

    def start(self) -> None:
        self.informers = {
            "nodes": Informer("nodes", self.core.list_node, self._on_node),
            "pods": Informer("pods", self.core.list_pod_for_all_namespaces, self._on_pod),
            "deployments": Informer("deployments", self.apps.list_deployment_for_all_namespaces,
                                    self._on_operator_deployment, field_selector="metadata.name=gpu-operator"),
            "configmaps": Informer("configmaps", self.core.list_config_map_for_all_namespaces, lambda *_: None),
        }
        for inf in self.informers.values():
            inf.start()
        threading.Thread(target=self._watch_hosts, name="twin-hosts", daemon=True).start()

    # ----------------------------------------------------------------- event handlers
    def _on_node(self, etype: str, obj: dict) -> None:
        name = obj["metadata"]["name"]
        ready = next((c.get("status") for c in (obj.get("status") or {}).get("conditions") or []
                      if c.get("type") == "Ready"), None)
        with self.lock:
            was = self.node_ready.pop(name, None) if etype == "DELETED" else self.node_ready.get(name)
            if etype != "DELETED":
                self.node_ready[name] = ready
        if etype != "DELETED" and name in self.mig_pods:
            self._submit(lambda: self._mig_manage(name))
        if was == "Unknown" and ready == "True" and name in self.nodes:
            # Back after missed heartbeats (a loaded machine at 1000 nodes): see _pods_ready_again. The node
            # controller marks the pods right after the node, so look twice.
            for delay in (2.0, 10.0):
                self.timers.after(delay, lambda: self._pods_ready_again(name))

    def _on_operator_deployment(self, etype: str, obj: dict) -> None:
        self.operator.deployment_changed(self.informers["deployments"].items())

    def _on_pod(self, etype: str, pod: dict) -> None:
        md, spec = pod["metadata"], pod.get("spec") or {}
        node = spec.get("nodeName")
        uid = md["uid"]
        if etype == "DELETED":
            self._forget_pod(pod)
            return
        if node not in self.nodes:
            return
        if md.get("deletionTimestamp"):
            with self.lock:
                if self.pod_state.get(uid) == "deleting":
                    return
                self.pod_state[uid] = "deleting"
            self._submit(lambda: self._finish_delete(pod))
            return
        with self.lock:
            if uid in self.pod_state:
                return
            self.pod_state[uid] = "starting"
        self.timers.after(self.timing.pod_start_s, lambda: self._start_pod(pod))

    # ----------------------------------------------------------------- pod lifecycle
    def _pod_ip(self, pod: dict) -> str:
        if (pod.get("spec") or {}).get("hostNetwork"):
            return "127.0.0.1"
        uid = pod["metadata"]["uid"]
        with self.lock:
            if uid not in self.pod_ips:
                self.pod_ips[uid] = str(self.ip_base + self.next_ip % ((1 << POD_IP_BLOCK) - 2))
                self.next_ip += 1
            return self.pod_ips[uid]

    def _host_root(self, node: str) -> Path:
        return self.paths.host_root(node)

    def _runtime(self, node: str) -> dict:
        return containerd.state(self._host_root(node))

    def _has_runtime(self, node: str, handler: str) -> bool:
        st = self._runtime(node)
        return bool(st.get("running")) and handler in (st.get("runtimes") or [])

    def _start_pod(self, pod: dict) -> None:
        md, spec = pod["metadata"], pod["spec"]
        uid, node_name = md["uid"], spec["nodeName"]
        current = self.informers["pods"].get(f"{md['namespace']}/{md['name']}")
        if current is None or current["metadata"]["uid"] != uid or current["metadata"].get("deletionTimestamp"):
            return
        node = self.nodes[node_name]
        rt = self._runtime(node_name)
        if not rt.get("running", True):
            self._event(pod, "Warning", "FailedCreatePodSandBox",
                        f"Failed to create pod sandbox: container runtime is down: {rt.get('error')}")
            self._set_state(uid, "waiting-runtime")
            return
        handler = spec.get("runtimeClassName")
        if handler and not self._has_runtime(node_name, handler):
            self._event(pod, "Warning", "FailedCreatePodSandBox",
                        f'Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox '
                        f'runtime: no runtime for "{handler}" is configured')
            self._set_state(uid, "waiting-runtime")
            return
        labels = md.get("labels") or {}
        op = operands.BY_APP.get(labels.get("app", ""))
        if operands.is_operator(labels):
            self._start_operator_pod(pod)
        elif operands.is_nfd_worker(labels):
            self._run_nfd_worker(pod, node)
        elif labels.get("app") == dra_plugin.PLUGIN_APP:
            self._start_dra_plugin(pod, node)
        elif labels.get("app") == operands.BY_APP["nvidia-operator-validator"].app and spec.get("resourceClaims"):
            # the GPUCluster's DRA validator: it carries the ClusterPolicy validator's app label (the upgrade
            # controller selects on it) but validates the driver and its GPU claim, not toolkit and device plugin
            if "driver-broken" in node.faults or "gpu-missing" in node.faults:
                self._set_running(pod, ready=False, init_waiting="driver-validation")
                self._set_state(uid, "validating")
            else:
                self._set_running(pod, ready=True)
                self._set_state(uid, "running")
        elif labels.get("app") in dra_plugin.DRA_OPERAND_APPS:
            self._set_running(pod, ready=True)
            self._set_state(uid, "running")
            if labels.get("app") == dcgm_server.DRA_APP and not dcgm_server.down(node):
                self.dcgm.start(uid, self._pod_ip(pod), node, gpus_for(node))
        elif op is not None:
            self._start_operand(pod, op, node)
        elif self._requests_gpu(pod):
            error = self._dra_prepare_error(pod, node) if pod["spec"].get("resourceClaims") else None
            if error:
                # kubelet's NodePrepareResources through the DRA plugin failed: the pod stays ContainerCreating
                self._event(pod, "Warning", "FailedPrepareDynamicResources",
                            f"Failed to prepare dynamic resources: prepare dynamic resources: NodePrepareResources "
                            f"failed for ResourceClaim: {error}")
                self._set_state(uid, "waiting-claim")
                return
            self._run_workload(pod, node)
        elif dra_plugin.lists_devices(pod):
            self._run_device_listing(pod)
        elif any(o.get("kind") == "Job" for o in md.get("ownerReferences") or []):
            self._run_job_pod(pod)
        else:
            self._set_running(pod, ready=True)
            self._set_state(uid, "running")

    def _alive(self, pod: dict) -> bool:
        """The pod still exists, is the same pod (uid) and is not being deleted."""
        md = pod["metadata"]
        current = self.informers["pods"].get(f"{md['namespace']}/{md['name']}")
        with self.lock:
            deleting = self.pod_state.get(md["uid"]) == "deleting"
        return (current is not None and current["metadata"]["uid"] == md["uid"] and not deleting
                and not current["metadata"].get("deletionTimestamp"))

    @staticmethod
    def _requests_gpu(pod: dict) -> bool:
        if pod["spec"].get("resourceClaims") and any((c.get("resources") or {}).get("claims")
                                                     for c in pod["spec"].get("containers", [])):
            return True  # a DRA workload: the scheduler allocated its claims before it bound the pod here
        for c in pod["spec"].get("containers", []):
            res = c.get("resources") or {}
            names = set(res.get("limits") or {}) | set(res.get("requests") or {})
            if WORKLOAD_RESOURCE in names or any(n.startswith("nvidia.com/mig-") for n in names):
                return True
        return False

    def _set_state(self, uid: str, state: str) -> None:
        with self.lock:
            if self.pod_state.get(uid) != "deleting":
                self.pod_state[uid] = state

    def _container_statuses(self, pod: dict, ready: bool, state: dict, restarts: int = 0) -> list[dict]:
        return [{
            "name": c["name"], "image": c.get("image", ""), "imageID": "",
            "containerID": f"containerd://{pod['metadata']['uid'].replace('-', '')}{i}",
            "ready": ready, "started": "running" in state, "restartCount": restarts, "state": state,
        } for i, c in enumerate(pod["spec"].get("containers", []))]

    def _pods_ready_again(self, node: str) -> None:
        """What kubelet does when its node is reachable again: the node controller set Ready=False on the
        node's pods while the node's status was Unknown (it leaves ContainersReady alone, the twin never
        sets that pair); the pods the twin runs ready get Ready=True posted again. Without this, one missed
        heartbeat left the operator's Deployment unavailable for good and the twin's operator stopped."""
        if self.node_ready.get(node) != "True":
            return
        for pod in self.informers["pods"].items():
            if (pod.get("spec") or {}).get("nodeName") != node:
                continue
            conds = {c.get("type"): c.get("status") for c in (pod.get("status") or {}).get("conditions") or []}
            if conds.get("Ready") != "False" or conds.get("ContainersReady") != "True":
                continue
            with self.lock:
                if self.pod_state.get(pod["metadata"]["uid"]) != "running":
                    continue
            self._patch_status(pod, {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now()}]})

    def _patch_status(self, pod: dict, status: dict) -> None:
        md = pod["metadata"]
        _sent(self.core.patch_namespaced_pod_status(md["name"], md["namespace"], {"status": status},
                                                   _preload_content=False))

    def _set_running(self, pod: dict, ready: bool, restarts: int = 0, waiting: dict | None = None,
                     init_waiting: str | None = None) -> None:
        t = now()
        ip = self._pod_ip(pod)
        state = {"waiting": waiting} if waiting else {"running": {"startedAt": t}}
        status: dict = {
            "phase": "Running" if not init_waiting else "Pending",
            "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}], "podIP": ip, "podIPs": [{"ip": ip}],
            "startTime": t,
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": t},
                {"type": "Initialized", "status": "False" if init_waiting else "True", "lastTransitionTime": t},
                {"type": "ContainersReady", "status": str(ready), "lastTransitionTime": t},
                {"type": "Ready", "status": str(ready), "lastTransitionTime": t},
            ],
            "containerStatuses": self._container_statuses(pod, ready, state, restarts),
        }
        if pod["spec"].get("initContainers"):
            status["initContainerStatuses"] = [{
                "name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": not init_waiting,
                "restartCount": 0,
                "state": ({"running": {"startedAt": t}} if init_waiting == c["name"]
                          else {"waiting": {"reason": "PodInitializing"}} if init_waiting
                          else {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": t, "finishedAt": t}}),
            } for c in pod["spec"]["initContainers"]]
        self._patch_status(pod, status)

    def _set_terminated(self, pod: dict, exit_code: int, log_text: str) -> None:
        self._write_logs(pod, log_text)
        t = now()
        ok = exit_code == 0
        state = {"terminated": {"exitCode": exit_code, "reason": "Completed" if ok else "Error",
                                "startedAt": t, "finishedAt": t}}
        self._patch_status(pod, {
            "phase": "Succeeded" if ok else "Failed",
            "hostIP": "127.0.0.1", "podIP": self._pod_ip(pod), "podIPs": [{"ip": self._pod_ip(pod)}],
            "startTime": t,
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": t},
                {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": t},
                {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": t},
            ],
            "containerStatuses": self._container_statuses(pod, False, state),
        })

    def _write_logs(self, pod: dict, text: str) -> None:
        """Container logs in CRI format, served by kwok's kubelet API through a `Logs` object."""
        md = pod["metadata"]
        folder = self.paths.root / "podlogs"
        folder.mkdir(exist_ok=True)
        entries = []
        for c in pod["spec"].get("containers", []):
            f = folder / f"{md['namespace']}_{md['name']}_{md['uid']}_{c['name']}.log"
            stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            f.write_text("".join(f"{stamp} stdout F {line}\n" for line in text.splitlines()))
            entries.append({"containers": [c["name"]], "logsFile": str(f)})
        body = {"apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Logs",
                "metadata": {"name": md["name"], "namespace": md["namespace"]}, "spec": {"logs": entries}}
        try:
            self.custom.create_namespaced_custom_object("kwok.x-k8s.io", "v1alpha1", md["namespace"], "logs", body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.custom.replace_namespaced_custom_object(
                "kwok.x-k8s.io", "v1alpha1", md["namespace"], "logs", md["name"],
                {**body, "metadata": {**body["metadata"], "resourceVersion": self.custom.get_namespaced_custom_object(
                    "kwok.x-k8s.io", "v1alpha1", md["namespace"], "logs", md["name"])["metadata"]["resourceVersion"]}})

    def _event(self, pod: dict, etype: str, reason: str, message: str) -> None:
        md = pod["metadata"]
        name = f"{md['name']}.{reason.lower()}.{int(time.time() * 1000)}"
        with contextlib.suppress(ApiException):
            self.core.create_namespaced_event(md["namespace"], {
                "metadata": {"name": name, "namespace": md["namespace"]},
                "involvedObject": {"kind": "Pod", "name": md["name"], "namespace": md["namespace"],
                                   "uid": md["uid"], "apiVersion": "v1"},
                "type": etype, "reason": reason, "message": message,
                "source": {"component": "kubelet", "host": pod["spec"].get("nodeName", "")},
                "firstTimestamp": now(), "lastTimestamp": now(), "count": 1,
            })

    def _finish_delete(self, pod: dict) -> None:
        md = pod["metadata"]
        if md.get("finalizers") and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            # kubelet kills a deleted pod's containers and reports a terminal phase while finalizers keep the object
            # (foregroundDeletion: its ResourceClaims go first, and their controller releases them only then)
            with contextlib.suppress(ApiException):
                self._set_terminated(pod, 137, "")
        try:
            _sent(self.core.delete_namespaced_pod(md["name"], md["namespace"], grace_period_seconds=0,
                                                  body=client.V1DeleteOptions(grace_period_seconds=0,
                                                                              preconditions={"uid": md["uid"]}),
                                                  _preload_content=False))
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def _forget_pod(self, pod: dict) -> None:
        md, spec = pod["metadata"], pod.get("spec") or {}
        with self.lock:
            self.pod_state.pop(md["uid"], None)
            self.pod_ips.pop(md["uid"], None)
            self.operator_pods.pop(md["uid"], None)
        app = (md.get("labels") or {}).get("app")
        node = spec.get("nodeName")
        if app in dcgm_server.APPS:
            self.dcgm.stop(md["uid"])
        if app == "nvidia-container-toolkit-daemonset" and node in self.nodes:
            # The real toolkit removes its drop-in when its container stops (the import line stays).
            self._submit(lambda: containerd.toolkit_uninstall(self._host_root(node)))
        if app == dra_plugin.PLUGIN_APP and node in self.nodes:
            # the kubeletplugin helper removes the node's slices when the plugin stops
            self._submit(lambda: self._unpublish_slices(node))
        if app == "nvidia-device-plugin-daemonset" and node in self.nodes:
            # kubelet drops a device plugin's resources when the plugin goes away.
            self._submit(lambda: self._advertise(node, 0))
            self._submit(lambda: self._remove_cdi_spec(node, md["uid"]))
        with contextlib.suppress(ApiException):
            self.custom.delete_namespaced_custom_object("kwok.x-k8s.io", "v1alpha1", md["namespace"], "logs",
                                                        md["name"])

    # ----------------------------------------------------------------- workloads
    def _run_device_listing(self, pod: dict) -> None:
        """A container that lists /dev/nvidia*: it sees the device nodes CDI gives it, i.e. those of its
        allocated gpu.nvidia.com claims (none for a pod without a claim: lab/twin/dra_plugin.py)."""
        uid = pod["metadata"]["uid"]
        self._set_running(pod, ready=True)
        self._set_state(uid, "running")
        devices: list[str] = []
        names = {c.get("resourceClaimName") for c in (pod.get("status") or {}).get("resourceClaimStatuses") or []}
        names |= {c.get("resourceClaimName") for c in pod["spec"].get("resourceClaims") or []}
        for name in names:
            if not name:
                continue
            with contextlib.suppress(ApiException):
                devices += dra_plugin.claim_device_nodes(self.custom.get_namespaced_custom_object(
                    "resource.k8s.io", "v1", pod["metadata"]["namespace"], "resourceclaims", name))

        def finish() -> None:
            self._set_terminated(pod, 0, dra_plugin.ls_output(sorted(set(devices))))
            self._set_state(uid, "done")
        self.timers.after(self.timing.workload_s, finish)

    def _run_workload(self, pod: dict, node: NodeSpec) -> None:
        uid = pod["metadata"]["uid"]
        self._set_running(pod, ready=True)
        self._set_state(uid, "running")
        fails = "vectoradd-fails" in node.faults or "driver-broken" in node.faults or "gpu-missing" in node.faults

        def finish() -> None:
            if fails:
                self._set_terminated(pod, 1, outputs.VECTORADD_FAILED)
            else:
                self._set_terminated(pod, 0, outputs.VECTORADD_PASSED)
            self._set_state(uid, "done")
        self.timers.after(self.timing.workload_s, finish)

    def _run_job_pod(self, pod: dict) -> None:
        """Pods of Jobs run to completion: the chart's CRD-upgrade hook runs the real manage-crds
        (lab/twin/hook_jobs.py); others (the NFD prune hook) just complete."""
        uid = pod["metadata"]["uid"]
        self._set_running(pod, ready=True)
        real = hook_jobs.real_program(pod)

        def finish() -> None:
            code, out = hook_jobs.run(self.paths, self.core, pod) if real else (0, "")
            self._set_terminated(pod, code, out)
            self._set_state(uid, "done")
        if real:
            self._submit(finish)
        else:
            self.timers.after(self.timing.workload_s, finish)

    # ----------------------------------------------------------------- the operator (a real process)
    def _operator_changed(self, state: State) -> None:
        """The supervised operator process started, stopped, crashed or answered its probe: its pod shows it."""
        with self.lock:
            pods = list(self.operator_pods.values())
        for pod in pods:
            self._submit(lambda p=pod: self._show_operator(p))

    def _start_operator_pod(self, pod: dict) -> None:
        with self.lock:
            self.operator_pods[pod["metadata"]["uid"]] = pod
        self._set_state(pod["metadata"]["uid"], "running")
        self._show_operator(pod)

    def _show_operator(self, pod: dict) -> None:
        """Ready exactly while the real process runs and its readiness probe answers; a crash is a restart
        of the container (CrashLoopBackOff while it is backing off), as kubelet reports it."""
        if not self._alive(pod):
            return
        st = self.operator.status()
        tag = podspec.image_tag(podspec.container(pod, operands.OPERATOR_APP))
        if st["version"] != tag or st["error"]:
            why = st["error"] or f"the lab runs gpu-operator {st['version']}, this pod's image is {tag}"
            self._set_running(pod, ready=False, restarts=st["restarts"],
                              waiting={"reason": "CrashLoopBackOff", "message": why})
        elif st["pid"] is None:
            self._set_running(pod, ready=False, restarts=st["restarts"], waiting={
                "reason": "CrashLoopBackOff",
                "message": f"back-off restarting failed container gpu-operator ({st['last_exit']})"})
        else:
            self._set_running(pod, ready=bool(st["healthy"]), restarts=st["restarts"])

    # ----------------------------------------------------------------- NFD worker
    def _run_nfd_worker(self, pod: dict, node: NodeSpec) -> None:
        """The chart's NFD worker reports the host's features; NFD's master labels the node with them."""
        uid = pod["metadata"]["uid"]
        self._set_running(pod, ready=True)
        self._set_state(uid, "running")
        obj = self.informers["nodes"].get(f"/{node.name}") or {"metadata": {}}
        have = obj["metadata"].get("labels") or {}
        patch = {k: v for k, v in nfd.labels(node).items() if have.get(k) != v}
        if patch:
            _sent(self.core.patch_node(node.name, {"metadata": {"labels": patch}}, _preload_content=False))

    # ----------------------------------------------------------------- the DRA kubelet plugin
    def _start_dra_plugin(self, pod: dict, node: NodeSpec) -> None:
        """The DRA driver's kubelet plugin: publishes the node's ResourceSlice (lab/twin/dra_plugin.py), then is
        ready. With dra-claim-left-allocated it also leaves a claim of a gone pod allocated on the node."""
        uid = pod["metadata"]["uid"]
        self._set_running(pod, ready=False)

        def publish() -> None:
            if not self._alive(pod):
                return
            if "dra-plugin-never-publishes" not in node.faults and node.gpus and "gpu-missing" not in node.faults:
                writer = dra_plugin.as_plugin(self.custom.api_client, self.core, pod)   # its ServiceAccount
                try:
                    self._unpublish_slices(node.name, writer)
                    node_obj = self.informers["nodes"].get(f"/{node.name}") or {"metadata": {}}
                    writer.create_cluster_custom_object("resource.k8s.io", "v1", "resourceslices", dra_plugin.node_slice(
                        node, node_obj["metadata"].get("uid", ""), self._host_root(node.name)))
                finally:
                    writer.api_client.close()
                self.record("slices-published", node=node.name)
            if "dra-claim-left-allocated" in node.faults:
                self._leave_claim(node)
            self._write_logs(pod, f"Published ResourceSlice for pool {node.name}\n")
            self._set_running(pod, ready=True)
            self._set_state(uid, "running")
        self.timers.after(self.timing.plugin_ready_s, lambda: self._submit(publish))

    def _dra_prepare_error(self, pod: dict, node: NodeSpec) -> str | None:
        """What the DRA kubelet plugin's prepare says about the pod's claims: a GpuConfig sharing strategy whose
        feature gate the node's plugin does not have (its FEATURE_GATES env, rendered from draDriver.featureGates)."""
        ns = pod["metadata"]["namespace"]
        names = [c.get("resourceClaimName") for c in pod["spec"].get("resourceClaims") or []]
        names += [c.get("resourceClaimName") for c in (pod.get("status") or {}).get("resourceClaimStatuses") or []]
        plugin = next((p for p in self.informers["pods"].items() if p["spec"].get("nodeName") == node.name
                       and not p["metadata"].get("deletionTimestamp")
                       and (p["metadata"].get("labels") or {}).get("app") == dra_plugin.PLUGIN_APP), None)
        gates = dra_plugin.feature_gates(podspec.env(plugin, podspec.container(plugin, "gpus")) if plugin else {})
        for name in {n for n in names if n}:
            try:
                claim = self.custom.get_namespaced_custom_object("resource.k8s.io", "v1", ns, "resourceclaims", name)
            except ApiException:
                continue
            error = dra_plugin.sharing_error(claim, gates)
            if error:
                return error
        return None

    def _unpublish_slices(self, node: str, api: client.CustomObjectsApi | None = None) -> None:
        api = api or self.custom   # the plugin's own identity, or (the plugin gone) kubelet's clean-up
        slices = api.list_cluster_custom_object("resource.k8s.io", "v1", "resourceslices",
                                                field_selector=f"spec.nodeName={node}")["items"]
        for sl in slices:
            if sl["spec"].get("driver") == dra_plugin.DRIVER:
                with contextlib.suppress(ApiException):
                    api.delete_cluster_custom_object("resource.k8s.io", "v1", "resourceslices", sl["metadata"]["name"])

    def _leave_claim(self, node: NodeSpec) -> None:
        body = dra_plugin.left_claim(node)
        ns, name = body["metadata"]["namespace"], body["metadata"]["name"]
        try:
            self.custom.create_namespaced_custom_object("resource.k8s.io", "v1", ns, "resourceclaims", body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            return
        self.custom.patch_namespaced_custom_object_status("resource.k8s.io", "v1", ns, "resourceclaims", name,
                                                          {"status": dra_plugin.left_claim_status(node)})

    # ----------------------------------------------------------------- operands
    def _start_operand(self, pod: dict, op: operands.Operand, node: NodeSpec) -> None:
        uid = pod["metadata"]["uid"]
        ns = pod["metadata"]["namespace"]
        if op is operands.DRIVER:
            self._crashloop(pod, outputs.DRIVER_IN_USE)
            return
        if op.component == "toolkit":
            self._set_running(pod, ready=False)

            def install() -> None:
                if not self._alive(pod):  # deleted while it started: a container that is gone writes nothing
                    return
                ctr = podspec.container(pod, op.container)
                env = podspec.env(pod, ctr)
                if env.get("ENABLE_NRI_PLUGIN", "").lower() == "true":
                    # the real installer: runtime.NewConfigurer(..., nriEnabled=true) is the no-op configurer (no
                    # containerd config, no drop-in); it serves its NRI plugin on the NRI socket instead
                    self._write_logs(pod, "Starting NRI plugin server\n")
                    self._set_running(pod, ready=True)
                    self._set_state(uid, "running")
                    self.record("toolkit-ready", node=node.name, nri=True)
                    return
                try:
                    written = containerd.toolkit_install(self._host_root(node.name), env,
                                                         env.get("CDI_ENABLED", "").lower() == "true", node.faults,
                                                         mounts=podspec.host_mounts(pod, ctr), image=ctr.get("image"))
                except containerd.ToolkitError as exc:
                    self._crashloop(pod, f"level=error msg=\"{exc}\"")
                    return
                self._write_logs(pod, "".join(f"Wrote {p}\n" for p in written))
                self._set_running(pod, ready=True)
                self._set_state(uid, "running")
                self.record("toolkit-ready", node=node.name)
            self.timers.after(self.timing.toolkit_ready_s, install)
            return
        if op.component == "devicePlugin":
            self._start_device_plugin(pod, node, ns)
            return
        if op.component == "gfd":
            self._set_running(pod, ready=True)
            self._set_state(uid, "running")
            self._submit(lambda: self._label_gfd(node, pod))
            return
        if op.component == "dcgmExporter":
            self._set_running(pod, ready=True)
            self._set_state(uid, "running")
            if not dcgm_server.down(node):
                self.dcgm.start(uid, self._pod_ip(pod), node, gpus_for(node))
            return
        if op.component == "validator":
            self._validate(pod, node)
            return
        if op.component == "migManager":
            self._set_running(pod, ready=True)
            self._set_state(uid, "running")
            with self.lock:
                self.mig_pods[node.name] = pod
            self._submit(lambda: self._mig_manage(node.name))
            return
        self._set_running(pod, ready=True)
        self._set_state(uid, "running")

    def _crashloop(self, pod: dict, message: str) -> None:
        self._write_logs(pod, message + "\n")
        self._set_running(pod, ready=False, restarts=3,
                          waiting={"reason": "CrashLoopBackOff",
                                   "message": f"back-off 40s restarting failed container: {message}"})
        self._set_state(pod["metadata"]["uid"], "crashloop")

    def _start_device_plugin(self, pod: dict, node: NodeSpec, ns: str) -> None:
        uid = pod["metadata"]["uid"]
        if "device-plugin-crash" in node.faults or "driver-broken" in node.faults:
            self._crashloop(pod, "failed to initialize NVML: ERROR_LIBRARY_NOT_FOUND"
                            if "driver-broken" in node.faults else "panic: runtime error: invalid memory address")
            return
        self._set_running(pod, ready=False)
        cm_name, default_key = plugin_config_source(pod)
        node_obj = self.informers["nodes"].get(f"/{node.name}") or {"metadata": {}}
        labels = node_obj["metadata"].get("labels") or {}
        cm = self.informers["configmaps"].get(f"{ns}/{cm_name}") if cm_name else None
        sharing = plugin_config.choose(labels, cm_name, default_key, cm)
        self.plugin_sharing[node.name] = sharing
        gpus = 0 if "gpu-missing" in node.faults else node.gpus
        plugin_env = podspec.env(pod, podspec.container(pod, "nvidia-device-plugin"))
        strategy = plugin_env.get("MIG_STRATEGY") or sharing.mig_strategy or "none"  # env over the config file
        log_text = outputs.DEVICE_PLUGIN_START + (f"E {sharing.error}\n" if sharing.error else "") + (
            f"Running with time-slicing: {sharing.replicas} replicas per GPU\n" if sharing.shared else
            "No sharing configured\n") + ("No devices found. Waiting indefinitely.\n" if not gpus else "")
        delay = self.timing.plugin_ready_s + (self.timing.slow_advertise_s if "slow-advertise" in node.faults else 0)

        def ready() -> None:
            if not self._alive(pod):  # deleted (restarted) while it started: a plugin that is gone advertises nothing
                return
            self._write_logs(pod, log_text)
            self._write_cdi_spec(pod, node)   # before it registers: a pod it serves finds its devices
            self._label_gfd(node)
            if node.mig is not None:
                with self.lock:
                    self.plugin_pods[node.name] = pod
                counts = self._advertise_mig(node, gpus, strategy, sharing)
            else:
                count = gpus * sharing.replicas
                if "renamed-count-wrong" in node.faults and sharing.resource != WORKLOAD_RESOURCE and count:
                    count -= 1     # the fault: the renamed resource is advertised one short
                counts = {WORKLOAD_RESOURCE: count}
                self._advertise(node.name, count, sharing.resource)
            self._set_running(pod, ready=True)
            self._set_state(uid, "running")
            self.record("gpus-advertised", node=node.name, count=counts[WORKLOAD_RESOURCE])
        self.timers.after(delay, ready)

    def _advertise(self, node: str, count: int, resource: str = WORKLOAD_RESOURCE) -> None:
        """The plugin advertises ``count`` under ``resource``; with a rename (nvidia.com/gpu.shared) nvidia.com/gpu
        drops to 0, as the kubelet shows a resource whose plugin no longer lists devices."""
        values = {resource: str(count)}
        if resource != WORKLOAD_RESOURCE:
            values[WORKLOAD_RESOURCE] = "0"
        else:
            obj = self.informers["nodes"].get(f"/{node}") or {}
            if "nvidia.com/gpu.shared" in ((obj.get("status") or {}).get("allocatable") or {}):
                values["nvidia.com/gpu.shared"] = "0"
        _sent(self.core.patch_node_status(node, {"status": {"capacity": dict(values), "allocatable": values}},
                                          _preload_content=False))

    def _advertise_mig(self, node: NodeSpec, gpus: int, strategy: str, sharing: plugin_config.Sharing
                       ) -> dict[str, int]:
        """A MIG node's resources (lab/twin/mig.py advertised); MIG resources it no longer has go to 0, as kubelet
        keeps a resource name a device plugin stopped advertising."""
        counts = mig.advertised(gpus, mig.read(self._host_root(node.name)), strategy, sharing.replicas_of())
        obj = self.informers["nodes"].get(f"/{node.name}") or {}
        have = (obj.get("status") or {}).get("capacity") or {}
        res = {k: "0" for k in have if k.startswith("nvidia.com/mig-")} | {k: str(v) for k, v in counts.items()}
        _sent(self.core.patch_node_status(node.name, {"status": {"capacity": res, "allocatable": res}},
                                          _preload_content=False))
        return counts

    def _mig_manage(self, node_name: str) -> None:
        """The MIG manager: apply the node's nvidia.com/mig.config when it differs from what the GPUs have."""
        node = self.nodes[node_name]
        with self.lock:
            pod = self.mig_pods.get(node_name)
            if pod is None or node_name in self.mig_busy:
                return
        if not self._alive(pod):
            with self.lock:
                self.mig_pods.pop(node_name, None)
            return
        obj = self.informers["nodes"].get(f"/{node_name}") or {"metadata": {}}
        labels = obj["metadata"].get("labels") or {}
        want = labels.get(mig.CONFIG_LABEL)
        root = self._host_root(node_name)
        state = mig.read(root)
        if not want or (want == state.get("config") and labels.get(mig.STATE_LABEL) == state.get("state")):
            return
        with self.lock:
            self.mig_busy.add(node_name)
        _sent(self.core.patch_node(node_name, {"metadata": {"labels": {mig.STATE_LABEL: "pending"}}},
                                   _preload_content=False))

        def apply() -> None:
            try:
                ctr = podspec.container(pod, "nvidia-mig-manager")
                cm_name = podspec.configmap_at(pod, ctr, mig.MIG_PARTED_MOUNT)
                cm = self.informers["configmaps"].get(f"{pod['metadata']['namespace']}/{cm_name}") if cm_name else None
                text = ((cm or {}).get("data") or {}).get("config.yaml")
                try:
                    if "mig-state-failed" in node.faults:
                        raise mig.MigError("error applying MIG configuration: the GPUs are in use (fault "
                                           "mig-state-failed)")
                    if not (node.mig or {}).get("capable", True):
                        raise mig.MigError(f"error applying MIG configuration: {node.product} does not support MIG")
                    if text is None:
                        raise mig.MigError(f"error reading mig-parted config: ConfigMap {cm_name} has no config.yaml")
                    per_gpu = mig.layout(text, want, node)
                except mig.MigError as exc:
                    mig.write(root, {**state, "config": want, "state": "failed", "error": str(exc)})
                    self._write_logs(pod, f"{exc}\nChanging the 'nvidia.com/mig.config.state' label to 'failed'\n")
                    _sent(self.core.patch_node(node_name, {"metadata": {"labels": {mig.STATE_LABEL: "failed"}}},
                                               _preload_content=False))
                    return
                mig.write(root, mig.partition(node, [g.uuid for g in gpus_for(node)], per_gpu, want))
                self._mig_operands_again(node)
                self._write_logs(pod, f"Applying the selected MIG config {want}\n"
                                      "Changing the 'nvidia.com/mig.config.state' label to 'success'\n")
                _sent(self.core.patch_node(node_name, {"metadata": {"labels": {mig.STATE_LABEL: "success"}}},
                                           _preload_content=False))
                self.record("mig-applied", node=node_name, config=want)
            finally:
                with self.lock:
                    self.mig_busy.discard(node_name)
                self.timers.after(0.2, lambda: self._submit(lambda: self._mig_manage(node_name)))
        self.timers.after(self.timing.mig_apply_s, lambda: self._submit(apply))

    def _mig_operands_again(self, node: NodeSpec) -> None:
        """After a MIG change the MIG manager restarts the GPU operands: the device plugin advertises the new
        devices and GFD relabels (the DCGM exporter reads the partitions on each scrape)."""
        with self.lock:
            pod = self.plugin_pods.get(node.name)
        if pod is not None and self._alive(pod):
            sharing = self.plugin_sharing.get(node.name, plugin_config.Sharing())
            env = podspec.env(pod, podspec.container(pod, "nvidia-device-plugin"))
            gpus = 0 if "gpu-missing" in node.faults else node.gpus
            self._advertise_mig(node, gpus, env.get("MIG_STRATEGY") or sharing.mig_strategy or "none", sharing)
        self._label_gfd(node)

    def _remove_cdi_spec(self, node: str, gone_uid: str) -> None:
        """The plugin's CDI spec goes with the plugin (played: the lab keeps a host as it was once the operator is
        gone; /var/run is a tmpfs on a real host) - unless another plugin pod already runs on the node."""
        if any(p["spec"].get("nodeName") == node and p["metadata"]["uid"] != gone_uid
               and not p["metadata"].get("deletionTimestamp")
               and (p["metadata"].get("labels") or {}).get("app") == "nvidia-device-plugin-daemonset"
               for p in self.informers["pods"].items()):
            return
        (self._host_root(node) / "var/run/cdi" / CDI_SPEC_NAME).unlink(missing_ok=True)

    def _write_cdi_spec(self, pod: dict, node: NodeSpec) -> None:
        """In CDI mode (the operator gives the plugin CDI_ENABLED=true and DEVICE_LIST_STRATEGY with cdi-cri) the
        real device plugin writes /var/run/cdi/k8s.device-plugin.nvidia.com-gpu.json, one device per GPU UUID
        (device-id-strategy uuid). Fault cdi-spec-missing-gpu: the last GPU is left out."""
        env = podspec.env(pod, podspec.container(pod, "nvidia-device-plugin"))
        path = self._host_root(node.name) / "var/run/cdi" / CDI_SPEC_NAME
        if env.get("CDI_ENABLED", "").lower() != "true" or "cdi-cri" not in env.get("DEVICE_LIST_STRATEGY", ""):
            path.unlink(missing_ok=True)
            return
        uuids = [g.uuid for g in gpus_for(node)] if "gpu-missing" not in node.faults else []
        if "cdi-spec-missing-gpu" in node.faults:
            uuids = uuids[:-1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"cdiVersion": "0.5.0", "kind": "k8s.device-plugin.nvidia.com/gpu",
                                    "devices": [{"name": u, "containerEdits": {"deviceNodes": [
                                        {"path": f"/dev/nvidia{i}"}]}} for i, u in enumerate(uuids)],
                                    "containerEdits": {"deviceNodes": [{"path": "/dev/nvidiactl"}]}}))

    def _gfd_pod(self, node: str) -> dict | None:
        return next((p for p in self.informers["pods"].items()
                     if p["spec"].get("nodeName") == node and (p["metadata"].get("labels") or {}).get("app")
                     == "gpu-feature-discovery" and (p.get("status") or {}).get("phase") == "Running"), None)

    def _label_gfd(self, node: NodeSpec, gfd: dict | None = None) -> None:
        """GPU feature discovery's labels, from the config the node's device plugin loaded and GFD's own env.
        Called by GFD's own start (its pod given: the informer may not show it Running yet) and whenever the
        device plugin (re)loads its config (then only if a GFD pod runs on the node)."""
        node_obj = self.informers["nodes"].get(f"/{node.name}") or {"metadata": {}}
        labels = node_obj["metadata"].get("labels") or {}
        gfd = gfd if gfd is not None and self._alive(gfd) else self._gfd_pod(node.name)
        if gfd is None or "driver-broken" in node.faults:
            return
        gfd_env = podspec.env(gfd, podspec.container(gfd, "gpu-feature-discovery"))
        sharing = self.plugin_sharing.get(node.name, plugin_config.Sharing())
        gpus = 0 if "gpu-missing" in node.faults else node.gpus
        records = gpus_for(node)
        want = {
            "nvidia.com/gpu.count": str(gpus),
            "nvidia.com/gpu.product": plugin_config.product_label(node.product, sharing),
            "nvidia.com/gpu.replicas": str(sharing.replicas),
            "nvidia.com/gpu.sharing-strategy": sharing.strategy,
            "nvidia.com/gpu.family": "blackwell" if "GB" in node.product else "hopper",
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
            want = mig.gfd_labels(node, mig.read(self._host_root(node.name)), strategy, sharing.replicas_of(),
                                  {**want, "nvidia.com/mig.strategy": strategy}, labels)
        patch = {k: v for k, v in want.items() if labels.get(k) != v}
        if patch:
            _sent(self.core.patch_node(node.name, {"metadata": {"labels": patch}}, _preload_content=False))

    def _validate(self, pod: dict, node: NodeSpec) -> None:
        """The validator's init containers in order driver -> toolkit -> cuda -> plugin. With a pre-installed
        driver, driver validation is `chroot /host nvidia-smi` (validateHostDriver in the v26.x validator):
        it passes when the host's nvidia-smi works."""
        uid = pod["metadata"]["uid"]
        with self.lock:
            if self.pod_state.get(uid) == "deleting":
                return
        root = self._host_root(node.name)
        waiting = None
        if "driver-broken" in node.faults or "gpu-missing" in node.faults:
            waiting = "driver-validation"
        elif not self._has_runtime(node.name, "nvidia") and not self._nri_toolkit_ready(node.name):
            waiting = "toolkit-validation"
        elif "vectoradd-fails" in node.faults:
            waiting = "cuda-validation"
        elif self._allocatable(node.name) == 0:
            waiting = "plugin-validation"
        if waiting:
            self._set_running(pod, ready=False, init_waiting=waiting)
            self._set_state(uid, "validating")
            self.timers.after(0.5, lambda: self._validate(pod, node))
            return
        vdir = root / "run/nvidia/validations"
        vdir.mkdir(parents=True, exist_ok=True)
        for step in ("driver-ready", "toolkit-ready", "cuda-ready", "plugin-ready"):
            (vdir / step).touch()
        self._set_running(pod, ready=True)
        self._set_state(uid, "running")

    def _nri_toolkit_ready(self, node: str) -> bool:
        """With the NRI plugin the toolkit's validation needs no nvidia runtime: a ready toolkit pod on the node
        whose env has ENABLE_NRI_PLUGIN=true (management containers get their devices through NRI)."""
        for p in self.informers["pods"].items():
            if p["spec"].get("nodeName") != node or (p["metadata"].get("labels") or {}).get("app") != \
                    "nvidia-container-toolkit-daemonset":
                continue
            env = podspec.env(p, podspec.container(p, "nvidia-container-toolkit-ctr"))
            conds = {c.get("type"): c.get("status") for c in (p.get("status") or {}).get("conditions") or []}
            if env.get("ENABLE_NRI_PLUGIN", "").lower() == "true" and conds.get("Ready") == "True":
                return True
        return False

    def _allocatable(self, node: str) -> int:
        """GPUs the node advertises: nvidia.com/gpu plus the MIG resources of strategy mixed (the validator's
        plugin validation accepts either)."""
        obj = self.informers["nodes"].get(f"/{node}") or {}
        alloc = (obj.get("status") or {}).get("allocatable") or {}
        return sum(int(v or 0) for k, v in alloc.items() if k == WORKLOAD_RESOURCE or k.startswith("nvidia.com/mig-"))

    # ----------------------------------------------------------------- hosts -> nodes
    def _watch_hosts(self) -> None:
        """containerd restarts happen on the hosts (`snap restart k8s.containerd`); reflect them."""
        while True:
            for name in self.nodes:
                f = self._host_root(name) / ".twin" / "containerd.json"
                try:
                    mtime = f.stat().st_mtime
                except FileNotFoundError:
                    continue
                if self.runtime_seen.get(name) == mtime:
                    continue
                self.runtime_seen[name] = mtime
                self._submit(lambda n=name: self._runtime_changed(n))
            time.sleep(0.2)

    def _runtime_changed(self, node: str) -> None:
        st = self._runtime(node)
        obj = self.informers["nodes"].get(f"/{node}")
        if obj is None:
            return
        annotations = obj["metadata"].get("annotations") or {}
        if st.get("running", True):
            if RUNTIME_DOWN_ANNOTATION in annotations:
                _sent(self.core.patch_node(node, {"metadata": {"annotations": {RUNTIME_DOWN_ANNOTATION: None}}},
                                           _preload_content=False))
            else:
                # What kubelet does when its runtime comes back: post a fresh Ready status.
                t = now()
                _sent(self.core.patch_node_status(node, {"status": {"conditions": [{
                    "type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "kubelet is posting ready status", "lastHeartbeatTime": t}]}}, _preload_content=False))
            self.record("containerd-restarted", node=node, runtimes=st.get("runtimes"))
        else:
            message = f"container runtime is down: {st.get('error')}"
            if annotations.get(RUNTIME_DOWN_ANNOTATION) != message:
                _sent(self.core.patch_node(node, {"metadata": {"annotations": {RUNTIME_DOWN_ANNOTATION: message}}},
                                           _preload_content=False))
        # Pods that waited for a runtime get another try.
        for pod in self.informers["pods"].items():
            if pod["spec"].get("nodeName") != node:
                continue
            uid = pod["metadata"]["uid"]
            with self.lock:
                if self.pod_state.get(uid) != "waiting-runtime":
                    continue
                self.pod_state[uid] = "starting"
            self.timers.after(self.timing.pod_start_s, lambda p=pod: self._start_pod(p))


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
