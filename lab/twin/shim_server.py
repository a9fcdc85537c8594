"""One long-lived helper per lab that answers the host views' shims (`nvidia-smi`, `snap`, `systemctl`, ...).

A Python shim costs a fresh interpreter and the twin's imports (about 0.1 s of CPU) per call; a 1000-node audit
runs thousands. Here the shims in ``<root>/usr/bin`` are ``sh`` scripts that run the small C client
(lab/twin/shim_client.c, built once into the user cache with the system's C compiler) with the lab's socket;
the client sends the host root, the shim's name and its arguments to this server, which runs the same
``*_run(host_root, argv)`` function the Python shim runs and sends back the exit status and the output. With no
server listening (a host view seeded without a lab, as tests/twin_host do) the client runs the Python shim, as
before. Without a C compiler the shims stay Python.

``python -m lab.twin.shim_server --socket PATH`` serves (the lab starts it as its ``twin-host`` process).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import shutil
import signal
import socketserver
import subprocess
import sys
import threading
from pathlib import Path

from lab import versions

SOURCE = Path(__file__).with_name("shim_client.c")

# shim name -> (module, function returning (exit status, stdout, stderr))
RUNS: dict[str, tuple[str, str]] = {
    "nvidia-smi": ("lab.twin.nvidia_smi", "run"),
    "snap": ("lab.twin.hostcmd", "snap_run"),
    "systemctl": ("lab.twin.hostcmd", "systemctl_run"),
    "docker": ("lab.twin.hostcmd", "docker_run"),
    "journalctl": ("lab.twin.hostcmd", "journalctl_run"),
    "dmesg": ("lab.twin.hostcmd", "dmesg_run"),
    "lspci": ("lab.twin.hostcmd", "lspci_run"),
}


def socket_path(state_root: Path) -> Path:
    """The lab's socket: short (a unix socket path has at most 107 bytes) and distinct per lab state folder."""
    digest = hashlib.sha256(str(state_root.resolve()).encode()).hexdigest()[:16]
    return Path("/tmp") / f"gnc-twin-{digest}.sock"


_BUILD_LOCK = threading.Lock()


def client_binary() -> Path | None:
    """The C client, built once per source version into the user cache; None without a C compiler."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    target = versions.cache_root() / f"shim-client-{digest}" / "gnc-shim"
    if target.exists():
        return target
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    with _BUILD_LOCK:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".gnc-shim.{os.getpid()}.tmp")
        done = subprocess.run([cc, "-O2", "-o", str(tmp), str(SOURCE)], capture_output=True, text=True)
        if done.returncode != 0:
            tmp.unlink(missing_ok=True)
            return None
        os.replace(tmp, target)
    return target


def answer(request: bytes) -> bytes:
    """One shim call: ``root\\0name\\0arg\\0...`` -> ``"RC OUTLEN ERRLEN\\n" + stdout + stderr``."""
    parts = request.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    if len(parts) < 2:
        return _reply(2, "", "shim server: a request is ROOT NAME ARG... (NUL-separated)\n")
    root, name, *args = (p.decode("utf-8", errors="surrogateescape") for p in parts)
    if name not in RUNS:
        return _reply(127, "", f"shim server: no shim {name!r}\n")
    module, func = RUNS[name]
    try:
        rc, out, err = getattr(importlib.import_module(module), func)(Path(root), args)
    except Exception as exc:  # noqa: BLE001 - the shim's own crash, reported as the Python shim would die
        return _reply(1, "", f"Traceback: {type(exc).__name__}: {exc}\n")
    return _reply(rc, out, err)


def _reply(rc: int, out: str, err: str) -> bytes:
    o = out.encode("utf-8", errors="surrogateescape")
    e = err.encode("utf-8", errors="surrogateescape")
    return f"{rc} {len(o)} {len(e)}\n".encode() + o + e


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        request = self.rfile.read()
        self.wfile.write(answer(request))


class Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


def start(path: Path) -> Server:
    """Serve on ``path`` in a background thread (tests and benches; the lab runs ``main``)."""
    path.unlink(missing_ok=True)
    server = Server(str(path), _Handler)
    threading.Thread(target=server.serve_forever, name="shim-server", daemon=True).start()
    return server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True, type=Path)
    args = ap.parse_args()
    for module, _ in RUNS.values():  # imported once, before the first call
        importlib.import_module(module)
    args.socket.unlink(missing_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # `lab down`: leave no socket behind
    with Server(str(args.socket), _Handler) as server:
        try:
            server.serve_forever()
        finally:
            args.socket.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
