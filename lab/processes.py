"""Start, find and stop the lab's background processes by pid file, in their own sessions."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

from lab.state import LabPaths


def pid_file(paths: LabPaths, name: str) -> Path:
    return paths.run / f"{name}.pid"


def running(paths: LabPaths, name: str) -> psutil.Process | None:
    pf = pid_file(paths, name)
    if not pf.exists():
        return None
    try:
        pid_text, _, started = pf.read_text().strip().partition(" ")
        proc = psutil.Process(int(pid_text))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        # Guard against pid reuse: the process must be the one started (its start time, which exec keeps). The
        # program alone is the same for every lab's kube-apiserver: a stale pid file of one lab, its pid reused by
        # another lab's process, made `down` or a restart stop the other lab's process. The command line is no
        # guard: between fork and exec (long on a loaded machine) the child still has Python's, and a process
        # judged gone then was reported as "etcd exited" (empty log) and started a second time ("address already
        # in use" while the first still ran).
        if started:
            return proc if abs(proc.create_time() - float(started)) < 0.01 else None
        marker = (paths.run / f"{name}.cmd").read_text() if (paths.run / f"{name}.cmd").exists() else ""
        if marker and marker.split("\0") != proc.cmdline():   # a pid file written before start times were kept
            return None
        return proc
    except (ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def start(paths: LabPaths, name: str, argv: list[str], env: dict[str, str] | None = None,
          cwd: Path | None = None) -> psutil.Process:
    """Start argv detached (own session), logging to logs/<name>.log; no-op if already running."""
    existing = running(paths, name)
    if existing is not None:
        return existing
    log = open(paths.logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, **(env or {})}, cwd=cwd,
    )
    log.close()
    started = psutil.Process(proc.pid)
    pid_file(paths, name).write_text(f"{proc.pid} {started.create_time()!r}")
    (paths.run / f"{name}.cmd").write_text("\0".join(argv))
    return started


def stop(paths: LabPaths, name: str, timeout: float = 10.0) -> bool:
    """SIGTERM the process group, SIGKILL after timeout; True if something was stopped."""
    proc = running(paths, name)
    pid_file(paths, name).unlink(missing_ok=True)
    if proc is None:
        return False
    try:
        pgid = os.getpgid(proc.pid)
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
            break
        time.sleep(0.05)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=5)
    with contextlib.suppress(psutil.TimeoutExpired, psutil.NoSuchProcess, ChildProcessError):
        proc.wait(timeout=0)  # reap if it was our child
    return True


def log_tail(paths: LabPaths, name: str, lines: int = 30) -> str:
    p = paths.logs / f"{name}.log"
    if not p.exists():
        return "(no log)"
    return "\n".join(p.read_text(errors="replace").splitlines()[-lines:])
