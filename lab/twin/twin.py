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
from lab.spec import Fault, LabSpec, NodeSpec
from lab.state import LabPaths
from lab.twin import containerd, dcgm_server, dra_plugin, hook_jobs, operands, outputs, plugin_config, podspec
from lab.twin.informer import Informer
from lab.twin.operands import WORKLOAD_RESOURCE, dra, mig_manager, registry, sent
from lab.twin.operator_process import OperatorSupervisor, State

log = logging.getLogger("twin")
POD_IP_BLOCK = podnet.BLOCK_BITS  # each lab hands out at most 4094 pod IPs from its own block (lab/podnet.py)


def pod_ip_base(paths: LabPaths) -> ipaddress.IPv4Address:
    """The first pod IP of this lab: its block of 198.18.0.0/15 (proxyable), or of 127.0.0.0/8 without root
    (lab/podnet.py). Several labs run side by side on one machine: their pods never share an IP."""
    doc = podnet.load(paths) or podnet.claim(paths)
    return ipaddress.ip_address(doc["base"])


TASK_RETRIES = 120  # one a second: a task outlives an apiserver restart


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
        self.timers = Timers(self.submit)
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
    def submit(self, fn: Callable[[], None], attempt: int = 0) -> None:
        def again(why: object) -> None:
            # The apiserver is away (restarted) or not ready yet: what the task does did not happen, and no
            # event will bring it back (a pod would stay Pending, a plugin would never advertise). Retry.
            if attempt < TASK_RETRIES:
                log.warning("%s: %s; retrying", getattr(fn, "__name__", fn), why)
                self.timers.after(1.0, lambda: self.submit(fn, attempt + 1))
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
            self.submit(lambda: mig_manager.manage(self, name))
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
            self.submit(lambda: self._finish_delete(pod))
            return
        with self.lock:
            state = self.pod_state.get(uid)
            if state is None:
                self.pod_state[uid] = "starting"
        if state is None:
            self.timers.after(self.timing.pod_start_s, lambda: self._start_pod(pod))
        elif state == "running" and self.node_ready.get(node) == "True" and self._marked_not_ready(pod):
            # The node controller marked it while the node was Unknown, after the node came back (at 1000 nodes
            # it marks pods long after the node, past _pods_ready_again's two looks): kubelet's status sync puts
            # Ready back; so does the twin, for each such pod as its update arrives.
            self.submit(lambda: self._ready_again(pod))

    # ----------------------------------------------------------------- pod lifecycle
    def pod_ip(self, pod: dict) -> str:
        if (pod.get("spec") or {}).get("hostNetwork"):
            return "127.0.0.1"
        uid = pod["metadata"]["uid"]
        with self.lock:
            if uid not in self.pod_ips:
                self.pod_ips[uid] = str(self.ip_base + self.next_ip % ((1 << POD_IP_BLOCK) - 2))
                self.next_ip += 1
            return self.pod_ips[uid]

    def host_root(self, node: str) -> Path:
        return self.paths.host_root(node)

    def _runtime(self, node: str) -> dict:
        return containerd.state(self.host_root(node))

    def has_runtime(self, node: str, handler: str) -> bool:
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
            self.event(pod, "Warning", "FailedCreatePodSandBox",
                       f"Failed to create pod sandbox: container runtime is down: {rt.get('error')}")
            self.set_state(uid, "waiting-runtime")
            return
        handler = spec.get("runtimeClassName")
        if handler and not self.has_runtime(node_name, handler):
            self.event(pod, "Warning", "FailedCreatePodSandBox",
                       f'Failed to create pod sandbox: rpc error: code = Unknown desc = failed to get sandbox '
                       f'runtime: no runtime for "{handler}" is configured')
            self.set_state(uid, "waiting-runtime")
            return
        player = registry.player_for(pod)
        if player is not None:
            player.start(self, pod, node)   # the operand (or operator, NFD worker, DRA part) it plays
        elif self._requests_gpu(pod):
            error = dra.prepare_error(self, pod, node) if pod["spec"].get("resourceClaims") else None
            if error:
                # kubelet's NodePrepareResources through the DRA plugin failed: the pod stays ContainerCreating
                self.event(pod, "Warning", "FailedPrepareDynamicResources",
                           f"Failed to prepare dynamic resources: prepare dynamic resources: NodePrepareResources "
                           f"failed for ResourceClaim: {error}")
                self.set_state(uid, "waiting-claim")
                return
            self._run_workload(pod, node)
        elif dra_plugin.lists_devices(pod):
            self._run_device_listing(pod)
        elif any(o.get("kind") == "Job" for o in md.get("ownerReferences") or []):
            self._run_job_pod(pod)
        else:
            self.set_running(pod, ready=True)
            self.set_state(uid, "running")

    def alive(self, pod: dict) -> bool:
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

    def set_state(self, uid: str, state: str) -> None:
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
            if (pod.get("spec") or {}).get("nodeName") == node and self._marked_not_ready(pod):
                self._ready_again(pod)

    @staticmethod
    def _marked_not_ready(pod: dict) -> bool:
        """Ready=False with ContainersReady=True: the node controller's mark (the twin never sets that pair)."""
        conds = {c.get("type"): c.get("status") for c in (pod.get("status") or {}).get("conditions") or []}
        return conds.get("Ready") == "False" and conds.get("ContainersReady") == "True"

    def _ready_again(self, pod: dict) -> None:
        with self.lock:
            if self.pod_state.get(pod["metadata"]["uid"]) != "running":
                return
        self._patch_status(pod, {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now()}]})

    def _patch_status(self, pod: dict, status: dict) -> None:
        md = pod["metadata"]
        sent(self.core.patch_namespaced_pod_status(md["name"], md["namespace"], {"status": status},
                                                   _preload_content=False))

    def set_running(self, pod: dict, ready: bool, restarts: int = 0, waiting: dict | None = None,
                    init_waiting: str | None = None) -> None:
        t = now()
        ip = self.pod_ip(pod)
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

    def set_terminated(self, pod: dict, exit_code: int, log_text: str) -> None:
        self.write_logs(pod, log_text)
        t = now()
        ok = exit_code == 0
        state = {"terminated": {"exitCode": exit_code, "reason": "Completed" if ok else "Error",
                                "startedAt": t, "finishedAt": t}}
        self._patch_status(pod, {
            "phase": "Succeeded" if ok else "Failed",
            "hostIP": "127.0.0.1", "podIP": self.pod_ip(pod), "podIPs": [{"ip": self.pod_ip(pod)}],
            "startTime": t,
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": t},
                {"type": "ContainersReady", "status": "False", "reason": "PodCompleted", "lastTransitionTime": t},
                {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": t},
            ],
            "containerStatuses": self._container_statuses(pod, False, state),
        })

    def write_logs(self, pod: dict, text: str) -> None:
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

    def event(self, pod: dict, etype: str, reason: str, message: str) -> None:
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
                self.set_terminated(pod, 137, "")
        try:
            sent(self.core.delete_namespaced_pod(md["name"], md["namespace"], grace_period_seconds=0,
                                                 body=client.V1DeleteOptions(grace_period_seconds=0,
                                                                             preconditions={"uid": md["uid"]}),
                                                 _preload_content=False))
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def _forget_pod(self, pod: dict) -> None:
        md = pod["metadata"]
        with self.lock:
            self.pod_state.pop(md["uid"], None)
            self.pod_ips.pop(md["uid"], None)
            self.operator_pods.pop(md["uid"], None)
        player = registry.player_for(pod)
        if player is not None and player.stop is not None:
            player.stop(self, pod)   # what the container's end does on its node
        with contextlib.suppress(ApiException):
            self.custom.delete_namespaced_custom_object("kwok.x-k8s.io", "v1alpha1", md["namespace"], "logs",
                                                        md["name"])

    # ----------------------------------------------------------------- workloads
    def _run_device_listing(self, pod: dict) -> None:
        """A container that lists /dev/nvidia*: it sees the device nodes CDI gives it, i.e. those of its
        allocated gpu.nvidia.com claims (none for a pod without a claim: lab/twin/dra_plugin.py)."""
        uid = pod["metadata"]["uid"]
        self.set_running(pod, ready=True)
        self.set_state(uid, "running")
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
            self.set_terminated(pod, 0, dra_plugin.ls_output(sorted(set(devices))))
            self.set_state(uid, "done")
        self.timers.after(self.timing.workload_s, finish)

    def _run_workload(self, pod: dict, node: NodeSpec) -> None:
        uid = pod["metadata"]["uid"]
        self.set_running(pod, ready=True)
        self.set_state(uid, "running")
        fails = Fault.VECTORADD_FAILS in node.faults or Fault.DRIVER_BROKEN in node.faults or Fault.GPU_MISSING in node.faults

        def finish() -> None:
            if fails:
                self.set_terminated(pod, 1, outputs.VECTORADD_FAILED)
            else:
                self.set_terminated(pod, 0, outputs.VECTORADD_PASSED)
            self.set_state(uid, "done")
        self.timers.after(self.timing.workload_s, finish)

    def _run_job_pod(self, pod: dict) -> None:
        """Pods of Jobs run to completion: the chart's CRD-upgrade hook runs the real manage-crds
        (lab/twin/hook_jobs.py); others (the NFD prune hook) just complete."""
        uid = pod["metadata"]["uid"]
        self.set_running(pod, ready=True)
        real = hook_jobs.real_program(pod)

        def finish() -> None:
            code, out = hook_jobs.run(self.paths, self.core, pod) if real else (0, "")
            self.set_terminated(pod, code, out)
            self.set_state(uid, "done")
        if real:
            self.submit(finish)
        else:
            self.timers.after(self.timing.workload_s, finish)

    # ----------------------------------------------------------------- the operator (a real process)
    def _operator_changed(self, state: State) -> None:
        """The supervised operator process started, stopped, crashed or answered its probe: its pod shows it."""
        with self.lock:
            pods = list(self.operator_pods.values())
        for pod in pods:
            self.submit(lambda p=pod: self._show_operator(p))

    def start_operator_pod(self, pod: dict) -> None:
        with self.lock:
            self.operator_pods[pod["metadata"]["uid"]] = pod
        self.set_state(pod["metadata"]["uid"], "running")
        self._show_operator(pod)

    def _show_operator(self, pod: dict) -> None:
        """Ready exactly while the real process runs and its readiness probe answers; a crash is a restart
        of the container (CrashLoopBackOff while it is backing off), as kubelet reports it."""
        if not self.alive(pod):
            return
        st = self.operator.status()
        tag = podspec.image_tag(podspec.container(pod, operands.OPERATOR_APP))
        if st["version"] != tag or st["error"]:
            why = st["error"] or f"the lab runs gpu-operator {st['version']}, this pod's image is {tag}"
            self.set_running(pod, ready=False, restarts=st["restarts"],
                             waiting={"reason": "CrashLoopBackOff", "message": why})
        elif st["pid"] is None:
            self.set_running(pod, ready=False, restarts=st["restarts"], waiting={
                "reason": "CrashLoopBackOff",
                "message": f"back-off restarting failed container gpu-operator ({st['last_exit']})"})
        else:
            self.set_running(pod, ready=bool(st["healthy"]), restarts=st["restarts"])

    # ----------------------------------------------------------------- NFD worker
    # ----------------------------------------------------------------- the DRA kubelet plugin
    # ----------------------------------------------------------------- operands
    def crashloop(self, pod: dict, message: str) -> None:
        self.write_logs(pod, message + "\n")
        self.set_running(pod, ready=False, restarts=3,
                         waiting={"reason": "CrashLoopBackOff",
                                  "message": f"back-off 40s restarting failed container: {message}"})
        self.set_state(pod["metadata"]["uid"], "crashloop")

    # ----------------------------------------------------------------- hosts -> nodes
    def _watch_hosts(self) -> None:
        """containerd restarts happen on the hosts (`snap restart k8s.containerd`); reflect them."""
        while True:
            for name in self.nodes:
                f = self.host_root(name) / ".twin" / "containerd.json"
                try:
                    mtime = f.stat().st_mtime
                except FileNotFoundError:
                    continue
                if self.runtime_seen.get(name) == mtime:
                    continue
                self.runtime_seen[name] = mtime
                self.submit(lambda n=name: self._runtime_changed(n))
            time.sleep(0.2)

    def _runtime_changed(self, node: str) -> None:
        st = self._runtime(node)
        obj = self.informers["nodes"].get(f"/{node}")
        if obj is None:
            return
        annotations = obj["metadata"].get("annotations") or {}
        if st.get("running", True):
            if RUNTIME_DOWN_ANNOTATION in annotations:
                sent(self.core.patch_node(node, {"metadata": {"annotations": {RUNTIME_DOWN_ANNOTATION: None}}},
                                          _preload_content=False))
            else:
                # What kubelet does when its runtime comes back: post a fresh Ready status.
                t = now()
                sent(self.core.patch_node_status(node, {"status": {"conditions": [{
                    "type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "kubelet is posting ready status", "lastHeartbeatTime": t}]}}, _preload_content=False))
            self.record("containerd-restarted", node=node, runtimes=st.get("runtimes"))
        else:
            message = f"container runtime is down: {st.get('error')}"
            if annotations.get(RUNTIME_DOWN_ANNOTATION) != message:
                sent(self.core.patch_node(node, {"metadata": {"annotations": {RUNTIME_DOWN_ANNOTATION: message}}},
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
