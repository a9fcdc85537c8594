"""Real sshd servers on loopback for the host-access tests.

Each server is Debian's /usr/sbin/sshd in the foreground (-D) with its own generated host key, listening on
127.0.0.1 on a free port, accepting the generated client key from an AuthorizedKeysFile in the temporary
folder. ``ssh_config`` names every server as a Host alias, with a UserKnownHostsFile holding the right host
key and StrictHostKeyChecking yes; the ``<alias>-badkey`` aliases hold a wrong key on purpose.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

SSHD = "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _keygen(path: Path, comment: str) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return Path(f"{path}.pub").read_text().strip()


@dataclass
class Sshd:
    name: str
    port: int
    folder: Path
    host_public_key: str
    process: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.folder / "sshd.log"

    def start(self, config: Path) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config), "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60  # sshd's start on a busy machine; returns at its banner
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd {self.name} exited with {self.process.returncode}: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd {self.name} did not answer on port {self.port}: {self.log.read_text()}")

    def stop(self) -> None:
        """Stop the listener and the per-connection sshd processes it forked (the host goes away)."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        self.process.terminate()
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        psutil.wait_procs(children, timeout=5)


@dataclass
class SshLab:
    folder: Path
    client_key: Path
    client_public_key: str
    ssh_config: Path
    servers: dict[str, Sshd] = field(default_factory=dict)
    wrong_host_public_key: str = ""

    def known_hosts_line(self, server: Sshd, key: str | None = None) -> str:
        return f"[127.0.0.1]:{server.port} {key or server.host_public_key}"

    def known_hosts(self, server: Sshd) -> Path:
        return self.folder / f"known_hosts.{server.name}"

    def wrong_known_hosts(self, server: Sshd) -> Path:
        return self.folder / f"known_hosts.{server.name}.badkey"

    def add_server(self, name: str) -> Sshd:
        folder = self.folder / name
        folder.mkdir()
        host_key = folder / "ssh_host_ed25519_key"
        server = Sshd(name=name, port=_free_port(), folder=folder, host_public_key=_keygen(host_key, name))
        config = folder / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    "ListenAddress 127.0.0.1",
                    f"HostKey {host_key}",
                    f"PidFile {folder / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.folder / 'authorized_keys'}",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "StrictModes no",
                    "PrintMotd no",
                    "UseDNS no",
                    "LogLevel ERROR",
                    "Subsystem sftp internal-sftp",
                    "",
                ]
            )
        )
        self.known_hosts(server).write_text(self.known_hosts_line(server) + "\n")
        self.wrong_known_hosts(server).write_text(self.known_hosts_line(server, self.wrong_host_public_key) + "\n")
        server.start(config)
        self.servers[name] = server
        self._write_ssh_config()
        return server

    def _write_ssh_config(self) -> None:
        blocks = []
        for server in self.servers.values():
            for alias, known in ((server.name, self.known_hosts(server)),
                                 (f"{server.name}-badkey", self.wrong_known_hosts(server))):
                blocks.append(
                    "\n".join(
                        [
                            f"Host {alias}",
                            "  HostName 127.0.0.1",
                            f"  Port {server.port}",
                            "  User root",
                            f"  IdentityFile {self.client_key}",
                            "  IdentitiesOnly yes",
                            f"  UserKnownHostsFile {known}",
                            "  GlobalKnownHostsFile /dev/null",
                            "  StrictHostKeyChecking yes",
                            "  BatchMode yes",
                            "  LogLevel ERROR",
                            "",
                        ]
                    )
                )
        self.ssh_config.write_text("\n".join(blocks))


@pytest.fixture(scope="session")
def ssh_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshLab]:
    if not os.path.exists(SSHD):
        pytest.skip(f"{SSHD} is missing: install Debian's openssh-server (apt-get install openssh-server)")
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("ssh/ssh-keygen are missing: install Debian's openssh-client")
    if os.geteuid() == 0:
        # sshd started as root insists on its privilege-separation folder (what the ssh service creates)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    folder = tmp_path_factory.mktemp("ssh")
    folder.chmod(0o755)
    client_key = folder / "id_ed25519"
    public = _keygen(client_key, "gpu-node-conformance-tests")
    (folder / "authorized_keys").write_text(public + "\n")
    lab = SshLab(folder=folder, client_key=client_key, client_public_key=public, ssh_config=folder / "ssh_config")
    lab.wrong_host_public_key = _keygen(folder / "wrong_host_key", "not-the-host")
    try:
        lab.add_server("node-a")
        lab.add_server("node-b")
        yield lab
    finally:
        for server in lab.servers.values():
            server.stop()


@pytest.fixture
def extra_sshd(ssh_lab: SshLab) -> Iterator[Callable[[str], Sshd]]:
    """Start additional servers for one test (stopped at the end of it)."""
    started: list[Sshd] = []

    def start(name: str) -> Sshd:
        server = ssh_lab.add_server(name)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
