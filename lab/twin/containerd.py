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
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tomlkit

from lab import build_node
from lab.build import BuildError
from lab.spec import Fault
from lab.twin.hostview import (
    DISTRO_CONTAINERD,
    LOCK_FILE,
    containerd_root,
    ensure_dev_null,
    host_path,
    load_node,
    read_json,
    twin_dir,
    update_json,
)

__all__ = [
    "DEFAULT_CONTAINERD_VERSION",
    "TOOLKIT_DIR",
    "ContainerdEval",
    "JudgeError",
    "ToolkitError",
    "effective",
    "map_container_path",
    "restart",
    "snap_config_path",
    "state",
    "state_record",
    "toolkit_install",
    "toolkit_uninstall",
]

TOOLKIT_DIR = "/usr/local/nvidia/toolkit"
DEFAULT_CONTAINERD_VERSION = build_node.CONTAINERD_FOR_TRACK[build_node.DEFAULT_TRACK].lstrip("v")
DOCKER_SOCKET = "/run/containerd/containerd.sock"      # Docker's containerd (containerd.io)
PRIVATE = "/.twin/toolkit-container"                   # a container path no hostPath mount covers lands here
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# env of the toolkit container that hold container paths (runtime.Flags of nvidia-ctk-installer)
PATH_ENV = ("RUNTIME_CONFIG", "CONTAINERD_CONFIG", "DOCKER_CONFIG", "RUNTIME_DROP_IN_CONFIG", "RUNTIME_SOCKET",
            "CONTAINERD_SOCKET", "DOCKER_SOCKET")
DEFAULT_MOUNTS = {"/host": "/"}                        # the toolkit DaemonSet's host-root volume
JUDGE_TIMEOUT_S = 60


class ToolkitError(RuntimeError):
    """The toolkit container fails (and crash-loops): its own error text."""


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


# ------------------------------------------------------------------------------------------------ the toolkit
def map_container_path(path: str, mounts: Mapping[str, str]) -> str:
    """A container path of the toolkit pod as a host path: through the longest hostPath mount that covers it;
    a path no mount covers is the container's own file system (kept under /.twin/toolkit-container)."""
    if not path.startswith("/"):
        return path
    norm = posixpath.normpath(path)
    table = {posixpath.normpath(c): h for c, h in mounts.items()}  # a pod's mountPath may end with "/"
    best = None
    for c in table:
        if (norm == c or norm.startswith(c.rstrip("/") + "/")) and (best is None or len(c) > len(best)):
            best = c
    if best is None:
        return PRIVATE + norm
    rest = norm[len(best):].lstrip("/")
    return posixpath.normpath(posixpath.join(table[best], rest)) if rest else posixpath.normpath(table[best])


def _host_env(env: Mapping[str, str], mounts: Mapping[str, str] | None) -> dict[str, str]:
    """The pod's env with its container paths as host paths (no mounts given: paths are host paths)."""
    table = {**DEFAULT_MOUNTS, **dict(mounts or {})}
    out = {k: v for k, v in env.items() if isinstance(v, str)}
    if mounts is not None:
        for key in PATH_ENV:
            if out.get(key):
                out[key] = map_container_path(out[key], table)
        for key in ("RUNTIME_CONFIG_SOURCES", "RUNTIME_CONFIG_SOURCE"):
            if out.get(key):
                parts = []
                for src in out[key].split(","):
                    kind, eq, p = src.partition("=")
                    parts.append(f"{kind}={map_container_path(p, table)}" if eq and p else src)
                out[key] = ",".join(parts)
    out["HOST_ROOT_MOUNT"] = map_container_path(out.get("HOST_ROOT_MOUNT") or "/host", table)
    out["PATH"] = HOST_PATH
    return out


def _docker(root: Path) -> bool:
    try:
        return load_node(root).docker
    except FileNotFoundError:
        return False


def _run_toolkit(root: Path, version: str, env: dict[str, str], cleanup: bool) -> tuple[dict[str, Any], str]:
    try:
        binary = build_node.toolkit_runtime_bin(version)
    except BuildError as exc:
        raise ToolkitError(str(exc)) from exc
    ensure_dev_null(root)    # `containerd config dump` writes to /dev/null's place (exec.Cmd)
    argv = [str(binary), "--root", str(root), *(["--cleanup"] if cleanup else [])]
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    log = res.stderr
    resolved: dict[str, Any] = {}
    for line in res.stdout.splitlines():
        if line.startswith("{"):
            resolved = json.loads(line)
    if res.returncode != 0:
        last = [ln for ln in log.splitlines() if "level=error" in ln] or log.splitlines()[-1:] or ["(no output)"]
        raise ToolkitError(last[-1])
    return resolved, log


def _restart_signal(root: Path, resolved: Mapping[str, Any]) -> str:
    """The installer's restart of containerd, which the lab plays (see docs/containerd.md)."""
    mode = resolved.get("restart_mode") or "signal"
    if mode == "none":
        return "none"
    if mode == "systemd":
        from lab.twin import hostcmd

        rc, _, err = hostcmd.systemctl_run(root, ["restart", "containerd"])
        if rc != 0:
            raise ToolkitError(f"unable to restart containerd: error restarting containerd using systemd: {err.strip()}")
        return "systemd: containerd.service"
    socket = resolved.get("socket") or DOCKER_SOCKET
    if socket == snap_socket_path(root):
        restart(root)
        return f"signal: {socket} (the snap's containerd restarted)"
    if socket == DOCKER_SOCKET and _docker(root):
        return f"signal: {socket} (Docker's containerd restarted; the snap's containerd did not)"
    raise ToolkitError(f"unable to restart containerd: unable to dial: dial unix {socket}: connect: no such file or "
                       "directory")


def _apply_faults(root: Path, dropin: str, faults: tuple[str, ...]) -> None:
    """Injected faults, applied to the drop-in the real toolkit wrote (lab/spec.py FAULTS)."""
    if not ({Fault.CONTAINERD_BREAKS, Fault.DROPIN_VERSION_TOO_HIGH} & set(faults)):
        return
    f = host_path(root, dropin)
    if not f.exists():
        return
    doc = tomlkit.parse(f.read_text())
    if Fault.CONTAINERD_BREAKS in faults:
        for table in (doc.get("plugins") or {}).values():
            ctrd = table.get("containerd") if hasattr(table, "get") else None
            if ctrd is None:
                continue
            rts = ctrd.get("runtimes")
            if rts is not None:
                for name in [n for n in rts if not n.startswith("nvidia")]:
                    del rts[name]
            if "default_runtime_name" in ctrd:
                del ctrd["default_runtime_name"]
    if Fault.DROPIN_VERSION_TOO_HIGH in faults:
        doc["version"] = 4
    f.write_text(tomlkit.dumps(doc))


def _runtimes_in(root: Path, dropin: str) -> list[str]:
    import tomllib

    try:
        doc = tomllib.loads(host_path(root, dropin).read_text())
    except (FileNotFoundError, tomllib.TOMLDecodeError, ValueError):
        return []
    names: set[str] = set()
    for table in (doc.get("plugins") or {}).values():
        if isinstance(table, dict):
            names.update(((table.get("containerd") or {}).get("runtimes") or {}).keys())
    return sorted(names)


def toolkit_install(host_root: Path, env: Mapping[str, str], cdi_enabled: bool,
                    faults: tuple[str, ...] | list[str] = (), *, mounts: Mapping[str, str] | None = None,
                    image: str | None = None) -> list[str]:
    """The toolkit container's start on the node: the real installer's containerd setup; returns host paths.

    ``env``: the toolkit container's env; ``mounts``: its volume mounts, container path -> hostPath (None: the
    env's paths are host paths); ``image``: the container image (its tag picks the toolkit version; default the
    v26.3 chart's). ``cdi_enabled`` is passed as CDI_ENABLED unless the env sets it. Raises ToolkitError with
    the installer's own error where the real container fails. Recorded in .twin/toolkit.json.
    """
    root = Path(host_root)
    faults = tuple(faults)
    tag = image.rpartition(":")[2] if image and ":" in image else None
    try:
        version = build_node.toolkit_version_for(tag)
    except BuildError as exc:
        raise ToolkitError(str(exc)) from exc
    derived = {"CDI_ENABLED": "true" if cdi_enabled else "false"}
    if cdi_enabled:   # what the operator's transformToolkitCtrForCDI sets (until the twin passes the real pod env)
        derived["NVIDIA_RUNTIME_SET_AS_DEFAULT"] = "false"
    run_env = _host_env({**derived, **env}, mounts)
    resolved, log = _run_toolkit(root, version, run_env, cleanup=False)
    dropin = resolved.get("drop_in") or ""
    config = resolved.get("config") or ""
    _apply_faults(root, dropin, faults)
    restarted = _restart_signal(root, resolved)
    written = [p for p in (dropin, config) if p and host_path(root, p).exists()]
    record = {
        "at": time.time(), "env": dict(env), "mounts": dict(mounts) if mounts is not None else None,
        "host_env": run_env, "toolkit_version": version, "cdi_enabled": cdi_enabled, "faults": list(faults),
        "resolved": resolved, "dropin": dropin, "config": config, "written": written, "restart": restarted,
        "import": posixpath.dirname(resolved.get("drop_in_host_path") or dropin) + "/*.toml",
        "runtimes": _runtimes_in(root, dropin), "log": log[-4000:],
    }
    update_json(root, "toolkit.json", lambda old: {"installs": [*((old or {}).get("installs") or [])[-20:], record],
                                                   "last": record, "installed": True})
    return written


def toolkit_uninstall(host_root: Path) -> list[str]:
    """The toolkit container's cleanup (pod deleted): the real installer's containerd cleanup, same env.

    Returns the host paths it changed or removed.
    """
    root = Path(host_root)
    rec = (read_json(twin_dir(root) / "toolkit.json") or {}).get("last")
    if not rec or not (read_json(twin_dir(root) / "toolkit.json") or {}).get("installed"):
        return []
    paths = [p for p in (rec.get("dropin"), rec.get("config")) if p]
    before = {p: (host_path(root, p).read_bytes() if host_path(root, p).exists() else None) for p in paths}
    error = None
    try:
        resolved, log = _run_toolkit(root, rec["toolkit_version"], dict(rec["host_env"]), cleanup=True)
        _restart_signal(root, resolved)
    except ToolkitError as exc:   # the container logs it and exits; the pod is gone anyway
        error, log = str(exc), ""
    changed = [p for p in paths
               if (host_path(root, p).read_bytes() if host_path(root, p).exists() else None) != before[p]]
    update_json(root, "toolkit.json", lambda old: {**(old or {}), "installed": False, "uninstalled_at": time.time(),
                                                   "cleanup_error": error, "cleanup_log": log[-4000:]})
    return changed

