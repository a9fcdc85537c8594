"""Per-node DCGM exporter endpoints: HTTP on the exporter pod's loopback IP, port 9400, serving
Prometheus text in dcgm-exporter's format for the GPUs the node's nvidia-smi reports."""

from __future__ import annotations

import contextlib
import http.server
import json
import selectors
import threading
import time
from pathlib import Path

from lab.spec import Fault, NodeSpec
from lab.state import LabPaths
from lab.twin import mig

PORT = 9400
# The exporter's pods: the ClusterPolicy operand, and the GPUCluster's DRA flavour (manifests/state-dcgm-exporter of
# the v26.7.0 operator: DaemonSet and pod label app=nvidia-dcgm-exporter-dra, port 9400, an admin-access claim on
# all gpu.nvidia.com devices of the node, privileged: DCGM sees every GPU of the host)
CLUSTERPOLICY_APP = "nvidia-dcgm-exporter"
DRA_APP = "nvidia-dcgm-exporter-dra"
APPS = (CLUSTERPOLICY_APP, DRA_APP)


def down(node: NodeSpec) -> bool:
    """The node's exporter pod runs but serves nothing (fault dcgm-down, or a broken driver)."""
    return Fault.DCGM_DOWN in node.faults or Fault.DRIVER_BROKEN in node.faults
_METRICS = (
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).", lambda g: 1980),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", lambda g: g.temperature or 36),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", lambda g: g.power_draw_w or 114.99),
    ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter",
     "Total energy consumption since boot (in mJ).", lambda g: 123456789),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", lambda g: g.utilization or 0),
    ("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered.", lambda g: 0),
)
_FB = (
    ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).",
     lambda g: (g.memory_total_mib or 0) - (g.memory_used_mib or 0)),
    ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", lambda g: g.memory_used_mib or 0),
)

_MIG_ONLY = (("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "gauge", "Ratio of time the graphics engine is active.", None),)


def render(node: NodeSpec, gpus: list, mig_state: dict | None = None) -> str:
    """The exporter's text; with MIG instances (lab/twin/mig.py) their samples follow each GPU family's."""
    unified = any(g.memory_total_mib is None for g in gpus)
    out: list[str] = []
    families = _METRICS + (() if unified else _FB) + (_MIG_ONLY if mig.enabled(mig_state or {}) else ())
    for name, kind, help_text, value in families:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for g in gpus if value is not None else ():
            labels = (f'gpu="{g.index}",UUID="{g.uuid}",pci_bus_id="{g.pci_bus_id}",device="nvidia{g.index}",'
                      f'modelName="{g.name}",Hostname="{node.name}",DCGM_FI_DRIVER_VERSION="{g.driver_version}"')
            v = 79 if name == "DCGM_FI_DEV_XID_ERRORS" and Fault.XID_79 in node.faults and g.index == 0 else value(g)
            out.append(f"{name}{{{labels}}} {v}")
        out += mig.dcgm_rows(name, node, gpus, mig_state or {})
    return "\n".join(out) + "\n"


class Servers:
    """One exporter endpoint per running dcgm-exporter pod; the lab records them for `lab status`.

    All endpoints are served by one thread that waits on their listening sockets with one selector (each
    request is then handled in a thread of its own, as ThreadingHTTPServer does): a thread per endpoint running
    `serve_forever` woke every 0.5 s, 2000 wake-ups a second in a 1000-node lab."""

    def __init__(self, paths: LabPaths) -> None:
        self.paths = paths
        self.servers: dict[str, tuple[http.server.ThreadingHTTPServer, str]] = {}
        self.lock = threading.Lock()
        self.endpoints_file: Path = paths.root / "twin-endpoints.json"
        self._selector = selectors.DefaultSelector()
        self._loop: threading.Thread | None = None

    def _serve(self) -> None:
        while True:
            try:
                ready = self._selector.select(timeout=1.0)
            except (OSError, ValueError):  # a socket closed while the selector waited on it: wait again
                time.sleep(0.1)
                continue
            for key, _ in ready:
                srv: http.server.ThreadingHTTPServer = key.data
                with contextlib.suppress(OSError, ValueError):
                    srv.handle_request()  # readable: accepts at once (srv.timeout is 0) and starts its thread

    def start(self, uid: str, ip: str, node: NodeSpec, gpus: list) -> str:
        root = self.paths.host_root(node.name)
        plain = render(node, gpus).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    state = mig.read(root) if node.mig is not None else {}
                    body = render(node, gpus, state).encode() if mig.enabled(state) else plain
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                elif self.path == "/health":
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(b"OK")
                else:
                    self.send_error(404)

            def log_message(self, *args: object) -> None:
                pass

        with self.lock:
            if uid in self.servers:
                return self.servers[uid][1]
            srv = http.server.ThreadingHTTPServer((ip, PORT), Handler)
            srv.timeout = 0
            srv.daemon_threads = True
            self._selector.register(srv.socket, selectors.EVENT_READ, srv)
            if self._loop is None:
                self._loop = threading.Thread(target=self._serve, daemon=True, name="dcgm-servers")
                self._loop.start()
            url = f"http://{ip}:{PORT}/metrics"
            self.servers[uid] = (srv, url)
            self._save(node.name, url)
            return url

    def stop(self, uid: str) -> None:
        with self.lock:
            entry = self.servers.pop(uid, None)
        if entry:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(entry[0].socket)
            entry[0].server_close()

    def _save(self, node: str, url: str) -> None:
        data = json.loads(self.endpoints_file.read_text()) if self.endpoints_file.exists() else {}
        data[node] = url
        self.endpoints_file.write_text(json.dumps(data, indent=2))
