"""The real NVIDIA GPU Operator controller in the lab: run for the chart release by the twin's supervisor
with its own identity, it labels exactly the GPU nodes (from the chart's NFD worker's labels), respects an
existing gpu.deploy.<operand>=false, creates the operand DaemonSets, RuntimeClasses and the DCGM Service,
and moves ClusterPolicy to ready only once every operand is ready. Its pod shows the process."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client, watch

from lab import cluster, pki
from provision.hosts.access import HostAccess
from provision.hosts.guard import WRITE_GUARD
from provision.hosts.spec import HostSpec
from tests.conftest import Lab, start_lab

pytestmark = [pytest.mark.lab, pytest.mark.slow]

NS = "gpu-operator"
GPU_NODES = ("gpu-a", "gpu-b")
DEPLOY = "nvidia.com/gpu.deploy."
OPERANDS = ("nvidia-container-toolkit-daemonset", "nvidia-device-plugin-daemonset", "nvidia-dcgm-exporter",
            "gpu-feature-discovery", "nvidia-operator-validator")
SNAP = "/var/lib/k8s-containerd/k8s-containerd"


def _spec() -> dict:
    return {"nodes": [
        {"name": "cp-1", "control_plane": True, "gpus": 0},
        {"name": "gpu-a", "gpus": 1, "nfd": "chart"},     # only the chart's NFD worker labels it
        {"name": "gpu-b", "gpus": 1, "labels": {DEPLOY + "dcgm-exporter": "false"}},
        {"name": "cpu-1", "gpus": 0, "nfd": "chart"},
    ]}


def _values() -> list[str]:
    env = {"CONTAINERD_CONFIG": f"{SNAP}/etc/containerd/config.toml",
           "CONTAINERD_SOCKET": f"{SNAP}/run/containerd/containerd.sock",
           "RUNTIME_DROP_IN_CONFIG": f"{SNAP}/etc/containerd/conf.d/99-nvidia.toml",
           "RUNTIME_CONFIG_SOURCE": "file",
           # as the suite installs it: the toolkit does not restart containerd itself (the test does, below), so
           # the operands wait for the nvidia runtime and the ClusterPolicy's notReady phase is certain
           "RUNTIME_RESTART_MODE": "none"}
    args: list[str] = []
    for i, (k, v) in enumerate(env.items()):
        args += ["--set", f"toolkit.env[{i}].name={k}", "--set-string", f"toolkit.env[{i}].value={v}"]
    return args


def _cp(lab: Lab) -> dict:
    return client.CustomObjectsApi(lab.api()).get_cluster_custom_object("nvidia.com", "v1", "clusterpolicies",
                                                                        "cluster-policy")


def _wait_nodes(lab: Lab, what: str, done, timeout: float = 180) -> dict[str, client.V1Node]:
    core = lab.core
    lst = core.list_node()
    objs = {n.metadata.name: n for n in lst.items}
    deadline = time.monotonic() + timeout
    while not done(objs):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: " + json.dumps(
                {n: o.metadata.labels for n, o in objs.items()}, indent=1))
        for ev in watch.Watch().stream(core.list_node, resource_version=lst.metadata.resource_version,
                                       timeout_seconds=5):
            objs[ev["object"].metadata.name] = ev["object"]
            if done(objs):
                break
        lst = core.list_node()
        objs = {n.metadata.name: n for n in lst.items}
    return objs


def _wait(what: str, fn, timeout: float = 180, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


@pytest.fixture(scope="module")
def op_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    folder = tmp_path_factory.mktemp("real-operator")
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump(_spec()))
    lab = start_lab(spec, folder / "state")
    try:
        assert cluster.status(lab.paths)["operator"] is None, "no release installed: no operator runs"
        lab.install_operator("v26.3.0", *_values())
        yield lab
    finally:
        cluster.down(lab.paths)


def test_the_operator_runs_as_its_own_identity_for_the_installed_chart(op_lab: Lab):
    st = _wait("the operator process", lambda: (cluster.status(op_lab.paths)["operator"] or {}).get("pid")
               and cluster.status(op_lab.paths)["operator"])
    assert st["version"] == "v26.3.0"
    assert os.path.exists(f"/proc/{st['pid']}")
    assert st["log"].endswith("logs/gpu-operator.log")
    log = _wait("the operator's log to show reconciling", lambda: (
        t if "ClusterPolicy" in (t := Path(st["log"]).read_text()) else None))
    assert "--- lab: starting gpu-operator v26.3.0" in log
    # Its rights are the chart's: the bindings mirrored for lab:gpu-operator point at the chart's roles.
    rbac = client.RbacAuthorizationV1Api(op_lab.api())
    mirrored = [b for b in rbac.list_cluster_role_binding().items
                if any(s.name == pki.OPERATOR.user for s in b.subjects or [])]
    assert mirrored and all(b.role_ref.name != "cluster-admin" for b in mirrored), \
        [(b.metadata.name, b.role_ref.name) for b in mirrored]
    # The chart's operator pod is Ready while the real process is up and its probe answers.
    pod = op_lab.core.list_namespaced_pod(NS, label_selector="app=gpu-operator").items[0]
    assert any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


def test_nfd_worker_labels_then_the_operator_labels_exactly_the_gpu_nodes(op_lab: Lab):
    nodes = _wait_nodes(op_lab, "GPU nodes labelled by the operator", lambda ns: all(
        (ns[n].metadata.labels or {}).get("nvidia.com/gpu.present") == "true" for n in GPU_NODES))
    for name in ("cp-1", "cpu-1"):
        labels = nodes[name].metadata.labels or {}
        assert not any(k.startswith("nvidia.com/") for k in labels), (name, labels)
    # cpu-1 was labelled by the chart's NFD worker (os, kernel) but has no NVIDIA PCI device.
    cpu = nodes["cpu-1"].metadata.labels
    assert cpu["feature.node.kubernetes.io/system-os_release.ID"] == "ubuntu"
    assert "feature.node.kubernetes.io/pci-10de.present" not in cpu
    for name in GPU_NODES:
        labels = nodes[name].metadata.labels
        for operand in ("container-toolkit", "device-plugin", "gpu-feature-discovery", "operator-validator"):
            assert labels.get(DEPLOY + operand) == "true", (name, operand, labels)
    assert nodes["gpu-a"].metadata.labels[DEPLOY + "dcgm-exporter"] == "true"
    assert nodes["gpu-b"].metadata.labels[DEPLOY + "dcgm-exporter"] == "false", "an existing =false is kept"


def test_the_operator_creates_its_objects_with_its_identity(op_lab: Lab):
    apps = client.AppsV1Api(op_lab.api())
    names = _wait("the operand DaemonSets", lambda: (
        d if set(OPERANDS) <= set(d := {x.metadata.name: x for x in apps.list_namespaced_daemon_set(NS).items})
        else None))
    for name in OPERANDS:
        assert names[name].spec.selector.match_labels["app"] == name
    dcgm = op_lab.core.list_namespaced_pod(NS, label_selector="app=nvidia-dcgm-exporter").items
    assert {p.spec.node_name for p in dcgm} <= {"gpu-a"}, "not on gpu-b (deploy label false)"
    rcs = {r.metadata.name: r.handler for r in client.NodeV1Api(op_lab.api()).list_runtime_class().items}
    assert rcs.get("nvidia") == "nvidia", rcs
    svc = op_lab.core.read_namespaced_service("nvidia-dcgm-exporter", NS)
    assert 9400 in [p.port for p in svc.spec.ports]
    created = [e for e in op_lab.audit_events() if e.get("verb") == "create"
               and (e.get("objectRef") or {}).get("resource") == "daemonsets"
               and (e.get("objectRef") or {}).get("name") in OPERANDS and e.get("responseStatus", {}).get("code") == 201]
    assert {e["objectRef"]["name"] for e in created} == set(OPERANDS), created
    assert {e["user"]["username"] for e in created} == {pki.OPERATOR.user}
    assert all(e["userAgent"].startswith("gpu-operator/") for e in created), {e["userAgent"] for e in created}


def test_cluster_policy_is_ready_only_after_every_operand(op_lab: Lab):
    """The operands wait for the nvidia runtime (restart mode none): the operator says notReady, naming the
    states. Once each node's containerd is restarted with the toolkit's drop-in they start, and every `ready`
    seen from then on comes with every operand DaemonSet ready."""
    apps = client.AppsV1Api(op_lab.api())
    seen: list[tuple[str, bool]] = []

    def not_ready_message() -> str | None:
        st = _cp(op_lab).get("status") or {}
        return next((c["message"] for c in st.get("conditions") or [] if st.get("state") == "notReady"
                     and c.get("type") == "Error" and "states not ready" in (c.get("message") or "")), None)

    msg = _wait("ClusterPolicy notReady with the operands it waits for", not_ready_message, timeout=120)
    assert "state-device-plugin" in msg, msg
    for name in GPU_NODES:
        dropin = op_lab.host_root(name) / f"{SNAP.lstrip('/')}/etc/containerd/conf.d/99-nvidia.toml"
        _wait(f"the toolkit's drop-in on {name}", dropin.exists)
        with WRITE_GUARD.allow("test"):
            HostAccess(HostSpec(backend="lab", root=str(op_lab.host_root(name))), name=name).run(
                ["snap", "restart", "k8s.containerd"], check=True, mutates=True)

    def ready_now() -> bool:
        state = (_cp(op_lab).get("status") or {}).get("state")
        dss = {d.metadata.name: d.status for d in apps.list_namespaced_daemon_set(NS).items}
        all_ready = set(OPERANDS) <= set(dss) and all(
            dss[n].number_ready == dss[n].desired_number_scheduled > 0 for n in OPERANDS)
        seen.append((state, all_ready))
        return state == "ready" and all_ready

    _wait("ClusterPolicy ready", ready_now, timeout=240, every=0.3)
    # Right after a fresh install the real operator may report `ready` once: isDaemonSetReady counts a
    # DaemonSet whose status.desiredNumberScheduled is still 0 (not yet counted by the DaemonSet controller) as
    # ready. From the first notReady on, `ready` comes only with every operand ready.
    after = seen[next((i for i, (st, _) in enumerate(seen) if st == "notReady"), 0):]
    assert all(ok for state, ok in after if state == "ready"), "ready while an operand was not: " + str(seen)


def test_the_dcgm_exporter_answers_through_the_apiservers_pod_proxy(op_lab: Lab):
    """The suite's default DCGM path (--dcgm-access proxy): the apiserver proxies only to global unicast pod IPs;
    the lab's pods have addresses of its own block of 198.18.0.0/15 (lab/podnet.py), so the real apiserver
    forwards the suite identity's GET to the twin's exporter of that pod."""
    import ipaddress

    net = op_lab.status["pod_network"]
    if not net["proxyable"]:
        pytest.skip(net["why"])
    pod = _wait("the DCGM exporter pod running with its IP", lambda: next(
        (p for p in op_lab.core.list_namespaced_pod(NS, label_selector="app=nvidia-dcgm-exporter").items
         if p.status.pod_ip and p.status.phase == "Running"), None))
    assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(net["cidr"]), (pod.status.pod_ip, net)
    suite = client.CoreV1Api(op_lab.api("kubeconfig"))
    body = _wait("metrics through the pod proxy", lambda: suite.connect_get_namespaced_pod_proxy_with_path(
        f"{pod.metadata.name}:9400", NS, "metrics"), timeout=60)
    assert "DCGM_FI_DEV_GPU_TEMP{" in body and 'Hostname="gpu-a"' in body, body[:400]
    proxied = [e for e in op_lab.audit_events() if (e.get("objectRef") or {}).get("subresource") == "proxy"
               and e["user"]["username"] == op_lab.status["suite_user"]]
    assert proxied and all(e.get("responseStatus", {}).get("code") == 200 for e in proxied
                           if e.get("stage") == "ResponseComplete"), proxied[-1:]


def test_a_crash_of_the_operator_is_a_restart_of_its_pod(op_lab: Lab):
    before = cluster.status(op_lab.paths)["operator"]
    os.kill(before["pid"], signal.SIGKILL)

    def restarted():
        pod = op_lab.core.list_namespaced_pod(NS, label_selector="app=gpu-operator").items[0]
        st = pod.status.container_statuses[0]
        now = cluster.status(op_lab.paths)["operator"]
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)
        return st.restart_count >= 1 and ready and now["pid"] not in (None, before["pid"])

    _wait("the operator pod to show a restart and be Ready again", restarted, timeout=120)


def test_helm_uninstall_stops_the_operator(op_lab: Lab):
    pid = cluster.status(op_lab.paths)["operator"]["pid"]
    op_lab.helm("uninstall", "gpu-operator", "-n", NS, "--wait", "--timeout", "2m")
    _wait("the operator to stop with its release", lambda: cluster.status(op_lab.paths)["operator"] is None,
          timeout=60)
    _wait(f"process {pid} to exit", lambda: not os.path.exists(f"/proc/{pid}") or
          Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", timeout=30)
    rbac = client.RbacAuthorizationV1Api(op_lab.api())
    assert not [b.metadata.name for b in rbac.list_cluster_role_binding().items
                if any(s.name == pki.OPERATOR.user for s in b.subjects or [])], "its mirrored rights go too"
