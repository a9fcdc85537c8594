"""``HostAccess``: run commands and read/write files on one host, whatever the backend.

Everything goes through shell command lines built by ``safety.build_command`` (every argument quoted) and
run by a transport: a testinfra host (local, ssh, paramiko, ansible) or the Kubernetes pod backend. Files are
read and written with commands too (``cat``, ``test -e``, ``base64 -d``, ``mv -f``), so the same code works on
every backend; paths are host-absolute and mapped under the spec's ``root``.

Writes (``write_text``, ``remove``, ``run(..., mutates=True)``) first ask the process-wide write guard and
raise ``ReadOnlyViolation`` unless the run provisions or rolls back. A transport that cannot reach the host
raises ``HostUnreachable`` with the transport's own error text.
"""

from __future__ import annotations

import base64
import functools
import os
import posixpath
import shlex
import shutil
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import paramiko
import testinfra
import testinfra.backend
import testinfra.backend.base
import testinfra.host
from testinfra.backend.paramiko import ParamikoBackend

from .guard import WRITE_GUARD, WriteGuard
from .results import CommandFailed, CommandResult, HostCommandError, HostUnreachable, RawResult, WriteResult
from .safety import build_command, validate_host_path
from .spec import HostMappingError, HostSpec

__all__ = ["HostAccess", "StrictParamikoBackend", "Transport"]

#: base64 characters per command line (a multiple of 4). One command line must stay below Linux's 128 KiB
#: limit for a single argument (ssh hands the whole line to the remote shell as one ``-c`` argument).
_CHUNK = 64 * 1024
_ABSENT_RC = 3
_TIMEOUT_RCS = (124, 137)
_TIMEOUT_KILL_AFTER = "5"

_PATH_SCRIPT = 'PATH="$1${PATH:+:$PATH}"; export PATH; shift; exec "$@"'
_READ_SCRIPT = f'if [ -e "$1" ]; then exec cat -- "$1"; else exit {_ABSENT_RC}; fi'
_EXISTS_SCRIPT = 'if [ -e "$1" ]; then echo yes; else echo no; fi'
_GLOB_SCRIPT = (
    'cd "$1" || exit 1\n'
    "IFS=\n"
    "set +f\n"
    'for f in $2; do if [ -e "$f" ] || [ -L "$f" ]; then printf "%s\\0" "$f"; fi; done\n'
)
_REMOVE_SCRIPT = (
    'if [ -e "$1" ] || [ -L "$1" ]; then\n'
    '  if [ -n "$2" ]; then mv -f -- "$1" "$2" || exit 1; else rm -f -- "$1" || exit 1; fi\n'
    "  echo removed\n"
    "else echo absent; fi\n"
)
# args: tmp dst mode backup parents step chunk...; step is only|first|middle|last
_WRITE_SCRIPT = """\
tmp=$1; dst=$2; mode=$3; bak=$4; parents=$5; step=$6; shift 6
fail() { rm -f -- "$tmp"; exit 1; }
if [ "$step" = only ] || [ "$step" = first ]; then
  if [ -L "$dst" ]; then echo "refusing to replace the symlink $dst (write its target instead)" >&2; exit 1; fi
  if [ "$parents" = 1 ]; then mkdir -p "$(dirname "$dst")" || fail; fi
  (umask 077 && : > "$tmp") || fail
fi
for chunk in "$@"; do printf '%s' "$chunk" | base64 -d >> "$tmp" || fail; done
if [ "$step" = only ] || [ "$step" = last ]; then
  if [ -z "$mode" ]; then
    if [ -e "$dst" ]; then mode=$(stat -c %a "$dst") || fail; else mode=644; fi
  fi
  chmod "$mode" "$tmp" || fail
  if [ -e "$dst" ]; then chown "$(stat -c %u:%g "$dst")" "$tmp" 2>/dev/null || :; fi
  if [ -n "$bak" ]; then cp -p -- "$dst" "$bak" || fail; fi
  mv -f -- "$tmp" "$dst" || fail
fi
"""
_SSH_EXTRA_ARGS = "-o BatchMode=yes -o ServerAliveInterval=15 -o ServerAliveCountMax=3"


class Transport(Protocol):
    """Runs one shell command line on the host. Raises HostUnreachable when it cannot."""

    def execute(self, command: str, timeout: float | None = None) -> RawResult: ...

    def close(self) -> None: ...


def _transport_text(exc: BaseException) -> str:
    """The transport's own words for a failure (ssh's stderr, paramiko's exception text, ...)."""
    arg = exc.args[0] if exc.args else None
    if isinstance(arg, testinfra.backend.base.CommandResult):  # testinfra's ssh backend: RuntimeError(result)
        text = (arg.stderr.strip() or arg.stdout.strip()).replace("\r", "")
        return f"{text} (ssh exit status {arg.rc})" if text else f"ssh exit status {arg.rc}"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _TestinfraTransport:
    def __init__(self, host: testinfra.host.Host, label: str) -> None:
        self.host = host
        self.label = label

    def execute(self, command: str, timeout: float | None = None) -> RawResult:
        try:
            out = self.host.run(command)
        except HostUnreachable:
            raise
        except Exception as e:  # anything the backend raises means no result came back from the host
            raise HostUnreachable(self.label, _transport_text(e)) from e
        return RawResult(out.rc, out.stdout_bytes, out.stderr_bytes)

    def close(self) -> None:
        backend = self.host.backend
        client = backend.__dict__.get("client")  # paramiko's cached connection, when one was made
        if client is not None:
            client.close()
            del backend.__dict__["client"]


class StrictParamikoBackend(ParamikoBackend):
    """testinfra's paramiko backend with OpenSSH's host-key rules.

    testinfra's own paramiko backend never loads a known_hosts file and accepts any host key with a
    warning. This one loads UserKnownHostsFile/GlobalKnownHostsFile from the ssh_config (or
    ~/.ssh/known_hosts and /etc/ssh/ssh_known_hosts) and rejects unknown hosts; a changed key is always
    rejected (paramiko's BadHostKeyException). ``StrictHostKeyChecking no`` and ``accept-new`` in the
    ssh_config are honoured.
    """

    @functools.cached_property
    def client(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        cfg: dict[str, Any] = {
            "hostname": self.host.name,
            "port": int(self.host.port) if self.host.port else 22,
            "username": self.host.user,
            "timeout": self.timeout,
            "banner_timeout": self.timeout,
            "auth_timeout": self.timeout,
            "password": self.host.password,
        }
        config_path = self.ssh_config or os.path.expanduser("~/.ssh/config")
        looked: dict[str, Any] = {}
        if os.path.exists(config_path):
            ssh_config = paramiko.SSHConfig.from_path(config_path)
            self._load_ssh_config(client, cfg, ssh_config, os.path.dirname(config_path))
            looked = dict(ssh_config.lookup(self.host.name))
        user_files = str(looked.get("userknownhostsfile", "~/.ssh/known_hosts ~/.ssh/known_hosts2")).split()
        global_files = str(
            looked.get("globalknownhostsfile", "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2")
        ).split()
        for name in (*user_files, *global_files):
            path = os.path.expanduser(name)
            if path != "/dev/null" and os.path.isfile(path):
                client.load_system_host_keys(path)
        if str(looked.get("stricthostkeychecking", "")).lower() == "accept-new":
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        if self.ssh_identity_file:
            cfg["key_filename"] = self.ssh_identity_file
        try:
            client.connect(**cfg)
        except BaseException:
            client.close()
            raise
        return client


def _ensure_ansible_cli() -> None:
    """testinfra's ansible backend runs ``ansible-inventory``; find it next to this interpreter if needed
    (a virtualenv run as .venv/bin/pytest without activating it)."""
    if shutil.which("ansible-inventory"):
        return
    here = Path(sys.executable).parent
    if (here / "ansible-inventory").exists():
        os.environ["PATH"] = f"{here}{os.pathsep}{os.environ.get('PATH', '')}"
        return
    raise RuntimeError("the ansible backend needs the ansible-inventory command (ansible-core) on PATH")


def _make_testinfra_transport(spec: HostSpec, label: str) -> _TestinfraTransport:
    url = spec.testinfra_url(include_sudo=False)
    if spec.backend == "paramiko":
        name, kw = testinfra.backend.parse_hostspec(url)
        kw.pop("connection", None)
        backend = StrictParamikoBackend(name, **kw)
        host = testinfra.host.Host(backend)
        backend.set_host(host)
        return _TestinfraTransport(host, label)
    if spec.backend == "ssh":
        return _TestinfraTransport(testinfra.get_host(url, ssh_extra_args=_SSH_EXTRA_ARGS), label)
    if spec.backend == "ansible":
        _ensure_ansible_cli()
        if spec.ansible_inventory:
            from .inventory import load_inventory

            names = {h.name for h in load_inventory(spec.ansible_inventory)}
            if spec.address not in names:
                raise HostMappingError(
                    f"host {spec.address!r} is not in the ansible inventory {spec.ansible_inventory}"
                )
        return _TestinfraTransport(testinfra.get_host(url), label)
    return _TestinfraTransport(testinfra.get_host(url), label)


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _seconds(timeout: float) -> str:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0:
        raise ValueError(f"timeout {timeout!r} must be a positive number of seconds")
    return f"{timeout:g}" if isinstance(timeout, float) else str(timeout)


class HostAccess:
    """Commands and files on one host.

    ``spec`` says how to reach it; ``name`` is how messages call it (the node name; the spec's address by
    default). ``guard`` is the write guard (the process-wide ``WRITE_GUARD`` by default). ``core_v1`` (a
    ``kubernetes.client.CoreV1Api``) is needed by the pod backend only; ``transport`` replaces the backend
    altogether (for a transport of one's own).
    """

    def __init__(
        self,
        spec: HostSpec,
        *,
        name: str | None = None,
        guard: WriteGuard | None = None,
        core_v1: Any = None,
        transport: Transport | None = None,
    ) -> None:
        self.spec = spec
        self.name = name or spec.label
        self.guard = guard if guard is not None else WRITE_GUARD
        self.round_trips = 0  # commands sent to the host (one each over ssh or pods/exec)
        if transport is not None:
            self._transport: Transport = transport
        elif spec.backend == "pod":
            if core_v1 is None:
                raise ValueError("the pod backend needs core_v1 (a kubernetes.client.CoreV1Api)")
            from .pod_backend import PodExecBackend

            assert spec.address is not None
            assert spec.root is not None
            self._transport = PodExecBackend(core_v1, spec.address, namespace=spec.pod_namespace, image=spec.pod_image,
                                             host_mount=spec.root)
        else:
            self._transport = _make_testinfra_transport(spec, self.name)
            if spec.backend == "lab":   # simulated round-trip latency, lab only (provision/hosts/lab_delay.py)
                from .lab_delay import DelayedTransport, lab_host_delay_s

                delay = lab_host_delay_s()
                if delay:
                    self._transport = DelayedTransport(self._transport, delay)

    def __repr__(self) -> str:
        return f"<HostAccess {self.name} {self.spec.backend} root={self.spec.root} exec_mode={self.spec.exec_mode}>"

    def __enter__(self) -> HostAccess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection (paramiko) or delete the access pod (pod backend)."""
        self._transport.close()

    # -- commands ------------------------------------------------------------------------------------------

    def _execute(self, argv: Sequence[str], timeout: float | None = None) -> tuple[str, RawResult]:
        if self.spec.backend in ("local", "lab") and self.spec.root != "/" and not os.path.isdir(self.spec.root):
            raise HostUnreachable(self.name, f"the host folder {self.spec.root} does not exist")
        command = build_command(argv, self.spec.sudo, self.spec.sudo_user)
        self.round_trips += 1
        return command, self._transport.execute(command, timeout)

    def _exec_argv(self, argv: list[str], timeout: float | None) -> list[str]:
        """Wrap argv for the spec's exec_mode (and a coreutils timeout next to the command itself)."""
        if timeout is not None:
            argv = ["timeout", "-k", _TIMEOUT_KILL_AFTER, _seconds(timeout), *argv]
        root = self.spec.root
        assert root is not None
        if self.spec.exec_mode == "chroot":
            return ["chroot", root, *argv]
        if self.spec.exec_mode == "path":
            prefix = ":".join(f"{root}{d}" for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin",
                                                        "/sbin", "/bin"))
            return ["/bin/sh", "-c", _PATH_SCRIPT, "sh", prefix, *argv]
        return argv

    def run(
        self,
        argv: Sequence[str],
        check: bool = False,
        timeout: float | None = None,
        *,
        mutates: bool = False,
    ) -> CommandResult:
        """Run ``argv`` on the host and return its exit status and output (decoded as UTF-8).

        ``check``: raise CommandFailed on a non-zero exit status. ``timeout``: seconds, enforced on the host
        with coreutils ``timeout`` (then ``timed_out`` is set on the result). ``mutates``: the command
        changes the host (restart a service, ...), so the write guard must allow it first.
        """
        if isinstance(argv, str | bytes):
            raise TypeError(f"HostAccess.run takes an argv list, not a command string: {argv!r}")
        args = list(argv)
        if mutates:
            self.guard.check(f"run {shlex.join(args)} on {self.name}")
        command, raw = self._execute(self._exec_argv(args, timeout), timeout)
        result = CommandResult(
            argv=tuple(args),
            rc=raw.rc,
            stdout=_decode(raw.stdout),
            stderr=_decode(raw.stderr),
            command=command,
            host=self.name,
            timed_out=timeout is not None and raw.rc in _TIMEOUT_RCS,
        )
        if check and not result.ok:
            raise CommandFailed(result)
        return result

    # -- files ---------------------------------------------------------------------------------------------

    def _fs_path(self, path: str, what: str = "path") -> str:
        """Where the host-absolute ``path`` is, as seen by the commands that work on files."""
        validate_host_path(path, what)
        root = self.spec.root
        if self.spec.exec_mode == "chroot" or root == "/":
            return path
        return f"{root}{path}"

    def _host_path(self, fs_path: str) -> str:
        root = self.spec.root
        if self.spec.exec_mode == "chroot" or root == "/":
            return fs_path
        assert root is not None and fs_path.startswith(root)
        return fs_path[len(root) :] or "/"

    def _sh(self, script: str, *args: str) -> RawResult:
        """Run a file-handling shell script with positional args (inside the chroot for exec_mode chroot)."""
        argv = ["/bin/sh", "-c", script, "sh", *args]
        if self.spec.exec_mode == "chroot":
            assert self.spec.root is not None
            argv = ["chroot", self.spec.root, *argv]
        return self._execute(argv)[1]

    def read_bytes(self, path: str) -> bytes | None:
        """The content of the host file ``path``, or None when it does not exist."""
        raw = self._sh(_READ_SCRIPT, self._fs_path(path))
        if raw.rc == 0:
            return raw.stdout
        if raw.rc == _ABSENT_RC:
            return None
        raise HostCommandError(self.name, f"reading {path}", raw.rc, _decode(raw.stderr))

    def read_text(self, path: str) -> str | None:
        """The content of the host file ``path`` as UTF-8 text, or None when it does not exist."""
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8")

    def exists(self, path: str) -> bool:
        raw = self._sh(_EXISTS_SCRIPT, self._fs_path(path))
        answer = _decode(raw.stdout).strip()
        if raw.rc != 0 or answer not in ("yes", "no"):
            raise HostCommandError(self.name, f"checking {path}", raw.rc, _decode(raw.stderr))
        return answer == "yes"

    def glob(self, pattern: str) -> list[str]:
        """Host-absolute paths matching the shell pattern (``*``, ``?``, ``[...]``; no ``**``), sorted."""
        fs_pattern = self._fs_path(pattern, "glob pattern")
        relative = pattern.lstrip("/")
        if not relative:
            return ["/"]
        base = fs_pattern[: len(fs_pattern) - len(relative)] or "/"
        raw = self._sh(_GLOB_SCRIPT, base, relative)
        if raw.rc != 0:
            raise HostCommandError(self.name, f"listing {pattern}", raw.rc, _decode(raw.stderr))
        found = [name for name in _decode(raw.stdout).split("\0") if name]  # NUL: a name may hold a newline
        return sorted(self._host_path(posixpath.join(base, f)) for f in found)

    def write_text(
        self,
        path: str,
        text: str,
        mode: int | None = 0o644,
        backup: bool = True,
        *,
        parents: bool = True,
    ) -> WriteResult:
        """Replace the host file ``path`` with ``text`` (UTF-8), atomically. Needs the write guard.

        Nothing is written (changed=False) when the content is already ``text`` (the mode is not compared).
        Otherwise the new content goes to a temporary file in the same folder, gets ``mode`` (None: the old
        file's mode, 0644 for a new file) and the old file's owner, and is moved over the old file with
        ``mv -f``. The old content, if any and if ``backup``, is first copied to
        ``<path>.bak.<UTC timestamp>``, returned as ``backup_path``. ``parents`` (default) creates missing
        folders (``mkdir -p``); with ``parents=False`` a missing folder is an error. A symlink at ``path`` is
        not replaced (error): write its target.
        """
        self.guard.check(f"write {path} on {self.name}")
        fs = self._fs_path(path)
        if mode is not None and (isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777):
            raise ValueError(f"mode {mode!r} is not a file mode")
        if not isinstance(text, str):
            raise TypeError(f"write_text takes str, not {type(text).__name__}")
        data = text.encode("utf-8")
        current = self.read_bytes(path)
        if current == data:
            return WriteResult(changed=False, backup_path=None)
        directory, base = posixpath.split(fs)
        tmp = posixpath.join(directory, f".{base}.gnc-tmp-{uuid.uuid4().hex[:12]}")
        backup_path = None
        if backup and current is not None:
            backup_path = f"{path}.bak.{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}"
        fs_backup = self._fs_path(backup_path, "backup path") if backup_path else ""
        encoded = base64.b64encode(data).decode("ascii")
        chunks = [encoded[i : i + _CHUNK] for i in range(0, len(encoded), _CHUNK)] or [""]
        mode_arg = "" if mode is None else f"{mode:o}"
        steps = ["only"] if len(chunks) == 1 else ["first"] + ["middle"] * (len(chunks) - 2) + ["last"]
        for i, (chunk, step) in enumerate(zip(chunks, steps, strict=True)):
            raw = self._sh(_WRITE_SCRIPT, tmp, fs, mode_arg, fs_backup, "1" if parents else "0", step, chunk)
            if raw.rc != 0:
                if i > 0:
                    self._sh('rm -f -- "$1"', tmp)
                raise HostCommandError(self.name, f"writing {path}", raw.rc, _decode(raw.stderr))
        return WriteResult(changed=True, backup_path=backup_path)

    def remove(self, path: str, backup: bool = True) -> WriteResult:
        """Remove the host file ``path`` (not a folder). Needs the write guard.

        With ``backup`` the file is moved to ``<path>.bak.<UTC timestamp>`` instead of deleted.
        changed=False when there was nothing to remove.
        """
        self.guard.check(f"remove {path} on {self.name}")
        fs = self._fs_path(path)
        backup_path = f"{path}.bak.{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}" if backup else None
        raw = self._sh(_REMOVE_SCRIPT, fs, self._fs_path(backup_path, "backup path") if backup_path else "")
        answer = _decode(raw.stdout).strip()
        if raw.rc != 0 or answer not in ("removed", "absent"):
            raise HostCommandError(self.name, f"removing {path}", raw.rc, _decode(raw.stderr))
        if answer == "absent":
            return WriteResult(changed=False, backup_path=None)
        return WriteResult(changed=True, backup_path=backup_path)
