"""The fleet matrix: ``reports/<run-id>/fleet.html``, nodes as rows and checks as columns.

Rendered from templates/fleet.html.j2 with Jinja2 (autoescaping: every summary value is escaped). One
static file, no images, CSS classes per cell (no inline styles) and a few lines of vanilla JS for the
search box and the "only problems" filter (also settable from the URL: ``fleet.html?q=node-1&problems=1``).
Every cell links to the node's Allure report (to the test itself when it can be found there) and carries the
result's message in its ``title``. Sized for 1000 nodes x 15 checks.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup

from provision.atomic import write_atomic
from provision.reporting import ALL_KEY, CLUSTER_KEY
from provision.reporting.allure_split import is_dns1123_subdomain
from provision.reporting.exit_codes import describe, exit_code, outcome_counts

FLEET_FILE = "fleet.html"
TITLE_MESSAGE_LIMIT = 400

_CLASS = {"passed": "p", "failed": "f", "broken": "b", "skipped": "s"}
_GLYPH = {"p": "\u2713", "f": "\u2717", "b": "!", "s": "\u2013", "d": "\u2248"}
_RANK = {"skipped": 0, "passed": 1, "broken": 2, "failed": 3}

Check = tuple[str, str]  # (feature, scenario)

_CSS = """
:root{--d:#bf8700;--p:#1a7f37;--f:#cf222e;--b:#e36209;--s:#afb8c1;--na:#f3f4f6;--line:#d0d7de;--mute:#57606a}
*{box-sizing:border-box}
body{margin:0;font:13px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;background:#fff}
header{padding:12px 16px 8px}
h1{font-size:18px;margin:0 0 2px}
.meta{color:var(--mute);margin:0 0 8px}
.verdict{font-weight:600;margin:0 0 8px}
.v0{color:var(--p)}.v10{color:var(--f)}.v11{color:var(--b)}
.counts{display:flex;flex-wrap:wrap;gap:6px;list-style:none;padding:0;margin:0 0 10px}
.counts li{padding:2px 10px;border-radius:12px;background:#eef1f4}
.counts b{font-size:14px}
.counts .p b{color:var(--p)}.counts .f b{color:var(--f)}.counts .b b{color:var(--b)}.counts .s b{color:var(--mute)}
.tools{display:flex;flex-wrap:wrap;gap:14px;align-items:center}
.tools input[type=search]{width:260px;padding:4px 8px;border:1px solid var(--line);border-radius:6px;font:inherit}
#shown{color:var(--mute)}
.legend{display:flex;flex-wrap:wrap;gap:12px;color:var(--mute);margin:8px 0 0}
.legend i{display:inline-block;width:14px;height:14px;vertical-align:-2px;margin-right:4px;border-radius:2px}
.legend .p{background:var(--p)}.legend .f{background:var(--f)}.legend .b{background:var(--b)}
.legend .s{background:var(--s)}.legend .na{background:var(--na);border:1px solid var(--line)}
table{border-collapse:separate;border-spacing:0;margin:0 16px 24px}
thead th{position:sticky;top:0;z-index:2;background:#fff;vertical-align:bottom}
thead tr.fr th{height:26px;padding:0 2px;border-bottom:1px solid var(--line)}
thead tr.sr th{top:26px;border-bottom:2px solid var(--line)}
th.node{left:0;z-index:3;text-align:left;padding:4px 10px 4px 0;border-bottom:2px solid var(--line)}
th.feat{font-weight:600;color:var(--mute);border-left:2px solid #fff;border-right:2px solid #fff}
th.feat div{overflow:hidden;text-overflow:ellipsis;white-space:nowrap;margin:0 auto}
th.chk{width:30px;padding:6px 0 4px;font-weight:600}
th.chk div{writing-mode:vertical-rl;transform:rotate(180deg);white-space:nowrap;overflow:hidden;
  text-overflow:ellipsis;max-height:220px;margin:0 auto}
th.sum{padding:4px 8px;text-align:right;border-bottom:2px solid var(--line)}
tbody th{position:sticky;left:0;z-index:1;background:#fff;text-align:left;font-weight:400;padding:0 10px 0 0;
  white-space:nowrap}
tbody th a{color:inherit}
tbody.cl th{font-weight:600;font-style:italic}
tbody.cl tr:last-child>*{border-bottom:2px solid var(--line)}
td{width:30px;min-width:30px;height:22px;padding:0;text-align:center;border:1px solid #fff}
td a,td span{display:block;line-height:20px;color:#fff;text-decoration:none;font-weight:700}
td.p{background:var(--p)}td.f{background:var(--f)}td.b{background:var(--b)}td.s{background:var(--s)}
td.s a,td.s span{color:#24292f}td.na{background:var(--na)}
td.d{background:var(--d)}.legend .d{background:var(--d)}
td.sum{width:auto;padding:0 8px;text-align:right;color:var(--f);font-weight:600;white-space:nowrap}
tr:hover th,tr:hover td.sum{background:#eef1f4}
td a:focus,td a:hover{outline:2px solid #0969da;outline-offset:-2px}
#changes{margin:4px 0 10px;padding:6px 10px 2px;border:1px solid var(--line);border-radius:6px}
#changes h2{font-size:15px;margin:0 0 6px}#changes h3{font-size:13px;margin:4px 0 2px}
#changes ul{margin:0 0 6px;padding-left:18px}#changes ul.counts{padding:0}
.chg.f h3{color:var(--f)}.chg.p h3{color:var(--p)}.was{color:var(--mute)}.warn{color:var(--b);font-weight:600}
"""

_JS = """
(function(){
var q=document.getElementById('q'),bad=document.getElementById('bad'),shown=document.getElementById('shown');
var rows=Array.prototype.slice.call(document.querySelectorAll('#fleet tbody tr'));
var names=rows.map(function(r){return (r.getAttribute('data-node')||'').toLowerCase();});
function apply(){
  var s=q.value.trim().toLowerCase(),only=bad.checked,n=0;
  for(var i=0;i<rows.length;i++){
    var show=(!s||names[i].indexOf(s)>=0)&&(!only||rows[i].classList.contains('bad'));
    rows[i].hidden=!show;if(show)n++;
  }
  shown.textContent=n+' of '+rows.length+' rows shown';
}
var p=new URLSearchParams(location.search);
if(p.has('q'))q.value=p.get('q');
if(p.get('problems')==='1')bad.checked=true;
q.addEventListener('input',apply);bad.addEventListener('change',apply);apply();
})();
"""


def _natural_key(name: str) -> tuple[Any, ...]:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _outcome(result: Mapping[str, Any]) -> str:
    outcome = result.get("outcome")
    return outcome if outcome in _RANK else "broken"


def _drift_only(results: list[Mapping[str, Any]]) -> bool:
    """Every failed result of a cell observed the right state and failed only on drift (summary.json's
    "observation" "ok" with its "drift" lines): an unconverged node, not a broken one."""
    failed = [r for r in results if _outcome(r) == "failed"]
    return bool(failed) and all(r.get("observation") == "ok" and r.get("drift") for r in failed)


def _fmt_time(value: Any) -> str:
    if not value:
        return "?"
    try:
        return datetime.fromisoformat(str(value)).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    except ValueError:
        return str(value)


def _duration(started: Any, finished: Any) -> str | None:
    try:
        seconds = int((datetime.fromisoformat(str(finished)) - datetime.fromisoformat(str(started))).total_seconds())
    except (TypeError, ValueError):
        return None
    if seconds < 0:
        return None
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m {s:02d}s" if h else f"{m}m {s:02d}s"


def _feature_groups(columns: list[Check]) -> list[tuple[str, int]]:
    """Runs of adjacent columns of one feature: ``[(feature, number of columns), ...]``."""
    groups: list[tuple[str, int]] = []
    for feature, _scenario in columns:
        if groups and groups[-1][0] == feature:
            groups[-1] = (feature, groups[-1][1] + 1)
        else:
            groups.append((feature, 1))
    return groups


def _cell_title(results: list[Mapping[str, Any]]) -> str:
    parts = []
    for r in sorted(results, key=lambda r: -_RANK[_outcome(r)]):
        message = str(r.get("message") or "").strip()
        if len(message) > TITLE_MESSAGE_LIMIT:
            message = message[:TITLE_MESSAGE_LIMIT] + "\u2026"
        remediation = str(r.get("remediation") or "").strip()
        text = _outcome(r) + (f": {message}" if message else "")
        if remediation and _outcome(r) in ("failed", "broken"):
            text += f"\nRemediation: {remediation[:TITLE_MESSAGE_LIMIT]}"
        parts.append(text)
    if len(parts) > 1:
        return f"{len(parts)} results\n" + "\n".join(parts)
    return parts[0]


HEALTH_FEATURE = "The node's GPUs are healthy"  # features/gpu_health.feature


def _health_cell(results: list[Mapping[str, Any]], measured: Mapping[str, Any] | None) -> dict[str, str]:
    """The node's health column: the worst outcome of its GPU health scenarios, with the measured values
    (summary.json ``health``) in the title. An empty dict: the node has no health result."""
    rs = [r for r in results if r.get("feature") == HEALTH_FEATURE]
    if not rs:
        return {}
    worst = max(rs, key=lambda r: _RANK[_outcome(r)])
    cls = _CLASS[_outcome(worst)]
    lines = [f"GPU health: {_outcome(worst)}"]
    m = measured or {}
    gpus = [g for g in m.get("gpus") or () if isinstance(g, Mapping)]
    temps = [g["temperature_c"] for g in gpus if isinstance(g.get("temperature_c"), int | float)]
    if gpus:
        lines.append(f"{len(gpus)} GPU(s)" + (f", {m['gpus_on_bus']} on the bus" if "gpus_on_bus" in m else "")
                     + (f", max {max(temps):g} C" if temps else ""))
    if m.get("xids"):
        lines.append("Xid " + ", ".join(str(x.get("xid")) for x in m["xids"] if isinstance(x, Mapping)))
    lines += [f"{r.get('scenario')}: {str(r.get('message') or '')[:200]}" for r in rs if _outcome(r) in ("failed", "broken")]
    return {"cls": cls, "title": "\n".join(lines), "glyph": _GLYPH[cls]}


def _mode_badge(info: Any) -> dict[str, str] | None:
    """The runtime mode, MIG and sharing a node was judged in (summary.json nodes.<node>, issue 16), or None."""
    if not isinstance(info, Mapping) or not (info.get("runtime_mode") or isinstance(info.get("mig"), Mapping)):
        return None
    sharing = info.get("sharing") if isinstance(info.get("sharing"), Mapping) else {}
    parts = [str(info["runtime_mode"])] if info.get("runtime_mode") else []
    mig = info.get("mig") if isinstance(info.get("mig"), Mapping) else None
    if mig:
        parts.append(f"MIG {mig.get('strategy') or '?'} {mig.get('profile') or '?'} ({mig.get('state') or '?'})")
    if sharing.get("strategy") and sharing["strategy"] != "none":
        parts.append(f"{sharing['strategy']} x{sharing.get('replicas')}")
    if sharing.get("renamed"):
        parts.append(str(sharing.get("resource")))
    return {"text": " \u00b7 ".join(parts), "title": str(info.get("runtime_mode_source") or "")}


def render_fleet(
    summary: Mapping[str, Any],
    links: Mapping[str, str],
    *,
    cell_links: Mapping[tuple[str, str], str] | None = None,
) -> str:
    """The fleet page for ``summary`` (the run's summary.json, parsed).

    ``links``: href (relative to fleet.html) of each node's report by node name, plus ``"_cluster"`` for the
    cluster-wide row and ``"_all"`` for the whole-run report. ``cell_links``: optional deeper hrefs by
    ``(node or "_cluster", nodeid)``, used for the cell holding that result. A cell with no href is plain text.
    """
    cell_links = cell_links or {}
    env = summary.get("environment") or {}
    results = [r for r in (summary.get("results") or ()) if isinstance(r, Mapping)]

    checks: dict[Check, None] = {}
    cluster_checks: dict[Check, None] = {}
    cells: dict[tuple[str, Check], list[Mapping[str, Any]]] = {}
    nodes: set[str] = {str(n) for n in (env.get("driver_versions") or {})}
    for r in results:
        check = (str(r.get("feature") or ""), str(r.get("scenario") or ""))
        node = r.get("node")
        key = CLUSTER_KEY if node is None else str(node)
        if node is None:
            cluster_checks.setdefault(check, None)
        else:
            nodes.add(key)
        cells.setdefault((key, check), []).append(r)
    # Cluster-wide checks first, then per-node checks, each in the order the run produced them.
    for r in results:
        check = (str(r.get("feature") or ""), str(r.get("scenario") or ""))
        if check not in cluster_checks:
            checks.setdefault(check, None)
    columns = list(cluster_checks) + list(checks)
    node_rows = sorted(nodes, key=_natural_key)
    health_by_node = summary.get("health") if isinstance(summary.get("health"), Mapping) else {}
    per_node = summary.get("nodes") if isinstance(summary.get("nodes"), Mapping) else {}
    distribution = {str(k): str(v["distribution"]) for k, v in per_node.items()
                    if isinstance(v, Mapping) and v.get("distribution")}
    has_health = any(c[0] == HEALTH_FEATURE for c in columns)

    code = exit_code(summary)

    def row(key: str, label: str, row_id: str) -> dict[str, Any]:
        bad = 0
        tds: list[dict[str, str] | None] = []
        row_href = links.get(key)
        for check in columns:
            rs = cells.get((key, check))
            if not rs:
                tds.append(None)
                continue
            worst = max(rs, key=lambda r: _RANK[_outcome(r)])
            cls = _CLASS[_outcome(worst)]
            if cls == "f" and _drift_only(rs):
                cls = "d"
            if cls in ("f", "b", "d"):
                bad += 1
            href = cell_links.get((key, str(worst.get("nodeid") or ""))) or row_href
            tds.append({"cls": cls, "href": href or "", "title": _cell_title(rs), "glyph": _GLYPH[cls]})
        node_results = [r for (k, _c), rs in cells.items() if k == key for r in rs]
        health = _health_cell(node_results, health_by_node.get(key)) if has_health else None
        return {"id": row_id, "label": label, "href": row_href, "bad": bad, "cells": tds, "health": health,
                # the node's Kubernetes distribution (summary.json nodes.<node>.distribution)
                "distribution": distribution.get(key), "mode": _mode_badge(per_node.get(key))}

    rows = [row(node, node, f"node-{node}") for node in node_rows]
    cluster = env.get("cluster") or "cluster"
    run_id = summary.get("run_id") or "?"
    mode = summary.get("mode") or env.get("mode") or "?"
    duration = _duration(summary.get("started"), summary.get("finished"))
    groups = _feature_groups(columns)
    widths = "".join(f".w{n}{{max-width:{n * 32 - 4}px}}" for n in sorted({span for _f, span in groups}))
    check_links: dict[tuple[str, str, str], str] = {}
    for (key, check), rs in cells.items():
        worst = max(rs, key=lambda r: _RANK[_outcome(r)])
        href = cell_links.get((key, str(worst.get("nodeid") or ""))) or links.get(key)
        if href:
            check_links[(key, *check)] = href
    meta: list[tuple[str, Any]] = [
        ("run", run_id), ("mode", mode), (f"started {_fmt_time(summary.get('started'))}", None),
        (f"finished {_fmt_time(summary.get('finished'))}" + (f" ({duration})" if duration else ""), None),
        (f"Kubernetes {env.get('kubernetes_version') or '?'}", None),
        (f"GPU operator chart {env.get('operator_chart_version') or 'none'}", None),
        (f"suite {env.get('suite_version') or '?'}", None),
    ]
    if mode != "audit" and summary.get("changes") is not None:
        meta.append((f"changes {summary.get('changes')}", None))
    counts = outcome_counts(summary)
    return _template("fleet.html.j2").render(
        title=f"GPU node conformance \u2014 {cluster} \u2014 {run_id}", css=Markup(_CSS + widths), js=Markup(_JS),
        cluster=cluster, changes=_changes_view(summary.get("changes_since_previous"), check_links, set(node_rows)),
        meta=meta, code=code, verdict=describe(code).capitalize(), node_count=len(node_rows),
        problem_nodes=sum(1 for r in rows if r["bad"]),
        counts=[(_CLASS[o], counts[o], o) for o in ("passed", "failed", "broken", "skipped")],
        whole_run_href=links.get(ALL_KEY), has_health=has_health, groups=groups,
        columns=[{"scenario": sc, "tip": f"{f} \u203a {sc} ({'cluster-wide' if (f, sc) in cluster_checks else 'per node'})"}
                 for f, sc in columns],
        cluster_row=row(CLUSTER_KEY, "cluster-wide", "cluster-wide") if cluster_checks else None, rows=rows)


@functools.cache
def _template(name: str) -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.PackageLoader("provision.reporting", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template(name)


CHANGES_LIMIT = 50
_CHANGE_SECTIONS = (
    ("new_failures", "New failures", "f"),
    ("fixed", "Fixed", "p"),
    ("unchecked", "Failing before, not checked now", "s"),
    ("still_failing", "Still failing", "b"),
)


def _change_item(e: Mapping[str, Any], check_links: Mapping[tuple[str, str, str], str],
                 node_ids: set[str]) -> dict[str, Any]:
    node = e.get("node")
    key = CLUSTER_KEY if node is None else str(node)
    anchor = ("cluster-wide" if node is None else f"node-{key}") if node is None or key in node_ids else ""
    return {"where": node or "cluster-wide", "anchor": anchor,
            "check": f"{e.get('feature') or ''} \u203a {e.get('scenario') or ''}",
            "href": check_links.get((key, str(e.get("feature") or ""), str(e.get("scenario") or ""))),
            "was": e.get("previous_outcome") or "not run", "now": e.get("outcome") or "not run",
            "message": e.get("message") or ""}


def _changes_view(changes: Any, check_links: Mapping[tuple[str, str, str], str], node_ids: set[str]) -> dict | None:
    """The fleet page's first section: what changed since the previous run (``changes_since_previous``).

    ``check_links``: href of the report of each ``(node or "_cluster", feature, scenario)``.
    """
    if not isinstance(changes, Mapping):
        return None
    if changes.get("error"):
        return {"error": changes["error"]}
    prev = changes.get("previous")
    counts = changes.get("counts") or {}
    gone = list(changes.get("nodes_gone") or ())
    new_nodes = list(changes.get("new_nodes") or ())
    sections = []
    for kind, label, cls in _CHANGE_SECTIONS:
        entries = list(changes.get(kind) or ())
        if entries:
            sections.append({"kind": kind, "label": label, "cls": cls, "total": len(entries),
                             "folded": kind == "still_failing", "more": max(0, len(entries) - CHANGES_LIMIT),
                             "entries": [_change_item(e, check_links, node_ids) for e in entries[:CHANGES_LIMIT]]})
    return {
        "error": None, "warning": changes.get("warning"),
        "previous": {"run_id": prev.get("run_id"), "started": _fmt_time(prev.get("started"))} if prev else None,
        "counts": [(kind, label, cls, int(counts.get(kind) or 0)) for kind, label, cls in (
            ("new_failures", "new failures", "f"), ("nodes_gone", "nodes gone", "f"), ("new_nodes", "new nodes", "s"),
            ("fixed", "fixed", "p"), ("still_failing", "still failing", "b"), ("unchecked", "not checked now", "s"))],
        "nodes_gone": gone[:CHANGES_LIMIT], "nodes_gone_more": max(0, len(gone) - CHANGES_LIMIT),
        "new_nodes": [(n, n in node_ids) for n in new_nodes[:CHANGES_LIMIT]],
        "new_nodes_more": max(0, len(new_nodes) - CHANGES_LIMIT), "sections": sections,
    }


def _report_href(run_dir: Path, key: str) -> str | None:
    if (run_dir / "html" / key / "index.html").is_file():
        return f"html/{quote(key)}/index.html"
    return None


def discover_links(run_dir: Path | str, summary: Mapping[str, Any]) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """Links to the generated reports under ``run_dir/html`` and, where the test can be found, deep links."""
    from provision.reporting.allure_html import ReportIndex

    run_dir = Path(run_dir)
    links: dict[str, str] = {}
    cell_links: dict[tuple[str, str], str] = {}
    for key in (ALL_KEY, CLUSTER_KEY):
        href = _report_href(run_dir, key)
        if href:
            links[key] = href
    indexes: dict[str, ReportIndex] = {}
    nodes = {str(n) for n in ((summary.get("environment") or {}).get("driver_versions") or {})}
    for r in summary.get("results") or ():
        if r.get("node") is not None:
            nodes.add(str(r["node"]))
    for node in nodes:
        if is_dns1123_subdomain(node):
            href = _report_href(run_dir, node)
            if href:
                links[node] = href
    for r in summary.get("results") or ():
        key = CLUSTER_KEY if r.get("node") is None else str(r["node"])
        if key not in links or not r.get("nodeid"):
            continue
        index = indexes.setdefault(key, ReportIndex(run_dir / "html" / key))
        test_id = index.test_id(str(r.get("scenario") or ""), _outcome(r), r.get("feature"))
        if test_id:
            cell_links[(key, str(r["nodeid"]))] = f"{links[key]}#{quote(test_id)}"
    return links, cell_links


def write_fleet(run_dir: Path | str) -> Path:
    """Render ``run_dir/fleet.html`` from ``run_dir/summary.json`` and the reports under ``run_dir/html``."""
    run_dir = Path(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    links, cell_links = discover_links(run_dir, summary)
    return write_atomic(run_dir / FLEET_FILE, render_fleet(summary, links, cell_links=cell_links))
