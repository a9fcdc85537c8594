"""Observe / diff / apply behind every Given step.

A converger computes the list of concrete Changes between the desired and the observed state (`plan`),
makes them (`apply`, only when provisioning), and is then planned again: what remains is an error.
Every converger covers the whole fleet (cluster-wide objects, or every GPU node in a safe order) and
runs once per run, also with xdist: the first worker to need it takes a file lock, runs it and stores
its result in the run folder; the others read that result. Per-node outcomes are read from the result.

Modes: audit (plan; a non-empty diff for a node fails that node's scenario), plan (plan, print, change
nothing), provision (plan, apply, plan again).
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from filelock import FileLock

from provision import changes as changes_mod
from provision.hosts.guard import WRITE_GUARD


@dataclass(frozen=True)
class Change:
    converger: str
    node: str | None   # None: cluster-wide
    target: str        # what changes, e.g. "/etc/docker/daemon.json on spark-1"
    action: str        # create | update | delete | install | upgrade | restart | label | patch
    detail: str = ""   # the diff itself, for the plan and the report
    # What apply executes (provision/changes.py), exactly as planned; the engine applies no change without one
    payload: changes_mod.Payload | None = field(default=None, compare=True)

    def line(self) -> str:
        where = f"[{self.node}] " if self.node else ""
        return f"{where}{self.action} {self.target}" + (f": {self.detail}" if self.detail else "")

    def to_json(self) -> dict:
        return {"converger": self.converger, "node": self.node, "target": self.target, "action": self.action,
                "detail": self.detail, "payload": changes_mod.to_json(self.payload)}

    @classmethod
    def from_json(cls, doc: dict) -> Change:
        return cls(**{**doc, "payload": changes_mod.from_json(doc.get("payload"))})


@dataclass
class Result:
    name: str
    mode: str
    planned: list[Change] = field(default_factory=list)
    applied: list[Change] = field(default_factory=list)
    remaining: list[Change] = field(default_factory=list)
    node_errors: dict[str, str] = field(default_factory=dict)     # could not check/converge: broken
    node_failures: dict[str, str] = field(default_factory=dict)   # converged and found wrong: failed
    node_skips: dict[str, str] = field(default_factory=dict)      # not applicable / unsupported
    host_off: list[str] = field(default_factory=list)             # of node_skips: host checks are off (NoHostAccess)
    error: str | None = None                                      # the converger as a whole failed
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)   # what another installer left that this converger leaves alone
    kept_node: list[str | None] = field(default_factory=list)   # kept[i]'s node (None: cluster-wide); see keep()

    def skip_host_off(self, node: str, exc: Exception) -> None:
        """The node is skipped because host checks are off (its scenarios are then 'host checks off', not skips)."""
        self.node_skips[node] = str(exc)
        if node not in self.host_off:
            self.host_off.append(node)

    def keep(self, text: str, node: str | None = None) -> None:
        """Note what this converger leaves alone: cluster-wide, or on one node (shown as "[node] text")."""
        self.kept.append(f"[{node}] {text}" if node else text)
        self.kept_node += [None] * (len(self.kept) - 1 - len(self.kept_node)) + [node]

    def for_node(self, node: str | None) -> list[Change]:
        pending = self.remaining if self.mode == "provision" else self.planned
        return [c for c in pending if c.node == node]

    def to_json(self) -> dict:
        doc = asdict(self)
        for k in ("planned", "applied", "remaining"):
            doc[k] = [c.to_json() for c in getattr(self, k)]
        return doc

    @classmethod
    def from_json(cls, doc: dict) -> Result:
        r = cls(**{k: v for k, v in doc.items() if k not in ("planned", "applied", "remaining")})
        for k in ("planned", "applied", "remaining"):
            setattr(r, k, [Change.from_json(c) for c in doc.get(k, [])])
        return r

    def planned_for(self, node: str | None) -> list[Change]:
        """The planned changes that concern a node (its own and the cluster-wide ones); all of them for None."""
        return list(self.planned) if node is None else [c for c in self.planned if c.node in (node, None)]

    def plan_text(self, node: str | None = None) -> str:
        """The planned changes: all of them, or (node given) the node's own and the cluster-wide ones."""
        planned = self.planned_for(node)
        lines = [c.line() for c in planned] or ["(no changes)"]
        if node is None:
            lines += [f"note: {n}" for n in self.notes if "\n" not in n]
        where = "" if node is None else f" for {node}"
        owners = self.kept_node + [None] * (len(self.kept) - len(self.kept_node))   # appended directly: cluster-wide
        kept = [k for k, owner in zip(self.kept, owners, strict=True) if node is None or owner in (None, node)]
        return (f"{self.name}: {len(planned)} change(s){where}\n" + "\n".join("  " + ln for ln in lines)
                + "".join(f"\n  keep {k}" for k in kept))

    def touches(self, node: str) -> bool:
        """Whether any planned change is the node's own or cluster-wide."""
        return bool(self.planned_for(node))


class Converger(Protocol):
    name: str
    depends: tuple[str, ...]

    def plan(self, ctx, result: Result) -> list[Change]: ...

    def apply(self, ctx, changes: list[Change], result: Result) -> None: ...


class ConvergeError(RuntimeError):
    pass


class Engine:
    def __init__(self, ctx, convergers: list[Converger], state_dir: Path) -> None:
        self.ctx = ctx
        self.by_name = {c.name: c for c in convergers}
        self.state_dir = state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.results: dict[str, Result] = {}

    def _file(self, name: str) -> Path:
        return self.state_dir / f"{name}.json"

    def ensure(self, name: str) -> Result:
        """The converger's result for this run (running it and its dependencies first if needed)."""
        if name in self.results:
            return self.results[name]
        conv = self.by_name[name]
        for dep in conv.depends:
            dep_result = self.ensure(dep)
            if dep_result.error and self.ctx.settings.mode == "provision":
                r = Result(name, self.ctx.settings.mode, error=f"not run: {dep} failed: {dep_result.error}")
                self.results[name] = r
                return r
        with FileLock(str(self.state_dir / f"{name}.lock")):
            f = self._file(name)
            if f.exists():
                r = Result.from_json(json.loads(f.read_text()))
            else:
                r = self._run(conv)
                tmp = f.with_suffix(".tmp")
                tmp.write_text(json.dumps(r.to_json(), indent=2))
                tmp.replace(f)
        self.results[name] = r
        return r

    def _run(self, conv: Converger) -> Result:
        mode = self.ctx.settings.mode
        r = Result(conv.name, mode)
        t0 = time.monotonic()
        try:
            r.planned = conv.plan(self.ctx, r)
            if mode == "provision" and r.planned:
                untyped = [c.line() for c in r.planned if c.payload is None]
                if untyped:   # apply executes payloads only: a change without one would be done from its text
                    raise ConvergeError(f"{conv.name}: planned changes without a payload (provision/changes.py), "
                                        f"nothing applied: {'; '.join(untyped)}")
                with WRITE_GUARD.allow("--provision"):
                    conv.apply(self.ctx, r.planned, r)
                r.applied = list(r.planned)
                self.ctx.kube.snapshot(refresh=True)
                check = Result(conv.name, mode, node_failures=dict(r.node_failures), node_errors=dict(r.node_errors))
                r.remaining = conv.plan(self.ctx, check)
                r.node_errors.update(check.node_errors)
                r.node_skips.update(check.node_skips)
                r.host_off = sorted(set(r.host_off) | set(check.host_off))
                r.node_failures.update(check.node_failures)
                if r.remaining:
                    r.notes.append("still different after apply: " + "; ".join(c.line() for c in r.remaining))
        except ConvergeError as exc:
            r.error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a converger failing is reported, not a crash of the run
            r.error = f"{type(exc).__name__}: {exc}"
            r.notes.append(traceback.format_exc(limit=6))
        r.seconds = round(time.monotonic() - t0, 3)
        return r

    def node_problem(self, name: str, node: str) -> tuple[str, str] | None:
        """("failed" | "broken", message) when this converger or one it depends on failed the node."""
        r = self.ensure(name)
        for dep in self.by_name[name].depends:
            problem = self.node_problem(dep, node)
            if problem:
                return problem
        if node in r.node_failures:
            return "failed", r.node_failures[node]
        if node in r.node_errors:
            return "broken", r.node_errors[node]
        return None

    def unhealthy_nodes(self) -> set[str]:
        """Nodes an earlier converger of this run failed or could not reach: later ones leave them alone
        (they are already reported) so that the rest of the fleet still converges."""
        out: set[str] = set()
        for r in self.results.values():
            out |= set(r.node_failures) | set(r.node_errors)
        return out

    def all_results(self) -> list[Result]:
        out = []
        for f in sorted(self.state_dir.glob("*.json")):
            try:
                out.append(Result.from_json(json.loads(f.read_text())))
            except (json.JSONDecodeError, TypeError, KeyError):
                continue
        return out
