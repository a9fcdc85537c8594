"""The lab is a real control plane: version, RBAC, audit log, the real chart, nodes, scheduling, down."""

from __future__ import annotations

import time

import psutil
import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from lab import cluster, controlplane, versions
from lab.state import LabPaths

pytestmark = pytest.mark.lab


def test_version_reports_the_pinned_kubernetes_version(lab):
    info = client.VersionApi(lab.api()).get_code()
    assert info.git_version == versions.K8S_VERSION
    assert info.minor == versions.K8S_VERSION.split(".")[1]


def test_user_without_rbac_rights_is_denied(lab):
    nobody = client.CoreV1Api(lab.api("no_rights_kubeconfig"))
    with pytest.raises(ApiException) as err:
        nobody.list_namespaced_pod("default")
    assert err.value.status == 403
    assert "lab:no-rights" in err.value.body


def test_audit_log_records_user_and_verb(lab, test_namespace):
    suite = client.CoreV1Api(lab.api("kubeconfig"))
    name = f"audit-probe-{int(time.time() * 1000)}"
    suite.create_namespaced_config_map(test_namespace, {"metadata": {"name": name}, "data": {"k": "v"}})
    deadline = time.monotonic() + 60  # bounded generously: the audit log is flushed late on a busy machine
    found = []
    while time.monotonic() < deadline and not found:
        found = [e for e in lab.audit_events()
                 if e.get("objectRef", {}).get("name") == name and e.get("verb") == "create"
                 and e.get("stage") == "ResponseComplete"]
        time.sleep(0.2)
    assert found, f"no audit event for the create of configmap {name}"
    event = found[0]
    assert event["user"]["username"] == lab.status["suite_user"]
    assert event["objectRef"]["resource"] == "configmaps"
    assert event["level"] == "Metadata"
    assert "requestObject" not in event  # Metadata level: no bodies (no secrets) in the log


def test_lab_components_use_their_own_identities(lab):
    users = {e["user"]["username"] for e in lab.audit_events()}
    assert "system:kube-scheduler" in users
    assert "lab:kwok" in users
    assert lab.status["suite_user"] not in set(lab.status["lab_users"].values())


def test_nodes_from_the_spec_are_ready_with_labels_and_capacity(lab):
    nodes = {n.metadata.name: n for n in lab.core.list_node().items}
    for spec_node in lab.status["nodes"]:
        node = nodes[spec_node["name"]]
        ready = [c for c in node.status.conditions if c.type == "Ready"]
        assert ready and ready[0].status == "True", f"{spec_node['name']} not Ready: {ready}"
        assert node.metadata.labels["kubernetes.io/hostname"] == spec_node["name"]
        assert node.status.capacity["pods"] == "110"
        has_pci = node.metadata.labels.get("feature.node.kubernetes.io/pci-10de.present") == "true"
        assert has_pci == (spec_node["gpus"] > 0)
        if spec_node["control_plane"]:
            assert "node-role.kubernetes.io/control-plane" in node.metadata.labels


def test_deployment_pods_are_scheduled_and_running(lab, test_namespace):
    apps = client.AppsV1Api(lab.api())
    apps.create_namespaced_deployment(test_namespace, {
        "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}},
    })
    core = lab.core
    w = watch.Watch()
    running: dict[str, str] = {}
    for ev in w.stream(core.list_namespaced_pod, test_namespace, timeout_seconds=30):
        pod = ev["object"]
        if pod.status.phase == "Running" and pod.spec.node_name:
            running[pod.metadata.name] = pod.spec.node_name
        if len(running) == 3:
            w.stop()
    assert len(running) == 3, f"pods running: {running}"
    node_names = {n["name"] for n in lab.status["nodes"]}
    assert set(running.values()) <= node_names
    dep = apps.read_namespaced_deployment("web", test_namespace)
    deadline = time.monotonic() + 120  # returns as soon as the replicas are available
    while (dep.status.available_replicas or 0) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
        dep = apps.read_namespaced_deployment("web", test_namespace)
    assert dep.status.available_replicas == 3


@pytest.mark.slow
def test_real_chart_installs_creates_cluster_policy_and_upgrades(lab_factory):
    sub = lab_factory({"nodes": [{"name": "cp-1", "control_plane": True}, {"name": "gpu-x", "gpus": 1}]}, "chart")
    sub.install_operator("v26.3.0")
    ext = client.ApiextensionsV1Api(sub.api())
    assert ext.read_custom_resource_definition("clusterpolicies.nvidia.com").spec.group == "nvidia.com"
    custom = client.CustomObjectsApi(sub.api())
    cp = custom.get_cluster_custom_object("nvidia.com", "v1", "clusterpolicies", "cluster-policy")
    assert cp["spec"]["driver"]["enabled"] is False
    status = sub.helm("status", "gpu-operator", "-n", "gpu-operator", "-o", "json").stdout
    assert '"version":"v26.3.0"' in status.replace(" ", "") or "v26.3.0" in status
    sub.install_operator("v26.7.0")
    listing = sub.helm("list", "-n", "gpu-operator", "-o", "json").stdout
    assert "gpu-operator-v26.7.0" in listing, listing
    cp = custom.get_cluster_custom_object("nvidia.com", "v1", "clusterpolicies", "cluster-policy")
    assert cp["metadata"]["name"] == "cluster-policy"


@pytest.mark.slow
def test_lab_down_leaves_no_process_and_no_listening_port(tmp_path):
    from tests.conftest import start_lab

    spec = tmp_path / "spec.yaml"
    spec.write_text("nodes:\n  - name: solo\n    gpus: 0\n")
    handle = start_lab(spec, tmp_path / "state")
    paths: LabPaths = handle.paths
    ports = controlplane_ports = set(__import__("json").loads(paths.ports_file.read_text()).values())
    pids = [p for p in handle.status["processes"].values() if p]
    assert len(pids) == len(cluster.ALL_PROCESSES)
    listening = {c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    assert ports & listening, "the lab should listen on its ports while up"
    cluster.down(paths)
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, pid
    listening = {c.laddr.port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
    assert not (controlplane_ports & listening), f"still listening: {controlplane_ports & listening}"
    assert controlplane is not None
