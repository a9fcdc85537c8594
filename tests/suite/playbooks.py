"""A cluster as the original Ansible playbooks leave it (../shared/reference/original-playbooks.md), made on a lab:
their helm values, their host files (runc drop-in in /etc/containerd/conf.d, a host-driver-ready unit, daemon.json
written whole), their time-slicing profiles (ConfigMap, node labels, ClusterPolicy JSON patch) and their discovery
ConfigMap. The names the reference does not give (the unit's, the profiles') are this file's choice."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml
from kubernetes import client

from provision.hosts.access import HostAccess, HostSpec
from provision.hosts.guard import WRITE_GUARD

SNAP = "/var/lib/k8s-containerd/k8s-containerd"
VALUES = {"driver": {"enabled": False}, "toolkit": {"env": [
    {"name": "CONTAINERD_CONFIG", "value": f"{SNAP}/etc/containerd/config.toml"},
    {"name": "CONTAINERD_SOCKET", "value": f"{SNAP}/run/containerd/containerd.sock"},
    {"name": "CONTAINERD_SET_AS_DEFAULT", "value": "true"},
    {"name": "RUNTIME_DROP_IN_CONFIG_HOST_PATH", "value": f"{SNAP}/etc/containerd/conf.d"},
]}}
RUNC_DROPIN = """version = 2

[plugins."io.containerd.grpc.v1.cri".containerd]
  default_runtime_name = "runc"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = true
"""
UNIT = "nvidia-driver-validation.service"
UNIT_TEXT = """[Unit]
Description=Create NVIDIA driver validation file for GPU Operator

[Service]
Type=oneshot
ExecStart=/bin/mkdir -p /run/nvidia/validations
ExecStart=/usr/bin/touch /run/nvidia/validations/host-driver-ready
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
"""
DAEMON_JSON = {"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "runtimeArgs": []}}}
PROFILES = {"NVIDIA GB10": ("dgx-spark", 4)}   # other GPUs: "gpu", 2 replicas
CONFIG_LABEL = "nvidia.com/device-plugin.config"


def _sharing(replicas: int | None) -> str:
    doc: dict = {"version": "v1", "flags": {"migStrategy": "none"}}
    if replicas:
        doc["sharing"] = {"timeSlicing": {"renameByDefault": False, "failRequestsGreaterThanOne": False,
                                          "resources": [{"name": "nvidia.com/gpu", "replicas": replicas}]}}
    return yaml.safe_dump(doc)


def host(lab, node: str) -> HostAccess:
    return HostAccess(HostSpec(backend="lab", root=str(lab.host_root(node))), name=node)


def _wait(what: str, cond, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def install_like_playbooks(lab, gpu_nodes: dict[str, str], folder: Path) -> None:
    """gpu_nodes: node -> GPU product. Deploy (1-3), time-slicing (5) and discovery (6), as the playbooks do."""
    docker_nodes = [n["name"] for n in lab.status["nodes"] if n.get("docker")]
    for node in gpu_nodes:
        root = Path(lab.host_root(node))
        (root / "etc/containerd/conf.d").mkdir(parents=True, exist_ok=True)
        (root / "etc/containerd/conf.d/00-k8s-runc.toml").write_text(RUNC_DROPIN)
        (root / f"etc/systemd/system/{UNIT}").write_text(UNIT_TEXT)
        (root / "run/nvidia/validations").mkdir(parents=True, exist_ok=True)
        (root / "run/nvidia/validations/host-driver-ready").write_text("")
        if node in docker_nodes:
            (root / "etc/docker/daemon.json").write_text(json.dumps(DAEMON_JSON, indent=2))
    values = folder / "playbook-values.yaml"
    values.write_text(yaml.safe_dump(VALUES))
    lab.helm("repo", "add", "nvidia", lab.status["chart_repo"], "--force-update")
    lab.helm("upgrade", "--install", "gpu-operator", "nvidia/gpu-operator", "--version", "v26.3.0", "-n",
             "gpu-operator", "--create-namespace", "-f", str(values), "--wait", "--timeout", "3m")
    # "Waited for 99-nvidia.toml on each host, ran snap restart k8s.containerd" (the toolkit's default drop-in path)
    for node in gpu_nodes:
        dropin = Path(lab.host_root(node)) / "etc/containerd/conf.d/99-nvidia.toml"
        _wait(f"the playbooks' drop-in on {node}", dropin.exists)
        with WRITE_GUARD.allow("test: the playbooks restart containerd"):
            host(lab, node).run(["snap", "restart", "k8s.containerd"], check=True, mutates=True)
    api = lab.api()
    core = client.CoreV1Api(api)
    data = {"default": _sharing(None), "gpu": _sharing(2)}
    data.update({key: _sharing(r) for key, r in PROFILES.values()})
    core.create_namespaced_config_map("gpu-operator", {"metadata": {"name": "time-slicing-config"}, "data": data})
    for node, product in gpu_nodes.items():
        core.patch_node(node, {"metadata": {"labels": {CONFIG_LABEL: PROFILES.get(product, ("gpu", 2))[0]}}})
    client.CustomObjectsApi(api).patch_cluster_custom_object(
        "nvidia.com", "v1", "clusterpolicies", "cluster-policy",
        [{"op": "add", "path": "/spec/devicePlugin/config", "value": {"name": "time-slicing-config",
                                                                        "default": "default"}}],
        _content_type="application/json-patch+json")
    service = {"service": {"name": "gpu-operator", "display_name": "GPU Operator", "type": "core", "category": "ai"}}
    core.create_namespaced_config_map("gpu-operator", {"metadata": {"name": "thinkube-service-config", "labels": {
        "thinkube.io/managed": "true", "thinkube.io/service-type": "core", "thinkube.io/service-name": "gpu-operator"}},
        "data": {"service.yaml": yaml.safe_dump(service)}})
