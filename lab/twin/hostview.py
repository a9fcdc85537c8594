"""The host view of a lab node: a folder laid out like a real k8s-snap GPU node, plus the twin's shims.

``seed(paths, node)`` creates ``LabPaths().host_root(node.name)`` (e.g. ``.lab/hosts/gpu-a/``). The suite reaches
it through its host-access layer with root prefix = the folder and ``PATH=<root>/usr/bin:...`` first, so the
``nvidia-smi``, ``snap``, ``systemctl`` and ``docker`` it runs are the shims written here, and a host path such as
``/etc/docker/daemon.json`` is read at ``<root>/etc/docker/daemon.json``. See lab/twin/README-host.md.

The twin's own bookkeeping lives under ``<root>/.twin/`` (node.json, containerd.json, docker.json, systemd.json,
snap.json, toolkit.json); the helpers at the top of this module read and write it atomically (the twin process
and the shims both touch it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import tomlkit

from lab import build_node
from lab.spec import NodeSpec, parse_faults
from lab.state import REPO_ROOT
from lab.twin import shim_server

__all__ = [
    "DOCKER_CONTAINERD_CONFIG",
    "LOCK_FILE",
    "SHIMS",
    "SNAP_CONTAINERD",
    "containerd_root",
    "ensure_dev_null",
    "host_path",
    "k8s_containerd_config",
    "load_node",
    "read_json",
    "set_faults",
    "twin_dir",
    "update_json",
    "write_json",
    "write_k8s_containerd_config",
]

SEEDED_MARKER = ".twin/seeded"
LOCK_FILE = "/var/snap/k8s/common/lock/.containerd-base-dir"
HOST_DRIVER_VALIDATIONS = "/run/nvidia/validations"
K8SD_PAUSE_IMAGE = "ghcr.io/canonical/k8s-snap/pause:3.10"
CNI_BIN_DIR = "/opt/cni/bin"
CNI_CONF_DIR = "/etc/cni/net.d"
SNAP_CONTAINERD = "/snap/k8s/current/bin/containerd"   # where the k8s snap keeps its containerd
DOCKER_CONTAINERD = "/usr/bin/containerd"              # Docker's containerd (containerd.io package)
DOCKER_CONTAINERD_CONFIG = "/etc/containerd/config.toml"
# /etc/containerd/config.toml as the containerd.io package ships it (docker/containerd-packaging): no version
# (so version 1) and the CRI plugin disabled; everything else commented out
DOCKER_CONTAINERD_CONFIG_TEXT = """#   Copyright 2018-2022 Docker Inc.

#   Licensed under the Apache License, Version 2.0 (the "License");
#   you may not use this file except in compliance with the License.
#   You may obtain a copy of the License at

#       http://www.apache.org/licenses/LICENSE-2.0

#   Unless required by applicable law or agreed to in writing, software
#   distributed under the License is distributed on an "AS IS" BASIS,
#   WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
#   See the License for the specific language governing permissions and
#   limitations under the License.

disabled_plugins = ["cri"]

#root = "/var/lib/containerd"
#state = "/run/containerd"
#subreaper = true
#oom_score = 0

#[grpc]
#  address = "/run/containerd/containerd.sock"
#  uid = 0
#  gid = 0

#[debug]
#  address = "/run/containerd/debug.sock"
#  uid = 0
#  gid = 0
#  level = "info"
"""

# shim name -> (module, function); every node gets snap and systemctl, GPU nodes nvidia-smi, Docker nodes docker
SHIMS: dict[str, tuple[str, str]] = {
    "nvidia-smi": ("lab.twin.nvidia_smi", "main"),
    "snap": ("lab.twin.hostcmd", "snap_main"),
    "systemctl": ("lab.twin.hostcmd", "systemctl_main"),
    "docker": ("lab.twin.hostcmd", "docker_main"),
    "journalctl": ("lab.twin.hostcmd", "journalctl_main"),
    "dmesg": ("lab.twin.hostcmd", "dmesg_main"),
    "lspci": ("lab.twin.hostcmd", "lspci_main"),
}

_SHIM_TEMPLATE = '''#!{python}
# Lab twin shim for `{name}` (written by lab/twin/hostview.py; see lab/twin/README-host.md).
# The host root is this file's folder two levels up: <root>/usr/bin/{name} -> <root>.
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, {repo!r})
from {module} import {func} as _main  # noqa: E402

raise SystemExit(_main(ROOT, sys.argv[1:]))
'''


# ------------------------------------------------------------------------------------------------ state helpers
def host_path(root: Path, path: str) -> Path:
    """The lab file that stands for absolute host path ``path`` (``/etc/x`` -> ``<root>/etc/x``)."""
    if not path.startswith("/"):
        raise ValueError(f"host path {path!r} is not absolute")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"host path {path!r} must not contain '..'")
    return root.joinpath(*parts)


def twin_dir(root: Path) -> Path:
    return root / ".twin"


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    lock = twin_dir(root) / ".lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def update_json(root: Path, name: str, fn: Callable[[Any], Any], default: Any = None) -> Any:
    """Read-modify-write ``<root>/.twin/<name>`` under the host view's lock; returns what was written."""
    path = twin_dir(root) / name
    with _locked(root):
        data = fn(read_json(path, default))
        write_json(path, data)
        return data


def _node_to_json(node: NodeSpec) -> dict[str, Any]:
    d = dataclasses.asdict(node)
    d["nvidia_smi"] = str(node.nvidia_smi) if node.nvidia_smi else None
    d["files"] = {k: str(v) for k, v in node.files.items()}
    d["faults"] = [str(f) for f in node.faults]
    return d


def load_node(root: Path) -> NodeSpec:
    """The NodeSpec recorded in ``<root>/.twin/node.json`` at seed time (faults may change: set_faults)."""
    d = read_json(twin_dir(root) / "node.json")
    if d is None:
        raise FileNotFoundError(f"{root} is not a seeded host view (no .twin/node.json)")
    d["nvidia_smi"] = Path(d["nvidia_smi"]) if d.get("nvidia_smi") else None
    d["files"] = {k: Path(v) for k, v in (d.get("files") or {}).items()}
    d["faults"] = tuple(d.get("faults") or ())
    d["labels"] = dict(d.get("labels") or {})
    known = {f.name for f in dataclasses.fields(NodeSpec)}
    return NodeSpec(**{k: v for k, v in d.items() if k in known})


def set_faults(root: Path, faults: tuple[str, ...] | list[str]) -> None:
    """Change the faults the host's tools play (nvidia-smi reads them on every run); unknown names are refused."""
    checked = parse_faults(tuple(faults), f"set_faults({root})")

    def change(d: dict[str, Any]) -> dict[str, Any]:
        d["faults"] = [str(f) for f in checked]
        return d
    update_json(root, "node.json", change)


# ------------------------------------------------------------------------------------------------ k8s-snap layout
def containerd_root(base_dir: str) -> str:
    """k8s-snap's containerd root for a ``containerd-base-dir`` B: ``B/k8s-containerd`` (k8sd appends it).

    ``/`` (no custom base dir: the classic-confinement default) means containerd's files are at /etc/containerd,
    /run/containerd.
    """
    base = base_dir.strip() or "/"
    if base == "/":
        return "/"
    return f"{base.rstrip('/')}/k8s-containerd"


def _join(a: str, *rest: str) -> str:
    out = a.rstrip("/")
    for r in rest:
        out = f"{out}/{r.strip('/')}"
    return out or "/"


def containerd_major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 1


def k8s_containerd_config(node: NodeSpec) -> str:
    """config.toml as k8s-snap's k8sd writes it under ``B/k8s-containerd/etc/containerd/``.

    After k8sd's setup.Containerd (defaultContainerdConfig in src/k8s/pkg/k8sd/setup/containerd.go of k8s-snap's
    release-1.34 and release-1.35 branches, and pkg/k8sd/setup/containerd.go of canonical/k8sd, which the 1.36
    snap builds): version 2 on every track, also with containerd 2.1 (1.35) and 2.3 (1.36), which migrate it
    when they load it; oom_score, imports of the extra-config dir, grpc/debug/metrics/cgroup, the CRI plugin
    (io.containerd.grpc.v1.cri) with sandbox image, default_runtime_name "runc", runtimes.runc
    (io.containerd.runc.v2, SystemdCgroup = true), cni dirs and registry config_path.
    Lab additions (see README-host.md): the header comment and grpc.address (k8sd passes it as --address).
    """
    croot = containerd_root(node.containerd_base_dir)
    conf_d = _join(croot, "etc/containerd/conf.d")
    hosts_d = _join(croot, "etc/containerd/hosts.d")
    sock = _join(croot, "run/containerd/containerd.sock")
    doc = tomlkit.document()
    doc.add(tomlkit.comment("Generated by k8sd (k8s-snap). This file is rewritten by k8sd: do not edit it;"))
    doc.add(tomlkit.comment(f"add drop-ins to {conf_d}/ instead."))
    doc.add(tomlkit.comment(f"containerd {node.containerd_version}, containerd-base-dir {node.containerd_base_dir}"))
    doc.add("version", 2)
    doc.add("oom_score", 0)
    doc.add("imports", [f"{conf_d}/*.toml"])
    grpc = tomlkit.table()
    grpc.update({"address": sock, "uid": 0, "gid": 0,
                 "max_recv_message_size": 16777216, "max_send_message_size": 16777216})
    doc.add("grpc", grpc)
    debug = tomlkit.table()
    debug.update({"address": "", "uid": 0, "gid": 0, "level": ""})
    doc.add("debug", debug)
    metrics = tomlkit.table()
    metrics.update({"address": "", "grpc_histogram": False})
    doc.add("metrics", metrics)
    cgroup = tomlkit.table()
    cgroup.add("path", "")
    doc.add("cgroup", cgroup)

    runc = tomlkit.table()
    runc.add("runtime_type", "io.containerd.runc.v2")
    runc_opts = tomlkit.table()
    runc_opts.add("SystemdCgroup", True)
    runc.add("options", runc_opts)
    runtimes = tomlkit.table()
    runtimes.add("runc", runc)
    ctrd = tomlkit.table()
    ctrd.update({"no_pivot": False, "default_runtime_name": "runc"})
    ctrd.add("runtimes", runtimes)
    cni = tomlkit.table()
    cni.update({"bin_dir": CNI_BIN_DIR, "conf_dir": CNI_CONF_DIR})
    registry = tomlkit.table()
    registry.add("config_path", hosts_d)
    plugins = tomlkit.table()
    cri = tomlkit.table()
    cri.update({"stream_server_address": "127.0.0.1", "stream_server_port": "0", "enable_selinux": False,
                "sandbox_image": K8SD_PAUSE_IMAGE, "stats_collect_period": 10,
                "enable_tls_streaming": False, "max_container_log_line_size": 16384})
    cri.add("containerd", ctrd)
    cri.add("cni", cni)
    cri.add("registry", registry)
    plugins.add("io.containerd.grpc.v1.cri", cri)
    doc.add("plugins", plugins)
    return tomlkit.dumps(doc)


def write_k8s_containerd_config(root: Path, node: NodeSpec) -> Path:
    """(Re)write the snap's config.toml as k8sd does (bootstrap, join, refresh): any toolkit import is lost."""
    croot = containerd_root(node.containerd_base_dir)
    path = host_path(root, _join(croot, "etc/containerd/config.toml"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(k8s_containerd_config(node))
    return path


# ------------------------------------------------------------------------------------------------ other distributions
# Where each distribution's containerd lives (sources: lab/README.md "Distributions"): the config it is started with,
# its socket, its binary and the systemd unit that runs it.
DISTRO_CONTAINERD: dict[str, dict[str, str]] = {
    "kubeadm": {"config": "/etc/containerd/config.toml", "socket": "/run/containerd/containerd.sock",
                "binary": "/usr/bin/containerd", "unit": "containerd.service"},
    "k3s": {"config": "/var/lib/rancher/k3s/agent/etc/containerd/config.toml",
            "socket": "/run/k3s/containerd/containerd.sock",
            "binary": "/var/lib/rancher/k3s/data/current/bin/containerd", "unit": "k3s.service"},
    "rke2": {"config": "/var/lib/rancher/rke2/agent/etc/containerd/config.toml",
             "socket": "/run/k3s/containerd/containerd.sock",
             "binary": "/var/lib/rancher/rke2/bin/containerd", "unit": "rke2-server.service"},
    "microk8s": {"config": "/var/snap/microk8s/current/args/containerd.toml",
                 "socket": "/var/snap/microk8s/common/run/containerd.sock",
                 "binary": "/snap/microk8s/current/bin/containerd", "unit": "snap.microk8s.daemon-containerd.service"},
}
K3S_PAUSE_IMAGE = "docker.io/rancher/mirrored-pause:3.6"
MICROK8S_TEMPLATE = "/var/snap/microk8s/current/args/containerd-template.toml"


def kubeadm_containerd_config(node: NodeSpec) -> str:
    """/etc/containerd/config.toml of a kubeadm node: what the Kubernetes docs have an admin write
    (`containerd config default > /etc/containerd/config.toml`, then SystemdCgroup = true for runc), produced by
    the node's own containerd binary."""
    import subprocess

    binary = build_node.containerd_bin(build_node.containerd_build_for(node.containerd_version))
    out = subprocess.run([str(binary), "config", "default"], capture_output=True, text=True, timeout=60, check=True)
    doc = tomlkit.parse(out.stdout)
    for table in (doc.get("plugins") or {}).values():
        runc = (((table.get("containerd") or {}).get("runtimes") or {}).get("runc") if hasattr(table, "get") else None)
        if runc is not None and "options" in runc:
            runc["options"]["SystemdCgroup"] = True
    return tomlkit.dumps(doc)


def rancher_containerd_config(node: NodeSpec, program: str) -> str:
    """config.toml as k3s / RKE2 render it from their built-in version 2 template (k3s pkg/agent/templates,
    ContainerdConfigTemplate, for containerd 1.7) with a plain node's values: no SELinux, overlayfs, the
    bundled CNI, runc with the systemd cgroup driver, no private registry, no extra runtimes."""
    if containerd_major(node.containerd_version) >= 2:
        raise ValueError(f"node {node.name}: the lab renders {program}'s version 2 template (containerd 1.7) only; "
                         "give the node k8s_snap_track 1.34 (containerd 1.7.35)")
    base = f"/var/lib/rancher/{program}"
    doc = tomlkit.document()
    doc.add(tomlkit.comment(f"File generated by {program}. DO NOT EDIT. Use config.toml.tmpl instead."))
    doc.add("version", 2)
    plugins = tomlkit.table(is_super_table=True)
    opt = tomlkit.table()
    opt.add("path", f"{base}/agent/containerd")
    plugins.add("io.containerd.internal.v1.opt", opt)
    cri = tomlkit.table()
    cri.update({"stream_server_address": "127.0.0.1", "stream_server_port": "10010", "enable_selinux": False,
                "enable_unprivileged_ports": True, "enable_unprivileged_icmp": True,
                "sandbox_image": K3S_PAUSE_IMAGE})
    ctrd = tomlkit.table()
    ctrd.update({"snapshotter": "overlayfs", "disable_snapshot_annotations": True})
    runc = tomlkit.table()
    runc.add("runtime_type", "io.containerd.runc.v2")
    runc_opts = tomlkit.table()
    runc_opts.add("SystemdCgroup", True)
    runc.add("options", runc_opts)
    runtimes = tomlkit.table()
    runtimes.add("runc", runc)
    ctrd.add("runtimes", runtimes)
    cri.add("containerd", ctrd)
    cni = tomlkit.table()
    bin_dir = f"{base}/data/current/bin" if program == "k3s" else "/opt/cni/bin"
    cni.update({"bin_dir": bin_dir, "conf_dir": f"{base}/agent/etc/cni/net.d"})
    cri.add("cni", cni)
    plugins.add("io.containerd.grpc.v1.cri", cri)
    doc.add("plugins", plugins)
    return tomlkit.dumps(doc)


def microk8s_containerd_config(node: NodeSpec) -> tuple[str, str]:
    """(containerd-template.toml, containerd.toml) of a MicroK8s node: the snap's default-args template (version 2,
    runc, nvidia-container-runtime and kata runtimes declared, ${SNAP_DATA} placeholders) and what its
    run-containerd-with-args wrapper renders from it with sed (runc default, io.containerd.runc.v2 on cgroup v2)."""
    if containerd_major(node.containerd_version) >= 3:
        raise ValueError(f"node {node.name}: MicroK8s' template is version 2")
    doc = tomlkit.document()
    doc.add(tomlkit.comment("Use config version 2 to enable new configuration fields."))
    doc.add("version", 2)
    doc.add("oom_score", 0)
    grpc = tomlkit.table()
    grpc.update({"uid": 0, "gid": 0, "max_recv_message_size": 16777216, "max_send_message_size": 16777216})
    doc.add("grpc", grpc)
    metrics = tomlkit.table()
    metrics.update({"address": "127.0.0.1:1338", "grpc_histogram": False})
    doc.add("metrics", metrics)
    cri = tomlkit.table()
    cri.update({"stream_server_address": "127.0.0.1", "stream_server_port": "0", "enable_selinux": False,
                "sandbox_image": "registry.k8s.io/pause:3.10", "stats_collect_period": 10,
                "enable_tls_streaming": False, "max_container_log_line_size": 16384})
    ctrd = tomlkit.table()
    ctrd.update({"snapshotter": "${SNAPSHOTTER}", "no_pivot": False, "default_runtime_name": "${RUNTIME}"})
    runtimes = tomlkit.table()
    for name, rtype, binary in (("runc", "${RUNTIME_TYPE}", None),
                                ("nvidia-container-runtime", "${RUNTIME_TYPE}", "nvidia-container-runtime"),
                                ("kata", "io.containerd.kata.v2", "kata-runtime")):
        rt = tomlkit.table()
        rt.add("runtime_type", rtype)
        if binary:
            o = tomlkit.table()
            o.add("BinaryName", binary)
            rt.add("options", o)
        runtimes.add(name, rt)
    ctrd.add("runtimes", runtimes)
    cri.add("containerd", ctrd)
    cni = tomlkit.table()
    cni.update({"bin_dir": "${SNAP_DATA}/opt/cni/bin", "conf_dir": "${SNAP_DATA}/args/cni-network"})
    cri.add("cni", cni)
    reg = tomlkit.table()
    reg.add("config_path", "${SNAP_DATA}/args/certs.d")
    cri.add("registry", reg)
    plugins = tomlkit.table(is_super_table=True)
    plugins.add("io.containerd.grpc.v1.cri", cri)
    doc.add("plugins", plugins)
    template = tomlkit.dumps(doc)
    rendered = template
    for k, v in (("${SNAP_DATA}", "/var/snap/microk8s/current"), ("${SNAPSHOTTER}", "overlayfs"),
                 ("${RUNTIME}", "runc"), ("${RUNTIME_TYPE}", "io.containerd.runc.v2")):
        rendered = rendered.replace(k, v)
    return template, rendered


def _seed_distribution(root: Path, node: NodeSpec) -> None:
    """The containerd files, binary and socket of a node of another distribution than k8s-snap."""
    where = DISTRO_CONTAINERD[node.distribution]
    files: dict[str, str] = {}
    if node.distribution == "kubeadm":
        files[where["config"]] = kubeadm_containerd_config(node)
    elif node.distribution in ("k3s", "rke2"):
        files[where["config"]] = rancher_containerd_config(node, node.distribution)
    else:
        files[MICROK8S_TEMPLATE], files[where["config"]] = microk8s_containerd_config(node)
    for path, text in files.items():
        target = host_path(root, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    sock = host_path(root, where["socket"])
    sock.parent.mkdir(parents=True, exist_ok=True)
    sock.touch()   # placeholder, not a socket
    _place(build_node.containerd_bin(build_node.containerd_build_for(node.containerd_version)),
           host_path(root, where["binary"]))
    ensure_dev_null(root)


# ------------------------------------------------------------------------------------------------ real binaries
def _place(src: Path, dst: Path) -> None:
    """Put a cached binary into the host view: a hard link (cheap at fleet scale), else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def ensure_dev_null(root: Path) -> None:
    """/dev/null in the host view: Go's exec.Cmd opens it for a child's unset stdin (the toolkit's `command`
    config source fails without it). Needs root (mknod); a regular file would be wrong, so nothing else."""
    dev_null = root / "dev" / "null"
    if dev_null.exists():
        return
    dev_null.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError, FileExistsError):
        os.mknod(dev_null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod(dev_null, 0o666)


def place_containerd(root: Path, node: NodeSpec) -> None:
    """The node's real containerd binaries: the snap's at /snap/k8s/current/bin/containerd (the node's track),
    and on Docker nodes Docker's /usr/bin/containerd with the config containerd.io ships."""
    _place(build_node.containerd_bin(build_node.containerd_build_for(node.containerd_version)),
           host_path(root, SNAP_CONTAINERD))
    if node.docker:
        _place(build_node.containerd_bin(build_node.DOCKER_CONTAINERD), host_path(root, DOCKER_CONTAINERD))
        cfg = host_path(root, DOCKER_CONTAINERD_CONFIG)
        if not cfg.exists():
            cfg.parent.mkdir(parents=True, exist_ok=True)
            cfg.write_text(DOCKER_CONTAINERD_CONFIG_TEXT)
    ensure_dev_null(root)


# ------------------------------------------------------------------------------------------------ seeding
_FAST_SHIM_TEMPLATE = """#!/bin/sh
# Lab twin shim for `{name}` (written by lab/twin/hostview.py; see lab/twin/README-host.md): asks the lab's shim
# server (lab/twin/shim_server.py), or runs the Python shim <root>/.twin/shims/{name} when no lab serves this view.
# The host root is this file's folder two levels up: <root>/usr/bin/{name} -> <root>.
case $0 in */*) d=${{0%/*}};; *) d=.;; esac
r=$(cd -P -- "$d/../.." && pwd -P) || exit 127
exec {client} {socket} "$r" {name} {python} "$r/.twin/shims/{name}" "$@"
"""


def _write_shims(root: Path, node: NodeSpec) -> None:
    import shlex

    names = ["snap", "systemctl"]
    if node.is_gpu:
        names.insert(0, "nvidia-smi")
        names += ["journalctl", "dmesg", "lspci"]  # the kernel log and the PCI bus (GPU health)
    if node.docker:
        names.append("docker")
    bindir = root / "usr" / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    client = shim_server.client_binary()
    pydir = root / ".twin" / "shims"
    if client is not None:
        pydir.mkdir(parents=True, exist_ok=True)
    for name in names:
        module, func = SHIMS[name]
        text = _SHIM_TEMPLATE.format(python=sys.executable, name=name, repo=str(REPO_ROOT), module=module,
                                     func=func)
        if client is not None:  # the Python shim is the fallback, in .twin/shims/ (its root: three levels up)
            _write_exec(pydir / name, text)
            q = shlex.quote
            text = _FAST_SHIM_TEMPLATE.format(
                name=name, client=q(str(client)), socket=q(str(shim_server.socket_path(root.parent.parent))),
                python=q(sys.executable))
        _write_exec(bindir / name, text)


def _write_exec(target: Path, text: str) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    os.replace(tmp, target)


def _initial_systemd(node: NodeSpec) -> dict[str, Any]:
    if node.distribution != "k8s-snap":
        unit = DISTRO_CONTAINERD[node.distribution]["unit"]
        return {"daemon_reloads": 0, "units": {unit: {"enabled": True, "active": "active", "starts": 1}}}
    units: dict[str, Any] = {
        "snap.k8s.containerd.service": {"enabled": True, "active": "active", "starts": 1},
        "snap.k8s.kubelet.service": {"enabled": True, "active": "active", "starts": 1},
        "snap.k8s.k8sd.service": {"enabled": True, "active": "active", "starts": 1},
    }
    if node.docker:
        units["docker.service"] = {"enabled": True, "active": "active", "starts": 1}
        units["containerd.service"] = {"enabled": True, "active": "active", "starts": 1}
    return {"daemon_reloads": 0, "units": units}
