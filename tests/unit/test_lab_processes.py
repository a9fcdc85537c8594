"""lab/processes.py: a lab process is recognised by its pid and start time, also before it has exec'd."""

from __future__ import annotations

import sys

import psutil

from lab import processes
from lab.state import LabPaths


def _paths(tmp_path) -> LabPaths:
    paths = LabPaths(root=tmp_path / "state")
    paths.run.mkdir(parents=True, exist_ok=True)
    paths.logs.mkdir(parents=True, exist_ok=True)
    return paths


def test_a_started_process_is_running_and_stopped(tmp_path) -> None:
    paths = _paths(tmp_path)
    proc = processes.start(paths, "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert processes.running(paths, "sleeper") is not None, "the process just started was judged not running"
        assert processes.start(paths, "sleeper", ["false"]).pid == proc.pid, "a second start started another one"
    finally:
        assert processes.stop(paths, "sleeper", timeout=5)
    assert processes.running(paths, "sleeper") is None


def test_command_line_not_yet_exec_d_is_still_the_process(tmp_path) -> None:
    """Between fork and exec the child's command line is its parent's: the start time decides, not the command
    line (judged by the command line, etcd was once reported "exited" while it started, and started twice)."""
    paths = _paths(tmp_path)
    me = psutil.Process()
    processes.pid_file(paths, "etcd").write_text(f"{me.pid} {me.create_time()!r}")
    (paths.run / "etcd.cmd").write_text("\0".join(["/lab/bin/etcd", "--data-dir", "x"]))   # not what we run
    assert processes.running(paths, "etcd") is not None


def test_a_reused_pid_is_not_the_process(tmp_path) -> None:
    paths = _paths(tmp_path)
    me = psutil.Process()
    processes.pid_file(paths, "etcd").write_text(f"{me.pid} {me.create_time() - 3600.0!r}")   # started an hour before
    assert processes.running(paths, "etcd") is None


def test_an_old_pid_file_falls_back_to_the_command_line(tmp_path) -> None:
    paths = _paths(tmp_path)
    me = psutil.Process()
    processes.pid_file(paths, "etcd").write_text(str(me.pid))
    (paths.run / "etcd.cmd").write_text("\0".join(me.cmdline()))
    assert processes.running(paths, "etcd") is not None
    (paths.run / "etcd.cmd").write_text("\0".join(["/lab/bin/etcd"]))
    assert processes.running(paths, "etcd") is None
