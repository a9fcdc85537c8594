"""The GPU twin, exercised through the Kubernetes API and the host views with the real chart installed:
operands on GPU nodes only, time-slicing taking effect only after the plugin restart, workloads, DCGM,
and every fault producing exactly its effect on its own node."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client, watch

from lab import cluster
from lab.spec import Fault
from provision.converge.cluster import plugin_not_rendered
from provision.hosts.access import HostAccess
from provision.hosts.guard import WRITE_GUARD
from provision.hosts.spec import HostSpec
from provision.observe import dcgm, nvidia_smi
from tests.conftest import Lab, start_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]

FAULT_NODES = {
    "ok-1": [], "f-missing": [Fault.GPU_MISSING], "f-driver": [Fault.DRIVER_BROKEN], "f-plugin": [Fault.DEVICE_PLUGIN_CRASH],
    "f-dcgm": [Fault.DCGM_DOWN], "f-vector": [Fault.VECTORADD_FAILS], "f-slow": [Fault.SLOW_ADVERTISE],
    "f-breaks": [Fault.CONTAINERD_BREAKS], "f-version": [Fault.DROPIN_VERSION_TOO_HIGH],
}
NS = "gpu-operator"
GPU = "nvidia.com/gpu"


def _spec() -> dict:
    nodes: list[dict] = [{"name": "cp-1", "control_plane": True, "gpus": 0}]
    for name, faults in FAULT_NODES.items():
        node: dict = {"name": name, "gpus": 1, "faults": faults}
        if name == "f-version":
            node["k8s_snap_track"] = "1.35"  # containerd 2.1 refuses a version 4 drop-in (2.3 accepts it)
        nodes.append(node)
    return {"nodes": nodes, "timing": {"slow_advertise_s": 2.0}}


def _host(lab: Lab, node: str) -> HostAccess:
    return HostAccess(HostSpec(backend="lab", root=str(lab.host_root(node))), name=node)


def _k8s_snap_values() -> list[str]:
    base = "/var/lib/k8s-containerd/k8s-containerd"
    env = {"CONTAINERD_CONFIG": f"{base}/etc/containerd/config.toml",
           "CONTAINERD_SOCKET": f"{base}/run/containerd/containerd.sock",
           "RUNTIME_DROP_IN_CONFIG": f"{base}/etc/containerd/conf.d/99-nvidia.toml",
           "RUNTIME_CONFIG_SOURCE": "file"}
    args: list[str] = []
    for i, (k, v) in enumerate(env.items()):
        args += ["--set", f"toolkit.env[{i}].name={k}", "--set-string", f"toolkit.env[{i}].value={v}"]
    return args


def _wait(core: client.CoreV1Api, what: str, done, timeout: float = 60, **kw) -> dict:
    lst = core.list_node(**kw)
    objs = {n.metadata.name: n for n in lst.items}
    if done(objs):
        return objs
    w = watch.Watch()
    for ev in w.stream(core.list_node, resource_version=lst.metadata.resource_version, timeout_seconds=int(timeout), **kw):
        objs[ev["object"].metadata.name] = ev["object"]
        if done(objs):
            w.stop()
            return objs
    raise AssertionError(f"timed out waiting for {what}")


def _camel(obj) -> dict:
    """A client model as the API's JSON (camelCase), as the suite's pure functions read objects."""
    return client.ApiClient().sanitize_for_serialization(obj)


def _alloc(node: client.V1Node) -> int:
    return int((node.status.allocatable or {}).get(GPU, "0"))


@pytest.fixture(scope="module")
def faulty_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    folder = tmp_path_factory.mktemp("twin")
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump(_spec()))
    lab = start_lab(spec, folder / "state")
    try:
        lab.install_operator("v26.3.0", *_k8s_snap_values())
        # What provisioning does by hand here: restart containerd on each node once the toolkit wrote its drop-in.
        for name in FAULT_NODES:
            dropin = lab.host_root(name) / "var/lib/k8s-containerd/k8s-containerd/etc/containerd/conf.d/99-nvidia.toml"
            deadline = time.monotonic() + 180  # generous: CI machines are small and may be busy
            while not dropin.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert dropin.exists(), f"toolkit did not write {dropin}"
            with WRITE_GUARD.allow("test"):
                _host(lab, name).run(["snap", "restart", "k8s.containerd"], check=True, mutates=True)
        yield lab
    finally:
        cluster.down(lab.paths)


OPERAND_DAEMONSETS = ("nvidia-container-toolkit-daemonset", "nvidia-device-plugin-daemonset", "nvidia-dcgm-exporter",
                      "gpu-feature-discovery", "nvidia-operator-validator")


def _daemonsets(lab: Lab, timeout: float = 120) -> dict[str, client.V1DaemonSet]:
    """The operand DaemonSets, once the real operator has created all of them (it does so state by state)."""
    apps = client.AppsV1Api(lab.api())
    deadline = time.monotonic() + timeout
    while True:
        names = {d.metadata.name: d for d in apps.list_namespaced_daemon_set(NS).items}
        if set(OPERAND_DAEMONSETS) <= set(names) or time.monotonic() > deadline:
            return names
        time.sleep(0.5)


def test_operand_daemonsets_run_on_gpu_nodes_only(faulty_lab: Lab):
    names = _daemonsets(faulty_lab)
    for ds in OPERAND_DAEMONSETS:
        assert ds in names, f"{ds} missing; have {sorted(names)}"
        assert names[ds].spec.selector.match_labels["app"] == ds
    pods = faulty_lab.core.list_namespaced_pod(NS, label_selector="app=nvidia-container-toolkit-daemonset").items
    assert {p.spec.node_name for p in pods} == set(FAULT_NODES)
    cp = faulty_lab.core.read_node("cp-1")
    assert "nvidia.com/gpu.present" not in (cp.metadata.labels or {})
    rcs = {r.metadata.name: r.handler for r in client.NodeV1Api(faulty_lab.api()).list_runtime_class().items}
    assert rcs["nvidia"] == "nvidia" and "nvidia-cdi" in rcs  # chart default: CDI on
    svc = faulty_lab.core.read_namespaced_service("nvidia-dcgm-exporter", NS)
    assert [p.port for p in svc.spec.ports] == [9400]


def test_containerd_faults_take_their_node_down_and_only_it(faulty_lab: Lab):
    nodes = _wait(faulty_lab.core, "f-breaks and f-version NotReady",
                  lambda ns: all(not _ready(ns[n]) for n in ("f-breaks", "f-version")))
    msg = _ready_message(nodes["f-breaks"])
    assert 'no corresponding runtime configured in `containerd.runtimes` for `containerd` `default_runtime_name = "runc"' in msg
    assert "expected containerd config version equal to or less than `3`, got `4`" in _ready_message(nodes["f-version"])
    healthy = set(FAULT_NODES) - {"f-breaks", "f-version"}
    assert all(_ready(nodes[n]) for n in healthy), {n: _ready_message(nodes[n]) for n in healthy}


def _ready(node: client.V1Node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def _ready_message(node: client.V1Node) -> str:
    return next((c.message or "" for c in node.status.conditions or [] if c.type == "Ready"), "")


def _restart_plugin_on(lab: Lab, node: str) -> None:
    for pod in lab.core.list_namespaced_pod(NS, label_selector="app=nvidia-device-plugin-daemonset",
                                            field_selector=f"spec.nodeName={node}").items:
        lab.core.delete_namespaced_pod(pod.metadata.name, NS)


def test_time_slicing_applies_only_after_the_device_plugin_restarts(faulty_lab: Lab):
    """Setting devicePlugin.config on the ClusterPolicy makes the real operator render the device plugin
    DaemonSet anew (config manager, the ConfigMap volume). Its rolling update stalls behind the faulty nodes'
    pods that never become ready (maxUnavailable), so a node gets the config when its plugin pod is replaced
    from the new template. A later change of the ConfigMap's content reaches a node only when its plugin
    restarts."""
    core = faulty_lab.core
    before = _wait(core, "ok-1 advertising its GPU, labelled by GFD", lambda ns: _alloc(ns["ok-1"]) == 1
                   and "nvidia.com/gpu.product" in (ns["ok-1"].metadata.labels or {}))
    assert before["ok-1"].metadata.labels.get("nvidia.com/gpu.product") == "NVIDIA-H200"

    def config(replicas: int) -> dict:
        return {"any": yaml.safe_dump({"version": "v1", "sharing": {"timeSlicing": {
            "resources": [{"name": GPU, "replicas": replicas}]}}})}

    core.create_namespaced_config_map(NS, {"metadata": {"name": "time-slicing-config"}, "data": config(4)})
    client.CustomObjectsApi(faulty_lab.api()).patch_cluster_custom_object(
        "nvidia.com", "v1", "clusterpolicies", "cluster-policy",
        {"spec": {"devicePlugin": {"config": {"name": "time-slicing-config", "default": "any"}}}})
    apps = client.AppsV1Api(faulty_lab.api())
    deadline = time.monotonic() + 120
    while plugin_not_rendered(_camel(apps.read_namespaced_daemon_set("nvidia-device-plugin-daemonset", NS)),
                              "time-slicing-config", "any"):
        assert time.monotonic() < deadline, "the operator did not render the plugin DaemonSet for the config"
        time.sleep(0.5)
    _restart_plugin_on(faulty_lab, "ok-1")
    _wait(core, "ok-1 at 4 after its plugin restarted from the new template", lambda ns: _alloc(ns["ok-1"]) == 4)
    core.patch_namespaced_config_map("time-slicing-config", NS, {"data": config(2)})
    time.sleep(1.5)  # longer than the plugin's start time: nothing may change without a restart
    assert _alloc(core.read_node("ok-1")) == 4
    _restart_plugin_on(faulty_lab, "ok-1")
    nodes = _wait(core, "ok-1 at 2 after the restart", lambda ns: _alloc(ns["ok-1"]) == 2)
    labels = nodes["ok-1"].metadata.labels
    assert labels["nvidia.com/gpu.replicas"] == "2" and labels["nvidia.com/gpu.count"] == "1"
    assert labels["nvidia.com/gpu.product"] == "NVIDIA-H200-SHARED"
    assert labels["nvidia.com/gpu.sharing-strategy"] == "time-slicing"


def test_replicas_below_two_is_a_plugin_error_and_no_sharing(faulty_lab: Lab):
    """A config chosen through the node label with replicas 1: the plugin logs the error and shares nothing."""
    core = faulty_lab.core
    one = yaml.safe_dump({"version": "v1", "sharing": {"timeSlicing": {"resources": [{"name": GPU, "replicas": 1}]}}})
    core.patch_namespaced_config_map("time-slicing-config", NS, {"data": {"one": one}})
    core.patch_node("f-slow", {"metadata": {"labels": {"nvidia.com/device-plugin.config": "one"}}})
    selector = {"label_selector": "app=nvidia-device-plugin-daemonset", "field_selector": "spec.nodeName=f-slow"}
    old = {p.metadata.name for p in core.list_namespaced_pod(NS, **selector).items}
    _restart_plugin_on(faulty_lab, "f-slow")
    plugin = []
    for ev in watch.Watch().stream(core.list_namespaced_pod, NS, timeout_seconds=30, **selector):
        pod = ev["object"]
        if pod.metadata.name not in old and pod.status.container_statuses and pod.status.container_statuses[0].ready:
            plugin = [pod]
            break
    assert plugin, "no new device-plugin pod became ready on f-slow"
    nodes = _wait(core, "f-slow advertising its one GPU unshared", lambda ns: _alloc(ns["f-slow"]) == 1
                  and ns["f-slow"].metadata.labels.get("nvidia.com/gpu.sharing-strategy") == "none")
    assert nodes["f-slow"].metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H200"
    log = core.read_namespaced_pod_log(plugin[0].metadata.name, NS, container="nvidia-device-plugin")
    assert "number of replicas must be >= 2" in log
    missing = core.list_namespaced_pod(NS, label_selector="app=nvidia-device-plugin-daemonset",
                                       field_selector="spec.nodeName=f-missing").items
    assert "No devices found" in core.read_namespaced_pod_log(missing[0].metadata.name, NS)


def test_faults_affect_only_their_node(faulty_lab: Lab):
    core = faulty_lab.core
    nodes = _wait(core, "healthy nodes advertising", lambda ns: all(
        _alloc(ns[n]) >= 1 for n in ("ok-1", "f-dcgm", "f-vector", "f-slow")), timeout=60)
    assert _alloc(nodes["f-missing"]) == 0
    assert _alloc(nodes["f-plugin"]) == 0
    assert _alloc(nodes["f-driver"]) == 0
    plugin_pods = {p.spec.node_name: p for p in core.list_namespaced_pod(
        NS, label_selector="app=nvidia-device-plugin-daemonset").items}
    waiting = plugin_pods["f-plugin"].status.container_statuses[0].state.waiting
    assert waiting is not None and waiting.reason == "CrashLoopBackOff"
    assert plugin_pods["ok-1"].status.container_statuses[0].ready
    # nvidia-smi through the host layer: real output on healthy nodes, the real failures on faulty ones.
    ok = _host(faulty_lab, "ok-1").run(nvidia_smi.query_argv())
    assert ok.rc == 0 and len(nvidia_smi.parse_query_csv(ok.stdout)) == 1
    broken = _host(faulty_lab, "f-driver").run(nvidia_smi.query_argv())
    finding = nvidia_smi.classify_failure(broken.rc, broken.stdout, broken.stderr)
    assert broken.rc == 9 and finding is not None and finding.kind == "driver-not-loaded"
    missing = _host(faulty_lab, "f-missing").run(nvidia_smi.query_argv())
    assert "No devices were found" in missing.stdout + missing.stderr


def test_dcgm_exporter_serves_every_gpu_and_dcgm_down_refuses(faulty_lab: Lab):
    core = faulty_lab.core
    pods = {p.spec.node_name: p for p in core.list_namespaced_pod(NS, label_selector="app=nvidia-dcgm-exporter").items}
    ip = pods["ok-1"].status.pod_ip
    with urllib.request.urlopen(f"http://{ip}:9400/metrics", timeout=5) as r:
        scrape = dcgm.parse_metrics(r.read().decode())
    smi = nvidia_smi.parse_query_csv(_host(faulty_lab, "ok-1").run(nvidia_smi.query_argv()).stdout)
    assert dcgm.missing_uuids(scrape, [g.uuid for g in smi]) == []
    assert "DCGM_FI_DEV_FB_USED" in scrape.metric_names
    down_ip = pods["f-dcgm"].status.pod_ip
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{down_ip}:9400/metrics", timeout=2)


def _run_vectoradd(lab: Lab, node: str, ns: str) -> tuple[str, int | None, str]:
    core = lab.core
    name = f"va-{node}"
    core.create_namespaced_pod(ns, {"metadata": {"name": name}, "spec": {
        "restartPolicy": "Never", "runtimeClassName": "nvidia", "nodeName": node,
        "containers": [{"name": "vectoradd", "image": "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0-ubuntu22.04",
                        "resources": {"limits": {GPU: "1"}}}]}})
    w = watch.Watch()
    pod = None
    for ev in w.stream(core.list_namespaced_pod, ns, field_selector=f"metadata.name={name}", timeout_seconds=30):
        pod = ev["object"]
        if pod.status.phase in ("Succeeded", "Failed"):
            w.stop()
    assert pod is not None
    term = pod.status.container_statuses[0].state.terminated if pod.status.container_statuses else None
    return pod.status.phase, term.exit_code if term else None, core.read_namespaced_pod_log(name, ns)


def test_workloads_pass_on_healthy_nodes_and_fail_with_the_fault(faulty_lab: Lab):
    ns = "workloads"
    faulty_lab.core.create_namespace({"metadata": {"name": ns}})
    _wait(faulty_lab.core, "GPUs advertised", lambda n: _alloc(n["ok-1"]) >= 1 and _alloc(n["f-vector"]) >= 1)
    phase, code, log = _run_vectoradd(faulty_lab, "ok-1", ns)
    assert (phase, code) == ("Succeeded", 0) and "Test PASSED" in log
    phase, code, log = _run_vectoradd(faulty_lab, "f-vector", ns)
    assert (phase, code) == ("Failed", 1) and "Failed to allocate device vector A" in log


def test_cluster_policy_is_not_ready_while_operands_fail(faulty_lab: Lab):
    cp = client.CustomObjectsApi(faulty_lab.api()).get_cluster_custom_object(
        "nvidia.com", "v1", "clusterpolicies", "cluster-policy")
    assert cp["status"]["state"] == "notReady"
    # The real operator: Ready=False (reason Error) and the Error condition names the states not ready.
    conds = {c["type"]: c for c in cp["status"]["conditions"]}
    assert conds["Ready"]["status"] == "False"
    assert "state-device-plugin" in conds["Error"]["message"], conds


def _pod_ready(pod: client.V1Pod) -> str | None:
    return next((c.status for c in pod.status.conditions or [] if c.type == "Ready"), None)


def test_a_pod_the_node_controller_marked_not_ready_is_ready_again_once_its_node_is(faulty_lab: Lab):
    """What kubelet's status sync does after a node came back from Unknown: the node controller set Ready=False on
    its pods (ContainersReady stays True) and may do so long after the node is Ready again (at 1000 nodes it did:
    400 toolkit pods and the operator's stayed unready for good, and every wait on them ran out). The twin puts
    Ready back as each such pod's update arrives."""
    core = faulty_lab.core
    deadline = time.monotonic() + 120
    while True:
        pods = core.list_namespaced_pod(NS, label_selector="app=nvidia-container-toolkit-daemonset",
                                        field_selector="spec.nodeName=ok-1").items
        if pods and _pod_ready(pods[0]) == "True":
            break
        assert time.monotonic() < deadline, f"the toolkit pod on ok-1 never got ready: {pods}"
        time.sleep(0.5)
    pod = pods[0]
    conditions = [{"type": c.type, "status": "False" if c.type == "Ready" else c.status,
                   "reason": "NodeNotReady" if c.type == "Ready" else c.reason,
                   "lastTransitionTime": c.last_transition_time} for c in pod.status.conditions]
    core.patch_namespaced_pod_status(pod.metadata.name, NS, {"status": {"conditions": conditions}})
    marked = core.read_namespaced_pod(pod.metadata.name, NS)
    assert {c.type: c.status for c in marked.status.conditions}["ContainersReady"] == "True"
    deadline = time.monotonic() + 60
    while _pod_ready(core.read_namespaced_pod(pod.metadata.name, NS)) != "True":
        assert time.monotonic() < deadline, "the twin did not put Ready back on a pod of a Ready node"
        time.sleep(0.5)
