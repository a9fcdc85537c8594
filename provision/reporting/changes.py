"""What changed since the previous run: per node and check, new failure / fixed / still failing, and nodes that
appeared or disappeared (a node gone from the cluster is a finding, not silence).

The previous run is the latest earlier run of the same mode against the same cluster in the reports folder
(``reports/<run-id>/summary.json``), or a folder given explicitly (``--previous DIR``). The result is the
``changes_since_previous`` object of summary.json (schema in docs/reports.md), read by the console summary, the
fleet page, the metrics and ``--fail-on new``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from provision.reporting import CLUSTER_KEY
from provision.reporting.exit_codes import CONFORMANT, COULD_NOT_CHECK, NON_CONFORMANT, exit_code

SUMMARY = "summary.json"
PROBLEMS = ("failed", "broken")
_RANK = {"skipped": 0, "passed": 1, "broken": 2, "failed": 3}
FAIL_ON = ("new", "any")
KINDS = ("new_failures", "fixed", "still_failing", "unchecked", "new_nodes", "nodes_gone")

Check = tuple[str, str, str]  # (node or "_cluster", feature, scenario)


class PreviousRunError(ValueError):
    """A previous run folder given explicitly cannot be used (no summary.json, or not JSON)."""


def _outcome(result: Mapping[str, Any]) -> str:
    outcome = result.get("outcome")
    return outcome if outcome in _RANK else "broken"


def summary_nodes(summary: Mapping[str, Any]) -> set[str]:
    """The GPU nodes a run covered: its node list, the nodes with a driver version, the nodes of its results."""
    env = summary.get("environment") or {}
    nodes = {str(n) for n in summary.get("gpu_nodes") or env.get("gpu_nodes") or ()}
    nodes.update(str(n) for n in env.get("driver_versions") or {})
    nodes.update(str(r["node"]) for r in summary.get("results") or () if r.get("node") is not None)
    return nodes


def check_outcomes(summary: Mapping[str, Any]) -> dict[Check, tuple[str, str]]:
    """``{(node or "_cluster", feature, scenario): (worst outcome, its message)}`` (outline examples: worst wins)."""
    out: dict[Check, tuple[str, str]] = {}
    for r in summary.get("results") or ():
        node = r.get("node")
        key = (CLUSTER_KEY if node is None else str(node), str(r.get("feature") or ""), str(r.get("scenario") or ""))
        outcome = _outcome(r)
        if key not in out or _RANK[outcome] > _RANK[out[key][0]]:
            out[key] = (outcome, str(r.get("message") or ""))
    return out


def _entry(key: Check, outcome: str | None, previous: str | None, message: str = "") -> dict[str, Any]:
    node, feature, scenario = key
    return {"node": None if node == CLUSTER_KEY else node, "feature": feature, "scenario": scenario,
            "outcome": outcome, "previous_outcome": previous, "message": message[:400]}


def compare(previous: Mapping[str, Any] | None, current: Mapping[str, Any], *,
            previous_dir: str | None = None) -> dict[str, Any]:
    """The ``changes_since_previous`` object for ``current`` against ``previous`` (None: no earlier run, so every
    problem of this run is new).

    * ``new_failures``: failed / broken now, and passed, skipped or not run before (a new node's problems too);
    * ``fixed``: failed / broken before, passed now;
    * ``still_failing``: failed / broken before and now;
    * ``unchecked``: failed / broken before, skipped or not run now on a node still there (not a fix);
    * ``new_nodes`` / ``nodes_gone``: GPU nodes in this run only / in the previous run only.
    """
    now = check_outcomes(current)
    changes: dict[str, Any] = {k: [] for k in KINDS}
    if previous is None:
        changes["previous"] = None
        for key, (outcome, message) in sorted(now.items()):
            if outcome in PROBLEMS:
                changes["new_failures"].append(_entry(key, outcome, None, message))
    else:
        changes["previous"] = {"run_id": previous.get("run_id"), "started": previous.get("started"),
                               "dir": previous_dir}
        before = check_outcomes(previous)
        nodes_now, nodes_before = summary_nodes(current), summary_nodes(previous)
        changes["new_nodes"] = sorted(nodes_now - nodes_before)
        changes["nodes_gone"] = sorted(nodes_before - nodes_now)
        gone = set(changes["nodes_gone"])
        for key in sorted(set(now) | set(before)):
            outcome, message = now.get(key, (None, ""))
            was = before.get(key, (None, ""))[0]
            if key[0] in gone:
                continue  # reported once, as the node
            if outcome in PROBLEMS:
                kind = "still_failing" if was in PROBLEMS else "new_failures"
                changes[kind].append(_entry(key, outcome, was, message))
            elif was in PROBLEMS:
                kind = "fixed" if outcome == "passed" else "unchecked"
                changes[kind].append(_entry(key, outcome, was, message))
    changes["counts"] = {k: len(changes[k]) for k in KINDS}
    return changes


def _started(summary: Mapping[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(summary.get("started")))
    except (TypeError, ValueError):
        return None


def _cluster(summary: Mapping[str, Any]) -> Any:
    return (summary.get("environment") or {}).get("cluster")


def load_summary(run_dir: Path | str) -> dict[str, Any]:
    """A run folder's summary.json; PreviousRunError saying what is wrong when it has none or it is not JSON."""
    path = Path(run_dir) / SUMMARY
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise PreviousRunError(f"{run_dir} has no {SUMMARY}: give --previous a run folder written by "
                               "`pytest features/` (reports/<run-id>)") from exc
    except (OSError, ValueError) as exc:
        raise PreviousRunError(f"{path} cannot be read as JSON ({exc}): give --previous another run folder") from exc
    if not isinstance(data, dict):
        raise PreviousRunError(f"{path} is not a run summary (a JSON object): give --previous another run folder")
    return data


def find_previous(reports_dir: Path | str, current: Mapping[str, Any], *,
                  exclude: Path | str | None = None) -> Path | None:
    """The latest run in ``reports_dir`` before ``current`` with the same mode and cluster, else None.

    Run folders are tried newest name first (run ids start with their UTC time) and the first match is taken, so
    a long history is not read whole; unreadable ones and runs that started later are passed over.
    """
    root = Path(reports_dir)
    if not root.is_dir():
        return None
    skip = Path(exclude).resolve() if exclude is not None else None
    started = _started(current)
    candidates: Iterable[Path] = sorted((p for p in root.iterdir() if p.is_dir() and not p.is_symlink()),
                                        key=lambda p: p.name, reverse=True)
    for folder in candidates:
        if skip is not None and folder.resolve() == skip:
            continue
        try:
            summary = load_summary(folder)
        except PreviousRunError:
            continue
        when = _started(summary)
        if when is None or (started is not None and when >= started):
            continue
        if summary.get("mode") != current.get("mode") or _cluster(summary) != _cluster(current):
            continue
        return folder  # the newest name that matches: run ids start with their UTC time
    return None


def changes_for_run(run_dir: Path | str, current: Mapping[str, Any], *, previous: Path | str | None = None,
                    reports_dir: Path | str | None = None) -> dict[str, Any]:
    """``changes_since_previous`` for the run in ``run_dir``: against ``previous`` when given (PreviousRunError if
    it cannot be read), else the latest matching run in ``reports_dir`` (default: ``run_dir``'s parent)."""
    run_dir = Path(run_dir)
    if previous is not None:
        prev_dir: Path | None = Path(previous).resolve()
        prev = load_summary(prev_dir)
    else:
        prev_dir = find_previous(reports_dir if reports_dir is not None else run_dir.parent, current, exclude=run_dir)
        prev = load_summary(prev_dir) if prev_dir is not None else None
    changes = compare(prev, current, previous_dir=str(prev_dir) if prev_dir is not None else None)
    if prev is not None:
        differs = [f"{what} {prev_v!r} (this run: {cur_v!r})" for what, prev_v, cur_v in (
            ("mode", prev.get("mode"), current.get("mode")), ("cluster", _cluster(prev), _cluster(current)))
            if prev_v != cur_v]
        if differs:
            changes["warning"] = "the previous run differs: " + ", ".join(differs)
    return changes


def regression_exit_code(changes: Mapping[str, Any]) -> int:
    """``--fail-on new``: 10 for a new failed check or a node gone, 11 for only new broken checks, else 0."""
    new = changes.get("new_failures") or ()
    if changes.get("nodes_gone") or any(e.get("outcome") == "failed" for e in new):
        return NON_CONFORMANT
    if new:
        return COULD_NOT_CHECK
    return CONFORMANT


def run_exit_code(summary: Mapping[str, Any], fail_on: str = "any") -> int:
    """The run's verdict as an exit code: ``any`` (default) every problem counts, ``new`` only regressions.

    A run without any result is "could not check" either way; without ``changes_since_previous`` ``new`` falls
    back to ``any``.
    """
    if fail_on not in FAIL_ON:
        raise ValueError(f"fail_on must be one of {FAIL_ON}, not {fail_on!r}")
    code = exit_code(summary)
    changes = summary.get("changes_since_previous")
    if fail_on == "any" or not isinstance(changes, Mapping) or not summary.get("results"):
        return code
    return regression_exit_code(changes)


def _line(e: Mapping[str, Any]) -> str:
    where = e.get("node") or "cluster-wide"
    was = f" (was {e['previous_outcome']})" if e.get("previous_outcome") else ""
    return f"{where}: {e.get('feature')} > {e.get('scenario')}: {e.get('outcome') or 'not run'}{was}"


def console_lines(changes: Mapping[str, Any], *, limit: int = 20) -> list[str]:
    """The changes as lines for the end of the run's console output (each list cut at ``limit`` lines)."""
    prev = changes.get("previous")
    if not prev:
        head = "changes: no previous run of this mode against this cluster, every problem counts as new"
    else:
        head = f"changes since run {prev.get('run_id')} ({prev.get('started')})"
    counts = changes.get("counts") or {}
    lines = [head + ": " + ", ".join(f"{counts.get(k, 0)} {k.replace('_', ' ')}" for k in KINDS)]
    if changes.get("warning"):
        lines.append(f"  warning: {changes['warning']}")
    for node in changes.get("nodes_gone") or ():
        lines.append(f"  NODE GONE  {node}: in the previous run, not in this one")
    for node in changes.get("new_nodes") or ():
        lines.append(f"  new node   {node}")
    for kind, label in (("new_failures", "NEW"), ("fixed", "fixed"), ("still_failing", "still"),
                        ("unchecked", "unchecked")):
        entries = changes.get(kind) or ()
        lines += [f"  {label:<10} {_line(e)}" for e in entries[:limit]]
        if len(entries) > limit:
            lines.append(f"  {label:<10} ... and {len(entries) - limit} more (summary.json changes_since_previous)")
    return lines
