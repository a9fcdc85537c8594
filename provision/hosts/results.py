"""Results and errors of the host-access layer (no dependencies, shared by every backend)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CommandFailed", "CommandResult", "HostCommandError", "HostUnreachable", "RawResult", "WriteResult"]


@dataclass(frozen=True)
class RawResult:
    """What a transport returns for one shell command line: exit status and the raw output bytes."""

    rc: int
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True)
class CommandResult:
    """The result of ``HostAccess.run``: the argv that was asked for, its exit status and output.

    ``command`` is the shell command line that actually ran (with sudo, chroot, PATH prefix, timeout);
    ``timed_out`` is True when a timeout was given and the command was stopped by it (exit status 124 or
    137 from coreutils ``timeout``).
    """

    argv: tuple[str, ...]
    rc: int
    stdout: str
    stderr: str
    command: str = ""
    host: str = ""
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.rc == 0


@dataclass(frozen=True)
class WriteResult:
    """The result of a guarded file change: whether the file changed, and where the old content was kept."""

    changed: bool
    backup_path: str | None = None


class HostUnreachable(RuntimeError):
    """The transport could not run a command on the host (ssh refused, host key mismatch, timeout, ansible
    unreachable, pod not schedulable). Carries the host and the transport's own error text; the caller
    reports that node as *broken*, not as non-conformant."""

    def __init__(self, host: str, detail: str) -> None:
        super().__init__(host, detail)
        self.host = host
        self.detail = detail

    def __str__(self) -> str:
        return f"host {self.host!r} is unreachable: {self.detail}"


class HostCommandError(RuntimeError):
    """A command on a reachable host failed where the layer needed it to succeed (e.g. reading a file that
    exists but is not readable, sudo refused)."""

    def __init__(self, host: str, what: str, rc: int, stderr: str) -> None:
        super().__init__(host, what, rc, stderr)
        self.host = host
        self.what = what
        self.rc = rc
        self.stderr = stderr

    def __str__(self) -> str:
        err = self.stderr.strip()
        return f"{self.what} on {self.host!r} failed (exit status {self.rc})" + (f": {err}" if err else "")


class CommandFailed(HostCommandError):
    """``HostAccess.run(..., check=True)`` and the command exited non-zero."""

    def __init__(self, result: CommandResult) -> None:
        super().__init__(result.host, f"command {list(result.argv)!r}", result.rc, result.stderr)
        self.result = result

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.result,))
