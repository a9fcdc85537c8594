"""What the real GPU Operator creates for a ClusterPolicy: operand DaemonSets, RuntimeClasses, the
DCGM Service, and node labels. Pure functions from the ClusterPolicy spec (a dict) to manifests."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

GROUP, VERSION, PLURAL = "nvidia.com", "v1", "clusterpolicies"
CLUSTER_POLICY = "cluster-policy"
NFD_PCI_LABEL = "feature.node.kubernetes.io/pci-10de.present"
GPU_PRESENT = "nvidia.com/gpu.present"
DEPLOY = "nvidia.com/gpu.deploy."
SPEC_HASH = "lab.gpu-conformance.io/spec-hash"
DEVICE_PLUGIN_CONFIG_LABEL = "nvidia.com/device-plugin.config"


@dataclass(frozen=True)
class Operand:
    name: str          # DaemonSet name and its `app` label
    deploy: str        # suffix of the nvidia.com/gpu.deploy.<x> label
    component: str     # ClusterPolicy spec key for image and settings
    container: str
    nvidia_runtime: bool  # runs with runtimeClassName nvidia (needs the toolkit's runtime in containerd)


OPERANDS = (
    Operand("nvidia-container-toolkit-daemonset", "container-toolkit", "toolkit", "nvidia-container-toolkit-ctr",
            False),
    Operand("nvidia-device-plugin-daemonset", "device-plugin", "devicePlugin", "nvidia-device-plugin", True),
    Operand("nvidia-dcgm-exporter", "dcgm-exporter", "dcgmExporter", "nvidia-dcgm-exporter", True),
    Operand("gpu-feature-discovery", "gpu-feature-discovery", "gfd", "gpu-feature-discovery", True),
    Operand("nvidia-operator-validator", "operator-validator", "validator", "nvidia-operator-validator", True),
)
DRIVER = Operand("nvidia-driver-daemonset", "driver", "driver", "nvidia-driver-ctr", False)
# Labelled like the operator does, but no DaemonSet of their own in the lab.
EXTRA_DEPLOY_LABELS = ("dcgm", "node-status-exporter")
BY_APP = {o.name: o for o in (*OPERANDS, DRIVER)}


def _get(d: dict, *path: str, default=None):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def driver_enabled(spec: dict) -> bool:
    return bool(_get(spec, "driver", "enabled", default=True))


def cdi_enabled(spec: dict) -> bool:
    return bool(_get(spec, "cdi", "enabled", default=False))


def toolkit_env(spec: dict) -> dict[str, str]:
    """The toolkit's effective environment, as the operator sets it on the toolkit container."""
    env = {e["name"]: str(e.get("value", "")) for e in (_get(spec, "toolkit", "env", default=[]) or [])}
    if cdi_enabled(spec):
        env["NVIDIA_RUNTIME_SET_AS_DEFAULT"] = "false"
        env["CDI_ENABLED"] = "true"
    drop_in = env.get("RUNTIME_DROP_IN_CONFIG", "/etc/containerd/conf.d/99-nvidia.toml")
    # The operator computes the host path of the drop-in itself; a value set by hand is overwritten.
    env["RUNTIME_DROP_IN_CONFIG_HOST_PATH"] = drop_in
    env["CONTAINERD_RUNTIME_CLASS"] = "nvidia"
    return env


def device_plugin_config(spec: dict) -> tuple[str, str]:
    return (_get(spec, "devicePlugin", "config", "name", default="") or "",
            _get(spec, "devicePlugin", "config", "default", default="") or "")


def wanted_operands(spec: dict) -> tuple[Operand, ...]:
    ops = list(OPERANDS)
    if driver_enabled(spec):
        ops.insert(0, DRIVER)
    return tuple(o for o in ops if _get(spec, o.component, "enabled", default=True) is not False)


def node_labels(current: dict[str, str], spec: dict) -> dict[str, str]:
    """Labels the operator wants on a GPU node (existing =false deploy labels are respected)."""
    want = {GPU_PRESENT: "true"}
    for suffix in [o.deploy for o in wanted_operands(spec)] + list(EXTRA_DEPLOY_LABELS):
        key = DEPLOY + suffix
        want[key] = "false" if current.get(key) == "false" else "true"
    return {k: v for k, v in want.items() if current.get(k) != v}


def _image(spec: dict, component: str) -> str:
    c = _get(spec, component, default={}) or {}
    repo, image, version = c.get("repository", "nvcr.io/nvidia"), c.get("image", component), c.get("version", "")
    return f"{repo}/{image}:{version}" if version else f"{repo}/{image}"


def daemonset(op: Operand, spec: dict, namespace: str, owner: dict) -> dict:
    env: dict[str, str] = {}
    if op.component == "toolkit":
        env = toolkit_env(spec)
    elif op.component == "devicePlugin":
        name, default = device_plugin_config(spec)
        env = {"CONFIG_NAME": name, "DEFAULT_CONFIG": default,
               "MIG_STRATEGY": str(_get(spec, "mig", "strategy", default="single"))}
    elif op.component == "gfd":
        env = {"MIG_STRATEGY": str(_get(spec, "mig", "strategy", default="single"))}
    pod_spec: dict = {
        "nodeSelector": {DEPLOY + op.deploy: "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "priorityClassName": "system-node-critical",
        "containers": [{
            "name": op.container, "image": _image(spec, op.component),
            "env": [{"name": k, "value": v} for k, v in sorted(env.items())],
        }],
    }
    if op.nvidia_runtime:
        pod_spec["runtimeClassName"] = "nvidia"
    if op.component == "validator":
        pod_spec["initContainers"] = [
            {"name": f"{step}-validation", "image": _image(spec, "validator")}
            for step in ("driver", "toolkit", "cuda", "plugin")
        ]
    body = {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {
            "name": op.name, "namespace": namespace,
            "labels": {"app": op.name, "app.kubernetes.io/managed-by": "gpu-operator"},
            "ownerReferences": [{
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "ClusterPolicy", "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "selector": {"matchLabels": {"app": op.name}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "10%"}},
            "template": {"metadata": {"labels": {"app": op.name}}, "spec": pod_spec},
        },
    }
    digest = hashlib.sha256(json.dumps(body["spec"], sort_keys=True).encode()).hexdigest()[:16]
    body["metadata"]["annotations"] = {SPEC_HASH: digest}
    return body


def runtime_classes(spec: dict) -> list[dict]:
    names = ["nvidia"] + (["nvidia-cdi", "nvidia-legacy"] if cdi_enabled(spec) else [])
    return [{"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": n}, "handler": n}
            for n in names]


def dcgm_service(namespace: str) -> dict:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "nvidia-dcgm-exporter", "namespace": namespace, "labels": {"app": "nvidia-dcgm-exporter"}},
        "spec": {"type": "ClusterIP", "selector": {"app": "nvidia-dcgm-exporter"},
                 "ports": [{"name": "gpu-metrics", "port": 9400, "targetPort": 9400, "protocol": "TCP"}]},
    }


def daemonset_ready(ds: dict) -> bool:
    st = ds.get("status") or {}
    desired = st.get("desiredNumberScheduled", 0)
    gen_ok = st.get("observedGeneration", 0) >= ds["metadata"].get("generation", 0)
    return gen_ok and desired > 0 and st.get("numberReady", 0) == desired and \
        st.get("updatedNumberScheduled", 0) == desired
