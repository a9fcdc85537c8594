"""How to reach one host: ``HostSpec``, its testinfra URL, and the Kubernetes node -> host mapping.

Backends:

- ``local``: this machine (testinfra ``local://``).
- ``ssh``: OpenSSH client (testinfra ``ssh://``); honours an ssh_config file.
- ``paramiko``: paramiko (testinfra ``paramiko://``), with strict host-key checking added by this layer.
- ``ansible``: a host of an Ansible inventory (testinfra ``ansible://``; testinfra connects with the
  inventory's ansible_host/port/user/key/ssh args).
- ``pod``: a short-lived privileged pod on the node, commands through the Kubernetes API (see
  ``pod_backend``); the host's / is seen at /host and commands run through ``chroot /host`` (both can be
  overridden: ``root`` is where the pod mounts the host's /, ``exec_mode="path"`` runs the host's
  executables by PATH instead of chroot, for a node whose host view is a folder, such as a lab node).
- ``lab``: the local lab, where a simulated node's host view is a folder (``root``) with its own
  executables; runs locally with ``exec_mode="path"``.

``root`` is the prefix under which the host's filesystem is seen by the process that runs the commands
("/" for ssh/local, "/host" in the pod, a per-node folder in the lab). ``exec_mode`` says how commands find
the host's executables: ``direct`` (argv as is), ``chroot`` (``chroot ROOT argv``) or ``path`` (``ROOT/usr/bin``
and friends first on PATH).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from provision.names import is_dns1123_label

from .safety import (
    validate_host_address,
    validate_host_path,
    validate_node_name,
    validate_user_name,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_POD_IMAGE",
    "DEFAULT_POD_NAMESPACE",
    "EXEC_MODES",
    "MAPPING_MODES",
    "HostMappingError",
    "HostSpec",
    "load_host_map",
    "map_node",
]

Backend = Literal["local", "ssh", "paramiko", "ansible", "pod", "lab"]
ExecMode = Literal["direct", "chroot", "path"]
MappingMode = Literal["name", "internal-ip", "map"]
BACKENDS: frozenset[str] = frozenset(get_args(Backend))
EXEC_MODES: frozenset[str] = frozenset(get_args(ExecMode))
MAPPING_MODES: frozenset[str] = frozenset(get_args(MappingMode))

#: A tiny image with a shell, chroot, cat, base64 and timeout; override it (HostSpec.pod_image) for
#: air-gapped clusters with a mirror of the same image.
DEFAULT_POD_IMAGE = "docker.io/library/busybox:1.37"
DEFAULT_POD_NAMESPACE = "gpu-node-conformance"

_DEFAULT_ROOT = {"pod": "/host"}
_DEFAULT_EXEC_MODE = {"pod": "chroot", "lab": "path"}
_SSH_LIKE = frozenset({"ssh", "paramiko"})
_NEEDS_ADDRESS = frozenset({"ssh", "paramiko", "ansible", "pod"})


def _check_file_setting(value: str | None, what: str) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} {value!r} must be a non-empty path")
    for bad in ("\x00", "\n", "\r"):
        if bad in value:
            raise ValueError(f"{what} {value!r} contains a NUL or newline")


@dataclass(frozen=True)
class HostSpec:
    """How to reach one host. Every field is validated when the spec is built.

    ``root`` and ``exec_mode`` default per backend: pod -> "/host" + "chroot" ("path" may be given instead,
    with a root other than "/"), lab -> "path" (the lab must give its per-node folder as ``root``),
    everything else -> "/" + "direct".
    """

    backend: Backend
    address: str | None = None
    ssh_config: str | None = None
    ssh_identity_file: str | None = None
    user: str | None = None
    port: int | None = None
    ansible_inventory: str | None = None
    sudo: bool = False
    sudo_user: str | None = None
    root: str | None = None
    exec_mode: ExecMode | None = None
    connect_timeout: int = 10
    pod_namespace: str = DEFAULT_POD_NAMESPACE
    pod_image: str = DEFAULT_POD_IMAGE

    def __post_init__(self) -> None:
        b = self.backend
        if b not in BACKENDS:
            raise ValueError(f"host backend {b!r} is not one of {', '.join(sorted(BACKENDS))}")
        # root / exec_mode: backend defaults, then validation
        root = self.root if self.root is not None else _DEFAULT_ROOT.get(b, "/")
        validate_host_path(root, "host root")
        if root != "/":
            root = root.rstrip("/") or "/"
        object.__setattr__(self, "root", root)
        mode = self.exec_mode if self.exec_mode is not None else _DEFAULT_EXEC_MODE.get(b, "direct")
        if mode not in EXEC_MODES:
            raise ValueError(f"exec_mode {mode!r} is not one of {', '.join(sorted(EXEC_MODES))}")
        object.__setattr__(self, "exec_mode", mode)
        if mode == "chroot" and root == "/":
            raise ValueError("exec_mode 'chroot' needs a root other than '/'")
        if mode == "path" and ":" in root:
            raise ValueError(f"exec_mode 'path' needs a root without ':' (it goes into PATH): {root!r}")
        if b == "lab" and root == "/":
            raise ValueError("the lab backend needs root= the simulated node's host folder")
        if b == "pod" and (mode == "direct" or root == "/"):
            raise ValueError("the pod backend sees the host's / at root (not '/', the container's own) and runs "
                             "commands with exec_mode 'chroot' or 'path'")

        if b in _NEEDS_ADDRESS and not self.address:
            raise ValueError(f"the {b} backend needs an address ({'node name' if b == 'pod' else 'host'})")
        if self.address is not None:
            if b == "pod":
                validate_node_name(self.address)
            else:
                validate_host_address(self.address, "ansible inventory host" if b == "ansible" else "host address")
        if self.user is not None:
            if b not in _SSH_LIKE:
                raise ValueError(f"user is only used by the ssh and paramiko backends, not {b!r}")
            validate_user_name(self.user, "ssh user")
        if self.port is not None:
            if b not in _SSH_LIKE:
                raise ValueError(f"port is only used by the ssh and paramiko backends, not {b!r}")
            if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
                raise ValueError(f"port {self.port!r} is not an integer in 1..65535")
        for value, what in ((self.ssh_config, "ssh_config"), (self.ssh_identity_file, "ssh_identity_file")):
            if value is not None and b not in (*_SSH_LIKE, "ansible"):
                raise ValueError(f"{what} is only used by the ssh, paramiko and ansible backends, not {b!r}")
            _check_file_setting(value, what)
        if self.ansible_inventory is not None and b != "ansible":
            raise ValueError(f"ansible_inventory is only used by the ansible backend, not {b!r}")
        _check_file_setting(self.ansible_inventory, "ansible_inventory")
        if not isinstance(self.sudo, bool):
            raise ValueError(f"sudo {self.sudo!r} must be true or false")
        if self.sudo_user is not None:
            if not self.sudo:
                raise ValueError("sudo_user is set but sudo is not")
            validate_user_name(self.sudo_user, "sudo user")
        if isinstance(self.connect_timeout, bool) or not isinstance(self.connect_timeout, int) or not (
            1 <= self.connect_timeout <= 600
        ):
            raise ValueError(f"connect_timeout {self.connect_timeout!r} must be an integer number of seconds 1..600")
        if not is_dns1123_label(self.pod_namespace):
            raise ValueError(f"pod_namespace {self.pod_namespace!r} is not a DNS-1123 label (at most 63 lowercase "
                             "letters, digits and '-', starting and ending with a letter or digit)")
        if not isinstance(self.pod_image, str) or not self.pod_image or any(c.isspace() for c in self.pod_image):
            raise ValueError(f"pod_image {self.pod_image!r} must be an image reference without whitespace")

    @property
    def label(self) -> str:
        """A short name for messages: the address, or the backend with its root."""
        if self.address:
            return self.address
        return "local" if self.root == "/" else f"{self.backend}:{self.root}"

    def testinfra_url(self, include_sudo: bool = True) -> str:
        """The testinfra host string for this spec.

        local://[?sudo=true&sudo_user=U]
        ssh://USER@HOST:PORT?ssh_config=PATH&ssh_identity_file=PATH&timeout=N
        paramiko://USER@HOST:PORT?...
        ansible://INVENTORY_HOST?ansible_inventory=PATH[&ssh_config=...&ssh_identity_file=...]

        Every component is validated (in ``__post_init__``) and URL-quoted; IPv6 addresses are bracketed.
        HostAccess passes ``include_sudo=False`` because it adds ``sudo -n`` itself (testinfra's sudo would
        prompt for a password). The pod backend has no testinfra URL (it runs through the Kubernetes API).
        """
        query: list[tuple[str, str]] = []
        if self.backend in ("local", "lab"):
            netloc = ""
        elif self.backend in _SSH_LIKE:
            assert self.address is not None
            host = self.address
            try:
                if ipaddress.ip_address(host).version == 6:
                    host = f"[{host}]"
            except ValueError:
                host = urllib.parse.quote(host, safe="")
            netloc = host
            if self.user:
                netloc = f"{urllib.parse.quote(self.user, safe='')}@{netloc}"
            if self.port is not None:
                netloc = f"{netloc}:{self.port}"
            if self.ssh_config:
                query.append(("ssh_config", self.ssh_config))
            if self.ssh_identity_file:
                query.append(("ssh_identity_file", self.ssh_identity_file))
            query.append(("timeout", str(self.connect_timeout)))
        elif self.backend == "ansible":
            assert self.address is not None
            netloc = urllib.parse.quote(self.address, safe="")
            if self.ansible_inventory:
                query.append(("ansible_inventory", self.ansible_inventory))
            if self.ssh_config:
                query.append(("ssh_config", self.ssh_config))
            if self.ssh_identity_file:
                query.append(("ssh_identity_file", self.ssh_identity_file))
        else:
            raise ValueError(f"the {self.backend} backend has no testinfra URL (it runs through the Kubernetes API)")
        if include_sudo and self.sudo:
            query.append(("sudo", "true"))
            if self.sudo_user:
                query.append(("sudo_user", self.sudo_user))
        scheme = "local" if self.backend == "lab" else self.backend
        url = f"{scheme}://{netloc}"
        if query:
            url += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote, safe="/")
        return url


class HostMappingError(ValueError):
    """A Kubernetes node cannot be mapped to a host (not in the map, no InternalIP, bad mode)."""


def map_node(
    node_name: str,
    internal_ip: str | None,
    mode: MappingMode | str,
    explicit_map: Mapping[str, str] | None = None,
) -> str:
    """Map a Kubernetes node to the host address used to reach it.

    - ``name``: the node name itself (resolvable by DNS or an ssh_config/inventory alias).
    - ``internal-ip``: the node's InternalIP address from its status.
    - ``map``: ``explicit_map[node_name]`` (a YAML/TOML setting); a node missing from the map is an error.

    The node name is validated first (UnsafeNodeName), and the result is validated as a host address.
    """
    validate_node_name(node_name)
    if mode == "name":
        return node_name
    if mode == "internal-ip":
        if not internal_ip:
            raise HostMappingError(f"node {node_name!r} has no InternalIP address in its status (host mapping "
                                   "mode 'internal-ip')")
        try:
            ipaddress.ip_address(internal_ip)
        except ValueError as e:
            raise HostMappingError(f"node {node_name!r} has an InternalIP {internal_ip!r} that is not an IP "
                                   "address") from e
        return internal_ip
    if mode == "map":
        if not explicit_map:
            raise HostMappingError(f"host mapping mode is 'map' but no map was given (node {node_name!r})")
        if node_name not in explicit_map:
            known = ", ".join(sorted(explicit_map)[:20])
            raise HostMappingError(f"node {node_name!r} is not in the host map (known nodes: {known})")
        return validate_host_address(explicit_map[node_name], f"host for node {node_name!r}")
    raise HostMappingError(f"host mapping mode {mode!r} is not one of {', '.join(sorted(MAPPING_MODES))}")


def load_host_map(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a node -> host map from a YAML or TOML file (by suffix: .toml is TOML, anything else YAML).

    The file is a mapping of node names to host addresses, either at the top level or under a ``hosts``
    key. Every entry is validated; a bad file raises HostMappingError naming the file.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise HostMappingError(f"cannot read host map {p}: {e}") from e
    try:
        data: Any = tomllib.loads(text) if p.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as e:
        raise HostMappingError(f"host map {p} does not parse: {e}") from e
    if isinstance(data, dict) and set(data) == {"hosts"} and isinstance(data["hosts"], dict):
        data = data["hosts"]
    if not isinstance(data, dict):
        raise HostMappingError(f"host map {p} must be a mapping of node name to host address")
    result: dict[str, str] = {}
    for node, host in data.items():
        try:
            validate_node_name(node)
            validate_host_address(host, f"host for node {node!r}")
        except ValueError as e:
            raise HostMappingError(f"host map {p}: {e}") from e
        result[node] = host
    return result
