"""Typed payloads of a Change: what `apply` executes, exactly as `plan` computed it (no text parsed back).

A converger's plan puts the data of each change here (the file content to write, the labels to set); the plan's
text (`Change.detail`) is only for people. Payloads go through the run folder as JSON (xdist workers read a
converger's result), tagged with their type.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class FileWrite:
    """Write `content` to `path` (backed up, atomically), then run the `after` commands (argv each) if the file
    changed. `before` is the content the plan saw (None: no file): apply refuses when the file has changed since,
    so what is written is what --plan showed."""

    path: str
    content: str
    before: str | None = None
    after: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:   # from JSON the commands come back as lists
        object.__setattr__(self, "after", tuple(tuple(c) for c in self.after))


@dataclass(frozen=True)
class FileDelete:
    """Remove `path` (its content kept in the record and a backup)."""

    path: str


@dataclass(frozen=True)
class NodeLabels:
    """Patch the node's labels: a value sets the label, None removes it."""

    labels: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class UnitEnable:
    """`systemctl enable --now <unit>` (after `systemctl daemon-reload` when its file was written)."""

    unit: str


@dataclass(frozen=True)
class KeepBaseline:
    """Keep a copy of containerd's config files (and the validations folder) in the host record, once."""


Payload = FileWrite | FileDelete | NodeLabels | UnitEnable | KeepBaseline
_TYPES: dict[str, type] = {t.__name__: t for t in (FileWrite, FileDelete, NodeLabels, UnitEnable, KeepBaseline)}


class ChangedSincePlan(RuntimeError):
    """A file the plan read has changed before apply wrote it: nothing is overwritten (optimistic concurrency)."""


def write_planned(host: Any, w: FileWrite, record: Any = None) -> Any:
    """Write exactly the planned content if the file is still what the plan saw (``record()`` first: the change
    is recorded before the file is touched); the host's WriteResult."""
    read_now = getattr(host, "live_read_text", host.read_text)   # past a gathered host's document: the host itself
    if read_now(w.path) != w.before:
        raise ChangedSincePlan(f"{w.path} changed since the plan was made (by hand, or by another run): not "
                               "overwritten; run again to plan from what is there now")
    if record is not None:
        record()
    return host.write_text(w.path, w.content, backup=True)


def to_json(payload: Payload | None) -> dict[str, Any] | None:
    if payload is None:
        return None
    return {"type": type(payload).__name__, **asdict(payload)}


def from_json(doc: dict[str, Any] | None) -> Payload | None:
    if not doc:
        return None
    cls = _TYPES.get(str(doc.get("type")))
    if cls is None:
        raise ValueError(f"unknown change payload type {doc.get('type')!r}; known: {sorted(_TYPES)}")
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in doc.items() if k in names})
