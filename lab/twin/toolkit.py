"""The toolkit container on a node: the real installer's containerd setup and cleanup (lab/toolkit_runtime, built from
the image's nvidia-container-toolkit version) run with the pod's env and mounts in the node's host view, then the
installer's restart of containerd as the lab plays it (docs/containerd.md). The node's containerd itself is
lab/twin/containerd.py; `systemctl restart` is lab/twin/hostcmd.py (this module is above both: no import cycle).
"""

from __future__ import annotations

import json
import posixpath
import subprocess
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomlkit

from lab import build_node
from lab.build import BuildError
from lab.spec import Fault
from lab.twin import hostcmd
from lab.twin.containerd import DOCKER_SOCKET, restart, snap_socket_path
from lab.twin.hostview import ensure_dev_null, host_path, load_node, read_json, twin_dir, update_json

TOOLKIT_DIR = "/usr/local/nvidia/toolkit"
PRIVATE = "/.twin/toolkit-container"                   # a container path no hostPath mount covers lands here
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# env of the toolkit container that hold container paths (runtime.Flags of nvidia-ctk-installer)
PATH_ENV = ("RUNTIME_CONFIG", "CONTAINERD_CONFIG", "DOCKER_CONFIG", "RUNTIME_DROP_IN_CONFIG", "RUNTIME_SOCKET",
            "CONTAINERD_SOCKET", "DOCKER_SOCKET")
DEFAULT_MOUNTS = {"/host": "/"}                        # the toolkit DaemonSet's host-root volume


class ToolkitError(RuntimeError):
    """The toolkit container fails (and crash-loops): its own error text."""


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

