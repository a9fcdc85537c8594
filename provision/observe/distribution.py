"""Which Kubernetes distribution runs a node, and where that distribution keeps containerd. Pure: no I/O.

A node is judged by its own distribution's containerd (root config, template, drop-in directory, socket,
binary, restart command), and the toolkit's helm values are derived from it. Sources of every path and default
(read from each distribution's own source or docs): docs/distributions.md.

Detection (``detect_node``) reads the Node object first: ``status.nodeInfo.kubeletVersion`` (k3s reports
``v1.31.4+k3s1``, RKE2 ``v1.31.4+rke2r1``), the labels and annotations each distribution's agent sets
(``node.kubernetes.io/instance-type`` = k3s / rke2 from their cloud provider, ``k3s.io/*`` / ``rke2.io/*``
annotations, ``microk8s.io/cluster`` from MicroK8s' kubelet args, ``k8sd.io/role`` from k8s-snap's k8sd,
``kubeadm.alpha.kubernetes.io/cri-socket`` from kubeadm). Where the node says nothing, the host's files decide
(``detect_host``): k8s-snap's lock file, Rancher's agent directories, MicroK8s' args, /etc/containerd.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

K8S_SNAP, KUBEADM, K3S, RKE2, MICROK8S = "k8s-snap", "kubeadm", "k3s", "rke2", "microk8s"
DISTRIBUTIONS = (K8S_SNAP, KUBEADM, K3S, RKE2, MICROK8S)
# --provision changes these; on the others it stops and names what to change by hand
PROVISIONABLE = (K8S_SNAP, KUBEADM)
DROPIN_NAME = "99-nvidia.toml"
# The toolkit's own RUNTIME_DROP_IN_CONFIG when the ClusterPolicy sets none (nvidia-container-toolkit's containerd
# configurer default; the original playbooks' toolkit wrote it there).
TOOLKIT_DEFAULT_DROPIN = posixpath.join("/etc/containerd/conf.d", DROPIN_NAME)

K8S_SNAP_LOCK = "/var/snap/k8s/common/lock/.containerd-base-dir"
K8S_SNAP_DEFAULT_BASE = "/var/lib/k8s-containerd"


@dataclass(frozen=True)
class Detected:
    name: str | None            # one of DISTRIBUTIONS; None: not one the suite knows (or the node does not say)
    evidence: str               # what decided, for messages and the report


@dataclass(frozen=True)
class Layout:
    """Where one distribution keeps containerd on a host."""

    distribution: str
    root_config: str            # the config.toml containerd is started with (--config)
    template: str | None        # the file an admin (or the toolkit) edits when the root config is generated
    conf_d: str                 # the drop-in directory the suite (or the toolkit) writes 99-nvidia.toml to
    socket: str                 # containerd's gRPC socket
    binary: str                 # the containerd binary that distribution runs
    restart: tuple[str, ...]    # how containerd is restarted so that it re-reads its config
    logs: str                   # where to read containerd's log on the node

    @property
    def dropin(self) -> str:
        return posixpath.join(self.conf_d, DROPIN_NAME)


def _get(obj: Mapping[str, Any] | None, *keys: str) -> Any:
    """obj[key] for the first key present: Node objects as the API serves them (camelCase) or as the Python client's
    to_dict() writes them (snake_case)."""
    for key in keys:
        if obj and key in obj and obj[key] is not None:
            return obj[key]
    return None


def node_info(node: Mapping[str, Any]) -> dict[str, str]:
    info = _get(_get(node, "status") or {}, "nodeInfo", "node_info") or {}
    return {"kubeletVersion": str(_get(info, "kubeletVersion", "kubelet_version") or ""),
            "containerRuntimeVersion": str(_get(info, "containerRuntimeVersion", "container_runtime_version") or "")}


def detect_node(node: Mapping[str, Any]) -> Detected:
    """The distribution a Node object names (Detected(None, ...) when it does not)."""
    meta = _get(node, "metadata") or {}
    labels: Mapping[str, str] = _get(meta, "labels") or {}
    annotations: Mapping[str, str] = _get(meta, "annotations") or {}
    info = node_info(node)
    kubelet, runtime = info["kubeletVersion"], info["containerRuntimeVersion"]
    if "+rke2" in kubelet:
        return Detected(RKE2, f"kubeletVersion {kubelet}")
    if "+k3s" in kubelet:
        return Detected(K3S, f"kubeletVersion {kubelet}")
    instance = labels.get("node.kubernetes.io/instance-type", "")
    if instance in (K3S, RKE2):
        return Detected(instance, f"label node.kubernetes.io/instance-type={instance}")
    for prefix, name in (("rke2.io/", RKE2), ("k3s.io/", K3S)):
        keys = sorted(k for k in annotations if k.startswith(prefix))
        if keys:
            return Detected(name, f"annotation {keys[0]}")
    for key, name in (("microk8s.io/cluster", MICROK8S), ("k8sd.io/role", K8S_SNAP)):
        if key in labels:
            return Detected(name, f"label {key}={labels[key]}")
    if runtime and not runtime.startswith("containerd://"):
        return Detected(None, f"containerRuntimeVersion {runtime} (not containerd)")
    if "kubeadm.alpha.kubernetes.io/cri-socket" in annotations:
        return Detected(KUBEADM, "annotation kubeadm.alpha.kubernetes.io/cri-socket")
    return Detected(None, f"the node object names no distribution (kubeletVersion {kubelet or '?'})")


# host files that identify a distribution, in the order they are tried (k8s-snap first: a k8s-snap node with
# Docker also has Docker's /etc/containerd/config.toml and /usr/bin/containerd)
HOST_MARKERS: tuple[tuple[str, str], ...] = (
    (K8S_SNAP_LOCK, K8S_SNAP),
    ("/snap/k8s/current/bin/containerd", K8S_SNAP),
    ("/var/lib/rancher/rke2/agent/etc/containerd", RKE2),
    ("/var/lib/rancher/k3s/agent/etc/containerd", K3S),
    ("/var/snap/microk8s/current/args/containerd-template.toml", MICROK8S),
    ("/etc/containerd/config.toml", KUBEADM),
    ("/usr/bin/containerd", KUBEADM),
)


def detect_host(exists: Callable[[str], bool]) -> Detected:
    """The distribution a host's files show; ``exists(path)`` answers for the host."""
    for path, name in HOST_MARKERS:
        if exists(path):
            return Detected(name, f"host file {path}")
    return Detected(None, "no distribution's containerd files on the host (" + ", ".join(p for p, _ in HOST_MARKERS)
                    + ")")


def layout(distribution: str, k8s_snap_base: str | None = None, containerd_major: int = 1) -> Layout:
    """Where ``distribution`` keeps containerd. ``k8s_snap_base``: k8s-snap's containerd-base-dir (lock file);
    ``containerd_major``: 2 picks k3s/RKE2's version 3 template name (config-v3.toml.tmpl)."""
    if distribution == K8S_SNAP:
        base = (k8s_snap_base or "").strip() or K8S_SNAP_DEFAULT_BASE
        snap = posixpath.join(base, "k8s-containerd")
        return Layout(K8S_SNAP, posixpath.join(snap, "etc/containerd/config.toml"), None,
                      posixpath.join(snap, "etc/containerd/conf.d"), posixpath.join(snap, "run/containerd/containerd.sock"),
                      "/snap/k8s/current/bin/containerd", ("snap", "restart", "k8s.containerd"),
                      "snap logs k8s.containerd")
    if distribution == KUBEADM:
        return Layout(KUBEADM, "/etc/containerd/config.toml", None, "/etc/containerd/conf.d",
                      "/run/containerd/containerd.sock", "/usr/bin/containerd", ("systemctl", "restart", "containerd"),
                      "journalctl -u containerd")
    if distribution in (K3S, RKE2):
        d = f"/var/lib/rancher/{distribution}/agent/etc/containerd"
        binary = ("/var/lib/rancher/k3s/data/current/bin/containerd" if distribution == K3S
                  else "/var/lib/rancher/rke2/bin/containerd")
        unit = "k3s" if distribution == K3S else "rke2-server (rke2-agent on agents)"
        return Layout(distribution, posixpath.join(d, "config.toml"),
                      posixpath.join(d, "config-v3.toml.tmpl" if containerd_major >= 2 else "config.toml.tmpl"),
                      posixpath.join(d, "conf.d"), "/run/k3s/containerd/containerd.sock", binary,
                      ("systemctl", "restart", "k3s" if distribution == K3S else "rke2-server"),
                      f"journalctl -u {unit}; {d.rsplit('/etc/', 1)[0]}/containerd/containerd.log")
    if distribution == MICROK8S:
        return Layout(MICROK8S, "/var/snap/microk8s/current/args/containerd.toml",
                      "/var/snap/microk8s/current/args/containerd-template.toml",
                      "/var/snap/microk8s/current/args/conf.d", "/var/snap/microk8s/common/run/containerd.sock",
                      "/snap/microk8s/current/bin/containerd", ("snap", "restart", "microk8s.daemon-containerd"),
                      "journalctl -u snap.microk8s.daemon-containerd")
    raise ValueError(f"unknown distribution {distribution!r}; known: {', '.join(DISTRIBUTIONS)}")


def toolkit_env(lay: Layout) -> list[dict[str, str]]:
    """The toolkit's env (chart value toolkit.env) for nodes of this layout. k8s-snap and kubeadm: the root config
    as the source (``file``), the drop-in in the imported conf.d, the suite's one-by-one restart. k3s / RKE2 /
    MicroK8s: the template the distribution renders its config from (GPU Operator docs), their socket."""
    if lay.distribution in PROVISIONABLE:
        return [
            {"name": "CONTAINERD_CONFIG", "value": lay.root_config},
            {"name": "CONTAINERD_SOCKET", "value": lay.socket},
            {"name": "RUNTIME_DROP_IN_CONFIG", "value": lay.dropin},
            {"name": "RUNTIME_CONFIG_SOURCE", "value": "file"},
            # the installer's default (signal) makes every node's containerd exit at once when the toolkit pods
            # start (SIGHUP; systemd restarts it): the suite restarts them one by one instead (containerd-restart)
            {"name": "RUNTIME_RESTART_MODE", "value": "none"},
        ]
    assert lay.template is not None
    return [
        {"name": "CONTAINERD_CONFIG", "value": lay.template},
        {"name": "CONTAINERD_SOCKET", "value": lay.socket},
        {"name": "RUNTIME_DROP_IN_CONFIG", "value": lay.dropin},
        {"name": "RUNTIME_CONFIG_SOURCE", "value": f"file={lay.root_config}"},
    ]


def manual_steps(lay: Layout, nodes: Iterable[str]) -> str:
    """What --provision would change on nodes of a distribution it does not change, said for a person to do."""
    names = ", ".join(sorted(nodes))
    env = ", ".join(f"{e['name']}={e['value']}" for e in toolkit_env(lay))
    base = '{{ template "base" . }}' if lay.distribution in (K3S, RKE2) else "the distribution's own template content"
    return (f"--provision does not change {lay.distribution} nodes ({names}): {lay.distribution} generates "
            f"{lay.root_config} from its template at every start, so a file the suite or the toolkit writes there is "
            f"lost. By hand: (1) create or edit {lay.template} so that it keeps {base} and adds "
            f"imports = [\"{lay.conf_d}/*.toml\"]; (2) install the GPU Operator with toolkit.env {env}, "
            f"driver.enabled=false; (3) after the toolkit pod wrote {lay.dropin}, restart containerd on each node "
            f"one at a time ({' '.join(lay.restart)}) and check `{' '.join([lay.binary, '--config', lay.root_config])} "
            "config dump` lists runc (default) and nvidia. Then run the audit (`pytest features/`)")


def mixed_message(by_node: Mapping[str, str]) -> str | None:
    """None when all GPU nodes run one distribution; else the refusal naming the nodes of each."""
    groups: dict[str, list[str]] = {}
    for node, name in sorted(by_node.items()):
        groups.setdefault(name, []).append(node)
    if len(groups) <= 1:
        return None
    parts = "; ".join(f"{name}: {', '.join(nodes)}" for name, nodes in sorted(groups.items()))
    return (f"the GPU nodes run different distributions ({parts}); the toolkit's containerd settings are "
            "cluster-wide (one helm release), so no single configuration fits them all. --provision changes "
            "nothing: provision one distribution's nodes at a time (--gpu-nodes), or give each its own toolkit "
            "settings by hand")


def policy_dropin(cluster_policy: Mapping[str, Any] | None) -> str:
    """The drop-in the toolkit writes as a ClusterPolicy configures it: its toolkit env RUNTIME_DROP_IN_CONFIG,
    else the toolkit's default. Pure."""
    spec = (cluster_policy or {}).get("spec") or {}
    env = {e.get("name"): e.get("value") for e in (spec.get("toolkit") or {}).get("env") or []}
    return str(env.get("RUNTIME_DROP_IN_CONFIG") or TOOLKIT_DEFAULT_DROPIN)
