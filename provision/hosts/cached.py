"""``GatheredHost``: a host whose read-only facts came in one round trip (provision/hosts/gather.py).

It is a ``HostAccess`` for every caller: reads (``read_bytes``, ``read_text``, ``exists``, ``glob``) and
read-only commands (``run`` of an argv and timeout the gather ran) are answered from the document when it covers
them; anything it does not cover goes to the host, as before. Writes (``write_text``, ``remove``,
``run(..., mutates=True)``) always go to the host, guarded as before, and drop the document: after a change every
read goes to the host again (a provisioning run reads what it wrote).
"""

from __future__ import annotations

import fnmatch
import posixpath
import shlex
import threading
from collections.abc import Sequence
from typing import Any

from .access import HostAccess
from .gather import GATHER_TIMEOUT_S, CommandOutput, GatherParseError, GatherPlan, HostDocument, gather_argv, parse_document
from .results import CommandFailed, CommandResult, HostCommandError
from .safety import validate_host_path

__all__ = ["GatherFailed", "GatheredHost", "document", "gather", "gather_output"]

_TIMEOUT_RCS = (124, 137)
_MAGIC = set("*?[")


class GatherFailed(RuntimeError):
    """The host answered, but not with the gather's document (it is then read command by command)."""


def gather(host: HostAccess, plan: GatherPlan) -> HostDocument:
    """Run the plan's one command on ``host`` and parse its document. HostUnreachable propagates (the node is
    broken with the transport's error); any other failure raises GatherFailed."""
    return document(host.name, plan, gather_output(host, plan))


def gather_output(host: HostAccess, plan: GatherPlan) -> bytes:
    """The plan's one command on ``host``: its standard output (the document, unparsed). HostUnreachable
    propagates; a non-zero exit raises GatherFailed."""
    spec = host.spec
    prefix = "" if spec.exec_mode == "chroot" or spec.root in (None, "/") else str(spec.root)
    argv = gather_argv(plan, prefix)
    _, raw = host._execute(host._exec_argv(argv, GATHER_TIMEOUT_S), GATHER_TIMEOUT_S)
    if raw.rc != 0:
        tail = raw.stderr.decode("utf-8", errors="replace").strip()[-400:]
        raise GatherFailed(f"the host-facts gather on {host.name} exited {raw.rc}: {tail or 'no message'}")
    return raw.stdout


def document(name: str, plan: GatherPlan, stdout: bytes) -> HostDocument:
    """The document of a gather's output (``name``: the host, for messages); GatherFailed when it is not one."""
    try:
        doc = parse_document(plan, stdout)
    except GatherParseError as exc:
        raise GatherFailed(f"the host-facts gather on {name} did not return its document: {exc}") from exc
    if not doc.complete:
        raise GatherFailed(f"the host-facts gather on {name} stopped before its end")
    return doc


class GatheredHost:
    """``host`` answered from ``doc`` where it covers the question (``doc`` None: every call goes to the host)."""

    def __init__(self, host: HostAccess, doc: HostDocument | None, *, why_not: str | None = None) -> None:
        self.host = host
        self._doc = doc
        self.why_not = why_not          # why there is no document (the gather failed), for messages and logs
        self.served = 0                 # calls answered from the document
        self.live_calls: list[str] = []
        self.passed = 0                 # calls that went to the host
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # spec, name, guard, close, ... of the HostAccess
        return getattr(self.host, name)

    def __repr__(self) -> str:
        return f"<GatheredHost {self.host!r} document={'yes' if self._doc is not None else 'no'}>"

    def __enter__(self) -> GatheredHost:
        return self

    def __exit__(self, *exc: object) -> None:
        self.host.close()

    @property
    def document(self) -> HostDocument | None:
        return self._doc

    def _drop(self) -> None:
        with self._lock:
            self._doc = None

    def _live(self, what: str = "") -> None:
        with self._lock:
            self.passed += 1
            if len(self.live_calls) < 50:      # what the document did not cover (the round-trip log names it)
                self.live_calls.append(what)

    def _hit(self) -> None:
        with self._lock:
            self.served += 1

    # -- commands ------------------------------------------------------------------------------------------
    def run(self, argv: Sequence[str], check: bool = False, timeout: float | None = None, *,
            mutates: bool = False) -> CommandResult:
        doc = self._doc
        if mutates:
            self._drop()
        elif doc is not None and timeout is not None and not isinstance(argv, str | bytes):
            out = _command(doc, tuple(argv), float(timeout))
            if out is not None:
                self._hit()
                result = CommandResult(argv=tuple(argv), rc=out.rc, stdout=out.stdout.decode("utf-8", "replace"),
                                       stderr=out.stderr.decode("utf-8", "replace"),
                                       command=f"(gathered) {shlex.join(argv)}", host=self.host.name,
                                       timed_out=out.rc in _TIMEOUT_RCS)
                if check and not result.ok:
                    raise CommandFailed(result)
                return result
        self._live(f"run {shlex.join(argv) if not isinstance(argv, str | bytes) else argv!r}"[:200])
        return self.host.run(argv, check=check, timeout=timeout, mutates=mutates)

    # -- files ---------------------------------------------------------------------------------------------
    def read_bytes(self, path: str) -> bytes | None:
        doc = self._doc
        if doc is not None:
            validate_host_path(path)
            known, value = _read(doc, path)
            if known:
                self._hit()
                if isinstance(value, tuple):
                    raise HostCommandError(self.host.name, f"reading {path}", value[0], value[1])
                return value
        self._live(f"read {path}")
        return self.host.read_bytes(path)

    def read_text(self, path: str) -> str | None:
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8")

    def live_read_text(self, path: str) -> str | None:
        """The file as it is on the host now, never from the document (a write's optimistic-concurrency check)."""
        return self.host.read_text(path)

    def exists(self, path: str) -> bool:
        doc = self._doc
        if doc is not None:
            validate_host_path(path)
            answer = _exists(doc, path)
            if answer is not None:
                self._hit()
                return answer
        self._live(f"exists {path}")
        return self.host.exists(path)

    def glob(self, pattern: str) -> list[str]:
        doc = self._doc
        if doc is not None:
            validate_host_path(pattern, "glob pattern")
            found = _glob(doc, pattern)
            if found is not None:
                self._hit()
                return found
        self._live(f"glob {pattern}")
        return self.host.glob(pattern)

    def write_text(self, path: str, text: str, mode: int | None = 0o644, backup: bool = True, *,
                   parents: bool = True):
        self._drop()
        self._live()
        return self.host.write_text(path, text, mode, backup, parents=parents)

    def remove(self, path: str, backup: bool = True):
        self._drop()
        self._live()
        return self.host.remove(path, backup)


# ------------------------------------------------------------------------------------------- what it covers
def _command(doc: HostDocument, argv: tuple[str, ...], timeout: float) -> CommandOutput | None:
    out = doc.commands.get((argv, timeout))
    if out is None and doc.containerd_dump is not None:
        d_argv, d_timeout, d_out = doc.containerd_dump
        if d_argv == argv and d_timeout == timeout:
            out = d_out
    return out


def _norm(path: str) -> str:
    return posixpath.normpath(path) if path != "/" else "/"


def _listed(doc: HostDocument, path: str) -> tuple[bool, dict[str, str] | None]:
    """(known, entries) of the folder ``path``: known False when the document cannot say; entries None when the
    folder does not exist (it or a parent is absent, or a listed parent has no such folder)."""
    path = _norm(path)
    if path in doc.listings:
        return True, doc.listings[path]
    parent, name = posixpath.split(path)
    if parent == path:
        return False, None
    known, entries = _listed(doc, parent)
    if known and (entries is None or entries.get(name) != "d"):
        return True, None  # the parent does not exist, or has no folder of this name
    return False, None


def _read(doc: HostDocument, path: str) -> tuple[bool, bytes | tuple[int, str] | None]:
    path = _norm(path)
    if path in doc.files:
        return True, doc.files[path]
    if path in doc.file_errors:
        return True, doc.file_errors[path]
    parent, name = posixpath.split(path)
    known, entries = _listed(doc, parent)
    if known and (entries is None or entries.get(name, "l") == "l"):  # absent, or a link to nothing (test -e)
        return True, None
    return False, None


def _exists(doc: HostDocument, path: str) -> bool | None:
    path = _norm(path)
    if path in doc.probes:
        return doc.probes[path]
    if path in doc.files:
        return doc.files[path] is not None
    if path in doc.file_errors:
        return True
    known, entries = _listed(doc, path)
    if known and entries is not None:
        return True
    parent, name = posixpath.split(path)
    known, entries = _listed(doc, parent)
    if known:
        return entries is not None and entries.get(name, "l") != "l"
    return None


def _matches(name: str, part: str) -> bool:
    # sh's globbing: a leading dot is matched only by a pattern that starts with one
    if name.startswith(".") and not part.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, part)


def _glob(doc: HostDocument, pattern: str) -> list[str] | None:
    """HostAccess.glob from the listings (sorted host paths), or None when they do not cover the pattern."""
    if "\\" in pattern:
        return None  # sh's quoting inside an expanded pattern varies between shells: the host decides
    parts = [p for p in pattern.split("/") if p]
    if not parts:
        return ["/"]
    current = ["/"]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        nxt: list[str] = []
        for folder in current:
            if _MAGIC & set(part):
                known, entries = _listed(doc, folder)
                if not known:
                    return None
                for name in sorted(entries or {}):
                    if _matches(name, part) and (last or (entries or {})[name] == "d"):
                        nxt.append(posixpath.join(folder, name))
            else:
                path = posixpath.join(folder, part)
                if last:
                    there = _exists(doc, path)
                    if there is None:
                        return None
                    if there:
                        nxt.append(path)
                else:
                    known, entries = _listed(doc, path)
                    if not known or entries is not None:
                        nxt.append(path)  # descend: a listed folder further down, or the last part, decides
        current = nxt
        if not current:
            return []
    return sorted(current)
