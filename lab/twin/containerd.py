"""containerd on a lab host view, decided by the real programs (lab/build_node.py builds them).

* :func:`effective` - does the node's containerd start with its files as they are now? Answered by the lab's
  judge program (lab/containerd_judge/), built inside the node's containerd version's own module: containerd's
  config loader (root config + imports, its merge, 2.x version migrations) and its CRI config validation, run
  in a chroot of the host view. Its verdict and containerd's own error text are the result.
* :func:`restart` - ``snap restart k8s.containerd``: evaluate and record the result in .twin/containerd.json.
* :func:`state` - the recorded result (what is running now; files changed since are not read until a restart).
* :func:`toolkit_install` / :func:`toolkit_uninstall` - the toolkit container's runtime setup and cleanup: the
  real nvidia-ctk-installer containerd code (lab/toolkit_runtime/) of the toolkit version the pod's image names,
  with the pod's env, its container paths mapped onto host paths through the pod's hostPath mounts, run in a
  chroot of the host view. What it cannot do here (copy toolkit artifacts, signal a containerd process) and
  how the lab stands in for that: docs/containerd.md.

Rules and sources: lab/twin/README-host.md, docs/containerd.md.
"""

from __future__ import annotations

import json
import posixpath
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lab import build_node
from lab.build import BuildError
from lab.twin.hostview import (
    DISTRO_CONTAINERD,
    LOCK_FILE,
    containerd_root,
    host_path,
    load_node,
    read_json,
    twin_dir,
    update_json,
)

__all__ = [
    "DEFAULT_CONTAINERD_VERSION",
    "ContainerdEval",
    "JudgeError",
    "effective",
    "restart",
    "snap_config_path",
    "state",
    "state_record",
]

DEFAULT_CONTAINERD_VERSION = build_node.CONTAINERD_FOR_TRACK[build_node.DEFAULT_TRACK].lstrip("v")
DOCKER_SOCKET = "/run/containerd/containerd.sock"      # Docker's containerd (containerd.io)
JUDGE_TIMEOUT_S = 60


class JudgeError(RuntimeError):
    """The lab could not run containerd's judge (not built, not root, ...): a lab problem, not a verdict."""


@dataclass(frozen=True)
class ContainerdEval:
    ok: bool
    error: str | None
    runtimes: list[str]
    default_runtime: str
    imports: list[str]                       # files loaded after the root config (host paths, sorted)
    config: str = ""                         # the root config (host path)
    cri_plugin: str = ""                     # plugin id whose containerd.runtimes were read
    daemon_up: bool = True                   # CRI failures leave containerd running (no CRI); load errors do not
    version: int = 0                         # config version containerd ended with (after 2.x migration)
    containerd_version: str = DEFAULT_CONTAINERD_VERSION
    judged_by: str = ""                      # the judge binary (containerd build) that decided
    seconds: float = 0.0                     # how long the simulated start took


# ------------------------------------------------------------------------------------------------ the snap's config
def _node_containerd_version(root: Path) -> str:
    try:
        return load_node(root).containerd_version
    except FileNotFoundError:
        return DEFAULT_CONTAINERD_VERSION


def _base_dir(root: Path) -> str:
    try:
        return host_path(root, LOCK_FILE).read_text().strip() or "/"
    except FileNotFoundError:
        return "/"   # k8s-snap without a custom base dir (classic confinement): containerd under /


def _distribution(root: Path) -> str:
    try:
        return load_node(root).distribution
    except FileNotFoundError:
        return "k8s-snap"


def snap_config_path(root: Path) -> str:
    """The config.toml the node's containerd is started with (``--config``), as a host path: k8s-snap's under its
    base dir; another distribution's from lab/twin/hostview.py DISTRO_CONTAINERD."""
    distribution = _distribution(root)
    if distribution != "k8s-snap":
        return DISTRO_CONTAINERD[distribution]["config"]
    base = _base_dir(root)
    path = posixpath.join(containerd_root(base), "etc/containerd/config.toml")
    # k8s-snap's own lock file may already hold B/k8s-containerd (what k8sd uses as its containerd root);
    # take the value as is when only that reading names an existing config
    as_is = posixpath.join(base, "etc/containerd/config.toml")
    if base != "/" and not host_path(root, path).exists() and host_path(root, as_is).exists():
        return as_is
    return path


def snap_socket_path(root: Path) -> str:
    distribution = _distribution(root)
    if distribution != "k8s-snap":
        return DISTRO_CONTAINERD[distribution]["socket"]
    return posixpath.join(posixpath.dirname(posixpath.dirname(posixpath.dirname(snap_config_path(root)))),
                          "run/containerd/containerd.sock")


# ------------------------------------------------------------------------------------------------ containerd
def effective(host_root: Path) -> ContainerdEval:
    """What the node's containerd does with the host view's files now: the judge's verdict (see module doc)."""
    root = Path(host_root)
    ctr_version = _node_containerd_version(root)
    config = snap_config_path(root)
    try:
        judge = build_node.judge_bin(build_node.containerd_build_for(ctr_version))
    except BuildError as exc:
        raise JudgeError(str(exc)) from exc
    started = time.monotonic()
    res = subprocess.run([str(judge), "--root", str(root), "--config", config], capture_output=True, text=True,
                         timeout=JUDGE_TIMEOUT_S)
    seconds = time.monotonic() - started
    if res.returncode != 0 or not res.stdout.strip():
        raise JudgeError(f"{judge} --root {root} failed (exit {res.returncode}): {res.stderr.strip()[-500:]} "
                         "(the judge chroots into the host view: the lab must run as root)")
    v = json.loads(res.stdout.strip().splitlines()[-1])
    return ContainerdEval(ok=bool(v["ok"]), error=v.get("error") or None, runtimes=list(v.get("runtimes") or []),
                          default_runtime=v.get("default_runtime") or "", imports=list(v.get("imports") or []),
                          config=config, cri_plugin=v.get("cri_plugin") or "", daemon_up=bool(v["daemon_up"]),
                          version=int(v.get("version") or 0), containerd_version=ctr_version,
                          judged_by=str(judge), seconds=round(seconds, 4))


def state_record(ev: ContainerdEval, restarts: int) -> dict[str, Any]:
    d = asdict(ev)
    d.pop("ok")
    return {"running": ev.ok, "restarts": restarts, "at": time.time(), **d}


def restart(host_root: Path) -> ContainerdEval:
    """``snap restart k8s.containerd``: containerd re-reads its config; the result is what runs from now on."""
    root = Path(host_root)
    ev = effective(root)
    update_json(root, "containerd.json",
                lambda old: state_record(ev, restarts=int((old or {}).get("restarts", 0)) + 1))
    return ev


def state(host_root: Path) -> dict[str, Any]:
    """The containerd that is running (recorded at seed / last restart); evaluated now if never recorded."""
    root = Path(host_root)
    rec = read_json(twin_dir(root) / "containerd.json")
    if rec is None:
        return state_record(effective(root), restarts=0)
    return rec
