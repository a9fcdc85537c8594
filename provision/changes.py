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
    """Patch the node's labels: a value sets the label, None removes it. `before` (optional): the values the plan
    saw for these keys; apply refuses when one of them has changed since."""

    labels: dict[str, str | None] = field(default_factory=dict)
    before: dict[str, str | None] | None = None


@dataclass(frozen=True)
class UnitEnable:
    """`systemctl enable --now <unit>` (after `systemctl daemon-reload` when its file was written)."""

    unit: str


@dataclass(frozen=True)
class KeepBaseline:
    """Keep a copy of containerd's config files (and the validations folder) in the host record, once."""


@dataclass(frozen=True)
class HelmRelease:
    """`helm upgrade --install` of chart `chart_version` with exactly `values` (for an existing release: its own
    values with the suite's merged in, as the plan computed them). `revision`: the release revision the plan saw
    (None: no release); apply refuses when the release has moved since. `refused`: why the plan already knows
    --provision must not do it (a downgrade, a stack switch not asked for): apply raises it, changing nothing."""

    chart_version: str
    values: dict[str, Any] = field(default_factory=dict)
    revision: int | None = None
    refused: str | None = None
    suite_values: dict[str, Any] = field(default_factory=dict)   # the suite's own part, checked against the chart


@dataclass(frozen=True)
class ConfigMapWrite:
    """Set `data` keys and `labels` on ConfigMap namespace/name, keeping every other key (another party's).
    `before`: the plan's values of these data keys (None: the ConfigMap did not exist, it is created with
    `labels`). Apply refuses when one of these keys changed since the plan; a concurrent write of other keys
    is merged (409 Conflict: re-read, check, write again). Not the object's resourceVersion: other parties'
    keys and the suite's own record entries move it without touching what the plan decided."""

    namespace: str
    name: str
    data: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    before: dict[str, str | None] | None = None


@dataclass(frozen=True)
class ClusterPolicyPatch:
    """Merge `value` into the ClusterPolicy's field `path` (e.g. ("spec", "devicePlugin", "config")). `before`:
    the field as the plan saw it (None: absent); apply refuses when it has changed since, and writes with the
    resourceVersion it checked: a write in between (the operator's status updates move it too) answers 409, and
    the check is made again on the fresh object."""

    path: tuple[str, ...]
    value: dict[str, Any] = field(default_factory=dict)
    before: dict[str, Any] | None = None
    unseen: bool = False   # planned before the ClusterPolicy existed (--plan ahead of the install): not checked

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", tuple(self.path))


@dataclass(frozen=True)
class RolloutRestart:
    """`kubectl rollout restart` of DaemonSet namespace/name (its template stamped), and its pods on `nodes`
    deleted (a rolling update stalls behind pods that cannot become ready on broken nodes)."""

    namespace: str
    name: str
    nodes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))


@dataclass(frozen=True)
class AdvertiseWait:
    """After the operator has rendered the device plugin for `config` ({name, default}) and its pods on `nodes`
    have rolled out: wait until each node advertises `expected[node]` of `resources[node]` and GFD labels
    `replicas[node]`."""

    nodes: tuple[str, ...] = ()
    expected: dict[str, int] = field(default_factory=dict)
    resources: dict[str, str] = field(default_factory=dict)
    replicas: dict[str, str] = field(default_factory=dict)
    config: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))


@dataclass(frozen=True)
class ContainerdRestart:
    """Restart the node's containerd so it loads the toolkit's drop-in `dropin` (once the toolkit pod of the
    current template has written it); `repair`: first restart it once with the previous toolkit's drop-ins out
    of the way (its containerd refuses its configuration, no new toolkit pod can start on a NotReady node)."""

    dropin: str
    repair: bool = False


@dataclass(frozen=True)
class MigWait:
    """Wait until the MIG manager reports success (or failed) for `profile` on the node. `source` and `strategy`:
    the node's MIG mode as the plan judged it (None: the profile turns MIG off): a success the wait did not see
    happen is checked against the devices nvidia-smi -L shows for that mode."""

    profile: str
    source: str = ""
    strategy: str | None = None


Payload = (FileWrite | FileDelete | NodeLabels | UnitEnable | KeepBaseline | HelmRelease | ConfigMapWrite
           | ClusterPolicyPatch | RolloutRestart | AdvertiseWait | ContainerdRestart | MigWait)
_TYPES: dict[str, type] = {t.__name__: t for t in (FileWrite, FileDelete, NodeLabels, UnitEnable, KeepBaseline,
                                                   HelmRelease, ConfigMapWrite, ClusterPolicyPatch, RolloutRestart,
                                                   AdvertiseWait, ContainerdRestart, MigWait)}


class ChangedSincePlan(RuntimeError):
    """What the plan read (a file, a label, a ConfigMap key, the ClusterPolicy, the helm release) has changed
    before apply wrote it: nothing is overwritten (optimistic concurrency)."""


def changed_since_plan(what: str) -> ChangedSincePlan:
    return ChangedSincePlan(f"{what} changed since the plan was made (by hand, or by another run): not "
                            "overwritten; run again to plan from what is there now")


def apply_node_labels(ctx: Any, node: str, p: NodeLabels) -> None:
    """Patch exactly the planned labels (each one's current value recorded first, for --rollback); refused when
    a label the plan saw has changed since."""
    current = ctx.kube.core.read_node(node, _request_timeout=ctx.kube.timeout).metadata.labels or {}
    if p.before is not None:
        moved = sorted(k for k, v in p.before.items() if current.get(k) != v)
        if moved:
            raise changed_since_plan(f"node {node} label(s) {', '.join(moved)}")
    for k in p.labels:
        ctx.record.add("node-label", f"{node}:{k}", current.get(k))
    ctx.kube.guarded(f"label node {node}", ctx.kube.core.patch_node, node, {"metadata": {"labels": dict(p.labels)}})


def write_planned(host: Any, w: FileWrite, record: Any = None) -> Any:
    """Write exactly the planned content if the file is still what the plan saw (``record()`` first: the change
    is recorded before the file is touched); the host's WriteResult."""
    read_now = getattr(host, "live_read_text", host.read_text)   # past a gathered host's document: the host itself
    if read_now(w.path) != w.before:
        raise changed_since_plan(w.path)
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
