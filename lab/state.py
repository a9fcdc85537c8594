"""Where a running lab keeps its state: certificates, kubeconfigs, logs, host views, ports, pids.

The folder is `.lab/` in the repository (gitignored) unless LAB_STATE_DIR says otherwise.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def state_dir() -> Path:
    return Path(os.environ.get("LAB_STATE_DIR") or REPO_ROOT / ".lab").resolve()


# Below the kernel's ephemeral range (ip_local_port_range, 32768-60999 by default): a port the kernel hands out
# for bind(0) is free now but can be taken by any outgoing connection (a watch, a helm call) before the lab's
# process binds it, and a second lab started at the same moment may be handed the same one. Seen: an etcd that
# could not bind, and a kube-apiserver of one lab talking to another lab's etcd.
PORT_RANGE = (20000, 32700)


def free_port() -> int:
    import random

    for _ in range(200):
        port = random.randrange(*PORT_RANGE)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LabPaths:
    root: Path = field(default_factory=state_dir)

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def hosts(self) -> Path:
        return self.root / "hosts"

    @property
    def charts(self) -> Path:
        return self.root / "charts"

    @property
    def audit_log(self) -> Path:
        return self.logs / "audit.log"

    @property
    def ports_file(self) -> Path:
        return self.root / "ports.json"

    @property
    def spec_file(self) -> Path:
        return self.root / "spec.json"

    def kubeconfig(self, stem: str) -> Path:
        return self.root / "kubeconfig" / f"{stem}.yaml"

    def host_root(self, node: str) -> Path:
        return self.hosts / node

    def ensure(self) -> None:
        for p in (self.pki, self.logs, self.run, self.etcd_data, self.hosts, self.charts, self.root / "kubeconfig"):
            p.mkdir(parents=True, exist_ok=True)
        self.etcd_data.chmod(0o700)


PORT_NAMES = ("etcd_client", "etcd_peer", "apiserver", "kubelet", "charts", "twin")


def load_ports(paths: LabPaths) -> dict[str, int]:
    """Ports are chosen once per lab folder and kept, so a restarted lab keeps its kubeconfig valid."""
    if paths.ports_file.exists():
        ports = json.loads(paths.ports_file.read_text())
        if all(n in ports for n in PORT_NAMES):
            return ports
    ports: dict[str, int] = {}
    for n in PORT_NAMES:  # distinct: two random picks of one lab must not meet
        port = free_port()
        while port in ports.values():
            port = free_port()
        ports[n] = port
    paths.ports_file.write_text(json.dumps(ports, indent=2))
    return ports
