"""The ``snap``, ``systemctl`` and ``docker`` of a lab host view (shims in <root>/usr/bin call the *_main functions).

Each ``*_run(host_root, argv) -> (exit status, stdout, stderr)`` is pure enough to test directly; the ``*_main``
functions print and return the status. State lives in <root>/.twin/: containerd.json (lab/twin/containerd.py),
systemd.json (units: enabled, active, starts, result), docker.json (the daemon's loaded config), snap.json.
What each command answers: lab/twin/README-host.md.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from lab.spec import Fault
from lab.twin import containerd, nvidia_smi, outputs
from lab.twin.gpus import gpus_for, lspci_lines
from lab.twin.hostview import DISTRO_CONTAINERD, host_path, load_node, read_json, twin_dir, update_json

__all__ = [
    "DOCKER_NOT_RUNNING",
    "dmesg_main",
    "dmesg_run",
    "docker_main",
    "docker_run",
    "docker_start_record",
    "journalctl_main",
    "journalctl_run",
    "kernel_log",
    "lspci_main",
    "lspci_run",
    "snap_main",
    "snap_run",
    "systemctl_main",
    "systemctl_run",
]

Result = tuple[int, str, str]

K8S_SERVICES = ("containerd", "k8s-apiserver-proxy", "k8s-dqlite", "k8sd", "kube-apiserver",
                "kube-controller-manager", "kube-proxy", "kube-scheduler", "kubelet")
WORKER_SERVICES = ("containerd", "k8s-apiserver-proxy", "k8sd", "kube-proxy", "kubelet")
DAEMON_JSON = "/etc/docker/daemon.json"
DOCKER_NOT_RUNNING = ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                      "Is the docker daemon running?")


def _print(result: Result) -> int:
    rc, out, err = result
    sys.stdout.write(out)
    sys.stderr.write(err)
    sys.stdout.flush()
    sys.stderr.flush()
    return rc


def _root(host_root: Path | None) -> Path:
    return host_root if host_root is not None else Path(sys.argv[0]).resolve().parent.parent.parent


def _args(argv: list[str] | None) -> list[str]:
    return list(sys.argv[1:] if argv is None else argv)


# ================================================================================================= snap
def _services(root: Path) -> tuple[str, ...]:
    try:
        return K8S_SERVICES if load_node(root).control_plane else WORKER_SERVICES
    except FileNotFoundError:
        return WORKER_SERVICES


def _service_state(root: Path, svc: str) -> str:
    if svc == "containerd":
        st = containerd.state(root)
        return "active" if st.get("daemon_up", st.get("running", True)) else "inactive"
    return "active"


def snap_run(host_root: Path, argv: list[str]) -> Result:
    root = Path(host_root)
    if not argv:
        return 1, "", "error: the required argument `<command>` was not provided\n"
    cmd, args = argv[0], argv[1:]
    if cmd in ("restart", "start", "stop"):
        flags = [a for a in args if a.startswith("-")]
        names = [a for a in args if not a.startswith("-")]
        if any(f not in ("--reload", "--enable", "--disable", "--no-wait") for f in flags) or not names:
            return 1, "", f'error: unknown flag `{flags[0].lstrip("-")}\'\n' if flags else (
                "error: the required argument `<service> (at least 1 argument)` was not provided\n")
        targets: list[str] = []
        for name in names:
            snap_name, _, svc = name.partition(".")
            if snap_name != "k8s":
                return 1, "", f'error: snap "{snap_name}" not found\n'
            if svc and svc not in _services(root):
                return 1, "", f'error: snap "k8s" has no service "{svc}"\n'
            targets.extend([svc] if svc else list(_services(root)))
        for svc in targets:
            if svc == "containerd" and cmd in ("restart", "start"):
                containerd.restart(root)   # snap reports success even when containerd then fails
        update_json(root, "snap.json", lambda old: _snap_record(old, cmd, targets))
        word = {"restart": "Restarted.", "start": "Started.", "stop": "Stopped."}[cmd]
        return 0, word + "\n", ""
    if cmd == "services":
        services = list(_services(root))
        if args:
            chosen = []
            for name in args:
                snap_name, _, svc = name.partition(".")
                if snap_name != "k8s":
                    return 1, "", f'error: snap "{snap_name}" not found\n'
                if svc and svc not in services:
                    return 1, "", f'error: snap "k8s" has no service "{svc}"\n'
                chosen.extend([svc] if svc else services)
            services = chosen
        rows = [("Service", "Startup", "Current", "Notes")]
        rows += [(f"k8s.{s}", "enabled", _service_state(root, s), "-") for s in services]
        width = [max(len(r[i]) for r in rows) for i in range(3)]
        text = "".join(f"{r[0]:<{width[0]}}  {r[1]:<{width[1]}}  {r[2]:<{width[2]}}  {r[3]}\n" for r in rows)
        return 0, text, ""
    if cmd == "list":
        if args and args != ["k8s"]:
            return 1, "", "error: no matching snaps installed\n"
        try:
            track = load_node(root).k8s_snap_track
        except FileNotFoundError:
            track = "1.34"
        rows = [("Name", "Version", "Rev", "Tracking", "Publisher", "Notes"),
                ("k8s", f"v{track}.0", "-", f"{track}-classic/stable", "canonical✓", "classic")]
        width = [max(len(r[i]) for r in rows) for i in range(5)]
        return 0, "".join("  ".join(f"{c:<{width[i]}}" for i, c in enumerate(r[:5])) + f"  {r[5]}\n"
                          for r in rows), ""
    return 1, "", f"error: unknown command \"{cmd}\", see 'snap help'.\n"


def _snap_record(old: Any, cmd: str, targets: list[str]) -> dict[str, Any]:
    rec = dict(old or {})
    log = list(rec.get("log") or [])
    log.append({"at": time.time(), "command": cmd, "services": targets})
    rec["log"] = log[-200:]
    return rec


def snap_main(host_root: Path | None = None, argv: list[str] | None = None) -> int:
    return _print(snap_run(_root(host_root), _args(argv)))


# ================================================================================================= systemctl
_UNIT_SUFFIXES = (".service", ".socket", ".target", ".timer", ".mount", ".path", ".slice", ".scope", ".device")


def _unit(name: str) -> str:
    return name if name.endswith(_UNIT_SUFFIXES) else f"{name}.service"


def _unit_file(root: Path, unit: str) -> Path | None:
    for d in ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"):
        p = host_path(root, f"{d}/{unit}")
        if p.is_file():
            return p
    return None


def _parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    lines = text.replace("\\\n", " ").splitlines()
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        if current is None or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if key in ("ExecStart", "ExecStartPre", "ExecStartPost") and value == "":
            current[key] = []      # an empty assignment resets the list
            continue
        current.setdefault(key, []).append(value)
    return sections


_SIMPLE = {"mkdir", "touch"}


def _run_simple(root: Path, words: list[str]) -> str | None:
    """Run `mkdir -p PATH...` / `touch PATH...` under the host root; None when done, else why not."""
    if not words:
        return "empty command"
    prog = words[0]
    base = prog.rsplit("/", 1)[-1]
    if prog not in (base, f"/bin/{base}", f"/usr/bin/{base}") or base not in _SIMPLE:
        return f"{prog}: the lab's systemctl runs only mkdir -p / touch (and sh -c of those)"
    args = words[1:]
    opts = [a for a in args if a.startswith("-")]
    paths = [a for a in args if not a.startswith("-")]
    if base == "mkdir" and any(o not in ("-p", "--parents") for o in opts):
        return f"mkdir: unsupported options {opts}"
    if base == "touch" and opts:
        return f"touch: unsupported options {opts}"
    if not paths:
        return f"{base}: missing operand"
    for p in paths:
        if not p.startswith("/"):
            return f"{base}: {p}: relative paths are not supported (systemd runs with / as working directory)"
        try:
            target = host_path(root, p)
        except ValueError as exc:
            return str(exc)
        if base == "mkdir":
            if "-p" not in opts and "--parents" not in opts and not target.parent.is_dir():
                return f"mkdir: cannot create directory '{p}': No such file or directory"
            target.mkdir(parents=True, exist_ok=True)
        else:
            if not target.parent.is_dir():
                return f"touch: cannot touch '{p}': No such file or directory"
            target.touch()
    return None


def _exec_line(root: Path, value: str) -> str | None:
    ignore = False
    while value and value[0] in "-@:+!":
        ignore = ignore or value[0] == "-"
        value = value[1:]
    try:
        words = shlex.split(value)
    except ValueError as exc:
        return f"cannot parse ExecStart={value!r}: {exc}"
    if len(words) == 3 and words[0] in ("sh", "/bin/sh", "/usr/bin/sh", "bash", "/bin/bash", "/usr/bin/bash") \
            and words[1] == "-c":
        for part in (p.strip() for chunk in words[2].split("&&") for p in chunk.split(";")):
            if not part:
                continue
            err = _run_simple(root, shlex.split(part))
            if err and not ignore:
                return err
        return None
    err = _run_simple(root, words)
    return None if ignore else err


def _start_unit(root: Path, unit: str) -> tuple[bool, str, str | None]:
    """Start ``unit``: (ok, resulting ActiveState, failure message)."""
    if unit == _runtime_unit(root):
        ev = containerd.restart(root)
        return True, "active" if ev.daemon_up else "failed", ev.error
    if unit == "docker.service":
        rec = update_json(root, "docker.json", lambda old: docker_start_record(
            root, restarts=int((old or {}).get("restarts", 0)) + 1))
        return bool(rec["running"]), "active" if rec["running"] else "failed", rec.get("error")
    path = _unit_file(root, unit)
    if path is None:
        known = read_json(twin_dir(root) / "systemd.json", {}).get("units", {})
        if unit in known:
            return True, "active", None
        return False, "inactive", None
    sections = _parse_unit(path.read_text())
    service = sections.get("Service", {})
    for key in ("ExecStartPre", "ExecStart", "ExecStartPost"):
        for line in service.get(key, []):
            err = _exec_line(root, line)
            if err:
                return False, "failed", err
    oneshot = (service.get("Type") or ["simple"])[-1] == "oneshot"
    remain = (service.get("RemainAfterExit") or ["no"])[-1].lower() in ("yes", "true", "1", "on")
    return True, "inactive" if oneshot and not remain else "active", None


def _job_failed(unit: str) -> str:
    return (f"Job for {unit} failed because the control process exited with error code.\n"
            f'See "systemctl status {unit}" and "journalctl -xeu {unit}" for details.\n')


def systemctl_run(host_root: Path, argv: list[str]) -> Result:
    root = Path(host_root)
    args = [a for a in argv if a not in ("--no-pager", "--quiet", "-q", "--no-block", "--system")]
    quiet = "--quiet" in argv or "-q" in argv
    if not args:
        return 1, "", "Too few arguments.\n"
    cmd, rest = args[0], args[1:]
    now = "--now" in rest
    units = [_unit(u) for u in rest if not u.startswith("-")]
    state = read_json(twin_dir(root) / "systemd.json", {"daemon_reloads": 0, "units": {}})

    def save(fn: Any) -> None:
        update_json(root, "systemd.json", fn, {"daemon_reloads": 0, "units": {}})

    if cmd == "daemon-reload":
        def reload(d: dict[str, Any]) -> dict[str, Any]:
            d["daemon_reloads"] = int(d.get("daemon_reloads", 0)) + 1
            d["reloaded_at"] = time.time()
            return d
        save(reload)
        return 0, "", ""
    if cmd in ("enable", "disable", "start", "stop", "restart", "is-enabled", "is-active", "status") and not units:
        return 1, "", "Too few arguments.\n"
    if cmd in ("enable", "disable"):
        out_err = ""
        for unit in units:
            known = state.get("units", {}).get(unit)
            path = _unit_file(root, unit)
            if path is None and known is None:
                return 1, "", f"Failed to {cmd} unit: Unit file {unit} does not exist.\n"
            if cmd == "enable" and path is not None and not (known or {}).get("enabled"):
                out_err += (f"Created symlink /etc/systemd/system/multi-user.target.wants/{unit} \u2192 "
                            f"/etc/systemd/system/{unit}.\n")
            if cmd == "disable" and (known or {}).get("enabled"):
                out_err += f"Removed \"/etc/systemd/system/multi-user.target.wants/{unit}\".\n"

            def mark(d: dict[str, Any], unit: str = unit) -> dict[str, Any]:
                u = d.setdefault("units", {}).setdefault(unit, {"active": "inactive", "starts": 0})
                u["enabled"] = cmd == "enable"
                return d
            save(mark)
        if now:
            sub = systemctl_run(root, ["start" if cmd == "enable" else "stop", *units])
            return sub[0], sub[1], out_err + sub[2]
        return 0, "", out_err
    if cmd in ("start", "restart"):
        for unit in units:
            ok, active, message = _start_unit(root, unit)
            if not ok and active == "inactive" and message is None:
                return 5, "", f"Failed to {cmd} {unit}: Unit {unit} not found.\n"

            def mark(d: dict[str, Any], unit: str = unit, ok: bool = ok, active: str = active,
                     message: str | None = message) -> dict[str, Any]:
                u = d.setdefault("units", {}).setdefault(unit, {"enabled": False, "starts": 0})
                u["active"] = active
                u["result"] = "success" if ok else "exit-code"
                u["message"] = message
                u["starts"] = int(u.get("starts", 0)) + 1
                u["at"] = time.time()
                return d
            save(mark)
            if not ok:
                return 1, "", _job_failed(unit)
        return 0, "", ""
    if cmd == "stop":
        for unit in units:
            def stop(d: dict[str, Any], unit: str = unit) -> dict[str, Any]:
                d.setdefault("units", {}).setdefault(unit, {"enabled": False, "starts": 0})["active"] = "inactive"
                return d
            save(stop)
        return 0, "", ""
    if cmd == "is-enabled":
        rc, out = 0, ""
        for unit in units:
            known = state.get("units", {}).get(unit)
            if known is None and _unit_file(root, unit) is None:
                return 1, "", f"Failed to get unit file state for {unit}: No such file or directory\n"
            enabled = bool((known or {}).get("enabled"))
            out += "enabled\n" if enabled else "disabled\n"
            rc = rc if enabled else 1
        return rc, "" if quiet else out, ""
    if cmd == "is-active":
        rc, out = 0, ""
        for unit in units:
            active = _active(root, state, unit)
            out += active + "\n"
            rc = rc if active == "active" else 3
        return rc, "" if quiet else out, ""
    if cmd == "status":
        unit = units[0]
        known = state.get("units", {}).get(unit)
        if known is None and _unit_file(root, unit) is None:
            return 4, "", f"Unit {unit} could not be found.\n"
        active = _active(root, state, unit)
        path = _unit_file(root, unit)
        loaded = f"loaded ({path and '/' + path.relative_to(root).as_posix()}; " \
                 f"{'enabled' if (known or {}).get('enabled') else 'disabled'})"
        word = {"active": "active (running)", "inactive": "inactive (dead)", "failed": "failed (Result: exit-code)"}
        msg = (known or {}).get("message") or _unit_message(root, unit)
        text = f"\u25cf {unit}\n     Loaded: {loaded}\n     Active: {word.get(active, active)}\n"
        if msg:
            text += f"\n{msg}\n"
        return (0 if active == "active" else 3), text, ""
    return 1, "", f'Unknown command verb "{cmd}".\n'


def _runtime_unit(root: Path) -> str:
    """The systemd unit of the containerd the kubelet uses (k8s-snap's; another distribution's: DISTRO_CONTAINERD)."""
    try:
        distribution = load_node(root).distribution
    except FileNotFoundError:
        distribution = "k8s-snap"
    return DISTRO_CONTAINERD.get(distribution, {}).get("unit", "snap.k8s.containerd.service")


def _unit_message(root: Path, unit: str) -> str | None:
    if unit == _runtime_unit(root):
        return containerd.state(root).get("error")
    if unit == "docker.service":
        return (read_json(twin_dir(root) / "docker.json") or {}).get("error")
    return None


def _active(root: Path, state: dict[str, Any], unit: str) -> str:
    if unit == _runtime_unit(root):
        st = containerd.state(root)
        return "active" if st.get("daemon_up", st.get("running", True)) else "failed"
    if unit == "docker.service":
        rec = read_json(twin_dir(root) / "docker.json")
        if rec is None:
            return "inactive"
        return "active" if rec.get("running") else "failed"
    known = state.get("units", {}).get(unit)
    return (known or {}).get("active", "inactive")


def systemctl_main(host_root: Path | None = None, argv: list[str] | None = None) -> int:
    return _print(systemctl_run(_root(host_root), _args(argv)))


# ================================================================================================= docker
def _go_json_error(text: str) -> str | None:
    """Why Docker would reject daemon.json (None: it parses to an object)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"invalid character in daemon.json at line {exc.lineno} column {exc.colno}: {exc.msg}"
    if not isinstance(data, dict):
        return f"json: cannot unmarshal {type(data).__name__} into Go value of type map[string]interface {{}}"
    return None


def docker_start_record(root: Path, restarts: int) -> dict[str, Any]:
    """What dockerd does at (re)start: load /etc/docker/daemon.json, or refuse to start."""
    path = host_path(root, DAEMON_JSON)
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = "{}"
    why = _go_json_error(text) if text.strip() else None
    if why is None:
        loaded = json.loads(text) if text.strip() else {}
        return {"running": True, "loaded": loaded, "error": None, "restarts": restarts, "at": time.time()}
    error = f"unable to configure the Docker daemon with file {DAEMON_JSON}: {why}"
    return {"running": False, "loaded": None, "error": error, "restarts": restarts, "at": time.time()}


def _runtimes(loaded: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"io.containerd.runc.v2": {"path": "runc"}, "runc": {"path": "runc"}}
    for name, cfg in (loaded.get("runtimes") or {}).items():
        if isinstance(cfg, dict):
            entry = {"path": cfg.get("path", "")}
            if cfg.get("runtimeArgs"):
                entry["runtimeArgs"] = cfg["runtimeArgs"]
            out[name] = entry
    return dict(sorted(out.items()))


def docker_run(host_root: Path, argv: list[str]) -> Result:
    root = Path(host_root)
    rec = read_json(twin_dir(root) / "docker.json")
    if not argv:
        return 0, "Usage:  docker [OPTIONS] COMMAND\n", ""
    cmd, rest = argv[0], argv[1:]
    if cmd in ("info", "version", "run", "ps") and (rec is None or not rec.get("running")):
        return 1, "", DOCKER_NOT_RUNNING + "\n"
    loaded = (rec or {}).get("loaded") or {}
    if cmd == "info":
        fmt = None
        it = iter(rest)
        for a in it:
            if a in ("--format", "-f"):
                fmt = next(it, "")
            elif a.startswith("--format="):
                fmt = a.partition("=")[2]
            else:
                return 125, "", f"unknown flag: {a}\nSee 'docker info --help'.\n"
        runtimes = _runtimes(loaded)
        default = loaded.get("default-runtime", "runc")
        if fmt is None:
            text = ("Client:\n Context:    default\n\nServer:\n"
                    f" Runtimes: {' '.join(runtimes)}\n Default Runtime: {default}\n"
                    f" Docker Root Dir: {loaded.get('data-root', '/var/lib/docker')}\n")
            return 0, text, ""
        fmt = fmt.strip()
        if fmt == "{{json .Runtimes}}":
            return 0, json.dumps(runtimes, separators=(",", ":")) + "\n", ""
        if fmt == "{{.DefaultRuntime}}":
            return 0, default + "\n", ""
        if fmt == "{{json .DefaultRuntime}}":
            return 0, json.dumps(default) + "\n", ""
        if fmt == "{{.DockerRootDir}}":
            return 0, loaded.get("data-root", "/var/lib/docker") + "\n", ""
        return 1, "", f"template parsing error: the lab's docker supports only .Runtimes / .DefaultRuntime / " \
                      f".DockerRootDir, not {fmt}\n"
    if cmd == "run":
        runtime, image, command = loaded.get("default-runtime", "runc"), None, []
        it = iter(rest)
        for a in it:
            if image is not None:
                command.append(a)
                continue
            if a.startswith("--runtime="):
                runtime = a.partition("=")[2]
            elif a == "--runtime":
                runtime = next(it, "")
            elif a in ("--gpus", "-e", "--env", "--name", "-v", "--volume", "--entrypoint", "--network"):
                next(it, None)
            elif a.startswith("-"):
                continue
            else:
                image = a
        if image is None:
            return 125, "", '"docker run" requires at least 1 argument.\n'
        if runtime not in _runtimes(loaded):
            return 125, "", f"docker: Error response from daemon: unknown or invalid runtime name: {runtime}.\n"
        if command[:1] == ["nvidia-smi"]:
            return nvidia_smi.run(root, command[1:])
        return 125, "", "docker: the lab twin's docker runs only `nvidia-smi` in containers.\n"
    if cmd == "version":
        return 0, "Client: Docker Engine - Community\n Version:           29.2.1\n\n" \
                  "Server: Docker Engine - Community\n Engine:\n  Version:          29.2.1\n", ""
    return 1, "", f"docker: unknown command: docker {cmd}\n\nRun 'docker --help' for more information\n"


def docker_main(host_root: Path | None = None, argv: list[str] | None = None) -> int:
    return _print(docker_run(_root(host_root), _args(argv)))


# ------------------------------------------------------------------------------------------------ kernel log, PCI bus
def kernel_log(root: Path, now: float | None = None) -> list[tuple[float, str]]:
    """(epoch seconds, message) of the host's kernel log: the real H200's boot lines at the host view's seed time,
    and with the xid-79 fault the real Xid 79 lines for GPU 0, a minute before ``now``."""
    now = time.time() if now is None else now
    marker = twin_dir(root) / "seeded"
    boot = marker.stat().st_mtime if marker.exists() else now - 3600
    lines = [(boot + up, text) for up, text in outputs.KERNEL_BOOT]
    node = load_node(root)
    records = gpus_for(node)
    if Fault.XID_79 in node.faults and records:
        domain, bus, rest = records[0].pci_bus_id.split(":")
        where = f"{int(domain, 16):04x}:{bus.lower()}:{rest.split('.')[0].lower()}"
        lines += [(now - 60, t.format(bus=where, uuid=records[0].uuid)) for t in outputs.XID_79]
    return lines


def _iso(epoch: float, sep: str = "", frac: bool = False) -> str:
    import datetime as dt

    t = dt.datetime.fromtimestamp(epoch, dt.UTC)
    if frac:
        return t.strftime("%Y-%m-%dT%H:%M:%S,%f+00:00")
    return t.strftime("%Y-%m-%dT%H:%M:%S+0000")


def journalctl_run(host_root: Path, argv: list[str]) -> Result:
    """``journalctl -k [-b] [-n N] [-q] [--no-pager] [-o short-iso] [--since @EPOCH]``: the kernel log in the
    short-iso format (``2026-12-01T08:04:34+0000 <host> kernel: <message>``); anything else: no entries."""
    if "-k" not in argv and "--dmesg" not in argv:
        return 0, "-- No entries --\n", ""
    node = load_node(host_root)
    lines = kernel_log(host_root)
    it = iter(argv)
    for arg in it:
        if arg in ("--since", "-S"):
            value = next(it, "")
            if value.startswith("@"):
                lines = [(t, m) for t, m in lines if t >= float(value[1:])]
        elif arg in ("-n", "--lines"):
            lines = lines[-int(next(it, "10")):]
    if not lines:
        return 0, "" if "-q" in argv else "-- No entries --\n", ""
    return 0, "".join(f"{_iso(t)} {node.name} kernel: {m}\n" for t, m in lines), ""


def journalctl_main(host_root: Path | None = None, argv: list[str] | None = None) -> int:
    return _print(journalctl_run(_root(host_root), _args(argv)))


def dmesg_run(host_root: Path, argv: list[str]) -> Result:
    """``dmesg`` (``[ seconds since boot] message``) or ``dmesg --time-format iso``."""
    lines = kernel_log(host_root)
    if "--time-format" in argv and "iso" in argv:
        return 0, "".join(f"{_iso(t, frac=True)} {m}\n" for t, m in lines), ""
    boot = lines[0][0] if lines else 0.0
    return 0, "".join(f"[{t - boot:12.6f}] {m}\n" for t, m in lines), ""


def dmesg_main(host_root: Path | None = None, argv: list[str] | None = None) -> int:
    return _print(dmesg_run(_root(host_root), _args(argv)))


def lspci_run(host_root: Path, argv: list[str]) -> Result:
    """``lspci -n -D [-d 10de:]``: the node's NVIDIA GPUs (lab/twin/gpus.py lspci_lines)."""
    return 0, "".join(line + "\n" for line in lspci_lines(load_node(host_root))), ""


def lspci_main(host_root: Path | None = None, argv: list[str] | None = None) -> int:
    return _print(lspci_run(_root(host_root), _args(argv)))
