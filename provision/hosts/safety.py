"""Input checks and command quoting for everything that reaches a host's shell.

Every name that comes from the cluster (node names, addresses) is validated here before it is used to build
a command or a connection, and every command is built from an argv list with each argument quoted, so
nothing a node name or a file's path contains is ever interpreted by a shell.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Sequence

from provision.names import LABEL, SUBDOMAIN_MAX, is_dns1123_subdomain

__all__ = [
    "UnsafeHostAddress",
    "UnsafeNodeName",
    "UnsafePath",
    "UnsafeUserName",
    "build_command",
    "validate_host_address",
    "validate_host_path",
    "validate_node_name",
    "validate_user_name",
]

_SHELL_META = set(";&|$`<>(){}[]*?!~#'\"\\\n\r\t ")
# Ansible inventory names and ssh_config aliases are freer than DNS names; still no shell syntax, no leading '-'.
_HOST_ALIAS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}")
_USER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
MAX_PATH = 4096


class UnsafeNodeName(ValueError):
    """A Kubernetes node name that is not a valid DNS-1123 subdomain (and so is never used in a command)."""


class UnsafeHostAddress(ValueError):
    """A host address (host name, IP, inventory name) that cannot safely be handed to ssh/ansible."""


class UnsafeUserName(ValueError):
    """A user name (ssh user, sudo user) that is not a plain POSIX user name."""


class UnsafePath(ValueError):
    """A path for a file operation that is not absolute, or contains NUL, newlines or '..'."""


def _describe(value: str) -> str:
    """Say what is wrong with a rejected name, in words (shell metacharacters, whitespace, ...)."""
    reasons = []
    meta = sorted({c for c in value if c in _SHELL_META and not c.isspace()})
    if meta:
        reasons.append("contains shell metacharacters " + " ".join(repr(c) for c in meta))
    if any(c.isspace() for c in value):
        reasons.append("contains whitespace")
    if "\x00" in value:
        reasons.append("contains a NUL byte")
    if any(c.isupper() for c in value):
        reasons.append("contains uppercase letters")
    if any(ord(c) > 127 for c in value):
        reasons.append("contains non-ASCII characters")
    return ", ".join(reasons)


def validate_node_name(name: object) -> str:
    """Return ``name`` if it is a DNS-1123 subdomain (what Kubernetes allows for node names: provision/names.py).

    Lowercase alphanumerics, '-' and '.', at most 253 characters, each dot-separated part starting and ending
    with an alphanumeric. Anything else raises UnsafeNodeName, with the name quoted and the reason, before it
    can reach a command line.
    """
    if is_dns1123_subdomain(name):
        return name  # type: ignore[return-value]
    if not isinstance(name, str):
        raise UnsafeNodeName(f"node name {name!r} is not a string")
    if not name:
        raise UnsafeNodeName("node name '' is empty")
    if len(name) > SUBDOMAIN_MAX:
        raise UnsafeNodeName(
            f"node name {name!r} is {len(name)} characters long (a DNS-1123 subdomain has at most {SUBDOMAIN_MAX})"
        )
    described = _describe(name)
    if described:
        raise UnsafeNodeName(f"node name {name!r} is not a DNS-1123 subdomain: it {described}")
    for label in name.split("."):
        if not label:
            raise UnsafeNodeName(f"node name {name!r} is not a DNS-1123 subdomain: it has an empty label ('..' or a "
                                 "leading/trailing '.')")
        if not LABEL.fullmatch(label):
            raise UnsafeNodeName(
                f"node name {name!r} is not a DNS-1123 subdomain: label {label!r} must consist of lowercase "
                "alphanumerics and '-' and start and end with an alphanumeric"
            )
    raise UnsafeNodeName(f"node name {name!r} is not a DNS-1123 subdomain")


def validate_host_address(address: object, what: str = "host address") -> str:
    """Return ``address`` if it is an IP address, a DNS name, or an ssh/ansible alias without shell syntax.

    A leading '-' is refused (ssh would read it as an option), as is anything with whitespace or shell
    metacharacters. IPv6 addresses are accepted bare (``fd00::1``), not bracketed.
    """
    if not isinstance(address, str) or not address:
        raise UnsafeHostAddress(f"{what} {address!r} is empty or not a string")
    try:
        ipaddress.ip_address(address)
        return address
    except ValueError:
        pass
    if not _HOST_ALIAS.fullmatch(address):
        described = _describe(address) or "must be an IP address or a name of letters, digits, '.', '-', '_'"
        if address.startswith("-"):
            described = "starts with '-' (would be read as an option)"
        raise UnsafeHostAddress(f"{what} {address!r} is refused: it {described}")
    if ".." in address or address.endswith("."):
        raise UnsafeHostAddress(f"{what} {address!r} is refused: it has an empty label")
    return address


def validate_user_name(user: object, what: str = "user name") -> str:
    if not isinstance(user, str) or not _USER_NAME.fullmatch(user):
        raise UnsafeUserName(f"{what} {user!r} is refused: a POSIX user name is letters, digits, '_', '.', '-' "
                             "(at most 32, not starting with a digit or '-')")
    return user


def validate_host_path(path: object, what: str = "path") -> str:
    """Return ``path`` if it is a usable absolute path on a host: absolute, no NUL, CR or newline, no '..'."""
    if not isinstance(path, str):
        raise UnsafePath(f"{what} {path!r} is not a string")
    if not path.startswith("/"):
        raise UnsafePath(f"{what} {path!r} is not absolute")
    for bad, name in (("\x00", "a NUL byte"), ("\n", "a newline"), ("\r", "a carriage return")):
        if bad in path:
            raise UnsafePath(f"{what} {path!r} contains {name}")
    if len(path) > MAX_PATH:
        raise UnsafePath(f"{what} {path[:80]!r}... is longer than {MAX_PATH} characters")
    if ".." in path.split("/"):
        raise UnsafePath(f"{what} {path!r} contains a '..' component")
    return path


def build_command(argv: Sequence[str], sudo: bool = False, sudo_user: str | None = None) -> str:
    """Build the one shell command line that runs ``argv`` (testinfra's ``host.run`` takes a string).

    Each argument goes through ``shlex.quote``, so ``shlex.split(build_command(argv))`` gives ``argv`` back
    whatever the arguments contain. With ``sudo`` the command runs as ``sudo -n [-u USER] -- argv`` (``-n``:
    fail instead of prompting for a password, which would hang a non-interactive run).
    """
    if isinstance(argv, str | bytes):
        raise TypeError("build_command takes an argv list, not a command string")
    args = list(argv)
    if not args:
        raise ValueError("build_command: empty argv")
    for i, arg in enumerate(args):
        if not isinstance(arg, str):
            raise TypeError(f"build_command: argv[{i}] is {type(arg).__name__}, not str: {arg!r}")
        if "\x00" in arg:
            raise ValueError(f"build_command: argv[{i}] contains a NUL byte, which no command line can carry")
    if sudo_user is not None and not sudo:
        raise ValueError("build_command: sudo_user given without sudo=True")
    if sudo:
        prefix = ["sudo", "-n"]
        if sudo_user is not None:
            prefix += ["-u", validate_user_name(sudo_user, "sudo user")]
        args = [*prefix, "--", *args]
    return " ".join(shlex.quote(a) for a in args)
